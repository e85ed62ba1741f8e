// SentencePieceBackend: libsentencepiece behind standard types only. Debian's
// sentencepiece_processor.h declares its own absl::string_view, which clashes with real
// Abseil, so it is included by sentencepiece_backend.cc alone.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace dserve::engine {

class SentencePieceBackend {
 public:
  SentencePieceBackend();
  ~SentencePieceBackend();

  // Empty on success, else the library's message.
  std::string Load(const std::string& path);
  std::string Encode(const std::string& text, std::vector<int>* ids) const;
  std::string Decode(const std::vector<int>& ids, std::string* text) const;

  int size() const;
  int bos_id() const;
  int eos_id() const;
  std::string IdToPiece(int id) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;
  bool IsByte(int id) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dserve::engine
