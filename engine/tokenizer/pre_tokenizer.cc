#include "engine/tokenizer/pre_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"
#include "core/check.h"
#include "engine/tokenizer/regex_translate.h"

namespace dserve::engine {
namespace {

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

}  // namespace

struct Regex::Code {
  pcre2_code* code = nullptr;          // categories as PCRE2's tables have them
  pcre2_code* supplemented = nullptr;  // as Hugging Face's; null when the pattern is the same
  ~Code() {
    pcre2_code_free(code);
    pcre2_code_free(supplemented);
  }
};

namespace {

absl::StatusOr<pcre2_code*> CompilePcre2(const std::string& translated,
                                         std::string_view pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof message);
    return absl::InvalidArgumentError(absl::StrCat("pre-tokenizer regex does not compile at ",
                                                   offset, ": ", reinterpret_cast<char*>(message),
                                                   " (pattern ", std::string(pattern), ")"));
  }
  // JIT is an optimisation: where it is unavailable the interpreter gives the same matches.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return code;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Regex>> Regex::Compile(std::string_view pattern) {
  DSERVE_ASSIGN_OR_RETURN(const std::string plain,
                          TranslateForPcre2(pattern, CategoryTables::kPcre2));
  DSERVE_ASSIGN_OR_RETURN(const std::string supplemented,
                          TranslateForPcre2(pattern, CategoryTables::kHuggingFace));
  auto c = std::make_unique<Code>();
  DSERVE_ASSIGN_OR_RETURN(c->code, CompilePcre2(plain, pattern));
  if (supplemented != plain) {
    DSERVE_ASSIGN_OR_RETURN(c->supplemented, CompilePcre2(supplemented, pattern));
  }
  return std::unique_ptr<Regex>(new Regex(c.release()));
}

Regex::~Regex() { delete code_; }

void Regex::FindAll(std::string_view text, Span span, std::vector<Span>* out,
                    bool may_hold_changed_category) const {
  // One match-data block per thread, reused across calls (it only holds the ovector).
  struct MatchData {
    pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
    ~MatchData() { pcre2_match_data_free(data); }
  };
  thread_local MatchData md;
  // Each piece is matched as a string of its own, as Hugging Face does: anchors and
  // look-arounds see nothing outside it.
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + span.begin);
  const size_t length = span.end - span.begin;
  // The faster plain form gives the same matches unless the piece holds a code point whose
  // category PCRE2's tables and Hugging Face's disagree on.
  const pcre2_code* code = code_->supplemented != nullptr && may_hold_changed_category &&
                                    HasChangedCategory(text.substr(span.begin, length))
                                ? code_->supplemented
                                : code_->code;
  size_t start = 0;
  while (start < length) {
    int rc = pcre2_match(code, subject, length, start, PCRE2_NO_UTF_CHECK, md.data, nullptr);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
      // A repeated group (\p{Mn}+ translated, see regex_translate.h) can outgrow the JIT's
      // 32 KB stack; the interpreter keeps its backtracking frames on the heap.
      rc = pcre2_match(code, subject, length, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md.data,
                       nullptr);
    }
    if (rc < 0) break;  // PCRE2_ERROR_NOMATCH; other errors cannot occur on valid UTF-8
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.data);
    if (ov[1] == ov[0]) {  // empty match: step over one character
      start = ov[1] + 1;
      while (start < length && (static_cast<uint8_t>(text[span.begin + start]) & 0xC0) == 0x80) {
        ++start;
      }
      continue;
    }
    out->push_back({span.begin + ov[0], span.begin + ov[1]});
    start = ov[1];
  }
}

struct PreTokenizer::Step {
  enum class Kind { kSplit, kDigits } kind = Kind::kSplit;
  std::unique_ptr<Regex> regex;  // kSplit: the pattern (literal patterns escaped)
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  bool individual_digits = false;  // kDigits

  void Apply(std::string_view text, Span span, bool may_hold_changed_category,
             std::vector<Span>* out) const {
    std::vector<Span> matches;
    if (kind == Kind::kDigits) {
      DigitRuns(text, span, &matches);
    } else {
      regex->FindAll(text, span, &matches, may_hold_changed_category);
    }
    // Alternate non-match and match segments over the span, flagged by whether they matched.
    std::vector<std::pair<Span, bool>> parts;
    size_t pos = span.begin;
    for (const Span& m : matches) {
      if (m.begin > pos) parts.push_back({{pos, m.begin}, invert});
      parts.push_back({m, !invert});
      pos = m.end;
    }
    if (pos < span.end) parts.push_back({{pos, span.end}, invert});
    // `true` now marks the delimiter pieces the behaviour acts on.
    std::vector<Span> result;
    bool merge_next = false;
    for (size_t i = 0; i < parts.size(); ++i) {
      const auto& [s, delimiter] = parts[i];
      switch (behavior) {
        case Behavior::kRemoved:
          if (!delimiter) result.push_back(s);
          break;
        case Behavior::kIsolated:
          result.push_back(s);
          break;
        case Behavior::kMergedWithPrevious:
          if (delimiter && !result.empty()) {
            result.back().end = s.end;
          } else {
            result.push_back(s);
          }
          break;
        case Behavior::kMergedWithNext:
          if (merge_next) {
            result.back().end = s.end;
          } else {
            result.push_back(s);
          }
          merge_next = delimiter;
          break;
        case Behavior::kContiguous:
          if (delimiter && i > 0 && parts[i - 1].second) {
            result.back().end = s.end;
          } else {
            result.push_back(s);
          }
          break;
      }
    }
    out->insert(out->end(), result.begin(), result.end());
  }

  void DigitRuns(std::string_view text, Span span, std::vector<Span>* matches) const {
    for (size_t i = span.begin; i < span.end;) {
      if (text[i] < '0' || text[i] > '9') {
        ++i;
        continue;
      }
      size_t j = i + 1;
      if (!individual_digits) {
        while (j < span.end && text[j] >= '0' && text[j] <= '9') ++j;
      }
      matches->push_back({i, j});
      i = j;
    }
  }
};

PreTokenizer::PreTokenizer() = default;
PreTokenizer::~PreTokenizer() = default;

namespace {

// GPT-2's splitting regex, which ByteLevel applies when use_regex is true.
constexpr std::string_view kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

std::string EscapeLiteral(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PreTokenizer>> PreTokenizer::Create(const nlohmann::json& config) {
  auto pt = std::unique_ptr<PreTokenizer>(new PreTokenizer());
  if (config.is_null()) return pt;
  std::vector<const nlohmann::json*> items;
  if (config.value("type", "") == "Sequence") {
    for (const auto& p : config["pretokenizers"]) items.push_back(&p);
  } else {
    items.push_back(&config);
  }
  for (const nlohmann::json* item : items) {
    const std::string type = item->value("type", "");
    auto step = std::make_unique<Step>();
    if (type == "Split") {
      const auto& pattern = (*item)["pattern"];
      std::string source;
      if (pattern.contains("Regex")) {
        source = pattern["Regex"].get<std::string>();
      } else if (pattern.contains("String")) {
        source = EscapeLiteral(pattern["String"].get<std::string>());
      } else {
        return absl::InvalidArgumentError("pre_tokenizer Split needs a Regex or String pattern");
      }
      DSERVE_ASSIGN_OR_RETURN(step->regex, Regex::Compile(source));
      const std::string behavior = item->value("behavior", "Isolated");
      if (behavior == "Removed") {
        step->behavior = Behavior::kRemoved;
      } else if (behavior == "Isolated") {
        step->behavior = Behavior::kIsolated;
      } else if (behavior == "MergedWithPrevious") {
        step->behavior = Behavior::kMergedWithPrevious;
      } else if (behavior == "MergedWithNext") {
        step->behavior = Behavior::kMergedWithNext;
      } else if (behavior == "Contiguous") {
        step->behavior = Behavior::kContiguous;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("pre_tokenizer Split behavior '", behavior, "' is not supported"));
      }
      step->invert = item->value("invert", false);
    } else if (type == "Digits") {
      step->kind = Step::Kind::kDigits;
      step->individual_digits = item->value("individual_digits", false);
    } else if (type == "ByteLevel") {
      // Mapping bytes to the byte-level alphabet happens in the model; only the optional
      // GPT-2 split and the prefix space belong here.
      pt->add_prefix_space_ = item->value("add_prefix_space", false);
      if (!item->value("use_regex", true)) continue;
      DSERVE_ASSIGN_OR_RETURN(step->regex, Regex::Compile(kGpt2Pattern));
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("pre_tokenizer type '", type, "' is not supported"));
    }
    pt->steps_.push_back(std::move(step));
  }
  return pt;
}

void PreTokenizer::Split(std::string_view text, Span span, std::vector<Span>* out) const {
  std::vector<Span> current = {span}, next;
  // One look over the whole text spares each regex step a look over each piece.
  const bool changed = HasChangedCategory(text.substr(span.begin, span.end - span.begin));
  for (const auto& step : steps_) {
    next.clear();
    for (const Span& s : current) step->Apply(text, s, changed, &next);
    current.swap(next);
  }
  out->insert(out->end(), current.begin(), current.end());
}

}  // namespace dserve::engine
