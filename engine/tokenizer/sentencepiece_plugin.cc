// libdserve_sentencepiece.so: libsentencepiece behind SentencePiecePluginApi (see its header
// for why this is a separately loaded plugin). Free of Abseil includes: Debian's
// sentencepiece_processor.h declares its own absl::string_view.
#include "engine/tokenizer/sentencepiece_plugin_api.h"

#include <sentencepiece_processor.h>

namespace {

using sentencepiece::SentencePieceProcessor;

const SentencePieceProcessor& Sp(const void* p) {
  return *static_cast<const SentencePieceProcessor*>(p);
}

std::string Message(const sentencepiece::util::Status& s) {
  return s.ok() ? std::string() : s.ToString();
}

const dserve::engine::SentencePiecePluginApi kApi = {
    [] { return static_cast<void*>(new SentencePieceProcessor()); },
    [](void* p) { delete static_cast<SentencePieceProcessor*>(p); },
    [](void* p, const std::string& path) {
      return Message(static_cast<SentencePieceProcessor*>(p)->Load(path));
    },
    [](const void* p, const std::string& text, std::vector<int>* ids) {
      return Message(Sp(p).Encode(text, ids));
    },
    [](const void* p, const std::vector<int>& ids, std::string* text) {
      return Message(Sp(p).Decode(ids, text));
    },
    [](const void* p) { return Sp(p).GetPieceSize(); },
    [](const void* p) { return Sp(p).bos_id(); },
    [](const void* p) { return Sp(p).eos_id(); },
    [](const void* p, int id) { return Sp(p).IdToPiece(id); },
    [](const void* p, int id) { return Sp(p).IsControl(id); },
    [](const void* p, int id) { return Sp(p).IsUnknown(id); },
    [](const void* p, int id) { return Sp(p).IsByte(id); },
};

}  // namespace

extern "C" __attribute__((visibility("default"))) const dserve::engine::SentencePiecePluginApi*
dserve_sentencepiece_api() {
  return &kApi;
}
