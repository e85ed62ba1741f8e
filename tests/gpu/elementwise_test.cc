// The CUDA backend's elementwise and row-wise kernels against the CPU ops on the same random
// inputs (F32 activations: tolerances of float rounding). Outputs are poisoned with NaN first,
// so an element the kernel never writes fails. Skipped, with a message, without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/elementwise.h"
#include "tests/gpu/gpu_compare.h"

namespace dserve::kernels::cuda {
namespace {

using dserve::testing::ExpectAgree;

class CudaElementwiseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const absl::Status s = DeviceAvailable(); !s.ok()) GTEST_SKIP() << s.message() << " (the GPU tests need one)";
  }

  Tensor Random(std::vector<int64_t> shape, float mean = 0.0f, float stddev = 1.0f) {
    Tensor t = Tensor::Zeros(DType::kF32, std::move(shape));
    std::normal_distribution<float> d(mean, stddev);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng_);
    return t;
  }

  // A device copy of `host` and a NaN-poisoned device tensor of the same shape.
  Tensor Up(const Tensor& host) {
    absl::StatusOr<Tensor> t = Upload(host);
    EXPECT_TRUE(t.ok()) << t.status();
    return *t;
  }
  Tensor Poisoned(const std::vector<int64_t>& shape) {
    absl::StatusOr<Tensor> t = DeviceTensor(DType::kF32, shape);
    EXPECT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE(FillDevice(t->raw(), 0xFF, t->bytes()).ok());
    return *t;
  }
  Tensor Down(const Tensor& device) {
    EXPECT_TRUE(Synchronize().ok());
    absl::StatusOr<Tensor> t = Download(device);
    EXPECT_TRUE(t.ok()) << t.status();
    return *t;
  }

  cpu::CpuOps cpu_{1};
  std::mt19937 rng_{42};
};

TEST_F(CudaElementwiseTest, RmsNormMatchesCpu) {
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{1, 7168}, {7, 256}, {33, 1536},
                                   {5, 100}}) {
    const Tensor x = Random({rows, cols}, 0.3f, 2.0f);
    const Tensor w = Random({cols}, 1.0f, 0.1f);
    Tensor want = Tensor::Zeros(DType::kF32, {rows, cols});
    cpu_.RmsNorm(x, w, 1e-6f, want);
    const Tensor dx = Up(x), dw = Up(w), dout = Poisoned({rows, cols});
    ASSERT_EQ(LaunchRmsNorm(dx.data<float>(), dw.data<float>(), 1e-6f, rows, cols,
                            dout.data<float>(), nullptr),
              cudaSuccess);
    const Tensor got = Down(dout);
    ExpectAgree(got.data<float>(), want.data<float>(), want.numel(), 1e-4, 2e-6, 0.999999,
                "RmsNorm " + std::to_string(rows) + "x" + std::to_string(cols));
  }
}

TEST_F(CudaElementwiseTest, AddRmsNormMatchesCpu) {
  const int64_t rows = 9, cols = 7168;
  Tensor residual = Random({rows, cols});
  const Tensor delta = Random({rows, cols}, 0.0f, 0.5f);
  const Tensor w = Random({cols}, 1.0f, 0.1f);
  const Tensor dres = Up(residual), ddelta = Up(delta), dw = Up(w), dout = Poisoned({rows, cols});
  Tensor want = Tensor::Zeros(DType::kF32, {rows, cols});
  cpu_.AddRmsNorm(residual, delta, w, 1e-6f, want);
  ASSERT_EQ(LaunchAddRmsNorm(dres.data<float>(), ddelta.data<float>(), dw.data<float>(), 1e-6f,
                             rows, cols, dout.data<float>(), nullptr),
            cudaSuccess);
  const Tensor got = Down(dout), got_res = Down(dres);
  ExpectAgree(got.data<float>(), want.data<float>(), want.numel(), 1e-4, 2e-6, 0.999999,
              "AddRmsNorm output");
  ExpectAgree(got_res.data<float>(), residual.data<float>(), residual.numel(), 1e-6, 1e-7,
              0.9999999, "AddRmsNorm residual");
}

TEST_F(CudaElementwiseTest, SiluMulAndAddMatchCpu) {
  const int64_t n = 3 * 4096 + 7;
  const Tensor gate = Random({n}, 0.0f, 3.0f), up = Random({n});
  const Tensor dgate = Up(gate), dup = Up(up), dout = Poisoned({n});
  Tensor want = Tensor::Zeros(DType::kF32, {n});
  cpu_.SiluMul(gate, up, want);
  ASSERT_EQ(LaunchSiluMul(dgate.data<float>(), dup.data<float>(), n, dout.data<float>(), nullptr),
            cudaSuccess);
  Tensor got = Down(dout);
  ExpectAgree(got.data<float>(), want.data<float>(), n, 1e-5, 2e-6, 0.999999, "SiluMul");

  Tensor x = Tensor::Zeros(DType::kF32, {n});  // CPU: gate + up, in place on a copy
  std::memcpy(x.raw(), gate.raw(), gate.bytes());
  cpu_.Add(x, up);
  ASSERT_EQ(LaunchAdd(dgate.data<float>(), dup.data<float>(), n, nullptr), cudaSuccess);
  got = Down(dgate);
  ExpectAgree(got.data<float>(), x.data<float>(), n, 0.0, 0.0, 0.9999999, "Add");
}

TEST_F(CudaElementwiseTest, EmbeddingGathersBf16AndF32Rows) {
  const int64_t vocab = 1000, cols = 7168, rows = 6;
  const std::vector<int32_t> ids = {0, 999, 17, 17, 512, 3};
  const Tensor table32 = Random({vocab, cols});
  Tensor table16 = Tensor::Zeros(DType::kBF16, {vocab, cols});
  for (int64_t i = 0; i < table32.numel(); ++i) {
    const uint16_t h = FloatToBf16(table32.data<float>()[i]);
    std::memcpy(static_cast<char*>(table16.raw()) + 2 * i, &h, 2);
  }
  Tensor ids_host = Tensor::Zeros(DType::kI32, {rows});
  std::memcpy(ids_host.raw(), ids.data(), ids.size() * sizeof(int32_t));
  const Tensor dids = Up(ids_host);
  for (const Tensor* table : {&table32, static_cast<const Tensor*>(&table16)}) {
    Weight w;
    w.dtype = table->dtype();
    w.rows = vocab;
    w.cols = cols;
    w.data = table->raw();
    Tensor want = Tensor::Zeros(DType::kF32, {rows, cols});
    cpu_.Embedding(w, ids, want);
    const Tensor dtable = Up(*table), dout = Poisoned({rows, cols});
    ASSERT_EQ(LaunchEmbedding(dtable.raw(),
                              table->dtype() == DType::kBF16 ? TableType::kBF16 : TableType::kF32,
                              cols, dids.data<int32_t>(), rows, dout.data<float>(), nullptr),
              cudaSuccess);
    const Tensor got = Down(dout);
    ExpectAgree(got.data<float>(), want.data<float>(), want.numel(), 0.0, 0.0, 0.9999999,
                std::string("Embedding ") + std::string(DTypeName(table->dtype())));
  }
}

}  // namespace
}  // namespace dserve::kernels::cuda
