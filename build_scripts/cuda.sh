#!/usr/bin/env bash
# Build libllama for the cuda backend. NVIDIA GPUs; needs the CUDA toolkit (nvcc). Set CMAKE_CUDA_ARCHITECTURES to target a card, e.g. 90 for H100.
#   build_scripts/cuda.sh path/to/llama.cpp out/cuda
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || usage
src=$1 out=$2
shift 2
build_lib "$src" "$out" -DGGML_CUDA=ON "$@"
