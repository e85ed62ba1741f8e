// Unicode general categories in pre-tokenizer regexes: PCRE2 10.42's tables are Unicode 14.0,
// Hugging Face's (Oniguruma) are Unicode 16.0, and TranslateForPcre2 bridges the two with
// unicode_supplement.inc. Checked three ways:
// - the real DeepSeek-V3 tokenizer on probe lines over every code point assigned in Unicode
//   15.0-16.0 (plus Unicode 17.0 additions and older code points as controls) gives HF's ids
//   (unicode_sweep_goldens.jsonl, make_unicode_goldens.mjs);
// - every category escape, plain, negated and in classes, matches at every code point exactly
//   where HF's category says (unicode_categories_hf.txt);
// - the translation's text and its errors on hand-picked patterns.
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/regex_translate.h"
#include "engine/tokenizer/tokenizer.h"
#include "core/utf8.h"
#include "gtest/gtest.h"
#include "models/model_generator.h"
#include "nlohmann/json.hpp"

namespace dserve::engine {
namespace {

using Json = nlohmann::json;

std::string Utf8(std::initializer_list<uint32_t> code_points) {
  std::string out;
  for (uint32_t c : code_points) AppendUtf8(c, &out);
  return out;
}

// The pieces a compiled pattern finds in `text`.
std::vector<std::string> Matches(std::string_view pattern, const std::string& text) {
  auto regex = Regex::Compile(pattern);
  EXPECT_TRUE(regex.ok()) << regex.status();
  if (!regex.ok()) return {};
  std::vector<Span> spans;
  (*regex)->FindAll(text, {0, text.size()}, &spans);
  std::vector<std::string> out;
  for (const Span& s : spans) out.push_back(text.substr(s.begin, s.end - s.begin));
  return out;
}

std::string Translated(std::string_view pattern) {
  auto t = TranslateForPcre2(pattern);
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : "";
}

// The error TranslateForPcre2 gives, or "" when it succeeds.
std::string TranslationError(std::string_view pattern) {
  auto t = TranslateForPcre2(pattern);
  return t.ok() ? "" : std::string(t.status().message());
}

// ---------------------------------------------------------------------------------------------
// Versions.

std::pair<int, int> MajorMinor(std::string_view v) {
  const size_t dot = v.find('.');
  const size_t dot2 = v.find('.', dot + 1);
  return {std::stoi(std::string(v.substr(0, dot))),
          std::stoi(std::string(v.substr(dot + 1, dot2 - dot - 1)))};
}

TEST(UnicodeVersions, Pcre2TablesAreBetweenTheSupplementsTwoVersions) {
  // The supplement adds what Unicode 14.0 -> 16.0 changed; it is right for any PCRE2 whose
  // tables lie in between (newer ones already hold some of it), wrong for 17.0 tables.
  const std::string pcre2 = Pcre2UnicodeVersion();
  RecordProperty("pcre2_unicode", pcre2);
  EXPECT_EQ(SupplementBaseUnicodeVersion(), "14.0.0");
  EXPECT_EQ(SupplementTargetUnicodeVersion(), "16.0");
  EXPECT_GE(MajorMinor(pcre2), MajorMinor(SupplementBaseUnicodeVersion())) << pcre2;
  EXPECT_LE(MajorMinor(pcre2), MajorMinor(SupplementTargetUnicodeVersion())) << pcre2;
}

// ---------------------------------------------------------------------------------------------
// The translation.

TEST(TranslateForPcre2, WhiteSpaceIsPinnedAsBefore) {
  EXPECT_EQ(Translated("a\\sb"), "a[\\t\\n\\x0B\\f\\r\\x20\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}"
                                 "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}]b");
  EXPECT_EQ(Matches("\\s+", "a\xC2\x85\n b\xEF\xBB\xBF"),
            (std::vector<std::string>{"\xC2\x85\n "}));  // U+0085 yes, U+FEFF no
  EXPECT_EQ(Matches("[\\sx]+", "ax \xC2\x85y"), (std::vector<std::string>{"x \xC2\x85"}));
  EXPECT_NE(TranslationError("[\\S]"), "");
}

// "[\p{L}<added>]" -> "<added>".
std::string AddedLetters() {
  const std::string l = Translated("\\p{L}");
  EXPECT_EQ(l.rfind("[\\p{L}\\x{", 0), 0u) << l;
  return l.substr(6, l.size() - 7);
}

TEST(TranslateForPcre2, OutsideAClassAPropertyBecomesAClassWithTheAddedCodePoints) {
  const std::string l = Translated("\\p{L}");
  // [\p{L}...] with CJK Extension I (Unicode 15.1) and Garay letters (16.0) inside.
  EXPECT_EQ(l.rfind("[\\p{L}\\x{", 0), 0u) << l;
  EXPECT_NE(l.find("\\x{2ebf0}-\\x{2ee5d}"), std::string::npos) << l;
  EXPECT_NE(l.find("\\x{10d4a}-\\x{10d65}"), std::string::npos) << l;
  EXPECT_EQ(l.back(), ']');
  const std::string ext_i = Utf8({0x2EBF0});
  EXPECT_EQ(Matches("\\p{L}+", "a" + ext_i + "b c"),
            (std::vector<std::string>{"a" + ext_i + "b", "c"}));
  // Quantifiers still apply to the whole escape.
  const std::string kawi_digits = Utf8({0x11F50, 0x11F51, 0x11F52, 0x11F53});  // Unicode 15.0
  EXPECT_EQ(Matches("\\p{N}{1,3}", kawi_digits),
            (std::vector<std::string>{Utf8({0x11F50, 0x11F51, 0x11F52}), Utf8({0x11F53})}));
  // A category Unicode 16 left alone stays as it was.
  EXPECT_EQ(Translated("\\p{Zs}"), "\\p{Zs}");
  EXPECT_EQ(Translated("\\p{Any}"), "\\p{Any}");
}

TEST(TranslateForPcre2, InsideAClassTheAddedCodePointsAreAppended) {
  const std::string added = AddedLetters();
  EXPECT_EQ(Translated("[x\\p{L}]"), "[x\\p{L}" + added + "]");
  EXPECT_EQ(Translated("[^\\r\\n\\p{L}]+"), "[^\\r\\n\\p{L}" + added + "]+");
  // Each property's own, in place.
  const std::string lm = Translated("[\\p{L}\\p{M}y]");
  EXPECT_EQ(lm.rfind("[\\p{L}" + added + "\\p{M}\\x{", 0), 0u) << lm;
  EXPECT_EQ(lm.substr(lm.size() - 2), "y]");
  // A literal ']' first in the class and a POSIX class do not end it early.
  EXPECT_EQ(Translated("[]\\p{L}]"), "[]\\p{L}" + added + "]");
  EXPECT_EQ(Translated("[^]\\p{L}]"), "[^]\\p{L}" + added + "]");
  EXPECT_EQ(Translated("[[:digit:]\\p{L}]"), "[[:digit:]\\p{L}" + added + "]");
  // An escaped backslash before p is no property.
  EXPECT_EQ(Translated("\\\\p{L}"), "\\\\p{L}");
  const std::string ext_i = Utf8({0x2EBF0}), garay = Utf8({0x10D50});
  EXPECT_EQ(Matches("[^ \\p{L}]+", "a" + ext_i + "!? " + garay + "1"),
            (std::vector<std::string>{"!?", "1"}));
  EXPECT_EQ(Matches("[0-9\\p{L}]+", "a" + ext_i + "1!" + garay),
            (std::vector<std::string>{"a" + ext_i + "1", garay}));
}

TEST(TranslateForPcre2, NegatedPropertiesOutsideAClass) {
  EXPECT_EQ(Translated("\\P{L}"), "[^\\p{L}" + AddedLetters() + "]");
  EXPECT_EQ(Translated("\\p{^L}"), Translated("\\P{L}"));
  EXPECT_EQ(Translated("\\P{^L}"), Translated("\\p{L}"));
  const std::string ext_i = Utf8({0x2EBF0});
  EXPECT_EQ(Matches("\\P{L}+", "a" + ext_i + "!? b"), (std::vector<std::string>{"!? "}));
}

TEST(TranslateForPcre2, Pcre2FormKeepsPcre2sCategoriesWithTheSameChecks) {
  EXPECT_EQ(TranslateForPcre2("[\\p{Letter}x]\\P{ l }\\p{^N}\\p{Mn}", CategoryTables::kPcre2).value(),
            "[\\p{L}x]\\P{L}\\P{N}\\p{Mn}");
  EXPECT_EQ(TranslateForPcre2("[\\p{Cased_Letter}]", CategoryTables::kPcre2).value(), "[\\p{L&}]");
  for (const char* bad : {"[\\P{L}]", "[\\p{Mn}]", "\\p{Han}", "\\pL", "[\\S]"}) {
    EXPECT_FALSE(TranslateForPcre2(bad, CategoryTables::kPcre2).ok()) << bad;
    EXPECT_FALSE(TranslateForPcre2(bad, CategoryTables::kHuggingFace).ok()) << bad;
  }
}

TEST(TranslateForPcre2, ChangedCodePointsAreFoundInUtf8) {
  EXPECT_FALSE(HasChangedCategory(""));
  EXPECT_FALSE(HasChangedCategory("plain ASCII text, longer than eight bytes"));
  EXPECT_FALSE(HasChangedCategory("\xC3\xA9t\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 " + Utf8({0x1F600})));
  for (uint32_t c : {0x0897u, 0x1171Eu, 0x2EBF0u, 0x323AFu, 0x10D40u, 0x1FAE8u, 0x2427u}) {
    EXPECT_TRUE(HasChangedCategory(Utf8({c}))) << std::hex << c;
    EXPECT_TRUE(HasChangedCategory("0123456789 " + Utf8({0x4E2D, c}) + " tail")) << std::hex << c;
  }
  // Next to changes but not changed; Unicode 17.0 additions (unassigned for HF and PCRE2).
  for (uint32_t c : {0x0896u, 0x2EBEFu, 0x323B0u, 0x1E6C0u, 0x0295u, 0x10FFFFu}) {
    EXPECT_FALSE(HasChangedCategory(Utf8({c}))) << std::hex << c;
  }
}

TEST(TranslateForPcre2, CategoriesThatLoseCodePoints) {
  // U+1171E AHOM CONSONANT SIGN MEDIAL RA went from Mn (Unicode 14) to Mc (16); the 10,301
  // code points assigned since 14.0 leave Cn, and all but 7 new format characters leave C.
  const std::string ra = Utf8({0x1171E}), grave = Utf8({0x0300}), ext_i = Utf8({0x2EBF0});
  const std::string unassigned = Utf8({0x0378}), u17 = Utf8({0x1E6C0});  // Cn in 16.0 too
  EXPECT_EQ(Translated("\\p{Mn}").rfind("(?:[^\\P{Mn}\\x{1171e}]|[", 0), 0u);
  EXPECT_EQ(Matches("\\p{Mn}", grave + ra), (std::vector<std::string>{grave}));
  EXPECT_EQ(Matches("\\p{Mc}", grave + ra), (std::vector<std::string>{ra}));
  EXPECT_EQ(Matches("\\P{Mn}", grave + ra), (std::vector<std::string>{ra}));
  // \P{Mn} is a group of two classes: repeated 20,000 times it outgrows PCRE2's 32 KB JIT
  // stack, and the interpreter finishes the match.
  const std::string run = std::string(20000, 'a') + ra;
  EXPECT_EQ(Matches("\\P{Mn}+", run + grave), (std::vector<std::string>{run}));
  EXPECT_EQ(Translated("\\p{Cn}").rfind("[^\\P{Cn}\\x{", 0), 0u);
  EXPECT_EQ(Matches("\\p{Cn}+", ext_i + unassigned + u17), (std::vector<std::string>{unassigned + u17}));
  EXPECT_EQ(Matches("\\p{C}+", ext_i + unassigned + u17), (std::vector<std::string>{unassigned + u17}));
  // Inside a class a negated category may gain code points (appended), never lose them.
  EXPECT_EQ(Matches("[\\P{C}]+", ext_i + unassigned + u17), (std::vector<std::string>{ext_i}));
  EXPECT_EQ(Translated("[\\P{Cn}]").rfind("[\\P{Cn}\\x{", 0), 0u);
}

TEST(TranslateForPcre2, NamesAreComparedAsOnigurumaDoes) {
  EXPECT_EQ(Translated("\\p{Letter}"), Translated("\\p{L}"));
  EXPECT_EQ(Translated("\\p{letter}"), Translated("\\p{L}"));
  EXPECT_EQ(Translated("\\p{ Uppercase-letter }"), Translated("\\p{Lu}"));
  EXPECT_EQ(Translated("\\p{Combining_Mark}"), Translated("\\p{M}"));
  EXPECT_EQ(Translated("\\p{Decimal_Number}"), Translated("\\p{Nd}"));
  EXPECT_EQ(Translated("\\p{Other}"), Translated("\\p{C}"));
  // LC (Oniguruma's cased letter) is PCRE2's L&.
  EXPECT_EQ(Translated("\\p{Cased_Letter}").rfind("[\\p{L&}\\x{", 0), 0u);
  EXPECT_EQ(Matches("\\p{LC}+", "aB" + Utf8({0x1C89, 0x1C8A, 0x01BB})),
            (std::vector<std::string>{"aB" + Utf8({0x1C89, 0x1C8A})}));  // U+01BB is Lo
}

TEST(TranslateForPcre2, UnsupportedConstructsAreErrorsThatNameThem) {
  // Inside a class, members can be added but not removed.
  EXPECT_NE(TranslationError("[\\P{L}x]").find("\\P{L} inside a character class"),
            std::string::npos);
  EXPECT_NE(TranslationError("[^\\p{^N}]").find("\\p{^N} inside a character class"),
            std::string::npos);
  EXPECT_NE(TranslationError("[\\p{Mn}]").find("\\p{Mn} inside a character class"),
            std::string::npos);
  EXPECT_NE(TranslationError("[\\p{Cn}]").find("\\p{Cn}"), std::string::npos);
  EXPECT_NE(TranslationError("[\\p{C}]").find("\\p{C}"), std::string::npos);
  // Properties other than general categories, in or out of classes.
  EXPECT_NE(TranslationError("\\p{Han}+").find("\\p{Han}"), std::string::npos);
  EXPECT_NE(TranslationError("[\\p{Hiragana}]").find("\\p{Hiragana}"), std::string::npos);
  EXPECT_NE(TranslationError("\\p{L&}").find("\\p{L&}"), std::string::npos);  // not Oniguruma's
  EXPECT_NE(TranslationError("\\p{gc=L}").find("\\p{gc=L}"), std::string::npos);
  // \pL without braces: Oniguruma reads the text "pL".
  EXPECT_NE(TranslationError("\\pL").find("\\p without a {name}"), std::string::npos);
  EXPECT_NE(TranslationError("\\p{L").find("\\p without a {name}"), std::string::npos);
  // What stays allowed inside a class: categories that only gain, negated ones that only lose.
  EXPECT_EQ(TranslationError("[\\p{L}\\p{M}\\p{N}\\p{P}\\p{S}\\p{Z}\\p{Lo}\\p{Mc}\\P{C}\\P{Cn}]"), "");
}

// ---------------------------------------------------------------------------------------------
// Every category escape at every code point, against HF's categories.

struct CategoryRange {
  uint32_t first, last;
  std::string gc;
};

std::vector<CategoryRange> ReadHfCategories() {
  std::ifstream in(std::string(DSERVE_TOKENIZER_GOLDENS) + "/unicode_categories_hf.txt");
  EXPECT_TRUE(in.good());
  std::vector<CategoryRange> out;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t dots = line.find(".."), semi = line.find(';');
    const std::string first = line.substr(0, std::min(dots, line.find(' ')));
    const std::string last = dots == std::string::npos ? first : line.substr(dots + 2, line.find(' ', dots) - dots - 2);
    out.push_back({static_cast<uint32_t>(std::stoul(first, nullptr, 16)),
                   static_cast<uint32_t>(std::stoul(last, nullptr, 16)), line.substr(semi + 2)});
  }
  return out;
}

// Code points as UTF-8 text, with the byte offset where each starts.
struct CodePointText {
  std::string text;
  std::vector<uint32_t> code_points;
  std::vector<size_t> offsets;
  void Add(uint32_t c) {
    code_points.push_back(c);
    offsets.push_back(text.size());
    AppendUtf8(c, &text);
  }
};

TEST(UnicodeCategories, EveryEscapeMatchesHuggingFacesCategoryAtEveryCodePoint) {
  std::vector<std::string> gc(0x110000);
  const std::vector<CategoryRange> ranges = ReadHfCategories();
  ASSERT_GT(ranges.size(), 3000u);
  uint32_t next = 0;
  for (const CategoryRange& r : ranges) {
    ASSERT_EQ(r.first, next) << "ranges must cover every code point in order";
    for (uint32_t c = r.first; c <= r.last; ++c) gc[c] = r.gc;
    next = r.last + 1;
  }
  ASSERT_EQ(next, 0x110000u);
  // Two texts: all code points of planes 0-3 and 14 (surrogates excepted) and the first and
  // last 256 of the other planes (unassigned, private use and noncharacters in between), which
  // makes Regex use the supplemented form, and those without a changed category, where it uses
  // PCRE2's own (so HasChangedCategory must miss none that matters).
  CodePointText all, unchanged;
  int changed = 0;
  for (uint32_t c = 0; c < 0x110000; ++c) {
    if (c >= 0xD800 && c < 0xE000) continue;
    std::string one;
    AppendUtf8(c, &one);
    if (HasChangedCategory(one)) ++changed;  // counted over all planes
    const uint32_t plane = c >> 16, low = c & 0xFFFF;
    if (plane > 3 && plane != 14 && low >= 0x100 && low < 0xFF00) continue;
    all.Add(c);
    if (!HasChangedCategory(one)) unchanged.Add(c);
  }
  EXPECT_EQ(changed, 10302);  // 10,301 assigned in Unicode 15.0-16.0, and U+1171E
  const std::vector<std::string> properties = {
      "L",  "LC", "Lu", "Ll", "Lt", "Lm", "Lo", "M",  "Mn", "Mc", "Me", "N",  "Nd",
      "Nl", "No", "P",  "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "S",  "Sm", "Sc",
      "Sk", "So", "Z",  "Zs", "Zl", "Zp", "C",  "Cc", "Cf", "Co", "Cn"};
  int patterns = 0;
  for (const std::string& property : properties) {
    std::vector<uint8_t> in(0x110000);
    for (uint32_t c = 0; c < 0x110000; ++c) {
      const char* g = gc[c].c_str();
      in[c] = property == "LC"          ? g[0] == 'L' && (g[1] == 'u' || g[1] == 'l' || g[1] == 't')
              : property.size() == 1 ? g[0] == property[0]
                                     : g[0] == property[0] && g[1] == property[1];
    }
    // Each form of the escape that translates, with whether it means the set or its complement
    // (in classes only for the supplemented major classes and LC: subcategories share the code).
    std::vector<std::pair<std::string, bool>> forms = {{"\\p{" + property + "}+", true},
                                                       {"\\P{" + property + "}+", false}};
    const bool supplemented = Translated("\\p{" + property + "}") != "\\p{" + property + "}";
    const bool in_class = supplemented && (property.size() == 1 || property == "LC");
    if (in_class && TranslateForPcre2("[\\p{" + property + "}]").ok()) {
      forms.push_back({"[\\p{" + property + "}]+", true});
      forms.push_back({"[^\\p{" + property + "}]+", false});
    }
    if (in_class && TranslateForPcre2("[\\P{" + property + "}]").ok()) {
      forms.push_back({"[\\P{" + property + "}]+", false});
      forms.push_back({"[^\\P{" + property + "}]+", true});
    }
    for (const auto& [pattern, positive] : forms) {
      auto regex = Regex::Compile(pattern);
      ASSERT_TRUE(regex.ok()) << pattern << ": " << regex.status();
      for (const CodePointText* t : {&all, &unchanged}) {
        // The plain form on a subset of `all` again.
        if (t == &unchanged && (!supplemented || pattern[0] == '[')) continue;
        std::vector<Span> spans;
        (*regex)->FindAll(t->text, {0, t->text.size()}, &spans);
        int wrong = 0;
        size_t s = 0;  // spans and code points are both in text order
        for (size_t k = 0; k < t->code_points.size(); ++k) {
          const size_t offset = t->offsets[k];
          while (s < spans.size() && spans[s].end <= offset) ++s;
          const bool matched = s < spans.size() && spans[s].begin <= offset;
          const uint32_t c = t->code_points[k];
          if (matched == (in[c] == positive)) continue;
          if (++wrong <= 3) {
            ADD_FAILURE() << pattern << " at U+" << std::hex << c << " (HF: " << gc[c]
                          << "): " << (matched ? "matches" : "does not match")
                          << (t == &all ? "" : " (PCRE2's own tables)");
          }
        }
        EXPECT_EQ(wrong, 0) << pattern;
      }
      ++patterns;
    }
  }
  RecordProperty("patterns_checked", patterns);
}

// ---------------------------------------------------------------------------------------------
// The real tokenizer on probe lines, against HF's ids.

TEST(UnicodeSweep, EveryProbeLineEncodesAsHuggingFace) {
  auto t = LoadTokenizer(models::DefaultTokenizerDir());
  ASSERT_TRUE(t.ok()) << t.status() << " (scripts/setup.sh fetches the tokenizer)";
  std::ifstream in(std::string(DSERVE_TOKENIZER_GOLDENS) + "/unicode_sweep_goldens.jsonl");
  ASSERT_TRUE(in.good());
  std::map<std::string, int> lines, identical;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const Json g = Json::parse(line);
    const std::string kind = g["kind"].get<std::string>(), text = g["text"].get<std::string>();
    auto ids = (*t)->Encode(text, /*add_special_tokens=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    const auto want = g["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(*ids, want) << kind << " " << Json(text).dump();
    ++lines[kind];
    if (*ids == want) ++identical[kind];
  }
  // 10,302 code points whose category changed (8 a line), a quarter of the 4,804 where Node's
  // Unicode 17.0 and HF differ, every 256th other code point of planes 0-3 and 14.
  EXPECT_EQ(lines["changed"], 1288);
  EXPECT_EQ(lines["icu_only"], 151);
  EXPECT_EQ(lines["control"], 152);
  for (const auto& [kind, n] : lines) {
    EXPECT_EQ(identical[kind], n) << kind;
    RecordProperty("identical_" + kind, identical[kind]);
  }
}

}  // namespace
}  // namespace dserve::engine
