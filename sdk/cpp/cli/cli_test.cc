// The fjord CLI's pure parts: option parsing, connection settings (flags >
// env > config file), job.yaml with located errors, progress lines, the SVG
// plot, exit codes, and Main's handling of bad command lines. Talking to a
// daemon is tested by tests/sdk/cli (a scripted peer) and tests/sdk/e2e (a
// real fjordd).
#include "sdk/cpp/cli/cli.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "daemon/protocol/curve_keys.h"
#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "sdk/cpp/cli/args.h"
#include "sdk/cpp/cli/compare.h"
#include "sdk/cpp/cli/exit_codes.h"
#include "sdk/cpp/cli/job_file.h"
#include "sdk/cpp/cli/quickstart.h"
#include "sdk/cpp/cli/render.h"
#include "sdk/cpp/cli/settings.h"
#include "sdk/cpp/cli/svg_plot.h"

namespace fjord::cli {
namespace {

using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

MATCHER_P2(StatusIs, code, matcher, "") {
  return arg.code() == code &&
         ::testing::ExplainMatchResult(matcher, std::string(arg.message()), result_listener);
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/fjord-cli-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string Write(const std::string& name, const std::string& text) const {
    const std::string p = path_ + "/" + name;
    std::ofstream(p) << text;
    return p;
  }

 private:
  std::string path_;
};

EnvGetter FakeEnv(std::map<std::string, std::string> vars) {
  return [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
}

// Main with captured output.
struct RunResult {
  int code;
  std::string out, err;
};
RunResult RunMain(const std::vector<std::string>& args, const EnvGetter& env) {
  FILE* out = std::tmpfile();
  FILE* err = std::tmpfile();
  const int code = Main(args, out, err, env);
  auto slurp = [](FILE* f) {
    std::fflush(f);
    std::rewind(f);
    std::string s;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    std::fclose(f);
    return s;
  };
  return {code, slurp(out), slurp(err)};
}

// ---- args ---------------------------------------------------------------------

const std::vector<OptionSpec> kSpecs = {
    {"file", 'f', true, false, "FILE", ""},
    {"json", 0, false, false, "", ""},
    {"metadata", 0, true, true, "K=V", ""},
};

TEST(ArgsTest, LongShortInlineRepeatedAndPositionals) {
  absl::StatusOr<ParsedArgs> a = ParseArgs(
      {"job-1", "-f", "a.yaml", "--json", "--metadata=team=x", "--metadata", "b=2", "--", "--x"},
      kSpecs);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->positionals, ElementsAre("job-1", "--x"));
  EXPECT_EQ(a->Get("file"), "a.yaml");
  EXPECT_TRUE(a->Has("json"));
  EXPECT_THAT(a->All("metadata"), ElementsAre("team=x", "b=2"));
  EXPECT_FALSE(a->Get("missing").has_value());
}

TEST(ArgsTest, ErrorsNameTheOption) {
  EXPECT_THAT(ParseArgs({"--nope"}, kSpecs).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "unknown option --nope"));
  EXPECT_THAT(
      ParseArgs({"-f"}, kSpecs).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("option -f needs a value (-f FILE)")));
  EXPECT_THAT(ParseArgs({"--json=1"}, kSpecs).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "option --json takes no value"));
  EXPECT_THAT(ParseArgs({"-f", "a", "--file", "b"}, kSpecs).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "option --file given twice"));
  EXPECT_THAT(
      ParseArgs({"-fx"}, kSpecs).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("short options take one letter")));
  EXPECT_THAT(
      ParseIntOption("limit", "ten").status(),
      StatusIs(absl::StatusCode::kInvalidArgument, "--limit must be an integer, got 'ten'"));
  EXPECT_THAT(ParseNumberOption("learning-rate", "1e-3x").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("must be a number")));
  EXPECT_EQ(*ParseNumberOption("learning-rate", "2e-4"), 2e-4);
}

// ---- exit codes ------------------------------------------------------------------

TEST(ExitCodesTest, OnePerCode) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), 0);
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError("")), 3);
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("")), 4);
  EXPECT_EQ(ExitCodeFor(absl::AlreadyExistsError("")), 5);
  EXPECT_EQ(ExitCodeFor(absl::PermissionDeniedError("")), 6);
  EXPECT_EQ(ExitCodeFor(absl::UnauthenticatedError("")), 7);
  EXPECT_EQ(ExitCodeFor(absl::ResourceExhaustedError("")), 8);
  EXPECT_EQ(ExitCodeFor(absl::FailedPreconditionError("")), 9);
  EXPECT_EQ(ExitCodeFor(absl::UnimplementedError("")), 10);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("")), 11);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError("")), 12);
  EXPECT_EQ(ExitCodeFor(absl::InternalError("")), 13);
  EXPECT_EQ(ExitCodeFor(absl::DataLossError("")), 13);
  EXPECT_THAT(ExitCodeHelp(), HasSubstr("11  UNAVAILABLE"));
}

// ---- settings ----------------------------------------------------------------------

TEST(SettingsTest, FlagsBeatEnvBeatConfigFile) {
  TempDir d;
  CurveKeyPair server = *GenerateCurveKeyPair(), me = *GenerateCurveKeyPair();
  ASSERT_TRUE(WriteCurveKeyFiles(d.path() + "/server", server).ok());
  ASSERT_TRUE(WriteCurveKeyFiles(d.path() + "/me", me).ok());
  const std::string cfg =
      d.Write("client.yaml",
              "# my daemon\nendpoint: tcp://file-host:7700\nserver_public_key: server.pub  # a "
              "file\nkeys: me.key\ntimeout_s: 3\n");
  absl::StatusOr<ConnectionSettings> s = ResolveConnection({.config = cfg}, FakeEnv({}));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->options.endpoint, "tcp://file-host:7700");
  EXPECT_EQ(s->options.server_public_key, server.public_key);
  EXPECT_EQ(s->options.client_keys.secret_key, me.secret_key);
  EXPECT_EQ(s->options.client_keys.public_key, me.public_key);
  EXPECT_EQ(s->options.timeout_ms, 3000);
  EXPECT_EQ(s->source["endpoint"], cfg + ":2");

  s = ResolveConnection({.config = cfg}, FakeEnv({{"FJORD_ENDPOINT", "ipc:///tmp/e.sock"},
                                                  {"FJORD_TIMEOUT", "0.5"}}));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->options.endpoint, "ipc:///tmp/e.sock");
  EXPECT_EQ(s->options.timeout_ms, 500);
  EXPECT_EQ(s->source["endpoint"], "FJORD_ENDPOINT");

  s = ResolveConnection({.endpoint = "tcp://flag:1", .config = cfg},
                        FakeEnv({{"FJORD_ENDPOINT", "tcp://env:2"}}));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->options.endpoint, "tcp://flag:1");
  EXPECT_EQ(s->source["endpoint"], "--endpoint");

  // FJORD_CONFIG and XDG_CONFIG_HOME name the file when --config does not.
  s = ResolveConnection({}, FakeEnv({{"FJORD_CONFIG", cfg}}));
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->options.endpoint, "tcp://file-host:7700");
  std::filesystem::create_directories(d.path() + "/xdg/fjord");
  d.Write("xdg/fjord/client.yaml", "endpoint: 'tcp://xdg:9'\n");
  s = ResolveConnection({}, FakeEnv({{"XDG_CONFIG_HOME", d.path() + "/xdg"}}));
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->options.endpoint, "tcp://xdg:9");
  EXPECT_EQ(DefaultConfigPath(FakeEnv({{"HOME", "/home/u"}})), "/home/u/.config/fjord/client.yaml");
}

TEST(SettingsTest, ErrorsSayWhatAndWhere) {
  TempDir d;
  const EnvGetter none = FakeEnv({{"HOME", d.path()}});
  EXPECT_THAT(
      ResolveConnection({}, none).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               StartsWith("no daemon endpoint: pass --endpoint, set FJORD_ENDPOINT, or write")));
  EXPECT_THAT(
      ResolveConnection({.endpoint = "http://x"}, none).status(),
      StatusIs(absl::StatusCode::kInvalidArgument,
               "endpoint must be tcp://HOST:PORT or ipc://PATH, got 'http://x' (--endpoint)"));
  const std::string typo = d.Write("c.yaml", "endpoint: tcp://h:1\nenpoint: tcp://typo:2\n");
  EXPECT_THAT(
      ResolveConnection({.config = typo}, none).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("c.yaml:2: unknown key 'enpoint'")));
  const std::string nested = d.Write("n.yaml", "endpoint: tcp://h:1\n  x: 1\n");
  EXPECT_THAT(
      ResolveConnection({.config = nested}, none).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("n.yaml:2: expected 'key: value'")));
  EXPECT_THAT(ResolveConnection({.config = d.path() + "/missing.yaml"}, none).status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("does not exist")));
  CurveKeyPair server = *GenerateCurveKeyPair();
  EXPECT_THAT(
      ResolveConnection({.endpoint = "tcp://h:1", .server_key = server.public_key}, none).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs this client's keys too")));
  EXPECT_THAT(
      ResolveConnection({.endpoint = "tcp://h:1", .server_key = "server.pub"}, none).status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("neither a Z85 key")));
  EXPECT_THAT(ResolveConnection({.endpoint = "tcp://h:1", .timeout = "soon"}, none).status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       "timeout must be a number of seconds, got 'soon' (--timeout)"));
  ASSERT_TRUE(WriteCurveKeyFiles(d.path() + "/open", *GenerateCurveKeyPair()).ok());
  ::chmod((d.path() + "/open.key").c_str(), 0644);
  EXPECT_THAT(ResolveConnection({.endpoint = "tcp://h:1",
                                 .server_key = server.public_key,
                                 .keys = d.path() + "/open.key"},
                                none)
                  .status(),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("chmod 600")));
}

// ---- job.yaml -------------------------------------------------------------------------

constexpr char kJob[] = R"(# a job
model: demo
training_file: train.jsonl
suffix: capitals
hyperparameters:
  epochs: 3
  learning_rate: 2.0e-3
  lr_scheduler: "linear"
lora:
  r: 8
  target_modules: [q_proj, v_proj]
metadata:
  team: "007"
)";

TEST(JobFileTest, TypedValuesAndSuffix) {
  absl::StatusOr<JobDocument> d = ParseJobYaml(kJob, "job.yaml", "/data");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(NormalizeSuffix(*d).ok());
  EXPECT_EQ(d->body["hyperparameters"]["epochs"], json(3));
  EXPECT_TRUE(d->body["hyperparameters"]["epochs"].is_number_integer());
  EXPECT_EQ(d->body["hyperparameters"]["learning_rate"], json(2e-3));
  EXPECT_EQ(d->body["metadata"],
            json({{"team", "007"}, {"suffix", "capitals"}}));  // quoted: stays a string
  EXPECT_FALSE(d->body.contains("suffix"));
  EXPECT_EQ(d->lines["hyperparameters.epochs"], 6);
  absl::StatusOr<protocol::JobSpec> spec = ValidateJob(*d);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model, "demo");
  EXPECT_EQ(spec->hyperparameters.epochs, 3);
  EXPECT_EQ(spec->hyperparameters.lr_scheduler, "linear");
  EXPECT_EQ(spec->hyperparameters.batch_size, 4);  // the protocol's default
  EXPECT_EQ(spec->lora.r, 8);
  EXPECT_THAT(spec->lora.target_modules, ElementsAre("q_proj", "v_proj"));
  EXPECT_EQ(spec->metadata.at("suffix"), "capitals");
}

// Plain scalars are typed by YAML 1.2's core schema (the matcher replaced
// std::regex, which did not compile under --config=asan).
TEST(JobFileTest, PlainScalarsAreTypedLikeYamlCoreSchema) {
  const std::vector<std::pair<std::string, json>> cases = {
      {"7", json(7)},           {"-7", json(-7)},         {"+7", json(7)},
      {"007", json(7)},         {"1.5", json(1.5)},       {".5", json(0.5)},
      {"-.5", json(-0.5)},      {"5.", json(5.0)},        {"2e-3", json(2e-3)},
      {"2.0E+3", json(2e3)},    {"1e400", json("1e400")}, {"1e", json("1e")},
      {".", json(".")},         {"+", json("+")},         {"+.e1", json("+.e1")},
      {"1.2.3", json("1.2.3")}, {"0x1f", json("0x1f")},   {"12abc", json("12abc")},
      {"~", json(nullptr)},     {"True", json(true)},     {"99999999999999999999", json(1e20)},
  };
  for (const auto& [text, want] : cases) {
    absl::StatusOr<JobDocument> d = ParseJobYaml("v: " + text + "\n", "job.yaml", ".");
    ASSERT_TRUE(d.ok()) << text << ": " << d.status();
    EXPECT_EQ(d->body["v"], want) << text;
    EXPECT_EQ(d->body["v"].type(), want.type()) << text;
  }
}

TEST(JobFileTest, ErrorsNameFileLineAndField) {
  absl::StatusOr<JobDocument> d = ParseJobYaml(
      "model: demo\ntraining_file: t.jsonl\nhyperparameters:\n  epochs: 0\n", "job.yaml", ".");
  ASSERT_TRUE(d.ok());
  absl::Status s = ValidateJob(*d).status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          "job.yaml:4: hyperparameters.epochs must be in [1, 1000], got 0"));
  EXPECT_EQ(protocol::ParamOf(s), "hyperparameters.epochs");

  d = ParseJobYaml("model: demo\ntraining_file: t.jsonl\nlora:\n  rank: 8\n", "job.yaml", ".");
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(ValidateJob(*d).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job.yaml:4:")));

  d = ParseJobYaml("training_file: t.jsonl\n", "job.yaml", ".");
  ASSERT_TRUE(d.ok());
  EXPECT_THAT(ValidateJob(*d).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, "job.yaml: model is required"));

  EXPECT_THAT(ParseJobYaml("model: [unclosed\n", "job.yaml", ".").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job.yaml:")));
  EXPECT_THAT(
      ParseJobYaml("- a\n- b\n", "job.yaml", ".").status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected a mapping of job fields")));
  EXPECT_THAT(ParseJobYaml("", "job.yaml", ".").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("the file is empty")));
  EXPECT_THAT(
      ParseJobYaml("model: a\nmodel: b\n", "job.yaml", ".").status(),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("job.yaml:2: model is given twice")));
  EXPECT_THAT(LoadJobFile("/nonexistent/job.yaml").status(),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("does not exist")));
}

TEST(JobFileTest, FlagsOverrideAndLoseTheLine) {
  absl::StatusOr<JobDocument> d = ParseJobYaml(kJob, "job.yaml", ".");
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(NormalizeSuffix(*d).ok());
  SetField(*d, "hyperparameters.epochs", 0);
  SetField(*d, "hyperparameters.seed", 7);
  absl::Status s = ValidateJob(*d).status();
  // The bad value came from a flag: no line, but its parent section's line.
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          StartsWith("job.yaml:5: hyperparameters.epochs")));
  SetField(*d, "hyperparameters.epochs", 2);
  absl::StatusOr<protocol::JobSpec> spec = ValidateJob(*d);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->hyperparameters.seed, 7);
}

// quantization: a key of the job file like gpus; a flag overrides it; a
// value other than none or nf4 is refused with the file's line before any
// daemon is asked.
TEST(JobFileTest, Quantization) {
  absl::StatusOr<JobDocument> d = ParseJobYaml(
      "model: llama-3.1-8b\ntraining_file: t.jsonl\nquantization: nf4\ngpus: 2\n", "job.yaml", ".");
  ASSERT_TRUE(d.ok()) << d.status();
  absl::StatusOr<protocol::JobSpec> spec = ValidateJob(*d);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->quantization, "nf4");
  EXPECT_EQ(spec->gpus, 2);
  EXPECT_EQ(protocol::JobSpecToJson(*spec)["quantization"], "nf4");
  SetField(*d, "quantization", "none");  // --quantization none
  spec = ValidateJob(*d);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->quantization, "none");
  EXPECT_FALSE(protocol::JobSpecToJson(*spec).contains("quantization"));

  d = ParseJobYaml("model: demo\ntraining_file: t.jsonl\nquantization: int4\n", "job.yaml", ".");
  ASSERT_TRUE(d.ok()) << d.status();
  absl::Status s = ValidateJob(*d).status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          "job.yaml:3: quantization must be none or nf4, got 'int4'"));
  EXPECT_EQ(protocol::ParamOf(s), "quantization");
  // The daemon's memory refusal (param quantization) points at the line too.
  d = ParseJobYaml("model: big\ntraining_file: t.jsonl\nquantization: none\n", "job.yaml", ".");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_THAT(
      Locate(protocol::InvalidArgument("model 'big' needs 16.1 GB", "quantization"), *d),
      StatusIs(absl::StatusCode::kInvalidArgument, "job.yaml:3: model 'big' needs 16.1 GB"));
}

// shard_base: a boolean key of the job file (--shard-base sets it); not a
// boolean, it is refused with the file's line before any daemon is asked.
// With quantization: nf4 the base is sharded in 4 bits.
TEST(JobFileTest, ShardBase) {
  absl::StatusOr<JobDocument> d = ParseJobYaml(
      "model: llama-3.3-70b\ntraining_file: t.jsonl\ngpus: 8\nshard_base: true\n", "job.yaml", ".");
  ASSERT_TRUE(d.ok()) << d.status();
  absl::StatusOr<protocol::JobSpec> spec = ValidateJob(*d);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->shard_base);
  EXPECT_EQ(spec->gpus, 8);
  EXPECT_EQ(protocol::JobSpecToJson(*spec)["shard_base"], true);
  d = ParseJobYaml("model: demo\ntraining_file: t.jsonl\nshard_base: false\n", "job.yaml", ".");
  ASSERT_TRUE(d.ok()) << d.status();
  spec = ValidateJob(*d);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_FALSE(spec->shard_base);
  EXPECT_FALSE(protocol::JobSpecToJson(*spec).contains("shard_base"));
  SetField(*d, "shard_base", true);  // --shard-base
  spec = ValidateJob(*d);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE(spec->shard_base);

  d = ParseJobYaml("model: demo\ntraining_file: t.jsonl\nshard_base: yes\n", "job.yaml", ".");
  ASSERT_TRUE(d.ok()) << d.status();
  absl::Status s = ValidateJob(*d).status();
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kInvalidArgument,
                          "job.yaml:3: shard_base must be true or false, got string"));
  EXPECT_EQ(protocol::ParamOf(s), "shard_base");
  // Both together: a base sharded across the GPUs in 4 bits.
  d = ParseJobYaml("model: demo\ntraining_file: t.jsonl\nquantization: nf4\nshard_base: true\n",
                   "job.yaml", ".");
  ASSERT_TRUE(d.ok()) << d.status();
  absl::StatusOr<protocol::JobSpec> both = ValidateJob(*d);
  ASSERT_TRUE(both.ok()) << both.status();
  EXPECT_TRUE(both->shard_base);
  EXPECT_EQ(both->quantization, "nf4");
}

TEST(JobFileTest, TheQuickstartJobIsValid) {
  absl::StatusOr<JobDocument> d = ParseJobYaml(QuickstartJobYaml(), "quickstart", "/demo/data");
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(NormalizeSuffix(*d).ok());
  absl::StatusOr<protocol::JobSpec> spec = ValidateJob(*d);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->model, "demo");
  EXPECT_EQ(spec->training_file, "train.jsonl");
  EXPECT_EQ(spec->validation_file, "valid.jsonl");
  EXPECT_EQ(spec->heldout_file, "heldout.jsonl");  // uploaded from the demo's data/
  EXPECT_EQ(spec->hyperparameters.epochs, 5);
  EXPECT_EQ(spec->hyperparameters.eval_every_steps, 25);
}

// ---- rendering ------------------------------------------------------------------------

protocol::JobEvent Ev(int64_t seq, const std::string& type, json data,
                      const std::string& message = "") {
  protocol::JobEvent e;
  e.seq = seq;
  e.time_ms = 1700000000000 + seq;
  e.type = type;
  e.message = message;
  e.data = std::move(data);
  return e;
}

std::string Rendered(bool bar, const std::vector<protocol::JobEvent>& events) {
  FILE* f = std::tmpfile();
  Progress p(f, bar);
  for (const auto& e : events) p.OnEvent(e);
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fclose(f);
  return s;
}

TEST(RenderTest, ProgressLinesMatchThePythonSdk) {
  const std::vector<protocol::JobEvent> events = {
      Ev(1, "status", {{"status", "queued"}, {"previous", "validating"}}, "validation passed"),
      Ev(2, "eval",
         {{"step", 0}, {"total_steps", 40}, {"eval_loss", 2.5}, {"eval_token_accuracy", 0.25}}),
      Ev(3, "step",
         {{"step", 1},
          {"total_steps", 40},
          {"loss", 2.5},
          {"tokens_per_s", 1000.4},
          {"eta_s", 75.0}}),
      Ev(4, "step",
         {{"step", 2},
          {"total_steps", 40},
          {"loss", 2.4},
          {"tokens_per_s", 1000.0},
          {"eta_s", 74.0}}),
      Ev(5, "step",
         {{"step", 40},
          {"total_steps", 40},
          {"loss", 1.0},
          {"tokens_per_s", 1200.0},
          {"eta_s", 0.0}}),
  };
  const std::string lines = Rendered(false, events);
  EXPECT_EQ(lines,
            "status: validating -> queued (validation passed)\n"
            "eval  step 0/40  loss 2.5000  token accuracy 25.0%\n"
            "1/40  loss 2.5000  eval 2.5000  1000 tok/s  ETA 1m15s\n"
            "2/40  loss 2.4000  eval 2.5000  1000 tok/s  ETA 1m14s\n"
            "40/40  loss 1.0000  eval 2.5000  1200 tok/s  ETA 0s\n");
  const std::string bar = Rendered(true, events);
  EXPECT_THAT(bar, HasSubstr("\r[#.......................] 2/40  loss 2.4000"));
  EXPECT_THAT(bar, HasSubstr("\r[########################] 40/40"));
  EXPECT_EQ(FormatDuration(3725), "1h02m");
  EXPECT_EQ(FormatDuration(-1), "?");
  EXPECT_EQ(FormatTimeMs(1700000000000), "2023-11-14 22:13:20Z");
}

// The step-0 eval of a job with held-out prompts carries the base model's
// answers; the same lines as the Python SDK's
// (tests/sdk/python/test_sdk_client.py::test_progress_shows_the_heldout_answers_of_the_first_eval).
TEST(RenderTest, HeldoutAnswersInEvalLines) {
  const std::vector<protocol::JobEvent> events = {
      Ev(1, "eval",
         {{"step", 0},
          {"total_steps", 40},
          {"eval_loss", 2.5},
          {"eval_token_accuracy", 0.25},
          {"heldout_accuracy", 0.05}}),
      Ev(2, "eval", {{"step", 0}, {"total_steps", 40}, {"heldout_accuracy", 0.0}}),
      Ev(3, "eval",
         {{"step", 20}, {"total_steps", 40}, {"eval_loss", 1.5}, {"eval_token_accuracy", 0.5}}),
      Ev(4, "eval",
         {{"step", 40}, {"total_steps", 40}, {"eval_loss", 1.0}, {"heldout_accuracy", -1}}),
  };
  EXPECT_EQ(Rendered(false, events),
            "eval  step 0/40  loss 2.5000  token accuracy 25.0%  held-out answers 5.0%\n"
            "eval  step 0/40  held-out answers 0.0%\n"
            "eval  step 20/40  loss 1.5000  token accuracy 50.0%\n"
            "eval  step 40/40  loss 1.0000\n");
  EXPECT_THAT(EventLine(events[0]),
              HasSubstr("step 0/40  eval loss 2.5000  held-out answers 5.0%"));
  EXPECT_THAT(EventLine(events[1]), HasSubstr("step 0/40  held-out answers 0.0%"));
  EXPECT_THAT(EventLine(events[2]), ::testing::EndsWith("step 20/40  eval loss 1.5000"));
  protocol::Job job;
  job.id = "job-1";
  job.spec.heldout_file = "file-8";
  EXPECT_THAT(DescribeJob(job), HasSubstr("  held-out file    file-8\n"));
}

TEST(RenderTest, TheModelLineSaysAQuantizedBase) {
  protocol::Job job;
  job.id = "job-1";
  job.spec.model = "llama-3.1-8b";
  EXPECT_THAT(DescribeJob(job), HasSubstr("  model            llama-3.1-8b\n"));
  job.spec.quantization = "nf4";
  EXPECT_THAT(DescribeJob(job), HasSubstr("  model            llama-3.1-8b (nf4 base)\n"));
}

TEST(RenderTest, ASlurmJobShowsWhatSlurmSaysAndWhereItRuns) {
  protocol::Job job;
  job.id = "job-1";
  job.status = protocol::JobStatus::kQueued;
  job.slurm_job_id = "4711";
  job.queue_detail = "Slurm job 4711 pending: Resources";
  EXPECT_THAT(DescribeJob(job),
              ::testing::StartsWith("job job-1  queued (Slurm job 4711 pending: Resources)\n"));
  EXPECT_THAT(DescribeJob(job), HasSubstr("  slurm job        4711\n"));
  job.status = protocol::JobStatus::kRunning;
  job.queue_detail.clear();
  job.node = "gpu[01-02]";
  EXPECT_THAT(DescribeJob(job), HasSubstr("  node             gpu[01-02]\n"));
}

TEST(RenderTest, TheModelLineSaysAShardedBase) {
  protocol::Job job;
  job.id = "job-1";
  job.spec.model = "llama-3.3-70b";
  job.spec.gpus = 8;
  job.spec.shard_base = true;
  EXPECT_THAT(DescribeJob(job),
              HasSubstr("  model            llama-3.3-70b (base sharded over 8 GPUs)\n"));
  job.spec.gpus = 1;
  EXPECT_THAT(DescribeJob(job),
              HasSubstr("  model            llama-3.3-70b (shard_base: no effect on one GPU)\n"));
}

// The quickstart's summary: the step-0 eval (before training) and the last
// one (after), loss and token accuracy; the held-out answer accuracy before
// (the step-0 eval's) and after (done's), only when measured (-1: not).
TEST(QuickstartTest, SummaryFromTheFirstAndLastEvalEvents) {
  QuickstartResult r;
  EXPECT_THAT(EvalSummaryLines(r), ElementsAre());
  for (const protocol::JobEvent& e : {
           Ev(1, "eval",
              {{"step", 0},
               {"total_steps", 70},
               {"eval_loss", 3.5},
               {"eval_token_accuracy", 0.25}}),
           Ev(2, "step", {{"step", 1}, {"total_steps", 70}, {"loss", 9.0}}),
           Ev(3, "eval",
              {{"step", 25},
               {"total_steps", 70},
               {"eval_loss", 1.0},
               {"eval_token_accuracy", 0.75}}),
           Ev(4, "eval",
              {{"step", 70},
               {"total_steps", 70},
               {"eval_loss", 0.35},
               {"eval_token_accuracy", 0.9}}),
           Ev(5, "done",
              {{"step", 70}, {"total_steps", 70}, {"eval_loss", 0.35}, {"heldout_accuracy", -1}}),
       }) {
    RecordEvalEvent(e, &r);
  }
  EXPECT_THAT(EvalSummaryLines(r),
              ElementsAre("  eval loss: 3.5000 -> 0.3500 (-90.0%)",
                          "  eval token accuracy: 25.0% -> 90.0% (answer tokens predicted right)"));
  // A job with held-out prompts (the quickstart's).
  QuickstartResult h;
  for (const protocol::JobEvent& e : {
           Ev(1, "eval",
              {{"step", 0},
               {"total_steps", 70},
               {"eval_loss", 3.5},
               {"eval_token_accuracy", 0.25},
               {"heldout_accuracy", 0.05}}),
           Ev(2, "eval",
              {{"step", 25},
               {"total_steps", 70},
               {"eval_loss", 1.0},
               {"eval_token_accuracy", 0.75}}),
           Ev(3, "eval",
              {{"step", 70},
               {"total_steps", 70},
               {"eval_loss", 0.35},
               {"eval_token_accuracy", 0.9}}),
           Ev(4, "done",
              {{"step", 70}, {"total_steps", 70}, {"eval_loss", 0.35}, {"heldout_accuracy", 0.95}}),
       }) {
    RecordEvalEvent(e, &h);
  }
  EXPECT_EQ(h.first_heldout_accuracy, 0.05);
  EXPECT_EQ(h.last_heldout_accuracy, 0.95);
  EXPECT_THAT(
      EvalSummaryLines(h, "20 questions about countries the model never saw"),
      ElementsAre(
          "  eval loss: 3.5000 -> 0.3500 (-90.0%)",
          "  eval token accuracy: 25.0% -> 90.0% (answer tokens predicted right)",
          "  held-out answers: 5% -> 95% (20 questions about countries the model never saw)"));
  EXPECT_EQ(EvalSummaryLines(h).back(), "  held-out answers: 5% -> 95%");
  // Held-out prompts without validation data; an after without a before.
  QuickstartResult only;
  RecordEvalEvent(Ev(1, "eval", {{"step", 0}, {"total_steps", 70}, {"heldout_accuracy", 0.0}}),
                  &only);
  RecordEvalEvent(
      Ev(2, "done",
         {{"step", 70}, {"total_steps", 70}, {"eval_loss", -1}, {"heldout_accuracy", 0.5}}),
      &only);
  EXPECT_THAT(EvalSummaryLines(only), ElementsAre("  held-out answers: 0% -> 50%"));
  QuickstartResult after;
  RecordEvalEvent(Ev(6, "done", {{"step", 70}, {"total_steps", 70}, {"heldout_accuracy", 0.95}}),
                  &after);
  EXPECT_THAT(EvalSummaryLines(after), ElementsAre("  held-out answers: ? -> 95%"));
  // An older trainer's eval event: "loss", no accuracy.
  QuickstartResult old;
  RecordEvalEvent(Ev(1, "eval", {{"step", 0}, {"loss", 2.0}}), &old);
  RecordEvalEvent(Ev(2, "eval", {{"step", 5}, {"loss", 1.0}}), &old);
  EXPECT_THAT(EvalSummaryLines(old), ElementsAre("  eval loss: 2.0000 -> 1.0000 (-50.0%)"));
}

TEST(RenderTest, TableAndEventLines) {
  EXPECT_EQ(Table({"A", "LONGER"}, {{"xxxx", "y"}}), "A     LONGER\nxxxx  y\n");
  EXPECT_THAT(EventLine(Ev(7, "step", {{"step", 10}, {"total_steps", 100}, {"loss", 1.23}})),
              HasSubstr("step 10/100  loss 1.2300"));
  EXPECT_THAT(EventLine(Ev(8, "status", {{"status", "running"}, {"previous", "queued"}})),
              HasSubstr("queued -> running"));
}

TEST(RenderTest, JobErrorsHintOnlyWhenTheJobFailed) {
  protocol::Job job;
  job.id = "job-1";
  job.status = protocol::JobStatus::kFailed;
  job.error =
      protocol::JobError{"INVALID_ARGUMENT", "train.jsonl:3: not JSON", "training_file", true};
  EXPECT_THAT(DescribeJob(job), HasSubstr("INVALID_ARGUMENT: train.jsonl:3: not JSON "
                                          "(training_file) [fix the input and resubmit]"));
  job.error->user_error = false;
  EXPECT_THAT(DescribeJob(job), HasSubstr("[system error]"));
  // Paused over the storage quota: the message says what to do; no resubmit hint.
  job.status = protocol::JobStatus::kPaused;
  job.error = protocol::JobError{"RESOURCE_EXHAUSTED",
                                 "paused: tenant 'acme' uses 9 of its 8 bytes", "tenant", true};
  const std::string text = DescribeJob(job);
  EXPECT_THAT(
      text, HasSubstr("RESOURCE_EXHAUSTED: paused: tenant 'acme' uses 9 of its 8 bytes (tenant)"));
  EXPECT_THAT(text, Not(HasSubstr("resubmit")));
  EXPECT_THAT(text, Not(HasSubstr("system error")));
}

TEST(RenderTest, BytesAndStorageUsage) {
  EXPECT_EQ(FormatBytes(0), "0 B");
  EXPECT_EQ(FormatBytes(1023), "1023 B");
  EXPECT_EQ(FormatBytes(1024), "1 KiB");
  EXPECT_EQ(FormatBytes(1536), "1.5 KiB");
  EXPECT_EQ(FormatBytes(1258291), "1.2 MiB");
  EXPECT_EQ(FormatBytes((uint64_t{1} << 20) - 1), "1 MiB");  // not "1024 KiB"
  EXPECT_EQ(FormatBytes(uint64_t{10} << 30), "10 GiB");
  EXPECT_EQ(FormatBytes(~uint64_t{0}), "16 EiB");
  EXPECT_EQ(StorageUsageLine(1258291, uint64_t{10} << 30), "usage 1.2 MiB of 10 GiB quota");
  EXPECT_EQ(StorageUsageLine(1258291, 0), "usage 1.2 MiB (no quota)");
  EXPECT_EQ(StorageUsageLine(2048, 2048),
            "usage 2 KiB of 2 KiB quota (full: new uploads and jobs are refused until files or "
            "ended jobs are deleted)");
  // With the files and directories, when the daemon counts them.
  EXPECT_EQ(StorageUsageLine(1258291, uint64_t{10} << 30, 42, 100000),
            "usage 1.2 MiB of 10 GiB quota, 42 of 100000 files");
  EXPECT_EQ(StorageUsageLine(1258291, 0, 42, 0), "usage 1.2 MiB (no quota), 42 files (no limit)");
  EXPECT_EQ(StorageUsageLine(1258291, 0, 1, 0), "usage 1.2 MiB (no quota), 1 file (no limit)");
  EXPECT_EQ(StorageUsageLine(1258291, 0, std::nullopt, 100), "usage 1.2 MiB (no quota)");
  EXPECT_EQ(
      StorageUsageLine(2048, 0, 100, 100),
      "usage 2 KiB (no quota), 100 of 100 files (file limit reached: new uploads and jobs are "
      "refused until files or ended jobs are deleted)");
  EXPECT_EQ(StorageUsageLine(2048, 2048, 101, 100),
            "usage 2 KiB of 2 KiB quota, 101 of 100 files (full: new uploads and jobs are refused "
            "until files or ended jobs are deleted)");
}

// ---- SVG ----------------------------------------------------------------------------

TEST(SvgTest, SeriesFromEventsAndDocument) {
  std::vector<protocol::JobEvent> events;
  for (int s = 1; s <= 20; ++s)
    events.push_back(Ev(s, "step", {{"step", s}, {"total_steps", 20}, {"loss", 3.0 - 0.1 * s}}));
  events.push_back(Ev(21, "eval", {{"step", 0}, {"eval_loss", 3.1}}));
  events.push_back(Ev(22, "eval", {{"step", 20}, {"eval_loss", 1.2}}));
  events.push_back(
      Ev(23, "step", {{"step", 20}, {"loss", 0.9}}));  // a repeated step (resume): the later wins
  std::vector<Series> s = LossSeriesFromEvents(events);
  ASSERT_EQ(s.size(), 2u);
  ASSERT_EQ(s[0].points.size(), 20u);
  EXPECT_EQ(s[0].points.back(), std::make_pair(20.0, 0.9));
  ASSERT_EQ(s[1].points.size(), 2u);
  EXPECT_EQ(s[1].points.front(), std::make_pair(0.0, 3.1));

  const std::string svg = LossCurveSvg("job-1 <loss> & \"more\"", s);
  EXPECT_THAT(
      svg,
      StartsWith(
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_THAT(svg, HasSubstr("<title>job-1 &lt;loss&gt; &amp; &quot;more&quot;</title>"));
  // Each <polyline class="series" data-name="NAME" ... points="X,Y X,Y ..."/>
  // (found by hand: std::regex does not compile under --config=asan).
  std::vector<std::pair<std::string, int>> found;
  const std::string open = "<polyline class=\"series\" data-name=\"";
  for (size_t at = svg.find(open); at != std::string::npos; at = svg.find(open, at + 1)) {
    const size_t name_begin = at + open.size();
    const size_t name_end = svg.find('"', name_begin);
    const size_t tag_end = svg.find("/>", name_begin);
    const size_t points = svg.find(" points=\"", name_begin);
    ASSERT_TRUE(name_end != std::string::npos && tag_end != std::string::npos && points < tag_end);
    const size_t pts_begin = points + 9;
    const size_t pts_end = svg.find('"', pts_begin);
    ASSERT_EQ(pts_end + 1, tag_end);
    const std::string pts = svg.substr(pts_begin, pts_end - pts_begin);
    found.emplace_back(svg.substr(name_begin, name_end - name_begin),
                       static_cast<int>(std::count(pts.begin(), pts.end(), ',')));
  }
  EXPECT_THAT(found,
              ElementsAre(std::make_pair("training loss", 20), std::make_pair("eval loss", 2)));
  EXPECT_EQ(std::count(svg.begin(), svg.end(), '<') - std::count(svg.begin(), svg.end(), '>'), 0);
  EXPECT_THAT(svg, HasSubstr(">step</text>"));
  EXPECT_THAT(svg, HasSubstr("</svg>\n"));
  // Deterministic.
  EXPECT_EQ(svg, LossCurveSvg("job-1 <loss> & \"more\"", s));
}

TEST(SvgTest, NiceTicks) {
  EXPECT_THAT(NiceTicks(0, 100, 5), ElementsAre(0, 20, 40, 60, 80, 100));
  EXPECT_THAT(NiceTicks(0.95, 3.05, 5), ElementsAre(1.0, 1.5, 2.0, 2.5, 3.0));
  EXPECT_THAT(NiceTicks(0, 7, 6), ElementsAre(0, 2, 4, 6));
}

// ---- Main ---------------------------------------------------------------------------

TEST(CompareTest, CandidatesBaseJobAndAdapterDirectory) {
  absl::StatusOr<CandidateArg> a = ParseCandidateArg("base", 0);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->candidate.name, "base");
  EXPECT_TRUE(a->candidate.job.empty() && a->adapter_dir.empty());
  a = ParseCandidateArg("ft=job-3f9a1c0d2b4e6f81", 1);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->candidate.job, "job-3f9a1c0d2b4e6f81");
  TempDir dir;
  dir.Write("adapter_config.json", "{}");
  const std::string with_config = dir.path();
  absl::StatusOr<CandidateArg> half = ParseCandidateArg("mine=" + with_config, 2);
  EXPECT_THAT(half.status(),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr(with_config + " has no adapter_model.safetensors")));
  dir.Write("adapter_model.safetensors", "x");
  a = ParseCandidateArg("mine=" + with_config, 2);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->adapter_dir, with_config);
  EXPECT_TRUE(a->candidate.adapter_config.empty());  // uploaded later
  absl::StatusOr<CandidateArg> bad = ParseCandidateArg("bad name=job-1", 3);
  EXPECT_THAT(bad.status(), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("'bad name'")));
  EXPECT_EQ(protocol::ParamOf(bad.status()), "candidates[3].name");
  EXPECT_EQ(protocol::ParamOf(ParseCandidateArg("x=", 4).status()), "candidates[4]");
  EXPECT_THAT(
      ParseCandidateArg("x=/nonexistent/dir", 0).status(),
      StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/dir is not a directory")));
}

TEST(CompareTest, ReportTables) {
  const json report = json::parse(R"({
    "schema": "fjord.evaluation/1", "job": "job-e", "model": "demo",
    "datasets": [{
      "schema": "fjord.compare/1", "data": "file-1", "examples": 20,
      "candidates": [
        {"name": "base", "adapter": null, "metrics": {"contains": 0.1, "loss": 5.6155, "perplexity": 245.36},
         "intervals": {"contains": {"low": 0.0, "high": 0.25}, "loss": {"low": 5.5, "high": 5.7},
                       "perplexity": {"low": 230.0, "high": 260.0}}},
        {"name": "demo", "adapter": "/a", "metrics": {"contains": 0.95, "loss": 2.0, "perplexity": 7.39},
         "intervals": {"contains": {"low": 0.85, "high": 1.0}}}],
      "pairs": [
        {"metric": "contains", "a": "base", "b": "demo", "mean_difference": -0.85, "low": -1.0,
         "high": -0.7, "verdict": "worse"},
        {"metric": "loss", "a": "base", "b": "demo", "mean_difference": 3.6, "low": -0.1, "high": 7.0,
         "verdict": "tie"}],
      "ranking": {"loss": [{"name": "base", "rank": 1, "mean": 5.6}, {"name": "demo", "rank": 1, "mean": 2.0}],
                  "contains": [{"name": "base", "rank": 2, "mean": 0.1}, {"name": "demo", "rank": 1, "mean": 0.95}]},
      "judge": {"model": "judge", "prompt": "?", "pairs": [
        {"a": "base", "b": "demo", "examples": 20, "wins_a": 2, "wins_b": 17, "ties": 1, "unparseable": 1,
         "agreement": 0.9, "win_rate_a": {"mean": 0.125, "low": 0.03, "high": 0.25}, "verdict": "worse"}]}
    }]})");
  absl::StatusOr<std::string> text = RenderEvaluationReport(report);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_THAT(*text,
              StartsWith("evaluation job-e of model demo\n\ndataset file-1 (20 examples)\n"));
  // Columns in the protocol's order; a metric without an interval is the mean alone.
  EXPECT_THAT(*text, HasSubstr("CANDIDATE  LOSS                  PERPLEXITY"));
  EXPECT_THAT(
      *text,
      HasSubstr("base       5.615 [5.500, 5.700]  245.4 [230.0, 260.0]  0.100 [0.000, 0.250]"));
  EXPECT_THAT(
      *text,
      HasSubstr("demo       2.000                 7.390                 0.950 [0.850, 1.000]"));
  EXPECT_THAT(*text,
              HasSubstr("  contains: base worse than demo (A - B -0.850 [-1.000, -0.700])\n"));
  EXPECT_THAT(*text, Not(HasSubstr("loss: base")));  // a tie has no verdict line
  EXPECT_THAT(*text, HasSubstr("  loss: 1 base, 1 demo\n  contains: 1 demo, 2 base\n"));
  EXPECT_THAT(*text,
              HasSubstr("judge judge:\n  base vs demo: base worse, win rate of base 0.125 [0.030, "
                        "0.250] (2 wins, 17 losses, 1 ties, 1 unparseable; both orders agree "
                        "on 90%)\n"));
  EXPECT_THAT(RenderEvaluationReport(json{{"schema", "fjord.compare/1"}}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("fjord.evaluation/1")));
}

TEST(MainTest, UsageErrorsExitOne) {
  TempDir d;
  const EnvGetter env = FakeEnv({{"HOME", d.path()}});
  RunResult r = RunMain({}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("usage: fjord"));
  r = RunMain({"--help"}, env);
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("jobs create"));
  EXPECT_THAT(r.out, HasSubstr("Exit codes:"));
  r = RunMain({"frobnicate"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("unknown command 'frobnicate'"));
  r = RunMain({"jobs", "explode"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("'jobs' needs a subcommand ('explode' is not one)"));
  r = RunMain({"jobs", "get"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("missing the job id"));
  r = RunMain({"jobs", "get", "a", "b"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("unexpected argument 'b'"));
  r = RunMain({"files", "delete"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("fjord files delete: missing the file id"));
  r = RunMain({"files", "delete", "file-1", "file-2"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("unexpected argument 'file-2'"));
  r = RunMain({"files", "--help"}, env);
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("fjord files delete FILE_ID"));
  r = RunMain({"jobs", "delete"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("fjord jobs delete: missing the job id"));
  r = RunMain({"jobs", "delete", "job-1", "job-2"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("unexpected argument 'job-2'"));
  r = RunMain({"jobs", "delete", "--force", "job-1"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("fjord jobs delete: unknown option --force"));
  r = RunMain({"jobs", "--help"}, env);
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("fjord jobs delete JOB_ID"));
  r = RunMain({"jobs", "list", "--bogus"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("fjord jobs list: unknown option --bogus"));
  r = RunMain({"jobs", "list", "--status", "done"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("unknown job status 'done'"));
  r = RunMain({"jobs", "create", "--epochs", "many"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  r = RunMain({"jobs", "create", "--help"}, env);
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("--quantization VALUE"));
  EXPECT_THAT(r.out, HasSubstr("none | nf4"));
  // Checked before any daemon is contacted (none is running).
  r = RunMain({"--endpoint", "ipc:///nonexistent/fjordd.sock", "jobs", "create", "--model", "demo",
               "--training-file", "files/t.jsonl", "--quantization", "int4"},
              env);
  EXPECT_EQ(r.code, kExitInvalidArgument);
  EXPECT_THAT(r.err, HasSubstr("quantization must be none or nf4, got 'int4'"));
  // --shard-base is a flag: it takes no value.
  r = RunMain({"jobs", "create", "--help"}, env);
  EXPECT_THAT(r.out, HasSubstr("      --shard-base            each of the job's GPUs holds "
                               "1/gpus of the frozen base"));
  r = RunMain({"jobs", "create", "--shard-base=true"}, env);
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_THAT(r.err, HasSubstr("option --shard-base takes no value"));
  r = RunMain({"jobs", "get", "--help"}, env);
  EXPECT_EQ(r.code, 0);
  EXPECT_THAT(r.out, HasSubstr("usage: fjord jobs get JOB_ID"));
  r = RunMain({"--json", "version"}, env);
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(json::parse(r.out)["protocol"], 1);
}

TEST(MainTest, ConfigErrorsBeforeConnecting) {
  TempDir d;
  const EnvGetter env = FakeEnv({{"HOME", d.path()}});
  RunResult r = RunMain({"ping"}, env);
  EXPECT_EQ(r.code, kExitInvalidArgument);
  EXPECT_THAT(r.err, HasSubstr("no daemon endpoint"));
  r = RunMain({"--json", "--endpoint", "http://x", "ping"}, env);
  EXPECT_EQ(r.code, kExitInvalidArgument);
  EXPECT_EQ(json::parse(r.out)["error"]["code"], "INVALID_ARGUMENT");
  // A job.yaml error is found before any daemon is contacted (none is running).
  const std::string job =
      d.Write("job.yaml", "model: demo\ntraining_file: t.jsonl\nhyperparameters:\n  epochs: 0\n");
  r = RunMain({"--endpoint", "ipc:///nonexistent/fjordd.sock", "jobs", "create", "-f", job}, env);
  EXPECT_EQ(r.code, kExitInvalidArgument);
  EXPECT_THAT(r.err, HasSubstr("job.yaml:4: hyperparameters.epochs must be in [1, 1000], got 0"));
  r = RunMain({"--endpoint", "ipc:///x.sock", "jobs", "create", "-f", d.path() + "/none.yaml"},
              env);
  EXPECT_EQ(r.code, kExitNotFound);
}

TEST(MainTest, KeysGenerateWritesPrivateFiles) {
  TempDir d;
  const EnvGetter env = FakeEnv({{"HOME", d.path()}});
  const std::string prefix = d.path() + "/alice";
  RunResult r = RunMain({"keys", "generate", prefix, "--tenant", "acme"}, env);
  ASSERT_EQ(r.code, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::stat((prefix + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  absl::StatusOr<CurveKeyPair> keys = LoadCurveSecretKeyFile(prefix + ".key");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*LoadCurvePublicKeyFile(prefix + ".pub"), keys->public_key);
  EXPECT_THAT(r.out, HasSubstr(absl::StrCat("public_key: \"", keys->public_key, "\"")));
  EXPECT_THAT(r.out, HasSubstr("tenant: acme"));
  EXPECT_THAT(r.out, ::testing::Not(HasSubstr(keys->secret_key)));
  r = RunMain({"keys", "generate", prefix}, env);
  EXPECT_EQ(r.code, kExitAlreadyExists);
  r = RunMain({"keys", "generate", d.path() + "/bob", "--tenant", "Bad Name"}, env);
  EXPECT_EQ(r.code, kExitInvalidArgument);
}

}  // namespace
}  // namespace fjord::cli
