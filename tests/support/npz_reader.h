// Minimal reader for NumPy .npy files and .npz archives (test support only).
//
// Supports npy format versions 1.0, 2.0 and 3.0 with C-order data and simple (non-structured)
// dtypes; .npz archives whose entries are stored (method 0) or deflated (method 8), including
// Zip64 records. All errors are reported as std::runtime_error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dserve::testing {

struct NpyArray {
  std::string descr;           // e.g. "<f8", "<i8", "<f4", "|b1", "<U8"
  std::vector<int64_t> shape;  // () -> empty (a scalar, numel() == 1)
  std::vector<uint8_t> bytes;  // raw little-endian data, C order

  int64_t numel() const;
  // Element values as double; descr must be a little-endian float ("<f8", "<f4"), signed or
  // unsigned integer ("<i8", "<i4", "<i2", "|i1", "<u8", ...) or bool ("|b1").
  std::vector<double> AsDoubles() const;
  // Element values as int64; descr must be an integer or bool type (floats are rejected).
  std::vector<int64_t> AsInts() const;
  // The string held by a single-element unicode ("<U*", UTF-32LE, converted to UTF-8) or byte
  // string ("|S*") array, with numpy's trailing NUL padding removed.
  std::string AsString() const;
};

// Reads a .npy file.
NpyArray ReadNpy(const std::string& path);
// Parses the bytes of a .npy file; `what` names the source in error messages.
NpyArray ParseNpy(const uint8_t* data, size_t size, const std::string& what);
// Reads every member of a .npz archive; keys are the member names without the ".npy" suffix.
std::map<std::string, NpyArray> ReadNpz(const std::string& path);

}  // namespace dserve::testing
