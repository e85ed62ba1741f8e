#include "parallel/in_process_communicator.h"

#include <gtest/gtest.h>

#include <functional>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

namespace dserve::parallel {
namespace {

// Runs fn(rank) on one thread per rank of a fresh group.
void OnEveryRank(InProcessGroup& group, const std::function<void(Communicator&)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < group.size(); ++r) {
    threads.emplace_back([&group, &fn, r] { fn(group.rank(r)); });
  }
  for (std::thread& t : threads) t.join();
}

TEST(InProcessCommunicatorTest, AllReduceSumsInRankOrderOnEveryRank) {
  for (const int n : {1, 2, 3, 4}) {
    InProcessGroup group(n);
    std::vector<std::vector<float>> data(n);
    std::mt19937 rng(n);
    std::normal_distribution<float> normal(0.0f, 1e4f);
    for (auto& d : data) {
      d.resize(1001);
      for (float& x : d) x = normal(rng);
    }
    std::vector<float> want(1001, 0.0f);
    for (int r = 0; r < n; ++r) {
      for (size_t i = 0; i < want.size(); ++i) want[i] += data[r][i];
    }
    OnEveryRank(group, [&](Communicator& c) {
      for (int repeat = 0; repeat < 3; ++repeat) {
        std::vector<float> mine = data[c.rank()];
        ASSERT_TRUE(c.AllReduceSum(mine.data(), static_cast<int64_t>(mine.size())).ok());
        EXPECT_EQ(mine, want) << "rank " << c.rank() << " of " << n;
      }
    });
  }
}

TEST(InProcessCommunicatorTest, AllGatherBroadcastAndBarrier) {
  InProcessGroup group(4);
  OnEveryRank(group, [&](Communicator& c) {
    const std::vector<int32_t> mine = {c.rank(), 10 * c.rank(), 100 * c.rank()};
    std::vector<int32_t> all(12, -1);
    ASSERT_TRUE(c.AllGather(mine.data(), 12, all.data()).ok());
    EXPECT_EQ(all, (std::vector<int32_t>{0, 0, 0, 1, 10, 100, 2, 20, 200, 3, 30, 300}));
    std::vector<int64_t> value = {c.rank() == 2 ? 42 : -1, c.rank() == 2 ? 7 : -1};
    ASSERT_TRUE(c.Broadcast(value.data(), 16, 2).ok());
    EXPECT_EQ(value, (std::vector<int64_t>{42, 7}));
    ASSERT_TRUE(c.Barrier().ok());
  });
}

TEST(InProcessCommunicatorTest, AllToAllVDeliversEachPeersPiece) {
  // Rank r sends (r + 1) * (p + 1) values r * 100 + p to peer p.
  for (const int n : {1, 3, 4}) {
    InProcessGroup group(n);
    OnEveryRank(group, [&](Communicator& c) {
      const int r = c.rank();
      std::vector<int32_t> send;
      std::vector<int64_t> send_bytes(n), recv_bytes(n);
      for (int p = 0; p < n; ++p) {
        send_bytes[p] = 4 * (r + 1) * (p + 1);
        recv_bytes[p] = 4 * (p + 1) * (r + 1);
        for (int i = 0; i < (r + 1) * (p + 1); ++i) send.push_back(r * 100 + p);
      }
      std::vector<int32_t> recv(std::accumulate(recv_bytes.begin(), recv_bytes.end(), 0) / 4);
      ASSERT_TRUE(c.AllToAllV(send.data(), send_bytes, recv.data(), recv_bytes).ok());
      std::vector<int32_t> want;
      for (int p = 0; p < n; ++p) {
        for (int i = 0; i < (p + 1) * (r + 1); ++i) want.push_back(p * 100 + r);
      }
      EXPECT_EQ(recv, want) << "rank " << r;
    });
  }
}

TEST(InProcessCommunicatorTest, DisagreeingRanksAllGetTheSameError) {
  InProcessGroup group(3);
  std::vector<absl::Status> got(3);
  OnEveryRank(group, [&](Communicator& c) {
    std::vector<float> data(c.rank() == 1 ? 5 : 4, 1.0f);
    got[c.rank()] = c.AllReduceSum(data.data(), static_cast<int64_t>(data.size()));
    // The group is still usable afterwards.
    EXPECT_TRUE(c.Barrier().ok());
  });
  for (const absl::Status& s : got) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find("rank 1 gave 5 where rank 0 gave 4"), std::string::npos) << s;
  }
  OnEveryRank(group, [&](Communicator& c) {
    int32_t x = 0;
    const absl::Status s = c.rank() == 0 ? c.Barrier() : c.Broadcast(&x, 4, 0);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    // Wrong sizes in an all-to-all: every rank gets the same error naming the pair.
    std::vector<int64_t> sizes(3, 4), wrong(3, 8);
    std::vector<int32_t> buf(6, 0);
    const absl::Status a =
        c.AllToAllV(buf.data(), sizes, buf.data() + 3, c.rank() == 2 ? wrong : sizes);
    EXPECT_EQ(a.code(), absl::StatusCode::kInvalidArgument) << a;
    EXPECT_NE(a.message().find("rank 2 expects 8 bytes from rank 0, which sends 4"),
              std::string::npos)
        << a;
  });
}

}  // namespace
}  // namespace dserve::parallel
