#include "engine/tokenizer/regex_translate.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <bitset>
#include <cctype>
#include <cstring>
#include <iterator>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/check.h"

namespace dserve::engine {
namespace {

// One range of code points whose general category is `from` in PCRE2's tables and `to` in
// Hugging Face's.
struct CategoryChange {
  char32_t first;
  char32_t last;
  const char* from;
  const char* to;
};

#include "engine/tokenizer/unicode_supplement.inc"

// Unicode White_Space, as Oniguruma (Hugging Face tokenizers) matches \s. PCRE2's UCP \s
// would instead follow the Z categories and miss U+0085.
constexpr const char* kWhiteSpace =
    "\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// General-category names Oniguruma accepts (short and long, loosely compared: see Loose), and
// the PCRE2 property each stands for.
struct CategoryName {
  std::string_view loose;
  std::string_view pcre2;
};
constexpr CategoryName kCategoryNames[] = {
    {"l", "L"},   {"letter", "L"},
    {"lc", "L&"}, {"casedletter", "L&"},
    {"lu", "Lu"}, {"uppercaseletter", "Lu"},
    {"ll", "Ll"}, {"lowercaseletter", "Ll"},
    {"lt", "Lt"}, {"titlecaseletter", "Lt"},
    {"lm", "Lm"}, {"modifierletter", "Lm"},
    {"lo", "Lo"}, {"otherletter", "Lo"},
    {"m", "M"},   {"mark", "M"},
    {"combiningmark", "M"},
    {"mn", "Mn"}, {"nonspacingmark", "Mn"},
    {"mc", "Mc"}, {"spacingmark", "Mc"},
    {"me", "Me"}, {"enclosingmark", "Me"},
    {"n", "N"},   {"number", "N"},
    {"nd", "Nd"}, {"decimalnumber", "Nd"},
    {"nl", "Nl"}, {"letternumber", "Nl"},
    {"no", "No"}, {"othernumber", "No"},
    {"p", "P"},   {"punctuation", "P"},
    {"pc", "Pc"}, {"connectorpunctuation", "Pc"},
    {"pd", "Pd"}, {"dashpunctuation", "Pd"},
    {"ps", "Ps"}, {"openpunctuation", "Ps"},
    {"pe", "Pe"}, {"closepunctuation", "Pe"},
    {"pi", "Pi"}, {"initialpunctuation", "Pi"},
    {"pf", "Pf"}, {"finalpunctuation", "Pf"},
    {"po", "Po"}, {"otherpunctuation", "Po"},
    {"s", "S"},   {"symbol", "S"},
    {"sm", "Sm"}, {"mathsymbol", "Sm"},
    {"sc", "Sc"}, {"currencysymbol", "Sc"},
    {"sk", "Sk"}, {"modifiersymbol", "Sk"},
    {"so", "So"}, {"othersymbol", "So"},
    {"z", "Z"},   {"separator", "Z"},
    {"zs", "Zs"}, {"spaceseparator", "Zs"},
    {"zl", "Zl"}, {"lineseparator", "Zl"},
    {"zp", "Zp"}, {"paragraphseparator", "Zp"},
    {"c", "C"},   {"other", "C"},
    {"cc", "Cc"}, {"control", "Cc"},
    {"cf", "Cf"}, {"format", "Cf"},
    {"cs", "Cs"}, {"surrogate", "Cs"},
    {"co", "Co"}, {"privateuse", "Co"},
    {"cn", "Cn"}, {"unassigned", "Cn"},
    {"any", "Any"},
};

// Oniguruma's comparison of property names: case, spaces, '-' and '_' do not count.
std::string Loose(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == ' ' || c == '-' || c == '_') continue;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// Whether PCRE2 property `property` ("L", "L&", "Lu", ...) contains two-letter category `gc`.
bool Contains(std::string_view property, std::string_view gc) {
  if (property == "L&") return gc == "Lu" || gc == "Ll" || gc == "Lt";
  if (property.size() == 1) return gc[0] == property[0];
  return gc == property;
}

// Class members (\x{..} and \x{..}-\x{..}) for the code points that go into `property`
// (added) or out of it (removed) between PCRE2's tables and Hugging Face's.
std::string Members(std::string_view property, bool added) {
  std::vector<std::pair<char32_t, char32_t>> ranges;
  for (const CategoryChange& c : kCategoryChanges) {
    const bool in_old = Contains(property, c.from), in_new = Contains(property, c.to);
    if (added ? (in_new && !in_old) : (in_old && !in_new)) {
      if (!ranges.empty() && ranges.back().second + 1 == c.first) {
        ranges.back().second = c.last;
      } else {
        ranges.push_back({c.first, c.last});
      }
    }
  }
  std::string out;
  for (const auto& [first, last] : ranges) {
    absl::StrAppend(&out, "\\x{", absl::Hex(static_cast<uint32_t>(first)), "}");
    if (last > first) absl::StrAppend(&out, "-\\x{", absl::Hex(static_cast<uint32_t>(last)), "}");
  }
  return out;
}

// The PCRE2 text for property escape `construct` (as written, for messages) naming `name`,
// negated or not, inside a character class or not.
//
// In Unicode 16 terms, X = (X14 + added) - removed and not-X = (not-X14 + removed) - added, with
// `added` and `removed` disjoint: [\p{X}added], [^\P{X}removed] or, with both, a group of two
// classes. Inside a class the members can only be appended.
absl::StatusOr<std::string> TranslateProperty(std::string_view construct, std::string_view name,
                                              bool negated, bool in_class, bool supplement) {
  std::string_view property;
  const std::string loose = Loose(name);
  for (const CategoryName& n : kCategoryNames) {
    if (n.loose == loose) property = n.pcre2;
  }
  // (Debian's Abseil has its own string_view, which StrCat does not take from std's.)
  const std::string what(construct), base_version(kSupplementBaseVersion),
      target_version(kSupplementTargetVersion);
  if (property.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pre-tokenizer regex uses ", what,
        ", which is not supported: only general categories (\\p{L}, \\p{Lu}, \\p{Letter}, ...) "
        "are, because PCRE2's Unicode ",
        base_version, " tables for other properties differ from Hugging Face's (Unicode ",
        target_version, ")"));
  }
  const std::string p = "\\p{" + std::string(property) + "}";
  const std::string not_p = "\\P{" + std::string(property) + "}";
  const std::string& base = negated ? not_p : p;
  const std::string& complement = negated ? p : not_p;
  if (property == "Any") return base;
  const std::string plus = Members(property, /*added=*/!negated);
  const std::string minus = Members(property, /*added=*/negated);
  if (in_class && !minus.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pre-tokenizer regex uses ", what,
        " inside a character class, which is not supported: code points that Hugging Face's "
        "Unicode ",
        target_version, " tables move ", negated ? "into " : "out of ", std::string(property),
        " cannot be taken out of a PCRE2 class"));
  }
  if (!supplement || (plus.empty() && minus.empty())) return base;
  if (in_class) return base + plus;
  if (minus.empty()) return absl::StrCat("[", base, plus, "]");
  if (plus.empty()) return absl::StrCat("[^", complement, minus, "]");
  return absl::StrCat("(?:[^", complement, minus, "]|[", plus, "])");
}

// One bit per block of 256 code points that holds a code point of kCategoryChanges.
const std::bitset<0x1100>& ChangedBlocks() {
  static const std::bitset<0x1100> blocks = [] {
    std::bitset<0x1100> b;
    for (const CategoryChange& c : kCategoryChanges) {
      for (char32_t block = c.first >> 8; block <= c.last >> 8; ++block) b.set(block);
    }
    return b;
  }();
  return blocks;
}

bool IsChanged(char32_t c) {
  const CategoryChange* end = std::end(kCategoryChanges);
  const CategoryChange* it = std::lower_bound(
      std::begin(kCategoryChanges), end, c,
      [](const CategoryChange& change, char32_t cp) { return change.last < cp; });
  return it != end && it->first <= c;
}

// HasChangedCategory decodes only 3- and 4-byte sequences.
static_assert(kCategoryChanges[0].first >= 0x800);

}  // namespace

absl::StatusOr<std::string> TranslateForPcre2(std::string_view p, CategoryTables tables) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char n = p[i + 1];
      if (n == 's') {
        out += in_class ? std::string(kWhiteSpace) : absl::StrCat("[", kWhiteSpace, "]");
      } else if (n == 'S') {
        if (in_class) {
          return absl::InvalidArgumentError(
              "pre-tokenizer regex uses \\S inside a character class, which is not supported");
        }
        out += absl::StrCat("[^", kWhiteSpace, "]");
      } else if (n == 'p' || n == 'P') {
        const size_t close = p.find('}', i + 2);
        if (i + 2 >= p.size() || p[i + 2] != '{' || close == std::string_view::npos) {
          return absl::InvalidArgumentError(absl::StrCat(
              "pre-tokenizer regex uses \\", std::string(1, n),
              " without a {name}, which is not supported (Hugging Face's Oniguruma reads \\pL as "
              "the text \"pL\", PCRE2 as \\p{L})"));
        }
        std::string_view name = p.substr(i + 3, close - (i + 3));
        bool negated = n == 'P';
        if (!name.empty() && name[0] == '^') {
          negated = !negated;
          name.remove_prefix(1);
        }
        DSERVE_ASSIGN_OR_RETURN(
            std::string text,
            TranslateProperty(p.substr(i, close + 1 - i), name, negated, in_class,
                              tables == CategoryTables::kHuggingFace));
        out += text;
        i = close;
        continue;
      } else {
        out += c;
        out += n;
      }
      ++i;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {
      // A POSIX class such as [:alpha:] inside a class: its ']' does not end the class.
      const size_t end = p.find(":]", i + 2);
      if (end != std::string_view::npos) {
        out += p.substr(i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

bool HasChangedCategory(std::string_view utf8) {
  const std::bitset<0x1100>& blocks = ChangedBlocks();
  const auto* s = reinterpret_cast<const uint8_t*>(utf8.data());
  const size_t n = utf8.size();
  for (size_t i = 0; i < n;) {
    uint64_t word;
    if (i + 8 <= n && (std::memcpy(&word, s + i, 8), (word & 0x8080808080808080u) == 0)) {
      i += 8;  // 8 ASCII characters
      continue;
    }
    const uint8_t b = s[i];
    if (b < 0xE0) {  // ASCII, a 2-byte sequence (below U+0800) or a continuation byte
      ++i;
      continue;
    }
    char32_t c;
    if (b < 0xF0) {
      if (i + 2 >= n) break;
      c = (b & 0x0Fu) << 12 | (s[i + 1] & 0x3Fu) << 6 | (s[i + 2] & 0x3Fu);
      i += 3;
    } else {
      if (i + 3 >= n) break;
      c = (b & 0x07u) << 18 | (s[i + 1] & 0x3Fu) << 12 | (s[i + 2] & 0x3Fu) << 6 |
          (s[i + 3] & 0x3Fu);
      i += 4;
    }
    if (c < 0x110000 && blocks.test(c >> 8) && IsChanged(c)) return true;
  }
  return false;
}

std::string Pcre2UnicodeVersion() {
  char version[32] = {};
  pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, version);
  return version;
}

std::string_view SupplementBaseUnicodeVersion() { return kSupplementBaseVersion; }
std::string_view SupplementTargetUnicodeVersion() { return kSupplementTargetVersion; }

}  // namespace dserve::engine
