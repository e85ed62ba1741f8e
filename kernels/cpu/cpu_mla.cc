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
// Blocks start at multiples of it from the first context token and every block's softmax sums
// and P*V products run over its full width (masked keys add exact zeros), so a query's result
// does not depend on how its sequence was cut into chunks.
constexpr int64_t kNaiveBlock = 256;
// Cached tokens the absorbed form converts to F32 and scores at a time (blocks aligned from
// the first context token, softmax sums over the full width: chunking-independent), and
// queries it carries at once.
constexpr int64_t kAbsorbedBlock = 64;
constexpr int64_t kAbsorbedQueries = 64;

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

// A row-major F32 scratch matrix seen as a Weight, so the GEMM primitives can multiply by it.
Weight F32Matrix(const float* data, int64_t rows, int64_t cols) {
  Weight w;
  w.dtype = DType::kF32;
  w.rows = rows;
  w.cols = cols;
  w.data = data;
  return w;
}

}  // namespace

MlaMode ChooseMlaMode(const MlaParams& p, const SequenceSlice& seq) {
  if (p.mode != MlaMode::kAuto) return p.mode;
  if (seq.mode != MlaMode::kAuto) return seq.mode;
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
  std::vector<float> token(s.token_dim());
  for (const SequenceSlice& seq : batch.sequences) {
    DSERVE_CHECK(static_cast<int64_t>(seq.block_table.size()) * s.page_size >=
                 seq.cached_tokens + seq.num_tokens)
        << "block table of " << seq.block_table.size() << " pages cannot hold "
        << seq.cached_tokens + seq.num_tokens << " tokens";
    for (int64_t i = 0; i < seq.num_tokens; ++i) {
      const int64_t row = seq.row_begin + i;
      const float* src = kv_a.data<float>() + row * kv_a.dim(1);
      float* dst = token.data();
      const float inv = 1.0f / std::sqrt(prims_.dot(src, src, s.kv_lora_rank) /
                                             s.kv_lora_rank + eps);
      for (int64_t c = 0; c < s.kv_lora_rank; ++c) dst[c] = src[c] * inv * w[c];
      const int32_t pos = batch.positions[row];
      DSERVE_CHECK(pos >= 0 && pos < rope.num_positions) << "position " << pos;
      ApplyRope(src + s.kv_lora_rank, dst + s.kv_lora_rank, rope.cos + pos * half,
                rope.sin + pos * half, s.rope_dim);
      cache.WriteToken(layer, seq.block_table, seq.cached_tokens + i, dst);
    }
  }
}

void CpuOps::MlaAttention(const MlaParams& p, const Tensor& q, Tensor& out) {
  CheckParams(p, q, out);
  std::vector<const SequenceSlice*> absorbed;
  for (const SequenceSlice& seq : p.batch->sequences) {
    if (seq.num_tokens == 0) continue;
    if (ChooseMlaMode(p, seq) == MlaMode::kNaive) {
      MlaNaive(p, seq, q.data<float>(), out.data<float>());
    } else {
      absorbed.push_back(&seq);
    }
  }
  if (absorbed.empty()) return;
  // One parallel loop over every absorbed slice (decode rows, mostly): per slice with all
  // heads when there are enough slices to go round (its cached latents are then converted
  // once), else per (slice, head).
  const int64_t S = static_cast<int64_t>(absorbed.size()), H = p.num_heads;
  const bool split_heads = S < pool_.size();
  pool_.ParallelFor(split_heads ? S * H : S, 1, [&](int64_t b, int64_t e) {
    for (int64_t item = b; item < e; ++item) {
      if (split_heads) {
        MlaAbsorbed(p, *absorbed[item / H], item % H, item % H + 1, q.data<float>(),
                    out.data<float>());
      } else {
        MlaAbsorbed(p, *absorbed[item], 0, H, q.data<float>(), out.data<float>());
      }
    }
  });
}

void CpuOps::MlaNaive(const MlaParams& p, const SequenceSlice& seq, const float* q, float* out) {
  const LatentCacheShape& s = p.cache->shape();
  const int64_t H = p.num_heads, n = seq.num_tokens;
  const int64_t qk = p.nope_dim + p.rope_dim, kvw = p.nope_dim + p.v_dim, V = p.v_dim;
  const int64_t ctx = seq.cached_tokens + n;
  const std::vector<float> rq = RotatedQueries(p, seq, q);  // [n, H, qk]

  // Per head: its queries [n, qk] pre-scaled by the softmax scale, and the running softmax
  // (row max, row sum, unnormalised output [n, v]) carried across key blocks.
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::vector<float> queries(H * n * qk), row_max(H * n, kNegInf), row_sum(H * n, 0.0f);
  std::vector<float> acc(H * n * V, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t d = 0; d < qk; ++d) {
        queries[(h * n + i) * qk + d] = rq[(i * H + h) * qk + d] * p.softmax_scale;
      }
    }
  }
  constexpr int64_t B = kNaiveBlock;
  const int64_t D = s.token_dim();
  std::vector<float> tokens(B * D), latents(B * s.kv_lora_rank);
  std::vector<float> kv(B * H * kvw);

  for (int64_t j0 = 0; j0 < ctx; j0 += B) {
    const int64_t bs = std::min(B, ctx - j0);
    p.cache->ReadTokens(p.layer, seq.block_table, j0, bs, tokens.data());
    for (int64_t j = 0; j < bs; ++j) {
      std::copy_n(tokens.data() + j * D, s.kv_lora_rank, latents.data() + j * s.kv_lora_rank);
    }
    // Per-head K_nope and V of this block: [bs, heads * (nope + v)].
    LinearRaw(latents.data(), bs, *p.kv_b, kv.data());
    // Queries that see at least one key of the block (causal: query i sees keys <= cached + i).
    const int64_t first = std::max<int64_t>(0, j0 - seq.cached_tokens);
    const int64_t rows = n - first;
    if (rows <= 0) continue;
    pool_.ParallelFor(H, 1, [&](int64_t hb, int64_t he) {
      // keys [bs, qk] and values transposed [v, B] (zero past bs) of one head, as F32
      // matrices the GEMM primitive takes; scores/probabilities [rows, B]; P*V [rows, v].
      std::vector<float> keys(bs * qk), values_t(V * B, 0.0f), scores(rows * B), pv(rows * V);
      for (int64_t h = hb; h < he; ++h) {
        for (int64_t j = 0; j < bs; ++j) {
          const float* kvj = kv.data() + (j * H + h) * kvw;
          const float* pe = tokens.data() + j * D + s.kv_lora_rank;
          std::copy(kvj, kvj + p.nope_dim, keys.data() + j * qk);
          std::copy(pe, pe + p.rope_dim, keys.data() + j * qk + p.nope_dim);
          for (int64_t d = 0; d < V; ++d) values_t[d * B + j] = kvj[p.nope_dim + d];
        }
        const float* qh = queries.data() + (h * n + first) * qk;
        const Weight key_matrix = F32Matrix(keys.data(), bs, qk);
        for (int64_t r0 = 0; r0 < bs; r0 += prims_.panel_rows) {
          prims_.gemm_rows(key_matrix, r0, std::min(bs, r0 + prims_.panel_rows), qh, qk, rows,
                           scores.data() + r0, B);
        }
        for (int64_t i = 0; i < rows; ++i) {
          float* srow = scores.data() + i * B;
          const int64_t visible = std::min(bs, seq.cached_tokens + first + i - j0 + 1);
          std::fill(srow + visible, srow + B, kNegInf);
          float* m = &row_max[h * n + first + i];
          const float block_max = prims_.max_value(srow, visible);
          const float new_max = std::max(*m, block_max);
          const float rescale = std::exp(*m - new_max);  // 0 on the first block
          row_sum[h * n + first + i] =
              row_sum[h * n + first + i] * rescale + prims_.exp_shifted(srow, B, new_max);
          *m = new_max;
          float* a = acc.data() + (h * n + first + i) * V;
          for (int64_t d = 0; d < V; ++d) a[d] *= rescale;
        }
        const Weight value_matrix = F32Matrix(values_t.data(), V, B);
        for (int64_t d0 = 0; d0 < V; d0 += prims_.panel_rows) {
          prims_.gemm_rows(value_matrix, d0, std::min(V, d0 + prims_.panel_rows), scores.data(),
                           B, rows, pv.data() + d0, V);
        }
        for (int64_t i = 0; i < rows; ++i) {
          float* a = acc.data() + (h * n + first + i) * V;
          const float* add = pv.data() + i * V;
          for (int64_t d = 0; d < V; ++d) a[d] += add[d];
        }
      }
    });
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t h = 0; h < H; ++h) {
      const float inv = 1.0f / row_sum[h * n + i];
      const float* a = acc.data() + (h * n + i) * V;
      float* o = out + ((seq.row_begin + i) * H + h) * V;
      for (int64_t d = 0; d < V; ++d) o[d] = a[d] * inv;
    }
  }
}

void CpuOps::MlaAbsorbed(const MlaParams& p, const SequenceSlice& seq, int64_t head_begin,
                         int64_t head_end, const float* q, float* out) {
  const LatentCacheShape& s = p.cache->shape();
  const int64_t H = p.num_heads, n = seq.num_tokens, L = s.kv_lora_rank, D = s.token_dim();
  const int64_t qk = p.nope_dim + p.rope_dim, kvw = p.nope_dim + p.v_dim;
  constexpr int64_t B = kAbsorbedBlock;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const std::vector<float> rq = RotatedQueries(p, seq, q);
  const int64_t heads = head_end - head_begin;

  std::vector<float> w_uk(p.nope_dim * L), keys(B * D);
  for (int64_t i0 = 0; i0 < n; i0 += kAbsorbedQueries) {
    const int64_t m = std::min(kAbsorbedQueries, n - i0);
    // Per (head, query): [q_lat | q_rope] * softmax scale (scored against [latent | k_pe] in
    // one product), the running latent output, row max and row sum.
    std::vector<float> qcat(heads * m * D, 0.0f), o_lat(heads * m * L, 0.0f);
    std::vector<float> row_max(heads * m, kNegInf), row_sum(heads * m, 0.0f);
    std::vector<float> scores(heads * m * B);
    for (int64_t h = head_begin; h < head_end; ++h) {
      // W_UK of this head: kv_b rows [h * kvw, h * kvw + nope); its W_UV follows.
      prims_.decode_rows(*p.kv_b, h * kvw, h * kvw + p.nope_dim, w_uk.data());
      for (int64_t i = 0; i < m; ++i) {
        const float* qv = rq.data() + ((i0 + i) * H + h) * qk;
        float* qc = qcat.data() + ((h - head_begin) * m + i) * D;
        // q_lat = W_UK^T q_nope: the query moved into the latent space.
        for (int64_t d = 0; d < p.nope_dim; ++d) prims_.axpy(qv[d], w_uk.data() + d * L, qc, L);
        for (int64_t c = 0; c < L; ++c) qc[c] *= p.softmax_scale;
        for (int64_t c = 0; c < p.rope_dim; ++c) qc[L + c] = qv[p.nope_dim + c] * p.softmax_scale;
      }
    }
    const int64_t ctx = seq.cached_tokens + i0 + m;  // keys the group's last query sees
    for (int64_t j0 = 0; j0 < ctx; j0 += B) {
      const int64_t bs = std::min(B, ctx - j0);
      p.cache->ReadTokens(p.layer, seq.block_table, j0, bs, keys.data());
      const Weight key_matrix = F32Matrix(keys.data(), bs, D);
      // Queries that see at least one key of the block.
      const int64_t first = std::max<int64_t>(0, j0 - seq.cached_tokens - i0);
      const int64_t rows = m - first;
      // Every head scores the same latent keys: when all the group's queries see the block,
      // one product covers all heads (each key row is then read once for four queries).
      if (first == 0) {
        prims_.gemv_rows(key_matrix, 0, bs, qcat.data(), D, heads * m, scores.data(), B);
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* head_scores = scores.data() + h * m * B;
        if (first > 0) {
          prims_.gemv_rows(key_matrix, 0, bs, qcat.data() + (h * m + first) * D, D, rows,
                           head_scores + first * B, B);
        }
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t qi = first + i, state = h * m + qi;
          float* srow = head_scores + qi * B;
          const int64_t visible = std::min(bs, seq.cached_tokens + i0 + qi - j0 + 1);
          std::fill(srow + visible, srow + B, kNegInf);
          const float new_max = std::max(row_max[state], prims_.max_value(srow, visible));
          const float rescale = std::exp(row_max[state] - new_max);  // 0 on the first block
          row_sum[state] = row_sum[state] * rescale + prims_.exp_shifted(srow, B, new_max);
          row_max[state] = new_max;
          float* ol = o_lat.data() + state * L;
          if (rescale != 1.0f) {
            for (int64_t c = 0; c < L; ++c) ol[c] *= rescale;
          }
          for (int64_t j = 0; j < visible; ++j) prims_.axpy(srow[j], keys.data() + j * D, ol, L);
        }
      }
    }
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < m; ++i) {
        const int64_t state = h * m + i;
        float* ol = o_lat.data() + state * L;
        const float inv = 1.0f / row_sum[state];
        for (int64_t c = 0; c < L; ++c) ol[c] *= inv;
        // out = W_UV o_lat: the latent output brought back to this head's value space.
        const int64_t head = head_begin + h;
        float* o = out + ((seq.row_begin + i0 + i) * H + head) * p.v_dim;
        prims_.gemv_rows(*p.kv_b, head * kvw + p.nope_dim, head * kvw + kvw, ol, L, 1, o,
                         p.v_dim);
      }
    }
  }
}

}  // namespace dserve::kernels::cpu
