// ArenaAllocator: first-fit placement of blocks inside one fixed range (offsets only; the
// memory is the caller's). CUDA graphs record addresses, so a captured step takes its
// activations from a fixed device arena through this instead of the stream-ordered pool.
#pragma once

#include <cstdint>
#include <map>
#include <optional>

namespace dserve {

class ArenaAllocator {
 public:
  // A range of `capacity` bytes; every block starts at a multiple of `alignment` (a power of 2).
  explicit ArenaAllocator(int64_t capacity, int64_t alignment = 256);

  // The offset of a new block of `bytes` (0 bytes take one alignment unit), or nullopt when no
  // free run is long enough. Lowest-addressed fit, so a fixed sequence of calls always gives
  // the same offsets.
  std::optional<int64_t> Allocate(int64_t bytes);
  // Returns a block from Allocate; neighbouring free runs merge.
  void Free(int64_t offset);

  int64_t capacity() const { return capacity_; }
  int64_t used_bytes() const { return used_; }
  // The most bytes in use at once since construction or ResetPeak.
  int64_t peak_bytes() const { return peak_; }
  void ResetPeak() { peak_ = used_; }

 private:
  int64_t capacity_, alignment_;
  std::map<int64_t, int64_t> free_;    // offset -> length of each free run, non-adjacent
  std::map<int64_t, int64_t> blocks_;  // offset -> length of each allocated block
  int64_t used_ = 0, peak_ = 0;
};

}  // namespace dserve
