#!/usr/bin/env python3
"""The MoE layer forward: moejit against a PyTorch reference pipeline, on one GPU.

PyTorch pipeline (bf16): logits = X Wr, softmax, torch.topk, renormalise;
sort the (token, slot) pairs by expert, gather X rows; torch._grouped_mm for
the up-projection, SwiGLU; torch._grouped_mm for the down-projection, scaled
by the score; un-permute and sum the K rows of each token. Each stage is timed
with CUDA events (median of --iters after warm-up).

moejit: runs `moejit run --forward` (runForwardCommand) in a child process on
the same GPU for the same shapes, plain top-K and token rounding, and reads
the JSON it writes. The device copy bandwidth is measured here, so the
aggregation's bandwidth can be given as a fraction of it.

Usage: layer_forward_vs_torch.py --moejit PATH/moejit [--iters 20]
       [--json OUT.json] [--only qwen3|sonic|sparse]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (spec file or text, E, d, n, K, T)
SHAPES = {
    "qwen3": dict(spec=os.path.join(REPO, "examples", "qwen3-30b-a3b.moe"),
                  E=128, d=2048, n=768, K=8, T=32768),
    "sonic": dict(spec=os.path.join(REPO, "examples", "sonicmoe-7b.moe"),
                  E=128, d=1536, n=256, K=8, T=24576),
    # A sparse layer where token rounding should pay: few tokens per expert.
    "sparse": dict(text="layer sparse_4096 { experts = 256; hidden = 4096; "
                        "intermediate = 1024\n router { top_k = 4 }\n"
                        " rounding { mode = nearest } }\n",
                   E=256, d=4096, n=1024, K=4, T=16384),
}


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


class StageTimer:
    """CUDA events around named stages of one run."""

    def __init__(self):
        self.events = []

    def mark(self, name):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self.events.append((name, event))

    def stages(self):
        return {name: start.elapsed_time(end)
                for (_, start), (name, end) in zip(self.events, self.events[1:])}


def grouped_mm(a, b, offs):
    return torch._grouped_mm(a, b, offs=offs)


def torch_forward(x, wr, w1, w2, K, timer=None):
    mark = timer.mark if timer else (lambda name: None)
    T, d = x.shape
    E, _, u = w1.shape
    n = u // 2
    mark("start")
    logits = (x @ wr).float()
    scores = torch.softmax(logits, dim=-1)
    top_scores, top_ids = torch.topk(scores, K, dim=-1)
    top_scores = top_scores / top_scores.sum(dim=-1, keepdim=True)
    mark("router")
    flat_ids = top_ids.flatten()
    order = torch.argsort(flat_ids, stable=True)
    token_of_row = order // K
    counts = torch.bincount(flat_ids, minlength=E)
    offs = torch.cumsum(counts, 0).to(torch.int32)
    row_scores = top_scores.flatten()[order]
    xg = x[token_of_row]
    mark("metadata+gather")
    h = grouped_mm(xg, w1, offs)
    act = torch.nn.functional.silu(h[:, :n]) * h[:, n:]
    mark("up_proj+swiglu")
    y = grouped_mm(act, w2, offs) * row_scores[:, None].to(x.dtype)
    mark("down_proj+scale")
    unsorted = torch.empty_like(y)
    unsorted[order] = y
    out = unsorted.view(T, K, d).sum(dim=1)
    mark("aggregation")
    return out, top_ids, top_scores


def check_torch_forward(x, wr, w1, w2, K, out, top_ids, top_scores, tokens=8):
    """A few tokens' outputs in float64 from the pipeline's own routing."""
    n = w1.shape[2] // 2
    worst = 0.0
    for t in range(tokens):
        ref = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
        for k in range(K):
            e = int(top_ids[t, k])
            h = x[t].double() @ w1[e].double()
            act = torch.nn.functional.silu(h[:n]) * h[n:]
            ref += float(top_scores[t, k]) * (act @ w2[e].double())
        err = (out[t].double() - ref).norm() / ref.norm()
        worst = max(worst, float(err))
    return worst


def bench_torch(shape, iters, warmup=3):
    torch.manual_seed(0)
    E, d, n, K, T = (shape[k] for k in ("E", "d", "n", "K", "T"))
    dev = "cuda"
    x = (torch.rand(T, d, device=dev) * 2 - 1).to(torch.bfloat16)
    wr = ((torch.rand(d, E, device=dev) * 2 - 1) * 3 / d ** 0.5).to(torch.bfloat16)
    w1 = ((torch.rand(E, d, 2 * n, device=dev) * 2 - 1) / d ** 0.5).to(torch.bfloat16)
    w2 = ((torch.rand(E, n, d, device=dev) * 2 - 1) / n ** 0.5).to(torch.bfloat16)
    out, ids, scores = torch_forward(x, wr, w1, w2, K)
    err = check_torch_forward(x, wr, w1, w2, K, out, ids, scores)
    for _ in range(warmup):
        torch_forward(x, wr, w1, w2, K)
    runs = []
    for _ in range(iters):
        timer = StageTimer()
        torch_forward(x, wr, w1, w2, K, timer)
        runs.append(timer)
    torch.cuda.synchronize()
    stages = [r.stages() for r in runs]
    names = list(stages[0].keys())
    result = {name: median([s[name] for s in stages]) for name in names}
    total = median([sum(s.values()) for s in stages])
    flops = 6.0 * T * K * n * d
    return dict(total_ms=total, tflops=flops / (total * 1e-3) / 1e12, stages=result,
                rel_err=err)


def copy_bandwidth(iters=20):
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return 2 * src.numel() / (median(times) * 1e-3) / 1e9  # bytes read + written


def run_moejit(job, shape, rounding, iters, workdir):
    spec = shape.get("spec")
    if spec is None:
        spec = os.path.join(workdir, "shape.moe")
        with open(spec, "w") as f:
            f.write(shape["text"])
    result = os.path.join(workdir, "result.json")
    if os.path.exists(result):
        os.remove(result)
    command = [job, "run", spec, "--forward", "--tokens", str(shape["T"]), "--iters", str(iters), "--json", result]
    if rounding:
        command.append("--rounding")
    completed = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(completed.stdout)
    sys.stderr.write(completed.stderr)
    if not os.path.exists(result):
        return None
    with open(result) as f:
        return json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moejit", required=True, help="the moejit command line")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--only", choices=sorted(SHAPES), action="append")
    args = parser.parse_args()

    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    bandwidth = copy_bandwidth()
    print(f"device copy bandwidth: {bandwidth:.0f} GB/s (read + write)", flush=True)
    results = {"copy_gbps": bandwidth, "shapes": {}}
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.only or SHAPES:
            shape = SHAPES[name]
            print(f"\n== {name}: E={shape['E']} d={shape['d']} n={shape['n']} K={shape['K']} "
                  f"T={shape['T']}", flush=True)
            entry = {"torch": None, "moejit": {}}
            if name != "sparse":
                entry["torch"] = bench_torch(shape, args.iters)
                t = entry["torch"]
                stages = ", ".join(f"{k} {v:.3f}" for k, v in t["stages"].items())
                print(f"torch   : {t['total_ms']:.3f} ms {t['tflops']:.0f} TFLOP/s "
                      f"(check rel err {t['rel_err']:.1e}); {stages}", flush=True)
                torch.cuda.empty_cache()
            for rounding in (False, True):
                m = run_moejit(args.moejit, shape, rounding, args.iters, workdir)
                label = "rounding" if rounding else "top-K"
                entry["moejit"][label] = m
                if m and "total_ms" in m:
                    agg_gbps = m["aggregation_bytes"] / (m["aggregation_ms"] * 1e-3) / 1e9
                    print(f"moejit {label:8}: {m['total_ms']:.3f} ms {m['tflops']:.0f} TFLOP/s "
                          f"R={m['rows']} {'PASS' if m['passed'] else 'FAIL'}; routing "
                          f"{m['routing_ms']:.3f} up {m['up_proj_ms']:.3f} down "
                          f"{m['down_proj_ms']:.3f} aggregation {m['aggregation_ms']:.3f} ms "
                          f"({agg_gbps:.0f} GB/s = {agg_gbps / bandwidth:.0%} of copy)",
                          flush=True)
            results["shapes"][name] = entry
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
