#!/usr/bin/env bash
# Sets up the machine, builds, and runs the main job on the embedded default model: a
# generated tiny-v3 checkpoint (written once to .cache/models/), greedy generation on it.
# Until the server exists (engine + front-end issues), the main job is `dserve generate`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
model=".cache/models/tiny-v3-seed0"
if [ ! -f "$model/model.safetensors.index.json" ]; then
  build/dserve make-model --preset tiny-v3 --seed 0 --out "$model"
fi
exec build/dserve generate --model "$model" --tokens 0,6372,2736,4456,16,1522,15,2645,304 \
  --max-tokens 32 "$@"
