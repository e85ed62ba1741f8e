#!/usr/bin/env bash
# The front-end benchmark the front-ends issue asks for, on tiny-v3 with 2 engine threads:
# `dserve bench-serve` against `dserve serve` (HTTP, SSE streaming, JSON per token) at
# concurrency 1, 16 and 64, and the same workload through the engine alone (`dserve bench`,
# in-process). Rounds alternate server and engine runs; medians over the rounds are printed,
# with the server's added time per token (its ITL p50 over the engine's) and its throughput
# relative to the engine's.
# Usage: scripts/bench_serve.sh [ROUNDS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
scripts/setup.sh >/dev/null
scripts/build.sh >/dev/null
model=".cache/models/tiny-v3-seed0"
if [ ! -f "$model/model.safetensors.index.json" ]; then
  build/dserve make-model --preset tiny-v3 --seed 0 --out "$model" >&2
fi
work="$(mktemp -d)"
build/dserve serve --model "$model" --served-model-name tiny-v3 --port 0 --grpc-port 0 \
  --threads 2 >"$work/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
url=""
for _ in $(seq 1 600); do
  url="$(grep -o 'HTTP on http://[0-9.:]*' "$work/serve.log" | sed 's/HTTP on //' || true)"
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/serve.log" >&2; exit 1; }
load=(--num-prompts 64 --input-len 128 --output-len 64 --concurrency 1,16,64)
# CPU time (clock ticks) of the server's threads named $1 (dserve-http: the HTTP I/O threads).
thread_ticks() {
  local total=0 t
  for t in /proc/$pid/task/*; do
    if [ "$(cat "$t/comm" 2>/dev/null)" = "$1" ]; then
      total=$((total + $(awk '{print $14 + $15}' "$t/stat")))
    fi
  done
  echo "$total"
}
http_before="$(thread_ticks dserve-http)"
for r in $(seq 1 "$rounds"); do
  echo "round $r of $rounds: server" >&2
  build/dserve bench-serve --url "$url" "${load[@]}" --stream --seed "$r" --json \
    >"$work/serve_$r.json" 2>/dev/null
  echo "round $r of $rounds: engine alone" >&2
  build/dserve bench --model "$model" --threads 2 "${load[@]}" --json \
    >"$work/engine_$r.json" 2>/dev/null
done
http_ticks=$(( $(thread_ticks dserve-http) - http_before ))
python3 - "$work" "$rounds" "$http_ticks" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
http_seconds = int(sys.argv[3]) / int(sys.argv[4])
serve = [json.load(open(f"{work}/serve_{r}.json"))["runs"] for r in range(1, rounds + 1)]
engine = [json.load(open(f"{work}/engine_{r}.json"))["results"] for r in range(1, rounds + 1)]
med = statistics.median
print(f"tiny-v3, 2 engine threads, 64 requests of 128 prompt + 64 generated tokens, "
      f"medians of {rounds} alternating rounds")
print(f"{'conc':>4} | {'server tok/s':>12} {'engine tok/s':>12} {'ratio':>6} | "
      f"{'ITL p50 server':>14} {'engine':>7} {'added':>7} | {'TTFT p50':>8} {'E2E p50':>8} {'errors':>6}")
for i, run in enumerate(serve[0]):
    c = run["concurrency"]
    s_tok = med(s[i]["output_tokens_per_s"] for s in serve)
    e_tok = med(e[i]["generated_tokens_per_s"] for e in engine)
    s_itl = med(s[i]["itl_ms"]["p50"] for s in serve)
    e_itl = med(e[i]["itl_ms"]["p50"] for e in engine)
    added = med((s[i]["itl_ms"]["p50"] / e[i]["itl_ms"]["p50"] - 1) * 100
                for s, e in zip(serve, engine))
    errors = sum(s[i]["errors"] for s in serve)
    print(f"{c:>4} | {s_tok:>12.0f} {e_tok:>12.0f} {s_tok / e_tok:>6.3f} | "
          f"{s_itl:>11.2f} ms {e_itl:>4.2f} ms {added:>+6.1f}% | "
          f"{med(s[i]['ttft_ms']['p50'] for s in serve):>5.0f} ms "
          f"{med(s[i]['e2e_ms']['p50'] for s in serve):>5.0f} ms {errors:>6}")
tokens = sum(run["output_tokens"] for rounds_ in serve for run in rounds_)
print(f"HTTP I/O threads (SSE + JSON + sockets): {http_seconds:.2f} s of CPU for {tokens} streamed "
      f"tokens = {1e6 * http_seconds / tokens:.0f} us per token")
PY
