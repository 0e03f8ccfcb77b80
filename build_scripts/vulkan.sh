#!/usr/bin/env bash
# Build libllama for the vulkan backend. Any Vulkan GPU; needs the Vulkan SDK headers and glslc.
#   build_scripts/vulkan.sh path/to/llama.cpp out/vulkan
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || usage
src=$1 out=$2
shift 2
build_lib "$src" "$out" -DGGML_VULKAN=ON "$@"
