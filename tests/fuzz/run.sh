#!/usr/bin/env bash
# Builds the parser fuzzer with clang in its own build folder and runs it for
# SECONDS seconds (default 60) with the examples as seed corpus. Fails on any
# crash, hang, leak or round-trip mismatch.
#   tests/fuzz/run.sh [SECONDS] [BUILD_DIR]
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${2:-$root/build-fuzz}"

CC="${CC:-clang}" CXX="${CXX:-clang++}" cmake -S "$root" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOEJIT_FUZZ=ON -DMOEJIT_BUILD_TESTS=OFF \
  -DMOEJIT_INSTALL=OFF >/dev/null
cmake --build "$build" --target moejit_fuzz_parser -j "${MOEJIT_JOBS:-2}"

# libFuzzer adds what it finds to the first corpus folder: keep the examples
# read-only and grow a scratch corpus beside the build.
corpus="$build/fuzz-corpus"
mkdir -p "$corpus" "$build/fuzz-artifacts"
"$build/tests/fuzz/moejit_fuzz_parser" "$corpus" "$root/examples" \
  -max_total_time="$seconds" -max_len=4096 -timeout=5 -rss_limit_mb=2048 \
  -artifact_prefix="$build/fuzz-artifacts/" -print_final_stats=1
