#!/usr/bin/env bash
# The speculative-decoding measurements on the trained fortunes model (models/training/): it is
# trained once (about 40 minutes on 2 cores) into .cache/models/fortunes-v3 if missing, then
#   1. `dserve bench` on the held-out fortunes' first lines, greedy, concurrency 1 and 16, with
#      0 (off), 1, 2 and 3 MTP drafts per step side by side (medians of 5 runs): acceptance by
#      draft position, mean accepted length, generated tokens/s and the ratios;
#   2. `dserve bench --step-costs` at batch 1 and 16: main forward by tokens per sequence, MTP
#      forward, LM head, and the speedups they imply (this model, DeepSeek-V3's proportions).
# Extra arguments go to both `dserve bench` calls (e.g. --threads 4).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
scripts/build.sh >/dev/null
model=".cache/models/fortunes-v3"
if [ ! -f "$model/model.safetensors.index.json" ]; then
  /usr/bin/python3 models/training/train_mtp_model.py --dserve build/dserve --out "$model" >&2
fi
prompts="$model.work/heldout_prompts.jsonl"
echo "== greedy decoding with 0, 1, 2, 3 MTP drafts, held-out prompts =="
build/dserve bench --model "$model" --threads 2 --prompts-file "$prompts" --num-prompts 32 \
  --output-len 64 --concurrency 1,16 --speculative mtp --num-speculative-tokens 0,1,2,3 \
  --runs 5 "$@" 2>/dev/null
echo
echo "== step costs =="
build/dserve bench --model "$model" --threads 2 --step-costs --concurrency 1,16 --input-len 128 \
  --speculative mtp --num-speculative-tokens 3 --runs 5 "$@" 2>/dev/null
