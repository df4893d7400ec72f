#!/usr/bin/env bash
# Installs what moejit needs to build and test, from Debian's packages.
# Idempotent: does nothing when everything is present.
set -euo pipefail

packages=(
  cmake ninja-build g++ git python3
  llvm-22-dev libmlir-22-dev mlir-22-tools
  nlohmann-json3-dev libfmt-dev libgtest-dev libxxhash-dev libcli11-dev
  clang libclang-rt-dev # the parser fuzzer (libFuzzer)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

cuda=${CUDA_HOME:-/usr/local/cuda}
if [ ! -f "$cuda/include/cuda.h" ] || [ ! -x "$cuda/bin/ptxas" ]; then
  echo "setup: error: the CUDA toolkit (headers, NVRTC, ptxas) is not at $cuda;" \
       "install CUDA 12.4 or newer there or set CUDA_HOME" >&2
  exit 1
fi
