#include "models/safetensors.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "nlohmann/json.hpp"

namespace dserve::models {
namespace {

// The format's own limit; anything larger is a corrupt length field.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

}  // namespace

int64_t TensorEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorEntry::ShapeString() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) absl::StrAppend(&s, i ? ", " : "", shape[i]);
  return s + "]";
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  auto file = std::unique_ptr<SafetensorsFile>(new SafetensorsFile());
  DSERVE_ASSIGN_OR_RETURN(file->file_, MappedFile::Open(path));
  DSERVE_RETURN_IF_ERROR(file->ParseHeader());
  return file;
}

const TensorEntry* SafetensorsFile::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

absl::Status SafetensorsFile::ParseHeader() {
  const std::string& path = file_.path();
  const size_t size = file_.size();
  auto corrupt = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(path, ": ", what));
  };
  if (size < 8) {
    return corrupt(absl::StrCat("truncated: ", size,
                                " bytes, not even the 8-byte header length of a safetensors file"));
  }
  uint64_t header_len;
  std::memcpy(&header_len, file_.data(), 8);  // little-endian, as x86 and ARM are
  if (header_len > kMaxHeaderBytes || header_len > size - 8) {
    return corrupt(absl::StrCat("header length ", header_len, " points outside the file (",
                                size, " bytes): truncated or not a safetensors file"));
  }
  const char* header = reinterpret_cast<const char*>(file_.data() + 8);
  auto root = nlohmann::json::parse(header, header + header_len, nullptr, false);
  if (root.is_discarded() || !root.is_object()) {
    return corrupt("header is not a JSON object: corrupt or not a safetensors file");
  }
  const uint8_t* data_begin = file_.data() + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const auto& v = it.value();
    auto bad = [&](const std::string& what) {
      return corrupt(absl::StrCat("tensor ", name, ": ", what));
    };
    if (!v.is_object() || !v.contains("dtype") || !v["dtype"].is_string() ||
        !v.contains("shape") || !v["shape"].is_array() || !v.contains("data_offsets") ||
        !v["data_offsets"].is_array() || v["data_offsets"].size() != 2) {
      return bad("header entry needs dtype, shape and data_offsets [begin, end]");
    }
    TensorEntry e;
    e.name = name;
    e.file = &file_.path();
    const std::string dtype_name = v["dtype"].get<std::string>();
    auto dtype = ParseDType(dtype_name);
    if (!dtype) return bad(absl::StrCat("unknown dtype '", dtype_name, "'"));
    e.dtype = *dtype;
    int64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) return bad("shape entries must be non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 40) || (numel > 0 && dim > (1ull << 62) / numel)) {
        return bad("shape is implausibly large");
      }
      e.shape.push_back(static_cast<int64_t>(dim));
      numel *= static_cast<int64_t>(dim);
    }
    const auto& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return bad("data_offsets must be non-negative integers");
    }
    const uint64_t begin = off[0].get<uint64_t>();
    const uint64_t end = off[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return bad(absl::StrCat("data_offsets [", begin, ", ", end,
                              ") point outside the file's data section of ", data_size,
                              " bytes: the file is truncated or corrupt"));
    }
    // Compared by division first: numel * size can overflow 64 bits for absurd shapes.
    const uint64_t size = DTypeSize(e.dtype);
    const uint64_t expected =
        static_cast<uint64_t>(numel) <= data_size / size ? static_cast<uint64_t>(numel) * size : 0;
    if (static_cast<uint64_t>(numel) > data_size / size || end - begin != expected) {
      return bad(absl::StrCat(end - begin, " bytes do not hold shape ", e.ShapeString(), " of ",
                              dtype_name, " (", numel, " elements of ", size, " bytes)"));
    }
    e.data = data_begin + begin;
    e.bytes = end - begin;
    tensors_.emplace(name, std::move(e));
  }
  return absl::OkStatus();
}

}  // namespace dserve::models
