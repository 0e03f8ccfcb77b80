#!/usr/bin/env bash
# Build libllama for the metal backend. Apple GPUs (macOS); the Metal shaders are embedded in the library.
#   build_scripts/metal.sh path/to/llama.cpp out/metal
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || usage
src=$1 out=$2
shift 2
build_lib "$src" "$out" -DGGML_METAL=ON -DGGML_METAL_EMBED_LIBRARY=ON "$@"
