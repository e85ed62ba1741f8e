#include "parallel/in_process_communicator.h"

#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace dserve::parallel {
namespace {

enum Op { kAllReduce = 1, kAllGather, kAllToAll, kBroadcast, kBarrier };

const char* OpName(int op) {
  switch (op) {
    case kAllReduce: return "AllReduceSum";
    case kAllGather: return "AllGather";
    case kAllToAll: return "AllToAllV";
    case kBroadcast: return "Broadcast";
    case kBarrier: return "Barrier";
  }
  return "?";
}

}  // namespace

class InProcessGroup::Rank final : public Communicator {
 public:
  Rank(InProcessGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_.size(); }

  absl::Status AllReduceSum(float* data, int64_t count) override {
    DSERVE_RETURN_IF_ERROR(
        group_.Meet(rank_, {data, data, count, {}, {}, kAllReduce}, /*same_bytes=*/true));
    // Every rank sums all ranks' values in rank order into its own copy, then waits until
    // nobody reads the inputs any more before overwriting its own.
    sum_.assign(static_cast<size_t>(count), 0.0f);
    for (int r = 0; r < size(); ++r) {
      const float* peer = static_cast<const float*>(group_.slots_[r].send);
      for (int64_t i = 0; i < count; ++i) sum_[i] += peer[i];
    }
    group_.Wait();
    if (count > 0) std::memcpy(data, sum_.data(), static_cast<size_t>(count) * sizeof(float));
    group_.Wait();
    return absl::OkStatus();
  }

  absl::Status AllGather(const void* send, int64_t bytes, void* recv) override {
    DSERVE_RETURN_IF_ERROR(
        group_.Meet(rank_, {send, recv, bytes, {}, {}, kAllGather}, /*same_bytes=*/true));
    for (int r = 0; r < size(); ++r) {
      if (bytes > 0) {
        std::memcpy(static_cast<uint8_t*>(recv) + r * bytes, group_.slots_[r].send,
                    static_cast<size_t>(bytes));
      }
    }
    group_.Wait();
    return absl::OkStatus();
  }

  absl::Status AllToAllV(const void* send, std::span<const int64_t> send_bytes, void* recv,
                         std::span<const int64_t> recv_bytes) override {
    if (static_cast<int>(send_bytes.size()) != size() ||
        static_cast<int>(recv_bytes.size()) != size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "AllToAllV needs a size per rank (", size(), "), got ", send_bytes.size(), " and ",
          recv_bytes.size()));
    }
    DSERVE_RETURN_IF_ERROR(group_.Meet(
        rank_, {send, recv, 0, send_bytes, recv_bytes, kAllToAll}, /*same_bytes=*/false));
    // Every rank checks every (sender, receiver) pair from the published sizes, so all reach
    // the same verdict; then what peer p sends here starts after what it sends to lower ranks.
    absl::Status status;
    for (int q = 0; q < size() && status.ok(); ++q) {
      for (int p = 0; p < size() && status.ok(); ++p) {
        const int64_t sent = group_.slots_[p].send_bytes[q];
        const int64_t expected = group_.slots_[q].recv_bytes[p];
        if (sent != expected) {
          status = absl::InvalidArgumentError(absl::StrCat(
              "AllToAllV: rank ", q, " expects ", expected, " bytes from rank ", p,
              ", which sends ", sent));
        }
      }
    }
    int64_t at = 0;
    for (int p = 0; p < size(); ++p) {
      const Slot& peer = group_.slots_[p];
      int64_t offset = 0;
      for (int q = 0; q < rank_; ++q) offset += peer.send_bytes[q];
      if (status.ok() && recv_bytes[p] > 0) {
        std::memcpy(static_cast<uint8_t*>(recv) + at,
                    static_cast<const uint8_t*>(peer.send) + offset,
                    static_cast<size_t>(recv_bytes[p]));
      }
      at += recv_bytes[p];
    }
    group_.Wait();
    return status;
  }

  absl::Status Broadcast(void* data, int64_t bytes, int root) override {
    if (root < 0 || root >= size()) {
      return absl::InvalidArgumentError(absl::StrCat("Broadcast from rank ", root, " of ", size()));
    }
    DSERVE_RETURN_IF_ERROR(
        group_.Meet(rank_, {data, data, bytes, {}, {}, kBroadcast + 16 * root}, true));
    if (rank_ != root && bytes > 0) {
      std::memcpy(data, group_.slots_[root].send, static_cast<size_t>(bytes));
    }
    group_.Wait();
    return absl::OkStatus();
  }

  absl::Status Barrier() override {
    DSERVE_RETURN_IF_ERROR(group_.Meet(rank_, {nullptr, nullptr, 0, {}, {}, kBarrier}, true));
    group_.Wait();  // nobody publishes the next collective while a peer still checks this one
    return absl::OkStatus();
  }

 private:
  InProcessGroup& group_;
  int rank_;
  std::vector<float> sum_;
};

InProcessGroup::InProcessGroup(int size) : slots_(size), barrier_(size) {
  DSERVE_CHECK(size >= 1) << "a group of " << size << " ranks";
  for (int r = 0; r < size; ++r) ranks_.push_back(std::make_unique<Rank>(*this, r));
}

InProcessGroup::~InProcessGroup() = default;

Communicator& InProcessGroup::rank(int r) { return *ranks_.at(r); }

absl::Status InProcessGroup::Meet(int rank, const Slot& slot, bool same_bytes) {
  slots_[rank] = slot;
  Wait();
  // Every rank checks the same published values, so all return the same verdict.
  absl::Status status;
  for (int r = 1; r < size() && status.ok(); ++r) {
    if (slots_[r].op != slots_[0].op) {
      status = absl::FailedPreconditionError(absl::StrCat(
          "rank ", r, " called ", OpName(slots_[r].op % 16), " while rank 0 called ",
          OpName(slots_[0].op % 16), (slots_[r].op / 16 != slots_[0].op / 16 ? " (another root)"
                                                                            : "")));
    } else if (same_bytes && slots_[r].bytes != slots_[0].bytes) {
      status = absl::InvalidArgumentError(absl::StrCat(
          OpName(slots_[0].op % 16), ": rank ", r, " gave ", slots_[r].bytes, " where rank 0 gave ",
          slots_[0].bytes));
    }
  }
  if (!status.ok()) Wait();  // nobody touches the peers' buffers; all leave together
  return status;
}

}  // namespace dserve::parallel
