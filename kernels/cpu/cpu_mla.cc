// Multi-head latent attention on the CPU over the paged latent cache, in both forms:
// naive (expand cached latents to per-head K/V through kv_b, then ordinary attention) and
// absorbed (fold kv_b's key half into the query and its value half into the output, and
// attend directly over the 512+64-value latents).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace dserve::kernels::cpu {
namespace {

// Context tokens expanded to K/V at a time by the naive form (bounds its scratch memory).
constexpr int64_t kNaiveBlock = 256;

// Running softmax state of one (query, head): max, sum of exp and weighted accumulator, so
// context blocks can be folded in one after another.
struct OnlineSoftmax {
  float max = -std::numeric_limits<float>::infinity();
  float sum = 0.0f;

  // Rescale factor for the accumulator and weight for a new score.
  void Add(float score, float* acc_scale, float* weight) {
    if (score > max) {
      *acc_scale = std::exp(max - score);
      sum *= *acc_scale;
      max = score;
    } else {
      *acc_scale = 1.0f;
    }
    *weight = std::exp(score - max);
    sum += *weight;
  }
};

void CheckParams(const MlaParams& p, const Tensor& q, const Tensor& out) {
  DSERVE_CHECK(p.batch && p.cache && p.kv_b && p.rope) << "MlaParams incomplete";
  const int64_t kv_lora = p.cache->shape().kv_lora_rank;
  DSERVE_CHECK(p.kv_b->rows == p.num_heads * (p.nope_dim + p.v_dim) && p.kv_b->cols == kv_lora)
      << "kv_b is [" << p.kv_b->rows << ", " << p.kv_b->cols << "]";
  DSERVE_CHECK(p.rope_dim == p.cache->shape().rope_dim) << "rope_dim " << p.rope_dim;
  DSERVE_CHECK(q.dim(1) == p.num_heads * (p.nope_dim + p.rope_dim)) << "q " << q.ShapeString();
  DSERVE_CHECK(out.dim(1) == p.num_heads * p.v_dim && out.dim(0) == q.dim(0))
      << "out " << out.ShapeString();
}

// Queries of one sequence with RoPE applied to their rope part, laid out [n, heads, nope+rope].
std::vector<float> RotatedQueries(const MlaParams& p, const SequenceSlice& seq, const float* q) {
  const int64_t qk = p.nope_dim + p.rope_dim;
  const int64_t half = p.rope_dim / 2;
  std::vector<float> rq(seq.num_tokens * p.num_heads * qk);
  for (int64_t i = 0; i < seq.num_tokens; ++i) {
    const int64_t row = seq.row_begin + i;
    const int32_t pos = p.batch->positions[row];
    DSERVE_CHECK(pos >= 0 && pos < p.rope->num_positions) << "position " << pos;
    for (int h = 0; h < p.num_heads; ++h) {
      const float* src = q + (row * p.num_heads + h) * qk;
      float* dst = rq.data() + (i * p.num_heads + h) * qk;
      std::copy(src, src + p.nope_dim, dst);
      ApplyRope(src + p.nope_dim, dst + p.nope_dim, p.rope->cos + pos * half,
                p.rope->sin + pos * half, p.rope_dim);
    }
  }
  return rq;
}

}  // namespace

MlaMode ChooseMlaMode(const MlaParams& p, const SequenceSlice& seq) {
  if (p.mode != MlaMode::kAuto) return p.mode;
  const double n = static_cast<double>(seq.num_tokens);
  const double ctx = static_cast<double>(seq.cached_tokens + seq.num_tokens);
  const double kv_lora = static_cast<double>(p.cache->shape().kv_lora_rank);
  // Query-key pairs under the causal mask.
  const double pairs = n * seq.cached_tokens + n * (n + 1) / 2;
  const double naive =
      ctx * kv_lora * (p.nope_dim + p.v_dim) + pairs * (p.nope_dim + p.rope_dim + p.v_dim);
  const double absorbed =
      n * kv_lora * (p.nope_dim + p.v_dim) + pairs * (2 * kv_lora + p.rope_dim);
  return naive < absorbed ? MlaMode::kNaive : MlaMode::kAbsorbed;
}

void CpuOps::MlaWriteCache(const Tensor& kv_a, const Tensor& kv_norm, float eps,
                           const RopeTable& rope, const AttentionBatch& batch, LatentCache& cache,
                           int layer) {
  const LatentCacheShape& s = cache.shape();
  DSERVE_CHECK(kv_a.dim(1) == s.kv_lora_rank + s.rope_dim) << "kv_a " << kv_a.ShapeString();
  DSERVE_CHECK(layer >= 0 && layer < s.num_layers) << "layer " << layer;
  const float* w = kv_norm.data<float>();
  const int64_t half = s.rope_dim / 2;
  for (const SequenceSlice& seq : batch.sequences) {
    DSERVE_CHECK(static_cast<int64_t>(seq.block_table.size()) * s.page_size >=
                 seq.cached_tokens + seq.num_tokens)
        << "block table of " << seq.block_table.size() << " pages cannot hold "
        << seq.cached_tokens + seq.num_tokens << " tokens";
    for (int64_t i = 0; i < seq.num_tokens; ++i) {
      const int64_t row = seq.row_begin + i;
      const float* src = kv_a.data<float>() + row * kv_a.dim(1);
      float* dst = cache.SequenceToken(layer, seq.block_table, seq.cached_tokens + i);
      const float inv = 1.0f / std::sqrt(prims_.dot(src, src, s.kv_lora_rank) /
                                             s.kv_lora_rank + eps);
      for (int64_t c = 0; c < s.kv_lora_rank; ++c) dst[c] = src[c] * inv * w[c];
      const int32_t pos = batch.positions[row];
      DSERVE_CHECK(pos >= 0 && pos < rope.num_positions) << "position " << pos;
      ApplyRope(src + s.kv_lora_rank, dst + s.kv_lora_rank, rope.cos + pos * half,
                rope.sin + pos * half, s.rope_dim);
    }
  }
}

void CpuOps::MlaAttention(const MlaParams& p, const Tensor& q, Tensor& out) {
  CheckParams(p, q, out);
  for (const SequenceSlice& seq : p.batch->sequences) {
    if (seq.num_tokens == 0) continue;
    if (ChooseMlaMode(p, seq) == MlaMode::kNaive) {
      MlaNaive(p, seq, q.data<float>(), out.data<float>());
    } else {
      MlaAbsorbed(p, seq, q.data<float>(), out.data<float>());
    }
  }
}

void CpuOps::MlaNaive(const MlaParams& p, const SequenceSlice& seq, const float* q, float* out) {
  const LatentCacheShape& s = p.cache->shape();
  const int64_t H = p.num_heads, n = seq.num_tokens;
  const int64_t qk = p.nope_dim + p.rope_dim, kvw = p.nope_dim + p.v_dim;
  const int64_t ctx = seq.cached_tokens + n;
  const std::vector<float> rq = RotatedQueries(p, seq, q);

  std::vector<OnlineSoftmax> state(n * H);
  std::vector<float> acc(n * H * p.v_dim, 0.0f);
  std::vector<float> latents(kNaiveBlock * s.kv_lora_rank);
  std::vector<float> kv(kNaiveBlock * H * kvw);

  for (int64_t j0 = 0; j0 < ctx; j0 += kNaiveBlock) {
    const int64_t bs = std::min(kNaiveBlock, ctx - j0);
    for (int64_t j = 0; j < bs; ++j) {
      const float* tok = p.cache->SequenceToken(p.layer, seq.block_table, j0 + j);
      std::copy(tok, tok + s.kv_lora_rank, latents.data() + j * s.kv_lora_rank);
    }
    // Per-head K_nope and V of this block: [bs, heads * (nope + v)].
    LinearRaw(latents.data(), bs, *p.kv_b, kv.data());
    pool_.ParallelFor(n * H, GrainFor(bs * (qk + p.v_dim)), [&](int64_t b, int64_t e) {
      for (int64_t ih = b; ih < e; ++ih) {
        const int64_t i = ih / H, h = ih % H;
        const int64_t last = seq.cached_tokens + i;  // causal: attends to tokens <= itself
        const float* qv = rq.data() + ih * qk;
        float* a = acc.data() + ih * p.v_dim;
        for (int64_t j = 0; j < bs && j0 + j <= last; ++j) {
          const float* k_nope = kv.data() + (j * H + h) * kvw;
          const float* k_pe = p.cache->SequenceToken(p.layer, seq.block_table, j0 + j) +
                              s.kv_lora_rank;
          const float score = (prims_.dot(qv, k_nope, p.nope_dim) +
                               prims_.dot(qv + p.nope_dim, k_pe, p.rope_dim)) *
                              p.softmax_scale;
          float scale, weight;
          state[ih].Add(score, &scale, &weight);
          if (scale != 1.0f) {
            for (int64_t d = 0; d < p.v_dim; ++d) a[d] *= scale;
          }
          prims_.axpy(weight, k_nope + p.nope_dim, a, p.v_dim);
        }
      }
    });
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < H; ++h) {
      const float inv = 1.0f / state[i * H + h].sum;
      const float* a = acc.data() + (i * H + h) * p.v_dim;
      float* o = out + ((seq.row_begin + i) * H + h) * p.v_dim;
      for (int64_t d = 0; d < p.v_dim; ++d) o[d] = a[d] * inv;
    }
  }
}

void CpuOps::MlaAbsorbed(const MlaParams& p, const SequenceSlice& seq, const float* q,
                         float* out) {
  const LatentCacheShape& s = p.cache->shape();
  const int64_t H = p.num_heads, n = seq.num_tokens, L = s.kv_lora_rank;
  const int64_t qk = p.nope_dim + p.rope_dim, kvw = p.nope_dim + p.v_dim;
  const std::vector<float> rq = RotatedQueries(p, seq, q);

  const int64_t per_head = n * seq.cached_tokens + n * n;
  pool_.ParallelFor(H, GrainFor(per_head * 2 * L + L * kvw), [&](int64_t b, int64_t e) {
    std::vector<float> w_uk(p.nope_dim * L);
    std::vector<float> q_lat(L), o_lat(L);
    for (int64_t h = b; h < e; ++h) {
      // W_UK of this head: kv_b rows [h * kvw, h * kvw + nope); its W_UV follows.
      prims_.decode_rows(*p.kv_b, h * kvw, h * kvw + p.nope_dim, w_uk.data());
      for (int64_t i = 0; i < n; ++i) {
        const float* qv = rq.data() + (i * H + h) * qk;
        // q_lat = W_UK^T q_nope: the query moved into the latent space.
        std::fill(q_lat.begin(), q_lat.end(), 0.0f);
        for (int64_t d = 0; d < p.nope_dim; ++d) {
          prims_.axpy(qv[d], w_uk.data() + d * L, q_lat.data(), L);
        }
        OnlineSoftmax sm;
        std::fill(o_lat.begin(), o_lat.end(), 0.0f);
        const int64_t last = seq.cached_tokens + i;
        for (int64_t j = 0; j <= last; ++j) {
          const float* tok = p.cache->SequenceToken(p.layer, seq.block_table, j);
          const float score = (prims_.dot(q_lat.data(), tok, L) +
                               prims_.dot(qv + p.nope_dim, tok + L, p.rope_dim)) *
                              p.softmax_scale;
          float scale, weight;
          sm.Add(score, &scale, &weight);
          if (scale != 1.0f) {
            for (int64_t c = 0; c < L; ++c) o_lat[c] *= scale;
          }
          prims_.axpy(weight, tok, o_lat.data(), L);
        }
        const float inv = 1.0f / sm.sum;
        for (int64_t c = 0; c < L; ++c) o_lat[c] *= inv;
        // out = W_UV o_lat: the latent output brought back to this head's value space.
        float* o = out + ((seq.row_begin + i) * H + h) * p.v_dim;
        prims_.gemv_rows(*p.kv_b, h * kvw + p.nope_dim, h * kvw + kvw, o_lat.data(), L, 1, o,
                         p.v_dim);
      }
    }
  });
}

}  // namespace dserve::kernels::cpu
