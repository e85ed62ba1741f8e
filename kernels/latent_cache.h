// LatentCache: the paged store of MLA's compressed KV. For every layer (the MTP layer
// included) and every cached token it holds the normalised latent c_kv [kv_lora_rank] followed
// by the RoPE'd shared key k_pe [qk_rope_head_dim] (pairs rotated in place) — 576 values per token per layer in
// DeepSeek-V3, instead of full per-head K and V. Pages hold `page_size` consecutive tokens of
// one sequence; a sequence's block table maps its logical pages to physical ones. Values are
// stored in BF16 (the serving default: 1,152 bytes per token per layer in DeepSeek-V3) or F32.
// The storage lives on the backend's device (Ops::NewLatentCache); the element accessors below
// are for host (CPU backend) storage only.
#pragma once

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

struct LatentCacheShape {
  int num_layers = 0;
  int64_t kv_lora_rank = 0;
  int64_t rope_dim = 0;
  int64_t page_size = 64;
  int64_t num_pages = 0;
  DType dtype = DType::kF32;  // kF32 or kBF16

  int64_t token_dim() const { return kv_lora_rank + rope_dim; }
  // Bytes of one page across all layers.
  int64_t page_bytes() const { return num_layers * page_size * token_dim() * DTypeSize(dtype); }
};

class LatentCache {
 public:
  LatentCache() = default;
  // Storage [num_layers, num_pages, page_size, kv_lora_rank + rope_dim] in shape.dtype, zeroed.
  explicit LatentCache(const LatentCacheShape& shape)
      : shape_(shape),
        storage_(Tensor::Zeros(shape.dtype, {shape.num_layers, shape.num_pages, shape.page_size,
                                             shape.token_dim()})) {
    DSERVE_CHECK(shape.dtype == DType::kF32 || shape.dtype == DType::kBF16)
        << "latent cache dtype must be F32 or BF16, got " << DTypeName(shape.dtype);
  }
  // Over storage a backend allocated (its device's memory), laid out as above.
  LatentCache(const LatentCacheShape& shape, Tensor storage)
      : shape_(shape), storage_(std::move(storage)) {
    DSERVE_CHECK(shape.dtype == DType::kF32 || shape.dtype == DType::kBF16)
        << "latent cache dtype must be F32 or BF16, got " << DTypeName(shape.dtype);
    DSERVE_CHECK(storage_.bytes() == static_cast<size_t>(shape.num_pages * shape.page_bytes()))
        << "latent cache storage of " << storage_.bytes() << " bytes for a shape of "
        << shape.num_pages * shape.page_bytes();
  }

  const LatentCacheShape& shape() const { return shape_; }
  // [num_layers, num_pages, page_size, token_dim] in shape().dtype, on the backend's device.
  const Tensor& storage() const { return storage_; }
  // Element offset of (layer, page, slot) in storage().
  int64_t Offset(int layer, int64_t page, int64_t slot) const {
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
      const int64_t index = begin + i;
      const int64_t off =
          Offset(layer, block_table[index / shape_.page_size], index % shape_.page_size);
      if (shape_.dtype == DType::kF32) {
        std::memcpy(dst + i * D, storage_.data<float>() + off, D * sizeof(float));
      } else {
        const uint16_t* src = storage_.data<uint16_t>() + off;
        for (int64_t c = 0; c < D; ++c) dst[i * D + c] = Bf16ToFloat(src[c]);
      }
    }
  }
  // Stores token_dim() F32 values as cached token `index` (rounded to nearest even for BF16).
  void WriteToken(int layer, std::span<const int32_t> block_table, int64_t index,
                  const float* src) const {
    DSERVE_CHECK(OnHost()) << "WriteToken() needs a host cache";
    const int64_t D = shape_.token_dim();
    const int64_t off =
        Offset(layer, block_table[index / shape_.page_size], index % shape_.page_size);
    if (shape_.dtype == DType::kF32) {
      std::memcpy(storage_.data<float>() + off, src, D * sizeof(float));
    } else {
      uint16_t* dst = storage_.data<uint16_t>() + off;
      for (int64_t c = 0; c < D; ++c) dst[c] = FloatToBf16(src[c]);
    }
  }
  // Copies page `src` over page `dst` in every layer (copy-on-write of a shared partial page);
  // host storage (device caches copy through Ops::CopyCachePage).
  void CopyPage(int32_t src, int32_t dst) const {
    DSERVE_CHECK(OnHost()) << "CopyPage() needs a host cache";
    const int64_t bytes = shape_.page_size * shape_.token_dim() * DTypeSize(shape_.dtype);
    uint8_t* base = static_cast<uint8_t*>(storage_.raw());
    for (int layer = 0; layer < shape_.num_layers; ++layer) {
      std::memcpy(base + Offset(layer, dst, 0) * DTypeSize(shape_.dtype),
                  base + Offset(layer, src, 0) * DTypeSize(shape_.dtype), bytes);
    }
  }

 private:
  bool OnHost() const { return storage_.device() == Device::kCpu; }

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
