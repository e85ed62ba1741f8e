// The tensor-core MLA decode (kernels/cuda/mla/decode.h) against a float64 reference computed on
// the host from the same q_cat and the same cached values (decoded as LatentCache::ReadTokens
// does): h_q 16/64/128, s_q 1/2/4, contexts 1 to 32768, ragged batches over shuffled pages, F32,
// BF16 and FP8 caches, plans without splits and with many. Unused pages, the other layer and the
// slots past each sequence hold NaN; o_lat and the workspace start as NaN, so a stray read or an
// unwritten output shows. Controls check that the tolerance would catch a mask one key off. The
// planner and the argument checks run without a GPU; the rest skip, saying so.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/mla/decode.h"
#include "kernels/latent_cache.h"
#include "tests/gpu/gpu_compare.h"

namespace dserve::kernels::cuda {
namespace {

using dserve::testing::Agreement;
using dserve::testing::Compare;
using dserve::testing::ExpectAgree;

struct Shape {
  int64_t heads = 16, kv_lora = 512, rope = 64, page_size = 64;
};

// One sequence of the batch: num_rows new tokens, the last of which sees `keys` cached tokens.
struct Seq {
  int32_t keys = 0, num_rows = 1;
};

constexpr int kLayers = 2;
constexpr int kLayer = 1;  // layer 0 stays NaN: the cache pointer must be offset to layer 1
constexpr int64_t kSparePages = 3;  // pages no sequence owns (NaN)
constexpr int kH200Sms = 132;

// Inputs of the MMAs are BF16 (q_cat rounded, F32 and dequantised FP8 keys rounded, P rounded),
// accumulation F32; the reference is float64 on the unrounded q_cat and the stored values.
// Scores here are about N(0, 2.6^2) over 576 products, so BF16's 2^-9 relative rounding of each
// factor moves a score by about 4e-3 and each softmax weight by as much, independently per key.
// Outputs are weighted means of latents of up to 3 in magnitude: with a handful of keys the
// largest error is about 1e-2 of the sequence's largest output (the kernel's roundings emulated
// on the CPU over these very cases: BF16 caches up to 9.5e-3, F32 and FP8 up to 1.2e-2, cosine
// at least 0.99998). rel 3e-2 leaves a 2.5x margin, cosine 0.9995 (3% relative RMS error) more;
// a mask one key off among 3 to 70 keys moves outputs by 1e-1 or more (the controls check that
// it fails).
constexpr double kRel = 3e-2;
constexpr double kCosine = 0.9995;

LatentFormat FormatOf(DType dtype) {
  switch (dtype) {
    case DType::kF32: return LatentFormat::kF32;
    case DType::kBF16: return LatentFormat::kBF16;
    default: return LatentFormat::kFp8;
  }
}

Tensor ToDevice(const void* src, size_t bytes) {
  absl::StatusOr<Tensor> t =
      DeviceTensor(DType::kU8, {static_cast<int64_t>(std::max<size_t>(bytes, 16))});
  DSERVE_CHECK(t.ok()) << t.status().ToString();
  if (bytes > 0) {
    const absl::Status s = CopyToDevice(t->raw(), src, bytes);
    DSERVE_CHECK(s.ok()) << s.ToString();
  }
  return *std::move(t);
}

// A device buffer of `bytes`, every byte 0xFF (NaN in F32).
Tensor Poisoned(size_t bytes) {
  absl::StatusOr<Tensor> t =
      DeviceTensor(DType::kU8, {static_cast<int64_t>(std::max<size_t>(bytes, 16))});
  DSERVE_CHECK(t.ok()) << t.status().ToString();
  const absl::Status s = FillDevice(t->raw(), 0xFF, t->bytes());
  DSERVE_CHECK(s.ok()) << s.ToString();
  return *std::move(t);
}

// A step's batch on the host: the cache (all NaN but each sequence's tokens [0, keys)), the
// queries, the block tables, and the values the cache holds, decoded.
struct Batch {
  Shape shape;
  DType dtype = DType::kBF16;
  std::vector<Seq> seqs;
  std::vector<MlaDecodeSequence> desc;
  std::vector<int32_t> block_tables;
  LatentCache cache;
  std::vector<std::vector<float>> values;  // per sequence [keys, kv_lora + rope]
  std::vector<float> q;                    // [rows, heads, kv_lora + rope]
  int64_t rows = 0;
  int64_t dim() const { return shape.kv_lora + shape.rope; }
};

Batch MakeBatch(const Shape& s, DType dtype, const std::vector<Seq>& seqs, uint32_t seed) {
  Batch b;
  b.shape = s;
  b.dtype = dtype;
  b.seqs = seqs;
  std::mt19937 rng(seed);
  // Pages handed out in a shuffled order (non-monotone tables), a few left to nobody.
  int64_t pages = kSparePages;
  for (const Seq& q : seqs) pages += (q.keys + s.page_size - 1) / s.page_size;
  std::vector<int32_t> order(pages);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  b.cache = LatentCache(LatentCacheShape{kLayers, s.kv_lora, s.rope, s.page_size, pages, dtype});
  std::memset(b.cache.storage().raw(), 0xFF, b.cache.storage().bytes());

  std::uniform_real_distribution<float> uniform(-1.5f, 1.5f);
  std::vector<float> token(b.dim());
  int64_t next_page = 0;
  for (const Seq& q : seqs) {
    const int64_t n = (q.keys + s.page_size - 1) / s.page_size;
    const std::vector<int32_t> table(order.begin() + next_page, order.begin() + next_page + n);
    next_page += n;
    b.desc.push_back({static_cast<int32_t>(b.rows), q.num_rows, q.keys,
                      static_cast<int32_t>(b.block_tables.size())});
    b.block_tables.insert(b.block_tables.end(), table.begin(), table.end());
    b.rows += q.num_rows;
    // Latents of about RMS-normalised size, a few groups per sequence scaled up or down so FP8
    // scales differ between groups.
    std::vector<float> group_gain((s.kv_lora + 127) / 128);
    for (float& gain : group_gain) gain = std::uniform_real_distribution<float>(0.5f, 2.0f)(rng);
    for (int32_t k = 0; k < q.keys; ++k) {
      for (int64_t c = 0; c < b.dim(); ++c) {
        token[c] = uniform(rng) * (c < s.kv_lora ? group_gain[c / 128] : 1.0f);
      }
      b.cache.WriteToken(kLayer, table, k, token.data());
    }
    std::vector<float> stored(static_cast<size_t>(q.keys) * b.dim());
    if (q.keys > 0) b.cache.ReadTokens(kLayer, table, 0, q.keys, stored.data());
    b.values.push_back(std::move(stored));
  }
  // Scores of a few units (about N(0, 2.6^2) with the gains above): softmax neither flat nor
  // one-hot.
  const float sigma = 2.0f / std::sqrt(0.75f * static_cast<float>(b.dim()));
  std::normal_distribution<float> normal(0.0f, sigma);
  b.q.resize(static_cast<size_t>(b.rows * s.heads * b.dim()));
  for (float& x : b.q) x = normal(rng);
  return b;
}

// o_lat in float64: each row's softmax over its keys. `shift` moves every row's key count within
// [0, keys] (the controls: -1 drops the newest key, +1 shows one more where there is one).
std::vector<float> Reference(const Batch& b, int shift) {
  const int64_t H = b.shape.heads, L = b.shape.kv_lora, D = b.dim();
  struct Item {
    size_t seq;
    int64_t row;  // within the sequence: token * heads + head
  };
  std::vector<Item> items;
  for (size_t i = 0; i < b.seqs.size(); ++i) {
    for (int64_t m = 0; m < b.seqs[i].num_rows * H; ++m) items.push_back({i, m});
  }
  std::vector<float> out(static_cast<size_t>(b.rows * H * L));
  auto work = [&](size_t first, size_t step) {
    std::vector<double> score, acc(L);
    for (size_t n = first; n < items.size(); n += step) {
      const Item& it = items[n];
      const Seq& seq = b.seqs[it.seq];
      const int64_t global_row = b.desc[it.seq].row_begin * H + it.row;
      const int64_t sees = std::clamp<int64_t>(
          seq.keys - seq.num_rows + it.row / H + 1 + shift, 0, seq.keys);
      const float* q = b.q.data() + global_row * D;
      const float* v = b.values[it.seq].data();
      score.assign(sees, 0.0);
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < sees; ++j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += static_cast<double>(q[d]) * v[j * D + d];
        score[j] = s;
        mx = std::max(mx, s);
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      double total = 0;
      for (int64_t j = 0; j < sees; ++j) {
        const double p = std::exp(score[j] - mx);
        total += p;
        for (int64_t c = 0; c < L; ++c) acc[c] += p * v[j * D + c];
      }
      for (int64_t c = 0; c < L; ++c) {
        out[global_row * L + c] = total > 0 ? static_cast<float>(acc[c] / total) : 0.0f;
      }
    }
  };
  const size_t threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) pool.emplace_back(work, t, threads);
  for (std::thread& t : pool) t.join();
  return out;
}

// The batch's inputs on the device, uploaded once and run under several plans.
class DeviceBatch {
 public:
  explicit DeviceBatch(const Batch& b)
      : b_(b),
        cache_(ToDevice(b.cache.storage().raw(), b.cache.storage().bytes())),
        q_(ToDevice(b.q.data(), b.q.size() * sizeof(float))),
        tables_(ToDevice(b.block_tables.data(), b.block_tables.size() * sizeof(int32_t))) {}

  // o_lat under the plan for a GPU of `sms` multiprocessors; the plan's scalars in *schedule.
  // With `padded`, the plan a CUDA graph takes (PadMlaDecodePlanForGraph).
  std::vector<float> Run(int sms, MlaDecodeSchedule* schedule, bool padded = false) {
    const Shape& s = b_.shape;
    MlaDecodePlan plan;
    EXPECT_EQ(PlanMlaDecode(b_.desc.data(), b_.desc.size(), s.heads, sms, &plan), cudaSuccess);
    if (padded) {
      EXPECT_EQ(PadMlaDecodePlanForGraph(sms, &plan), cudaSuccess);
    }
    *schedule = plan.schedule;
    const Tensor plan_data = Poisoned(plan.data_bytes());
    EXPECT_EQ(UploadMlaDecodePlan(plan, plan_data.data<int32_t>(), nullptr), cudaSuccess);
    const size_t workspace_bytes = MlaDecodeWorkspaceBytes(plan.schedule, s.kv_lora);
    const Tensor workspace = Poisoned(workspace_bytes);
    const size_t out_floats = static_cast<size_t>(b_.rows * s.heads * s.kv_lora);
    const Tensor out = Poisoned(out_floats * sizeof(float));

    MlaDecodeParams p;
    p.q_cat = q_.data<float>();
    p.o_lat = out.data<float>();
    p.rows = b_.rows;
    p.heads = s.heads;
    p.kv_lora = s.kv_lora;
    p.rope_dim = s.rope;
    p.cache = static_cast<const uint8_t*>(cache_.raw()) + b_.cache.ByteOffset(kLayer, 0, 0);
    p.format = FormatOf(b_.dtype);
    p.page_size = s.page_size;
    p.token_bytes = b_.cache.shape().token_bytes();
    p.block_tables = tables_.data<int32_t>();
    p.schedule = plan.schedule;
    p.plan_data = plan_data.data<int32_t>();
    p.workspace = workspace.raw();
    p.workspace_bytes = workspace_bytes;
    const cudaError_t launched = LaunchMlaDecode(p, nullptr);
    EXPECT_EQ(launched, cudaSuccess) << cudaGetErrorName(launched);
    const absl::Status synced = Synchronize();
    EXPECT_TRUE(synced.ok()) << synced;
    std::vector<float> got(out_floats);
    EXPECT_TRUE(CopyToHost(got.data(), out.raw(), got.size() * sizeof(float)).ok());
    return got;
  }

 private:
  const Batch& b_;
  Tensor cache_, q_, tables_;
};

// Per sequence (a long context's outputs are much smaller than a one-key sequence's), all of
// them written and finite, within kRel of the sequence's largest reference output, cosine.
void ExpectAgreesPerSequence(const Batch& b, const std::vector<float>& got,
                             const std::vector<float>& want, const std::string& what) {
  const int64_t per_row = b.shape.heads * b.shape.kv_lora;
  for (size_t i = 0; i < b.seqs.size(); ++i) {
    const int64_t begin = b.desc[i].row_begin * per_row, n = b.seqs[i].num_rows * per_row;
    ExpectAgree(got.data() + begin, want.data() + begin, n,
                std::numeric_limits<double>::infinity(), kRel, kCosine,
                what + ", sequence " + std::to_string(i) + " (keys " +
                    std::to_string(b.seqs[i].keys) + ", s_q " +
                    std::to_string(b.seqs[i].num_rows) + ")");
  }
}

enum class Splits { kAny, kNone, kSome };

struct RunSpec {
  int sms;
  Splits splits;
};

void ExpectMatches(const Shape& s, DType dtype, const std::vector<Seq>& seqs,
                   const std::vector<RunSpec>& runs, uint32_t seed) {
  const Batch b = MakeBatch(s, dtype, seqs, seed);
  const std::vector<float> want = Reference(b, 0);
  DeviceBatch device(b);
  for (const RunSpec& run : runs) {
    const std::string what = std::string(DTypeName(dtype)) + " cache, h_q " +
                             std::to_string(s.heads) + ", plan for " + std::to_string(run.sms) +
                             " SMs";
    SCOPED_TRACE(what);
    MlaDecodeSchedule schedule;
    const std::vector<float> got = device.Run(run.sms, &schedule);
    if (run.splits == Splits::kNone) {
      EXPECT_EQ(schedule.num_split_seqs, 0);
    } else if (run.splits == Splits::kSome) {
      EXPECT_GT(schedule.num_split_seqs, 0);
    }
    ExpectAgreesPerSequence(b, got, want, what);
  }
}

#define DSERVE_SKIP_WITHOUT_GPU()                               \
  if (const absl::Status s = DeviceAvailable(); !s.ok()) {      \
    GTEST_SKIP() << s.message() << " (the GPU tests need one)"; \
  }

// ---- With a GPU ---------------------------------------------------------------------------

// Contexts at and around tile (64-key) boundaries, a single key, and a longer one, in one batch;
// one part (no split), three parts (several sequences per CTA and a few splits), 132 parts
// (every sequence split into pieces of one to a few tiles). s_q = 1, 2, 4; h_q 16, 64, 128
// (row tiles of 16, 32 and 64 rows, and 2 or 4 row tiles per sequence).
TEST(MlaDecodeTest, RaggedBatchesAllFormats) {
  DSERVE_SKIP_WITHOUT_GPU();
  // Three SMs give h_q 64 and 128 (2 and 4 row tiles) a single part: no split there.
  const std::vector<RunSpec> runs = {
      {1, Splits::kNone}, {3, Splits::kAny}, {kH200Sms, Splits::kSome}};
  uint32_t seed = 1;
  for (const DType dtype : {DType::kBF16, DType::kF8E4M3, DType::kF32}) {
    for (const auto& [heads, s_q] : std::vector<std::pair<int64_t, int32_t>>{
             {16, 1}, {16, 2}, {16, 4}, {64, 1}, {128, 1}, {128, 2}}) {
      std::vector<Seq> seqs;
      for (const int32_t keys : {1, 63, 64, 65, 1000}) {
        seqs.push_back({std::max(keys, s_q), s_q});
      }
      Shape shape;
      shape.heads = heads;
      ExpectMatches(shape, dtype, seqs, runs, seed++);
    }
  }
}

// One long sequence fills the GPU only when split: 4096 and 32768 keys at h_q 16, s_q 1 (the
// memory-bound shape), and 4096 keys at h_q 128, s_q 2 (the compute-bound one).
TEST(MlaDecodeTest, LongContexts) {
  DSERVE_SKIP_WITHOUT_GPU();
  Shape h16;
  Shape h128;
  h128.heads = 128;
  uint32_t seed = 100;
  for (const DType dtype : {DType::kBF16, DType::kF8E4M3}) {
    ExpectMatches(h16, dtype, {{32768, 1}}, {{kH200Sms, Splits::kSome}, {1, Splits::kNone}},
                  seed++);
    ExpectMatches(h16, dtype, {{4096, 1}, {4096, 1}, {100, 1}}, {{kH200Sms, Splits::kSome}},
                  seed++);
    ExpectMatches(h128, dtype, {{4096, 2}, {2000, 2}}, {{kH200Sms, Splits::kSome}}, seed++);
  }
}

// A CUDA graph's padded plan (empty parts, a zero-row sequence in the combine's list, the
// largest workspace) computes exactly what the plan it pads computes, bit for bit.
TEST(MlaDecodeTest, PaddedPlanGivesTheSameBits) {
  DSERVE_SKIP_WITHOUT_GPU();
  uint32_t seed = 300;
  for (const DType dtype : {DType::kBF16, DType::kF8E4M3}) {
    for (const auto& [heads, s_q] :
         std::vector<std::pair<int64_t, int32_t>>{{16, 1}, {128, 1}, {128, 2}}) {
      std::vector<Seq> seqs;
      for (const int32_t keys : {4096, 5, 700, 64, 2000}) seqs.push_back({keys, s_q});
      Shape shape;
      shape.heads = heads;
      const Batch b = MakeBatch(shape, dtype, seqs, seed++);
      DeviceBatch device(b);
      for (const int sms : {3, kH200Sms}) {
        SCOPED_TRACE(std::string(DTypeName(dtype)) + ", h_q " + std::to_string(heads) +
                     ", s_q " + std::to_string(s_q) + ", " + std::to_string(sms) + " SMs");
        MlaDecodeSchedule plain, padded;
        const std::vector<float> want = device.Run(sms, &plain);
        const std::vector<float> got = device.Run(sms, &padded, true);
        EXPECT_GE(padded.num_parts, plain.num_parts);
        ASSERT_EQ(got.size(), want.size());
        EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
      }
    }
  }
}

// A tiny model's shapes: kv_lora 128 and rope 16 leave most of the padded 576 columns empty;
// 4 heads (a 16-row tile mostly padding), 16-token pages, and an FP8 token of 164 bytes (copied
// 4 bytes at a time). kv_lora 256 with rope 32: two FP8 scale groups, 328-byte tokens. Rows
// that see no key (a sequence with none, the first of two rows over one key) get zeros.
TEST(MlaDecodeTest, SmallModelShapes) {
  DSERVE_SKIP_WITHOUT_GPU();
  const std::vector<RunSpec> runs = {{1, Splits::kNone}, {kH200Sms, Splits::kSome}};
  uint32_t seed = 200;
  for (const DType dtype : {DType::kBF16, DType::kF8E4M3, DType::kF32}) {
    ExpectMatches({4, 128, 16, 16}, dtype,
                  {{40, 1}, {3, 3}, {0, 1}, {17, 2}, {100, 1}, {1, 2}}, runs, seed++);
    ExpectMatches({8, 256, 32, 32}, dtype, {{300, 1}, {33, 4}, {64, 2}}, runs, seed++);
  }
}

// The tolerance is tight enough to see a mask one key off: against references whose rows see
// one key fewer, or one more where there is one, the same outputs must fail it.
TEST(MlaDecodeTest, ControlsOffByOneKeyFail) {
  DSERVE_SKIP_WITHOUT_GPU();
  Shape shape;
  const Batch b = MakeBatch(shape, DType::kBF16, {{3, 2}, {66, 2}, {70, 2}}, 300);
  DeviceBatch device(b);
  for (const int sms : {1, kH200Sms}) {
    SCOPED_TRACE("plan for " + std::to_string(sms) + " SMs");
    MlaDecodeSchedule schedule;
    const std::vector<float> got = device.Run(sms, &schedule);
    ExpectAgreesPerSequence(b, got, Reference(b, 0), "the right mask");
    for (const int shift : {-1, 1}) {
      const std::vector<float> wrong = Reference(b, shift);
      const int64_t per_row = shape.heads * shape.kv_lora;
      for (size_t i = 0; i < b.seqs.size(); ++i) {
        const int64_t begin = b.desc[i].row_begin * per_row, n = b.seqs[i].num_rows * per_row;
        const Agreement a = Compare(got.data() + begin, wrong.data() + begin, n);
        EXPECT_GT(a.rel, kRel) << "a reference with each row seeing " << shift
                               << " key(s) more still passes, sequence " << i;
      }
    }
  }
}

// ---- Without a GPU ------------------------------------------------------------------------

int64_t Blocks(const MlaDecodeSequence& q) {
  return std::max<int64_t>(1, (q.keys + kMlaDecodeBlockKeys - 1) / kMlaDecodeBlockKeys);
}

// Decodes a plan's data and checks it against the sequences: every key block of every sequence
// in exactly one piece, pieces of a sequence in order with consecutive split indices, the split
// count and slot bases as the combine reads them, and the schedule's scalars.
void ExpectPlanConsistent(const std::vector<MlaDecodeSequence>& seqs, int64_t heads, int sms,
                          const MlaDecodePlan& plan) {
  const MlaDecodeSchedule& s = plan.schedule;
  const int n = static_cast<int>(seqs.size());
  ASSERT_EQ(s.num_seqs, n);
  int64_t max_rows = 0, rows_needed = 0;
  for (const MlaDecodeSequence& q : seqs) {
    max_rows = std::max<int64_t>(max_rows, q.num_rows * heads);
    rows_needed = std::max<int64_t>(rows_needed, q.row_begin + q.num_rows);
  }
  EXPECT_EQ(s.block_m, max_rows <= 16 ? 16 : (max_rows <= 32 ? 32 : 64));
  EXPECT_EQ(s.m_blocks, (max_rows + s.block_m - 1) / s.block_m);
  EXPECT_EQ(s.slot_rows, s.m_blocks * s.block_m);
  EXPECT_EQ(s.rows_needed, rows_needed);
  EXPECT_GE(s.num_parts, 1);
  EXPECT_LE(s.num_parts, std::max(1, sms / s.m_blocks));
  ASSERT_EQ(plan.data.size(), static_cast<size_t>(s.num_parts * 5 + n * 6 + s.num_split_seqs));
  const int32_t* parts = plan.data.data();
  const int32_t* seq_data = parts + s.num_parts * 5;
  const int32_t* split_seqs = seq_data + n * 6;

  std::vector<int64_t> covered(n, 0);  // blocks planned so far, in order
  std::vector<int32_t> pieces(n, 0);
  for (int p = 0; p < s.num_parts; ++p) {
    const int32_t* part = parts + p * 5;
    ASSERT_LE(part[0], part[2]) << "part " << p;
    ASSERT_GE(part[0], 0);
    ASSERT_LT(part[2], n);
    for (int i = part[0]; i <= part[2]; ++i) {
      const int64_t begin = i == part[0] ? part[1] : 0;
      const int64_t end = i == part[2] ? part[3] : Blocks(seqs[i]);
      EXPECT_EQ(begin, covered[i]) << "part " << p << ", sequence " << i << ": a gap or overlap";
      EXPECT_LT(begin, end) << "part " << p << ", sequence " << i << ": an empty piece";
      EXPECT_EQ(i == part[0] ? part[4] : 0, pieces[i]) << "part " << p << ": split index";
      covered[i] = end;
      ++pieces[i];
    }
  }
  int64_t slots = 0, max_split_rows = 0;
  std::vector<int32_t> want_split_seqs;
  for (int i = 0; i < n; ++i) {
    const int32_t* q = seq_data + i * 6;
    EXPECT_EQ(covered[i], Blocks(seqs[i])) << "sequence " << i << " not fully planned";
    EXPECT_EQ(q[0], seqs[i].row_begin);
    EXPECT_EQ(q[1], seqs[i].num_rows);
    EXPECT_EQ(q[2], seqs[i].keys);
    EXPECT_EQ(q[3], seqs[i].table_offset);
    EXPECT_EQ(q[4], pieces[i]) << "sequence " << i;
    if (pieces[i] > 1) {
      EXPECT_EQ(q[5], slots) << "sequence " << i;
      slots += pieces[i];
      want_split_seqs.push_back(i);
      max_split_rows = std::max<int64_t>(max_split_rows, seqs[i].num_rows * heads);
    }
  }
  EXPECT_EQ(s.num_slots, slots);
  EXPECT_EQ(s.max_split_rows, max_split_rows);
  EXPECT_EQ(std::vector<int32_t>(split_seqs, split_seqs + s.num_split_seqs), want_split_seqs);
  const size_t slot_rows = static_cast<size_t>(slots) * s.slot_rows;
  EXPECT_EQ(MlaDecodeWorkspaceBytes(s, 512), slot_rows * (512 + 2) * sizeof(float));
}

TEST(MlaDecodePlanTest, EveryKeyBlockPlannedOnce) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 40);
    const int64_t heads = std::vector<int64_t>{1, 4, 16, 64, 128}[rng() % 5];
    const int sms = std::vector<int>{1, 2, 7, 132, 1000}[rng() % 5];
    std::vector<MlaDecodeSequence> seqs;
    int32_t rows = 0, table = 0;
    for (int i = 0; i < n; ++i) {
      const int32_t num_rows = 1 + static_cast<int32_t>(rng() % 4);
      const int32_t keys = trial % 3 == 0 ? static_cast<int32_t>(rng() % 70)
                                          : static_cast<int32_t>(rng() % 9000);
      seqs.push_back({rows, num_rows, keys, table});
      rows += num_rows;
      table += (keys + 63) / 64;
    }
    MlaDecodePlan plan;
    ASSERT_EQ(PlanMlaDecode(seqs.data(), seqs.size(), heads, sms, &plan), cudaSuccess);
    SCOPED_TRACE("trial " + std::to_string(trial));
    ExpectPlanConsistent(seqs, heads, sms, plan);
  }
}

// A single long sequence is cut into pieces of (nearly) equal size, as many as SMs allow:
// 32768 keys (512 blocks) at h_q 16 into pieces of at most ceil(512 / 132) = 4 blocks; at h_q
// 128, s_q 2 (256 rows: 4 row tiles, so 33 parts) 4096 keys into pieces of 2 blocks.
TEST(MlaDecodePlanTest, LongSequenceIsSplitEvenly) {
  struct Want {
    MlaDecodeSequence seq;
    int64_t heads;
    int32_t block_m, m_blocks, max_piece, parts;
  };
  for (const Want& w : {Want{{0, 1, 32768, 0}, 16, 16, 1, 4, 128},
                        Want{{0, 2, 4096, 0}, 128, 64, 4, 2, 32}}) {
    MlaDecodePlan plan;
    ASSERT_EQ(PlanMlaDecode(&w.seq, 1, w.heads, kH200Sms, &plan), cudaSuccess);
    ExpectPlanConsistent({w.seq}, w.heads, kH200Sms, plan);
    EXPECT_EQ(plan.schedule.block_m, w.block_m);
    EXPECT_EQ(plan.schedule.m_blocks, w.m_blocks);
    EXPECT_EQ(plan.schedule.num_parts, w.parts);
    for (int p = 0; p < plan.schedule.num_parts; ++p) {
      const int32_t* part = plan.data.data() + p * 5;
      EXPECT_LE(part[3] - part[1], w.max_piece) << "part " << p;
    }
  }
}

// A graph's padded plan: one shape for every key count, the same parts and splits as the plan
// it pads, empty extra parts, and every combine entry past the split sequences naming a
// sequence of zero rows.
TEST(MlaDecodePlanTest, PaddedPlansHaveOneShapeAndTheSameWork) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const int n = 1 + static_cast<int>(rng() % 40);
    const int32_t num_rows = 1 + static_cast<int32_t>(rng() % 3);
    const int64_t heads = std::vector<int64_t>{16, 128}[rng() % 2];
    const int sms = std::vector<int>{7, 132}[rng() % 2];
    MlaDecodeSchedule first;
    size_t first_size = 0;
    for (int variant = 0; variant < 3; ++variant) {
      std::vector<MlaDecodeSequence> seqs;
      for (int i = 0; i < n; ++i) {
        const int32_t keys = variant == 0 ? num_rows : static_cast<int32_t>(rng() % 20000) + num_rows;
        seqs.push_back({i * num_rows, num_rows, keys, i * 400});
      }
      MlaDecodePlan plan;
      ASSERT_EQ(PlanMlaDecode(seqs.data(), seqs.size(), heads, sms, &plan), cudaSuccess);
      MlaDecodePlan padded = plan;
      ASSERT_EQ(PadMlaDecodePlanForGraph(sms, &padded), cudaSuccess);
      const MlaDecodeSchedule& u = plan.schedule;
      const MlaDecodeSchedule& p = padded.schedule;
      if (variant == 0) {
        first = p;
        first_size = padded.data.size();
      }
      EXPECT_EQ(padded.data.size(), first_size);
      EXPECT_EQ(p.num_parts, first.num_parts);
      EXPECT_EQ(p.num_seqs, first.num_seqs);
      EXPECT_EQ(p.num_split_seqs, first.num_split_seqs);
      EXPECT_EQ(p.num_slots, first.num_slots);
      EXPECT_EQ(p.max_split_rows, first.max_split_rows);
      EXPECT_EQ(p.block_m, u.block_m);
      EXPECT_EQ(p.m_blocks, u.m_blocks);
      EXPECT_EQ(p.rows_needed, u.rows_needed);
      EXPECT_EQ(p.num_seqs, n + 1);
      EXPECT_EQ(p.num_split_seqs, n);
      EXPECT_EQ(MlaDecodeWorkspaceBytes(p, 512), MlaDecodeWorkspaceBytes(first, 512));
      // The real parts are the plan's; the rest are empty.
      const int32_t* pp = padded.data.data();
      for (int i = 0; i < u.num_parts * 5; ++i) ASSERT_EQ(pp[i], plan.data[i]) << "part field " << i;
      for (int q = u.num_parts; q < p.num_parts; ++q) EXPECT_GT(pp[q * 5], pp[q * 5 + 2]);
      // Sequences unchanged, then the zero-row one.
      const int32_t* ps = pp + p.num_parts * 5;
      const int32_t* us = plan.data.data() + u.num_parts * 5;
      for (int i = 0; i < n * 6; ++i) ASSERT_EQ(ps[i], us[i]) << "sequence field " << i;
      EXPECT_EQ(ps[n * 6 + 1], 0) << "the padding sequence has no rows";
      // Combine entries: the split sequences, then the padding sequence.
      const int32_t* splits = ps + p.num_seqs * 6;
      const int32_t* usplits = us + n * 6;
      for (int i = 0; i < n; ++i) {
        EXPECT_EQ(splits[i], i < u.num_split_seqs ? usplits[i] : n) << "combine entry " << i;
      }
      // Every partial slot the split sequences use fits the padded workspace.
      for (int i = 0; i < n; ++i) {
        if (us[i * 6 + 4] > 1) {
          EXPECT_LE(us[i * 6 + 5] + us[i * 6 + 4], p.num_slots);
        }
      }
    }
  }
  MlaDecodePlan empty;
  ASSERT_EQ(PlanMlaDecode(nullptr, 0, 16, 132, &empty), cudaSuccess);
  EXPECT_EQ(PadMlaDecodePlanForGraph(132, &empty), cudaErrorInvalidValue) << "no sequence";
}

// A batch of equal sequences that fits the GPU one sequence per part is not split.
TEST(MlaDecodePlanTest, EqualSequencesAreNotSplit) {
  std::vector<MlaDecodeSequence> seqs;
  for (int32_t i = 0; i < 128; ++i) seqs.push_back({i, 1, 4096, 64 * i});
  MlaDecodePlan plan;
  ASSERT_EQ(PlanMlaDecode(seqs.data(), seqs.size(), 128, kH200Sms, &plan), cudaSuccess);
  ExpectPlanConsistent(seqs, 128, kH200Sms, plan);
  EXPECT_EQ(plan.schedule.num_split_seqs, 0);
  EXPECT_EQ(MlaDecodeWorkspaceBytes(plan.schedule, 512), 0u);
}

TEST(MlaDecodePlanTest, RejectsBadSequences) {
  MlaDecodePlan plan;
  const MlaDecodeSequence good{0, 1, 10, 0};
  EXPECT_EQ(PlanMlaDecode(&good, 1, 16, 132, &plan), cudaSuccess);
  EXPECT_EQ(PlanMlaDecode(&good, 1, 0, 132, &plan), cudaErrorInvalidValue) << "no heads";
  EXPECT_EQ(PlanMlaDecode(&good, 1, 16, 0, &plan), cudaErrorInvalidValue) << "no SMs";
  EXPECT_EQ(PlanMlaDecode(&good, 1, 16, 132, nullptr), cudaErrorInvalidValue) << "no plan";
  EXPECT_EQ(PlanMlaDecode(nullptr, 1, 16, 132, &plan), cudaErrorInvalidValue) << "no sequences";
  for (const MlaDecodeSequence& bad :
       {MlaDecodeSequence{0, 0, 10, 0}, MlaDecodeSequence{0, 1, -1, 0},
        MlaDecodeSequence{-1, 1, 10, 0}, MlaDecodeSequence{0, 1, 10, -1},
        MlaDecodeSequence{0, 1 << 28, 10, 0}}) {
    EXPECT_EQ(PlanMlaDecode(&bad, 1, 16, 132, &plan), cudaErrorInvalidValue)
        << bad.row_begin << " " << bad.num_rows << " " << bad.keys << " " << bad.table_offset;
  }
  EXPECT_EQ(PlanMlaDecode(nullptr, 0, 16, 132, &plan), cudaSuccess) << "an empty batch";
  EXPECT_EQ(plan.schedule.num_seqs, 0);
  EXPECT_TRUE(plan.data.empty());
}

// Argument checks return before any CUDA call, so they run without a GPU. No case below has
// valid arguments and a non-empty plan: the host pointers in it are never launched on.
TEST(MlaDecodeArgsTest, RejectsBadArgumentsAndAcceptsAnEmptyPlan) {
  MlaDecodePlan empty_plan;
  ASSERT_EQ(PlanMlaDecode(nullptr, 0, 16, 132, &empty_plan), cudaSuccess);
  MlaDecodeParams empty;
  empty.heads = 16;
  empty.kv_lora = 512;
  empty.rope_dim = 64;
  empty.format = LatentFormat::kBF16;
  empty.token_bytes = LatentTokenBytes(LatentFormat::kBF16, 512, 64);
  empty.schedule = empty_plan.schedule;
  EXPECT_EQ(LaunchMlaDecode(empty, nullptr), cudaSuccess);
  EXPECT_EQ(LatentTokenBytes(LatentFormat::kFp8, 512, 64), 656);
  EXPECT_EQ(LatentTokenBytes(LatentFormat::kBF16, 512, 64), 1152);
  EXPECT_EQ(LatentTokenBytes(LatentFormat::kF32, 512, 64), 2304);
  EXPECT_EQ(LatentTokenBytes(LatentFormat::kFp8, 128, 16), 164);

  // A plan with splits: one sequence over 132 SMs.
  const MlaDecodeSequence seq{0, 1, 4096, 0};
  MlaDecodePlan plan;
  ASSERT_EQ(PlanMlaDecode(&seq, 1, 16, kH200Sms, &plan), cudaSuccess);
  ASSERT_GT(plan.schedule.num_split_seqs, 0);
  alignas(16) static float floats[64];
  alignas(16) static int32_t ints[64];
  MlaDecodeParams full = empty;
  full.rows = 1;
  full.q_cat = floats;
  full.o_lat = floats;
  full.cache = floats;
  full.block_tables = ints;
  full.schedule = plan.schedule;
  full.plan_data = ints;
  full.workspace = floats;
  full.workspace_bytes = MlaDecodeWorkspaceBytes(plan.schedule, 512);
  auto expect_invalid = [](const MlaDecodeParams& p, const char* what) {
    EXPECT_EQ(LaunchMlaDecode(p, nullptr), cudaErrorInvalidValue) << what;
  };
  MlaDecodeParams p = full;
  p.kv_lora = 0;
  expect_invalid(p, "kv_lora 0");
  p = full;
  p.kv_lora = 520;
  p.token_bytes = LatentTokenBytes(LatentFormat::kBF16, 520, 64);
  expect_invalid(p, "kv_lora above 512");
  p = full;
  p.kv_lora = 504;
  p.token_bytes = LatentTokenBytes(LatentFormat::kBF16, 504, 64);
  expect_invalid(p, "kv_lora not a multiple of 16");
  p = full;
  p.rope_dim = 8;
  p.token_bytes = LatentTokenBytes(LatentFormat::kBF16, 512, 8);
  expect_invalid(p, "rope not a multiple of 16");
  p = full;
  p.rope_dim = 80;
  p.token_bytes = LatentTokenBytes(LatentFormat::kBF16, 512, 80);
  expect_invalid(p, "rope above 64");
  p = full;
  p.page_size = 0;
  expect_invalid(p, "page_size 0");
  p = full;
  p.token_bytes = 1150;
  expect_invalid(p, "token_bytes not the format's");
  p = full;
  p.format = LatentFormat::kFp8;
  expect_invalid(p, "token_bytes of BF16 for an FP8 cache");
  p = full;
  p.format = static_cast<LatentFormat>(7);
  expect_invalid(p, "unknown format");
  p = full;
  p.heads = 128;
  expect_invalid(p, "heads other than the plan's");
  p = full;
  p.rows = 0;
  expect_invalid(p, "fewer rows than the plan's sequences");
  p = full;
  p.q_cat = nullptr;
  expect_invalid(p, "no q_cat");
  p = full;
  p.o_lat = nullptr;
  expect_invalid(p, "no o_lat");
  p = full;
  p.cache = nullptr;
  expect_invalid(p, "no cache");
  p = full;
  p.block_tables = nullptr;
  expect_invalid(p, "no block tables");
  p = full;
  p.plan_data = nullptr;
  expect_invalid(p, "no plan data");
  p = full;
  p.workspace = nullptr;
  expect_invalid(p, "no workspace for a split plan");
  p = full;
  p.workspace_bytes -= 4;
  expect_invalid(p, "workspace too small");
  p = full;
  p.o_lat = floats + 1;
  expect_invalid(p, "o_lat not 16-byte aligned");
  p = full;
  p.cache = reinterpret_cast<const uint8_t*>(floats) + 8;
  expect_invalid(p, "BF16 cache not 16-byte aligned");
  p = full;
  p.schedule.block_m = 48;
  expect_invalid(p, "a schedule not from the planner");
}

}  // namespace
}  // namespace dserve::kernels::cuda
