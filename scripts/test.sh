#!/usr/bin/env bash
# Set up, build and run every test of the CPU tier (GPU tests skip without a
# GPU), then the host-code tests under ASan/UBSan, then fuzz the parser for a
# bounded time. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j2
./scripts/asan.sh
./tests/fuzz/run.sh "${MOEJIT_FUZZ_SECONDS:-60}"
