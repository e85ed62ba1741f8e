// KvCacheManager: page accounting for the paged MLA latent KV cache — page indices, per-sequence
// block tables, reference counts, copy-on-write, and the prefix cache with its LRU of cached pages.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <span>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"

namespace dserve::engine {

using SeqId = int64_t;

struct KvCacheConfig {
  int64_t num_pages = 0;
  int64_t page_size = 64;  // tokens per page
  bool enable_prefix_caching = true;
};

struct KvCacheStats {
  int64_t prefix_query_tokens = 0;  // prompt tokens looked up in StartSequence
  int64_t prefix_hit_tokens = 0;    // of those, found cached
  int64_t evictions = 0;            // cached pages reclaimed for new allocations
  int64_t cow_copies = 0;           // copy-on-write page copies
};

// Every page is in exactly one of three states:
//   free   — holds nothing anyone can reuse; on the free list, allocatable at once;
//   cached — unreferenced but registered in the prefix cache (a full page with a known hash);
//            on the LRU list, allocatable by eviction;
//   used   — referenced by at least one sequence's block table.
// The storage itself (kernels::LatentCache) lives elsewhere; this class only decides which page
// index holds what. Not thread-safe: the engine thread owns it.
class KvCacheManager {
 public:
  // copy_page(src, dst) copies one page's contents (all layers) in the cache storage; it is only
  // called for copy-on-write and may be empty if no sequence is ever forked.
  KvCacheManager(const KvCacheConfig& config,
                 std::function<void(int32_t src, int32_t dst)> copy_page);

  KvCacheManager(const KvCacheManager&) = delete;
  KvCacheManager& operator=(const KvCacheManager&) = delete;

  int64_t num_pages() const { return static_cast<int64_t>(pages_.size()); }
  int64_t page_size() const { return page_size_; }
  // free + cached + used == num_pages always.
  int64_t num_free_pages() const { return static_cast<int64_t>(free_list_.size()); }
  int64_t num_cached_pages() const { return num_cached_; }
  int64_t num_used_pages() const {
    return num_pages() - num_free_pages() - num_cached_pages();
  }
  // Pages that Reserve can hand out right now: free + cached.
  int64_t num_allocatable_pages() const { return num_free_pages() + num_cached_pages(); }

  // Starts sequence `id` (which must be new) with `tokens`: the prompt, or prompt + generated when
  // re-admitted after preemption. With prefix caching, attaches the longest chain of registered
  // pages matching the leading full pages of `tokens`, but at most (tokens.size() - 1) / page_size
  // of them so that at least one token is left to compute (its logits are needed). Returns the
  // number of tokens covered, a multiple of page_size.
  // `prompt_len` (default: all of `tokens`) splits the tokens into prompt and generated ones:
  // the engine computes the two kinds with different MLA forms, so a page's hash covers which
  // of its tokens were prompt tokens and a cached page is reused only under the same split.
  int64_t StartSequence(SeqId id, std::span<const int32_t> tokens, int64_t prompt_len = -1);

  // Pages Reserve(id, first_new, num_tokens) would take: pages beyond those the sequence holds so
  // that it can hold `num_tokens` tokens, plus one per held page in the write range
  // [first_new, num_tokens) that is shared with another sequence (copy-on-write). In practice that
  // is at most the page holding token `first_new`.
  int64_t PagesNeeded(SeqId id, int64_t first_new, int64_t num_tokens) const;

  // Makes sequence `id` able to write tokens [first_new, num_tokens): copies each shared page in
  // the write range to a fresh page (copy_page) and appends pages up to num_tokens. New pages come
  // from the free list first, then by evicting the least recently released cached page. Returns
  // false and changes nothing if there are not enough pages.
  bool Reserve(SeqId id, int64_t first_new, int64_t num_tokens);

  // After a forward step has written tokens [0, num_computed) of sequence `id` (`tokens` = all of
  // its tokens), registers every page that became full in the prefix cache, keyed by a hash chained
  // over all tokens up to the page's end. A page whose content another page already holds stays
  // unregistered and is freed, not cached, on release. No-op without prefix caching.
  void MarkComputed(SeqId id, std::span<const int32_t> tokens, int64_t num_computed);

  // `child` (new id) starts with exactly the pages and hash chain of `parent`, each page's
  // reference +1 (n > 1 samples of one prompt); the shared partial last page is copied by whichever
  // sequence writes to it first.
  void Fork(SeqId parent, SeqId child);

  // Drops sequence `id`'s reference to each of its pages, last page first, so that a sequence's
  // tail pages are evicted before its head pages (heads are shared by more prefixes). A page no
  // longer referenced becomes cached (most recently used) if registered, free otherwise.
  void Free(SeqId id);

  bool HasSequence(SeqId id) const { return seqs_.contains(id); }
  std::span<const int32_t> BlockTable(SeqId id) const;
  int32_t RefCount(int32_t page) const;
  // Whether `page` currently holds an entry of the prefix cache.
  bool IsRegistered(int32_t page) const;
  const KvCacheStats& stats() const { return stats_; }
  void ResetStats() { stats_ = KvCacheStats(); }
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }

  // Full consistency check, O(num_pages + block-table entries), for tests and debug builds: every
  // page is exactly one of free / cached / used; refcounts equal block-table occurrences; cached
  // pages are registered and unreferenced; the hash map and the pages agree; no page appears twice
  // in the free list or the LRU. Returns an error naming the first violation.
  absl::Status CheckInvariants() const;

 private:
  enum class PageState : uint8_t { kFree, kCached, kUsed };

  struct Page {
    int32_t ref_count = 0;
    PageState state = PageState::kFree;
    bool registered = false;
    // Set while registered. The parent hash and the token ids are kept so that a lookup compares
    // contents, not just 64-bit hashes: a hash collision is then a miss, never a wrong reuse.
    uint64_t hash = 0;
    uint64_t parent_hash = 0;
    std::vector<int32_t> tokens;
    int64_t prompt_tokens = 0;  // how many of `tokens` were prompt tokens
    // Intrusive LRU links (page indices, -1 at the ends); meaningful only while cached.
    int32_t lru_prev = -1;
    int32_t lru_next = -1;
  };

  struct SeqState {
    std::vector<int32_t> block_table;
    int64_t prompt_len = 0;
    // hashes[i] is the chained hash of full page i; its length is the number of pages hashed so
    // far, so each page is hashed once however often MarkComputed is called.
    std::vector<uint64_t> hashes;
  };

  SeqState& GetSeq(SeqId id);
  const SeqState& GetSeq(SeqId id) const;
  // Block-table indices [*begin, *end) of pages already held by `seq` that a write of tokens
  // [first_new, num_tokens) touches.
  void HeldWriteRange(const SeqState& seq, int64_t first_new, int64_t num_tokens, size_t* begin,
                      size_t* end) const;
  int32_t AllocatePage();
  void ReleasePage(int32_t page);
  void Register(int32_t page, uint64_t hash, uint64_t parent_hash, int64_t prompt_tokens,
                std::span<const int32_t> tokens);
  void Unregister(int32_t page);
  void LruPushBack(int32_t page);
  void LruRemove(int32_t page);
  uint64_t PageHash(uint64_t parent_hash, std::span<const int32_t> page_tokens,
                    int64_t prompt_tokens) const;
  // Prompt tokens among page `index` of a sequence with this prompt length.
  int64_t PromptTokensInPage(int64_t prompt_len, int64_t index) const {
    return std::clamp<int64_t>(prompt_len - index * page_size_, 0, page_size_);
  }

  int64_t page_size_;
  bool enable_prefix_caching_;
  std::function<void(int32_t, int32_t)> copy_page_;

  std::vector<Page> pages_;
  // LIFO: recently freed pages are reused first.
  std::vector<int32_t> free_list_;
  // Least recently released cached page at the head; evicted first.
  int32_t lru_head_ = -1;
  int32_t lru_tail_ = -1;
  int64_t num_cached_ = 0;
  std::unordered_map<uint64_t, int32_t> hash_to_page_;
  std::unordered_map<SeqId, SeqState> seqs_;
  KvCacheStats stats_;
};

}  // namespace dserve::engine
