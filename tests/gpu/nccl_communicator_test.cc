// NcclCommunicator with one rank (NCCL cannot put two ranks on one GPU): every collective on
// device buffers, on the stream of a CudaOps, against what one rank must get (its own data).
// Multi-rank runs need a machine with several GPUs. Skipped without a GPU.
#include "parallel/nccl_communicator.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_memory.h"

namespace dserve::parallel {
namespace {

using kernels::cuda::CudaOps;
using kernels::cuda::DeviceAvailable;

template <typename T>
std::vector<T> Read(CudaOps& ops, const Tensor& t) {
  std::vector<T> out(t.numel());
  ops.CopyToHost(t, out.data());
  EXPECT_TRUE(ops.TakeError().ok());
  return out;
}

TEST(NcclCommunicatorTest, OneRankEveryCollective) {
  if (const absl::Status s = DeviceAvailable(); !s.ok()) {
    GTEST_SKIP() << s.message() << " (the GPU tests need one)";
  }
  auto ops = CudaOps::Create();
  ASSERT_TRUE(ops.ok()) << ops.status();
  auto id = NewNcclId();
  ASSERT_TRUE(id.ok()) << id.status();
  auto comm = NcclCommunicator::Create(*id, 0, 1, 0, (*ops)->stream());
  ASSERT_TRUE(comm.ok()) << comm.status();
  EXPECT_EQ((*comm)->rank(), 0);
  EXPECT_EQ((*comm)->size(), 1);

  Tensor host = Tensor::Zeros(DType::kF32, {1000});
  std::iota(host.data<float>(), host.data<float>() + 1000, -3.5f);
  Tensor data = host;
  ASSERT_TRUE((*ops)->PlaceTensor(data).ok());
  ASSERT_TRUE((*comm)->AllReduceSum(data.data<float>(), 1000).ok());
  EXPECT_EQ(Read<float>(**ops, data), std::vector<float>(host.data<float>(),
                                                         host.data<float>() + 1000));

  Tensor gathered = (*ops)->Empty(DType::kF32, {1000});
  ASSERT_TRUE((*comm)->AllGather(data.raw(), 4000, gathered.raw()).ok());
  EXPECT_EQ(Read<float>(**ops, gathered), Read<float>(**ops, data));

  Tensor moved = (*ops)->Empty(DType::kF32, {1000});
  const std::vector<int64_t> bytes = {4000};
  ASSERT_TRUE((*comm)->AllToAllV(data.raw(), bytes, moved.raw(), bytes).ok());
  EXPECT_EQ(Read<float>(**ops, moved), Read<float>(**ops, data));

  ASSERT_TRUE((*comm)->Broadcast(data.raw(), 4000, 0).ok());
  EXPECT_EQ(Read<float>(**ops, data)[7], 3.5f);
  ASSERT_TRUE((*comm)->Barrier().ok());
  EXPECT_EQ((*comm)->Broadcast(data.raw(), 4, 1).code(), absl::StatusCode::kInvalidArgument);
  const std::vector<int64_t> two = {4, 4};
  EXPECT_EQ((*comm)->AllToAllV(data.raw(), two, moved.raw(), two).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace dserve::parallel
