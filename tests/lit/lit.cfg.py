import os
import lit.formats

config.name = "moejit"
config.test_format = lit.formats.ShTest(True)
config.suffixes = [".moe", ".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moejit_obj_root, "tests", "lit")
config.excludes = ["Inputs", "lit.cfg.py", "lit.site.cfg.py.in"]

tools = config.moejit_tools_dir
config.substitutions.append(("%moejit-opt", os.path.join(tools, "moejit-opt", "moejit-opt")))
config.substitutions.append(("%moejit", os.path.join(tools, "moejit", "moejit")))
config.substitutions.append(("%examples", os.path.join(config.moejit_src_root, "examples")))
config.substitutions.append(("FileCheck", config.filecheck))
config.substitutions.append(("%ptxas", config.ptxas))
if config.not_tool:
    config.substitutions.append(("not ", config.not_tool + " "))
# Diagnostics name the file as given on the command line; keep them stable.
config.environment["MOEJIT_CACHE_DIR"] = os.path.join(config.test_exec_root, "cache")
