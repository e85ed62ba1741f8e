#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace dserve {

std::shared_ptr<Buffer> AllocateHost(size_t bytes) {
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* data = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (data == nullptr) throw std::bad_alloc();
  return std::make_shared<Buffer>(data, bytes, Device::kCpu, &std::free);
}

Tensor::Tensor(std::shared_ptr<Buffer> buffer, DType dtype, std::vector<int64_t> shape,
               size_t byte_offset)
    : buffer_(std::move(buffer)), dtype_(dtype), shape_(std::move(shape)), offset_(byte_offset) {
  DSERVE_CHECK(offset_ + bytes() <= buffer_->bytes())
      << "tensor " << ShapeString() << " at offset " << offset_ << " exceeds its buffer of "
      << buffer_->bytes() << " bytes";
}

Tensor Tensor::Zeros(DType dtype, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const size_t bytes = static_cast<size_t>(n) * DTypeSize(dtype);
  auto buffer = AllocateHost(bytes);
  std::memset(buffer->data(), 0, bytes);
  return Tensor(std::move(buffer), dtype, std::move(shape));
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}

std::string Tensor::ShapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < shape_.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape_[i]);
  }
  return s + "]";
}

Tensor Tensor::Rows(int64_t begin, int64_t count) const {
  DSERVE_CHECK(rank() >= 1 && begin >= 0 && count >= 0 && begin + count <= shape_[0])
      << "rows [" << begin << ", " << begin + count << ") of " << ShapeString();
  std::vector<int64_t> shape = shape_;
  shape[0] = count;
  const size_t row_bytes = shape_[0] == 0 ? 0 : bytes() / shape_[0];
  return Tensor(buffer_, dtype_, std::move(shape), offset_ + begin * row_bytes);
}

Tensor Tensor::Reshape(std::vector<int64_t> shape) const {
  Tensor t = *this;
  t.shape_ = std::move(shape);
  DSERVE_CHECK(t.numel() == numel()) << "reshape " << ShapeString() << " to " << t.ShapeString();
  return t;
}

}  // namespace dserve
