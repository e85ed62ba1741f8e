// LatentCache: the paged store of MLA's compressed KV. For every layer (the MTP layer
// included) and every cached token it holds the normalised latent c_kv [kv_lora_rank] followed
// by the RoPE'd shared key k_pe [qk_rope_head_dim] (pairs rotated in place) — 576 values per
// token per layer in DeepSeek-V3, instead of full per-head K and V. Pages hold `page_size`
// consecutive tokens of one sequence; a sequence's block table maps its logical pages to
// physical ones. Three token formats:
//   F32  — 576 x 4 bytes;
//   BF16 — 576 x 2 = 1,152 bytes (the serving default);
//   FP8  — the latent in E4M3 with one F32 scale per 128 values (value = fp8 * scale, scale =
//          the group's largest magnitude / 448, 1 for a group of zeros), then those scales,
//          then k_pe in BF16: 512 + 4 x 4 + 64 x 2 = 656 bytes (FlashMLA's FP8 layout), so
//          nearly twice the tokens fit. k_pe stays BF16: RoPE'd keys carry position, where
//          rounding costs most.
// The storage lives on the backend's device (Ops::NewLatentCache); the element accessors below
// are for host (CPU backend) storage only.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"
#include "core/tensor.h"

namespace dserve::kernels {

// Naive MLA expands the cached latents to per-head K/V (cheap per query: prefill); absorbed
// MLA folds kv_b into the query and attends in the latent space (cheap per cached token:
// decode). kAuto picks per sequence by arithmetic cost.
enum class MlaMode { kAuto, kNaive, kAbsorbed };

// FP8 caches: latent values per scale, and E4M3's largest finite value.
inline constexpr int64_t kLatentFp8Group = 128;
inline constexpr float kFp8Max = 448.0f;

struct LatentCacheShape {
  int num_layers = 0;
  int64_t kv_lora_rank = 0;
  int64_t rope_dim = 0;
  int64_t page_size = 64;
  int64_t num_pages = 0;
  DType dtype = DType::kF32;  // kF32, kBF16 or kF8E4M3 (the FP8 format above)

  int64_t token_dim() const { return kv_lora_rank + rope_dim; }
  // FP8: the scales per token.
  int64_t fp8_groups() const { return (kv_lora_rank + kLatentFp8Group - 1) / kLatentFp8Group; }
  // Bytes of one cached token of one layer.
  int64_t token_bytes() const {
    if (dtype == DType::kF8E4M3) return kv_lora_rank + fp8_groups() * 4 + rope_dim * 2;
    return token_dim() * DTypeSize(dtype);
  }
  // Bytes of one page across all layers.
  int64_t page_bytes() const { return num_layers * page_size * token_bytes(); }
};

// Whether a cache dtype is one of the three formats.
inline bool IsLatentCacheDType(DType d) {
  return d == DType::kF32 || d == DType::kBF16 || d == DType::kF8E4M3;
}

// The FP8 format of one token: `src` [kv_lora + rope] F32 -> `dst` [token_bytes()]. Every
// backend writes exactly these bytes (the division, then E4M3 rounding to nearest even with
// saturation).
inline void EncodeFp8Token(const LatentCacheShape& s, const float* src, uint8_t* dst) {
  const int64_t L = s.kv_lora_rank;
  uint8_t* scales = dst + L;  // byte addressing: aligned only when kv_lora % 4 == 0
  for (int64_t g = 0; g < s.fp8_groups(); ++g) {
    const int64_t begin = g * kLatentFp8Group, end = std::min(L, begin + kLatentFp8Group);
    float amax = 0.0f;
    for (int64_t c = begin; c < end; ++c) amax = std::max(amax, std::fabs(src[c]));
    const float scale = amax > 0.0f ? amax / kFp8Max : 1.0f;
    for (int64_t c = begin; c < end; ++c) dst[c] = FloatToFp8E4M3(src[c] / scale);
    std::memcpy(scales + 4 * g, &scale, sizeof(float));
  }
  uint8_t* pe = dst + L + s.fp8_groups() * 4;
  for (int64_t c = 0; c < s.rope_dim; ++c) {
    const uint16_t b = FloatToBf16(src[L + c]);
    std::memcpy(pe + 2 * c, &b, sizeof(b));
  }
}

// One FP8 token back to F32 values.
inline void DecodeFp8Token(const LatentCacheShape& s, const uint8_t* src, float* dst) {
  const int64_t L = s.kv_lora_rank;
  for (int64_t g = 0; g < s.fp8_groups(); ++g) {
    float scale;
    std::memcpy(&scale, src + L + g * 4, sizeof(float));
    const int64_t begin = g * kLatentFp8Group, end = std::min(L, begin + kLatentFp8Group);
    for (int64_t c = begin; c < end; ++c) dst[c] = Fp8E4M3ToFloat(src[c]) * scale;
  }
  const uint8_t* pe = src + L + s.fp8_groups() * 4;
  for (int64_t c = 0; c < s.rope_dim; ++c) {
    uint16_t b;
    std::memcpy(&b, pe + 2 * c, sizeof(b));
    dst[L + c] = Bf16ToFloat(b);
  }
}

class LatentCache {
 public:
  LatentCache() = default;
  // Host storage, zeroed: StorageShape(shape) in StorageDType(shape).
  explicit LatentCache(const LatentCacheShape& shape)
      : LatentCache(shape, Tensor::Zeros(StorageDType(shape), StorageShape(shape))) {}
  // Over storage a backend allocated (its device's memory), laid out as above.
  LatentCache(const LatentCacheShape& shape, Tensor storage)
      : shape_(shape), storage_(std::move(storage)) {
    DSERVE_CHECK(IsLatentCacheDType(shape.dtype))
        << "latent cache dtype must be F32, BF16 or F8_E4M3, got " << DTypeName(shape.dtype);
    DSERVE_CHECK(storage_.bytes() == static_cast<size_t>(shape.num_pages * shape.page_bytes()))
        << "latent cache storage of " << storage_.bytes() << " bytes for a shape of "
        << shape.num_pages * shape.page_bytes();
  }
  // F32/BF16 caches are arrays of their values [layers, pages, page_size, token_dim]; FP8
  // tokens mix three types, so that cache is bytes [layers, pages, page_size, token_bytes].
  static DType StorageDType(const LatentCacheShape& s) {
    return s.dtype == DType::kF8E4M3 ? DType::kU8 : s.dtype;
  }
  static std::vector<int64_t> StorageShape(const LatentCacheShape& s) {
    return {s.num_layers, s.num_pages, s.page_size,
            s.dtype == DType::kF8E4M3 ? s.token_bytes() : s.token_dim()};
  }

  const LatentCacheShape& shape() const { return shape_; }
  // StorageShape(shape()) in StorageDType(shape()), on the backend's device.
  const Tensor& storage() const { return storage_; }
  // Byte offset of (layer, page, slot) in storage(), for every format.
  int64_t ByteOffset(int layer, int64_t page, int64_t slot) const {
    return ((layer * shape_.num_pages + page) * shape_.page_size + slot) * shape_.token_bytes();
  }
  // Element offset of (layer, page, slot) in an F32 or BF16 cache's storage().
  int64_t Offset(int layer, int64_t page, int64_t slot) const {
    DSERVE_CHECK(shape_.dtype != DType::kF8E4M3) << "an FP8 cache is addressed in bytes";
    return ((layer * shape_.num_pages + page) * shape_.page_size + slot) * shape_.token_dim();
  }

  // Direct F32 access to one cached token (F32 caches only): the latent, then k_pe.
  float* Token(int layer, int64_t page, int64_t slot) const {
    DSERVE_CHECK(shape_.dtype == DType::kF32 && OnHost()) << "Token() needs an F32 host cache";
    return storage_.data<float>() + Offset(layer, page, slot);
  }
  // Cached token `index` of a sequence with this block table (F32 caches only).
  float* SequenceToken(int layer, std::span<const int32_t> block_table, int64_t index) const {
    return Token(layer, block_table[index / shape_.page_size], index % shape_.page_size);
  }

  // Tokens [begin, begin + count) of a sequence as F32 rows of token_dim() values.
  void ReadTokens(int layer, std::span<const int32_t> block_table, int64_t begin, int64_t count,
                  float* dst) const {
    DSERVE_CHECK(OnHost()) << "ReadTokens() needs a host cache";
    const int64_t D = shape_.token_dim();
    for (int64_t i = 0; i < count; ++i) {
      const uint8_t* src = TokenBytes(layer, block_table, begin + i);
      if (shape_.dtype == DType::kF32) {
        std::memcpy(dst + i * D, src, D * sizeof(float));
      } else if (shape_.dtype == DType::kBF16) {
        const uint16_t* v = reinterpret_cast<const uint16_t*>(src);
        for (int64_t c = 0; c < D; ++c) dst[i * D + c] = Bf16ToFloat(v[c]);
      } else {
        DecodeFp8Token(shape_, src, dst + i * D);
      }
    }
  }
  // Stores token_dim() F32 values as cached token `index` (rounded to nearest even for BF16,
  // encoded for FP8).
  void WriteToken(int layer, std::span<const int32_t> block_table, int64_t index,
                  const float* src) const {
    DSERVE_CHECK(OnHost()) << "WriteToken() needs a host cache";
    const int64_t D = shape_.token_dim();
    uint8_t* dst = TokenBytes(layer, block_table, index);
    if (shape_.dtype == DType::kF32) {
      std::memcpy(dst, src, D * sizeof(float));
    } else if (shape_.dtype == DType::kBF16) {
      uint16_t* v = reinterpret_cast<uint16_t*>(dst);
      for (int64_t c = 0; c < D; ++c) v[c] = FloatToBf16(src[c]);
    } else {
      EncodeFp8Token(shape_, src, dst);
    }
  }
  // Copies page `src` over page `dst` in every layer (copy-on-write of a shared partial page);
  // host storage (device caches copy through Ops::CopyCachePage).
  void CopyPage(int32_t src, int32_t dst) const {
    DSERVE_CHECK(OnHost()) << "CopyPage() needs a host cache";
    const int64_t bytes = shape_.page_size * shape_.token_bytes();
    uint8_t* base = static_cast<uint8_t*>(storage_.raw());
    for (int layer = 0; layer < shape_.num_layers; ++layer) {
      std::memcpy(base + ByteOffset(layer, dst, 0), base + ByteOffset(layer, src, 0), bytes);
    }
  }

 private:
  bool OnHost() const { return storage_.device() == Device::kCpu; }
  uint8_t* TokenBytes(int layer, std::span<const int32_t> block_table, int64_t index) const {
    return static_cast<uint8_t*>(storage_.raw()) +
           ByteOffset(layer, block_table[index / shape_.page_size], index % shape_.page_size);
  }

  LatentCacheShape shape_;
  Tensor storage_;
};

// One sequence's share of a flattened batch.
struct SequenceSlice {
  int64_t row_begin = 0;      // first row of its new tokens in the batch
  int64_t num_tokens = 0;     // new tokens this step
  int64_t cached_tokens = 0;  // tokens already cached; new token i is cached at index cached + i
  std::span<const int32_t> block_table;  // must cover cached_tokens + num_tokens
  // Which MLA form this slice's attention takes when MlaParams::mode is kAuto (kAuto here: the
  // cheaper one). The engine fixes it per token so results do not depend on chunking.
  MlaMode mode = MlaMode::kAuto;
};

struct AttentionBatch {
  std::span<const int32_t> positions;  // RoPE position of each row
  std::vector<SequenceSlice> sequences;
};

}  // namespace dserve::kernels
