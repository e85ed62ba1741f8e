// InProcessGroup: the ranks of a parallel model as threads of one process sharing memory, so
// every parallel code path runs (and is tested) on the CPU. Each collective publishes the
// ranks' buffers, waits for all of them, copies or sums straight from the peers' memory, and
// waits again before anyone may reuse its buffers. Sums run in rank order: deterministic.
#pragma once

#include <barrier>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace dserve::parallel {

class InProcessGroup {
 public:
  explicit InProcessGroup(int size);
  ~InProcessGroup();
  InProcessGroup(const InProcessGroup&) = delete;
  InProcessGroup& operator=(const InProcessGroup&) = delete;

  int size() const { return static_cast<int>(ranks_.size()); }
  // Rank r's communicator: used by one thread at a time, all ranks concurrently.
  Communicator& rank(int r);

 private:
  class Rank;
  friend class Rank;
  // What each rank published for the collective in progress.
  struct Slot {
    const void* send = nullptr;
    void* recv = nullptr;
    int64_t bytes = 0;  // the size every rank must agree on (or this rank's total)
    std::span<const int64_t> send_bytes, recv_bytes;
    int op = 0;  // which collective: ranks calling different ones is an error
  };
  // Publishes, waits for every rank, returns an error (on every rank alike) if they disagree.
  absl::Status Meet(int rank, const Slot& slot, bool same_bytes);
  void Wait() { barrier_.arrive_and_wait(); }

  std::vector<Slot> slots_;
  std::barrier<> barrier_;
  std::vector<std::unique_ptr<Rank>> ranks_;
};

}  // namespace dserve::parallel
