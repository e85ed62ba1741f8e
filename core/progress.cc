#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace dserve {
namespace {

std::string Amount(int64_t n, const std::string& unit) {
  char buf[64];
  if (unit == "B") {
    if (n >= (int64_t{1} << 30)) {
      std::snprintf(buf, sizeof buf, "%.2f GB", n / 1e9);
    } else {
      std::snprintf(buf, sizeof buf, "%.1f MB", n / 1e6);
    }
  } else {
    std::snprintf(buf, sizeof buf, "%lld %s", static_cast<long long>(n), unit.c_str());
  }
  return buf;
}

}  // namespace

Progress::Progress(std::string what, int64_t total, std::string unit, bool enabled)
    : what_(std::move(what)),
      total_(total),
      unit_(std::move(unit)),
      enabled_(enabled),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

Progress::~Progress() { Finish(); }

void Progress::Advance(int64_t amount) {
  done_ += amount;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_print_ > std::chrono::milliseconds(250)) {
    last_print_ = now;
    Print(false);
  }
}

void Progress::Finish() {
  if (finished_) return;
  finished_ = true;
  Print(true);
}

void Progress::Print(bool final_line) {
  if (!enabled_) return;
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double percent = total_ > 0 ? 100.0 * done_ / total_ : 100.0;
  // On a terminal the line is redrawn in place; in logs only the final line is written.
  const bool tty = ::isatty(STDERR_FILENO);
  if (!final_line && !tty) return;
  std::fprintf(stderr, "%s%s: %3.0f%% (%s of %s) %.1f s%s", tty ? "\r" : "", what_.c_str(),
               percent, Amount(done_, unit_).c_str(), Amount(total_, unit_).c_str(), seconds,
               final_line ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace dserve
