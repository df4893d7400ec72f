#!/usr/bin/env python3
"""A/B of two kernels of the same GEMM, interleaved, in one device call.

Each pair names two arms, `[BIN@]FILE:LAYER`: a moejit binary (default
--moejit), a .moe file and a layer of it. Both arms must describe the same
GEMM shapes (a schedule variant in bench/variants/, or one spec under an old
and a new binary). For every pair, GEMM and round, both arms run
`moejit run FILE --layer L --gemm G --tokens T --iters N --flush-l2 --json`
one after the other (arm order alternates between rounds), each arm with its
own MOEJIT_CACHE_DIR so no compile is shared. moejit checks each result
against float64; a failed check or a crash shows as FAIL.

Prints one markdown row per pair and GEMM: each round's TFLOP/s of both arms
(the act-only launch in brackets where the GEMM has one), the ratio of the
medians B / A and whether every check passed.

Usage:
  ab_schedules.py --moejit .devicebuild/moejit --tokens 32768 --rounds 2 \\
      --gemms up_proj,down_proj \\
      --pair examples/sonicmoe-7b.moe:sonicmoe_7b=bench/variants/staggered.moe:sonic_stag
  ab_schedules.py --self-test        (no GPU)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    binary: str
    spec: str
    layer: str

    @property
    def name(self):
        return f"{os.path.basename(self.binary)}@{os.path.basename(self.spec)}:{self.layer}"


def parse_arm(text, default_binary):
    binary = default_binary
    if "@" in text:
        binary, text = text.split("@", 1)
    spec, sep, layer = text.rpartition(":")
    if not sep or not spec or not layer:
        raise ValueError(f"arm '{text}': expected [BIN@]FILE:LAYER")
    return Arm(binary, spec, layer)


def parse_pair(text, default_binary):
    left, sep, right = text.partition("=")
    if not sep:
        raise ValueError(f"pair '{text}': expected ARM=ARM")
    return parse_arm(left, default_binary), parse_arm(right, default_binary)


@dataclass
class Sample:
    tflops: float = float("nan")
    act_only: float = float("nan")
    passed: bool = False


def run_arm(arm, gemm, args, cache_dir):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        path = handle.name
    command = [arm.binary, "run", arm.spec, "--layer", arm.layer, "--gemm", gemm,
               "--tokens", str(args.tokens), "--iters", str(args.iters), "--flush-l2",
               "--routing", args.routing, "--json", path]
    env = dict(os.environ, MOEJIT_CACHE_DIR=cache_dir)
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True,
                              timeout=args.timeout)
        if done.returncode != 0:
            sys.stderr.write(f"{' '.join(command)}: exit {done.returncode}\n"
                             f"{done.stdout[-2000:]}{done.stderr[-2000:]}\n")
        return read_sample(path)
    except subprocess.TimeoutExpired:
        sys.stderr.write(f"{' '.join(command)}: timed out after {args.timeout} s\n")
        return Sample()
    finally:
        os.unlink(path)


def read_sample(path):
    try:
        with open(path) as handle:
            kernels = json.load(handle)["kernels"]
    except (OSError, ValueError, KeyError):
        return Sample()
    if len(kernels) != 1:
        return Sample()
    k = kernels[0]
    number = lambda v: float("nan") if v is None else float(v)
    return Sample(number(k.get("tflops")), number(k.get("act_only_tflops")), bool(k.get("pass")))


def median(values):
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else float("nan")


def cell(samples):
    parts = []
    for s in samples:
        text = f"{s.tflops:.0f}"
        if s.act_only == s.act_only:
            text += f" ({s.act_only:.0f})"
        parts.append(text)
    return " / ".join(parts)


def row(pair, gemm, a, b):
    ratio = median([s.tflops for s in b]) / median([s.tflops for s in a])
    act = median([s.act_only for s in b]) / median([s.act_only for s in a])
    ratio_text = f"{ratio:.3f}" + (f" ({act:.3f})" if act == act else "")
    ok = all(s.passed for s in a + b)
    return (f"| {pair[0].name} vs {pair[1].name} | {gemm} | {cell(a)} | {cell(b)} "
            f"| {ratio_text} | {'pass' if ok else 'FAIL'} |")


def self_test():
    arm = parse_arm("old@examples/x.moe:layer_a", "moejit")
    assert arm == Arm("old", "examples/x.moe", "layer_a"), arm
    a, b = parse_pair("examples/x.moe:l1=bench/v.moe:l2", "bin/moejit")
    assert a.binary == "bin/moejit" and b.layer == "l2" and b.spec == "bench/v.moe"
    for bad in ("examples/x.moe", "x.moe:l1", ":l1=x:l2"):
        try:
            parse_pair(bad, "m")
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
    good = [Sample(400.0, float("nan"), True), Sample(420.0, float("nan"), True)]
    better = [Sample(500.0, float("nan"), True), Sample(440.0, float("nan"), True)]
    line = row((a, b), "down_proj", good, better)
    assert "| 1.146 |" in line and line.endswith("| pass |"), line
    line = row((a, b), "up_proj", good, [Sample(), Sample(450.0, 470.0, True)])
    assert "FAIL" in line and "| 1.098 |" in line, line
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"kernels": [{"tflops": 612.5, "act_only_tflops": None, "pass": True}]}, handle)
    try:
        sample = read_sample(handle.name)
        assert sample.tflops == 612.5 and sample.passed and sample.act_only != sample.act_only
    finally:
        os.unlink(handle.name)
    assert not read_sample("/nonexistent/moejit.json").passed
    print("ab_schedules.py self-test: ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moejit", default=".devicebuild/moejit")
    parser.add_argument("--pair", action="append", default=[], help="[BIN@]FILE:LAYER=[BIN@]FILE:LAYER")
    parser.add_argument("--gemms", default="up_proj,down_proj")
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--routing", default="uniform")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per moejit run")
    parser.add_argument("--self-test", action="store_true")
    args = parser.parse_args()
    if args.self_test:
        self_test()
        return 0
    if not args.pair:
        parser.error("give at least one --pair")
    try:
        pairs = [parse_pair(p, args.moejit) for p in args.pair]
    except ValueError as e:
        parser.error(str(e))
    caches = tempfile.mkdtemp(prefix="moejit-ab-")
    print(f"T = {args.tokens}, routing {args.routing}, {args.iters} iterations, "
          f"{args.rounds} rounds, L2 flushed; TFLOP/s per round (act only)\n")
    print("| pair | GEMM | A | B | B / A | checks |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for index, pair in enumerate(pairs):
        for gemm in args.gemms.split(","):
            samples = ([], [])
            for r in range(args.rounds):
                order = (0, 1) if r % 2 == 0 else (1, 0)
                for side in order:
                    cache = os.path.join(caches, f"{index}-{side}")
                    samples[side].append(run_arm(pair[side], gemm, args, cache))
            print(row(pair, gemm, samples[0], samples[1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
