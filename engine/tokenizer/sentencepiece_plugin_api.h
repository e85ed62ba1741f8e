// The table of functions the SentencePiece plugin (libdserve_sentencepiece.so) exports.
// libsentencepiece carries its own copy of protobuf-lite with exported symbols, which clash
// with the real libprotobuf gRPC needs; the plugin is therefore loaded privately
// (RTLD_LOCAL | RTLD_DEEPBIND) so each library keeps binding to its own protobuf. Both sides
// are built by this project with one compiler, so the table passes standard C++ types.
#pragma once

#include <string>
#include <vector>

namespace dserve::engine {

struct SentencePiecePluginApi {
  void* (*create)();
  void (*destroy)(void* processor);
  // Empty on success, else the library's message.
  std::string (*load)(void* processor, const std::string& path);
  std::string (*encode)(const void* processor, const std::string& text, std::vector<int>* ids);
  std::string (*decode)(const void* processor, const std::vector<int>& ids, std::string* text);
  int (*size)(const void* processor);
  int (*bos_id)(const void* processor);
  int (*eos_id)(const void* processor);
  std::string (*id_to_piece)(const void* processor, int id);
  bool (*is_control)(const void* processor, int id);
  bool (*is_unknown)(const void* processor, int id);
  bool (*is_byte)(const void* processor, int id);
};

}  // namespace dserve::engine

// The plugin's one exported symbol.
extern "C" const dserve::engine::SentencePiecePluginApi* dserve_sentencepiece_api();
