#!/usr/bin/env bash
# Tokenizer encode benchmark, side by side in one run: dserve vs @lenml/tokenizers (the issue's
# yardstick) and, for reference, Hugging Face's Rust tokenizers through their Node binding —
# the same ~10 MB of mixed text, the same 4 KB requests, single thread, median of 3 passes.
# Token counts and id checksums must agree (the script fails if they do not).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
scripts/build.sh >/dev/null
tokenizer="${DSERVE_TOKENIZER_DIR:-${DSERVE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dserve}/tokenizers/deepseek-v3}"
text="$(mktemp -d)/mixed.txt"
node tests/bench/make_mixed_text.mjs "$text" >&2

ours=$(build/dserve bench-tokenizer --model "$tokenizer" --file "$text" --repeat 3)
lenml=$(node tests/bench/tokenizer_encode_node.mjs "$text" --repeat 3 --impl lenml)
hf=$(node tests/bench/tokenizer_encode_node.mjs "$text" --repeat 3 --impl hf)

field() { echo "$1" | awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) {print $(i + 1); exit}}'; }
rate() { echo "$1" | head -1 | awk '{print $2}'; }
for run in "$lenml" "$hf"; do
  if [ "$(field "$run" tokens)" != "$(field "$ours" tokens)" ] ||
     [ "$(field "$run" ids_fnv1a64)" != "$(field "$ours" ids_fnv1a64)" ]; then
    echo "token ids differ between dserve and: $(echo "$run" | head -1)" >&2
    exit 1
  fi
done
printf '%-34s %10s\n' "encoder (single thread)" "MB/s"
printf '%-34s %10s\n' "dserve" "$(rate "$ours")"
printf '%-34s %10s\n' "@lenml/tokenizers 3.7.2 (node)" "$(rate "$lenml")"
printf '%-34s %10s\n' "HF tokenizers 0.23.2 (node binding)" "$(rate "$hf")"
awk -v a="$(rate "$ours")" -v b="$(rate "$lenml")" -v c="$(rate "$hf")" \
  'BEGIN {printf "dserve / @lenml: %.1fx   dserve / HF binding: %.1fx\n", a / b, a / c}'
echo "tokens $(field "$ours" tokens), ids_fnv1a64 $(field "$ours" ids_fnv1a64) (identical in all three)"
