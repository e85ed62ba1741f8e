// dserve tokenize / detokenize: the checkpoint's tokenizer on lines of stdin, one JSON result
// per line (scripts and golden checks pipe through these).
#include <cstdio>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "cli/commands.h"
#include "cli/model_session.h"
#include "engine/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace dserve::cli {
namespace {

using Json = nlohmann::json;

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

absl::Status Tokenize(const Flags& flags) {
  DSERVE_ASSIGN_OR_RETURN(auto tokenizer, engine::LoadTokenizer(flags.Get("model")));
  const bool jsonl = flags.GetBool("jsonl");
  const bool add_special = !flags.GetBool("no-special");
  std::string line;
  for (int64_t n = 1; std::getline(std::cin, line); ++n) {
    std::string text = line;
    if (jsonl) {
      const Json j = Json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat("line ", n, " is not a JSON string"));
      }
      text = j.get<std::string>();
    }
    auto ids = tokenizer->Encode(text, add_special);
    if (!ids.ok()) return absl::InvalidArgumentError(absl::StrCat("line ", n, ": ", ids.status().message()));
    std::printf("%s\n", Dump(*ids).c_str());
  }
  return absl::OkStatus();
}

absl::Status Detokenize(const Flags& flags) {
  DSERVE_ASSIGN_OR_RETURN(auto tokenizer, engine::LoadTokenizer(flags.Get("model")));
  const bool skip = flags.GetBool("skip-special");
  std::string line;
  for (int64_t n = 1; std::getline(std::cin, line); ++n) {
    const Json j = Json::parse(line, nullptr, false);
    std::vector<int32_t> ids;
    bool ok = !j.is_discarded() && j.is_array();
    for (const Json& v : ok ? j : Json::array()) {
      if (!v.is_number_integer() || v.get<int64_t>() < INT32_MIN || v.get<int64_t>() > INT32_MAX) {
        ok = false;
        break;
      }
      ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", n, " is not a JSON array of integer token ids"));
    }
    auto text = tokenizer->Decode(ids, skip);
    if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat("line ", n, ": ", text.status().message()));
    std::printf("%s\n", Dump(*text).c_str());
  }
  return absl::OkStatus();
}

}  // namespace

int RunTokenize(const Args& args) {
  const std::vector<FlagSpec> specs = {
      {"model", "checkpoint folder (tokenizer.json or tokenizer.model)", "", false, true},
      {"jsonl", "each input line is a JSON string (so text may hold newlines)", "", true},
      {"no-special", "add no BOS/EOS (special-token text in the input still maps to its id)", "",
       true},
  };
  Flags flags;
  int code;
  if (!ParseOrExit("tokenize", "Lines of text on stdin -> one JSON array of ids per line.", specs,
                   args, &flags, &code)) {
    return code;
  }
  if (absl::Status s = Tokenize(flags); !s.ok()) return ReportError("tokenize", s);
  return 0;
}

int RunDetokenize(const Args& args) {
  const std::vector<FlagSpec> specs = {
      {"model", "checkpoint folder (tokenizer.json or tokenizer.model)", "", false, true},
      {"skip-special", "leave special tokens out of the text", "", true},
  };
  Flags flags;
  int code;
  if (!ParseOrExit("detokenize", "JSON arrays of ids on stdin -> one JSON string per line.",
                   specs, args, &flags, &code)) {
    return code;
  }
  if (absl::Status s = Detokenize(flags); !s.ok()) return ReportError("detokenize", s);
  return 0;
}

}  // namespace dserve::cli
