#include "cli/flags.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace dserve::cli {

std::string Flags::Usage(const std::string& command, const std::string& summary,
                         const std::vector<FlagSpec>& specs) {
  std::string out = absl::StrCat("usage: dserve ", command, " [flags]\n  ", summary, "\n\nflags:\n");
  for (const FlagSpec& f : specs) {
    std::string left = absl::StrCat("  --", f.name, f.is_bool ? "" : " VALUE");
    left.resize(std::max<size_t>(left.size() + 1, 26), ' ');
    absl::StrAppend(&out, left, f.help);
    if (f.required) absl::StrAppend(&out, " (required)");
    if (!f.default_value.empty()) absl::StrAppend(&out, " (default ", f.default_value, ")");
    out += "\n";
  }
  return out;
}

absl::StatusOr<Flags> Flags::Parse(const std::string& command, const std::string& summary,
                                   const std::vector<FlagSpec>& specs,
                                   const std::vector<std::string>& args) {
  Flags flags;
  auto find = [&](const std::string& name) -> const FlagSpec* {
    for (const FlagSpec& f : specs) {
      if (f.name == name) return &f;
    }
    return nullptr;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--help" || arg == "-h") {
      return absl::NotFoundError(Usage(command, summary, specs));
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("unexpected argument '", arg, "' (flags start with --; see --help)"));
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const FlagSpec* spec = find(name);
    if (!spec) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", name, " for 'dserve ", command, "' (see --help)"));
    }
    if (spec->is_bool) {
      if (inline_value) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
    } else if (!inline_value) {
      if (i + 1 >= args.size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    flags.values_[name] = value;
  }
  for (const FlagSpec& f : specs) {
    if (f.required && !flags.Has(f.name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", f.name, " is required for 'dserve ", command, "' (see --help)"));
    }
    if (!f.is_bool && !f.default_value.empty() && !flags.Has(f.name)) {
      flags.values_[f.name] = f.default_value;
    }
  }
  return flags;
}

std::string Flags::Get(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? "" : it->second;
}

absl::StatusOr<int64_t> Flags::GetInt(const std::string& name, int64_t min, int64_t max) const {
  int64_t v;
  if (!absl::SimpleAtoi(Get(name), &v) || v < min || v > max) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be an integer in [", min,
                                                   ", ", max, "], got '", Get(name), "'"));
  }
  return v;
}

absl::StatusOr<std::vector<int32_t>> ParseTokenList(const std::string& text, int64_t limit) {
  std::vector<int32_t> ids;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    int64_t v;
    if (!absl::SimpleAtoi(item, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tokens: '", std::string(item), "' is not an integer token id"));
    }
    if (v < 0 || v >= limit) {
      return absl::InvalidArgumentError(absl::StrCat("--tokens: id ", v,
                                                     " is outside the vocabulary [0, ", limit,
                                                     ")"));
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) return absl::InvalidArgumentError("--tokens is empty");
  return ids;
}

}  // namespace dserve::cli
