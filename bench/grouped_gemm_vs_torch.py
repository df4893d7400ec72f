#!/usr/bin/env python3
"""Grouped GEMMs: moejit's up_proj and down_proj against torch._grouped_mm, on one GPU.

For each layer and routing one routing file is written (the format of
runtime/src/routing.h, readRoutingFile), and both sides run on it:

moejit: `moejit run SPEC --layer L --tokens T --routing file:PATH --gemm G
--json OUT --flush-l2 --iters N` in a child process, once for up_proj (gather
and SwiGLU fused) and once for down_proj (score scaling fused). moejit checks
its own result against float64; its `pass` and `rel_err` are reported.

torch, in this process, on grouped rows and offsets built from the same file:
  (a) torch._grouped_mm alone, on rows gathered before timing;
  (b) the unfused pipeline: index_select gather + _grouped_mm + SwiGLU
      (up_proj), _grouped_mm + score scaling (down_proj);
  (c) one dense bf16 torch.mm of the same FLOPs, as a ceiling.
torch's results are checked on a few experts against float32 before timing.

Timing: CUDA events around each call, median of --iters after warm-up, L2
flushed before every call (zero_() of a buffer twice the L2 size, outside the
events), fresh random bf16 inputs. FLOPs: up_proj 2*R*d*2n, down_proj 2*R*n*d
with R = T*K rows.

Usage: grouped_gemm_vs_torch.py --moejit PATH/moejit [--iters 20]
       [--only NAME]... [--routing uniform|zipf|both] [--json OUT.json]
       grouped_gemm_vs_torch.py --self-test     (no torch, no GPU)
"""
import argparse
import bisect
import dataclasses
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile

try:
    import torch
except ImportError:  # --self-test runs without it
    torch = None

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")

GEMMS = ("up_proj", "down_proj")
ZIPF_EXPONENT = 1.5
ROUTINGS = {"uniform": "uniform", "zipf": f"zipf:{ZIPF_EXPONENT}"}
TORCH_TOLERANCE = 1e-2  # relative Frobenius error, as moejit run's default
MOEJIT_TIMEOUT_S = 1800


@dataclasses.dataclass(frozen=True)
class Cell:
    """One layer shape at one token count, with the issue's targets
    (moejit TFLOP/s over torch._grouped_mm TFLOP/s) per GEMM."""
    spec: str
    layer: str
    E: int
    d: int
    n: int
    K: int
    T: int
    targets: dict

    @property
    def rows(self):
        return self.T * self.K

    def flops(self, gemm):
        return 2.0 * self.rows * self.d * (2 * self.n if gemm == "up_proj" else self.n)

    def describe(self):
        return (f"{self.layer}: E={self.E} d={self.d} n={self.n} K={self.K}, T={self.T}, "
                f"R={self.rows}")


def _targets(up, down):
    return {"up_proj": up, "down_proj": down}


CELLS = {
    "qwen3": Cell("qwen3-30b-a3b.moe", "qwen3_30b_a3b", 128, 2048, 768, 8, 32768,
                  _targets(1.05, 1.05)),
    "sonic7b": Cell("sonicmoe-7b.moe", "sonicmoe_7b", 128, 1536, 256, 8, 32768,
                    _targets(1.1, 1.3)),
    "sonic7b_t24k": Cell("sonicmoe-7b.moe", "sonicmoe_7b", 128, 1536, 256, 8, 24576,
                         _targets(1.1, 1.3)),
    "olmoe": Cell("olmoe-1b-7b.moe", "olmoe_1b_7b", 64, 2048, 1024, 8, 32768,
                  _targets(1.05, 1.05)),
    "olmoe_t4k": Cell("olmoe-1b-7b.moe", "olmoe_1b_7b", 64, 2048, 1024, 8, 4096,
                      _targets(1.1, 1.1)),
    "mixtral": Cell("mixtral-8x7b.moe", "mixtral_8x7b", 8, 4096, 14336, 2, 32768,
                    _targets(None, None)),
}


def median(values):
    """The upper median, as `moejit run` reports it (nth_element at size/2)."""
    values = sorted(values)
    return values[len(values) // 2]


# --- routing: the same distributions as runtime/src/routing.cpp -------------

def route_tokens(method, tokens, experts, top_k, seed):
    """K distinct experts per token, expert e with probability proportional to
    its weight among those not yet taken: all weights equal for "uniform";
    for "zipf:S" weight (rank+1)^-S over a seeded random ranking of the
    experts (routeZipf). Scores: softmax over K logits uniform in [-2, 2]
    (assignScores). Returns (expert, score), flat lists of T*K in token order.
    """
    rng = random.Random(seed)
    expert = []
    score = []
    weighted = method != "uniform"
    if weighted:
        if not method.startswith("zipf:"):
            raise ValueError(f"unknown routing '{method}': use uniform or zipf:S")
        exponent = float(method[5:])
        if not exponent > 0:
            raise ValueError(f"routing '{method}': the Zipf exponent must be positive")
        ranking = list(range(experts))
        rng.shuffle(ranking)
        weight = [0.0] * experts
        for rank, e in enumerate(ranking):
            weight[e] = (rank + 1.0) ** -exponent
        cumulative = []
        total = 0.0
        for w in weight:
            total += w
            cumulative.append(total)
    everyone = range(experts)
    for _ in range(tokens):
        if weighted:
            # A draw from all experts, rejected when already taken, is a draw
            # proportional to the weights of those not yet taken.
            chosen = []
            while len(chosen) < top_k:
                e = min(bisect.bisect_right(cumulative, rng.random() * total), experts - 1)
                if e not in chosen:
                    chosen.append(e)
        else:
            chosen = rng.sample(everyone, top_k)
        z = [math.exp(rng.uniform(-2.0, 2.0)) for _ in range(top_k)]
        z_total = sum(z)
        expert.extend(chosen)
        score.extend(v / z_total for v in z)
    return expert, score


def write_routing_file(path, expert, score, top_k, header=""):
    """One line per token of K `EXPERT:SCORE` entries (readRoutingFile)."""
    with open(path, "w") as f:
        if header:
            f.write(f"# {header}\n")
        for t in range(len(expert) // top_k):
            base = t * top_k
            f.write(" ".join(f"{expert[base + k]}:{score[base + k]:.9g}"
                             for k in range(top_k)))
            f.write("\n")


def read_routing_file(path, tokens, experts, top_k):
    """The routing file as moejit reads it (parseRoutingText's rules)."""
    expert = []
    score = []
    token = 0
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            fields = line.split("#", 1)[0].split()
            if not fields:
                continue
            where = f"{path}:{line_number}"
            if token >= tokens:
                raise ValueError(f"{where}: more token lines than {tokens} tokens")
            if len(fields) != top_k:
                raise ValueError(f"{where}: token {token} has {len(fields)} entries, "
                                 f"K = {top_k} needed")
            chosen = []
            for field in fields:
                e_text, colon, s_text = field.partition(":")
                if not colon:
                    raise ValueError(f"{where}: '{field}' is not EXPERT:SCORE")
                e = int(e_text)
                s = float(s_text)
                if not 0 <= e < experts:
                    raise ValueError(f"{where}: expert {e} is out of range [0, {experts})")
                if not math.isfinite(s):
                    raise ValueError(f"{where}: '{s_text}' is not a finite score")
                if e in chosen:
                    raise ValueError(f"{where}: token {token} picks expert {e} twice")
                chosen.append(e)
                score.append(s)
            expert.extend(chosen)
            token += 1
    if token != tokens:
        raise ValueError(f"{path}: has {token} token lines, {tokens} expected")
    return expert, score


@dataclasses.dataclass
class GroupedRows:
    """Rows grouped by expert as moejit lays them out (groupByExpert): expert
    e owns rows [offsets[e], offsets[e+1]), in token order within an expert."""
    counts: list
    offsets: list  # E + 1 entries, from 0
    gather: list   # token of each row
    scale: list    # router score of each row

    @property
    def rows(self):
        return len(self.gather)


def group_by_expert(expert, score, experts, top_k):
    counts = [0] * experts
    for e in expert:
        counts[e] += 1
    offsets = [0] * (experts + 1)
    for e in range(experts):
        offsets[e + 1] = offsets[e] + counts[e]
    gather = [0] * len(expert)
    scale = [0.0] * len(expert)
    next_row = offsets[:-1]
    for slot, e in enumerate(expert):  # slots in token order: a stable sort
        row = next_row[e]
        next_row[e] += 1
        gather[row] = slot // top_k
        scale[row] = score[slot]
    return GroupedRows(counts, offsets, gather, scale)


def make_routing(cell, routing, seed, directory):
    """Writes the routing file of (cell, routing); returns its path and the
    grouped rows read back from it, so torch uses exactly what moejit reads."""
    method = ROUTINGS[routing]
    path = os.path.join(directory, f"routing_T{cell.T}_E{cell.E}_K{cell.K}_{routing}_s{seed}.txt")
    if not os.path.exists(path):
        expert, score = route_tokens(method, cell.T, cell.E, cell.K, seed)
        write_routing_file(path, expert, score, cell.K,
                           f"T={cell.T} E={cell.E} K={cell.K} routing {method} seed {seed}")
    expert, score = read_routing_file(path, cell.T, cell.E, cell.K)
    return path, group_by_expert(expert, score, cell.E, cell.K)


# --- moejit in a child process ------------------------------------------------

def run_moejit(moejit, cell, gemm, routing_path, iters, workdir, arch=None,
               timeout=MOEJIT_TIMEOUT_S):
    """The kernel entry of `moejit run --json` for `gemm`, with "tflops_here"
    from this script's FLOP count; or {"error": ...}."""
    out = os.path.join(workdir, f"moejit_{gemm}.json")
    if os.path.exists(out):
        os.remove(out)
    command = [moejit, "run", os.path.join(EXAMPLES, cell.spec), "--layer", cell.layer,
               "--tokens", str(cell.T), "--routing", "file:" + routing_path, "--gemm", gemm,
               "--json", out, "--flush-l2", "--iters", str(iters)]
    if arch:
        command += ["--arch", arch]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"{type(e).__name__}: {e}", "command": command}
    log = (completed.stdout + completed.stderr).strip()
    kernel = None
    if os.path.exists(out):
        try:
            with open(out) as f:
                report = json.load(f)
            kernel = next((k for k in report.get("kernels", []) if k.get("gemm") == gemm), None)
        except (OSError, ValueError) as e:
            log += f"\n(reading {out}: {e})"
    if kernel is None:
        return {"error": f"exit {completed.returncode}, no {gemm} entry in its JSON",
                "command": command, "log": log[-4000:]}
    result = dict(kernel, exit=completed.returncode, device=report.get("device"))
    ms = kernel.get("median_ms") or 0
    result["tflops_here"] = cell.flops(gemm) / (ms * 1e-3) / 1e12 if ms > 0 else None
    # up_proj also runs with H not stored (C = null: act(H) only, the
    # inference forward's launch).
    act_ms = kernel.get("act_only_median_ms") or 0
    result["act_only_tflops_here"] = (cell.flops(gemm) / (act_ms * 1e-3) / 1e12
                                      if act_ms > 0 else None)
    flops = kernel.get("flops")
    if flops and abs(flops - cell.flops(gemm)) > 1e-3 * cell.flops(gemm):
        result["warning"] = f"moejit counts {flops:.4g} FLOPs, this script {cell.flops(gemm):.4g}"
    if completed.returncode != 0:
        result["log"] = log[-4000:]
    return result


# --- torch ---------------------------------------------------------------------

class CellError(Exception):
    """torch's side of one cell cannot be measured (wrong result, no kernel)."""


class Timer:
    """CUDA-event median of one call, L2 flushed before every call."""

    def __init__(self, iters, warmup):
        self.iters = iters
        self.warmup = warmup
        properties = torch.cuda.get_device_properties(torch.cuda.current_device())
        l2 = getattr(properties, "L2_cache_size", 0) or 50 << 20  # H100: 50 MiB
        self.flush_bytes = 2 * l2
        self.flush = torch.empty(self.flush_bytes, dtype=torch.uint8, device="cuda")

    def median_ms(self, fn):
        for _ in range(self.warmup):
            fn()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(self.iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(self.iters)]
        for start, end in zip(starts, ends):
            self.flush.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return median([s.elapsed_time(e) for s, e in zip(starts, ends)])


def grouped_mm(a, b, offs):
    return torch._grouped_mm(a, b, offs=offs, out_dtype=torch.bfloat16)


def swiglu(h, n):
    return torch.nn.functional.silu(h[:, :n]) * h[:, n:]


def experts_to_check(counts):
    """The first, largest and last non-empty experts."""
    filled = [e for e, c in enumerate(counts) if c > 0]
    largest = max(filled, key=lambda e: counts[e])
    return sorted({filled[0], largest, filled[-1]})


def check_rows(name, out, reference_of, grouped, rows_per_expert=256):
    """Compares out's rows of a few experts with reference_of(e, lo, hi)
    (float32); raises CellError above TORCH_TOLERANCE."""
    worst = 0.0
    for e in experts_to_check(grouped.counts):
        lo = grouped.offsets[e]
        hi = min(grouped.offsets[e + 1], lo + rows_per_expert)
        ref = reference_of(e, lo, hi)
        err = float((out[lo:hi].float() - ref).norm() / ref.norm().clamp_min(1e-30))
        if not err <= TORCH_TOLERANCE:
            raise CellError(f"{name}: expert {e} rows {lo}..{hi} rel err {err:.2e} > "
                            f"{TORCH_TOLERANCE:g} against float32; not timed")
        worst = max(worst, err)
    return worst


def measure(timer, flops, fn):
    ms = timer.median_ms(fn)
    return {"median_ms": ms, "tflops": flops / (ms * 1e-3) / 1e12}


def bench_torch_up(cell, grouped, dev_rows, timer):
    d, n = cell.d, cell.n
    gather, offs = dev_rows["gather"], dev_rows["offs"]
    x = torch.randn(cell.T, d, device="cuda", dtype=torch.bfloat16)
    w1 = torch.randn(cell.E, d, 2 * n, device="cuda", dtype=torch.bfloat16).mul_(d ** -0.5)
    xg = x.index_select(0, gather)
    flops = cell.flops("up_proj")
    result = {}

    def ref_h(e, lo, hi):
        return x[gather[lo:hi]].float() @ w1[e].float()

    result["grouped_mm_rel_err"] = check_rows("torch._grouped_mm up_proj",
                                              grouped_mm(xg, w1, offs), ref_h, grouped)
    result["grouped_mm"] = measure(timer, flops, lambda: grouped_mm(xg, w1, offs))

    def pipeline():
        return swiglu(grouped_mm(x.index_select(0, gather), w1, offs), n)

    result["pipeline_rel_err"] = check_rows("gather+_grouped_mm+SwiGLU", pipeline(),
                                            lambda e, lo, hi: swiglu(ref_h(e, lo, hi), n),
                                            grouped)
    result["pipeline"] = measure(timer, flops, pipeline)
    w = w1[0]
    result["dense"] = measure(timer, flops, lambda: torch.mm(xg, w))
    return result


def bench_torch_down(cell, grouped, dev_rows, timer):
    d, n = cell.d, cell.n
    offs, scale = dev_rows["offs"], dev_rows["scale"]
    a = torch.randn(cell.rows, n, device="cuda", dtype=torch.bfloat16)
    w2 = torch.randn(cell.E, n, d, device="cuda", dtype=torch.bfloat16).mul_(n ** -0.5)
    scale_bf16 = scale.to(torch.bfloat16)[:, None]
    flops = cell.flops("down_proj")
    result = {}

    def ref_y(e, lo, hi):
        return a[lo:hi].float() @ w2[e].float()

    result["grouped_mm_rel_err"] = check_rows("torch._grouped_mm down_proj",
                                              grouped_mm(a, w2, offs), ref_y, grouped)
    result["grouped_mm"] = measure(timer, flops, lambda: grouped_mm(a, w2, offs))

    def pipeline():
        return grouped_mm(a, w2, offs) * scale_bf16

    result["pipeline_rel_err"] = check_rows(
        "_grouped_mm+scale", pipeline(),
        lambda e, lo, hi: ref_y(e, lo, hi) * scale[lo:hi, None], grouped)
    result["pipeline"] = measure(timer, flops, pipeline)
    w = w2[0]
    result["dense"] = measure(timer, flops, lambda: torch.mm(a, w))
    return result


def bench_torch(cell, gemm, grouped, timer, seed):
    dev_rows = {
        "gather": torch.tensor(grouped.gather, dtype=torch.int64, device="cuda"),
        "offs": torch.tensor(grouped.offsets[1:], dtype=torch.int32, device="cuda"),
        "scale": torch.tensor(grouped.scale, dtype=torch.float32, device="cuda"),
    }
    torch.manual_seed(seed)
    bench = bench_torch_up if gemm == "up_proj" else bench_torch_down
    try:
        return bench(cell, grouped, dev_rows, timer)
    except CellError as e:
        return {"error": str(e)}
    except RuntimeError as e:  # no kernel for this shape, out of memory, ...
        return {"error": f"torch: {str(e).splitlines()[0]}"}
    finally:
        del dev_rows
        torch.cuda.empty_cache()


# --- results -------------------------------------------------------------------

def judge(entry, target):
    """Fills ratio and met (None where a side is missing or no target)."""
    moejit_tflops = entry["moejit"].get("tflops_here")
    torch_tflops = entry["torch"].get("grouped_mm", {}).get("tflops")
    entry["ratio"] = moejit_tflops / torch_tflops if moejit_tflops and torch_tflops else None
    act_only = entry["moejit"].get("act_only_tflops_here")
    entry["ratio_act_only"] = act_only / torch_tflops if act_only and torch_tflops else None
    entry["target"] = target
    entry["met"] = None if entry["ratio"] is None or target is None else entry["ratio"] >= target
    return entry


def _num(value, fmt="{:.1f}"):
    return "—" if value is None else fmt.format(value)


def format_table(name, cell, routing, grouped_stats, gemms):
    """A markdown table of one layer and routing (TFLOP/s)."""
    lines = [f"### {name} ({cell.describe()}), routing {ROUTINGS[routing]}", ""]
    if grouped_stats:
        lines += [f"{grouped_stats['empty']} of {cell.E} experts empty, largest expert "
                  f"{grouped_stats['largest']} rows (mean {cell.rows / cell.E:.0f})", ""]
    lines += ["| GEMM | moejit | moejit check | torch._grouped_mm | torch unfused | dense mm "
              "| moejit/_grouped_mm | target | | moejit act only | act only/_grouped_mm |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for gemm, entry in gemms.items():
        m, t = entry["moejit"], entry["torch"]
        if "error" in m:
            check = "ERROR"
        else:
            check = ("PASS" if m.get("pass") else "FAIL") + " " + _num(m.get("rel_err"), "{:.1e}")
            if m.get("non_finite"):
                check += f", {m['non_finite']} non-finite"
        target = entry["target"]
        verdict = {True: "met", False: "missed", None: "—"}[entry["met"]]
        if target is not None and entry["met"] is None:
            verdict = "n/a"
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            gemm, _num(m.get("tflops_here")), check,
            _num(t.get("grouped_mm", {}).get("tflops")), _num(t.get("pipeline", {}).get("tflops")),
            _num(t.get("dense", {}).get("tflops")), _num(entry["ratio"], "{:.2f}x"),
            _num(target, ">= {:.2f}x"), verdict, _num(m.get("act_only_tflops_here")),
            _num(entry.get("ratio_act_only"), "{:.2f}x")))
    notes = []
    for gemm, entry in gemms.items():
        for side in ("moejit", "torch"):
            if "error" in entry[side]:
                notes.append(f"{gemm} {side}: {entry[side]['error']}")
        if "warning" in entry["moejit"]:
            notes.append(f"{gemm} moejit: {entry['moejit']['warning']}")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    lines.append("")
    lines.append("torch unfused: index_select gather + _grouped_mm + SwiGLU (up_proj), "
                 "_grouped_mm + score scaling (down_proj). moejit's up_proj writes H and "
                 "act(H) (a training forward); act only: the same kernel with H not stored "
                 "(C = null, an inference forward).")
    return "\n".join(lines)


def summary_lines(results):
    lines = []
    for record in results["cells"]:
        for gemm, entry in record["gemms"].items():
            if entry["target"] is None:
                continue
            verdict = {True: "met", False: "MISSED", None: "not measured"}[entry["met"]]
            act_only = entry.get("ratio_act_only")
            lines.append(f"{record['name']:<13} {record['routing']:<8} {gemm:<9} "
                         f"{_num(entry['ratio'], '{:.2f}x'):>6} (target {entry['target']:.2f}x) "
                         f"{verdict}" + (f"; act only {act_only:.2f}x" if act_only else ""))
    return lines


def has_failure(results):
    for record in results["cells"]:
        for entry in record["gemms"].values():
            m = entry["moejit"]
            if "error" in m or not m.get("pass") or "error" in entry["torch"]:
                return True
    return False


# --- driver --------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moejit", help="the moejit executable (required unless --self-test)")
    parser.add_argument("--iters", type=int, default=20, help="timed calls (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed torch calls before them")
    parser.add_argument("--only", choices=list(CELLS), action="append",
                        help="only this layer cell (repeatable)")
    parser.add_argument("--routing", choices=("uniform", "zipf", "both"), default="both")
    parser.add_argument("--seed", type=int, default=1, help="routing seed")
    parser.add_argument("--arch", help="passed to moejit run (e.g. sm_90 for the portable path)")
    parser.add_argument("--routing-dir",
                        help="write the routing files here and keep them (default: a temp dir)")
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--self-test", action="store_true",
                        help="test routing files, grouping, parsing and tables; no torch or GPU")
    args = parser.parse_args(argv)
    if not args.self_test and not args.moejit:
        parser.error("--moejit is required")
    if args.iters < 1:
        parser.error("--iters must be 1 or more")
    args.routings = ["uniform", "zipf"] if args.routing == "both" else [args.routing]
    args.cells = args.only or list(CELLS)
    return args


def bench(args):
    if torch is None or not torch.cuda.is_available():
        sys.exit("grouped_gemm_vs_torch.py: needs torch with a CUDA GPU "
                 "(--self-test runs without them)")
    if not hasattr(torch, "_grouped_mm"):
        sys.exit(f"grouped_gemm_vs_torch.py: torch {torch.__version__} has no torch._grouped_mm")
    timer = Timer(args.iters, args.warmup)
    device = torch.cuda.get_device_name()
    print(f"GPU: {device}, torch {torch.__version__}, L2 flush buffer "
          f"{timer.flush_bytes >> 20} MiB, {args.iters} iterations", flush=True)
    results = {"device": device, "torch": torch.__version__, "moejit": args.moejit,
               "iters": args.iters, "warmup": args.warmup, "seed": args.seed,
               "l2_flush_bytes": timer.flush_bytes, "cells": []}
    tables = []
    with tempfile.TemporaryDirectory() as workdir:
        routing_dir = args.routing_dir or workdir
        os.makedirs(routing_dir, exist_ok=True)
        for name in args.cells:
            cell = CELLS[name]
            for routing in args.routings:
                path, grouped = make_routing(cell, routing, args.seed, routing_dir)
                stats = {"empty": grouped.counts.count(0), "largest": max(grouped.counts)}
                record = {"name": name, "routing": routing, "method": ROUTINGS[routing],
                          **dataclasses.asdict(cell), "rows": grouped.rows,
                          "empty_experts": stats["empty"], "largest_expert_rows": stats["largest"],
                          "gemms": {}}
                print(f"\n== {name} {ROUTINGS[routing]}: {cell.describe()}", flush=True)
                for gemm in GEMMS:
                    torch.cuda.empty_cache()
                    m = run_moejit(args.moejit, cell, gemm, path, args.iters, workdir, args.arch)
                    if "error" in m or m.get("exit"):
                        print(f"moejit {gemm}: {m.get('error', 'exit ' + str(m.get('exit')))}\n"
                              f"  command: {' '.join(m.get('command', []))}\n"
                              f"{m.get('log', '')}", flush=True)
                    t = bench_torch(cell, gemm, grouped, timer, args.seed)
                    if "error" in t:
                        print(f"torch {gemm}: {t['error']}", flush=True)
                    record["gemms"][gemm] = judge({"flops": cell.flops(gemm), "moejit": m,
                                                   "torch": t}, cell.targets[gemm])
                results["cells"].append(record)
                table = format_table(name, cell, routing, stats, record["gemms"])
                tables.append(table)
                print("\n" + table, flush=True)
    summary = summary_lines(results)
    print("\n## Targets (moejit / torch._grouped_mm)\n")
    print("\n".join(summary) if summary else "(no cell with a target)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 1 if has_failure(results) else 0


# --- self-test (no torch, no GPU) ----------------------------------------------

FAKE_MOEJIT = r'''
import json, sys
args = sys.argv[2:]
opt = {args[i]: args[i + 1] for i in range(1, len(args) - 1) if args[i].startswith("--")}
assert "--flush-l2" in args and opt["--routing"].startswith("file:")
rows = sum(1 for line in open(opt["--routing"][5:]) if line.strip() and line[0] != "#")
if opt["--gemm"] == "down_proj":
    sys.exit("moejit run: error: simulated failure")
k = len(open(opt["--routing"][5:]).readlines()[1].split())
json.dump({"device": "fake", "arch": "sm_90a", "tokens": int(opt["--tokens"]),
           "routing": opt["--routing"], "seed": 1, "kernels": [{
           "layer": opt["--layer"], "gemm": "up_proj", "path": "hopper", "rows": rows * k,
           "m": rows * k, "n": 2 * 768, "k": 2048, "flops": 2.0 * rows * k * 2048 * 1536,
           "median_ms": 1.0, "tflops": 0, "act_only_median_ms": 0.8, "act_only_tflops": 0,
           "rel_err": 1.5e-3, "non_finite": 0, "pass": True}]},
          open(opt["--json"], "w"))
'''


def spec_layer_shape(spec_path, layer):
    """(E, d, n, K) of `layer` in a .moe file, read with a regex (self-test)."""
    text = re.sub(r"#[^\n]*", "", open(spec_path).read())
    start = re.search(r"\blayer\s+" + re.escape(layer) + r"\s*\{", text)
    assert start, f"{spec_path} has no layer {layer}"
    depth, i = 1, start.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    block = text[start.end():i]

    def value(key):
        return int(re.search(r"\b" + key + r"\s*=\s*(\d+)", block).group(1))

    return value("experts"), value("hidden"), value("intermediate"), value("top_k")


def self_test():
    checks = 0

    def check(condition, what):
        nonlocal checks
        checks += 1
        if not condition:
            raise AssertionError(what)

    # Arguments.
    args = parse_args(["--moejit", "m", "--only", "qwen3", "--only", "olmoe_t4k",
                       "--routing", "zipf"])
    check(args.cells == ["qwen3", "olmoe_t4k"] and args.routings == ["zipf"], "parse --only")
    check(parse_args(["--moejit", "m"]).routings == ["uniform", "zipf"], "default routing both")
    check(parse_args(["--self-test"]).iters == 20, "default iters")
    for bad in (["--only", "nope", "--moejit", "m"], [], ["--moejit", "m", "--iters", "0"]):
        try:
            with open(os.devnull, "w") as devnull:
                stderr, sys.stderr = sys.stderr, devnull
                try:
                    parse_args(bad)
                finally:
                    sys.stderr = stderr
            check(False, f"{bad} should be rejected")
        except SystemExit:
            checks += 1

    # The table of shapes matches the example specs.
    for name, cell in CELLS.items():
        shape = spec_layer_shape(os.path.join(EXAMPLES, cell.spec), cell.layer)
        check(shape == (cell.E, cell.d, cell.n, cell.K), f"{name}: spec says {shape}")
    check(CELLS["qwen3"].flops("up_proj") == 2.0 * 32768 * 8 * 2048 * 1536, "up_proj FLOPs")
    check(CELLS["qwen3"].flops("down_proj") == 2.0 * 32768 * 8 * 768 * 2048, "down_proj FLOPs")

    # Routing: distinct experts, scores a softmax, seeded, Zipf skewed.
    T, E, K = 4096, 128, 8
    uniform = route_tokens("uniform", T, E, K, seed=1)
    zipf = route_tokens("zipf:1.5", T, E, K, seed=1)
    check(route_tokens("zipf:1.5", T, E, K, seed=1) == zipf, "routing is reproducible")
    check(route_tokens("zipf:1.5", T, E, K, seed=2) != zipf, "the seed changes it")
    for expert, score in (uniform, zipf):
        check(len(expert) == T * K and len(score) == T * K, "T*K choices")
        for t in range(T):
            picks = expert[t * K:(t + 1) * K]
            check(len(set(picks)) == K and all(0 <= e < E for e in picks), "K distinct experts")
            check(abs(sum(score[t * K:(t + 1) * K]) - 1) < 1e-9, "scores sum to 1")
            check(all(math.exp(-4) / K / 2 < s < 1 for s in score[t * K:(t + 1) * K]),
                  "scores from logits in [-2, 2]")
    u_counts = group_by_expert(*uniform, E, K).counts
    z_counts = group_by_expert(*zipf, E, K).counts
    check(max(u_counts) < 1.5 * T * K / E, f"uniform is flat (max {max(u_counts)})")
    check(max(z_counts) > 0.9 * T, f"zipf:1.5 is skewed (max {max(z_counts)})")
    check(sorted(z_counts)[E // 2] < T * K / E, "most zipf experts below the mean")
    favourites = set()
    for seed in range(1, 6):
        counts = group_by_expert(*route_tokens("zipf:1.5", 256, E, K, seed), E, K).counts
        favourites.add(counts.index(max(counts)))
    check(len(favourites) > 1, "popularity is over a seeded random ranking")
    small = route_tokens("zipf:1.5", 64, 8, 2, seed=3)  # Mixtral-like E, K
    check(all(small[0][2 * t] != small[0][2 * t + 1] for t in range(64)), "E=8 K=2 distinct")
    try:
        route_tokens("zipf:0", 4, 8, 2, seed=1)
        check(False, "zipf:0 should be rejected")
    except ValueError:
        checks += 1

    with tempfile.TemporaryDirectory() as tmp:
        # Round trip through the file, in the format readRoutingFile takes.
        path = os.path.join(tmp, "r.txt")
        write_routing_file(path, *zipf, K, "header")
        expert, score = read_routing_file(path, T, E, K)
        check(expert == zipf[0], "experts survive the file")
        check(max(abs(a - b) for a, b in zip(score, zipf[1])) < 1e-7, "scores survive the file")
        lines = open(path).read().splitlines()
        check(lines[0].startswith("#") and len(lines) == T + 1, "one line per token")
        check(re.fullmatch(r"(\d+:[0-9.e-]+ ){7}\d+:[0-9.e-]+", lines[1]), "EXPERT:SCORE x K")
        for text, message in (("1:0.5\n", "entries"), ("1:0.5 1:0.5\n", "twice"),
                              ("1:0.5 9:0.5\n", "out of range"), ("1 2\n", "EXPERT:SCORE"),
                              ("1:0.5 2:nan\n", "finite"), ("", "token lines")):
            bad = os.path.join(tmp, "bad.txt")
            open(bad, "w").write(text)
            try:
                read_routing_file(bad, 1, 8, 2)
                check(False, f"{text!r} should be rejected")
            except ValueError as e:
                check(message in str(e), f"{text!r}: {e}")

        # Grouping: stable counting sort, as groupByExpert.
        g = group_by_expert([2, 0, 2, 1, 0, 2], [.1, .2, .3, .4, .5, .6], 3, 2)
        check(g.counts == [2, 1, 3] and g.offsets == [0, 2, 3, 6], "counts and offsets")
        check(g.gather == [0, 2, 1, 0, 1, 2] and g.scale == [.2, .5, .4, .1, .3, .6],
              "rows in token order within an expert")
        grouped = group_by_expert(expert, score, E, K)
        order = sorted(range(T * K), key=lambda slot: (expert[slot], slot))
        check(grouped.gather == [slot // K for slot in order], "grouping = stable sort")
        check(grouped.offsets[-1] == T * K == grouped.rows, "R = T*K")

        # make_routing writes once and reads back what it wrote.
        cell = dataclasses.replace(CELLS["qwen3"], T=64)
        path1, g1 = make_routing(cell, "zipf", 5, tmp)
        path2, g2 = make_routing(cell, "zipf", 5, tmp)
        check(path1 == path2 and g1 == g2 and g1.rows == 64 * 8, "make_routing")

        # The child process: a fake moejit that writes the JSON for up_proj
        # and fails down_proj.
        fake = os.path.join(tmp, "fake_moejit")
        with open(fake, "w") as f:
            f.write(f"#!{sys.executable}\n{FAKE_MOEJIT}")
        os.chmod(fake, 0o755)
        up = run_moejit(fake, cell, "up_proj", path1, 20, tmp)
        check("error" not in up and up["pass"] and up["rows"] == 64 * 8, f"moejit JSON: {up}")
        check(abs(up["tflops_here"] - cell.flops("up_proj") / 1e-3 / 1e12) < 1e-9, "TFLOP/s")
        check(abs(up["act_only_tflops_here"] - cell.flops("up_proj") / 0.8e-3 / 1e12) < 1e-9,
              "act-only TFLOP/s")
        check("warning" not in up, "FLOP counts agree")
        down = run_moejit(fake, cell, "down_proj", path1, 20, tmp)
        check("error" in down and "simulated failure" in down["log"], f"failure kept: {down}")
        missing = run_moejit(os.path.join(tmp, "no_such_moejit"), cell, "up_proj", path1, 20, tmp)
        check("error" in missing, "missing executable reported")

    # Tables and targets, with a missing side.
    cell = CELLS["sonic7b"]
    gemms = {
        "up_proj": judge({"moejit": {"tflops_here": 330.0, "pass": True, "rel_err": 1.6e-3,
                                     "act_only_tflops_here": 360.0},
                          "torch": {"grouped_mm": {"tflops": 300.0}, "pipeline": {"tflops": 200.0},
                                    "dense": {"tflops": 600.0}}}, 1.1),
        "down_proj": judge({"moejit": {"error": "exit 3"},
                            "torch": {"grouped_mm": {"tflops": 250.0}}}, 1.3),
    }
    check(gemms["up_proj"]["met"] is True and abs(gemms["up_proj"]["ratio"] - 1.1) < 1e-12,
          "1.10x meets 1.1x")
    check(gemms["down_proj"]["met"] is None, "no verdict without moejit")
    check(judge({"moejit": {"tflops_here": 100.0}, "torch": {"grouped_mm": {"tflops": 100.0}}},
                1.05)["met"] is False, "1.00x misses 1.05x")
    table = format_table("sonic7b", cell, "zipf", {"empty": 3, "largest": 9000}, gemms)
    rows = [line for line in table.splitlines() if line.startswith("| up_proj")
            or line.startswith("| down_proj")]
    check(len(rows) == 2 and all(r.count("|") == 12 for r in rows), "table rows")
    check("| 330.0 | PASS 1.6e-03 | 300.0 | 200.0 | 600.0 | 1.10x | >= 1.10x | met | 360.0 "
          "| 1.20x |" in table, f"up_proj row:\n{table}")
    check("| ERROR |" in table and "down_proj moejit: exit 3" in table and "n/a" in table,
          f"down_proj row:\n{table}")
    check("zipf:1.5" in table, "routing named")
    results = {"cells": [{"name": "sonic7b", "routing": "zipf", "gemms": gemms}]}
    summary = summary_lines(results)
    check(len(summary) == 2 and "met" in summary[0] and "not measured" in summary[1], "summary")
    check("act only 1.20x" in summary[0], f"act-only ratio in the summary: {summary[0]}")
    check(has_failure(results), "a moejit error is a failure")
    json.dumps(results)
    print(f"self-test: {checks} checks passed")
    return 0


def main():
    args = parse_args()
    sys.exit(self_test() if args.self_test else bench(args))


if __name__ == "__main__":
    main()
