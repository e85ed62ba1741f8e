#!/usr/bin/env bash
# Starts `dserve serve` on a free port over tiny-v3, runs the `openai` npm client tests against
# it, then sends SIGTERM and checks that the server drains and exits 0.
# Usage: run_openai_client_test.sh DSERVE_BINARY MODELS_DIR
set -euo pipefail
dserve="$1"
models="$2"
here="$(cd "$(dirname "$0")" && pwd)"
cache_dir="${DSERVE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dserve}"
module="$cache_dir/npm/node_modules/openai"
if [ ! -d "$module" ]; then
  echo "the openai npm package is missing from $cache_dir/npm: run scripts/setup.sh" >&2
  exit 1
fi
model="$models/tiny-v3-seed0"
if [ ! -f "$model/model.safetensors.index.json" ]; then
  tmp="$model.tmp$$"
  "$dserve" make-model --preset tiny-v3 --seed 0 --out "$tmp" >/dev/null
  mv -T "$tmp" "$model" 2>/dev/null || rm -rf "$tmp"
fi
log="$(mktemp)"
"$dserve" serve --model "$model" --served-model-name tiny-v3 --port 0 --grpc-port 0 --threads 2 --kv-cache-gb 0.25 \
  --shutdown-timeout 5 >"$log" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true; rm -f "$log"' EXIT
url=""
for _ in $(seq 1 600); do
  url="$(grep -o 'HTTP on http://[0-9.:]*' "$log" | sed 's/HTTP on //' || true)"
  [ -n "$url" ] && break
  if ! kill -0 $pid 2>/dev/null; then cat "$log" >&2; exit 1; fi
  sleep 0.1
done
if [ -z "$url" ]; then echo "dserve serve did not start:" >&2; cat "$log" >&2; exit 1; fi
status=0
DSERVE_URL="$url" DSERVE_OPENAI_MODULE="$module" node --test "$here/openai_client_test.mjs" || status=$?
kill -TERM $pid
server_status=0
wait $pid || server_status=$?
if [ "$server_status" -ne 0 ]; then
  echo "dserve serve exited with $server_status after SIGTERM:" >&2
  cat "$log" >&2
  exit 1
fi
grep -q "dserve serve: stopped" "$log" || { echo "no clean stop in the log" >&2; cat "$log" >&2; exit 1; }
exit $status
