#include "runtime/eval/report_html.h"

#include <nlohmann/json.hpp>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::eval {
namespace {

using ::nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

// A report as fjord-compare writes it (docs/comparison.md), with two
// candidates, intervals on one of them, a judge, and customer text that
// needs escaping.
json Report() {
  return json::parse(R"({
    "schema": "fjord.compare/1", "model": "/models/demo", "data": "/data/heldout.jsonl",
    "examples": 20, "chat_template": "auto",
    "bootstrap": {"iterations": 2000, "confidence": 0.95, "seed": 3},
    "candidates": [
      {"name": "base", "adapter": null,
       "metrics": {"loss": 5.6155, "perplexity": 245.36, "token_accuracy": 0.075,
                   "contains": 0.0},
       "speed": {"loss_tokens_per_s": 380.24, "generated_tokens_per_s": 311.2,
                 "generated_tokens": 60},
       "peak_rss_bytes": 407764992},
      {"name": "ft \"v2\" <b>&amp;</b>", "adapter": "/out/adapter",
       "metrics": {"loss": 1.25, "perplexity": 3.49, "token_accuracy": 0.61, "contains": 0.95},
       "intervals": {"loss": {"low": 1.1, "high": 1.4}, "contains": {"low": 0.85, "high": 1.0}},
       "speed": {"loss_tokens_per_s": 350.0, "generated_tokens_per_s": 290.0,
                 "generated_tokens": 240},
       "peak_rss_bytes": 1610612736}
    ],
    "pairs": [
      {"metric": "contains", "a": "base", "b": "ft \"v2\" <b>&amp;</b>", "mean_difference": -0.95,
       "low": -1.0, "high": -0.85, "verdict": "worse"},
      {"metric": "token_accuracy", "a": "base", "b": "ft \"v2\" <b>&amp;</b>",
       "mean_difference": -0.02, "low": -0.1, "high": 0.05, "verdict": "tie"}
    ],
    "ranking": {"contains": [{"name": "base", "rank": 2, "mean": 0.0},
                             {"name": "ft \"v2\" <b>&amp;</b>", "rank": 1, "mean": 0.95}],
                "token_accuracy": [{"name": "base", "rank": 1, "mean": 0.075},
                                   {"name": "ft \"v2\" <b>&amp;</b>", "rank": 1, "mean": 0.61}]},
    "judge": {"model": "judge-7b", "prompt": "Which reply is better? <A> or <B>",
              "pairs": [{"a": "base", "b": "ft \"v2\" <b>&amp;</b>", "examples": 20, "wins_a": 3,
                         "wins_b": 12, "ties": 5, "agreement": 0.85,
                         "win_rate_a": {"mean": 0.275, "low": 0.15, "high": 0.4},
                         "verdict": "worse"}]},
    "samples": [{"line": 1, "prompt": "Say <script>alert('x')</script> & \"quote\"",
                 "answer": "Tom & Jerry",
                 "replies": {"base": "<script>steal()</script>",
                             "ft \"v2\" <b>&amp;</b>": "It's a <tag> & more"}}]
  })");
}

std::string Render(const json& report) {
  absl::StatusOr<std::string> html = RenderReportHtml(report);
  EXPECT_TRUE(html.ok()) << html.status();
  return html.ok() ? *html : "";
}

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos;
       at = haystack.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

TEST(ReportHtmlTest, IsAnHtml5PageWithEveryCandidateAndMetric) {
  const std::string html = Render(Report());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>\n<html lang=\"en\">", 0), 0u);
  EXPECT_THAT(html, HasSubstr("<meta charset=\"utf-8\">"));
  EXPECT_THAT(html, HasSubstr("</html>\n"));
  EXPECT_THAT(html, HasSubstr(">base<"));
  EXPECT_THAT(html, HasSubstr("ft &quot;v2&quot; &lt;b&gt;&amp;amp;&lt;/b&gt;"));
  for (const char* metric : {"loss", "perplexity", "token_accuracy", "contains"}) {
    EXPECT_THAT(html, HasSubstr(std::string("<span class=\"key\">") + metric + "</span>"));
  }
  // The dataset, its size, the bootstrap.
  EXPECT_THAT(html, HasSubstr("heldout.jsonl"));
  EXPECT_THAT(html, HasSubstr("<b>20</b> examples"));
  EXPECT_THAT(html, HasSubstr("<b>2000</b> resamples, 95%, seed 3"));
}

TEST(ReportHtmlTest, EscapesEveryPieceOfReportText) {
  const std::string html = Render(Report());
  // No tag from the report survives as a tag; the page has no script at all.
  EXPECT_THAT(html, Not(HasSubstr("<script")));
  EXPECT_THAT(html, Not(HasSubstr("<b>&amp;</b>")));
  EXPECT_THAT(html, Not(HasSubstr("<tag>")));
  EXPECT_THAT(html, Not(HasSubstr("<A>")));
  EXPECT_THAT(html, HasSubstr("Say &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; "
                              "&quot;quote&quot;"));
  EXPECT_THAT(html, HasSubstr("&lt;script&gt;steal()&lt;/script&gt;"));
  EXPECT_THAT(html, HasSubstr("It&#39;s a &lt;tag&gt; &amp; more"));
  EXPECT_THAT(html, HasSubstr("Tom &amp; Jerry"));
  EXPECT_THAT(html, HasSubstr("Which reply is better? &lt;A&gt; or &lt;B&gt;"));
  // A name in an attribute-free SVG label and in its <title> is escaped too.
  EXPECT_THAT(html, HasSubstr("<title>ft &quot;v2&quot; &lt;b&gt;&amp;amp;&lt;/b&gt;</title>"));
}

TEST(ReportHtmlTest, NoExternalResourceOfAnyKind) {
  const std::string html = Render(Report());
  for (const char* bad :
       {"http://", "https://", "src=", "url(", "@import", "<script", "<link", "<img", "<iframe"}) {
    EXPECT_THAT(html, Not(HasSubstr(bad))) << bad;
  }
}

TEST(ReportHtmlTest, OneChartPerMetricAndWhiskersOnlyWhereIntervalsExist) {
  const std::string html = Render(Report());
  EXPECT_EQ(Count(html, "<svg"), 4u);  // loss, perplexity, token_accuracy, contains
  EXPECT_EQ(Count(html, "</svg>"), 4u);
  // The fine-tune has intervals for loss and contains; the base none.
  EXPECT_EQ(Count(html, "class=\"whisker\""), 2u);
  // A bar per candidate and metric (base's contains is 0: a bar of 1 px) ...
  EXPECT_EQ(Count(html, "<rect class=\"bar\""), 8u);
  // ... and each candidate's interval is in the scores table.
  EXPECT_THAT(html, HasSubstr("[1.1, 1.4]"));
  EXPECT_THAT(html, HasSubstr("[0.85, 1]"));

  json bare = Report();
  for (json& c : bare["candidates"]) c.erase("intervals");
  const std::string plain = Render(bare);
  EXPECT_EQ(Count(plain, "<svg"), 4u);
  EXPECT_EQ(Count(plain, "class=\"whisker\""), 0u);
}

TEST(ReportHtmlTest, ChartAxisHasRoundTicksAndLabelledValues) {
  const std::string html = Render(Report());
  // Perplexity 245.36 and 3.49: ticks every 50 up to 250, values labelled.
  EXPECT_THAT(html, HasSubstr(">250</text>"));
  EXPECT_THAT(html, HasSubstr(">50</text>"));
  EXPECT_THAT(html, HasSubstr("class=\"value\""));
  EXPECT_THAT(html, HasSubstr(">245.4</text>"));
  // contains: 0 .. 1 in steps of 0.2.
  EXPECT_THAT(html, HasSubstr(">0.2</text>"));
  EXPECT_THAT(html, HasSubstr(">1.0</text>"));
}

TEST(ReportHtmlTest, NegativeAndTinyValues) {
  const std::string html = Render(json::parse(R"({"schema": "fjord.compare/1",
      "candidates": [{"name": "only", "metrics": {"reward": -0.35, "tiny": 0.0000123},
                      "intervals": {"reward": {"low": -0.6, "high": 0.1}}}]})"));
  // reward: the axis runs from -0.6 to 0.1, the value is labelled.
  EXPECT_THAT(html, HasSubstr(">−0.6</text>"));
  EXPECT_THAT(html, HasSubstr(">0.1</text>"));
  EXPECT_THAT(html, HasSubstr(">−0.35</text>"));
  EXPECT_EQ(Count(html, "class=\"whisker\""), 1u);
  // tiny: ticks in exponent form.
  EXPECT_THAT(html, HasSubstr(">1.23e-05</text>"));
  EXPECT_THAT(html, HasSubstr(">2e-06</text>"));
  EXPECT_THAT(html, Not(HasSubstr("0.000002")));
}

TEST(ReportHtmlTest, RankingPairsSpeedJudge) {
  const std::string html = Render(Report());
  // token_accuracy: both rank 1, shared.
  EXPECT_THAT(html, HasSubstr("<span class=\"r\">=1</span>base"));
  EXPECT_THAT(html, HasSubstr("<span class=\"r\">2</span>base"));
  // Pairs: signed difference, interval, verdicts highlighted.
  EXPECT_THAT(html, HasSubstr("−0.95"));
  EXPECT_THAT(html, HasSubstr("[−1, −0.85]"));
  EXPECT_THAT(html, HasSubstr("<span class=\"badge v-worse\">worse</span>"));
  EXPECT_THAT(html, HasSubstr("<span class=\"badge v-tie\">tie</span>"));
  // Speed with one decimal; memory in MiB / GiB.
  EXPECT_THAT(html, HasSubstr(">380.2<"));
  EXPECT_THAT(html, HasSubstr(">388.9 MiB<"));
  EXPECT_THAT(html, HasSubstr(">1.50 GiB<"));
  // Judge.
  EXPECT_THAT(html, HasSubstr("LLM judge"));
  EXPECT_THAT(html, HasSubstr("judge-7b"));
  EXPECT_THAT(html, HasSubstr(">85.0%<"));
  EXPECT_THAT(html, HasSubstr("[0.15, 0.4]"));

  json no_judge = Report();
  no_judge.erase("judge");
  EXPECT_THAT(Render(no_judge), Not(HasSubstr("LLM judge")));
}

TEST(ReportHtmlTest, ToleratesAbsentOptionalFields) {
  const std::string html = Render(json::parse(R"({"schema": "fjord.compare/1",
      "candidates": [{"name": "only", "metrics": {"loss": 2.0, "bleu": null}}]})"));
  EXPECT_THAT(html, HasSubstr(">only<"));
  EXPECT_EQ(Count(html, "<svg"), 2u);  // loss and bleu (no value: no bar)
  EXPECT_EQ(Count(html, "<rect class=\"bar\""), 1u);
  EXPECT_THAT(html, Not(HasSubstr("Speed and memory")));
  EXPECT_THAT(html, Not(HasSubstr("Samples")));
}

TEST(ReportHtmlTest, EvaluationRendersEachDataset) {
  json second = Report();
  second["data"] = "/data/math.jsonl";
  second["examples"] = 7;
  second.erase("judge");
  json evaluation = {{"schema", "fjord.evaluation/1"},
                     {"job", "job-42"},
                     {"model", "/models/demo"},
                     {"datasets", {Report(), second}}};
  const std::string html = Render(evaluation);
  EXPECT_EQ(Count(html, "<section class=\"dataset\""), 2u);
  EXPECT_THAT(html, HasSubstr("Dataset: heldout.jsonl"));
  EXPECT_THAT(html, HasSubstr("Dataset: math.jsonl"));
  EXPECT_THAT(html, HasSubstr("<b>7</b> examples"));
  EXPECT_THAT(html, HasSubstr("job-42"));
  EXPECT_THAT(html, HasSubstr("href=\"#dataset-2\""));
  EXPECT_EQ(Count(html, "<svg"), 8u);
  EXPECT_EQ(Count(html, "LLM judge"), 1u);
}

TEST(ReportHtmlTest, Deterministic) {
  json evaluation = {{"schema", "fjord.evaluation/1"}, {"datasets", {Report(), Report()}}};
  EXPECT_EQ(Render(Report()), Render(Report()));
  EXPECT_EQ(Render(evaluation), Render(evaluation));
}

// Each bad shape is InvalidArgument naming the field.
TEST(ReportHtmlTest, BadShapesNameTheField) {
  struct Case {
    const char* what;
    json report;
    const char* field;
  };
  auto with = [](auto edit) {
    json r = Report();
    edit(r);
    return r;
  };
  const Case cases[] = {
      {"not an object", json::array(), "'report'"},
      {"no schema", with([](json& r) { r.erase("schema"); }), "'schema': missing"},
      {"other schema", with([](json& r) { r["schema"] = "fjord.compare/2"; }),
       "'schema': expected \"fjord.compare/1\" or \"fjord.evaluation/1\""},
      {"no candidates", with([](json& r) { r.erase("candidates"); }), "'candidates': missing"},
      {"empty candidates", with([](json& r) { r["candidates"] = json::array(); }),
       "'candidates': empty"},
      {"name not a string", with([](json& r) { r["candidates"][1]["name"] = 3; }),
       "'candidates[1].name': expected a string"},
      {"duplicate name", with([](json& r) { r["candidates"][1]["name"] = "base"; }),
       "'candidates[1].name'"},
      {"no metrics", with([](json& r) { r["candidates"][0].erase("metrics"); }),
       "'candidates[0].metrics': missing"},
      {"metric a string", with([](json& r) { r["candidates"][0]["metrics"]["loss"] = "low"; }),
       "'candidates[0].metrics.loss': expected a number"},
      {"interval not an object",
       with([](json& r) { r["candidates"][1]["intervals"]["loss"] = 1.0; }),
       "'candidates[1].intervals.loss'"},
      {"interval bound a string",
       with([](json& r) { r["candidates"][1]["intervals"]["loss"]["low"] = "x"; }),
       "'candidates[1].intervals.loss.low': expected a number"},
      {"speed not an object", with([](json& r) { r["candidates"][0]["speed"] = 1; }),
       "'candidates[0].speed': expected an object"},
      {"pairs not an array", with([](json& r) { r["pairs"] = json::object(); }),
       "'pairs': expected an array"},
      {"pair without metric", with([](json& r) { r["pairs"][1].erase("metric"); }),
       "'pairs[1].metric': missing"},
      {"rank not an integer", with([](json& r) { r["ranking"]["contains"][0]["rank"] = "1"; }),
       "'ranking.contains[0].rank'"},
      {"judge pair without b", with([](json& r) { r["judge"]["pairs"][0].erase("b"); }),
       "'judge.pairs[0].b': missing"},
      {"sample prompt a number", with([](json& r) { r["samples"][0]["prompt"] = 1; }),
       "'samples[0].prompt': expected a string"},
      {"reply not a string", with([](json& r) { r["samples"][0]["replies"]["base"] = 1; }),
       "'samples[0].replies.base': expected a string"},
      {"examples negative", with([](json& r) { r["examples"] = -1; }), "'examples'"},
      {"evaluation without datasets", json{{"schema", "fjord.evaluation/1"}},
       "'datasets': missing"},
      {"evaluation dataset without candidates",
       json{{"schema", "fjord.evaluation/1"},
            {"datasets", {Report(), with([](json& r) { r.erase("candidates"); })}}},
       "'datasets[1].candidates': missing"},
      {"evaluation dataset of another schema",
       json{{"schema", "fjord.evaluation/1"},
            {"datasets", {with([](json& r) { r["schema"] = "fjord.evaluation/1"; })}}},
       "'datasets[0].schema'"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::string> html = RenderReportHtml(c.report);
    ASSERT_FALSE(html.ok()) << c.what;
    EXPECT_EQ(html.status().code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_THAT(std::string(html.status().message()), HasSubstr(c.field)) << c.what;
  }
}

}  // namespace
}  // namespace fjord::eval
