#!/usr/bin/env bash
# Shared by the per-backend scripts: configure, build and collect libllama and its ggml
# libraries from a llama.cpp checkout into one folder that LLAMA_CPP_LIB_PATH / --lib-path
# can point at.
#
#   build_lib SRC OUT [extra cmake flags...]
#
# On x86-64, ggml's AMX kernels are compiled out unless LLAMA_AMX=1: at llama.cpp 0c1e570
# they crash on the first multi-token batch on CPUs with AMX (llama.cpp #20824). The flags
# go before yours, so a CMAKE_C_FLAGS/CMAKE_CXX_FLAGS you pass replaces them.
# The source can be a git checkout or the llama.cpp that llama-cpp-python's sdist vendors
# (make leaves it in .wheels/sdist/; unpack it and pass .../vendor/llama.cpp).
set -euo pipefail

EXPECTED_COMMIT=0c1e570

build_lib() {
  local src=$1 out=$2
  shift 2
  if [ ! -f "$src/include/llama.h" ]; then
    echo "error: $src is not a llama.cpp checkout (no include/llama.h)" >&2
    exit 2
  fi
  if git -C "$src" rev-parse --short=7 HEAD >/dev/null 2>&1; then
    local head
    head=$(git -C "$src" rev-parse --short=7 HEAD)
    if [ "$head" != "$EXPECTED_COMMIT" ]; then
      echo "warning: $src is at $head; the bindings were written for $EXPECTED_COMMIT" >&2
    fi
  fi
  local build="$src/build-llama-server-py"
  local isa=()
  if [ "$(uname -m)" = x86_64 ] && [ "${LLAMA_AMX:-0}" != 1 ]; then
    isa=("-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
         "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16")
  fi
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_CURL=OFF -DGGML_RPC=ON "${isa[@]}" "$@"
  cmake --build "$build" --config Release -j "${JOBS:-$(nproc 2>/dev/null || sysctl -n hw.ncpu)}" \
    --target llama mtmd
  mkdir -p "$out"
  find "$build" \( -name 'libllama.*' -o -name 'libggml*' -o -name 'libmtmd.*' \) \
    \( -name '*.so*' -o -name '*.dylib' -o -name '*.dll' \) -exec cp -P {} "$out/" \;
  echo "built into $out; run the server with: LLAMA_CPP_LIB_PATH=$out llama-server ..."
}

usage() {
  echo "usage: $0 LLAMA_CPP_CHECKOUT OUTPUT_DIR [extra cmake flags]" >&2
  echo "  builds llama.cpp (commit $EXPECTED_COMMIT) as shared libraries into OUTPUT_DIR" >&2
  exit 2
}
