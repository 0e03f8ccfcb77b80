#!/usr/bin/env bash
# Build libllama for the cpu backend. CPU only, tuned for this machine (-march=native).
#   build_scripts/cpu.sh path/to/llama.cpp out/cpu
set -euo pipefail
. "$(dirname "$0")/common.sh"
[ $# -ge 2 ] || usage
src=$1 out=$2
shift 2
build_lib "$src" "$out" -DGGML_NATIVE=ON "$@"
