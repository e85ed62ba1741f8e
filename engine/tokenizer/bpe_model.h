// BpeModel: tokenizer.json's byte-level BPE model — vocabulary, merges by rank, and the merge
// loop Hugging Face runs (lowest rank first, leftmost first among equals), working on token ids
// from the raw bytes of a piece, with a cache of pieces already seen.
#pragma once

#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace dserve::engine {

// Hashes std::string keys and std::string_view probes alike, so lookups never allocate.
struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringViewHash, std::equal_to<>>;

class BpeModel {
 public:
  // `model` is tokenizer.json's "model" object (type BPE).
  static absl::StatusOr<std::unique_ptr<BpeModel>> Create(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized piece (raw bytes). Thread-safe.
  void Encode(std::string_view piece, std::vector<int32_t>* ids) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  // The vocabulary entry (byte-level spelling) of an id; empty for gaps in the id space.
  const std::string& token(int32_t id) const { return tokens_[id]; }
  // Id of a vocabulary entry, or -1.
  int32_t Find(std::string_view token) const;

 private:
  BpeModel() = default;
  std::vector<int32_t> Merge(std::string_view piece) const;

  StringMap<int32_t> vocab_;
  std::vector<std::string> tokens_;
  int32_t byte_ids_[256];  // the single-byte token of each byte
  // (left id << 32 | right id) -> (rank << 32 | merged id)
  std::unordered_map<uint64_t, uint64_t> merges_;

  // Pieces already merged, in shards so concurrent encoders rarely contend.
  static constexpr int kShards = 16;
  static constexpr size_t kMaxCachedPerShard = 1 << 16;
  struct CacheShard {
    mutable std::shared_mutex mu;
    StringMap<std::vector<int32_t>> pieces;
  };
  mutable CacheShard cache_[kShards];
};

}  // namespace dserve::engine
