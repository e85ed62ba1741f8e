#!/usr/bin/env bash
# Run here (the build machine): packs what the GPU machine needs into build/gpu-bundle — the GPU
# test binaries and benchmarks built here, the shared libraries they load that a bare CUDA
# image lacks (Abseil, PCRE2, zlib, libstdc++, ...; not glibc, not the CUDA libraries, which the
# device image has), and the tokenizer files (scripts/setup.sh fetched them). Then: the device tool's `run` with carry ["build/gpu-bundle"] and the
# command `tests/gpu/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
out="$build/gpu-bundle"
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
shopt -s nullglob
bins=("$build"/tests/gpu_*_test "$build"/tests/gpu_*_bench)
if ((${#bins[@]} == 0)); then
  echo "bundle: no GPU binaries in $build/tests (configure with CUDA: nvcc on PATH)" >&2
  exit 1
fi
cp "${bins[@]}" "$out/bin/"
for b in "${bins[@]}"; do
  ldd "$b" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*|libcudart*|libcublas*|libnccl*) ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
# The GPU model tests generate checkpoints there, and the generator copies the tokenizer.
tokenizer=${DSERVE_TOKENIZER_DIR:-${DSERVE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dserve}/tokenizers/deepseek-v3}
mkdir -p "$out/tokenizer"
cp "$tokenizer/tokenizer.json" "$tokenizer/tokenizer_config.json" "$out/tokenizer/"
du -sh "$out"
