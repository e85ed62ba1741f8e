// What tokenizer_config.json says about special-token handling (Hugging Face's
// PreTrainedTokenizer settings): whether BOS/EOS are added, and which strings they are.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace dserve::engine {

struct TokenizerConfig {
  // Whether the file sets add_bos_token/add_eos_token at all: when it does, those flags decide
  // (as LlamaTokenizerFast rebuilds its post-processor from them); otherwise tokenizer.json's
  // post_processor does.
  bool has_add_flags = false;
  bool add_bos_token = false;
  bool add_eos_token = false;
  std::string bos_token;  // content; empty when absent
  std::string eos_token;
};

// Reads model_dir/tokenizer_config.json; a missing file gives the defaults.
absl::StatusOr<TokenizerConfig> LoadTokenizerConfig(const std::string& model_dir);

}  // namespace dserve::engine
