// Deliberately free of Abseil includes (see the header).
#include "engine/tokenizer/sentencepiece_backend.h"

#include <sentencepiece_processor.h>

namespace dserve::engine {

struct SentencePieceBackend::Impl {
  sentencepiece::SentencePieceProcessor sp;
};

SentencePieceBackend::SentencePieceBackend() : impl_(std::make_unique<Impl>()) {}
SentencePieceBackend::~SentencePieceBackend() = default;

std::string SentencePieceBackend::Load(const std::string& path) {
  const auto s = impl_->sp.Load(path);
  return s.ok() ? std::string() : s.ToString();
}

std::string SentencePieceBackend::Encode(const std::string& text, std::vector<int>* ids) const {
  const auto s = impl_->sp.Encode(text, ids);
  return s.ok() ? std::string() : s.ToString();
}

std::string SentencePieceBackend::Decode(const std::vector<int>& ids, std::string* text) const {
  const auto s = impl_->sp.Decode(ids, text);
  return s.ok() ? std::string() : s.ToString();
}

int SentencePieceBackend::size() const { return impl_->sp.GetPieceSize(); }
int SentencePieceBackend::bos_id() const { return impl_->sp.bos_id(); }
int SentencePieceBackend::eos_id() const { return impl_->sp.eos_id(); }
std::string SentencePieceBackend::IdToPiece(int id) const { return impl_->sp.IdToPiece(id); }
bool SentencePieceBackend::IsControl(int id) const { return impl_->sp.IsControl(id); }
bool SentencePieceBackend::IsUnknown(int id) const { return impl_->sp.IsUnknown(id); }
bool SentencePieceBackend::IsByte(int id) const { return impl_->sp.IsByte(id); }

}  // namespace dserve::engine
