#include "engine/tokenizer/tokenizer_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace dserve::engine {
namespace {

// A token entry is either a plain string or an AddedToken object with "content".
std::string TokenContent(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<TokenizerConfig> LoadTokenizerConfig(const std::string& model_dir) {
  TokenizerConfig c;
  const std::string path = model_dir + "/tokenizer_config.json";
  if (!std::filesystem::exists(path)) return c;
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  const auto j = nlohmann::json::parse(text.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a JSON object"));
  }
  auto flag = [&](const char* key, bool* out) {
    if (j.contains(key) && j[key].is_boolean()) {
      *out = j[key].get<bool>();
      c.has_add_flags = true;
    }
  };
  flag("add_bos_token", &c.add_bos_token);
  flag("add_eos_token", &c.add_eos_token);
  if (j.contains("bos_token")) c.bos_token = TokenContent(j["bos_token"]);
  if (j.contains("eos_token")) c.eos_token = TokenContent(j["eos_token"]);
  return c;
}

}  // namespace dserve::engine
