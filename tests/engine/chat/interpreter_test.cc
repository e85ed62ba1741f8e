// The template interpreter on its own: whitespace control, statements and scoping, Python values
// and operators, filters and tests, undefined handling, and the errors for what dserve does not
// support (each naming the construct and its line). Expected texts are what jinja2 3.1 renders
// with Hugging Face's settings (the golden snippets check many more cases against jinja2 itself).
#include <string>

#include "absl/strings/match.h"
#include "engine/chat/chat_template.h"
#include "engine/chat/py_format.h"
#include "engine/chat/py_unicode.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace dserve::engine {
namespace {

using Json = nlohmann::ordered_json;

absl::StatusOr<std::string> Render(const std::string& source, const Json& vars = Json::object()) {
  absl::StatusOr<ChatTemplate> t = ChatTemplate::Compile(source, Json{{"bos_token", "<s>"}});
  if (!t.ok()) return t.status();
  ChatTemplateInputs in;
  for (const auto& [k, v] : vars.items()) {
    if (k == "messages") {
      in.messages = v;
    } else {
      in.extra[k] = v;
    }
  }
  return t->Render(in);
}

std::string Ok(const std::string& source, const Json& vars = Json::object()) {
  absl::StatusOr<std::string> out = Render(source, vars);
  EXPECT_TRUE(out.ok()) << source << ": " << out.status();
  return out.ok() ? *out : "<error>";
}

std::string Err(const std::string& source, const Json& vars = Json::object()) {
  absl::StatusOr<std::string> out = Render(source, vars);
  EXPECT_FALSE(out.ok()) << source << " rendered " << (out.ok() ? *out : "");
  return out.ok() ? "" : std::string(out.status().message());
}

TEST(InterpreterWhitespace, TrimBlocksRemovesFirstNewlineAfterBlockTags) {
  EXPECT_EQ(Ok("{% if true %}\nA\n{% endif %}\nB"), "A\nB");
  EXPECT_EQ(Ok("{# c #}\nA"), "A");
  // Not after {{ }}.
  EXPECT_EQ(Ok("{{ 'x' }}\nA"), "x\nA");
}

TEST(InterpreterWhitespace, LstripBlocksOnlyFromLineStart) {
  EXPECT_EQ(Ok("A\n    {% if true %}B{% endif %}"), "A\nB");
  EXPECT_EQ(Ok("A  {% if true %}B{% endif %}"), "A  B");
  EXPECT_EQ(Ok("A\n    {{ 'B' }}"), "A\n    B");
  EXPECT_EQ(Ok("A\n    {%+ if true %}B{% endif %}"), "A\n    B");
}

TEST(InterpreterWhitespace, DashStripsAllWhitespaceAndPlusKeeps) {
  EXPECT_EQ(Ok("A \n\n {%- if true -%} \n\n B{% endif %}"), "AB");
  EXPECT_EQ(Ok("A \n {{- 'B' -}} \n C"), "ABC");
  EXPECT_EQ(Ok("{% if true +%}\nB{% endif %}"), "\nB");
  EXPECT_EQ(Ok("text\n"), "text");
  EXPECT_EQ(Ok("{% raw %}{{ x }}{% endraw %}"), "{{ x }}");
}

TEST(InterpreterStatements, LoopVariables) {
  EXPECT_EQ(Ok("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
               "{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}"),
            "1032TrueFalse3 2121FalseFalse3 3210FalseTrue3 ");
  EXPECT_EQ(Ok("{% for x in [1, 2, 3] %}{{ loop.previtem }}-{{ loop.nextitem }} {% endfor %}"),
            "-2 1-3 2- ");
  EXPECT_EQ(Ok("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(Ok("{% for x in range(6) if x is even %}{{ x }}{{ loop.length }}{% endfor %}"),
            "032343");
  EXPECT_EQ(Ok("{% for k, v in d.items() %}{{ k }}{{ v }}{% endfor %}", {{"d", {{"a", 1}}}}), "a1");
  EXPECT_EQ(Ok("{% for x in range(9) %}{% if x == 1 %}{% continue %}{% endif %}"
               "{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "02");
}

TEST(InterpreterStatements, ScopingAndNamespace) {
  // A set inside a loop is local to the iteration; namespace() carries values out.
  EXPECT_EQ(Ok("{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}"),
            "221");
  EXPECT_EQ(Ok("{% set ns = namespace(n=0) %}{% for i in [1, 2, 3] %}{% set ns.n = ns.n + i %}"
               "{% endfor %}{{ ns.n }}"),
            "6");
  EXPECT_EQ(Ok("{% if true %}{% set y = 'leaks' %}{% endif %}{{ y }}"), "leaks");
  EXPECT_EQ(Ok("{% set b %}x{{ 1 + 1 }}{% endset %}{{ b }}"), "x2");
  EXPECT_TRUE(absl::StrContains(Err("{% set d = {} %}{% set d.x = 1 %}"),
                                "cannot assign attribute on non-namespace object"));
}

TEST(InterpreterValues, PythonPrinting) {
  EXPECT_EQ(Ok("{{ true }} {{ none }} {{ 1.0 }} {{ 1e16 }} {{ 0.1 + 0.2 }} {{ 7 / 2 }}"),
            "True None 1.0 1e+16 0.30000000000000004 3.5");
  EXPECT_EQ(Ok("{{ [1, 'a', none, {'k': (1,)}] }}"), "[1, 'a', None, {'k': (1,)}]");
  EXPECT_EQ(Ok("{{ [\"it's\"] }}"), "[\"it's\"]");
  EXPECT_EQ(Ok("{{ d }}", {{"d", {{"x", {1.5, true}}}}}), "{'x': [1.5, True]}");
}

TEST(InterpreterValues, OperatorsFollowPython) {
  EXPECT_EQ(
      Ok("{{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ -2 ** 2 }} {{ 'ab' * 2 }} {{ 1 ~ none }}"),
      "-4 2 1024 4 abab 1None");
  EXPECT_EQ(Ok("{{ 'a' in 'cat' }} {{ 'k' in {'k': 1} }} {{ 1 < 2 < 3 }} {{ 0 or 'x' }}"),
            "True True True x");
  EXPECT_EQ(Ok("{{ 'a' + 'b'|upper }}"), "aB");
  EXPECT_TRUE(absl::StrContains(Err("{{ 'a' + 1 }}"),
                                "TypeError: can only concatenate str (not \"int\") to str"));
}

TEST(InterpreterValues, SlicingAndLookup) {
  const Json vars = {{"l", {0, 1, 2, 3}}, {"m", {{"role", "user"}}}};
  EXPECT_EQ(Ok("{{ l[1:] }} {{ l[::-1] }} {{ l[-1] }} {{ 'héllo'[1:3] }} {{ l[::2] }}", vars),
            "[1, 2, 3] [3, 2, 1, 0] 3 él [0, 2]");
  EXPECT_EQ(Ok("{{ m.role }} {{ m['role'] }} [{{ m.content }}] {{ m.content is defined }}", vars),
            "user user [] False");
}

TEST(InterpreterValues, UndefinedSemantics) {
  EXPECT_EQ(Ok("[{{ nope }}] {{ nope is defined }} {{ nope|length }} {{ nope|default('d') }}"
               "{% for x in nope %}x{% endfor %}"),
            "[] False 0 d");
  EXPECT_TRUE(absl::StrContains(Err("{{ nope.attr }}"), "UndefinedError: 'nope' is undefined"));
  EXPECT_TRUE(absl::StrContains(Err("{{ m.content + 'x' }}", {{"m", Json::object()}}),
                                "UndefinedError: 'dict object' has no attribute 'content'"));
}

TEST(InterpreterFilters, CommonFilters) {
  EXPECT_EQ(Ok("{{ '  x '|trim }}|{{ 'Ab'|lower }}{{ 'Ab'|upper }}|{{ 'a b'|title }}"),
            "x|abAB|A B");
  EXPECT_EQ(Ok("{{ [1, 2]|join(',') }} {{ [1, 2]|first }} {{ [1, 2]|last }} {{ 'ab'|list }}"),
            "1,2 1 2 ['a', 'b']");
  EXPECT_EQ(Ok("{{ ms|selectattr('r', 'equalto', 'u')|map(attribute='c')|join }}",
               {{"ms", {{{"r", "u"}, {"c", "1"}}, {{"r", "a"}, {"c", "2"}}}}}),
            "1");
  EXPECT_EQ(Ok("{{ {'b': 'é', 'a': [1]}|tojson }}"), "{\"b\": \"é\", \"a\": [1]}");
  EXPECT_EQ(Ok("{{ [1]|tojson(indent=2) }}"), "[\n  1\n]");
  EXPECT_EQ(Ok("{{ 'x\ny'|indent(2, true) }}"), "  x\n  y");
  EXPECT_EQ(Ok("{{ '<b>'|e }} {{ '4.5'|int }} {{ 'x'|float }}"), "&lt;b&gt; 4 0.0");
}

TEST(InterpreterTests, CommonTests) {
  EXPECT_EQ(Ok("{{ none is none }} {{ 1 is number }} {{ 'a' is string }} {{ {} is mapping }} "
               "{{ 3 is odd }} {{ 9 is divisibleby 3 }} {{ 1 is not none }} {{ 'a' is in 'abc' }}"),
            "True True True True True True True True");
}

TEST(InterpreterErrors, RaiseExceptionCarriesTheMessage) {
  absl::StatusOr<std::string> out = Render("a{{ raise_exception('Roles must alternate') }}");
  ASSERT_FALSE(out.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(out.status()));
  EXPECT_EQ(out.status().message(), "Roles must alternate");
}

TEST(InterpreterErrors, RuntimeErrorsNameTheLine) {
  EXPECT_TRUE(absl::StrContains(Err("line one\n{{ 'x' }}\n{{ 1 + 'a' }}"),
                                "chat template line 3: TypeError"));
}

TEST(InterpreterErrors, SyntaxErrorsNameTheLine) {
  EXPECT_TRUE(absl::StrContains(Err("ok\n{% if x %}\nno end"), "chat template line 3"));
  EXPECT_TRUE(absl::StrContains(Err("{% frobnicate %}"), "unknown tag 'frobnicate'"));
  EXPECT_TRUE(absl::StrContains(Err("{{ x | nosuchfilter }}"), "No filter named 'nosuchfilter'"));
  EXPECT_TRUE(absl::StrContains(Err("{% break %}"), "'break' outside of a for loop"));
  EXPECT_TRUE(absl::StrContains(Err("{{ 'unterminated }}"), "line 1"));
}

TEST(InterpreterErrors, UnsupportedConstructsAreNamed) {
  struct Case {
    const char* source;
    const char* names;
  };
  const Case cases[] = {
      {"\n{% macro m() %}x{% endmacro %}", "line 2: the {% macro %} tag is not supported"},
      {"{% call m() %}x{% endcall %}", "the {% call %} tag"},
      {"{% filter upper %}x{% endfilter %}", "the {% filter %} tag"},
      {"{% include 'x' %}", "the {% include %} tag"},
      {"{% extends 'x' %}", "the {% extends %} tag"},
      {"{% for x in y recursive %}{% endfor %}", "recursive for loops"},
      {"{{ 2.5|round }}", "the filter 'round'"},
      {"{{ 'a{}'.format(1) }}", "str.format()"},
      {"{{ [1].pop() }}", "list.pop()"},
      {"{{ [1]|map('string') }}", "printing a generator"},
      {"{{ 'x'.split }}", "printing the function 'str.split'"},
      {"{{ '%s' % 1 }}", "printf-style formatting"},
      {"{{ 2 ** 70 }}", "beyond 64 bits"},
      {"{{ {1: 'a'} }}", "keys that are not strings"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::string> out = Render(c.source);
    ASSERT_FALSE(out.ok()) << c.source;
    EXPECT_TRUE(absl::IsUnimplemented(out.status())) << c.source << ": " << out.status();
    EXPECT_TRUE(absl::StrContains(out.status().message(), c.names))
        << c.source << ": " << out.status();
    EXPECT_TRUE(absl::StrContains(out.status().message(), "line ")) << c.source;
  }
}

TEST(InterpreterErrors, DeepNestingIsRefusedNotRecursedInto) {
  // The parser and the renderer recurse on the template's structure: limits keep adversarial
  // templates and requests from exhausting the stack.
  std::string parens = "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}";
  EXPECT_TRUE(absl::StrContains(Err(parens), "nested more than"));
  std::string chain = "{{ 1";
  for (int i = 0; i < 5000; ++i) chain += " + 1";
  EXPECT_TRUE(absl::StrContains(Err(chain + " }}"), "nested more than"));
  std::string nots = "{{ ";
  for (int i = 0; i < 5000; ++i) nots += "not ";
  EXPECT_TRUE(absl::StrContains(Err(nots + "1 }}"), "nested more than"));
  std::string ifs;
  for (int i = 0; i < 5000; ++i) ifs += "{% if true %}";
  EXPECT_TRUE(absl::StrContains(Err(ifs), "nested more than"));
  // A long flat expression is fine.
  std::string list = "{{ [";
  for (int i = 0; i < 5000; ++i) list += "1,";
  EXPECT_EQ(Ok(list + "]|length }}"), "5000");

  Json deep = Json::array();
  for (int i = 0; i < 1000; ++i) {
    Json outer = Json::array();
    outer.push_back(std::move(deep));
    deep = std::move(outer);
  }
  EXPECT_TRUE(absl::StrContains(Err("{{ x|length }}", {{"x", deep}}), "nested more than"));
  EXPECT_EQ(Ok("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }} {{ ns == ns.me }}"),
            "<Namespace {'a': 1, 'me': <Namespace {...}>}> True");
  EXPECT_TRUE(absl::StrContains(
      Err("{% set ns = namespace(x=[]) %}{% for i in range(2000) %}{% set ns.x = [ns.x] %}"
          "{% endfor %}{{ ns.x }}"),
      "RecursionError"));
}

TEST(PyFormat, FloatRepr) {
  using jinja::FormatFloat;
  EXPECT_EQ(FormatFloat(1.0), "1.0");
  EXPECT_EQ(FormatFloat(0.1), "0.1");
  EXPECT_EQ(FormatFloat(1e16), "1e+16");
  EXPECT_EQ(FormatFloat(1e15), "1000000000000000.0");
  EXPECT_EQ(FormatFloat(0.0001), "0.0001");
  EXPECT_EQ(FormatFloat(0.00001), "1e-05");
  EXPECT_EQ(FormatFloat(-2.5e-300), "-2.5e-300");
  EXPECT_EQ(FormatFloat(123456.789), "123456.789");
}

TEST(PyFormat, StringRepr) {
  using jinja::ReprString;
  EXPECT_EQ(ReprString("a'b"), "\"a'b\"");
  EXPECT_EQ(ReprString("a'b\""), "'a\\'b\"'");
  EXPECT_EQ(ReprString("\n\t\x01\x7f"), "'\\n\\t\\x01\\x7f'");
  EXPECT_EQ(ReprString("é中😀"), "'é中😀'");
  EXPECT_EQ(ReprString("\xc2\xa0"), "'\\xa0'");
}

TEST(PyUnicode, CaseMappingLikeCPython) {
  EXPECT_EQ(jinja::PyUpper("straße"), "STRASSE");
  EXPECT_EQ(jinja::PyLower("ΟΔΟΣ"), "οδος");
  EXPECT_EQ(jinja::PyLower("ΣΑΣ ΟΔΟΣ."), "σας οδος.");
  EXPECT_EQ(jinja::PyTitle("ǆemal 1st"), "ǅemal 1St");
  EXPECT_EQ(jinja::PyCapitalize("ﬁne DAY"), "Fine day");
}

}  // namespace
}  // namespace dserve::engine
