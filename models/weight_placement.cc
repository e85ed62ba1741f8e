#include "models/weight_placement.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "core/progress.h"

namespace dserve::models {
namespace {

// Every weight and small tensor of a model, in load order.
struct Inventory {
  std::vector<kernels::Weight*> weights;
  std::vector<Tensor*> tensors;

  void Add(MlpWeights& m) {
    weights.insert(weights.end(), {&m.gate, &m.up, &m.down});
  }
  void Add(BlockWeights& b) {
    tensors.insert(tensors.end(), {&b.input_norm, &b.post_attention_norm, &b.attn.q_a_norm,
                                   &b.attn.kv_a_norm});
    AttentionWeights& a = b.attn;
    weights.insert(weights.end(), {&a.q_a, &a.q_b, &a.q, &a.kv_a, &a.kv_b, &a.o});
    if (!b.is_moe) {
      Add(b.mlp);
      return;
    }
    weights.push_back(&b.moe.router);
    tensors.push_back(&b.moe.bias);
    for (MlpWeights& e : b.moe.experts) Add(e);
    if (b.moe.shared) Add(*b.moe.shared);
  }
};

int64_t WeightBytes(const kernels::Weight& w) {
  int64_t bytes = w.rows * w.cols * DTypeSize(w.dtype);
  if (w.scale_inv) bytes += w.scale_rows() * w.scale_cols() * sizeof(float);
  return bytes;
}

}  // namespace

absl::Status PlaceWeights(kernels::Ops& ops, ModelWeights& w, bool show_progress) {
  if (ops.device() == Device::kCpu) return absl::OkStatus();
  Inventory inv;
  inv.weights.push_back(&w.embed);
  for (BlockWeights& b : w.layers) inv.Add(b);
  inv.tensors.push_back(&w.final_norm);
  inv.weights.push_back(&w.lm_head);
  if (w.mtp) {
    MtpWeights& m = *w.mtp;
    inv.weights.insert(inv.weights.end(), {&m.embed, &m.eh_proj, &m.head});
    inv.tensors.insert(inv.tensors.end(), {&m.enorm, &m.hnorm, &m.head_norm});
    inv.Add(m.block);
  }
  int64_t total = 0;
  for (const kernels::Weight* x : inv.weights) total += x->empty() ? 0 : WeightBytes(*x);
  Progress progress(absl::StrCat("uploading weights to ", std::string(ops.name())), total, "B",
                    show_progress);
  // Host bytes already placed -> their placed view.
  std::map<const void*, kernels::Weight> placed;
  for (kernels::Weight* x : inv.weights) {
    if (x->empty()) continue;
    const void* host = x->data;
    if (auto it = placed.find(host); it != placed.end() && it->second.rows == x->rows &&
                                     it->second.cols == x->cols &&
                                     it->second.dtype == x->dtype) {
      *x = it->second;
      continue;
    }
    DSERVE_RETURN_IF_ERROR(ops.PlaceWeight(*x));
    placed[host] = *x;
    progress.Advance(WeightBytes(*x));
  }
  for (Tensor* t : inv.tensors) {
    if (!t->empty()) DSERVE_RETURN_IF_ERROR(ops.PlaceTensor(*t));
  }
  progress.Finish();
  return absl::OkStatus();
}

}  // namespace dserve::models
