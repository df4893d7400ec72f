/* The C API from C: status codes, the last-error message, parse, precompile
 * through the disk cache, strict mode and, with a GPU, kernels, launch and
 * layer forward argument checks. Usage: moejit_capi_test SCRATCH_DIR */
#define _XOPEN_SOURCE 700
#include <moejit/moejit_c.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures = 0;

#define EXPECT(cond)                                                                               \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: expected %s (last error: %s)\n", __FILE__, __LINE__, #cond,          \
              moejit_last_error());                                                                \
      ++failures;                                                                                  \
    }                                                                                              \
  } while (0)

static const char kSpec[] = "layer tiny {\n"
                            "  experts = 8\n"
                            "  hidden = 256\n"
                            "  intermediate = 128\n"
                            "  router { top_k = 2 }\n"
                            "  gemm up_proj {}\n"
                            "  gemm down_proj {}\n"
                            "}\n";

static int removeEntry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static moejit_runtime *makeRuntime(const char *cacheDir, int strict) {
  moejit_runtime_options options;
  moejit_runtime_options_init(&options);
  options.cache_dir = cacheDir;
  options.strict = strict;
  options.arch = "sm_90a";
  moejit_runtime *runtime = NULL;
  EXPECT(moejit_runtime_create(&options, &runtime) == MOEJIT_OK);
  return runtime;
}

static void testErrors(moejit_runtime *runtime) {
  moejit_spec *spec = (moejit_spec *)1;
  EXPECT(moejit_spec_parse(NULL, kSpec, sizeof kSpec - 1, NULL, &spec) ==
         MOEJIT_ERROR_INVALID_ARGUMENT);
  EXPECT(spec == NULL);
  EXPECT(strstr(moejit_last_error(), "runtime") != NULL);

  const char bad[] = "layer broken {\n  experts = -3\n}\n";
  EXPECT(moejit_spec_parse(runtime, bad, sizeof bad - 1, "broken.moe", &spec) ==
         MOEJIT_ERROR_PARSE);
  EXPECT(strstr(moejit_last_error(), "broken.moe:") != NULL);

  EXPECT(moejit_spec_parse_file(runtime, "/nonexistent/x.moe", &spec) == MOEJIT_ERROR_NOT_FOUND);
  EXPECT(strstr(moejit_last_error(), "cannot read") != NULL);

  EXPECT(moejit_launch(NULL, MOEJIT_GEMM_UP_PROJ, NULL, NULL) == MOEJIT_ERROR_INVALID_ARGUMENT);
  EXPECT(strcmp(moejit_status_name(MOEJIT_ERROR_NO_GPU), "MOEJIT_ERROR_NO_GPU") == 0);
  moejit_runtime_destroy(NULL);
  moejit_spec_destroy(NULL);
  moejit_kernels_destroy(NULL);
}

/* With a GPU: the kernels load and the launch checks reject bad arguments
 * before anything reaches the driver. */
static void testKernels(moejit_runtime *runtime, const moejit_spec *spec) {
  moejit_kernels *kernels = NULL;
  moejit_status status = moejit_kernels_get(runtime, spec, "tiny", &kernels);
  if (status == MOEJIT_ERROR_NO_GPU) {
    printf("no GPU: skipping the kernel and launch checks (%s)\n", moejit_last_error());
    return;
  }
  EXPECT(status == MOEJIT_OK);
  if (status != MOEJIT_OK)
    return;
  EXPECT(moejit_kernels_has(kernels, MOEJIT_GEMM_UP_PROJ));
  EXPECT(moejit_kernels_has(kernels, MOEJIT_GEMM_DOWN_PROJ));
  EXPECT(!moejit_kernels_has(kernels, MOEJIT_GEMM_DW1));

  moejit_gemm_args args;
  memset(&args, 0, sizeof args);
  EXPECT(moejit_launch(kernels, MOEJIT_GEMM_UP_PROJ, &args, NULL) == MOEJIT_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(moejit_last_error(), "'a' is null") != NULL);
  args.a = args.b = args.c = args.aux_out = (void *)(uintptr_t)0x1000;
  args.offsets = args.gather = (const int32_t *)(uintptr_t)0x2000;
  args.total_rows = -1;
  EXPECT(moejit_launch(kernels, MOEJIT_GEMM_UP_PROJ, &args, NULL) == MOEJIT_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(moejit_last_error(), "negative") != NULL);
  args.total_rows = 0;
  args.c = (void *)(uintptr_t)0x1008;
  EXPECT(moejit_launch(kernels, MOEJIT_GEMM_UP_PROJ, &args, NULL) == MOEJIT_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(moejit_last_error(), "16-byte aligned") != NULL);
  EXPECT(moejit_launch(kernels, MOEJIT_GEMM_DW1, &args, NULL) == MOEJIT_ERROR_NOT_FOUND);
  moejit_kernels_destroy(kernels);
}

/* The layer forward: argument errors, then with a GPU the workspace size
 * and the forward's own checks; without one, the NO_GPU status and why. */
static void testLayer(moejit_runtime *runtime, const moejit_spec *spec) {
  moejit_layer *layer = (moejit_layer *)1;
  EXPECT(moejit_layer_create(NULL, spec, NULL, 0, &layer) == MOEJIT_ERROR_INVALID_ARGUMENT);
  EXPECT(layer == NULL);
  EXPECT(moejit_layer_create(runtime, spec, "missing", 0, &layer) == MOEJIT_ERROR_NOT_FOUND);
  EXPECT(strstr(moejit_last_error(), "missing") != NULL);
  EXPECT(moejit_layer_forward(NULL, NULL, NULL) == MOEJIT_ERROR_INVALID_ARGUMENT);
  size_t bytes = 0;
  EXPECT(moejit_layer_workspace_bytes(NULL, 1, NULL, &bytes) == MOEJIT_ERROR_INVALID_ARGUMENT);
  moejit_layer_destroy(NULL);

  moejit_status status = moejit_layer_create(runtime, spec, "tiny", 0, &layer);
  if (status == MOEJIT_ERROR_NO_GPU) {
    EXPECT(strstr(moejit_last_error(), "needs a GPU") != NULL);
    printf("no GPU: skipping the layer forward checks (%s)\n", moejit_last_error());
    return;
  }
  EXPECT(status == MOEJIT_OK);
  if (status != MOEJIT_OK)
    return;
  EXPECT(moejit_layer_workspace_bytes(layer, 128, NULL, &bytes) == MOEJIT_OK);
  EXPECT(bytes > 0);
  moejit_forward_options rounding = {1, 0};
  EXPECT(moejit_layer_workspace_bytes(layer, 128, &rounding, &bytes) ==
         MOEJIT_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(moejit_last_error(), "token rounding") != NULL);

  moejit_forward_args args;
  memset(&args, 0, sizeof args);
  EXPECT(moejit_layer_forward(layer, &args, NULL) == MOEJIT_OK); /* T = 0: nothing to do */
  args.tokens = 4;
  EXPECT(moejit_layer_forward(layer, &args, NULL) == MOEJIT_ERROR_INVALID_ARGUMENT);
  EXPECT(strstr(moejit_last_error(), "X is null") != NULL);
  moejit_layer_destroy(layer);
}

/* The tuning database option: a database that does not parse stops the
 * runtime with its file named; "" means none, even where MOEJIT_TUNING_DB
 * names one. */
static void testTuningDb(const char *scratch) {
  char path[4096];
  snprintf(path, sizeof path, "%s/broken-tuning-%ld.json", scratch, (long)getpid());
  FILE *file = fopen(path, "w");
  EXPECT(file != NULL);
  if (!file)
    return;
  fputs("{\"format\": 1, \"entries\": [", file);
  fclose(file);

  moejit_runtime_options options;
  moejit_runtime_options_init(&options);
  EXPECT(options.tuning_db == NULL);
  options.cache_dir = "";
  options.arch = "sm_90a";
  options.tuning_db = path;
  moejit_runtime *runtime = (moejit_runtime *)1;
  EXPECT(moejit_runtime_create(&options, &runtime) != MOEJIT_OK);
  EXPECT(runtime == NULL);
  EXPECT(strstr(moejit_last_error(), "broken-tuning-") != NULL);

  setenv("MOEJIT_TUNING_DB", path, 1);
  options.tuning_db = "";
  EXPECT(moejit_runtime_create(&options, &runtime) == MOEJIT_OK);
  moejit_runtime_destroy(runtime);
  options.tuning_db = NULL; /* now the environment's, which does not parse */
  EXPECT(moejit_runtime_create(&options, &runtime) != MOEJIT_OK);
  unsetenv("MOEJIT_TUNING_DB");
  remove(path);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
    return 2;
  }
  char cacheDir[4096];
  snprintf(cacheDir, sizeof cacheDir, "%s/capi-cache-%ld", argv[1], (long)getpid());
  printf("moejit %s, cache %s\n", moejit_version(), cacheDir);

  moejit_runtime *runtime = makeRuntime(cacheDir, 0);
  if (!runtime)
    return 1;
  EXPECT(strcmp(moejit_runtime_arch(runtime), "sm_90a") == 0);
  testErrors(runtime);
  testTuningDb(argv[1]);

  moejit_spec *spec = NULL;
  EXPECT(moejit_spec_parse(runtime, kSpec, sizeof kSpec - 1, "tiny.moe", &spec) == MOEJIT_OK);
  EXPECT(moejit_spec_layer_count(spec) == 1);
  EXPECT(strcmp(moejit_spec_layer_name(spec, 0), "tiny") == 0);
  EXPECT(moejit_spec_layer_name(spec, 1) == NULL);
  EXPECT(moejit_precompile(runtime, spec, "missing") == MOEJIT_ERROR_NOT_FOUND);

  /* Cold: one compile; again: a memory hit. */
  moejit_stats stats;
  EXPECT(moejit_precompile(runtime, spec, NULL) == MOEJIT_OK);
  EXPECT(moejit_precompile(runtime, spec, "tiny") == MOEJIT_OK);
  EXPECT(moejit_runtime_stats(runtime, &stats) == MOEJIT_OK);
  EXPECT(stats.compiles == 1);
  EXPECT(stats.memory_hits == 1);

  /* A second, strict runtime on the same directory: disk hits, no compile
   * (the module, and the two routing programs precompile stored where NVRTC
   * is installed); a layer that was never compiled is an error naming
   * precompile. */
  moejit_runtime *strict = makeRuntime(cacheDir, 1);
  EXPECT(moejit_precompile(strict, spec, NULL) == MOEJIT_OK);
  EXPECT(moejit_runtime_stats(strict, &stats) == MOEJIT_OK);
  EXPECT((stats.disk_hits == 1 || stats.disk_hits == 3) && stats.compiles == 0);
  const char other[] = "layer other {\n  experts = 4\n  hidden = 128\n  intermediate = 64\n"
                       "  router { top_k = 1 }\n  gemm down_proj {}\n}\n";
  moejit_spec *otherSpec = NULL;
  EXPECT(moejit_spec_parse(strict, other, sizeof other - 1, NULL, &otherSpec) == MOEJIT_OK);
  EXPECT(moejit_precompile(strict, otherSpec, NULL) == MOEJIT_ERROR_FAILED);
  EXPECT(strstr(moejit_last_error(), "strict mode") != NULL);
  EXPECT(strstr(moejit_last_error(), "precompile") != NULL);
  moejit_spec_destroy(otherSpec);

  testKernels(strict, spec);
  testLayer(strict, spec);

  moejit_runtime_destroy(strict);
  moejit_spec_destroy(spec);
  moejit_runtime_destroy(runtime);
  nftw(cacheDir, removeEntry, 16, FTW_DEPTH | FTW_PHYS);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("C API: all checks passed\n");
  return 0;
}
