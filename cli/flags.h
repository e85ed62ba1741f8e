// Flags: the command-line parser of every `dserve` subcommand (--name value, --name=value,
// boolean --name), with generated --help text and errors that name the flag.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace dserve::cli {

struct FlagSpec {
  std::string name;           // without the leading dashes
  std::string help;
  std::string default_value;  // empty: no default
  bool is_bool = false;
  bool required = false;
};

class Flags {
 public:
  // args excludes the program and subcommand names. --help is reported as a NotFound status
  // carrying the usage text, so callers print it and exit 0.
  static absl::StatusOr<Flags> Parse(const std::string& command, const std::string& summary,
                                     const std::vector<FlagSpec>& specs,
                                     const std::vector<std::string>& args);

  bool Has(const std::string& name) const { return values_.contains(name); }
  std::string Get(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t min, int64_t max) const;
  bool GetBool(const std::string& name) const { return Has(name); }
  // Overrides a flag's value (a command that runs several configurations).
  void Set(const std::string& name, std::string value) { values_[name] = std::move(value); }

  static std::string Usage(const std::string& command, const std::string& summary,
                           const std::vector<FlagSpec>& specs);

 private:
  std::map<std::string, std::string> values_;
};

// "0,15,27" -> ids; every item must be an integer in [0, limit).
absl::StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& text, int64_t limit);

}  // namespace dserve::cli
