#!/usr/bin/env bash
# collect-runtime.sh BUILD_DIR DEST: copies the dserve binary (and its SentencePiece plugin,
# loaded from next to it) into DEST/bin and the shared libraries they load that a CUDA runtime
# image does not have (Abseil, gRPC, protobuf, PCRE2, zlib, ...) into DEST/lib: everything the
# runtime stage of docker/Dockerfile needs, with LD_LIBRARY_PATH=DEST/lib. Not copied: glibc
# and the C++ runtime (the base image has them), the CUDA driver (the NVIDIA container runtime
# mounts it) and the CUDA libraries (cudart, cuBLAS, NCCL: in the CUDA runtime image).
set -euo pipefail
build=$1
dest=$2
mkdir -p "$dest/bin" "$dest/lib"
cp "$build/dserve" "$dest/bin/dserve"
files=("$build/dserve")
if [ -f "$build/libdserve_sentencepiece.so" ]; then
  cp "$build/libdserve_sentencepiece.so" "$dest/bin/"
  files+=("$build/libdserve_sentencepiece.so")
fi
for f in "${files[@]}"; do
  ldd "$f" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
    libcuda.so*|libnvidia*|libcudart*|libcublas*|libcublasLt*|libnccl*) ;;
    *) cp -L "$lib" "$dest/lib/" ;;
  esac
done
echo "collect-runtime: $(find "$dest" -type f | wc -l) files, $(du -sh "$dest" | cut -f1) in $dest"
