// Progress: a one-line progress report on stderr for long work (loading, generating a
// checkpoint, benchmarks), refreshed at most a few times per second.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace dserve {

class Progress {
 public:
  // `unit` is "B" for byte counts (shown as MB/GB) or a noun such as "tensors".
  Progress(std::string what, int64_t total, std::string unit = "B", bool enabled = true);
  ~Progress();

  void Advance(int64_t amount);
  void Finish();

 private:
  void Print(bool final_line);

  std::string what_;
  int64_t total_;
  std::string unit_;
  bool enabled_;
  bool finished_ = false;
  int64_t done_ = 0;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
};

}  // namespace dserve
