#include "models/expert_parallel.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "models/rank_calls.h"

namespace dserve::models {
namespace {

struct Pair {
  int32_t expert, token;
  float weight;
};

}  // namespace

absl::Status ExpertParallelMoe(kernels::Ops& ops, parallel::Communicator& comm,
                               const ExpertParallelInput& in, Tensor& out) {
  const Tensor& x = *in.x;
  const int W = comm.size(), rank = comm.rank();
  const int64_t T = x.dim(0), H = x.dim(1);
  const int64_t K = T > 0 ? in.ids->numel() / T : 0;
  const int64_t per = in.num_experts / W;
  DSERVE_CHECK(per * W == in.num_experts && static_cast<int64_t>(in.local_experts.size()) == per)
      << in.local_experts.size() << " local experts of " << in.num_experts << " over " << W;
  // Every rank runs every collective below whatever goes wrong locally (a rank that skipped
  // one would leave the others waiting in it): a local error is kept, this rank then sends
  // nothing, and the error is returned at the end.
  absl::Status error;
  auto note = [&error](absl::Status s) {
    if (error.ok() && !s.ok()) error = std::move(s);
  };

  // This rank's home tokens and their pairs, by (expert, token): the owners' slices are
  // contiguous and ascending, so this is also by owner.
  const int64_t share = in.local_tokens ? T : (T + W - 1) / W;
  const int64_t t0 = in.local_tokens ? 0 : std::min(T, share * rank);
  const int64_t t1 = std::min(T, t0 + share);
  std::vector<int32_t> ids(static_cast<size_t>(T * K));
  std::vector<float> weights(static_cast<size_t>(T * K));
  if (T > 0) {
    ops.CopyToHost(*in.ids, ids.data());
    ops.CopyToHost(*in.weights, weights.data());
    note(ops.TakeError());
  }
  std::vector<Pair> pairs;
  for (int64_t t = t0; t < t1 && error.ok(); ++t) {
    for (int64_t k = 0; k < K; ++k) {
      const int32_t e = ids[t * K + k];
      if (e < 0 || e >= in.num_experts) {
        note(absl::InternalError(
            absl::StrCat("the router chose expert ", e, " of ", in.num_experts)));
        break;
      }
      pairs.push_back({e, static_cast<int32_t>(t), weights[t * K + k]});
    }
  }
  if (!error.ok()) pairs.clear();
  std::stable_sort(pairs.begin(), pairs.end(), [](const Pair& a, const Pair& b) {
    return a.expert != b.expert ? a.expert < b.expert : a.token < b.token;
  });
  std::vector<int32_t> send_counts(W, 0);
  for (const Pair& p : pairs) ++send_counts[p.expert / per];
  absl::StatusOr<std::vector<int32_t>> counts = AllGatherInts(ops, comm, send_counts);
  if (!counts.ok()) return counts.status();  // the exchange itself failed: on every rank
  std::vector<int64_t> send_rows(W), recv_rows(W);
  int64_t R = 0;
  for (int p = 0; p < W; ++p) {
    send_rows[p] = send_counts[p];
    recv_rows[p] = (*counts)[static_cast<size_t>(p) * W + rank];
    R += recv_rows[p];
  }
  const int64_t S = static_cast<int64_t>(pairs.size());
  auto bytes = [](const std::vector<int64_t>& rows_per_rank, int64_t row_bytes) {
    std::vector<int64_t> b(rows_per_rank.size());
    for (size_t i = 0; i < b.size(); ++i) b[i] = rows_per_rank[i] * row_bytes;
    return b;
  };

  // Dispatch: the rows, and each row's expert in its owner's numbering.
  std::vector<int32_t> rows(S);
  Tensor local_ids = Tensor::Zeros(DType::kI32, {S});
  for (int64_t i = 0; i < S; ++i) {
    rows[i] = pairs[i].token;
    local_ids.data<int32_t>()[i] = static_cast<int32_t>(pairs[i].expert % per);
  }
  note(ops.PlaceTensor(local_ids));
  Tensor send_x = ops.Empty(DType::kF32, {S, H});
  if (S > 0) ops.GatherRows(x, rows, send_x);
  Tensor recv_x = ops.Empty(DType::kF32, {R, H});
  Tensor recv_ids = ops.Empty(DType::kI32, {R, 1});
  note(ops.TakeError());
  DSERVE_RETURN_IF_ERROR(comm.AllToAllV(send_x.raw(), bytes(send_rows, H * 4), recv_x.raw(),
                                        bytes(recv_rows, H * 4)));
  DSERVE_RETURN_IF_ERROR(comm.AllToAllV(local_ids.raw(), bytes(send_rows, 4), recv_ids.raw(),
                                        bytes(recv_rows, 4)));

  // Each received row through its expert, unweighted (weight 1: the output itself). Rows
  // arrive from every rank, so they are computed even after a local error.
  Tensor y = ops.Empty(DType::kF32, {R, H});
  if (R > 0) {
    Tensor ones = Tensor::Zeros(DType::kF32, {R, 1});
    std::fill(ones.data<float>(), ones.data<float>() + R, 1.0f);
    note(ops.PlaceTensor(ones));
    ops.MoeExperts(recv_x, in.local_experts, recv_ids, ones, y);
  }
  Tensor back = ops.Empty(DType::kF32, {S, H});
  note(ops.TakeError());
  DSERVE_RETURN_IF_ERROR(
      comm.AllToAllV(y.raw(), bytes(recv_rows, H * 4), back.raw(), bytes(send_rows, H * 4)));

  // Combine this rank's tokens in the MoE op's order, then (tokens shared by all ranks) every
  // rank's shares to everyone.
  Tensor mine = in.local_tokens ? out : ops.Empty(DType::kF32, {share, H});
  ops.SetZero(mine);
  std::vector<int32_t> targets(S);
  std::vector<float> scales(S);
  for (int64_t i = 0; i < S; ++i) {
    targets[i] = pairs[i].token - static_cast<int32_t>(t0);
    scales[i] = pairs[i].weight;
  }
  if (S > 0) ops.AddWeightedRows(back, targets, scales, mine);
  if (in.local_tokens) {
    note(ops.TakeError());
    return error;
  }
  Tensor all = ops.Empty(DType::kF32, {W * share, H});
  note(ops.TakeError());
  DSERVE_RETURN_IF_ERROR(comm.AllGather(mine.raw(), share * H * 4, all.raw()));
  std::vector<int32_t> order;
  for (int q = 0; q < W; ++q) {
    const int64_t q0 = std::min(T, share * q), q1 = std::min(T, q0 + share);
    for (int64_t t = q0; t < q1; ++t) order.push_back(static_cast<int32_t>(q * share + t - q0));
  }
  if (T > 0) ops.GatherRows(all, order, out);
  note(ops.TakeError());
  return error;
}

}  // namespace dserve::models
