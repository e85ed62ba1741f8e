#include "engine/tokenizer/sentencepiece_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/utf8.h"

namespace dserve::engine {

SentencePieceTokenizer::SentencePieceTokenizer()
    : sp_(std::make_unique<SentencePieceBackend>()) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

absl::StatusOr<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::Create(
    const std::string& model_path, const TokenizerConfig& config) {
  auto t = std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer());
  if (const std::string error = t->sp_->Load(model_path); !error.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load SentencePiece model ", model_path, ": ", error));
  }
  t->bos_id_ = t->sp_->bos_id();
  t->eos_id_ = t->sp_->eos_id();
  // LlamaTokenizer's defaults (BOS on, EOS off) unless tokenizer_config.json says otherwise.
  if (config.has_add_flags) {
    t->add_bos_ = config.add_bos_token;
    t->add_eos_ = config.add_eos_token;
  }
  const int n = t->sp_->size();
  t->bytes_.resize(n);
  for (int id = 0; id < n; ++id) {
    if (t->sp_->IsControl(id)) continue;
    if (t->sp_->IsByte(id)) {  // "<0xAB>"
      t->bytes_[id] = std::string(1, static_cast<char>(std::stoi(t->sp_->IdToPiece(id).substr(3, 2),
                                                                 nullptr, 16)));
      continue;
    }
    if (t->sp_->IsUnknown(id)) {
      t->bytes_[id] = " \xE2\x81\x87 ";  // SentencePiece's surface for <unk>: " ⁇ "
      continue;
    }
    std::string piece = t->sp_->IdToPiece(id);
    for (size_t p = 0; (p = piece.find("\xE2\x96\x81", p)) != std::string::npos;) {
      piece.replace(p, 3, " ");  // U+2581 marks a space
    }
    t->bytes_[id] = piece;
  }
  return t;
}

absl::StatusOr<std::vector<int32_t>> SentencePieceTokenizer::Encode(std::string_view text,
                                                                    bool add_special_tokens) const {
  if (const size_t bad = FindInvalidUtf8(text); bad != std::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("text is not valid UTF-8 (byte ", bad, " of ", text.size(), ")"));
  }
  std::vector<int> pieces;
  if (const std::string error = sp_->Encode(std::string(text), &pieces); !error.empty()) {
    return absl::InternalError(error);
  }
  std::vector<int32_t> ids;
  if (add_special_tokens && add_bos_ && bos_id_ >= 0) ids.push_back(bos_id_);
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  if (add_special_tokens && add_eos_ && eos_id_ >= 0) ids.push_back(eos_id_);
  return ids;
}

absl::StatusOr<std::string> SentencePieceTokenizer::Decode(const std::vector<int32_t>& ids,
                                                           bool skip_special_tokens) const {
  std::vector<int> kept;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab_size(), ")"));
    }
    if (skip_special_tokens && IsSpecial(id)) continue;
    kept.push_back(id);
  }
  std::string text;
  if (const std::string error = sp_->Decode(kept, &text); !error.empty()) {
    return absl::InternalError(error);
  }
  return text;
}

std::string_view SentencePieceTokenizer::TokenBytes(int32_t id) const {
  return id >= 0 && id < vocab_size() ? std::string_view(bytes_[id]) : std::string_view();
}

bool SentencePieceTokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < vocab_size() && sp_->IsControl(id);
}

}  // namespace dserve::engine
