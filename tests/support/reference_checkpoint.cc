#include "reference_checkpoint.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <stdexcept>

#include "nlohmann/json.hpp"

namespace dserve::testing::reference {
namespace {

using json = nlohmann::json;

// -----------------------------------------------------------------------------------------------
// Scalar decoding of checkpoint dtypes (little-endian).
// -----------------------------------------------------------------------------------------------

double DecodeBf16(const uint8_t* p) {
  const uint32_t bits = (uint32_t{p[0]} | (uint32_t{p[1]} << 8)) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

double DecodeF16(const uint8_t* p) {
  const uint32_t h = uint32_t{p[0]} | (uint32_t{p[1]} << 8);
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  const int exp = (h >> 10) & 0x1F;
  const int mant = h & 0x3FF;
  if (exp == 0) return sign * std::ldexp(mant, -24);  // subnormal: mant/1024 * 2^-14
  if (exp == 31) {
    return mant ? std::numeric_limits<double>::quiet_NaN()
                : sign * std::numeric_limits<double>::infinity();
  }
  return sign * std::ldexp(1024 + mant, exp - 15 - 10);
}

double DecodeF32(const uint8_t* p) {
  const uint32_t bits =
      uint32_t{p[0]} | (uint32_t{p[1]} << 8) | (uint32_t{p[2]} << 16) | (uint32_t{p[3]} << 24);
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

double DecodeF64(const uint8_t* p) {
  uint64_t bits = 0;
  for (int i = 7; i >= 0; --i) bits = (bits << 8) | p[i];
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}

int64_t DtypeSize(const std::string& dtype) {
  if (dtype == "F8_E4M3" || dtype == "F8_E5M2" || dtype == "U8" || dtype == "I8" ||
      dtype == "BOOL") {
    return 1;
  }
  if (dtype == "BF16" || dtype == "F16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  return 0;  // unknown
}

}  // namespace

[[noreturn]] void Fail(const std::string& msg) {
  throw std::runtime_error("ReferenceModel: " + msg);
}

std::string ShapeStr(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// FP8 E4M3 "fn": 1 sign, 4 exponent (bias 7), 3 mantissa bits; no infinities; S.1111.111 = NaN.
double DecodeFp8E4M3(uint8_t b) {
  const double sign = (b & 0x80) ? -1.0 : 1.0;
  const int exp = (b >> 3) & 0xF;
  const int mant = b & 0x7;
  if (exp == 15 && mant == 7) return std::numeric_limits<double>::quiet_NaN();
  if (exp == 0) return sign * std::ldexp(mant, -9);  // subnormal: mant/8 * 2^-6
  return sign * std::ldexp(8 + mant, exp - 7 - 3);   // (1 + mant/8) * 2^(exp-7)
}

FloatType ParseFloatType(const std::string& dtype, const std::string& tensor) {
  if (dtype == "F8_E4M3") return FloatType::kF8E4M3;
  if (dtype == "BF16") return FloatType::kBF16;
  if (dtype == "F16") return FloatType::kF16;
  if (dtype == "F32") return FloatType::kF32;
  if (dtype == "F64") return FloatType::kF64;
  Fail(tensor + " has unsupported dtype " + dtype);
}

// Value of element i of a raw buffer (FP8 values are returned unscaled).
double DecodeElement(FloatType type, const uint8_t* raw, int64_t i) {
  switch (type) {
    case FloatType::kF8E4M3:
      return DecodeFp8E4M3(raw[i]);
    case FloatType::kBF16:
      return DecodeBf16(raw + 2 * i);
    case FloatType::kF16:
      return DecodeF16(raw + 2 * i);
    case FloatType::kF32:
      return DecodeF32(raw + 4 * i);
    case FloatType::kF64:
      return DecodeF64(raw + 8 * i);
  }
  Fail("invalid FloatType");
}

// -----------------------------------------------------------------------------------------------
// safetensors checkpoint (single file or sharded with model.safetensors.index.json)
// -----------------------------------------------------------------------------------------------

Checkpoint::Checkpoint(const std::string& dir) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string single_path = dir + "/model.safetensors";
  std::ifstream index_file(index_path);
  if (index_file) {
    json index;
    try {
      index = json::parse(index_file);
    } catch (const json::exception& e) {
      Fail("cannot parse " + index_path + ": " + e.what());
    }
    if (!index.contains("weight_map") || !index["weight_map"].is_object()) {
      Fail(index_path + " has no weight_map object");
    }
    std::map<std::string, std::string> weight_map;
    std::set<std::string> files;
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) Fail(index_path + ": weight_map entry for " + name + " not a string");
      weight_map[name] = file.get<std::string>();
      files.insert(file.get<std::string>());
    }
    for (const std::string& f : files) ParseFile(dir + "/" + f);
    for (const auto& [name, file] : weight_map) {
      auto it = tensors_.find(name);
      if (it == tensors_.end() || it->second.file != dir + "/" + file) {
        Fail(index_path + " maps " + name + " to " + file + ", which does not contain it");
      }
    }
  } else {
    std::ifstream single(single_path, std::ios::binary);
    if (!single) Fail("no model.safetensors.index.json or model.safetensors in " + dir);
    ParseFile(single_path);
  }
}

bool Checkpoint::Has(const std::string& name) const { return tensors_.count(name) != 0; }

const TensorInfo& Checkpoint::Info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) Fail("checkpoint has no tensor " + name);
  return it->second;
}

std::vector<uint8_t> Checkpoint::ReadRaw(const std::string& name) const {
  const TensorInfo& t = Info(name);
  std::ifstream f(t.file, std::ios::binary);
  if (!f) Fail("cannot open " + t.file);
  std::vector<uint8_t> raw(t.nbytes);
  f.seekg(static_cast<std::streamoff>(t.offset));
  if (t.nbytes > 0 &&
      !f.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(t.nbytes))) {
    Fail("cannot read tensor " + name + " from " + t.file);
  }
  return raw;
}

void Checkpoint::ParseFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) Fail("cannot open " + path);
  f.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(f.tellg());
  f.seekg(0, std::ios::beg);
  uint8_t len_bytes[8];
  if (file_size < 8 || !f.read(reinterpret_cast<char*>(len_bytes), 8)) {
    Fail(path + " is too small to be a safetensors file");
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > file_size - 8) Fail(path + ": safetensors header length exceeds file size");
  std::string header_text(header_len, '\0');
  if (!f.read(header_text.data(), static_cast<std::streamsize>(header_len))) {
    Fail("cannot read safetensors header of " + path);
  }
  json header;
  try {
    header = json::parse(header_text);
  } catch (const json::exception& e) {
    Fail("cannot parse safetensors header of " + path + ": " + e.what());
  }
  if (!header.is_object()) Fail(path + ": safetensors header is not a JSON object");
  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = file_size - data_start;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    TensorInfo t;
    t.file = path;
    try {
      t.dtype = entry.at("dtype").get<std::string>();
      t.shape = entry.at("shape").get<std::vector<int64_t>>();
      const auto offsets = entry.at("data_offsets").get<std::vector<uint64_t>>();
      if (offsets.size() != 2) Fail(path + ": bad data_offsets for " + name);
      if (offsets[1] < offsets[0] || offsets[1] > data_size) {
        Fail(path + ": data_offsets of " + name + " out of range");
      }
      t.offset = data_start + offsets[0];
      t.nbytes = offsets[1] - offsets[0];
    } catch (const json::exception& e) {
      Fail(path + ": malformed header entry for " + name + ": " + e.what());
    }
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) Fail(path + ": negative dimension in " + name);
      numel *= d;
    }
    const int64_t esize = DtypeSize(t.dtype);
    if (esize > 0 && static_cast<uint64_t>(numel * esize) != t.nbytes) {
      Fail(path + ": " + name + " has " + std::to_string(t.nbytes) + " bytes but shape " +
           ShapeStr(t.shape) + " of " + t.dtype + " needs " + std::to_string(numel * esize));
    }
    if (!tensors_.emplace(name, t).second) Fail("tensor " + name + " appears in two files");
  }
}

}  // namespace dserve::testing::reference
