#!/usr/bin/env bash
set -uo pipefail
source .devicekit/env.sh
export MOEJIT_CACHE_DIR=/tmp/mc
m=.devicebuild/moejit
mkdir -p $OUT
{
for job in qwen3-30b-a3b:qwen3_30b_a3b:up_proj qwen3-30b-a3b:qwen3_30b_a3b:down_proj \
           olmoe-1b-7b:olmoe_1b_7b:up_proj olmoe-1b-7b:olmoe_1b_7b:down_proj sonicmoe-7b:sonicmoe_7b:up_proj; do
  IFS=: read f l g <<< "$job"
  timeout 200 $m tune examples/$f.moe --layer $l --gemm $g --db $OUT/tuned.json --budget 14 --rounds 2 --iters 10 2>&1 | grep -v "^GPU"
done
} 2>&1 | tee $OUT/log2.txt
