// dserve bench-tokenizer: single-threaded encode throughput on a text file, split into
// requests exactly as tests/bench/tokenizer_encode_node.mjs splits it, so the two run side by
// side (scripts/bench_tokenizer.sh) and their token counts and checksums must agree.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/model_session.h"
#include "engine/tokenizer/tokenizer.h"

namespace dserve::cli {
namespace {

constexpr size_t kChunkBytes = 4096;

// Whole lines (each with its "\n") packed greedily into chunks of at most 4 KB; a longer line
// is a chunk of its own.
std::vector<std::string_view> Chunks(std::string_view text) {
  std::vector<std::string_view> chunks;
  size_t begin = 0, end = 0;
  while (end < text.size()) {
    const size_t nl = text.find('\n', end);
    const size_t line_end = nl == std::string_view::npos ? text.size() : nl + 1;
    if (line_end - begin > kChunkBytes && end > begin) {
      chunks.push_back(text.substr(begin, end - begin));
      begin = end;
    }
    end = line_end;
  }
  if (end > begin) chunks.push_back(text.substr(begin, end - begin));
  return chunks;
}

absl::Status Run(const Flags& flags) {
  DSERVE_ASSIGN_OR_RETURN(auto tokenizer, engine::LoadTokenizer(flags.Get("model")));
  DSERVE_ASSIGN_OR_RETURN(int64_t repeat, flags.GetInt("repeat", 1, 1000));
  std::ifstream in(flags.Get("file"), std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", flags.Get("file")));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const std::vector<std::string_view> chunks = Chunks(text);

  // One untimed pass: warms the BPE cache as the node run's warm-up does, and gives the
  // token count and an FNV-1a checksum of every id to compare with node's.
  uint64_t checksum = 0xCBF29CE484222325ull;
  int64_t tokens = 0;
  for (std::string_view c : chunks) {
    DSERVE_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tokenizer->Encode(c, false));
    for (int32_t id : ids) checksum = (checksum ^ static_cast<uint32_t>(id)) * 0x100000001B3ull;
    tokens += static_cast<int64_t>(ids.size());
  }
  std::vector<double> seconds;
  for (int64_t r = 0; r < repeat; ++r) {
    const auto start = std::chrono::steady_clock::now();
    for (std::string_view c : chunks) {
      auto ids = tokenizer->Encode(c, false);
      if (!ids.ok()) return ids.status();
    }
    seconds.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::vector<double> sorted = seconds;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  std::printf("dserve_encode_mb_per_s %.2f tokens %lld\n", text.size() / 1e6 / median,
              static_cast<long long>(tokens));
  std::string passes;
  for (double s : seconds) absl::StrAppend(&passes, passes.empty() ? "" : ",", s);
  std::printf("detail bytes %zu chunks %zu repeats %lld pass_s %s ids_fnv1a64 %016llx\n",
              text.size(), chunks.size(), static_cast<long long>(repeat), passes.c_str(),
              static_cast<unsigned long long>(checksum));
  return absl::OkStatus();
}

}  // namespace

int RunBenchTokenizer(const Args& args) {
  const std::vector<FlagSpec> specs = {
      {"model", "checkpoint folder with the tokenizer", "", false, true},
      {"file", "UTF-8 text to encode", "", false, true},
      {"repeat", "timed passes (the median is reported)", "3"},
  };
  Flags flags;
  int code;
  if (!ParseOrExit("bench-tokenizer", "Single-threaded encode throughput on a text file.", specs,
                   args, &flags, &code)) {
    return code;
  }
  if (absl::Status s = Run(flags); !s.ok()) return ReportError("bench-tokenizer", s);
  return 0;
}

}  // namespace dserve::cli
