// CudaOps' step graphs: recording a step's kernels into a CUDA graph and replaying it. The
// recorded kernels read their per-step metadata from one device buffer, rebuilt on the host
// (step_metadata.h) and copied in before each launch, and take their activations from an
// arena whose addresses are fixed (the graph holds them).
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_step_graph.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/step_metadata.h"

namespace dserve::kernels::cuda {
namespace {

size_t Align16(size_t n) { return (n + 15) / 16 * 16; }

bool SameSchedule(const MlaDecodeSchedule& a, const MlaDecodeSchedule& b) {
  return a.heads == b.heads && a.num_seqs == b.num_seqs && a.block_m == b.block_m &&
         a.m_blocks == b.m_blocks && a.num_parts == b.num_parts &&
         a.num_split_seqs == b.num_split_seqs && a.num_slots == b.num_slots &&
         a.slot_rows == b.slot_rows && a.max_split_rows == b.max_split_rows &&
         a.rows_needed == b.rows_needed;
}

// (Region is CudaOps::InputRegion, named through deduction.)
template <typename Region, typename T>
void Put(uint8_t* base, const Region& r, const std::vector<T>& v) {
  const size_t bytes = v.size() * sizeof(T);
  DSERVE_CHECK(bytes <= r.capacity) << bytes << " bytes for a region of " << r.capacity;
  if (bytes > 0) std::memcpy(base + r.offset, v.data(), bytes);
}

absl::Status CheckInput(const StepGraphInput& in) {
  if (in.batch == nullptr || in.cache == nullptr || in.num_heads < 1) {
    return absl::InvalidArgumentError("a step graph input needs its batch, cache and heads");
  }
  if (in.cache->storage().device() != Device::kCuda) {
    return absl::InvalidArgumentError("the latent cache is not on cuda");
  }
  if (in.batch->positions.size() != in.tokens.size() || in.tokens.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("a step graph needs one position per token, got ",
                                                   in.batch->positions.size(), " for ",
                                                   in.tokens.size()));
  }
  return absl::OkStatus();
}

}  // namespace

CudaStepGraph::~CudaStepGraph() {
  if (exec_) (void)cudaGraphExecDestroy(exec_);
  if (inputs_copied_) (void)cudaEventDestroy(inputs_copied_);
  if (pinned_) (void)cudaFreeHost(pinned_);
}

absl::Status CudaOps::BuildStepInputs(const StepGraphInput& in, StepInputImage* im) const {
  const int64_t T = static_cast<int64_t>(in.tokens.size());
  im->ids.assign(in.tokens.begin(), in.tokens.end());
  im->logit_rows.assign(in.logit_rows.begin(), in.logit_rows.end());
  im->positions.assign(in.batch->positions.begin(), in.batch->positions.end());
  im->live_rows = {static_cast<int32_t>(in.live_rows < 0 ? T : std::min(in.live_rows, T))};
  CacheSlotOffsets(*in.batch, *in.cache, T, &im->offsets);
  MlaRowsAndTables(*in.batch, in.cache->shape(), T, &im->rows, &im->tables);
  for (MlaDecodePlan& plan : im->plans) plan = MlaDecodePlan();
  if (!UseDecodeKernel(in.cache->shape())) return absl::OkStatus();
  std::vector<MlaDecodeSequence> groups[2];
  MlaDecodeGroups(*in.batch, im->rows, T, in.num_heads, groups);
  for (int g = 0; g < 2; ++g) {
    if (groups[g].empty()) continue;
    const cudaError_t e = PlanMlaDecodeGroup(groups[g], in.num_heads, sms_, true, &im->plans[g]);
    if (e != cudaSuccess) return CudaStatus(e, "PlanMlaDecode", __FILE__, __LINE__);
  }
  return absl::OkStatus();
}

int64_t CudaOps::PlanWorkspaceBytes(const StepInputImage& im, int64_t kv_lora) {
  int64_t bytes = 0;
  for (const MlaDecodePlan& plan : im.plans) {
    bytes += static_cast<int64_t>(MlaDecodeWorkspaceBytes(plan.schedule, kv_lora));
  }
  return bytes;
}

absl::StatusOr<int64_t> CudaOps::StepGraphExtraBytes(const StepGraphInput& in) {
  DSERVE_RETURN_IF_ERROR(CheckInput(in));
  StepInputImage im;
  DSERVE_RETURN_IF_ERROR(BuildStepInputs(in, &im));
  return PlanWorkspaceBytes(im, in.cache->shape().kv_lora_rank);
}

absl::Status CudaOps::BeginStepGraph(const StepGraphInput& in, int64_t arena_bytes) {
  if (capturing_) return absl::FailedPreconditionError("a step graph is already being recorded");
  DSERVE_RETURN_IF_ERROR(CheckInput(in));
  // Eager work finishes (and reports its errors) before the recording starts.
  DSERVE_RETURN_IF_ERROR(TakeError());
  DSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  auto graph = std::make_unique<CudaStepGraph>(*this);
  StepInputImage im;
  DSERVE_RETURN_IF_ERROR(BuildStepInputs(in, &im));
  // The caller's size (StepGraphArenaBytes of its largest shape plus its activations); at
  // least what this recording's padded plans take. Whole 256-byte units, as the allocator
  // counts, so the same request finds the same arena again.
  int64_t need = std::max<int64_t>(arena_bytes, 1 << 20);
  need = std::max(need, PlanWorkspaceBytes(im, in.cache->shape().kv_lora_rank));
  need = (need + 255) / 256 * 256;
  std::shared_ptr<GraphArena> arena = arena_.lock();
  if (!arena || arena->alloc.capacity() < need) {
    arena = std::make_shared<GraphArena>(need);
    DSERVE_ASSIGN_OR_RETURN(arena->memory, DeviceTensor(DType::kU8, {arena->alloc.capacity()}));
    arena_ = arena;
  }
  graph->arena_ = arena;
  // One buffer, 16-byte aligned regions; the block tables last, so a replay copies only the
  // entries it has.
  size_t end = 0;
  auto place = [&end](InputRegion& r, size_t bytes) {
    r.offset = end;
    r.capacity = bytes;
    end = Align16(end + bytes);
  };
  place(graph->ids_, im.ids.size() * 4);
  place(graph->logit_rows_, im.logit_rows.size() * 4);
  place(graph->positions_, im.positions.size() * 4);
  place(graph->offsets_, im.offsets.size() * 8);
  place(graph->rows_, im.rows.size() * 4);
  place(graph->live_rows_, im.live_rows.size() * 4);
  for (int g = 0; g < 2; ++g) place(graph->plans_[g], im.plans[g].data_bytes());
  place(graph->tables_, im.tables.size() * 4);
  graph->input_bytes_ = std::max<size_t>(end, 16);
  DSERVE_CUDA_RETURN_IF_ERROR(
      cudaMallocHost(reinterpret_cast<void**>(&graph->pinned_), graph->input_bytes_));
  std::memset(graph->pinned_, 0, graph->input_bytes_);
  Put(graph->pinned_, graph->ids_, im.ids);
  Put(graph->pinned_, graph->logit_rows_, im.logit_rows);
  Put(graph->pinned_, graph->positions_, im.positions);
  Put(graph->pinned_, graph->offsets_, im.offsets);
  Put(graph->pinned_, graph->rows_, im.rows);
  Put(graph->pinned_, graph->live_rows_, im.live_rows);
  for (int g = 0; g < 2; ++g) Put(graph->pinned_, graph->plans_[g], im.plans[g].data);
  Put(graph->pinned_, graph->tables_, im.tables);
  DSERVE_ASSIGN_OR_RETURN(graph->device_inputs_,
                          DeviceTensor(DType::kU8, {static_cast<int64_t>(graph->input_bytes_)}));
  DSERVE_RETURN_IF_ERROR(
      CopyToDevice(graph->device_inputs_.raw(), graph->pinned_, graph->input_bytes_));
  DSERVE_CUDA_RETURN_IF_ERROR(
      cudaEventCreateWithFlags(&graph->inputs_copied_, cudaEventDisableTiming));
  for (const SequenceSlice& seq : in.batch->sequences) graph->slice_rows_.push_back(seq.num_tokens);
  graph->logit_row_count_ = static_cast<int64_t>(in.logit_rows.size());
  graph->num_heads_ = in.num_heads;
  graph->cache_storage_ = in.cache->storage().raw();
  for (int g = 0; g < 2; ++g) graph->schedules_[g] = im.plans[g].schedule;

  input_regions_ = {{&ids_, graph->ids_},
                    {&rows_, graph->logit_rows_},
                    {&positions_, graph->positions_},
                    {&offsets_, graph->offsets_},
                    {&mla_rows_, graph->rows_},
                    {&live_rows_, graph->live_rows_},
                    {&mla_tables_, graph->tables_},
                    {&decode_plans_[0].data, graph->plans_[0]},
                    {&decode_plans_[1].data, graph->plans_[1]}};
  recorded_image_.assign(graph->pinned_, graph->pinned_ + graph->input_bytes_);
  recording_inputs_ = static_cast<uint8_t*>(graph->device_inputs_.raw());
  // Eager plans are not padded to a graph's shape: the recording makes its own.
  for (DecodePlan& plan : decode_plans_) plan.seqs.clear();
  // Relaxed: the recorded ops may make calls that are legal outside a graph (a kernel's
  // shared-memory attribute); anything that would wait on the GPU still fails the recording.
  if (const cudaError_t e = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed);
      e != cudaSuccess) {
    input_regions_.clear();
    recorded_image_.clear();
    recording_inputs_ = nullptr;
    return CudaStatus(e, "cudaStreamBeginCapture", __FILE__, __LINE__);
  }
  recording_arena_ = std::move(arena);
  recording_ = std::move(graph);
  capturing_ = true;
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<StepGraph>> CudaOps::EndStepGraph() {
  if (!capturing_) return absl::FailedPreconditionError("no step graph is being recorded");
  cudaGraph_t recorded = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream_, &recorded);
  capturing_ = false;
  input_regions_.clear();
  recorded_image_.clear();
  recording_inputs_ = nullptr;
  recording_arena_.reset();  // the graph holds it; a failed recording's goes with its tensors
  std::unique_ptr<CudaStepGraph> graph = std::move(recording_);
  for (DecodePlan& plan : decode_plans_) plan.seqs.clear();  // the padded plans were the graph's
  absl::Status status = std::move(error_);
  error_ = absl::OkStatus();
  if (status.ok() && end != cudaSuccess) {
    status = CudaStatus(end, "cudaStreamEndCapture", __FILE__, __LINE__);
  }
  if (status.ok()) {
    const cudaError_t e = cudaGraphInstantiate(&graph->exec_, recorded, 0);
    if (e != cudaSuccess) status = CudaStatus(e, "cudaGraphInstantiate", __FILE__, __LINE__);
  }
  if (recorded) (void)cudaGraphDestroy(recorded);
  if (!status.ok()) {
    (void)cudaGetLastError();
    return absl::Status(status.code(),
                        absl::StrCat("recording a step graph: ", status.message()));
  }
  graph->rope_positions_ = rope_positions_;
  graphs_made_ = true;
  return std::unique_ptr<StepGraph>(std::move(graph));
}

absl::Status CudaOps::ReplayStepGraph(CudaStepGraph& graph, const StepGraphInput& in) {
  if (capturing_) return absl::FailedPreconditionError("a step graph is being recorded");
  DSERVE_RETURN_IF_ERROR(CheckInput(in));
  if (Failed()) return TakeError();
  bool same = in.num_heads == graph.num_heads_ &&
              in.cache->storage().raw() == graph.cache_storage_ &&
              static_cast<int64_t>(in.logit_rows.size()) == graph.logit_row_count_ &&
              in.batch->sequences.size() == graph.slice_rows_.size() &&
              in.tokens.size() * 4 == graph.ids_.capacity;
  for (size_t i = 0; same && i < graph.slice_rows_.size(); ++i) {
    same = in.batch->sequences[i].num_tokens == graph.slice_rows_[i];
  }
  if (!same) {
    return absl::InvalidArgumentError(
        "a step graph replays only steps of its recorded shape (rows, sequences' rows, logit "
        "rows, heads, cache)");
  }
  for (int32_t pos : in.batch->positions) {
    if (pos < 0 || pos >= graph.rope_positions_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "position ", pos, " is past the RoPE table the step graph was recorded with (",
          graph.rope_positions_, " positions)"));
    }
  }
  StepInputImage im;
  DSERVE_RETURN_IF_ERROR(BuildStepInputs(in, &im));
  if (im.tables.size() * 4 > graph.tables_.capacity) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the step's block tables have ", im.tables.size(), " entries; the step graph was "
        "recorded for ", graph.tables_.capacity / 4));
  }
  for (int g = 0; g < 2; ++g) {
    if (!SameSchedule(im.plans[g].schedule, graph.schedules_[g])) {
      return absl::InternalError("the padded attention plan changed shape between replays");
    }
  }
  DSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  // The last replay's copy reads the pinned image; wait for it before rewriting.
  DSERVE_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(graph.inputs_copied_));
  Put(graph.pinned_, graph.ids_, im.ids);
  Put(graph.pinned_, graph.logit_rows_, im.logit_rows);
  Put(graph.pinned_, graph.positions_, im.positions);
  Put(graph.pinned_, graph.offsets_, im.offsets);
  Put(graph.pinned_, graph.rows_, im.rows);
  Put(graph.pinned_, graph.live_rows_, im.live_rows);
  for (int g = 0; g < 2; ++g) Put(graph.pinned_, graph.plans_[g], im.plans[g].data);
  Put(graph.pinned_, graph.tables_, im.tables);
  const size_t used = graph.tables_.offset + im.tables.size() * 4;
  RecordLaunch(cudaMemcpyAsync(graph.device_inputs_.raw(), graph.pinned_, used,
                               cudaMemcpyHostToDevice, stream_),
               "copying a step graph's inputs");
  RecordLaunch(cudaEventRecord(graph.inputs_copied_, stream_), "cudaEventRecord");
  if (!Failed()) RecordLaunch(cudaGraphLaunch(graph.exec_, stream_), "cudaGraphLaunch");
  return absl::OkStatus();
}

const void* CudaOps::StageForGraph(Staged& slot, const void* bytes, size_t size) {
  const auto it = input_regions_.find(&slot);
  if (it == input_regions_.end()) {
    Record(absl::FailedPreconditionError(absl::StrCat(
        "a step graph cannot record this step: its ", slot.name,
        " are built per step outside the graph's inputs")));
    return nullptr;
  }
  const InputRegion& r = it->second;
  if (size > r.capacity ||
      (size > 0 && std::memcmp(recorded_image_.data() + r.offset, bytes, size) != 0)) {
    Record(absl::InternalError(absl::StrCat(
        "the step graph's inputs differ from the recorded step's ", slot.name)));
    return nullptr;
  }
  return recording_inputs_ + r.offset;
}

Tensor CudaOps::ArenaEmpty(DType dtype, std::vector<int64_t> shape, size_t bytes) {
  std::optional<int64_t> offset;
  GraphArena& pool = *recording_arena_;
  if (Begin()) {
    std::lock_guard<std::mutex> lock(pool.mu);
    offset = pool.alloc.Allocate(static_cast<int64_t>(bytes));
    if (!offset) {
      Record(absl::ResourceExhaustedError(absl::StrCat(
          "the step graphs' arena of ", pool.alloc.capacity(), " bytes has no room for a ",
          bytes, "-byte activation (", pool.alloc.used_bytes(), " in use)")));
    }
  }
  if (!offset) return Tensor(std::make_shared<Buffer>(nullptr, bytes, Device::kCuda, nullptr),
                             dtype, std::move(shape));
  void* p = static_cast<uint8_t*>(pool.memory.raw()) + *offset;
  // Back to the arena's bookkeeping only: the memory stays the arena's, and the graph that
  // used it keeps the address.
  Buffer::Deleter free = [arena = recording_arena_, off = *offset](void*) {
    std::lock_guard<std::mutex> lock(arena->mu);
    arena->alloc.Free(off);
  };
  return Tensor(std::make_shared<Buffer>(p, bytes, Device::kCuda, std::move(free)), dtype,
                std::move(shape));
}

}  // namespace dserve::kernels::cuda
