#include "runtime/data/jinja.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fjord::data {
namespace {

using ::testing::HasSubstr;
using json = nlohmann::ordered_json;

// Renders `source` with `context`; the error message on failure.
std::string R(const std::string& source, const json& context = json::object()) {
  absl::StatusOr<JinjaTemplate> t = JinjaTemplate::Parse(source);
  if (!t.ok()) return "PARSE ERROR: " + std::string(t.status().message());
  absl::StatusOr<std::string> out = t->Render(context);
  if (!out.ok()) return "RENDER ERROR: " + std::string(out.status().message());
  return *out;
}

absl::Status ParseStatus(const std::string& source) {
  return JinjaTemplate::Parse(source).status();
}

absl::Status RenderStatus(const std::string& source, const json& context = json::object(),
                          JinjaOptions options = JinjaOptions()) {
  absl::StatusOr<JinjaTemplate> t = JinjaTemplate::Parse(source, options);
  if (!t.ok()) return t.status();
  return t->Render(context).status();
}

TEST(JinjaTest, TextOutputAndComments) {
  EXPECT_EQ(R("plain"), "plain");
  EXPECT_EQ(R("a{{ x }}b{# gone #}c", {{"x", "X"}}), "aXbc");
  EXPECT_EQ(R("{{ 'a' ~ 1 ~ none ~ true }}"), "a1NoneTrue");
  EXPECT_EQ(R("{{ x }}|{{ y.z if y is defined }}"), "|");
}

TEST(JinjaTest, WhitespaceControlAsTransformersSetsIt) {
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: the
  // indentation before it goes; {{ }} keeps both.
  EXPECT_EQ(R("{% if true %}\n  yes\n  {% endif %}\nend"), "  yes\nend");
  EXPECT_EQ(R("  {{ 'v' }}\n"), "  v");  // and one trailing newline is dropped
  EXPECT_EQ(R("a  \n  {%- if true -%}  \n  b  {%- endif %}"), "ab");
  EXPECT_EQ(R("x\n    {%+ if true %}y{% endif +%}\nz"), "x\n    y\nz");
  EXPECT_EQ(R("{{- ' a ' -}}  \n {{ 'b' }}"), " a b");
  EXPECT_EQ(R("a\r\nb"), "a\nb");
}

TEST(JinjaTest, IfElifElse) {
  const std::string t = "{% if x > 2 %}big{% elif x == 2 %}two{% else %}small{% endif %}";
  EXPECT_EQ(R(t, {{"x", 3}}), "big");
  EXPECT_EQ(R(t, {{"x", 2}}), "two");
  EXPECT_EQ(R(t, {{"x", 1}}), "small");
}

TEST(JinjaTest, ForLoopVariablesFilterElseBreakContinue) {
  EXPECT_EQ(R("{% for x in xs %}{{ loop.index0 }}{{ loop.index }}{{ loop.revindex }}"
              "{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
              {{"xs", {"a", "b"}}}),
            "012TrueFalse2;121FalseTrue2;");
  EXPECT_EQ(R("{% for x in xs if x != 'b' %}{{ x }}{{ loop.length }}{% endfor %}",
              {{"xs", {"a", "b", "c"}}}),
            "a2c2");
  EXPECT_EQ(R("{% for x in [] %}a{% else %}none{% endfor %}"), "none");
  EXPECT_EQ(R("{% for x in range(9) %}{% if x is even %}{% continue %}{% endif %}"
              "{% if x > 5 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "135");
  EXPECT_EQ(
      R("{% for k, v in d.items() %}{{ k }}={{ v }} {% endfor %}", {{"d", {{"z", 1}, {"a", 2}}}}),
      "z=1 a=2 ");
  EXPECT_EQ(R("{% for c in 'h\xc3\xa9' %}[{{ c }}]{% endfor %}"), "[h][\xc3\xa9]");
}

TEST(JinjaTest, SetScopesAndNamespaces) {
  // A set inside a loop does not leak out of it (jinja2's scoping).
  EXPECT_EQ(R("{% set y = 1 %}{% for x in [1, 2] %}{% set y = x %}{% endfor %}{{ y }}"), "1");
  EXPECT_EQ(R("{% set ns = namespace(n=0, s='') %}{% for x in [1, 2, 3] %}"
              "{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}"),
            "6");
  EXPECT_EQ(R("{% set block %}in {{ 1 + 1 }}{% endset %}[{{ block }}]"), "[in 2]");
  EXPECT_THAT(RenderStatus("{% set d = {} %}{% set d.x = 1 %}").message(),
              HasSubstr("non-namespace"));
}

TEST(JinjaTest, Macros) {
  EXPECT_EQ(R("{% macro m(a, b='x') %}<{{ a }}{{ b }}>{% endmacro %}{{ m(1) }}{{ m(2, b='y') }}"
              "{{ m(a=3) }}"),
            "<1x><2y><3x>");
}

TEST(JinjaTest, OperatorsAndLiterals) {
  EXPECT_EQ(R("{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 4 / 2 }} {{ 2 ** 10 }}"),
            "3 -4 2 3.5 2.0 1024");
  EXPECT_EQ(R("{{ 1e20 }} {{ 1.5e-05 }} {{ 0.1 + 0.2 }} {{ 100.0 }}"),
            "1e+20 1.5e-05 0.30000000000000004 100.0");
  EXPECT_EQ(R("{{ [1, 'a', none, true] }} {{ {'k': (1,)} }}"), "[1, 'a', None, True] {'k': (1,)}");
  EXPECT_EQ(R("{{ 'a' + 'b' }}{{ [1] + [2] }}{{ 'ab' * 2 }}"), "ab[1, 2]abab");
  EXPECT_EQ(R("{{ 1 < 2 < 3 }}{{ 'b' in 'abc' }}{{ 3 not in [1] }}{{ not 0 }}"),
            "TrueTrueTrueTrue");
  EXPECT_EQ(R("{{ 'x' if 0 else 'y' }}{{ '' or 'or' }}{{ 1 and 'and' }}"), "yorand");
  EXPECT_EQ(R("{{ 'a\\n\\t\\u00e9\\x41\\'' }}|{{ \"q\\\"\" }}"),
            "a\n\t\xc3\xa9"
            "A'|q\"");
  EXPECT_EQ(R("{{ True }}{{ None }}{{ false }}"), "TrueNoneFalse");
}

TEST(JinjaTest, SubscriptsAndSlices) {
  const json ctx = {{"s", "h\xc3\xa9llo"}, {"xs", {1, 2, 3, 4}}};
  EXPECT_EQ(R("{{ s[1] }}|{{ s[1:3] }}|{{ s[::-1] }}|{{ s[-2:] }}|{{ s|length }}", ctx),
            "\xc3\xa9|\xc3\xa9l|oll\xc3\xa9h|lo|5");
  EXPECT_EQ(R("{{ xs[1:] }}{{ xs[::2] }}{{ xs[-1] }}{{ xs[9] }}", ctx), "[2, 3, 4][1, 3]4");
  EXPECT_EQ(R("{{ d.a }}{{ d['a'] }}{{ d.missing }}", {{"d", {{"a", 1}}}}), "11");
}

TEST(JinjaTest, TestsAsTemplatesUseThem) {
  EXPECT_EQ(R("{{ x is defined }}{{ x is undefined }}{{ none is none }}{{ 'a' is string }}"
              "{{ {} is mapping }}{{ [] is iterable }}{{ 1 is number }}{{ true is boolean }}"
              "{{ false is false }}{{ 1 is true }}{{ 3 is odd }}{{ 'a' is not string }}"),
            "FalseTrueTrueTrueTrueTrueTrueTrueTrueFalseTrueFalse");
  EXPECT_EQ(R("{{ (x is defined and x is not none) }}{{ 6 is divisibleby 3 }}{{ 1 is eq 1 }}",
              {{"x", nullptr}}),
            "FalseTrueTrue");
}

TEST(JinjaTest, Filters) {
  const json ctx = {{"xs", {{{"a", 1}, {"r", "user"}}, {{"a", 2}, {"r", "bot"}}}},
                    {"d", {{"b", 2}, {"a", "\xc3\xa9\"\n"}}}};
  EXPECT_EQ(R("{{ '  x  '|trim }}|{{ 'Ab'|upper }}{{ 'Ab'|lower }}|{{ 'ab cd'|title }}"
              "|{{ 'aB'|capitalize }}|{{ [1,2]|length }}{{ 'abc'|count }}"),
            "x|ABab|Ab Cd|Ab|23");
  EXPECT_EQ(R("{{ x|default('d') }}{{ ''|default('e', true) }}{{ [3, 4]|first }}{{ [3, 4]|last }}"
              "{{ [1, 2]|join('-') }}{{ 'aXa'|replace('a', 'b') }}{{ '5'|int + 1 }}{{ 'q'|int }}"),
            "de341-2bXb60");
  EXPECT_EQ(R("{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ [1.0, none, false]|tojson }}", ctx),
            "{\"b\": 2, \"a\": \"\xc3\xa9\\\"\\n\"}|{\n  \"b\": 2,\n  \"a\": \"\xc3\xa9\\\"\\n\"\n}"
            "|[1.0, null, false]");
  EXPECT_EQ(R("{{ xs|map(attribute='a')|join(',') }}|{{ xs|selectattr('r', 'equalto', 'bot')|list"
              "|length }}|{{ xs|rejectattr('a', 'gt', 1)|map(attribute='r')|first }}",
              ctx),
            "1,2|1|user");
  EXPECT_EQ(R("{% for k, v in d|dictsort %}{{ k }}{% endfor %}{{ d|items|list|length }}"
              "{{ 'ab'|list }}{{ 3|string ~ 'x' }}{{ [2, 1]|sort }}{{ [1, 2]|reverse|list }}",
              ctx),
            "ab2['a', 'b']3x[1, 2][2, 1]");
}

TEST(JinjaTest, StringAndDictMethods) {
  EXPECT_EQ(
      R("{{ '\\n a \\n'.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'ab'.lstrip('a') }}"
        "|{{ 'ab'.rstrip('b') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}"
        "|{{ 'ab'.startswith('a') }}{{ 'ab'.endswith(('x', 'b')) }}|{{ 'aa'.replace('a', 'b') }}"
        "|{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}"),
      "a|a|b|a|['a', 'b', '', 'c']|['a', 'b']|TrueTrue|bb|ABab");
  EXPECT_EQ(R("{{ d.get('a') }}{{ d.get('z') }}{{ d.get('z', 7) }}{{ d.keys()|list }}"
              "{{ d.values()|list }}{{ d.items()|list }}",
              {{"d", {{"a", 1}}}}),
            "1None7['a'][1][('a', 1)]");
}

TEST(JinjaTest, UndefinedFollowsJinja2) {
  EXPECT_EQ(R("[{{ u }}]{{ u|length }}{% for x in u %}x{% endfor %}{{ u == u }}{{ 'a' in u }}"),
            "[]0TrueFalse");
  EXPECT_THAT(RenderStatus("{{ u.x }}").message(), HasSubstr("'u' is undefined"));
  EXPECT_THAT(RenderStatus("{{ u + 1 }}").message(), HasSubstr("'u' is undefined"));
  EXPECT_THAT(RenderStatus("{{ d.missing.x }}", {{"d", json::object()}}).message(),
              HasSubstr("has no attribute 'missing'"));
}

TEST(JinjaTest, SyntaxErrorsNameLineAndColumn) {
  const absl::Status s = ParseStatus("ok\n{% if x %}\n  {{ 1 + }}\n{% endif %}");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("line 3, column 10"));
  EXPECT_THAT(ParseStatus("{% for x in y %}").message(),
              HasSubstr("line 1, column 17: unexpected end of template; expected '{% endfor %}'"));
  EXPECT_THAT(ParseStatus("a\n{{ x").message(), HasSubstr("line 2, column 1"));
  EXPECT_THAT(ParseStatus("{{ x|nosuch }}").message(),
              HasSubstr("line 1, column 6: no filter named 'nosuch'"));
  EXPECT_THAT(ParseStatus("{% include 'x' %}").message(), HasSubstr("not supported"));
  EXPECT_THAT(ParseStatus("{% break %}").message(), HasSubstr("outside of a loop"));
  EXPECT_THAT(ParseStatus("{{ 'abc }}").message(), HasSubstr("unterminated string"));
  EXPECT_THAT(ParseStatus("{# never closed").message(), HasSubstr("unterminated comment"));
}

TEST(JinjaTest, RaiseExceptionGivesItsMessageAndLine) {
  const absl::Status s =
      RenderStatus("x\n{% if true %}{{ raise_exception('Roles must alternate') }}{% endif %}");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "line 2: raise_exception: Roles must alternate");
}

TEST(JinjaTest, RuntimeTypeErrors) {
  EXPECT_THAT(RenderStatus("{{ 'a' + 1 }}").message(),
              HasSubstr("unsupported operand type(s) for +: 'str' and 'int'"));
  EXPECT_THAT(RenderStatus("{{ 1 // 0 }}").message(), HasSubstr("by zero"));
  EXPECT_THAT(RenderStatus("{{ 'a' < 1 }}").message(), HasSubstr("not supported between"));
  EXPECT_THAT(RenderStatus("{% for x in 3 %}{% endfor %}").message(),
              HasSubstr("'int' object is not iterable"));
}

TEST(JinjaTest, BudgetsStopHostileTemplates) {
  JinjaOptions small;
  small.max_steps = 10000;
  small.max_output_bytes = 1 << 16;
  EXPECT_EQ(RenderStatus("{% for x in range(100000) %}{% endfor %}", {}, small).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RenderStatus("{{ 'x' * 100000000 }}", {}, small).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RenderStatus("{% for x in range(100) %}{{ 'y' * 1000 }}{% endfor %}", {}, small).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RenderStatus("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").code(),
            absl::StatusCode::kResourceExhausted);
  // Bounded macro recursion well inside the stack (the first version ran the
  // AddressSanitizer build out of stack before its budget stopped it); a
  // recursion of 50 levels still renders.
  EXPECT_THAT(RenderStatus("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").message(),
              HasSubstr("macro calls nested deeper than 100"));
  EXPECT_EQ(RenderStatus("{% macro f(n) %}{% if n < 50 %}{{ f(n + 1) }}{% else %}{{ n }}{% endif %}"
                         "{% endmacro %}{{ f(0) }}")
                .code(),
            absl::StatusCode::kOk);
  std::string deep(5000, '(');
  EXPECT_EQ(ParseStatus("{{ " + deep + " }}").code(), absl::StatusCode::kInvalidArgument);
  std::string chain = "{{ 1";
  for (int k = 0; k < 5000; ++k) chain += " + 1";
  EXPECT_THAT(ParseStatus(chain + " }}").message(), HasSubstr("nested deeper"));
}

TEST(JinjaTest, OriginsFollowMessageText) {
  absl::StatusOr<JinjaTemplate> t = JinjaTemplate::Parse(
      "{% for m in messages %}<{{ m.role }}>{{ m.content|trim }}{% if m.args is defined %}"
      "{{ m.args|tojson }}{% endif %}</>{% endfor %}{{ messages[1].content[1:3] }}");
  ASSERT_TRUE(t.ok()) << t.status();
  const json ctx = {{"messages",
                     {{{"role", "user"}, {"content", " hi "}},
                      {{"role", "assistant"}, {"content", "abcd"}, {"args", {{"k", 1}}}}}}};
  absl::StatusOr<JinjaOutput> out = t->RenderWithOrigins(ctx);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->text, "<user>hi</><assistant>abcd{\"k\": 1}</>bc");
  std::vector<std::string> pieces;
  std::vector<int64_t> messages;
  for (const OriginSpan& span : out->origins) {
    pieces.push_back(out->text.substr(span.begin, span.end - span.begin));
    messages.push_back(span.message);
  }
  EXPECT_EQ(pieces, (std::vector<std::string>{"hi", "abcd{\"k\": 1}", "bc"}));
  EXPECT_EQ(messages, (std::vector<int64_t>{0, 1, 1}));
}

TEST(JinjaTest, OriginsSurviveConcatenationAndSplit) {
  absl::StatusOr<JinjaTemplate> t = JinjaTemplate::Parse(
      "{% set c = messages[0].content %}{{ 'x' + c.split('</think>')[-1].lstrip('\\n') + 'y' }}"
      "{{ c|upper }}");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<JinjaOutput> out =
      t->RenderWithOrigins({{"messages", {{{"content", "<think>r</think>\n\nans"}}}}});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->origins.size(), 1u);
  EXPECT_EQ(out->text.substr(out->origins[0].begin, out->origins[0].end - out->origins[0].begin),
            "ans");
}

TEST(JinjaTest, GenerationBlocksAreRecorded) {
  absl::StatusOr<JinjaTemplate> t = JinjaTemplate::Parse(
      "{% for m in messages %}[{% if m.role == 'assistant' %}{% generation %}{{ m.content }}!"
      "{% endgeneration %}{% else %}{{ m.content }}{% endif %}]{% endfor %}");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->has_generation());
  absl::StatusOr<JinjaOutput> out = t->RenderWithOrigins(json::parse(
      R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})"));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->text, "[q][a!]");
  ASSERT_EQ(out->generation.size(), 1u);
  EXPECT_EQ(out->generation[0], (std::pair<size_t, size_t>{4, 6}));
  EXPECT_FALSE(JinjaTemplate::Parse("{{ x }}")->has_generation());
}

}  // namespace
}  // namespace fjord::data
