// The engine benchmark's prompts: random ids with a shared prefix (a system prompt every request
// repeats), or real text from a file, tokenized with the checkpoint's own tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dserve::cli {

// `count` prompts of `length` ids in [100, vocab) (past the special tokens); the first
// share * length ids are the same in all of them. Deterministic.
std::vector<std::vector<int32_t>> RandomPrompts(int64_t count, int64_t length, double share,
                                                int64_t vocab);

// One prompt per line of `path`: a JSON string (JSONL, so a prompt may hold newlines) or, when a
// line does not start with '"', the line's text itself. Encoded with the tokenizer of
// `model_dir`, BOS added as its tokenizer_config.json says. Empty lines are skipped.
absl::StatusOr<std::vector<std::vector<int32_t>>> LoadPromptsFile(const std::string& path,
                                                                  const std::string& model_dir);

}  // namespace dserve::cli
