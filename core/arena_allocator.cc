#include "core/arena_allocator.h"

#include <algorithm>
#include <iterator>

#include "core/check.h"

namespace dserve {

ArenaAllocator::ArenaAllocator(int64_t capacity, int64_t alignment)
    : capacity_(capacity), alignment_(alignment) {
  DSERVE_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0)
      << "alignment " << alignment << " is not a power of 2";
  DSERVE_CHECK(capacity >= 0) << "capacity " << capacity;
  capacity_ = capacity / alignment * alignment;
  if (capacity_ > 0) free_[0] = capacity_;
}

std::optional<int64_t> ArenaAllocator::Allocate(int64_t bytes) {
  DSERVE_CHECK(bytes >= 0) << "allocating " << bytes << " bytes";
  const int64_t size = std::max<int64_t>(1, (bytes + alignment_ - 1) / alignment_) * alignment_;
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < size) continue;
    const int64_t offset = it->first, rest = it->second - size;
    free_.erase(it);
    if (rest > 0) free_[offset + size] = rest;
    blocks_[offset] = size;
    used_ += size;
    peak_ = std::max(peak_, used_);
    return offset;
  }
  return std::nullopt;
}

void ArenaAllocator::Free(int64_t offset) {
  const auto block = blocks_.find(offset);
  DSERVE_CHECK(block != blocks_.end()) << "offset " << offset << " is not an allocated block";
  int64_t begin = offset, end = offset + block->second;
  used_ -= block->second;
  blocks_.erase(block);
  // Merge with the free run that ends where this block starts and the one that starts where
  // it ends (free runs never touch, so there is at most one of each).
  auto next = free_.lower_bound(begin);
  if (next != free_.begin()) {
    const auto prev = std::prev(next);
    if (prev->first + prev->second == begin) {
      begin = prev->first;
      free_.erase(prev);
    }
  }
  if (next != free_.end() && next->first == end) {
    end += next->second;
    free_.erase(next);
  }
  free_[begin] = end - begin;
}

}  // namespace dserve
