// SentencePieceBackend: libsentencepiece behind standard types only, reached through a plugin
// loaded at first use (sentencepiece_plugin_api.h says why). Load() reports a missing plugin
// like any other load failure.
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
