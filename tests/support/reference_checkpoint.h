// The reference model's checkpoint reading (test support only): safetensors files, single or
// sharded through model.safetensors.index.json, read with plain ifstreams, and the checkpoint
// dtypes (FP8 E4M3, BF16, F16, F32, F64) decoded to double. Errors: std::runtime_error.
// Independent of the project's own loader (models/), like the rest of the reference model.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dserve::testing::reference {

// Throws std::runtime_error("ReferenceModel: " + msg).
[[noreturn]] void Fail(const std::string& msg);
// "[2, 3]".
std::string ShapeStr(const std::vector<int64_t>& shape);

// FP8 E4M3 "fn": 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; S.1111.111 = NaN.
double DecodeFp8E4M3(uint8_t b);

// The floating-point checkpoint dtypes this reference can read.
enum class FloatType { kF8E4M3, kBF16, kF16, kF32, kF64 };
// Throws, naming `tensor`, for dtypes that are not one of those.
FloatType ParseFloatType(const std::string& dtype, const std::string& tensor);
// Value of element i of a raw buffer (FP8 values are returned unscaled).
double DecodeElement(FloatType type, const uint8_t* raw, int64_t i);

// Where one tensor's bytes are.
struct TensorInfo {
  std::string file;  // full path
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // absolute byte offset of the data in the file
  uint64_t nbytes = 0;
};

// The tensors of a checkpoint folder by name; an index, when present, must place each tensor
// in the shard that holds it. Bytes are read on request.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& dir);

  bool Has(const std::string& name) const;
  const TensorInfo& Info(const std::string& name) const;
  std::vector<uint8_t> ReadRaw(const std::string& name) const;

 private:
  void ParseFile(const std::string& path);

  std::map<std::string, TensorInfo> tensors_;
};

}  // namespace dserve::testing::reference
