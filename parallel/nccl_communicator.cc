#include "parallel/nccl_communicator.h"

#include <cstring>

#include <nccl.h>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace dserve::parallel {
namespace {

absl::Status NcclStatus(ncclResult_t r, const char* call, int line) {
  if (r == ncclSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", ncclGetErrorString(r), " (",
                                          ncclGetLastError(nullptr), ") at nccl_communicator.cc:",
                                          line));
}

absl::Status CudaStatusOf(cudaError_t e, const char* call, int line) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(call, " failed: ", cudaGetErrorName(e), " (",
                                          cudaGetErrorString(e), ") at nccl_communicator.cc:",
                                          line));
}

#define DSERVE_NCCL(call) DSERVE_RETURN_IF_ERROR(NcclStatus((call), #call, __LINE__))
#define DSERVE_NCCL_CUDA(call) DSERVE_RETURN_IF_ERROR(CudaStatusOf((call), #call, __LINE__))

}  // namespace

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  void* barrier_word = nullptr;  // one float on the device for Barrier's all-reduce
  ~Impl() {
    (void)cudaSetDevice(device);
    if (comm) (void)ncclCommDestroy(comm);
    if (barrier_word) (void)cudaFree(barrier_word);
  }
};

absl::StatusOr<std::vector<uint8_t>> NewNcclId() {
  ncclUniqueId id;
  DSERVE_NCCL(ncclGetUniqueId(&id));
  return std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&id),
                              reinterpret_cast<uint8_t*>(&id) + sizeof(id));
}

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    const std::vector<uint8_t>& id, int rank, int size, int device, cudaStream_t stream) {
  if (id.size() != sizeof(ncclUniqueId)) {
    return absl::InvalidArgumentError(
        absl::StrCat("an NCCL id has ", sizeof(ncclUniqueId), " bytes, got ", id.size()));
  }
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(absl::StrCat("NCCL rank ", rank, " of ", size));
  }
  ncclUniqueId uid;
  std::memcpy(&uid, id.data(), sizeof(uid));
  auto impl = std::make_unique<Impl>();
  impl->stream = stream;
  impl->device = device;
  DSERVE_NCCL_CUDA(cudaSetDevice(device));
  DSERVE_NCCL(ncclCommInitRank(&impl->comm, size, uid, rank));
  DSERVE_NCCL_CUDA(cudaMalloc(&impl->barrier_word, sizeof(float)));
  return std::unique_ptr<NcclCommunicator>(new NcclCommunicator(std::move(impl), rank, size));
}

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl, int rank, int size)
    : impl_(std::move(impl)), rank_(rank), size_(size) {}

NcclCommunicator::~NcclCommunicator() = default;

absl::Status NcclCommunicator::AllReduceSum(float* data, int64_t count) {
  DSERVE_NCCL_CUDA(cudaSetDevice(impl_->device));
  DSERVE_NCCL(ncclAllReduce(data, data, static_cast<size_t>(count), ncclFloat32, ncclSum,
                            impl_->comm, impl_->stream));
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllGather(const void* send, int64_t bytes, void* recv) {
  DSERVE_NCCL_CUDA(cudaSetDevice(impl_->device));
  DSERVE_NCCL(ncclAllGather(send, recv, static_cast<size_t>(bytes), ncclUint8, impl_->comm,
                            impl_->stream));
  return absl::OkStatus();
}

absl::Status NcclCommunicator::AllToAllV(const void* send, std::span<const int64_t> send_bytes,
                                         void* recv, std::span<const int64_t> recv_bytes) {
  if (static_cast<int>(send_bytes.size()) != size_ ||
      static_cast<int>(recv_bytes.size()) != size_) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAllV needs a size per rank (", size_,
                                                   ")"));
  }
  DSERVE_NCCL_CUDA(cudaSetDevice(impl_->device));
  // Point-to-point pairs in one group: NCCL's way of an all-to-all with variable counts.
  DSERVE_NCCL(ncclGroupStart());
  int64_t sent = 0, got = 0;
  absl::Status status;
  for (int p = 0; p < size_ && status.ok(); ++p) {
    if (send_bytes[p] > 0) {
      status = NcclStatus(ncclSend(static_cast<const uint8_t*>(send) + sent,
                                   static_cast<size_t>(send_bytes[p]), ncclUint8, p, impl_->comm,
                                   impl_->stream),
                          "ncclSend", __LINE__);
    }
    if (status.ok() && recv_bytes[p] > 0) {
      status = NcclStatus(ncclRecv(static_cast<uint8_t*>(recv) + got,
                                   static_cast<size_t>(recv_bytes[p]), ncclUint8, p, impl_->comm,
                                   impl_->stream),
                          "ncclRecv", __LINE__);
    }
    sent += send_bytes[p];
    got += recv_bytes[p];
  }
  const absl::Status ended = NcclStatus(ncclGroupEnd(), "ncclGroupEnd", __LINE__);
  return status.ok() ? ended : status;
}

absl::Status NcclCommunicator::Broadcast(void* data, int64_t bytes, int root) {
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(absl::StrCat("Broadcast from rank ", root, " of ", size_));
  }
  DSERVE_NCCL_CUDA(cudaSetDevice(impl_->device));
  DSERVE_NCCL(ncclBroadcast(data, data, static_cast<size_t>(bytes), ncclUint8, root, impl_->comm,
                            impl_->stream));
  return absl::OkStatus();
}

absl::Status NcclCommunicator::Barrier() {
  DSERVE_NCCL_CUDA(cudaSetDevice(impl_->device));
  DSERVE_NCCL(ncclAllReduce(impl_->barrier_word, impl_->barrier_word, 1, ncclFloat32, ncclSum,
                            impl_->comm, impl_->stream));
  DSERVE_NCCL_CUDA(cudaStreamSynchronize(impl_->stream));
  return absl::OkStatus();
}

}  // namespace dserve::parallel
