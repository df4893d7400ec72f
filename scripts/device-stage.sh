#!/usr/bin/env bash
# Copies the binaries a GPU host needs (stripped) from the build folder into
# .devicebuild/, small enough to travel with .devicekit/ (64 MiB in all).
# Usage: scripts/device-stage.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
stage=.devicebuild
rm -rf "$stage" && mkdir -p "$stage"
for bin in tools/moejit/moejit bench/moejit_compile_latency \
           $(cd "$build" && find tests -maxdepth 3 -type f -perm -u+x -name 'moejit_gpu_*tests' -printf '%p\n'); do
  [ -f "$build/$bin" ] || continue
  # Tests of the shared library need libmoejit.so (~48 MB stripped), more
  # than the transfer leaves beside the kit: left out, said so.
  if readelf -d "$build/$bin" | grep -q 'NEEDED.*libmoejit\.so'; then
    echo "left out $(basename "$bin"): it needs libmoejit.so, too large to carry" >&2
    continue
  fi
  strip -o "$stage/$(basename "$bin")" "$build/$bin"
done
du -sh "$stage" .devicekit 2>/dev/null
