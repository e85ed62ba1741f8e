#include "core/npy_writer.h"

#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"

namespace dserve {

absl::Status WriteNpyFloat32(const std::string& path, std::span<const float> values,
                             const std::vector<int64_t>& shape) {
  int64_t n = 1;
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) {
    n *= shape[i];
    absl::StrAppend(&dims, shape[i], shape.size() == 1 || i + 1 < shape.size() ? "," : "");
    if (i + 1 < shape.size()) dims += " ";
  }
  if (n != static_cast<int64_t>(values.size())) {
    return absl::InternalError(
        absl::StrCat("npy shape holds ", n, " values but ", values.size(), " were given"));
  }
  std::string header =
      absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", dims, "), }");
  // Magic (6) + version (2) + header length (2) + header, padded with spaces to 64 bytes
  // and ended by a newline, as the format asks.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';

  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!f) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  const unsigned char preamble[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                      static_cast<unsigned char>(header.size() & 0xFF),
                                      static_cast<unsigned char>(header.size() >> 8)};
  bool ok = std::fwrite(preamble, 1, sizeof preamble, f.get()) == sizeof preamble &&
            std::fwrite(header.data(), 1, header.size(), f.get()) == header.size() &&
            std::fwrite(values.data(), sizeof(float), values.size(), f.get()) == values.size();
  ok = (std::fclose(f.release()) == 0) && ok;
  if (!ok) return absl::DataLossError(absl::StrCat("short write to ", path));
  return absl::OkStatus();
}

}  // namespace dserve
