#!/usr/bin/env bash
# The default libllama: llama-cpp-python's sdist compiled into a wheel that lives in a
# project-local folder named after everything that shapes the binary (version, cmake flags,
# the CPU's instruction sets), so that changing a flag, or moving the checkout to another
# kind of CPU, builds a new wheel instead of silently reusing an old one. pip's own cache is
# never consulted for it (--no-cache-dir), and pip builds it with build isolation, so its
# build backend (scikit-build-core) comes from the registry like on a fresh machine.
#
#   build_scripts/llama_wheel.sh key        print the key (the Makefile names the folder by it)
#   build_scripts/llama_wheel.sh dir        print the folder the wheel goes to
#   build_scripts/llama_wheel.sh build      download the sdist if needed, build the wheel
#
# Environment:
#   PYTHON            the interpreter whose pip builds the wheel (default python3)
#   LLAMA_CPP_VERSION llama-cpp-python version (default 0.3.36, which vendors llama.cpp 0c1e570)
#   LLAMA_CMAKE_ARGS  cmake flags for llama.cpp (default below: an AVX2 list, or native)
#   LLAMA_AMX         1 keeps ggml's AMX kernels; by default they are compiled out on x86-64,
#                     because at 0c1e570 they crash on the first multi-token batch
#                     (llama.cpp #20824: the tile configuration is optimised away)
#   WHEEL_ROOT        where wheels and the sdist are kept (default .wheels)
set -euo pipefail

PYTHON=${PYTHON:-python3}
VERSION=${LLAMA_CPP_VERSION:-0.3.36}
ROOT=${WHEEL_ROOT:-.wheels}

cpu_has() {   # cpu_has FLAG...: every flag is in /proc/cpuinfo
  local flags
  flags=" $(grep -m1 -E '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2-) "
  for f in "$@"; do case "$flags" in *" $f "*) ;; *) return 1 ;; esac; done
}

# The default ISA: an explicit AVX2 list where the CPU has it, else -march=native. Measured
# on the 2-core Xeon (AVX-512 + AMX) with `python -m bench --levels 1`, both orders: the
# AVX2 list decodes 6-7% faster than native minus AMX (95.3 vs 89.5 and 97.8 vs 91.4 tok/s;
# prompt 4-5% slower), and the same wheel suits the AVX2-only EPYC machines.
# GGML_RPC: the ggml RPC backend, so the library can offload to remote workers.
if [ -z "${LLAMA_CMAKE_ARGS:-}" ] && [ "$(uname -m)" = x86_64 ] && cpu_has avx2 fma f16c bmi2; then
  ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_RPC=ON"
else
  ARGS=${LLAMA_CMAKE_ARGS:-"-DGGML_NATIVE=ON -DGGML_RPC=ON"}
fi

if [ "$(uname -m)" = x86_64 ] && [ "${LLAMA_AMX:-0}" != 1 ]; then
  # GCC and clang honour an explicit -mno-* whatever its position relative to -march=native.
  noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  ARGS="$ARGS -DCMAKE_C_FLAGS=${noamx// /\\ } -DCMAKE_CXX_FLAGS=${noamx// /\\ }"
fi

cpu_isa() {
  # The instruction sets a native build may use; a wheel built for one CPU must not be
  # reused on another (an AVX-512 build dies with SIGILL on an AVX2-only machine).
  if [ -r /proc/cpuinfo ]; then
    grep -m1 -E '^(flags|Features)' /proc/cpuinfo | cut -d: -f2- | tr ' ' '\n' | sort | tr '\n' ' '
  else
    uname -m
  fi
}

key() {
  printf '%s\n%s\n%s\n' "$VERSION" "$ARGS" "$(cpu_isa)" | sha256sum | cut -c1-12
}

dir() { echo "$ROOT/llama-cpp-python-$VERSION-$(key)"; }

build() {
  local out sdist_dir sdist
  out=$(dir)
  sdist_dir="$ROOT/sdist"
  sdist="$sdist_dir/llama_cpp_python-$VERSION.tar.gz"
  mkdir -p "$sdist_dir" "$out"
  if [ ! -f "$sdist" ]; then
    echo "downloading the llama-cpp-python $VERSION sdist"
    "$PYTHON" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
      --no-cache-dir -d "$sdist_dir" "llama-cpp-python==$VERSION"
  fi
  rm -f "$out"/*.whl
  echo "compiling llama.cpp (llama-cpp-python $VERSION) with: $ARGS"
  echo "  a few minutes on 2 cores; the wheel goes to $out"
  CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$PYTHON" -m pip wheel --disable-pip-version-check -q --no-deps --no-cache-dir \
    -w "$out" "$sdist"
  printf '%s\n' "$ARGS" > "$out/cmake-args.txt"
  ls "$out"/*.whl >/dev/null
}

case "${1:-}" in
  key) key ;;
  dir) dir ;;
  build) build ;;
  *) echo "usage: $0 key|dir|build" >&2; exit 2 ;;
esac
