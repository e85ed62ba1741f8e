// LatentCache: the paged store of MLA's compressed KV. For every layer (the MTP layer
// included) and every cached token it holds the normalised latent c_kv [kv_lora_rank] followed
// by the RoPE'd shared key k_pe [qk_rope_head_dim] (pairs rotated in place) — 576 values per token per layer in
// DeepSeek-V3, instead of full per-head K and V. Pages hold `page_size` consecutive tokens of
// one sequence; a sequence's block table maps its logical pages to physical ones.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/tensor.h"

namespace dserve::kernels {

struct LatentCacheShape {
  int num_layers = 0;
  int64_t kv_lora_rank = 0;
  int64_t rope_dim = 0;
  int64_t page_size = 64;
  int64_t num_pages = 0;

  int64_t token_dim() const { return kv_lora_rank + rope_dim; }
};

class LatentCache {
 public:
  LatentCache() = default;
  // FP32 storage [num_layers, num_pages, page_size, kv_lora_rank + rope_dim], zeroed.
  explicit LatentCache(const LatentCacheShape& shape)
      : shape_(shape),
        storage_(Tensor::Zeros(DType::kF32, {shape.num_layers, shape.num_pages, shape.page_size,
                                             shape.token_dim()})) {}

  const LatentCacheShape& shape() const { return shape_; }

  // The token_dim() values of one cached token: the latent, then k_pe.
  float* Token(int layer, int64_t page, int64_t slot) const {
    return storage_.data<float>() +
           ((layer * shape_.num_pages + page) * shape_.page_size + slot) * shape_.token_dim();
  }
  // Cached token `index` of a sequence with this block table.
  float* SequenceToken(int layer, std::span<const int32_t> block_table, int64_t index) const {
    return Token(layer, block_table[index / shape_.page_size], index % shape_.page_size);
  }

 private:
  LatentCacheShape shape_;
  Tensor storage_;
};

// One sequence's share of a flattened batch.
struct SequenceSlice {
  int64_t row_begin = 0;      // first row of its new tokens in the batch
  int64_t num_tokens = 0;     // new tokens this step
  int64_t cached_tokens = 0;  // tokens already cached; new token i is cached at index cached + i
  std::span<const int32_t> block_table;  // must cover cached_tokens + num_tokens
};

struct AttentionBatch {
  std::span<const int32_t> positions;  // RoPE position of each row
  std::vector<SequenceSlice> sequences;
};

}  // namespace dserve::kernels
