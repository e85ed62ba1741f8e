#include "engine/tokenizer/sentencepiece_backend.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

#include "engine/tokenizer/sentencepiece_plugin_api.h"

namespace dserve::engine {
namespace {

struct Plugin {
  const SentencePiecePluginApi* api = nullptr;
  std::string error;  // why it could not be loaded
};

// Where the plugin may be: $DSERVE_SENTENCEPIECE_PLUGIN, beside the running executable (the
// build tree and installs keep it next to `dserve`), then where this build put it.
std::vector<std::string> Candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("DSERVE_SENTENCEPIECE_PLUGIN")) paths.emplace_back(env);
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) paths.push_back((exe.parent_path() / "libdserve_sentencepiece.so").string());
#if defined(DSERVE_SENTENCEPIECE_PLUGIN_PATH)
  paths.emplace_back(DSERVE_SENTENCEPIECE_PLUGIN_PATH);
#endif
  return paths;
}

const Plugin& LoadPlugin() {
  static const Plugin plugin = [] {
    Plugin p;
    // RTLD_DEEPBIND keeps libsentencepiece bound to its own protobuf-lite (see the API
    // header); sanitizer runtimes refuse it, so sanitized builds load it plainly.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    constexpr int kMode = RTLD_NOW | RTLD_LOCAL;
#else
    constexpr int kMode = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif
    for (const std::string& path : Candidates()) {
      if (!std::filesystem::exists(path)) {
        p.error += (p.error.empty() ? "" : "; ") + path + ": no such file";
        continue;
      }
      void* handle = dlopen(path.c_str(), kMode);
      if (!handle) {
        p.error += (p.error.empty() ? "" : "; ") + std::string(dlerror());
        continue;
      }
      auto entry = reinterpret_cast<const SentencePiecePluginApi* (*)()>(
          dlsym(handle, "dserve_sentencepiece_api"));
      if (!entry) {
        p.error += (p.error.empty() ? "" : "; ") + path + ": no dserve_sentencepiece_api";
        continue;
      }
      p.api = entry();
      p.error.clear();
      break;
    }
    return p;
  }();
  return plugin;
}

}  // namespace

struct SentencePieceBackend::Impl {
  const SentencePiecePluginApi* api = nullptr;
  void* sp = nullptr;
  ~Impl() {
    if (api && sp) api->destroy(sp);
  }
};

SentencePieceBackend::SentencePieceBackend() : impl_(std::make_unique<Impl>()) {
  const Plugin& plugin = LoadPlugin();
  impl_->api = plugin.api;
  if (impl_->api) impl_->sp = impl_->api->create();
}
SentencePieceBackend::~SentencePieceBackend() = default;

std::string SentencePieceBackend::Load(const std::string& path) {
  if (!impl_->api) {
    return "SentencePiece support is unavailable (libdserve_sentencepiece.so: " +
           LoadPlugin().error + ")";
  }
  return impl_->api->load(impl_->sp, path);
}

std::string SentencePieceBackend::Encode(const std::string& text, std::vector<int>* ids) const {
  return impl_->api->encode(impl_->sp, text, ids);
}

std::string SentencePieceBackend::Decode(const std::vector<int>& ids, std::string* text) const {
  return impl_->api->decode(impl_->sp, ids, text);
}

int SentencePieceBackend::size() const { return impl_->api->size(impl_->sp); }
int SentencePieceBackend::bos_id() const { return impl_->api->bos_id(impl_->sp); }
int SentencePieceBackend::eos_id() const { return impl_->api->eos_id(impl_->sp); }
std::string SentencePieceBackend::IdToPiece(int id) const {
  return impl_->api->id_to_piece(impl_->sp, id);
}
bool SentencePieceBackend::IsControl(int id) const { return impl_->api->is_control(impl_->sp, id); }
bool SentencePieceBackend::IsUnknown(int id) const { return impl_->api->is_unknown(impl_->sp, id); }
bool SentencePieceBackend::IsByte(int id) const { return impl_->api->is_byte(impl_->sp, id); }

}  // namespace dserve::engine
