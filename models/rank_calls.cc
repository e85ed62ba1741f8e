#include "models/rank_calls.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace dserve::models {
namespace {

// Words through a backend tensor (NCCL moves device memory; on the CPU this copies nothing).
absl::Status BroadcastWords(kernels::Ops& ops, parallel::Communicator& comm,
                            std::vector<int64_t>* words) {
  Tensor t = Tensor::Zeros(DType::kI64, {static_cast<int64_t>(words->size())});
  std::copy(words->begin(), words->end(), t.data<int64_t>());
  DSERVE_RETURN_IF_ERROR(ops.PlaceTensor(t));
  DSERVE_RETURN_IF_ERROR(comm.Broadcast(t.raw(), static_cast<int64_t>(t.bytes()), 0));
  ops.CopyToHost(t, words->data());
  return ops.TakeError();
}

class Reader {
 public:
  explicit Reader(std::span<const int64_t> w) : w_(w) {}
  bool Take(int64_t* v) {
    if (at_ >= w_.size()) return false;
    *v = w_[at_++];
    return true;
  }
  template <typename T>
  bool TakeList(std::vector<T>* out) {
    int64_t n = 0;
    if (!Take(&n) || n < 0 || static_cast<size_t>(n) > w_.size() - at_) return false;
    out->resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) (*out)[i] = static_cast<T>(w_[at_++]);
    return true;
  }
  bool done() const { return at_ == w_.size(); }

 private:
  std::span<const int64_t> w_;
  size_t at_ = 0;
};

template <typename T>
void PutList(std::vector<int64_t>* w, const std::vector<T>& v) {
  w->push_back(static_cast<int64_t>(v.size()));
  for (const T& x : v) w->push_back(static_cast<int64_t>(x));
}

}  // namespace

kernels::AttentionBatch RankCall::Batch() const {
  kernels::AttentionBatch b;
  b.positions = positions;
  for (const Slice& s : slices) {
    b.sequences.push_back({s.row_begin, s.num_tokens, s.cached_tokens, s.block_table, s.mode});
  }
  return b;
}

void RankCall::SetBatch(std::span<const int32_t> t, const kernels::AttentionBatch& batch,
                        std::span<const int32_t> rows, kernels::MlaMode mode) {
  tokens.assign(t.begin(), t.end());
  positions.assign(batch.positions.begin(), batch.positions.end());
  logit_rows.assign(rows.begin(), rows.end());
  slices.clear();
  for (const kernels::SequenceSlice& s : batch.sequences) {
    slices.push_back({s.row_begin, s.num_tokens, s.cached_tokens, s.mode,
                      std::vector<int32_t>(s.block_table.begin(), s.block_table.end())});
  }
  mla_mode = mode;
}

std::vector<int64_t> EncodeRankCall(const RankCall& c) {
  std::vector<int64_t> w = {c.kind,
                            c.shape.num_layers,
                            c.shape.kv_lora_rank,
                            c.shape.rope_dim,
                            c.shape.page_size,
                            c.shape.num_pages,
                            static_cast<int64_t>(c.shape.dtype),
                            static_cast<int64_t>(c.mla_mode),
                            c.hidden_out ? 1 : 0};
  w.push_back(static_cast<int64_t>(c.copies.size()));
  for (const auto& [src, dst] : c.copies) w.insert(w.end(), {src, dst});
  PutList(&w, c.tokens);
  PutList(&w, c.positions);
  PutList(&w, c.logit_rows);
  w.push_back(static_cast<int64_t>(c.slices.size()));
  for (const RankCall::Slice& s : c.slices) {
    w.insert(w.end(), {s.row_begin, s.num_tokens, s.cached_tokens, static_cast<int64_t>(s.mode)});
    PutList(&w, s.block_table);
  }
  return w;
}

absl::StatusOr<RankCall> DecodeRankCall(std::span<const int64_t> words) {
  const absl::Status bad = absl::DataLossError("a rank call arrived malformed");
  Reader r(words);
  RankCall c;
  int64_t v[9];
  for (int64_t& x : v) {
    if (!r.Take(&x)) return bad;
  }
  if (v[0] < RankCall::kStop || v[0] > RankCall::kForwardMtp) return bad;
  c.kind = static_cast<RankCall::Kind>(v[0]);
  c.shape.num_layers = static_cast<int>(v[1]);
  c.shape.kv_lora_rank = v[2];
  c.shape.rope_dim = v[3];
  c.shape.page_size = v[4];
  c.shape.num_pages = v[5];
  c.shape.dtype = static_cast<DType>(v[6]);
  c.mla_mode = static_cast<kernels::MlaMode>(v[7]);
  c.hidden_out = v[8] != 0;
  int64_t n = 0;
  if (!r.Take(&n) || n < 0) return bad;
  for (int64_t i = 0; i < n; ++i) {
    int64_t src = 0, dst = 0;
    if (!r.Take(&src) || !r.Take(&dst)) return bad;
    c.copies.push_back({static_cast<int32_t>(src), static_cast<int32_t>(dst)});
  }
  if (!r.TakeList(&c.tokens) || !r.TakeList(&c.positions) || !r.TakeList(&c.logit_rows)) {
    return bad;
  }
  if (!r.Take(&n) || n < 0) return bad;
  for (int64_t i = 0; i < n; ++i) {
    RankCall::Slice s;
    int64_t mode = 0;
    if (!r.Take(&s.row_begin) || !r.Take(&s.num_tokens) || !r.Take(&s.cached_tokens) ||
        !r.Take(&mode) || !r.TakeList(&s.block_table)) {
      return bad;
    }
    s.mode = static_cast<kernels::MlaMode>(mode);
    c.slices.push_back(std::move(s));
  }
  if (!r.done()) return bad;
  return c;
}

absl::Status SendRankCall(kernels::Ops& ops, parallel::Communicator& comm, const RankCall& call) {
  std::vector<int64_t> words = EncodeRankCall(call);
  std::vector<int64_t> length = {static_cast<int64_t>(words.size())};
  DSERVE_RETURN_IF_ERROR(BroadcastWords(ops, comm, &length));
  return BroadcastWords(ops, comm, &words);
}

absl::StatusOr<RankCall> ReceiveRankCall(kernels::Ops& ops, parallel::Communicator& comm) {
  std::vector<int64_t> length = {0};
  DSERVE_RETURN_IF_ERROR(BroadcastWords(ops, comm, &length));
  if (length[0] < 0 || length[0] > (int64_t{1} << 32)) {
    return absl::DataLossError(absl::StrCat("a rank call of ", length[0], " words"));
  }
  std::vector<int64_t> words(static_cast<size_t>(length[0]));
  DSERVE_RETURN_IF_ERROR(BroadcastWords(ops, comm, &words));
  return DecodeRankCall(words);
}

absl::StatusOr<std::vector<int32_t>> AllGatherInts(kernels::Ops& ops,
                                                   parallel::Communicator& comm,
                                                   const std::vector<int32_t>& mine) {
  const int64_t n = static_cast<int64_t>(mine.size());
  Tensor send = Tensor::Zeros(DType::kI32, {n});
  std::copy(mine.begin(), mine.end(), send.data<int32_t>());
  DSERVE_RETURN_IF_ERROR(ops.PlaceTensor(send));
  Tensor all = ops.Empty(DType::kI32, {comm.size() * n});
  DSERVE_RETURN_IF_ERROR(ops.TakeError());
  DSERVE_RETURN_IF_ERROR(comm.AllGather(send.raw(), n * 4, all.raw()));
  std::vector<int32_t> out(static_cast<size_t>(comm.size() * n));
  ops.CopyToHost(all, out.data());
  DSERVE_RETURN_IF_ERROR(ops.TakeError());
  return out;
}

absl::Status AgreeAllRanks(kernels::Ops& ops, parallel::Communicator& comm,
                           const absl::Status& mine, absl::StatusCode code, const char* what) {
  DSERVE_ASSIGN_OR_RETURN(const std::vector<int32_t> all,
                          AllGatherInts(ops, comm, {mine.ok() ? 0 : 1}));
  if (!mine.ok()) return mine;
  for (size_t r = 0; r < all.size(); ++r) {
    if (all[r] != 0) return absl::Status(code, absl::StrCat("rank ", r, " could not ", what));
  }
  return absl::OkStatus();
}

absl::Status BroadcastTensor(kernels::Ops& ops, parallel::Communicator& comm, Tensor& t) {
  // Queued work that writes t is done first (NCCL would order it on the stream itself).
  DSERVE_RETURN_IF_ERROR(ops.TakeError());
  return comm.Broadcast(t.raw(), static_cast<int64_t>(t.bytes()), 0);
}

}  // namespace dserve::models
