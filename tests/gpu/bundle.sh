#!/usr/bin/env bash
# Run here (the build machine): packs what the GPU machine needs into build/gpu-bundle — the GPU
# test binaries and benchmarks built here, and the shared libraries they load that a bare CUDA
# image lacks (Abseil, PCRE2, zlib, libstdc++, ...; not glibc, not the CUDA libraries, which the
# device image has). Then: the device tool's `run` with carry ["build/gpu-bundle"] and the
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
du -sh "$out"
