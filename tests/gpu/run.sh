#!/usr/bin/env bash
# Run on the GPU machine (the device tool), from the repository root, after tests/gpu/bundle.sh
# packed build/gpu-bundle here and the run carried it: every GPU test binary, then the GPU
# benchmarks, each under a time limit, then a short table. Exit status: 1 if any test failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
bundle=${1:-build/gpu-bundle}
export LD_LIBRARY_PATH="$bundle/lib:${LD_LIBRARY_PATH:-}"
export DSERVE_TOKENIZER_DIR="$bundle/tokenizer"
log=$(mktemp -d)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
rows=()
# NCCL (218 MB, too big to carry) from the device's CUDA install, else from PyTorch's wheels.
if ! ldconfig -p 2>/dev/null | grep -q 'libnccl.so.2' && [ ! -e /usr/local/cuda/lib64/libnccl.so.2 ]; then
  nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)
  [ -n "$nccl" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$nccl"
fi
export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/cuda/lib64"
# Libraries neither carried nor on the device (the CUDA 13 runtime and cuBLASLt must be there).
if ldd "$bundle"/bin/* 2>/dev/null | grep -q 'not found'; then
  echo "missing shared libraries:"
  ldd "$bundle"/bin/* | grep 'not found' | sort -u
  status=1
fi
for t in "$bundle"/bin/gpu_*_test; do
  name=$(basename "$t")
  timeout 300 "$t" >"$log/$name.txt" 2>&1
  rc=$?
  # gtest's summary lines: "[  PASSED  ] N tests.", "[  SKIPPED ] N tests, ...", "[  FAILED  ] N tests, ...".
  count() { sed -n "s/^\[  $1 *\] \([0-9][0-9]*\) tests\{0,1\}[.,].*/\1/p" "$log/$name.txt" | head -1; }
  passed=$(count PASSED)
  failed=$(count FAILED)
  skipped=$(count SKIPPED)
  passed=${passed:-0} failed=${failed:-0} skipped=${skipped:-0}
  rows+=("$(printf '%-28s rc %-3s passed %-4s failed %-4s skipped %s' "$name" "$rc" "$passed" "$failed" "$skipped")")
  # On the GPU machine a skipped test means the GPU was not usable: that is a failure here.
  if [ "$rc" -ne 0 ] || [ "$skipped" -ne 0 ]; then
    status=1
    grep -E '^\[  (FAILED|SKIPPED) \]|Failure|no CUDA device' "$log/$name.txt" | head -20
  fi
done
for b in "$bundle"/bin/gpu_*_bench; do
  name=$(basename "$b")
  # The step benchmark first writes a 16 GB checkpoint at DeepSeek-V3's dimensions.
  limit=120
  [ "$name" = gpu_step_bench ] && limit=300
  timeout "$limit" "$b" >"$log/$name.txt" 2>&1
  rc=$?
  cat "$log/$name.txt"
  rows+=("$(printf '%-34s rc %s' "$name" "$rc")")
  [ "$rc" -eq 0 ] || status=1
done
echo
echo "== GPU suite =="
printf '%s\n' "${rows[@]}"
# The whole-model agreement figures (GPU logits against the CPU's).
if [ -f "$log/gpu_model_test.txt" ]; then
  echo "== model logits, GPU vs CPU =="
  grep -E ' rel .*cosine' "$log/gpu_model_test.txt" || true
fi
exit $status
