#!/usr/bin/env bash
# Sets up the machine, builds, and serves the embedded default model: a generated tiny-v3
# checkpoint (written once to .cache/models/) behind the OpenAI-compatible HTTP API on
# 127.0.0.1:8000 and gRPC on 127.0.0.1:50051, as "tiny-v3". Extra arguments go to
# `dserve serve` (e.g. --port 9000 --api-key KEY). Ctrl-C drains and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
model=".cache/models/tiny-v3-seed0"
if [ ! -f "$model/model.safetensors.index.json" ]; then
  build/dserve make-model --preset tiny-v3 --seed 0 --out "$model"
fi
exec build/dserve serve --model "$model" --served-model-name tiny-v3 "$@"
