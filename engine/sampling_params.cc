#include "engine/sampling_params.h"

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "core/check.h"

namespace dserve::engine {
namespace {

// Written as !(in range) so that NaN, which fails every comparison, is reported too.
void CheckRange(std::vector<std::string>& problems, const char* field, double value, double lo,
                bool lo_open, double hi, bool hi_open, const char* range) {
  const bool above_lo = lo_open ? value > lo : value >= lo;
  const bool below_hi = hi_open ? value < hi : value <= hi;
  if (!(above_lo && below_hi)) {
    problems.push_back(absl::StrCat(field, " must be in ", range, ", got ", value));
  }
}

}  // namespace

absl::Status SamplingParams::Validate(int64_t vocab_size) const {
  DSERVE_CHECK(vocab_size > 0) << "vocab_size " << vocab_size;
  std::vector<std::string> problems;
  constexpr double kInf = INFINITY;
  CheckRange(problems, "temperature", temperature, 0, false, kInf, true, "[0, inf)");
  CheckRange(problems, "top_p", top_p, 0, true, 1, false, "(0, 1]");
  CheckRange(problems, "min_p", min_p, 0, false, 1, false, "[0, 1]");
  CheckRange(problems, "presence_penalty", presence_penalty, -2, false, 2, false, "[-2, 2]");
  CheckRange(problems, "frequency_penalty", frequency_penalty, -2, false, 2, false, "[-2, 2]");
  CheckRange(problems, "repetition_penalty", repetition_penalty, 0, true, 2, false, "(0, 2]");
  if (logprobs.has_value() && (*logprobs < 0 || *logprobs > 20)) {
    problems.push_back(absl::StrCat("logprobs must be in [0, 20], got ", *logprobs));
  }
  for (int32_t id : stop_token_ids) {
    if (id < 0 || id >= vocab_size) {
      problems.push_back(absl::StrCat("stop_token_ids must be in [0, ", vocab_size, "), got ", id));
    }
  }
  for (const std::string& s : stop) {
    // An empty stop string would match before the first token.
    if (s.empty()) {
      problems.push_back("stop strings must be non-empty");
      break;
    }
  }
  if (max_tokens < 1) {
    problems.push_back(absl::StrCat("max_tokens must be >= 1, got ", max_tokens));
  }
  if (min_tokens < 0 || min_tokens > max_tokens) {
    problems.push_back(
        absl::StrCat("min_tokens must be in [0, max_tokens=", max_tokens, "], got ", min_tokens));
  }
  if (n < 1 || n > 128) problems.push_back(absl::StrCat("n must be in [1, 128], got ", n));
  if (problems.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrJoin(problems, "; "));
}

}  // namespace dserve::engine
