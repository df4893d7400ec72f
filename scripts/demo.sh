#!/usr/bin/env bash
# The main job on a bundled example: set up, build, check the Qwen3-30B-A3B
# layer, print its canonical spec, then compile its grouped GEMMs and run them
# on the GPU against a CPU reference (without a GPU: compile only).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
moejit=${BUILD_DIR:-build}/tools/moejit/moejit
example=examples/qwen3-30b-a3b.moe
"$moejit" check "$example"
"$moejit" fmt "$example"
"$moejit" run "$example" --tokens 4096
