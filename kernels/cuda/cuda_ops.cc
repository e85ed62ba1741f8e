#include "kernels/cuda/cuda_ops.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_step_graph.h"
#include "kernels/cuda/device_memory.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/fp8_quant.h"
#include "kernels/cuda/linear.h"
#include "kernels/cuda/row_moves.h"

namespace dserve::kernels::cuda {
namespace {

// Activations come from the device's stream-ordered pool and go back to it in the order of
// its legacy stream, which waits for all earlier work of the backend's (blocking) stream. The
// legacy stream is the current device's, so the freeing thread switches to the buffer's.
template <typename Stats>
Buffer::Deleter FreeAsyncOn(int device, std::shared_ptr<Stats> stats, int64_t bytes) {
  return [device, stats = std::move(stats), bytes](void* p) {
    stats->live.fetch_sub(bytes);
    int current = device;
    const bool switched = cudaGetDevice(&current) == cudaSuccess && current != device &&
                          cudaSetDevice(device) == cudaSuccess;
    (void)cudaFreeAsync(p, cudaStreamLegacy);
    if (switched) (void)cudaSetDevice(current);
  };
}

}  // namespace

LatentFormat FormatOf(const LatentCacheShape& shape) {
  switch (shape.dtype) {
    case DType::kF32: return LatentFormat::kF32;
    case DType::kBF16: return LatentFormat::kBF16;
    case DType::kF8E4M3: return LatentFormat::kFp8;
    default: DSERVE_CHECK(false) << "latent cache dtype " << DTypeName(shape.dtype);
  }
  return LatentFormat::kBF16;
}

WeightView ViewOf(const Weight& w) {
  WeightView v;
  switch (w.dtype) {
    case DType::kF32: v.type = WeightType::kF32; break;
    case DType::kBF16: v.type = WeightType::kBF16; break;
    case DType::kF16: v.type = WeightType::kF16; break;
    case DType::kF8E4M3: v.type = WeightType::kFp8E4M3; break;
    default: DSERVE_CHECK(false) << "weight dtype " << DTypeName(w.dtype);
  }
  v.rows = w.rows;
  v.cols = w.cols;
  v.data = w.data;
  v.scale_inv = w.scale_inv;
  v.block_rows = w.block_rows;
  v.block_cols = w.block_cols;
  return v;
}

absl::StatusOr<std::unique_ptr<CudaOps>> CudaOps::Create(const CudaOpsOptions& options) {
  DSERVE_RETURN_IF_ERROR(DeviceAvailable());
  if (options.device < 0 || options.device >= DeviceCount()) {
    return absl::InvalidArgumentError(absl::StrCat("CUDA device ", options.device,
                                                   " does not exist (", DeviceCount(),
                                                   " visible)"));
  }
  DSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
  const absl::StatusOr<DeviceInfo> info = GetDeviceInfo(options.device);
  if (!info.ok()) return info.status();
  // Keep freed activations in the pool instead of returning them to the driver at every
  // synchronisation: a step allocates the same sizes again.
  cudaMemPool_t pool;
  DSERVE_CUDA_RETURN_IF_ERROR(cudaDeviceGetDefaultMemPool(&pool, options.device));
  uint64_t keep = std::numeric_limits<uint64_t>::max();
  DSERVE_CUDA_RETURN_IF_ERROR(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
  cudaStream_t stream;
  DSERVE_CUDA_RETURN_IF_ERROR(cudaStreamCreate(&stream));
  absl::StatusOr<std::unique_ptr<BlasLt>> blas = BlasLt::Create();
  if (!blas.ok()) {
    (void)cudaStreamDestroy(stream);
    return blas.status();
  }
  return std::unique_ptr<CudaOps>(
      new CudaOps(options, std::max(1, info->multiprocessors), stream, std::move(blas).value()));
}

CudaOps::CudaOps(const CudaOpsOptions& options, int sms, cudaStream_t stream,
                 std::unique_ptr<BlasLt> blas)
    : options_(options), sms_(sms), stream_(stream), blas_(std::move(blas)) {}

CudaOps::~CudaOps() {
  (void)cudaStreamSynchronize(stream_);
  (void)cudaStreamDestroy(stream_);
}

void CudaOps::Record(absl::Status status) {
  if (error_.ok() && !status.ok()) error_ = std::move(status);
}

void CudaOps::RecordLaunch(cudaError_t error, const char* what) {
  if (error == cudaSuccess) return;
  Record(absl::InternalError(absl::StrCat(what, " failed: ", cudaGetErrorName(error), " (",
                                          cudaGetErrorString(error), ")")));
}

void CudaOps::CheckF32(const Tensor& t, int64_t rows, int64_t cols, const char* what) {
  DSERVE_CHECK(t.dtype() == DType::kF32 && t.rank() == 2 && t.dim(0) == rows &&
               t.dim(1) == cols && t.device() == Device::kCuda)
      << what << " is " << DTypeName(t.dtype()) << " " << t.ShapeString() << " on "
      << (t.device() == Device::kCuda ? "cuda" : "the host") << ", expected F32 [" << rows
      << ", " << cols << "] on cuda";
}

bool CudaOps::Begin() {
  if (Failed()) return false;
  // The calling thread may be new to this device (the engine's thread).
  RecordLaunch(cudaSetDevice(options_.device), "cudaSetDevice");
  return !Failed();
}

absl::Status CudaOps::TakeError() {
  if (error_.ok()) {
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) error_ = CudaStatus(e, "cudaStreamSynchronize", __FILE__, __LINE__);
  }
  absl::Status out = std::move(error_);
  error_ = absl::OkStatus();
  return out;
}

absl::Status CudaOps::PlaceWeight(Weight& w) {
  DSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  const int64_t bytes = w.rows * w.cols * DTypeSize(w.dtype);
  DSERVE_ASSIGN_OR_RETURN(Tensor data, DeviceTensor(DType::kU8, {bytes}));
  DSERVE_RETURN_IF_ERROR(CopyToDevice(data.raw(), w.data, static_cast<size_t>(bytes)));
  Tensor scales;
  if (w.dtype == DType::kF8E4M3) {
    DSERVE_CHECK(w.scale_inv) << "FP8 weight without scales";
    DSERVE_ASSIGN_OR_RETURN(scales, DeviceTensor(DType::kF32, {w.scale_rows(), w.scale_cols()}));
    DSERVE_RETURN_IF_ERROR(CopyToDevice(scales.raw(), w.scale_inv, scales.bytes()));
  }
  w.data = data.raw();
  w.scale_inv = scales.empty() ? nullptr : scales.data<float>();
  w.owned = std::move(data);
  w.owned_scales = std::move(scales);
  w.packed = Tensor();
  return absl::OkStatus();
}

absl::Status CudaOps::PlaceTensor(Tensor& t) {
  if (t.device() == Device::kCuda) return absl::OkStatus();
  DSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  DSERVE_ASSIGN_OR_RETURN(t, Upload(t));
  return absl::OkStatus();
}

absl::StatusOr<LatentCache> CudaOps::NewLatentCache(const LatentCacheShape& shape) {
  DSERVE_CUDA_RETURN_IF_ERROR(cudaSetDevice(options_.device));
  if (!IsLatentCacheDType(shape.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the latent cache dtype must be bf16, fp8 or f32, got ",
        std::string(DTypeName(shape.dtype))));
  }
  DSERVE_ASSIGN_OR_RETURN(Tensor storage, DeviceTensor(LatentCache::StorageDType(shape),
                                                       LatentCache::StorageShape(shape)));
  DSERVE_RETURN_IF_ERROR(FillDevice(storage.raw(), 0, storage.bytes()));
  return LatentCache(shape, std::move(storage));
}

// Runs even after an earlier error (say an activation that did not fit): the engine has
// already pointed a block table at `dst`, so a skipped copy would corrupt that sequence
// silently. If the copy itself fails, the context is broken and every later step fails.
void CudaOps::CopyCachePage(LatentCache& cache, int32_t src, int32_t dst) {
  RecordLaunch(cudaSetDevice(options_.device), "cudaSetDevice");
  const LatentCacheShape& s = cache.shape();
  DSERVE_CHECK(src >= 0 && src < s.num_pages && dst >= 0 && dst < s.num_pages)
      << "pages " << src << " -> " << dst << " of " << s.num_pages;
  const size_t bytes = static_cast<size_t>(s.page_size * s.token_bytes());
  uint8_t* base = static_cast<uint8_t*>(cache.storage().raw());
  for (int layer = 0; layer < s.num_layers; ++layer) {
    RecordLaunch(cudaMemcpyAsync(base + cache.ByteOffset(layer, dst, 0),
                                 base + cache.ByteOffset(layer, src, 0), bytes,
                                 cudaMemcpyDeviceToDevice, stream_),
                 "copying a cache page");
  }
}

Tensor CudaOps::Empty(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const size_t bytes = static_cast<size_t>(n) * DTypeSize(dtype);
  if (capturing_) return ArenaEmpty(dtype, std::move(shape), bytes);
  void* p = nullptr;
  if (Begin()) {
    const cudaError_t e = cudaMallocAsync(&p, bytes == 0 ? 1 : bytes, stream_);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      Record(absl::ResourceExhaustedError(absl::StrCat(
          "out of GPU memory for a ", std::string(DTypeName(dtype)), " activation of ", bytes,
          " bytes: lower --max-batched-tokens or --gpu-memory-utilization (",
          cudaGetErrorName(e), ")")));
      p = nullptr;
    }
  }
  Buffer::Deleter free;
  if (p) {
    const int64_t live = activations_->live.fetch_add(static_cast<int64_t>(bytes)) +
                         static_cast<int64_t>(bytes);
    int64_t peak = activations_->peak.load();
    while (live > peak && !activations_->peak.compare_exchange_weak(peak, live)) {
    }
    free = FreeAsyncOn(options_.device, activations_, static_cast<int64_t>(bytes));
  }
  // After an error the tensor has no storage; the ops that would use it do nothing.
  return Tensor(std::make_shared<Buffer>(p, bytes, Device::kCuda, std::move(free)), dtype,
                std::move(shape));
}

const void* CudaOps::Stage(Staged& slot, const void* bytes, size_t size) {
  if (capturing_) return StageForGraph(slot, bytes, size);
  if (slot.device.empty() || slot.host.size() != size ||
      (size > 0 && std::memcmp(slot.host.data(), bytes, size) != 0)) {
    slot.host.assign(static_cast<const uint8_t*>(bytes), static_cast<const uint8_t*>(bytes) + size);
    slot.device = Empty(DType::kU8, {static_cast<int64_t>(size)});
    // From pageable memory: returns once the bytes are staged, so slot.host may change after.
    if (!Failed()) {
      RecordLaunch(cudaMemcpyAsync(slot.device.raw(), slot.host.data(), size,
                                   cudaMemcpyHostToDevice, stream_),
                   "uploading step metadata");
    }
    if (Failed()) {  // never reuse a copy that may not have happened
      slot.host.clear();
      slot.device = Tensor();
      return nullptr;
    }
  }
  return slot.device.raw();
}

void CudaOps::StageRope(const RopeTable& rope) {
  const int64_t half = rope.rope_dim / 2;
  const int64_t count = rope.num_positions * half;
  // The table is the model's (it only grows): known by its addresses and size, and by its
  // last position's values, which tell another model's table at a reused address apart.
  std::vector<float> last;
  if (count > 0) {
    last.assign(rope.cos + count - half, rope.cos + count);
    last.insert(last.end(), rope.sin + count - half, rope.sin + count);
  }
  if (rope.cos == rope_host_ && rope.sin == rope_host_sin_ &&
      rope.num_positions == rope_positions_ && rope.rope_dim == rope_dim_ && last == rope_last_) {
    return;
  }
  if (capturing_) {
    Record(absl::FailedPreconditionError(
        "the RoPE table grew while recording a step graph: record after a step at the longest "
        "position"));
    return;
  }
  if (graphs_made_ && !rope_cos_.empty()) {  // recorded graphs read the old table
    retired_rope_.push_back(std::move(rope_cos_));
    retired_rope_.push_back(std::move(rope_sin_));
  }
  const size_t bytes = static_cast<size_t>(count) * sizeof(float);
  rope_host_ = nullptr;  // until both copies are queued
  rope_cos_ = Empty(DType::kF32, {count});
  rope_sin_ = Empty(DType::kF32, {count});
  if (Failed()) return;
  RecordLaunch(cudaMemcpyAsync(rope_cos_.raw(), rope.cos, bytes, cudaMemcpyHostToDevice, stream_),
               "uploading the RoPE table");
  RecordLaunch(cudaMemcpyAsync(rope_sin_.raw(), rope.sin, bytes, cudaMemcpyHostToDevice, stream_),
               "uploading the RoPE table");
  if (Failed()) return;
  rope_host_ = rope.cos;
  rope_host_sin_ = rope.sin;
  rope_positions_ = rope.num_positions;
  rope_dim_ = rope.rope_dim;
  rope_last_ = std::move(last);
}

void CudaOps::SetZero(Tensor& t) {
  if (!Begin() || t.bytes() == 0) return;
  RecordLaunch(cudaMemsetAsync(t.raw(), 0, t.bytes(), stream_), "cudaMemsetAsync");
}

void CudaOps::GatherRows(const Tensor& x, std::span<const int32_t> rows, Tensor& out) {
  if (!Begin()) return;
  const int64_t n = static_cast<int64_t>(rows.size()), width = x.dim(1);
  CheckF32(x, x.dim(0), width, "rows to gather from");
  CheckF32(out, n, width, "gathered rows");
  for (int32_t r : rows) DSERVE_CHECK(r >= 0 && r < x.dim(0)) << "row " << r << " of " << x.dim(0);
  if (n == 0) return;
  const void* d_rows = Stage(rows_, rows.data(), rows.size_bytes());
  if (Failed()) return;
  RecordLaunch(LaunchGatherRows(x.data<float>(), width, static_cast<const int32_t*>(d_rows), n,
                                out.data<float>(), stream_),
               "GatherRows");
}

void CudaOps::CopyToHost(const Tensor& src, void* dst) {
  if (!Begin()) return;
  RecordLaunch(cudaMemcpyAsync(dst, src.raw(), src.bytes(), cudaMemcpyDeviceToHost, stream_),
               "copying to the host");
  RecordLaunch(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

void CudaOps::Embedding(const Weight& table, std::span<const int32_t> ids, Tensor& out) {
  if (!Begin()) return;
  const int64_t T = static_cast<int64_t>(ids.size());
  CheckF32(out, T, table.cols, "embedding output");
  for (int32_t id : ids) DSERVE_CHECK(id >= 0 && id < table.rows) << "token id " << id;
  if (table.dtype != DType::kF32 && table.dtype != DType::kBF16) {
    Record(absl::UnimplementedError(absl::StrCat(
        "the CUDA backend reads F32 or BF16 embedding tables, not ", std::string(DTypeName(table.dtype)))));
    return;
  }
  if (T == 0) return;
  const void* d_ids = Stage(ids_, ids.data(), ids.size_bytes());
  if (Failed()) return;
  RecordLaunch(LaunchEmbedding(table.data,
                               table.dtype == DType::kF32 ? TableType::kF32 : TableType::kBF16,
                               table.cols, static_cast<const int32_t*>(d_ids), T,
                               out.data<float>(), stream_),
               "Embedding");
}

void CudaOps::RmsNorm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  if (!Begin()) return;
  const int64_t T = x.dim(0), D = x.dim(1);
  CheckF32(x, T, D, "rmsnorm input");
  CheckF32(out, T, D, "rmsnorm output");
  DSERVE_CHECK(weight.numel() == D && weight.device() == Device::kCuda)
      << "rmsnorm weight " << weight.ShapeString();
  if (T == 0) return;
  RecordLaunch(LaunchRmsNorm(x.data<float>(), weight.data<float>(), eps, T, D, out.data<float>(),
                             stream_),
               "RmsNorm");
}

void CudaOps::AddRmsNorm(Tensor& residual, const Tensor& delta, const Tensor& weight, float eps,
                         Tensor& out) {
  if (!Begin()) return;
  const int64_t T = residual.dim(0), D = residual.dim(1);
  CheckF32(residual, T, D, "add+rmsnorm residual");
  CheckF32(delta, T, D, "add+rmsnorm delta");
  CheckF32(out, T, D, "add+rmsnorm output");
  DSERVE_CHECK(weight.numel() == D && weight.device() == Device::kCuda)
      << "rmsnorm weight " << weight.ShapeString();
  DSERVE_CHECK(out.raw() != residual.raw()) << "AddRmsNorm: out may not be the residual";
  if (T == 0) return;
  RecordLaunch(LaunchAddRmsNorm(residual.data<float>(), delta.data<float>(), weight.data<float>(),
                                eps, T, D, out.data<float>(), stream_),
               "AddRmsNorm");
}

void CudaOps::SiluMul(const Tensor& gate, const Tensor& up, Tensor& out) {
  if (!Begin()) return;
  DSERVE_CHECK(gate.numel() == up.numel() && out.numel() == gate.numel()) << "SiluMul shapes";
  CheckF32(gate, gate.dim(0), gate.dim(1), "SiluMul gate");
  CheckF32(up, gate.dim(0), gate.dim(1), "SiluMul up");
  CheckF32(out, gate.dim(0), gate.dim(1), "SiluMul output");
  RecordLaunch(LaunchSiluMul(gate.data<float>(), up.data<float>(), gate.numel(),
                             out.data<float>(), stream_),
               "SiluMul");
}

void CudaOps::Add(Tensor& x, const Tensor& y) {
  if (!Begin()) return;
  DSERVE_CHECK(x.numel() == y.numel() && x.dtype() == DType::kF32 && y.dtype() == DType::kF32 &&
               x.device() == Device::kCuda && y.device() == Device::kCuda)
      << "Add: " << x.ShapeString() << " + " << y.ShapeString();
  RecordLaunch(LaunchAdd(x.data<float>(), y.data<float>(), x.numel(), stream_), "Add");
}

void CudaOps::AddWeightedRows(const Tensor& rows, std::span<const int32_t> targets,
                              std::span<const float> weights, Tensor& out) {
  if (!Begin()) return;
  const int64_t n = static_cast<int64_t>(targets.size()), width = out.dim(1);
  CheckF32(rows, n, width, "rows to add");
  CheckF32(out, out.dim(0), width, "rows added to");
  DSERVE_CHECK(weights.size() == targets.size()) << "a weight per row";
  for (int32_t t : targets) DSERVE_CHECK(t >= 0 && t < out.dim(0)) << "target row " << t;
  if (n == 0) return;
  const auto* d_targets = static_cast<const int32_t*>(Stage(add_rows_, targets.data(), n * 4));
  const auto* d_weights = static_cast<const float*>(Stage(add_weights_, weights.data(), n * 4));
  if (Failed()) return;
  // The kernel adds without atomics, so each launch takes a run of distinct targets; runs go
  // in order on the stream, keeping the adds in order.
  std::vector<uint8_t> seen(static_cast<size_t>(out.dim(0)), 0);
  int64_t begin = 0;
  for (int64_t i = 0; i <= n && !Failed(); ++i) {
    if (i < n && !seen[targets[i]]) {
      seen[targets[i]] = 1;
      continue;
    }
    RecordLaunch(LaunchScatterAddScaled(rows.data<float>() + begin * width, width,
                                        d_targets + begin, d_weights + begin, i - begin,
                                        out.data<float>(), stream_),
                 "AddWeightedRows");
    for (int64_t j = begin; j < i; ++j) seen[targets[j]] = 0;
    begin = i;
    if (i < n) seen[targets[i]] = 1;
  }
}

void CudaOps::ConcatColumns(const Tensor& a, const Tensor& b, Tensor& out) {
  if (!Begin()) return;
  const int64_t T = a.dim(0), A = a.dim(1), B = b.dim(1);
  CheckF32(a, T, A, "concat left");
  CheckF32(b, T, B, "concat right");
  CheckF32(out, T, A + B, "concat output");
  RecordLaunch(LaunchConcatColumns(a.data<float>(), A, b.data<float>(), B, T, out.data<float>(),
                                   stream_),
               "ConcatColumns");
}

void CudaOps::Linear(const Tensor& x, const Weight& w, Tensor& out) {
  if (!Begin()) return;
  const int64_t T = x.dim(0);
  CheckF32(x, T, w.cols, "linear input");
  CheckF32(out, T, w.rows, "linear output");
  LinearInto(x.data<float>(), T, w, out.data<float>());
}

void CudaOps::LinearInto(const float* x, int64_t m, const Weight& w, float* out) {
  if (m == 0 || Failed()) return;
  if (options_.gemm == GemmMode::kTensorCores) {
    if (w.dtype == DType::kF8E4M3 && LinearFp8(x, m, w, out)) return;
    if (w.dtype == DType::kBF16 && LinearBf16(x, m, w, out)) return;
    if (Failed()) return;
  }
  RecordLaunch(LaunchLinear(x, m, ViewOf(w), out, stream_), "Linear");
}

bool CudaOps::LinearFp8(const float* x, int64_t m, const Weight& w, float* out) {
  const int64_t n = w.rows, k = w.cols;
  if (w.block_rows != 128 || w.block_cols != 128 || k % 512 != 0 || n % 8 != 0) return false;
  // cuBLASLt wants a multiple of 4 rows: the padding rows are zeros (scale 1).
  const int64_t mp = Fp8ScaleStride(m);
  Tensor q = Empty(DType::kU8, {mp, k});
  Tensor scales = Empty(DType::kF32, {k / kFp8Group, mp});
  Tensor product = Empty(DType::kBF16, {mp, n});
  if (Failed()) return true;
  if (mp > m) {
    RecordLaunch(cudaMemsetAsync(q.data<uint8_t>() + m * k, 0, static_cast<size_t>((mp - m) * k),
                                 stream_),
                 "cudaMemsetAsync");
  }
  RecordLaunch(LaunchQuantizeFp8PerGroup(x, m, k, q.data<uint8_t>(), scales.data<float>(),
                                         stream_),
               "QuantizeFp8PerGroup");
  GemmParams p;
  p.m = mp;
  p.n = n;
  p.k = k;
  p.x = q.raw();
  p.w = w.data;
  p.x_scales = scales.data<float>();
  p.w_scales = w.scale_inv;
  p.out = product.raw();
  if (Failed()) return true;
  Record(blas_->Fp8BlockScaled(p, stream_));
  if (Failed()) return true;
  RecordLaunch(LaunchBf16ToF32(product.data<uint16_t>(), m * n, out, stream_), "Bf16ToF32");
  return true;
}

bool CudaOps::LinearBf16(const float* x, int64_t m, const Weight& w, float* out) {
  const int64_t n = w.rows, k = w.cols;
  if (k % 8 != 0 || n % 8 != 0) return false;
  Tensor xb = Empty(DType::kBF16, {m, k});
  if (Failed()) return true;
  RecordLaunch(LaunchF32ToBf16(x, m * k, xb.data<uint16_t>(), stream_), "F32ToBf16");
  GemmParams p;
  p.m = m;
  p.n = n;
  p.k = k;
  p.x = xb.raw();
  p.w = w.data;
  p.out = out;
  p.out_f32 = true;  // products in F32, straight into the output
  if (Failed()) return true;
  Record(blas_->Bf16(p, stream_));
  return true;
}

}  // namespace dserve::kernels::cuda
