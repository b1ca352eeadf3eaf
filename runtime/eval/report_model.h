// A comparison or evaluation report (docs/comparison.md: "fjord.compare/1",
// "fjord.evaluation/1") read and checked into plain structs for the HTML
// page (report_html.cc). Internal to runtime/eval.
#ifndef FJORD_RUNTIME_EVAL_REPORT_MODEL_H_
#define FJORD_RUNTIME_EVAL_REPORT_MODEL_H_

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace fjord::eval::report_model {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Absent numbers are NaN; absent strings empty.

struct Interval {
  double low = kNaN, high = kNaN;
  bool present() const { return !std::isnan(low) && !std::isnan(high); }
};

struct Candidate {
  std::string name, adapter;
  std::map<std::string, double> metrics;
  std::map<std::string, Interval> intervals;
  double loss_tokens_per_s = kNaN, generated_tokens_per_s = kNaN, generated_tokens = kNaN;
  double prefill_tokens_per_s = kNaN, decode_tokens_per_s = kNaN;
  double peak_rss_bytes = kNaN, peak_gpu_memory_bytes = kNaN;
  bool has_speed = false;
};

struct Pair {
  std::string metric, a, b, verdict;
  double mean_difference = kNaN;
  Interval interval;
};

struct RankEntry {
  std::string name;
  int64_t rank = 0;
  double mean = kNaN;
};

struct JudgePair {
  std::string a, b, verdict;
  double examples = kNaN, wins_a = kNaN, wins_b = kNaN, ties = kNaN, agreement = kNaN;
  double win_rate_a = kNaN;
  Interval win_rate_a_interval;
};

struct Judge {
  std::string model, prompt;
  std::vector<JudgePair> pairs;
};

struct Sample {
  int64_t line = 0;  // 0: unknown
  std::string prompt, answer;
  bool has_answer = false;
  std::map<std::string, std::string> replies;
};

struct Dataset {
  std::string name, data, model, chat_template;
  int64_t examples = -1;  // -1: unknown
  double bootstrap_iterations = kNaN, confidence = kNaN, seed = kNaN;
  std::vector<Candidate> candidates;
  std::vector<std::string> metrics;  // in display order
  std::vector<Pair> pairs;
  bool has_pairs = false;
  std::vector<std::pair<std::string, std::vector<RankEntry>>> ranking;  // metric order
  bool has_judge = false;
  Judge judge;
  std::vector<Sample> samples;
};

struct Report {
  bool evaluation = false;
  std::string job, model;
  std::vector<Dataset> datasets;
};

// The report as structs. InvalidArgument naming the field ("report field
// 'candidates[1].name': expected a string") for any other shape or schema.
absl::StatusOr<Report> ReadReport(const nlohmann::json& v);

}  // namespace fjord::eval::report_model

#endif  // FJORD_RUNTIME_EVAL_REPORT_MODEL_H_
