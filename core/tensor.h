// Tensor: a typed, shaped view of a reference-counted buffer on one device.
// Activations and scratch are Tensors; weights are views of the mapped checkpoint (kernels/weight.h).
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"

namespace dserve {

enum class Device : uint8_t { kCpu, kCuda };

// A block of device memory released by its deleter when the last Tensor viewing it goes.
class Buffer {
 public:
  using Deleter = std::function<void(void*)>;
  Buffer(void* data, size_t bytes, Device device, Deleter deleter)
      : data_(data), bytes_(bytes), device_(device), deleter_(std::move(deleter)) {}
  ~Buffer() {
    if (deleter_ && data_) deleter_(data_);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t bytes_;
  Device device_;
  Deleter deleter_;
};

// Host allocation aligned to 64 bytes (a cache line, one AVX-512 register).
std::shared_ptr<Buffer> AllocateHost(size_t bytes);

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Buffer> buffer, DType dtype, std::vector<int64_t> shape,
         size_t byte_offset = 0);

  // Zero-filled host tensor.
  static Tensor Zeros(DType dtype, std::vector<int64_t> shape);

  bool empty() const { return buffer_ == nullptr; }
  DType dtype() const { return dtype_; }
  Device device() const { return buffer_ ? buffer_->device() : Device::kCpu; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const;
  size_t bytes() const { return static_cast<size_t>(numel()) * DTypeSize(dtype_); }
  std::string ShapeString() const;

  void* raw() const { return static_cast<char*>(buffer_->data()) + offset_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }

  // Rows [begin, begin + count) along dimension 0, sharing the buffer.
  Tensor Rows(int64_t begin, int64_t count) const;
  // Same elements, another shape (element counts must agree).
  Tensor Reshape(std::vector<int64_t> shape) const;

 private:
  std::shared_ptr<Buffer> buffer_;
  DType dtype_ = DType::kF32;
  std::vector<int64_t> shape_;
  size_t offset_ = 0;
};

}  // namespace dserve
