#include "npz_reader.h"

#include <zlib.h>

#include "core/utf8.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>

namespace dserve::testing {
namespace {

[[noreturn]] void Fail(const std::string& what, const std::string& msg) {
  throw std::runtime_error(what + ": " + msg);
}

std::vector<uint8_t> ReadWholeFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 0) throw std::runtime_error("cannot determine size of " + path);
  f.seekg(0, std::ios::beg);
  std::vector<uint8_t> data(static_cast<size_t>(size));
  if (size > 0 && !f.read(reinterpret_cast<char*>(data.data()), size)) {
    throw std::runtime_error("cannot read " + path);
  }
  return data;
}

uint64_t LoadLE(const uint8_t* p, int nbytes) {
  uint64_t v = 0;
  for (int i = nbytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// ---------------------------------------------------------------------------------------------
// dtype descriptors
// ---------------------------------------------------------------------------------------------

struct Descr {
  char kind = 0;         // 'f', 'i', 'u', 'b', 'U', 'S'
  int64_t itemsize = 0;  // bytes per element
};

Descr ParseDescr(const std::string& descr, const std::string& what) {
  if (descr.size() < 3) Fail(what, "unsupported dtype descr '" + descr + "'");
  const char order = descr[0];
  Descr d;
  d.kind = descr[1];
  int64_t n = 0;
  for (size_t i = 2; i < descr.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(descr[i]))) {
      Fail(what, "unsupported dtype descr '" + descr + "'");
    }
    n = n * 10 + (descr[i] - '0');
    if (n > (int64_t{1} << 40)) Fail(what, "dtype size too large in '" + descr + "'");
  }
  switch (d.kind) {
    case 'f':
      if (n != 4 && n != 8) Fail(what, "unsupported float dtype '" + descr + "'");
      d.itemsize = n;
      break;
    case 'i':
    case 'u':
      if (n != 1 && n != 2 && n != 4 && n != 8) {
        Fail(what, "unsupported integer dtype '" + descr + "'");
      }
      d.itemsize = n;
      break;
    case 'b':
      if (n != 1) Fail(what, "unsupported bool dtype '" + descr + "'");
      d.itemsize = 1;
      break;
    case 'U':
      d.itemsize = 4 * n;
      break;
    case 'S':
      d.itemsize = n;
      break;
    default:
      Fail(what, "unsupported dtype descr '" + descr + "'");
  }
  const bool single_byte = d.itemsize == 1 || d.kind == 'S';
  if (order == '>' && !single_byte) Fail(what, "big-endian dtype '" + descr + "' not supported");
  if (order != '<' && order != '|' && order != '=' && order != '>') {
    Fail(what, "unsupported byte order in dtype '" + descr + "'");
  }
  return d;
}

// ---------------------------------------------------------------------------------------------
// npy header (a Python dict literal)
// ---------------------------------------------------------------------------------------------

void SkipSpaces(const std::string& s, size_t* pos) {
  while (*pos < s.size() && std::isspace(static_cast<unsigned char>(s[*pos]))) ++*pos;
}

// Position just after "'key':" (or "\"key\":") and any following spaces.
size_t FindValue(const std::string& h, const std::string& key, const std::string& what) {
  size_t p = h.find("'" + key + "'");
  if (p == std::string::npos) p = h.find("\"" + key + "\"");
  if (p == std::string::npos) Fail(what, "npy header lacks '" + key + "': " + h);
  p += key.size() + 2;
  SkipSpaces(h, &p);
  if (p >= h.size() || h[p] != ':') Fail(what, "malformed npy header: " + h);
  ++p;
  SkipSpaces(h, &p);
  return p;
}

struct NpyHeader {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

NpyHeader ParseHeaderDict(const std::string& h, const std::string& what) {
  NpyHeader out;
  // descr
  size_t p = FindValue(h, "descr", what);
  if (p >= h.size() || (h[p] != '\'' && h[p] != '"')) {
    Fail(what, "structured or non-string dtype descr not supported: " + h);
  }
  const char quote = h[p];
  const size_t end = h.find(quote, p + 1);
  if (end == std::string::npos) Fail(what, "malformed descr in npy header: " + h);
  out.descr = h.substr(p + 1, end - p - 1);
  // fortran_order
  p = FindValue(h, "fortran_order", what);
  if (h.compare(p, 4, "True") == 0) {
    out.fortran_order = true;
  } else if (h.compare(p, 5, "False") == 0) {
    out.fortran_order = false;
  } else {
    Fail(what, "malformed fortran_order in npy header: " + h);
  }
  // shape
  p = FindValue(h, "shape", what);
  if (p >= h.size() || h[p] != '(') Fail(what, "malformed shape in npy header: " + h);
  const size_t close = h.find(')', p);
  if (close == std::string::npos) Fail(what, "malformed shape in npy header: " + h);
  const std::string inner = h.substr(p + 1, close - p - 1);
  size_t start = 0;
  while (start <= inner.size()) {
    size_t comma = inner.find(',', start);
    if (comma == std::string::npos) comma = inner.size();
    std::string tok = inner.substr(start, comma - start);
    tok.erase(std::remove_if(tok.begin(), tok.end(),
                             [](char c) { return std::isspace(static_cast<unsigned char>(c)); }),
              tok.end());
    if (!tok.empty() && tok.back() == 'L') tok.pop_back();  // Python 2 long literal
    if (!tok.empty()) {
      int64_t v = 0;
      for (char c : tok) {
        if (!std::isdigit(static_cast<unsigned char>(c))) {
          Fail(what, "malformed shape in npy header: " + h);
        }
        v = v * 10 + (c - '0');
        if (v > (int64_t{1} << 48)) Fail(what, "shape dimension too large: " + h);
      }
      out.shape.push_back(v);
    }
    start = comma + 1;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// zip
// ---------------------------------------------------------------------------------------------

constexpr uint32_t kLocalHeaderSig = 0x04034b50;
constexpr uint32_t kCentralHeaderSig = 0x02014b50;
constexpr uint32_t kEndOfCentralDirSig = 0x06054b50;
constexpr uint32_t kZip64EndOfCentralDirSig = 0x06064b50;
constexpr uint32_t kZip64LocatorSig = 0x07064b50;

std::vector<uint8_t> Inflate(const uint8_t* in, uint64_t in_size, uint64_t out_size,
                             const std::string& what) {
  std::vector<uint8_t> out(static_cast<size_t>(out_size));
  z_stream s;
  std::memset(&s, 0, sizeof(s));
  if (inflateInit2(&s, -MAX_WBITS) != Z_OK) Fail(what, "inflateInit2 failed");
  constexpr uint64_t kChunk = uint64_t{1} << 30;
  uint64_t in_left = in_size, out_left = out_size;
  uint8_t* out_ptr = out.data();
  uint8_t dummy = 0;
  s.next_out = &dummy;  // valid pointer even when the output is empty
  s.avail_out = 0;
  int ret = Z_OK;
  for (;;) {
    if (s.avail_in == 0 && in_left > 0) {
      const uInt n = static_cast<uInt>(std::min(in_left, kChunk));
      s.next_in = const_cast<Bytef*>(in);
      s.avail_in = n;
      in += n;
      in_left -= n;
    }
    if (s.avail_out == 0 && out_left > 0) {
      const uInt n = static_cast<uInt>(std::min(out_left, kChunk));
      s.next_out = out_ptr;
      s.avail_out = n;
      out_ptr += n;
      out_left -= n;
    }
    ret = inflate(&s, Z_NO_FLUSH);
    if (ret == Z_STREAM_END) break;
    if (ret != Z_OK) {
      const std::string msg = s.msg ? s.msg : "";
      const bool output_full = s.avail_out == 0 && out_left == 0;
      inflateEnd(&s);
      if (ret == Z_BUF_ERROR && output_full) {
        Fail(what, "deflated data is larger than the declared size");
      }
      if (ret == Z_BUF_ERROR) Fail(what, "deflated data is truncated");
      Fail(what, "inflate failed (" + std::to_string(ret) + ") " + msg);
    }
  }
  const uint64_t produced = s.total_out;
  inflateEnd(&s);
  if (produced != out_size) {
    Fail(what,
         "inflated " + std::to_string(produced) + " bytes, expected " + std::to_string(out_size));
  }
  return out;
}

}  // namespace

// -----------------------------------------------------------------------------------------------
// NpyArray
// -----------------------------------------------------------------------------------------------

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<double> NpyArray::AsDoubles() const {
  const Descr d = ParseDescr(descr, "AsDoubles");
  const int64_t n = numel();
  if (static_cast<int64_t>(bytes.size()) != n * d.itemsize) {
    throw std::runtime_error("NpyArray::AsDoubles: byte size does not match shape");
  }
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = bytes.data() + i * d.itemsize;
    const uint64_t raw = LoadLE(p, static_cast<int>(d.itemsize));
    switch (d.kind) {
      case 'f':
        if (d.itemsize == 8) {
          double v;
          std::memcpy(&v, &raw, 8);
          out[i] = v;
        } else {
          const uint32_t r32 = static_cast<uint32_t>(raw);
          float v;
          std::memcpy(&v, &r32, 4);
          out[i] = v;
        }
        break;
      case 'i': {
        const int shift = 64 - 8 * static_cast<int>(d.itemsize);
        out[i] = static_cast<double>(static_cast<int64_t>(raw << shift) >> shift);
        break;
      }
      case 'u':
        out[i] = static_cast<double>(raw);
        break;
      case 'b':
        out[i] = raw != 0 ? 1.0 : 0.0;
        break;
      default:
        throw std::runtime_error("NpyArray::AsDoubles: dtype '" + descr + "' is not numeric");
    }
  }
  return out;
}

std::vector<int64_t> NpyArray::AsInts() const {
  const Descr d = ParseDescr(descr, "AsInts");
  const int64_t n = numel();
  if (static_cast<int64_t>(bytes.size()) != n * d.itemsize) {
    throw std::runtime_error("NpyArray::AsInts: byte size does not match shape");
  }
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = bytes.data() + i * d.itemsize;
    const uint64_t raw = LoadLE(p, static_cast<int>(d.itemsize));
    switch (d.kind) {
      case 'i': {
        const int shift = 64 - 8 * static_cast<int>(d.itemsize);
        out[i] = static_cast<int64_t>(raw << shift) >> shift;
        break;
      }
      case 'u':
        if (raw > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
          throw std::runtime_error("NpyArray::AsInts: value does not fit int64");
        }
        out[i] = static_cast<int64_t>(raw);
        break;
      case 'b':
        out[i] = raw != 0 ? 1 : 0;
        break;
      default:
        throw std::runtime_error("NpyArray::AsInts: dtype '" + descr + "' is not an integer type");
    }
  }
  return out;
}

std::string NpyArray::AsString() const {
  const Descr d = ParseDescr(descr, "AsString");
  if (d.kind != 'U' && d.kind != 'S') {
    throw std::runtime_error("NpyArray::AsString: dtype '" + descr + "' is not a string type");
  }
  if (numel() != 1) {
    throw std::runtime_error("NpyArray::AsString: expected a single string, array has " +
                             std::to_string(numel()) + " elements");
  }
  if (static_cast<int64_t>(bytes.size()) != d.itemsize) {
    throw std::runtime_error("NpyArray::AsString: byte size does not match dtype");
  }
  std::string out;
  if (d.kind == 'S') {
    out.assign(bytes.begin(), bytes.end());
  } else {
    for (size_t i = 0; i + 4 <= bytes.size(); i += 4) {
      AppendUtf8(static_cast<uint32_t>(LoadLE(bytes.data() + i, 4)), &out);
    }
  }
  while (!out.empty() && out.back() == '\0') out.pop_back();  // numpy pads with NULs
  return out;
}

// -----------------------------------------------------------------------------------------------
// npy
// -----------------------------------------------------------------------------------------------

NpyArray ParseNpy(const uint8_t* data, size_t size, const std::string& what) {
  static const uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (size < 10 || std::memcmp(data, kMagic, 6) != 0) Fail(what, "not a .npy file (bad magic)");
  const int major = data[6];
  size_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<size_t>(LoadLE(data + 8, 2));
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) Fail(what, "truncated .npy header");
    header_len = static_cast<size_t>(LoadLE(data + 8, 4));
    header_start = 12;
  } else {
    Fail(what, "unsupported .npy format version " + std::to_string(major) + "." +
                   std::to_string(data[7]));
  }
  if (header_start + header_len > size) Fail(what, "truncated .npy header");
  const std::string header(reinterpret_cast<const char*>(data + header_start), header_len);
  const NpyHeader h = ParseHeaderDict(header, what);
  if (h.fortran_order) Fail(what, "fortran_order=True arrays are not supported");
  const Descr d = ParseDescr(h.descr, what);

  NpyArray arr;
  arr.descr = h.descr;
  arr.shape = h.shape;
  const int64_t n = arr.numel();
  const uint64_t expected = static_cast<uint64_t>(n) * static_cast<uint64_t>(d.itemsize);
  const uint64_t available = size - header_start - header_len;
  if (available != expected) {
    Fail(what, "data size " + std::to_string(available) + " bytes does not match shape/dtype (" +
                   std::to_string(expected) + " bytes expected)");
  }
  const uint8_t* payload = data + header_start + header_len;
  arr.bytes.assign(payload, payload + expected);
  return arr;
}

NpyArray ReadNpy(const std::string& path) {
  const std::vector<uint8_t> data = ReadWholeFile(path);
  return ParseNpy(data.data(), data.size(), path);
}

// -----------------------------------------------------------------------------------------------
// npz
// -----------------------------------------------------------------------------------------------

std::map<std::string, NpyArray> ReadNpz(const std::string& path) {
  const std::vector<uint8_t> file = ReadWholeFile(path);
  const uint8_t* base = file.data();
  const uint64_t size = file.size();
  auto need = [&](uint64_t off, uint64_t len, const char* what) {
    if (off > size || len > size - off) Fail(path, std::string("truncated zip: ") + what);
  };

  // End of central directory record: scan backwards (it may be followed by a comment).
  if (size < 22) Fail(path, "too small to be a zip archive");
  int64_t eocd = -1;
  const uint64_t scan_floor = size >= 22 + 65535 ? size - 22 - 65535 : 0;
  for (uint64_t p = size - 22 + 1; p-- > scan_floor;) {
    if (LoadLE(base + p, 4) == kEndOfCentralDirSig) {
      eocd = static_cast<int64_t>(p);
      break;
    }
  }
  if (eocd < 0) Fail(path, "no zip end-of-central-directory record (not a .npz?)");
  const uint8_t* e = base + eocd;
  if (LoadLE(e + 4, 2) != 0 || LoadLE(e + 6, 2) != 0) {
    Fail(path, "multi-disk zip archives are not supported");
  }
  uint64_t n_entries = LoadLE(e + 10, 2);
  uint64_t cd_size = LoadLE(e + 12, 4);
  uint64_t cd_offset = LoadLE(e + 16, 4);
  if (n_entries == 0xFFFF || cd_size == 0xFFFFFFFF || cd_offset == 0xFFFFFFFF) {
    // Zip64: the locator sits immediately before the classic record.
    if (eocd < 20 || LoadLE(base + eocd - 20, 4) != kZip64LocatorSig) {
      Fail(path, "zip64 end-of-central-directory locator missing");
    }
    const uint64_t z64 = LoadLE(base + eocd - 20 + 8, 8);
    need(z64, 56, "zip64 end-of-central-directory record");
    if (LoadLE(base + z64, 4) != kZip64EndOfCentralDirSig) {
      Fail(path, "bad zip64 end-of-central-directory signature");
    }
    n_entries = LoadLE(base + z64 + 32, 8);
    cd_size = LoadLE(base + z64 + 40, 8);
    cd_offset = LoadLE(base + z64 + 48, 8);
  }
  need(cd_offset, cd_size, "central directory");

  std::map<std::string, NpyArray> out;
  uint64_t p = cd_offset;
  for (uint64_t i = 0; i < n_entries; ++i) {
    need(p, 46, "central directory entry");
    const uint8_t* c = base + p;
    if (LoadLE(c, 4) != kCentralHeaderSig) Fail(path, "bad central directory entry signature");
    const uint64_t flags = LoadLE(c + 8, 2);
    const uint64_t method = LoadLE(c + 10, 2);
    const uint32_t crc = static_cast<uint32_t>(LoadLE(c + 16, 4));
    uint64_t comp_size = LoadLE(c + 20, 4);
    uint64_t uncomp_size = LoadLE(c + 24, 4);
    const uint64_t name_len = LoadLE(c + 28, 2);
    const uint64_t extra_len = LoadLE(c + 30, 2);
    const uint64_t comment_len = LoadLE(c + 32, 2);
    uint64_t local_offset = LoadLE(c + 42, 4);
    need(p + 46, name_len + extra_len + comment_len, "central directory entry");
    const std::string name(reinterpret_cast<const char*>(c + 46), name_len);

    // Zip64 extended information: present fields are exactly those saturated above.
    const uint8_t* x = c + 46 + name_len;
    const uint8_t* x_end = x + extra_len;
    while (x + 4 <= x_end) {
      const uint64_t id = LoadLE(x, 2);
      const uint64_t len = LoadLE(x + 2, 2);
      if (x + 4 + len > x_end) Fail(path, "malformed extra field for " + name);
      if (id == 0x0001) {
        const uint8_t* f = x + 4;
        const uint8_t* f_end = f + len;
        auto take = [&](uint64_t* v) {
          if (f + 8 > f_end) Fail(path, "malformed zip64 extra field for " + name);
          *v = LoadLE(f, 8);
          f += 8;
        };
        if (uncomp_size == 0xFFFFFFFF) take(&uncomp_size);
        if (comp_size == 0xFFFFFFFF) take(&comp_size);
        if (local_offset == 0xFFFFFFFF) take(&local_offset);
      }
      x += 4 + len;
    }
    p += 46 + name_len + extra_len + comment_len;

    if (!name.empty() && name.back() == '/') continue;  // directory entry
    const std::string what = path + "[" + name + "]";
    if (flags & 1) Fail(what, "encrypted zip entries are not supported");

    // Local header: its own name/extra lengths may differ from the central directory's.
    need(local_offset, 30, "local header");
    const uint8_t* l = base + local_offset;
    if (LoadLE(l, 4) != kLocalHeaderSig) Fail(what, "bad local header signature");
    const uint64_t data_offset = local_offset + 30 + LoadLE(l + 26, 2) + LoadLE(l + 28, 2);
    need(data_offset, comp_size, "entry data");
    const uint8_t* payload = base + data_offset;

    std::vector<uint8_t> inflated;
    const uint8_t* npy = nullptr;
    if (method == 0) {
      if (comp_size != uncomp_size) Fail(what, "stored entry with mismatched sizes");
      npy = payload;
    } else if (method == 8) {
      inflated = Inflate(payload, comp_size, uncomp_size, what);
      npy = inflated.data();
    } else {
      Fail(what, "unsupported zip compression method " + std::to_string(method));
    }
    uLong actual_crc = crc32(0L, Z_NULL, 0);
    for (uint64_t off = 0; off < uncomp_size;) {
      const uInt n = static_cast<uInt>(std::min<uint64_t>(uncomp_size - off, uint64_t{1} << 30));
      actual_crc = crc32(actual_crc, npy + off, n);
      off += n;
    }
    if (static_cast<uint32_t>(actual_crc) != crc) Fail(what, "CRC-32 mismatch");

    std::string key = name;
    if (key.size() >= 4 && key.compare(key.size() - 4, 4, ".npy") == 0) {
      key.resize(key.size() - 4);
    }
    if (out.count(key)) Fail(path, "duplicate member '" + key + "'");
    out.emplace(key, ParseNpy(npy, static_cast<size_t>(uncomp_size), what));
  }
  return out;
}

}  // namespace dserve::testing
