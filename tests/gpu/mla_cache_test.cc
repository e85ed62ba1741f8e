// The GPU latent-cache write against the CPU op: two sequences in one batch (a decode-like
// chunk after 70 cached tokens, a 130-token prefill) over scattered pages, DeepSeek-V3's
// kv_lora 512 + rope 64, BF16, F32 and FP8 caches. The device cache is poisoned first: every
// written slot must match the CPU's, every other byte must be untouched. Skipped without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/mla_cache.h"
#include "tests/gpu/gpu_compare.h"

namespace dserve::kernels::cuda {
namespace {

TEST(CudaMlaCacheTest, WritesTheSameLatentsAsTheCpu) {
  if (const absl::Status s = DeviceAvailable(); !s.ok()) GTEST_SKIP() << s.message() << " (the GPU tests need one)";
  const int64_t kv_lora = 512, rope = 64, page = 64, pages = 6, positions = 256;
  const int layers = 2, layer = 1;
  const std::vector<int32_t> table_a = {4, 1}, table_b = {0, 5, 2};
  AttentionBatch batch;
  std::vector<int32_t> pos;
  for (int64_t i = 0; i < 5; ++i) pos.push_back(static_cast<int32_t>(70 + i));
  for (int64_t i = 0; i < 130; ++i) pos.push_back(static_cast<int32_t>(i));
  batch.positions = pos;
  batch.sequences = {{0, 5, 70, table_a, MlaMode::kAbsorbed}, {5, 130, 0, table_b, MlaMode::kNaive}};
  const int64_t rows = 135, dim = kv_lora + rope;

  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensor kv_a = Tensor::Zeros(DType::kF32, {rows, dim});
  for (int64_t i = 0; i < kv_a.numel(); ++i) kv_a.data<float>()[i] = normal(rng);
  Tensor kv_norm = Tensor::Zeros(DType::kF32, {kv_lora});
  for (int64_t i = 0; i < kv_lora; ++i) kv_norm.data<float>()[i] = 1.0f + 0.1f * normal(rng);
  std::vector<float> cos(positions * rope / 2), sin(positions * rope / 2);
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t i = 0; i < rope / 2; ++i) {
      const double angle = p * std::pow(10000.0, -2.0 * i / rope);
      cos[p * rope / 2 + i] = static_cast<float>(std::cos(angle) * 1.1);  // a YaRN-like mscale
      sin[p * rope / 2 + i] = static_cast<float>(std::sin(angle) * 1.1);
    }
  }
  const RopeTable table{cos.data(), sin.data(), positions, rope};


  auto up = [](const void* p, size_t bytes) {
    absl::StatusOr<Tensor> t = DeviceTensor(DType::kU8, {static_cast<int64_t>(bytes)});
    EXPECT_TRUE(t.ok()) << t.status();
    EXPECT_TRUE(CopyToDevice(t->raw(), p, bytes).ok());
    return *t;
  };
  const Tensor dkv = up(kv_a.raw(), kv_a.bytes()), dnorm = up(kv_norm.raw(), kv_norm.bytes());
  const Tensor dcos = up(cos.data(), cos.size() * 4), dsin = up(sin.data(), sin.size() * 4);
  const Tensor dpos = up(pos.data(), pos.size() * 4);

  for (const DType dtype : {DType::kBF16, DType::kF32, DType::kF8E4M3}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    LatentCacheShape shape{layers, kv_lora, rope, page, pages, dtype};
    LatentCache cpu_cache(shape);
    cpu::CpuOps(1).MlaWriteCache(kv_a, kv_norm, 1e-6f, table, batch, cpu_cache, layer);
    // Each row's slot, as the byte offset LatentCache uses (from the whole cache's start).
    std::vector<int64_t> offsets;
    for (const SequenceSlice& s : batch.sequences) {
      for (int64_t i = 0; i < s.num_tokens; ++i) {
        const int64_t index = s.cached_tokens + i;
        offsets.push_back(
            cpu_cache.ByteOffset(layer, s.block_table[index / page], index % page));
      }
    }
    const Tensor doff = up(offsets.data(), offsets.size() * 8);
    const int64_t token_bytes = shape.token_bytes();
    const int64_t bytes = layers * pages * page * token_bytes;
    absl::StatusOr<Tensor> dcache = DeviceTensor(DType::kU8, {bytes});
    ASSERT_TRUE(dcache.ok());
    ASSERT_TRUE(FillDevice(dcache->raw(), 0xFF, dcache->bytes()).ok());
    MlaCacheWrite p;
    p.kv_a = dkv.data<float>();
    p.rows = rows;
    p.kv_lora = kv_lora;
    p.rope_dim = rope;
    p.kv_norm = dnorm.data<float>();
    p.cos = dcos.data<float>();
    p.sin = dsin.data<float>();
    p.positions = dpos.data<int32_t>();
    p.slot_offsets = doff.data<int64_t>();
    p.cache = dcache->raw();
    p.format = dtype == DType::kF32    ? LatentFormat::kF32
               : dtype == DType::kBF16 ? LatentFormat::kBF16
                                       : LatentFormat::kFp8;
    ASSERT_EQ(LaunchMlaWriteCache(p, nullptr), cudaSuccess);
    ASSERT_TRUE(Synchronize().ok());
    std::vector<uint8_t> got(dcache->bytes());
    ASSERT_TRUE(CopyToHost(got.data(), dcache->raw(), got.size()).ok());

    // Decode the device's bytes with the host's reader: copy them into a host cache.
    LatentCache got_cache(shape);
    std::memcpy(got_cache.storage().raw(), got.data(), got.size());
    std::vector<char> written(bytes, 0);
    std::vector<float> want_rows(rows * dim), got_rows(rows * dim);
    int64_t r = 0;
    for (const SequenceSlice& s : batch.sequences) {
      cpu_cache.ReadTokens(layer, s.block_table, s.cached_tokens, s.num_tokens,
                           want_rows.data() + r * dim);
      got_cache.ReadTokens(layer, s.block_table, s.cached_tokens, s.num_tokens,
                           got_rows.data() + r * dim);
      r += s.num_tokens;
    }
    for (int64_t row = 0; row < rows; ++row) {
      std::fill_n(written.begin() + offsets[row], token_bytes, 1);
    }
    // BF16: one rounding step apart at most (2^-8 relative); F32: float rounding. FP8: the
    // normalised values may differ in their last F32 bit (another summation order), which can
    // move a value across an E4M3 rounding boundary: one step in E4M3's top binade [256, 448]
    // is 32 x scale = amax / 14, so 1/14 of the largest value bounds it.
    const double rel = dtype == DType::kBF16 ? 8e-3 : dtype == DType::kF32 ? 2e-6 : 1.0 / 14;
    dserve::testing::ExpectAgree(got_rows.data(), want_rows.data(), rows * dim, 1e30, rel,
                                 dtype == DType::kF8E4M3 ? 0.999 : 0.99999, "cached latents");
    if (dtype == DType::kF8E4M3) {
      // Nearly every byte equals the CPU's encoding: a differing one is a boundary case.
      int64_t same = 0, total = 0;
      const uint8_t* want_bytes = static_cast<const uint8_t*>(cpu_cache.storage().raw());
      for (int64_t row = 0; row < rows; ++row) {
        for (int64_t b = 0; b < token_bytes; ++b, ++total) {
          same += got[offsets[row] + b] == want_bytes[offsets[row] + b];
        }
      }
      EXPECT_GE(same, total * 99 / 100) << same << " of " << total << " bytes as the CPU's";
    }
    int64_t stray = 0;
    for (int64_t b = 0; b < bytes; ++b) stray += !written[b] && got[b] != 0xFF;
    EXPECT_EQ(stray, 0) << "bytes written outside the batch's slots";
  }
}

}  // namespace
}  // namespace dserve::kernels::cuda
