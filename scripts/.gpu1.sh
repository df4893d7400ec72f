#!/usr/bin/env bash
# One-off device check (not committed).
set -uo pipefail
source .devicekit/env.sh
export MOEJIT_CACHE_DIR=/tmp/mc
m=.devicebuild/moejit
mkdir -p $OUT
{
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv
echo "== staggered correctness"
for T in 1 127; do timeout 200 $m run bench/variants/staggered.moe --tokens $T --iters 0 2>&1 | grep -E "FAIL|passed|error"; done
timeout 200 $m run bench/variants/staggered.moe --tokens 4096 --routing zipf:1.5 --iters 0 2>&1 | grep -E "FAIL|passed|error"
echo "== tune gtest"
timeout 200 .devicebuild/moejit_gpu_tests --gtest_filter='TuneGpu*' 2>&1 | tail -3
echo "== forward without/with cache (routing kernels)"
rm -rf /tmp/mc2
for i in 1 2; do MOEJIT_CACHE_DIR=/tmp/mc2 timeout 200 $m run examples/qwen3-30b-a3b.moe --forward --tokens 4096 --iters 3 2>&1 | grep -E "FAIL|PASS|pass|error|routing" | head -8; done
echo "== layer api tests"
timeout 200 .devicebuild/moejit_gpu_layer_api_tests --gtest_brief=1 2>&1 | tail -3
echo "== tune 7B down_proj"
timeout 300 $m tune examples/sonicmoe-7b.moe --gemm down_proj --db $OUT/tuned.json --budget 14 --rounds 2 --iters 10 2>&1 | tail -30
} 2>&1 | tee $OUT/log1.txt
