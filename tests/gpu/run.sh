#!/usr/bin/env bash
# Run on the GPU machine (the device tool), from the repository root, after tests/gpu/bundle.sh
# packed build/gpu-bundle here and the run carried it: every GPU test binary, then the GPU
# benchmarks, each under a time limit, then a short table. Exit status: 1 if any test failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
bundle=${1:-build/gpu-bundle}
export LD_LIBRARY_PATH="$bundle/lib:${LD_LIBRARY_PATH:-}"
log=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
rows=()
for t in "$bundle"/bin/gpu_*_test; do
  name=$(basename "$t")
  timeout 300 "$t" --gtest_brief=1 >"$log/$name.txt" 2>&1
  rc=$?
  passed=$(grep -c '^\[       OK \]' "$log/$name.txt")
  failed=$(grep -c '^\[  FAILED  \] [A-Za-z]' "$log/$name.txt")
  skipped=$(grep -c '^\[  SKIPPED \] [A-Za-z]' "$log/$name.txt")
  rows+=("$(printf '%-34s rc %-3s passed %-4s failed %-4s skipped %s' "$name" "$rc" "$passed" "$failed" "$skipped")")
  if [ "$rc" -ne 0 ]; then
    status=1
    tail -40 "$log/$name.txt"
  fi
done
for b in "$bundle"/bin/gpu_*_bench; do
  name=$(basename "$b")
  timeout 240 "$b" >"$log/$name.txt" 2>&1
  rc=$?
  cat "$log/$name.txt"
  rows+=("$(printf '%-34s rc %s' "$name" "$rc")")
  [ "$rc" -eq 0 ] || status=1
done
echo
echo "== GPU suite =="
printf '%s\n' "${rows[@]}"
exit $status
