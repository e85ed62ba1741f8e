// GenerateModel: writes a random-weight (or trained) checkpoint of a preset in exactly the published
// Hugging Face layout — config.json, generation_config.json, sharded safetensors with
// model.safetensors.index.json, the real tensor names and dtypes (FP8 E4M3 projections with
// F32 128x128 weight_scale_inv, BF16 embeddings/norms/router/heads, F32 router bias) and the
// DeepSeek-V3 tokenizer files. The same preset and seed always give the same bytes.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace dserve::models {

struct GenerateOptions {
  std::string preset;       // a preset's config.json, or
  std::string config_path;  // this config.json
  uint64_t seed = 0;
  // An F32 .safetensors file holding every weight by its checkpoint name (a trained model,
  // models/training/): its values replace the random ones and go through the same writer
  // (FP8 block scaling, BF16 rounding, byte-identical MTP copies taken from the main tensors).
  std::string weights_path;
  std::string out_dir;
  // Folder with tokenizer.json and tokenizer_config.json (scripts/setup.sh fetches them).
  std::string tokenizer_dir;
  // Shards are cut when they would exceed this many bytes.
  int64_t max_shard_bytes = int64_t{100} << 20;
  bool show_progress = true;
  // Shards written at once (<= 0: one per hardware thread); the bytes do not depend on it.
  int threads = 0;
};

absl::Status GenerateModel(const GenerateOptions& options);

// Where scripts/setup.sh puts the DeepSeek-V3 tokenizer files: $DSERVE_TOKENIZER_DIR, else
// ${DSERVE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dserve}/tokenizers/deepseek-v3.
std::string DefaultTokenizerDir();

}  // namespace dserve::models
