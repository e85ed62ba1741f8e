#include "engine/tokenizer/bpe_model.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/byte_level.h"

namespace dserve::engine {

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::Create(const nlohmann::json& model) {
  if (model.value("type", "") != "BPE") {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer model type '", model.value("type", ""), "' is not BPE"));
  }
  // Options that change the algorithm; refusing them beats encoding differently.
  auto set = [&](const char* key) { return model.contains(key) && !model[key].is_null(); };
  if (set("dropout") && model["dropout"].get<double>() != 0.0) {
    return absl::InvalidArgumentError("BPE dropout is not supported (inference never drops)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (set(key) && !model[key].get<std::string>().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("BPE ", key, " is not supported"));
    }
  }
  if (model.value("byte_fallback", false) || model.value("ignore_merges", false)) {
    return absl::InvalidArgumentError("BPE byte_fallback / ignore_merges are not supported");
  }
  auto m = std::unique_ptr<BpeModel>(new BpeModel());
  const auto& vocab = model["vocab"];
  int32_t max_id = -1;
  m->vocab_.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int32_t id = it.value().get<int32_t>();
    m->vocab_.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  m->tokens_.resize(max_id + 1);
  for (const auto& [token, id] : m->vocab_) m->tokens_[id] = token;
  for (int b = 0; b < 256; ++b) {
    std::string spelled;
    const std::string raw(1, static_cast<char>(b));
    spelled = BytesToByteLevel(raw);
    m->byte_ids_[b] = m->Find(spelled);
    if (m->byte_ids_[b] < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "byte-level BPE vocabulary lacks the token for byte ", b, " ('", spelled, "')"));
    }
  }
  const auto& merges = model["merges"];
  m->merges_.reserve(merges.size());
  std::string joined;  // reused: left + right
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    std::string left, right;
    if (merges[rank].is_string()) {  // "a b"
      const std::string s = merges[rank].get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("BPE merge ", rank, " '", s, "' has no space"));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else {  // ["a", "b"]
      left = merges[rank][0].get<std::string>();
      right = merges[rank][1].get<std::string>();
    }
    joined.assign(left).append(right);
    const int32_t a = m->Find(left), b = m->Find(right), ab = m->Find(joined);
    if (a < 0 || b < 0 || ab < 0) {
      return absl::InvalidArgumentError(absl::StrCat("BPE merge ", rank, " ('", left, "', '", right,
                                                     "') names tokens outside the vocabulary"));
    }
    const uint64_t key = (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
    m->merges_.emplace(key, (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(ab));
  }
  return m;
}

int32_t BpeModel::Find(std::string_view token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

std::vector<int32_t> BpeModel::Merge(std::string_view piece) const {
  // Symbols as a doubly linked list over the piece's bytes.
  const int n = static_cast<int>(piece.size());
  std::vector<int32_t> id(n);
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    id[i] = byte_ids_[static_cast<uint8_t>(piece[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    uint32_t rank;
    int pos;
    int32_t left, right, merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto consider = [&](int pos) {
    if (pos < 0 || next[pos] < 0) return;
    const int32_t a = id[pos], b = id[next[pos]];
    auto it = merges_.find((static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b));
    if (it == merges_.end()) return;
    heap.push({static_cast<uint32_t>(it->second >> 32), pos, a, b,
               static_cast<int32_t>(it->second & 0xFFFFFFFFu)});
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    // Stale when either side has merged since the candidate was queued.
    if (id[c.pos] != c.left || next[c.pos] < 0 || id[next[c.pos]] != c.right) continue;
    const int right = next[c.pos];
    id[c.pos] = c.merged;
    id[right] = -1;
    next[c.pos] = next[right];
    if (next[right] >= 0) prev[next[right]] = c.pos;
    consider(prev[c.pos]);
    consider(c.pos);
  }
  std::vector<int32_t> out;
  for (int i = 0; i >= 0 && i < n; i = next[i]) out.push_back(id[i]);
  return out;
}

void BpeModel::Encode(std::string_view piece, std::vector<int32_t>* ids) const {
  if (piece.empty()) return;
  CacheShard& shard = cache_[std::hash<std::string_view>()(piece) % kShards];
  {
    std::shared_lock lock(shard.mu);
    auto it = shard.pieces.find(piece);
    if (it != shard.pieces.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> merged = Merge(piece);
  ids->insert(ids->end(), merged.begin(), merged.end());
  std::unique_lock lock(shard.mu);
  if (shard.pieces.size() >= kMaxCachedPerShard) shard.pieces.clear();  // bounded memory
  shard.pieces.emplace(std::string(piece), std::move(merged));
}

}  // namespace dserve::engine
