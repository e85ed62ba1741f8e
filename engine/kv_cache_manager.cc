#include "engine/kv_cache_manager.h"

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace dserve::engine {
namespace {

// Chain start: an arbitrary odd constant, so that the first page's hash differs from the hash of
// its tokens alone.
constexpr uint64_t kChainSeed = 0x6a09e667f3bcc909ULL;
constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

// SplitMix64's finaliser: a bijection on 64 bits in which every input bit affects every output bit.
uint64_t Fmix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

KvCacheManager::KvCacheManager(const KvCacheConfig& config,
                               std::function<void(int32_t src, int32_t dst)> copy_page)
    : page_size_(config.page_size),
      enable_prefix_caching_(config.enable_prefix_caching),
      copy_page_(std::move(copy_page)) {
  DSERVE_CHECK(config.num_pages >= 0 &&
               config.num_pages <= std::numeric_limits<int32_t>::max())
      << "num_pages must fit an int32 page index, got " << config.num_pages;
  DSERVE_CHECK(config.page_size > 0) << "page_size must be positive, got " << config.page_size;
  pages_.resize(static_cast<size_t>(config.num_pages));
  free_list_.reserve(pages_.size());
  // Pushed in reverse so that the LIFO list hands out page 0 first: easier to read in logs.
  for (int64_t p = config.num_pages - 1; p >= 0; --p) {
    free_list_.push_back(static_cast<int32_t>(p));
  }
}

KvCacheManager::SeqState& KvCacheManager::GetSeq(SeqId id) {
  auto it = seqs_.find(id);
  DSERVE_CHECK(it != seqs_.end()) << "unknown sequence " << id;
  return it->second;
}

const KvCacheManager::SeqState& KvCacheManager::GetSeq(SeqId id) const {
  auto it = seqs_.find(id);
  DSERVE_CHECK(it != seqs_.end()) << "unknown sequence " << id;
  return it->second;
}

uint64_t KvCacheManager::PageHash(uint64_t parent_hash, std::span<const int32_t> page_tokens,
                                  int64_t prompt_tokens) const {
  uint64_t h = Fmix64(parent_hash ^ kGolden);
  h = Fmix64(h + kGolden + static_cast<uint64_t>(prompt_tokens));
  for (int32_t t : page_tokens) {
    h = Fmix64(h + kGolden + static_cast<uint32_t>(t));
  }
  return h;
}

int64_t KvCacheManager::StartSequence(SeqId id, std::span<const int32_t> tokens,
                                     int64_t prompt_len) {
  DSERVE_CHECK(!seqs_.contains(id)) << "sequence " << id << " already exists";
  SeqState& seq = seqs_[id];
  seq.prompt_len = prompt_len < 0 ? static_cast<int64_t>(tokens.size()) : prompt_len;
  if (!enable_prefix_caching_) return 0;

  stats_.prefix_query_tokens += static_cast<int64_t>(tokens.size());
  // Leave at least one token uncovered: the step that computes it yields the next token's logits.
  const int64_t max_pages =
      tokens.empty() ? 0 : (static_cast<int64_t>(tokens.size()) - 1) / page_size_;
  uint64_t parent = kChainSeed;
  for (int64_t i = 0; i < max_pages; ++i) {
    std::span<const int32_t> page_tokens = tokens.subspan(i * page_size_, page_size_);
    const int64_t prompt_tokens = PromptTokensInPage(seq.prompt_len, i);
    const uint64_t h = PageHash(parent, page_tokens, prompt_tokens);
    auto it = hash_to_page_.find(h);
    if (it == hash_to_page_.end()) break;
    const int32_t p = it->second;
    Page& page = pages_[p];
    if (page.parent_hash != parent || page.prompt_tokens != prompt_tokens ||
        !std::equal(page.tokens.begin(), page.tokens.end(), page_tokens.begin(),
                    page_tokens.end())) {
      break;  // a hash collision: treat as a miss
    }
    if (page.ref_count == 0) {
      LruRemove(p);
      page.state = PageState::kUsed;
    }
    ++page.ref_count;
    seq.block_table.push_back(p);
    seq.hashes.push_back(h);
    parent = h;
  }
  const int64_t covered = static_cast<int64_t>(seq.block_table.size()) * page_size_;
  stats_.prefix_hit_tokens += covered;
  return covered;
}

void KvCacheManager::HeldWriteRange(const SeqState& seq, int64_t first_new, int64_t num_tokens,
                                    size_t* begin, size_t* end) const {
  const size_t held = seq.block_table.size();
  const size_t last = static_cast<size_t>((num_tokens + page_size_ - 1) / page_size_);
  *end = std::min(held, last);
  *begin = std::min(static_cast<size_t>(first_new / page_size_), *end);
}

int64_t KvCacheManager::PagesNeeded(SeqId id, int64_t first_new, int64_t num_tokens) const {
  DSERVE_CHECK(0 <= first_new && first_new <= num_tokens)
      << "bad write range [" << first_new << ", " << num_tokens << ")";
  const SeqState& seq = GetSeq(id);
  const int64_t want = (num_tokens + page_size_ - 1) / page_size_;
  int64_t needed = std::max<int64_t>(0, want - static_cast<int64_t>(seq.block_table.size()));
  if (first_new == num_tokens) return needed;  // nothing is written, so nothing is copied
  size_t begin, end;
  HeldWriteRange(seq, first_new, num_tokens, &begin, &end);
  for (size_t i = begin; i < end; ++i) {
    if (pages_[seq.block_table[i]].ref_count > 1) ++needed;
  }
  return needed;
}

bool KvCacheManager::Reserve(SeqId id, int64_t first_new, int64_t num_tokens) {
  if (PagesNeeded(id, first_new, num_tokens) > num_allocatable_pages()) return false;
  SeqState& seq = GetSeq(id);
  if (first_new < num_tokens) {
    size_t begin, end;
    HeldWriteRange(seq, first_new, num_tokens, &begin, &end);
    for (size_t i = begin; i < end; ++i) {
      const int32_t old_page = seq.block_table[i];
      if (pages_[old_page].ref_count <= 1) continue;
      DSERVE_CHECK(copy_page_) << "copy-on-write of page " << old_page << " without copy_page";
      const int32_t new_page = AllocatePage();
      copy_page_(old_page, new_page);
      seq.block_table[i] = new_page;
      // Others still hold old_page, so this cannot take it to zero.
      --pages_[old_page].ref_count;
      ++stats_.cow_copies;
    }
  }
  const size_t want = static_cast<size_t>((num_tokens + page_size_ - 1) / page_size_);
  while (seq.block_table.size() < want) seq.block_table.push_back(AllocatePage());
  return true;
}

void KvCacheManager::MarkComputed(SeqId id, std::span<const int32_t> tokens,
                                  int64_t num_computed) {
  if (!enable_prefix_caching_) return;
  SeqState& seq = GetSeq(id);
  DSERVE_CHECK(num_computed >= 0 && num_computed <= static_cast<int64_t>(tokens.size()))
      << "num_computed " << num_computed << " outside [0, " << tokens.size() << "]";
  const size_t full = static_cast<size_t>(num_computed / page_size_);
  DSERVE_CHECK(full <= seq.block_table.size())
      << "sequence " << id << " computed " << num_computed << " tokens but holds only "
      << seq.block_table.size() << " pages";
  for (size_t i = seq.hashes.size(); i < full; ++i) {
    const uint64_t parent = i == 0 ? kChainSeed : seq.hashes[i - 1];
    std::span<const int32_t> page_tokens = tokens.subspan(i * page_size_, page_size_);
    const int64_t prompt_tokens = PromptTokensInPage(seq.prompt_len, static_cast<int64_t>(i));
    const uint64_t h = PageHash(parent, page_tokens, prompt_tokens);
    seq.hashes.push_back(h);
    const int32_t p = seq.block_table[i];
    if (pages_[p].registered) {
      // Registered by another holder of this page (a fork taken before this step was marked):
      // same tokens, so the same hash.
      DSERVE_CHECK(pages_[p].hash == h) << "page " << p << " registered under another hash";
      continue;
    }
    // Another sequence computed the same content first: keep that page as the cached copy.
    if (hash_to_page_.contains(h)) continue;
    Register(p, h, parent, prompt_tokens, page_tokens);
  }
}

void KvCacheManager::Fork(SeqId parent, SeqId child) {
  DSERVE_CHECK(!seqs_.contains(child)) << "sequence " << child << " already exists";
  SeqState copy = GetSeq(parent);
  for (int32_t p : copy.block_table) ++pages_[p].ref_count;
  seqs_.emplace(child, std::move(copy));
}

void KvCacheManager::Free(SeqId id) {
  auto it = seqs_.find(id);
  DSERVE_CHECK(it != seqs_.end()) << "unknown sequence " << id;
  const std::vector<int32_t>& table = it->second.block_table;
  for (auto p = table.rbegin(); p != table.rend(); ++p) ReleasePage(*p);
  seqs_.erase(it);
}

std::span<const int32_t> KvCacheManager::BlockTable(SeqId id) const {
  return GetSeq(id).block_table;
}

int32_t KvCacheManager::RefCount(int32_t page) const {
  DSERVE_CHECK(page >= 0 && page < num_pages()) << "page " << page << " out of range";
  return pages_[page].ref_count;
}

bool KvCacheManager::IsRegistered(int32_t page) const {
  DSERVE_CHECK(page >= 0 && page < num_pages()) << "page " << page << " out of range";
  return pages_[page].registered;
}

int32_t KvCacheManager::AllocatePage() {
  int32_t p;
  if (!free_list_.empty()) {
    p = free_list_.back();
    free_list_.pop_back();
  } else {
    p = lru_head_;
    DSERVE_CHECK(p >= 0) << "no allocatable page; callers check num_allocatable_pages first";
    LruRemove(p);
    Unregister(p);
    ++stats_.evictions;
  }
  pages_[p].state = PageState::kUsed;
  pages_[p].ref_count = 1;
  return p;
}

void KvCacheManager::ReleasePage(int32_t p) {
  Page& page = pages_[p];
  DSERVE_CHECK(page.ref_count > 0) << "page " << p << " released more often than referenced";
  if (--page.ref_count > 0) return;
  if (page.registered) {
    page.state = PageState::kCached;
    LruPushBack(p);
  } else {
    page.state = PageState::kFree;
    free_list_.push_back(p);
  }
}

void KvCacheManager::Register(int32_t p, uint64_t hash, uint64_t parent_hash,
                              int64_t prompt_tokens, std::span<const int32_t> tokens) {
  Page& page = pages_[p];
  page.registered = true;
  page.hash = hash;
  page.parent_hash = parent_hash;
  page.prompt_tokens = prompt_tokens;
  page.tokens.assign(tokens.begin(), tokens.end());
  hash_to_page_.emplace(hash, p);
}

void KvCacheManager::Unregister(int32_t p) {
  Page& page = pages_[p];
  hash_to_page_.erase(page.hash);
  page.registered = false;
  page.hash = 0;
  page.parent_hash = 0;
  page.tokens.clear();
}

void KvCacheManager::LruPushBack(int32_t p) {
  Page& page = pages_[p];
  page.lru_prev = lru_tail_;
  page.lru_next = -1;
  if (lru_tail_ >= 0) {
    pages_[lru_tail_].lru_next = p;
  } else {
    lru_head_ = p;
  }
  lru_tail_ = p;
  ++num_cached_;
}

void KvCacheManager::LruRemove(int32_t p) {
  Page& page = pages_[p];
  if (page.lru_prev >= 0) {
    pages_[page.lru_prev].lru_next = page.lru_next;
  } else {
    lru_head_ = page.lru_next;
  }
  if (page.lru_next >= 0) {
    pages_[page.lru_next].lru_prev = page.lru_prev;
  } else {
    lru_tail_ = page.lru_prev;
  }
  page.lru_prev = page.lru_next = -1;
  --num_cached_;
}

absl::Status KvCacheManager::CheckInvariants() const {
  const int64_t n = num_pages();
  auto fail = [](auto&&... parts) { return absl::InternalError(absl::StrCat(parts...)); };

  std::vector<int32_t> refs(pages_.size(), 0);
  for (const auto& [id, seq] : seqs_) {
    if (seq.hashes.size() > seq.block_table.size()) {
      return fail("sequence ", id, " has ", seq.hashes.size(), " hashes but ",
                  seq.block_table.size(), " pages");
    }
    for (int32_t p : seq.block_table) {
      if (p < 0 || p >= n) return fail("sequence ", id, " names page ", p, " out of range");
      ++refs[p];
    }
  }

  std::vector<uint8_t> seen(pages_.size(), 0);
  for (int32_t p : free_list_) {
    if (p < 0 || p >= n) return fail("free list holds page ", p, " out of range");
    if (seen[p]) return fail("page ", p, " twice in the free list");
    seen[p] = 1;
    if (pages_[p].state != PageState::kFree) return fail("page ", p, " on free list not free");
  }
  int64_t lru_count = 0;
  int32_t prev = -1;
  for (int32_t p = lru_head_; p >= 0; p = pages_[p].lru_next) {
    if (p >= n) return fail("LRU holds page ", p, " out of range");
    if (seen[p]) return fail("page ", p, " twice in the LRU or also on the free list");
    seen[p] = 1;
    if (pages_[p].state != PageState::kCached) return fail("page ", p, " in LRU not cached");
    if (pages_[p].lru_prev != prev) return fail("page ", p, " has a broken LRU back link");
    prev = p;
    ++lru_count;
  }
  if (prev != lru_tail_) return fail("LRU tail is ", lru_tail_, ", walk ended at ", prev);
  if (lru_count != num_cached_) {
    return fail("LRU holds ", lru_count, " pages, num_cached_ says ", num_cached_);
  }

  for (int32_t p = 0; p < n; ++p) {
    const Page& page = pages_[p];
    if (page.ref_count != refs[p]) {
      return fail("page ", p, " has refcount ", page.ref_count, " but ", refs[p],
                  " block-table entries");
    }
    switch (page.state) {
      case PageState::kUsed:
        if (page.ref_count == 0) return fail("used page ", p, " is unreferenced");
        break;
      case PageState::kCached:
        if (page.ref_count != 0) return fail("cached page ", p, " is referenced");
        if (!page.registered) return fail("cached page ", p, " is not registered");
        if (!seen[p]) return fail("cached page ", p, " is not in the LRU");
        break;
      case PageState::kFree:
        if (page.ref_count != 0) return fail("free page ", p, " is referenced");
        if (page.registered) return fail("free page ", p, " is registered");
        if (!seen[p]) return fail("free page ", p, " is not on the free list");
        break;
    }
    if (page.state == PageState::kUsed && seen[p]) {
      return fail("used page ", p, " is on the free list or the LRU");
    }
    if (page.registered) {
      auto it = hash_to_page_.find(page.hash);
      if (it == hash_to_page_.end() || it->second != p) {
        return fail("registered page ", p, " is not the map's page for its hash");
      }
      if (static_cast<int64_t>(page.tokens.size()) != page_size_) {
        return fail("registered page ", p, " stores ", page.tokens.size(), " tokens");
      }
    }
  }
  for (const auto& [hash, p] : hash_to_page_) {
    if (p < 0 || p >= n) return fail("hash map names page ", p, " out of range");
    if (!pages_[p].registered || pages_[p].hash != hash) {
      return fail("hash ", hash, " maps to page ", p, " which does not hold it");
    }
  }
  if (!enable_prefix_caching_ && !hash_to_page_.empty()) {
    return fail("prefix caching is off but ", hash_to_page_.size(), " pages are registered");
  }
  return absl::OkStatus();
}

}  // namespace dserve::engine
