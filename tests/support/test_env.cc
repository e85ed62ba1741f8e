#include "tests/support/test_env.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <vector>

namespace dserve::testing {
namespace {

std::vector<std::string>& Scratch() {
  static auto* dirs = new std::vector<std::string>();
  return *dirs;
}

void RemoveScratch() {
  for (const std::string& d : Scratch()) {
    std::error_code ec;
    std::filesystem::remove_all(d, ec);
  }
}

}  // namespace

std::string TestdataPath(const std::string& name) {
  return std::string(DSERVE_TESTDATA_DIR) + "/" + name;
}

std::string DserveBinary() { return DSERVE_BINARY; }

std::string ScratchDir(const std::string& prefix) {
  static std::once_flag once;
  std::call_once(once, [] { std::atexit(RemoveScratch); });
  std::string pattern =
      (std::filesystem::temp_directory_path() / ("dserve-" + prefix + "-XXXXXX")).string();
  char* dir = ::mkdtemp(pattern.data());
  if (dir == nullptr) return "";
  Scratch().push_back(dir);
  return dir;
}

int RunCommand(const std::string& command, std::string* output) {
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  output->clear();
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) output->append(buf, n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace dserve::testing
