// LoadTokenizer: which tokenizer a checkpoint folder ships.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/tokenizer/bpe_tokenizer.h"
#include "engine/tokenizer/sentencepiece_tokenizer.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/tokenizer_config.h"

namespace dserve::engine {

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  DSERVE_ASSIGN_OR_RETURN(const TokenizerConfig config, LoadTokenizerConfig(model_dir));
  const std::string json_path = model_dir + "/tokenizer.json";
  if (std::filesystem::exists(json_path)) {
    std::ifstream in(json_path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    auto t = BpeTokenizer::Create(text.str(), config);
    if (!t.ok()) {
      return absl::Status(t.status().code(), absl::StrCat(json_path, ": ", t.status().message()));
    }
    return std::unique_ptr<Tokenizer>(std::move(t).value());
  }
  const std::string sp_path = model_dir + "/tokenizer.model";
  if (std::filesystem::exists(sp_path)) {
    DSERVE_ASSIGN_OR_RETURN(auto t, SentencePieceTokenizer::Create(sp_path, config));
    return std::unique_ptr<Tokenizer>(std::move(t));
  }
  return absl::NotFoundError(absl::StrCat(model_dir,
                                          " has neither tokenizer.json nor tokenizer.model"));
}

}  // namespace dserve::engine
