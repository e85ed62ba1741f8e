// The decode-step benchmark of tests/gpu/run.sh: DeepSeek-V3's real dimensions with N layers
// (make-model's v3-layers-N: the first dense, the rest MoE; generated on the GPU machine when
// not given), one decode step of B sequences at a 4K context (their caches filled, not
// prefilled), B = 1, 16, 64, 256. Per configuration: the step with and without the LM head
// (and its logits copied to the host), GPU time per dense and per MoE layer (CUDA events
// recorded between layers), the bytes the step must move (weights read: attention, the dense
// MLP or the experts B tokens touch, and the latent cache) and that roofline at the measured
// copy bandwidth, then the extrapolation to V3's 61 layers (3 dense, 58 MoE). Prints a table.
//
// gpu_step_bench [--model DIR] [--layers N] [--cache bf16|fp8] [--context 4096]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/device_memory.h"
#include "models/deepseek_model.h"
#include "models/model_generator.h"
#include "models/step_graphs.h"
#include "tests/gpu/bench_timing.h"

namespace dserve::kernels::cuda {
namespace {

namespace fs = std::filesystem;

struct Options {
  std::string model;
  int layers = 2;
  DType cache = DType::kBF16;
  int64_t context = 4096;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Bytes of one checkpoint tensor, by name.
int64_t TensorBytes(const models::DeepseekModel& m, const std::string& name) {
  const auto& tensors = m.checkpoint().tensors();
  auto it = tensors.find(name);
  return it == tensors.end() ? 0 : static_cast<int64_t>(it->second->bytes);
}

// Weight bytes layer `layer` reads for `batch` tokens: its attention, and its dense MLP or the
// shared expert plus the expected number of distinct routed experts (uniform routing).
double LayerWeightBytes(const models::DeepseekModel& m, int layer, int64_t batch) {
  const models::ModelConfig& c = m.config();
  const std::string prefix = absl::StrCat("model.layers.", layer, ".");
  double bytes = 0, experts = 0;
  for (const auto& [name, entry] : m.checkpoint().tensors()) {
    if (name.rfind(prefix, 0) != 0) continue;
    if (name.find(".mlp.experts.") != std::string::npos) {
      experts += static_cast<double>(entry->bytes);
    } else {
      bytes += static_cast<double>(entry->bytes);
    }
  }
  if (experts > 0) {
    const double touched =
        c.n_routed_experts *
        (1.0 - std::pow(1.0 - static_cast<double>(c.num_experts_per_tok) / c.n_routed_experts,
                        static_cast<double>(batch)));
    bytes += experts * touched / c.n_routed_experts;
  }
  return bytes;
}

struct StepTimes {
  double with_head = 0, layers_only = 0;
  double graphed = 0;  // the same step (with the head) replayed from a CUDA graph; 0: none
  std::string graph_error;
  std::vector<double> layer_ms;  // per layer, GPU time between events
};

absl::StatusOr<StepTimes> TimeStep(models::DeepseekModel& model, CudaOps& ops, int64_t batch,
                                   const Options& o) {
  const models::ModelConfig& c = model.config();
  const int64_t page = 64, pages_per_seq = (o.context + 1 + page - 1) / page;
  // One page more: the step graph's scratch page.
  LatentCacheShape shape = model.CacheShape(batch * pages_per_seq + 1, page);
  shape.dtype = o.cache;
  DSERVE_ASSIGN_OR_RETURN(LatentCache cache, ops.NewLatentCache(shape));
  // Finite, moderate values in every format: BF16 0x3C3C, E4M3 0x3C with F32 scales 0x3C3C3C3C.
  DSERVE_RETURN_IF_ERROR(FillDevice(cache.storage().raw(), 0x3C, cache.storage().bytes()));
  std::vector<std::vector<int32_t>> tables(batch);
  std::vector<int32_t> tokens(batch), positions(batch, static_cast<int32_t>(o.context)), rows;
  for (int64_t b = 0; b < batch; ++b) {
    tables[b].resize(pages_per_seq);
    for (int64_t p = 0; p < pages_per_seq; ++p) {
      tables[b][p] = static_cast<int32_t>(b * pages_per_seq + p);
    }
    tokens[b] = static_cast<int32_t>((b * 7919) % c.vocab_size);
    rows.push_back(static_cast<int32_t>(b));
  }
  models::ForwardInput in;
  in.tokens = tokens;
  in.batch.positions = positions;
  for (int64_t b = 0; b < batch; ++b) {
    in.batch.sequences.push_back({b, 1, o.context, tables[b], MlaMode::kAbsorbed});
  }
  models::ForwardOutput out;
  std::vector<cudaEvent_t> events(c.num_hidden_layers + 1);
  for (cudaEvent_t& e : events) cudaEventCreate(&e);
  StepTimes t;
  std::vector<double> with, without;
  std::vector<std::vector<double>> per_layer(c.num_hidden_layers);
  for (int run = 0; run < 7; ++run) {
    in.logit_rows = rows;
    in.trace = nullptr;
    auto t0 = std::chrono::steady_clock::now();
    DSERVE_RETURN_IF_ERROR(model.Forward(in, cache, &out));
    const double a = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // Layers only, with an event after each layer's work is queued.
    in.logit_rows = {};
    cudaEventRecord(events[0], ops.stream());
    in.trace = [&](const models::LayerTrace& l) {
      cudaEventRecord(events[l.layer + 1], ops.stream());
    };
    t0 = std::chrono::steady_clock::now();
    DSERVE_RETURN_IF_ERROR(model.Forward(in, cache, &out));
    const double b = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (run < 2) continue;  // warm-up: algorithm searches, pool growth
    with.push_back(a);
    without.push_back(b);
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      float ms = 0;
      cudaEventElapsedTime(&ms, events[l], events[l + 1]);
      per_layer[l].push_back(ms);
    }
  }
  for (cudaEvent_t& e : events) cudaEventDestroy(e);
  // The same step from a CUDA graph (models/step_graphs.h), wall time of the replay with the
  // logits copied back, as the eager figure above.
  models::StepGraphOptions g;
  g.batch_sizes = {batch};
  g.max_context = pages_per_seq * page;
  g.scratch_page = static_cast<int32_t>(batch * pages_per_seq);
  g.show_progress = false;
  in.logit_rows = rows;
  in.trace = nullptr;
  absl::StatusOr<std::unique_ptr<models::StepGraphs>> graphs =
      models::StepGraphs::Capture(model, cache, g);
  if (graphs.ok()) {
    std::vector<double> replays;
    for (int run = 0; run < 7; ++run) {
      const auto t0 = std::chrono::steady_clock::now();
      DSERVE_RETURN_IF_ERROR((*graphs)->Run(in, &out));
      if (run >= 2) {
        replays.push_back(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
    }
    t.graphed = Median(replays);
  } else {
    t.graph_error = std::string(graphs.status().message());
  }
  t.with_head = Median(with);
  t.layers_only = Median(without);
  for (auto& v : per_layer) t.layer_ms.push_back(Median(v));
  return t;
}

absl::Status Run(const Options& opts) {
  Options o = opts;
  if (o.model.empty()) {
    o.model = absl::StrCat(fs::temp_directory_path().string(), "/dserve-v3-layers-", o.layers);
    if (!fs::exists(fs::path(o.model) / "config.json")) {
      models::GenerateOptions g;
      g.preset = absl::StrCat("v3-layers-", o.layers);
      g.out_dir = o.model;
      g.max_shard_bytes = int64_t{1} << 30;
      DSERVE_RETURN_IF_ERROR(models::GenerateModel(g));
    }
  }
  DSERVE_ASSIGN_OR_RETURN(std::unique_ptr<CudaOps> ops, CudaOps::Create());
  DSERVE_ASSIGN_OR_RETURN(std::unique_ptr<models::DeepseekModel> model,
                          models::DeepseekModel::Load(o.model, *ops, true));
  const models::ModelConfig& c = model->config();
  DSERVE_ASSIGN_OR_RETURN(const double bandwidth, CopyBandwidth());
  DSERVE_ASSIGN_OR_RETURN(const DeviceInfo info, GetDeviceInfo());
  std::printf("%s: %s, %d layers (first %d dense), %s cache, context %lld; copy bandwidth "
              "%.0f GB/s\n",
              info.name.c_str(), o.model.c_str(), c.num_hidden_layers, c.first_k_dense_replace,
              o.cache == DType::kF8E4M3 ? "FP8" : "BF16", static_cast<long long>(o.context),
              bandwidth / 1e9);
  const double head_bytes = static_cast<double>(TensorBytes(*model, "lm_head.weight"));
  std::vector<std::string> table;
  int failed = 0;
  for (const int64_t batch : {1, 16, 64, 256}) {
    absl::StatusOr<StepTimes> t = TimeStep(*model, *ops, batch, o);
    if (!t.ok()) {
      table.push_back(absl::StrCat("batch ", batch, ": ", t.status().message()));
      ++failed;
      continue;
    }
    // Bytes per layer: weights plus every sequence's cached latents at this context.
    LatentCacheShape token = model->CacheShape(1, 64);
    token.dtype = o.cache;
    const double kv = static_cast<double>(batch) * o.context * token.token_bytes();
    double dense_ms = 0, moe_ms = 0, dense_bytes = 0, moe_bytes = 0;
    int dense = 0, moe = 0;
    for (int l = 0; l < c.num_hidden_layers; ++l) {
      const double bytes = LayerWeightBytes(*model, l, batch) + kv;
      if (c.IsMoeLayer(l)) {
        moe_ms += t->layer_ms[l];
        moe_bytes += bytes;
        ++moe;
      } else {
        dense_ms += t->layer_ms[l];
        dense_bytes += bytes;
        ++dense;
      }
    }
    const double dense_layer = dense ? dense_ms / dense : 0, moe_layer = moe ? moe_ms / moe : 0;
    // ms to read those bytes at the copy's read + write rate (HBM's usable bandwidth).
    const double dense_roof = dense ? dense_bytes / dense / bandwidth * 1e3 : 0;
    const double moe_roof = moe ? moe_bytes / moe / bandwidth * 1e3 : 0;
    const double head_ms = (t->with_head - t->layers_only) * 1e3;
    const double step61 = 3 * dense_layer + 58 * moe_layer + head_ms;
    const double roof61 = 3 * dense_roof + 58 * moe_roof + head_bytes / bandwidth * 1e3;
    table.push_back(absl::StrFormat(
        "%5lld %9.2f %9.2f %8.3f %8.3f %8.3f %8.3f %9.2f %9.2f %9.3f %7.2fx %8.2f %6.2fx",
        static_cast<long long>(batch), t->with_head * 1e3, t->layers_only * 1e3, dense_layer,
        dense_roof, moe_layer, moe_roof, step61, roof61, step61 / batch, step61 / roof61,
        t->graphed * 1e3, t->graphed > 0 ? t->with_head / t->graphed : 0.0));
    if (!t->graph_error.empty()) table.push_back("  no graph: " + t->graph_error);
  }
  std::printf("\n== decode step, DeepSeek-V3 dimensions (ms; roofline: the bytes a layer must "
              "read at the copy's read+write rate) ==\n");
  std::printf("batch  step+head layers   dense  dense-rf     moe   moe-rf  61-layer  61-roof "
              "ms/token  vs-roof    graph  speedup\n");
  for (const std::string& row : table) std::printf("%s\n", row.c_str());
  std::printf("61-layer: 3 dense + 58 MoE layers at the measured per-layer times + the LM head; "
              "ms/token: that step / batch (per GPU, one GPU holding every expert). Layer 0's "
              "time includes the embedding.\n");
  if (failed > 0) return absl::InternalError(absl::StrCat(failed, " batch size(s) failed"));
  return absl::OkStatus();
}

}  // namespace
}  // namespace dserve::kernels::cuda

int main(int argc, char** argv) {
  dserve::kernels::cuda::Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--model") {
      o.model = value;
    } else if (flag == "--layers") {
      o.layers = std::atoi(value.c_str());
    } else if (flag == "--cache" && (value == "fp8" || value == "bf16")) {
      o.cache = value == "fp8" ? dserve::DType::kF8E4M3 : dserve::DType::kBF16;
    } else if (flag == "--context") {
      o.context = std::atoll(value.c_str());
    } else {
      std::fprintf(stderr, "gpu_step_bench: unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  if (argc % 2 == 0 || o.layers < 1 || o.layers > 61 || o.context < 1) {
    std::fprintf(stderr,
                 "usage: gpu_step_bench [--model DIR] [--layers 1..61] [--cache bf16|fp8] "
                 "[--context N]\n");
    return 2;
  }
  if (const absl::Status s = dserve::kernels::cuda::DeviceAvailable(); !s.ok()) {
    std::fprintf(stderr, "gpu_step_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  if (const absl::Status s = dserve::kernels::cuda::Run(o); !s.ok()) {
    std::fprintf(stderr, "gpu_step_bench: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}
