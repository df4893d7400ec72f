#!/usr/bin/env bash
# Installs the build into a temporary prefix, then configures, builds and runs
# a project against it (the consumer by default), with a fresh kernel cache.
# Usage: run.sh BUILD_DIR SOURCE_DIR [PROJECT_DIR EXECUTABLE [ARGS...]]
set -euo pipefail
build=$1
src=$2
project=${3:-$src/tests/consumer}
executable=${4:-consumer}
shift $(( $# < 4 ? $# : 4 ))
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
cmake -S "$project" -B "$work/build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
MOEJIT_CACHE_DIR="$work/cache" "$work/build/$executable" "$@"
