#include "cli/bench_prompts.h"

#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace dserve::cli {

std::vector<std::vector<int32_t>> RandomPrompts(int64_t count, int64_t length, double share,
                                                int64_t vocab) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> id(100, static_cast<int32_t>(vocab - 1));
  const int64_t shared = static_cast<int64_t>(share * length + 0.5);
  std::vector<int32_t> common(shared);
  for (int32_t& t : common) t = id(rng);
  std::vector<std::vector<int32_t>> prompts(count);
  for (std::vector<int32_t>& p : prompts) {
    p = common;
    while (static_cast<int64_t>(p.size()) < length) p.push_back(id(rng));
  }
  return prompts;
}

absl::StatusOr<std::vector<std::vector<int32_t>>> LoadPromptsFile(const std::string& path,
                                                                  const std::string& model_dir) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read --prompts-file ", path));
  DSERVE_ASSIGN_OR_RETURN(std::unique_ptr<engine::Tokenizer> tokenizer,
                          engine::LoadTokenizer(model_dir));
  std::vector<std::vector<int32_t>> prompts;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    std::string text = line;
    if (line[0] == '"') {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!j.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ":", number, ": a line starting with '\"' must be a JSON string"));
      }
      text = j.get<std::string>();
    }
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer->Encode(text, true);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": ", std::string(ids.status().message())));
    }
    prompts.push_back(*std::move(ids));
  }
  if (prompts.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " has no prompts"));
  return prompts;
}

}  // namespace dserve::cli
