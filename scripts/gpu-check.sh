#!/usr/bin/env bash
# On a GPU host, from the project root, after `source .devicekit/env.sh`:
# the GPU tier of the tests, `moejit run` on every example at several token
# counts and routings, compute-sanitizer on a small case, and the SASS check.
# Logs go to ${OUT:-/tmp/moejit-gpu}. Usage: scripts/gpu-check.sh [quick]
set -uo pipefail
bin=${BIN:-.devicebuild}
out=${OUT:-/tmp/moejit-gpu}
mkdir -p "$out"
status=0
run() { echo "+ $*"; "$@" || { echo "FAILED($?): $*"; status=1; }; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"
"$bin/moejit" info | tee -a "$out/gpu.txt"

for t in "$bin"/moejit_*tests; do
  run "$t" --gtest_brief=1 2>&1 | tail -n 25
done 2>&1 | tee "$out/gtests.log"

examples=(examples/*.moe)
tokens=(0 1 127 4096)
[ "${1:-}" = quick ] && tokens=(127)
for ex in "${examples[@]}"; do
  for t in "${tokens[@]}"; do
    run "$bin/moejit" run "$ex" --tokens "$t" --iters 0
  done
  run "$bin/moejit" run "$ex" --tokens 4096 --routing zipf:1.5 --iters 0
done 2>&1 | tee "$out/run.log" | grep -E "FAIL|error|^\+" | head -200

echo "status $status"
exit $status
