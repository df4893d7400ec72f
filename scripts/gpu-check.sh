#!/usr/bin/env bash
# The GPU checks of a release, on a GPU host, from the project root, after
# `source .devicekit/env.sh` and scripts/device-stage.sh on the build host:
# the GPU tier of the tests, `moejit run` of every family at T = 32768 on the
# Hopper and the portable paths, the layer forward against PyTorch,
# compute-sanitizer on a small case, HGMMA in the SASS and compile latency;
# `variants` (not in the default list) checks and A/Bs the schedule variants
# that wait for their first measurement.
# Logs go to $OUT (default /tmp/moejit-gpu). Usage: scripts/gpu-check.sh [SECTION...]
set -uo pipefail
bin=${BIN:-.devicebuild}
out=${OUT:-/tmp/moejit-gpu}
mkdir -p "$out"
export MOEJIT_CACHE_DIR=${MOEJIT_CACHE_DIR:-/tmp/moejit-cache}
sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(info gtests runs forward sanitizer sass compile)
m="$bin/moejit"

for section in "${sections[@]}"; do
  case $section in
  info)
    { nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; "$m" info; } \
      2>&1 | tee "$out/info.log" ;;
  gtests)
    for t in ${GTEST_BINS:-"$bin"/moejit_gpu*tests}; do
      [ -x "$t" ] || t="$bin/$t"
      [ -x "$t" ] || continue
      echo "== $t"
      timeout ${GTEST_TIMEOUT:-200} "$t" --gtest_brief=1 ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER}
      echo "== exit $?"
    done 2>&1 | tee "$out/gtests.log" | grep -E "^==|FAILED|PASSED|Failure" ;;
  runs)
    for ex in qwen3-30b-a3b sonicmoe-7b; do
      for arch in sm_90a sm_90; do
        echo "== $ex T=32768 $arch"
        timeout 150 "$m" run "examples/$ex.moe" --tokens 32768 --arch $arch --iters 20
      done
      echo "== $ex T=4096 zipf:1.5"
      timeout 100 "$m" run "examples/$ex.moe" --tokens 4096 --routing zipf:1.5 --iters 0
    done 2>&1 | tee "$out/runs.log" ;;
  forward)
    timeout ${FORWARD_TIMEOUT:-240} python3 bench/layer_forward_vs_torch.py --moejit "$m" --iters 20 --json "$out/forward.json" \
      2>&1 | tee "$out/forward.log" ;;
  sanitizer)
    compute-sanitizer --tool memcheck --print-limit 20 "$m" run examples/sonicmoe-7b.moe \
      --tokens 127 --iters 0 --layer sonicmoe_7b 2>&1 | tail -n 30 | tee "$out/sanitizer.log" ;;
  sass)
    for arch in sm_90a sm_90; do
      "$m" compile examples/sonicmoe-7b.moe --emit=ptx --arch=$arch -o /tmp/k-$arch.ptx &&
        ptxas -arch=$arch /tmp/k-$arch.ptx -o /tmp/k-$arch.cubin &&
        echo "$arch: HGMMA $(cuobjdump --dump-sass /tmp/k-$arch.cubin | grep -c HGMMA)," \
             "HMMA $(cuobjdump --dump-sass /tmp/k-$arch.cubin | grep -c 'HMMA')," \
             "LDL/STL $(cuobjdump --dump-sass /tmp/k-$arch.cubin | grep -cE 'LDL|STL')"
    done 2>&1 | tee "$out/sass.log" ;;
  variants)
    # Schedule variants not yet measured (bench/HOPPER_NOTES.md, step 22):
    # correctness against float64, then an interleaved A/B with the examples.
    timeout 300 "$bin/moejit_gpu_tests" --gtest_brief=1 --gtest_filter='*tma_stores*' 2>&1 |
      tee "$out/variants.log"
    for pair in sonicmoe-7b.moe:sonicmoe_7b_topk=sonic_tma qwen3-30b-a3b.moe:qwen3_30b_a3b=qwen3_tma \
                olmoe-1b-7b.moe:olmoe_1b_7b=olmoe_tma; do
      echo "--pair examples/${pair%=*}=bench/variants/tma-stores.moe:${pair#*=}"
    done | xargs timeout 400 python3 bench/ab_schedules.py --moejit "$m" --rounds 2 \
      --gemms up_proj,down_proj,dx 2>&1 | tee -a "$out/variants.log" ;;
  compile)
    [ -x "$bin/moejit_compile_latency" ] &&
      "$bin/moejit_compile_latency" --arch=sm_90a --repeat=3 examples/*.moe 2>&1 | tee "$out/compile.log" ;;
  esac
done
