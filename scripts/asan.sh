#!/usr/bin/env bash
# The host-code CPU tier under AddressSanitizer and UndefinedBehaviorSanitizer:
# the spec, schedule, cache, runtime and layer-reference tests (no LLVM in
# them, so the build is quick). Usage: scripts/asan.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-asan}
tests=(spec/moejit_spec_tests schedule/moejit_schedule_tests cache/moejit_cache_tests
       runtime/moejit_runtime_tests)
if [ ! -f "$build/build.ninja" ]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMOEJIT_SANITIZE=ON >/dev/null
fi
cmake --build "$build" --target $(for t in "${tests[@]}"; do basename "$t"; done)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in "${tests[@]}"; do
  "$build/tests/unit/$t" --gtest_brief=1
done
