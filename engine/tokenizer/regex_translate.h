// TranslateForPcre2: rewrites a tokenizer.json regex, written for Hugging Face's Oniguruma, into
// a PCRE2 pattern (UTF + UCP) that matches the same text.
//
// - \s and \S become Unicode White_Space sets (what Oniguruma's \s is; PCRE2's UCP \s follows
//   the Z categories and misses U+0085). \S inside a character class is an error.
// - \p{X}, \P{X} and \p{^X} for a general category X (L, Lu, Letter, Uppercase_Letter, LC,
//   ...; names compared as Oniguruma does: case, spaces, '-' and '_' ignored) become PCRE2's
//   \p{X} with the code points that HF's Unicode 16 tables put in X and PCRE2's Unicode 14
//   tables do not, and without those it puts elsewhere (unicode_supplement.inc, made by
//   gen_unicode_supplement.mjs): [\p{X}added] and [^\P{X}removed] outside a class (a group of
//   two classes when X has both: only Mn), \p{X}added appended inside one; \P{X} likewise. A
//   class cannot lose members, so \p{X} needing removals (\p{Mn}, \p{C}, \p{Cn}) or \P{X}
//   needing additions (\P{L}, \P{N}, ...) inside a class is an error that names the construct.
//   \p{Any} is kept.
// - Any other property (scripts such as \p{Han}, binary properties) is an error: PCRE2's
//   Unicode 14 tables would give a different encoding for code points assigned since. So is
//   \pL without braces, which Oniguruma reads as the text "pL".
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace dserve::engine {

// How TranslateForPcre2 writes a general category.
enum class CategoryTables {
  // PCRE2's property with the supplement's code points added/removed: Hugging Face's sets on
  // any text.
  kHuggingFace,
  // PCRE2's property alone: Hugging Face's sets on text without a code point for which
  // HasChangedCategory is true (the regex then never looks at one). PCRE2's JIT tests a
  // class's ranges one by one, so this form runs faster (DeepSeek-V3's main regex about twice
  // as fast, a whole encode about 1.2x) and Regex uses it for such text. Errors are the same
  // for both forms.
  kPcre2,
};

absl::StatusOr<std::string> TranslateForPcre2(std::string_view pattern,
                                              CategoryTables tables = CategoryTables::kHuggingFace);

// Whether valid UTF-8 `utf8` holds a code point whose general category differs between PCRE2's
// tables and Hugging Face's (one listed in unicode_supplement.inc).
bool HasChangedCategory(std::string_view utf8);

// The Unicode version of the linked PCRE2's property tables ("14.0.0" for Debian 12's 10.42).
std::string Pcre2UnicodeVersion();
// The versions unicode_supplement.inc bridges: PCRE2's (base) and Hugging Face's (target). The
// translation is right for any PCRE2 whose tables are between the two.
std::string_view SupplementBaseUnicodeVersion();
std::string_view SupplementTargetUnicodeVersion();

}  // namespace dserve::engine
