#!/usr/bin/env bash
# Checks the dynamic symbol table of a moejit shared library: every defined
# symbol is moejit's (namespace moejit, its vtables/typeinfo, the C API), and
# no LLVM/MLIR library is needed at run time.
# Usage: check_exports.sh LIBRARY
set -euo pipefail
lib=$1
exported=$(nm -D --defined-only "$lib" | awk '{print $3}')
count=$(printf '%s\n' "$exported" | grep -c . || true)
foreign=$(printf '%s\n' "$exported" | c++filt |
  grep -v -E '^(moejit::|typeinfo for moejit::|typeinfo name for moejit::|vtable for moejit::|moejit_)' || true)
needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
status=0
if [ -n "$foreign" ]; then
  echo "FAIL: $lib exports symbols that are not moejit's:"
  printf '%s\n' "$foreign" | head -50
  status=1
fi
if printf '%s\n' "$needed" | grep -q -E 'LLVM|MLIR'; then
  echo "FAIL: $lib needs a shared LLVM/MLIR:"
  printf '%s\n' "$needed"
  status=1
fi
if ! printf '%s\n' "$exported" | grep -q '^moejit_runtime_create$'; then
  echo "FAIL: $lib does not export the C API (moejit_runtime_create)"
  status=1
fi
[ $status -eq 0 ] && echo "exports ok: $count symbols, all moejit's; needs: $(echo $needed)"
exit $status
