// One LoRA fine-tuning job, top to bottom: setup, the loop, the final adapter.
//
// Shape legend: B micro-batch rows, T tokens per row (data.max_length),
// C hidden, V vocab.
#include "runtime/train/trainer.h"

#include <sys/resource.h>

#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "runtime/data/dataset.h"
#include "runtime/data/loader.h"
#include "runtime/data/tokenizer_adapter.h"
#include "runtime/io/safetensors.h"
#include "runtime/kernels/ops.h"
#include "runtime/kernels/self_test.h"
#include "runtime/model/model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/generate.h"
#include "runtime/train/optimizer.h"
#include "runtime/kernels/fused.h"
#include "runtime/util/status_macros.h"

#if FJORD_KERNELS_FUSED
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace fjord::train {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

// A micro-batch on the device. input_ids/targets/position_ids: (B, T) int64;
// segment_ids: (B, T) int64 on the host (0 = padding) or undefined when unpacked.
struct DeviceBatch {
  torch::Tensor input_ids, targets, position_ids, segment_ids;
  int64_t trained_tokens = 0;
  int64_t tokens = 0;  // non-padding
};

DeviceBatch ToDevice(const data::PackedBatch& b, const torch::Device& device, bool packed) {
  auto make = [&](const std::vector<int32_t>& v) {
    return torch::from_blob(const_cast<int32_t*>(v.data()), {b.batch, b.seq_len}, torch::kInt32)
        .to(device, torch::kInt64, /*non_blocking=*/false, /*copy=*/true);
  };
  DeviceBatch d;
  d.input_ids = make(b.input_ids);
  d.targets = make(b.targets);
  d.position_ids = make(b.position_ids);
  // Segment ids stay on the host: the model reads them there to lay out
  // attention per segment (AttentionLayout), with no device sync.
  if (packed) {
    d.segment_ids = torch::from_blob(const_cast<int32_t*>(b.segment_ids.data()), {b.batch, b.seq_len}, torch::kInt32)
                        .to(torch::kInt64, /*non_blocking=*/false, /*copy=*/true);
  }
  d.trained_tokens = b.trained_tokens;
  for (int32_t s : b.segment_ids) d.tokens += (s != 0);
  return d;
}

// Peak memory so far: the CUDA caching allocator's peak allocated bytes on
// a GPU, the process's peak resident set on CPU.
int64_t PeakMemoryBytes(const torch::Device& device) {
#if FJORD_KERNELS_FUSED
  if (device.is_cuda()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return stats.allocated_bytes[0].peak;  // [0]: StatType::AGGREGATE
  }
#else
  (void)device;
#endif
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

// The generator states dropout draws from: "rng.cpu" and, on a GPU, "rng.cuda".
std::vector<std::pair<std::string, torch::Tensor>> RngStates(const torch::Device& device) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    out.emplace_back("rng.cpu", gen.get_state());
  }
  if (device.is_cuda()) {
    at::Generator gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    out.emplace_back("rng.cuda", gen.get_state());
  }
  return out;
}

void RestoreRng(const std::string& name, const torch::Tensor& state, const torch::Device& device) {
  at::Generator gen = name == "rng.cuda" ? at::globalContext().defaultGenerator(device)
                                         : at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

constexpr int64_t kEvalChunkRows = 1024;

struct EvalResult {
  double loss = 0;
  double token_accuracy = 0;
  int64_t tokens = 0;
};

// Mean CE and next-token accuracy over the validation examples (no dropout,
// no gradients), in fixed order.
absl::StatusOr<EvalResult> Evaluate(CausalLM& model, const data::Dataset& valid,
                                    const TrainingConfig& cfg, const torch::Device& device) {
  torch::NoGradGuard no_grad;
  model.eval();
  data::LoaderOptions lo;
  lo.seq_len = cfg.data.max_length;
  lo.packing = cfg.data.packing;
  lo.shuffle = false;
  lo.truncate = true;
  auto examples = std::make_shared<const std::vector<data::Example>>(valid.examples);
  FJORD_ASSIGN_OR_RETURN(auto loader, data::DataLoader::Create(examples, lo));
  double loss_sum = 0;
  int64_t correct = 0, tokens = 0, batches = 0;
  while (true) {
    FJORD_ASSIGN_OR_RETURN(data::PackedBatch pb, loader->NextBatch(cfg.training.micro_batch_size));
    DeviceBatch b = ToDevice(pb, device, cfg.data.packing);
    if (b.trained_tokens > 0) {
      torch::Tensor hidden = model.Hidden(b.input_ids, b.position_ids, b.segment_ids);  // (B, T, C)
      torch::Tensor mask = b.targets.ne(data::kIgnoreIndex);                              // (B, T)
      torch::Tensor h = hidden.index({mask});                                             // (n, C)
      torch::Tensor t = b.targets.index({mask});                                          // (n)
      // A few rows of logits at a time: (n, V) fp32 may not fit for a 128k vocab.
      for (int64_t start = 0; start < t.size(0); start += kEvalChunkRows) {
        const int64_t len = std::min(kEvalChunkRows, t.size(0) - start);
        torch::Tensor logits = model.Logits(h.narrow(0, start, len));  // (len, V) fp32
        torch::Tensor target = t.narrow(0, start, len);                // (len)
        loss_sum += torch::nn::functional::cross_entropy(
                        logits, target, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                        .item<double>();
        correct += logits.argmax(-1).eq(target).sum().item<int64_t>();
      }
      tokens += t.size(0);
    }
    ++batches;
    if (pb.end_of_epoch || (cfg.eval.max_batches > 0 && batches >= cfg.eval.max_batches)) break;
  }
  model.train();
  EvalResult r;
  r.tokens = tokens;
  if (tokens > 0) {
    r.loss = loss_sum / static_cast<double>(tokens);
    r.token_accuracy = static_cast<double>(correct) / static_cast<double>(tokens);
  }
  return r;
}

// Micro-batches in `epochs` epochs (a dry run of the loader: packing only).
absl::StatusOr<int64_t> CountMicroBatches(std::shared_ptr<const std::vector<data::Example>> examples,
                                          const data::LoaderOptions& lo, int64_t rows,
                                          int64_t epochs) {
  FJORD_ASSIGN_OR_RETURN(auto loader, data::DataLoader::Create(examples, lo));
  int64_t n = 0;
  while (true) {
    FJORD_ASSIGN_OR_RETURN(data::PackedBatch b, loader->NextBatch(rows));
    ++n;
    if (b.end_of_epoch && b.epoch + 1 >= epochs) break;
  }
  return n;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return absl::ResourceExhaustedError(absl::StrCat("cannot write ", path, " (disk full or unwritable?)"));
  return absl::OkStatus();
}

// Everything but the adapter weights that an exact resume needs:
// training_state.safetensors (AdamW moments and step, generator states),
// trainer_state.json (step, epoch, tokens, the data loader's position, the
// schedule) and config.yaml (the job as run: `config_yaml`).
absl::Status SaveTrainingState(const std::string& dir, const AdamW& opt, const data::DataLoader& loader,
                               int64_t step, int64_t trained_tokens, int64_t epoch, int64_t total_steps,
                               int64_t warmup, const TrainingConfig& cfg, const std::string& config_yaml,
                               const torch::Device& device) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (auto& [name, t] : opt.StateTensors()) tensors.emplace_back("optimizer." + name, t);
  for (auto& [name, t] : RngStates(device)) tensors.emplace_back(name, t);
  FJORD_RETURN_IF_ERROR(io::WriteSafetensors(dir + "/training_state.safetensors", tensors));
  nlohmann::json state = {
      {"format", "fjord.trainer_state"},
      {"version", 1},
      {"step", step},
      {"epoch", epoch},
      {"trained_tokens", trained_tokens},
      {"loader", nlohmann::json::parse(loader.SaveState())},
      {"schedule",
       {{"name", cfg.training.lr_scheduler},
        {"peak_lr", cfg.training.learning_rate},
        {"total_steps", total_steps},
        {"warmup_steps", warmup},
        {"min_lr_ratio", cfg.training.min_lr_ratio},
        {"next_lr", LearningRate(cfg.training.lr_scheduler, cfg.training.learning_rate, step, total_steps, warmup,
                                 cfg.training.min_lr_ratio)}}},
  };
  FJORD_RETURN_IF_ERROR(WriteText(dir + "/trainer_state.json", state.dump(2) + "\n"));
  return WriteText(dir + "/config.yaml", config_yaml + "\n");
}

struct RestoredState {
  int64_t step = 0, trained_tokens = 0, epoch = 0;
};

// Restores what SaveTrainingState wrote (and the adapter weights) from a
// verified checkpoint. Nothing is restored partially: every file is read and
// checked before the loader, optimizer and generators change.
absl::StatusOr<RestoredState> LoadTrainingState(const std::string& dir, AdamW& opt,
                                                data::DataLoader& loader, AdapterMethod& adapter,
                                                const torch::Device& device, Env* env) {
  std::ifstream in(dir + "/trainer_state.json");
  nlohmann::json state = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!state.is_object() || !state.contains("step") || !state["step"].is_number_integer() ||
      !state.contains("loader") || !state["loader"].is_object()) {
    return absl::DataLossError(absl::StrCat(dir, "/trainer_state.json: malformed (no step or loader position)"));
  }
  FJORD_ASSIGN_OR_RETURN(auto file, io::SafetensorsFile::Open(dir + "/training_state.safetensors"));
  std::map<std::string, torch::Tensor> opt_state;
  std::vector<std::pair<std::string, torch::Tensor>> rng;
  for (const std::string& name : file->Names()) {
    FJORD_ASSIGN_OR_RETURN(torch::Tensor t, file->Get(name));
    if (name.rfind("optimizer.", 0) == 0) opt_state[name.substr(10)] = t.clone();
    if (name == "rng.cpu" || (name == "rng.cuda" && device.is_cuda())) rng.emplace_back(name, t.clone());
  }
  FJORD_RETURN_IF_ERROR(adapter.LoadFrom(dir + "/adapter", env));
  FJORD_RETURN_IF_ERROR(opt.LoadStateTensors(opt_state));
  FJORD_RETURN_IF_ERROR(loader.RestoreState(state["loader"].dump()));
  for (const auto& [name, t] : rng) RestoreRng(name, t, device);
  RestoredState r;
  r.step = state.value("step", int64_t{0});
  r.trained_tokens = state.value("trained_tokens", int64_t{0});
  r.epoch = state.value("epoch", int64_t{0});
  return r;
}

// Writes the final adapter atomically: <dir>.tmp, then renamed to <dir>.
absl::Status SaveFinalAdapter(AdapterMethod& adapter, const std::string& dir) {
  const std::string tmp = dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  // Not create_directories: the output directory must still be there.
  if (!fs::create_directory(tmp, ec) && ec) {
    return absl::UnavailableError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  }
  FJORD_RETURN_IF_ERROR(adapter.Save(tmp));
  fs::remove_all(dir, ec);
  fs::rename(tmp, dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<TrainResult> RunTrainingImpl(const TrainingConfig& cfg, const TrainOptions& options) {
  auto emit = [&](TrainEvent e) {
    if (options.on_event) options.on_event(e);
  };
  auto log = [&](std::string msg) {
    TrainEvent e;
    e.type = TrainEvent::Type::kLog;
    e.message = std::move(msg);
    emit(e);
  };
  if (options.adapter == nullptr) return absl::InvalidArgumentError("RunTraining: no adapter method given");
  AdapterMethod& adapter = *options.adapter;
  FJORD_RETURN_IF_ERROR(cfg.Validate());
  // The process-wide settings (trainer.h lists them) are made only with set_process_wide.
  const bool process_wide = options.set_process_wide;
  if (!process_wide && (cfg.training.threads != 0 || cfg.training.kernels != "auto")) {
    return absl::InvalidArgumentError(
        "training.threads and training.kernels change the whole process: with "
        "TrainOptions::set_process_wide false leave them at 0 and auto and set them yourself");
  }
  const std::string config_yaml = options.config_yaml.empty() ? cfg.ToYaml() : options.config_yaml;

  // ---- Setup: device, precision, kernels ---------------------------------------
  if (process_wide && cfg.training.threads > 0) torch::set_num_threads(static_cast<int>(cfg.training.threads));
  const bool cuda = cfg.training.device == "cuda" || (cfg.training.device == "auto" && torch::cuda::is_available());
  if (cuda && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError("training.device is 'cuda' but no CUDA device is available");
  }
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  torch::Dtype dtype = torch::kFloat32;
  if (cfg.model.dtype == "bfloat16" || (cfg.model.dtype == "auto" && cuda)) dtype = torch::kBFloat16;
  if (cfg.model.dtype == "float16") dtype = torch::kFloat16;
  if (process_wide) {
    kernels::SetBackend(cfg.training.kernels == "fused"       ? kernels::Backend::kFused
                        : cfg.training.kernels == "reference" ? kernels::Backend::kReference
                                                              : kernels::Backend::kAuto);
  }
  if (process_wide && !cuda) {
    // Subnormal floats are ~100x slower on x86 CPUs, and training makes them
    // (softmax tails, Adam's second moments of tiny gradients): flush them to
    // zero. Set before LibTorch starts its worker threads, which inherit it.
    at::globalContext().setFlushDenormal(true);
  }
  if (process_wide && cuda && cfg.training.kernels != "reference") {
    // Fused kernels run under kAuto only after passing this check on this GPU.
    std::string report;
    FJORD_RETURN_IF_ERROR(kernels::RunKernelSelfTest(&report));
    log(absl::StrCat("kernel self-test: ", report));
  }
  torch::manual_seed(cfg.training.seed);

  // ---- Model and adapters -------------------------------------------------------
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<CausalLM> model, CausalLM::FromPretrained(cfg.model.path, dtype, device));
  model->SetGradientCheckpointing(cfg.training.gradient_checkpointing);
  FJORD_RETURN_IF_ERROR(adapter.Attach(*model, cfg.training.seed));
  std::vector<std::pair<std::string, torch::Tensor>> trainable = adapter.TrainableParameters();
  std::vector<torch::Tensor> params;
  int64_t n_trainable = 0;
  for (auto& [name, p] : trainable) {
    params.push_back(p);
    n_trainable += p.numel();
  }
  model->train();

  // ---- Tokenizer and data --------------------------------------------------------
  const std::string tok_path = cfg.data.tokenizer.empty() ? cfg.model.path + "/tokenizer.json" : cfg.data.tokenizer;
  FJORD_ASSIGN_OR_RETURN(auto tokenizer, tokenizer::Tokenizer::FromFile(tok_path));
  data::TokenizerAdapter data_tokenizer(*tokenizer);
  data::DataOptions dopt;
  FJORD_ASSIGN_OR_RETURN(dopt.render.chat_template, data::ParseChatTemplate(cfg.data.chat_template));
  dopt.render.train_on_inputs = cfg.data.train_on_inputs;
  dopt.max_length = cfg.data.max_length;
  dopt.truncate = cfg.data.truncate;
  FJORD_ASSIGN_OR_RETURN(data::Dataset train_set, data::LoadJsonl(cfg.data.train, data_tokenizer, dopt));
  std::optional<data::Dataset> valid_set;
  if (!cfg.data.validation.empty()) {
    FJORD_ASSIGN_OR_RETURN(valid_set, data::LoadJsonl(cfg.data.validation, data_tokenizer, dopt));
  }
  data::LoaderOptions lo;
  lo.seq_len = cfg.data.max_length;
  lo.packing = cfg.data.packing;
  lo.shuffle = cfg.data.shuffle;
  lo.seed = cfg.training.seed;
  lo.truncate = true;
  auto examples = std::make_shared<const std::vector<data::Example>>(std::move(train_set.examples));
  FJORD_ASSIGN_OR_RETURN(auto loader, data::DataLoader::Create(examples, lo));
  const int64_t rows = cfg.training.micro_batch_size;
  const int64_t accum = cfg.training.gradient_accumulation_steps;
  int64_t total_steps = cfg.training.max_steps;
  if (total_steps <= 0) {
    FJORD_ASSIGN_OR_RETURN(int64_t micro, CountMicroBatches(examples, lo, rows, cfg.training.epochs));
    total_steps = (micro + accum - 1) / accum;
  }
  const int64_t warmup = cfg.training.warmup_steps > 0
                             ? cfg.training.warmup_steps
                             : static_cast<int64_t>(std::ceil(cfg.training.warmup_ratio * total_steps));

  // ---- Optimizer and resume -------------------------------------------------------
  AdamWOptions aopt;
  aopt.beta1 = cfg.training.adam_beta1;
  aopt.beta2 = cfg.training.adam_beta2;
  aopt.eps = cfg.training.adam_epsilon;
  aopt.weight_decay = cfg.training.weight_decay;
  AdamW optimizer(trainable, aopt);
  // output.dir is made here, once; later writes never re-create it (a
  // vanished or unmounted output directory fails them instead).
  {
    std::error_code ec;
    fs::create_directories(cfg.output.dir, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot create output.dir ", cfg.output.dir, ": ", ec.message()));
  }
  const std::string ckpt_root = cfg.output.dir + "/checkpoints";
  TrainResult result;
  result.total_steps = total_steps;
  int64_t step = 0, trained_tokens = 0, epoch = 0;
  if (options.resume) {
    std::vector<std::string> skipped;
    absl::StatusOr<FoundCheckpoint> found = FindLatestCheckpoint(ckpt_root, &skipped, options.env);
    for (const std::string& s : skipped) log(absl::StrCat("warning: skipping invalid checkpoint ", s));
    if (found.ok()) {
      FJORD_ASSIGN_OR_RETURN(RestoredState rs, LoadTrainingState(found->dir, optimizer, *loader, adapter, device, options.env));
      step = rs.step;
      trained_tokens = rs.trained_tokens;
      epoch = rs.epoch;
      result.resumed_from_step = step;
      log(absl::StrCat("resumed from ", found->dir, " at step ", step));
    }
  }

  TrainEvent start;
  start.type = TrainEvent::Type::kStart;
  start.step = step;
  start.total_steps = total_steps;
  start.message = absl::StrCat("device ", cuda ? "cuda" : "cpu", ", ", n_trainable, " trainable parameters, ",
                               examples->size(), " training examples, ", total_steps, " steps");
  emit(start);

  auto run_eval = [&](int64_t at_step) -> absl::StatusOr<EvalResult> {
    FJORD_ASSIGN_OR_RETURN(EvalResult er, Evaluate(*model, *valid_set, cfg, device));
    TrainEvent e;
    e.type = TrainEvent::Type::kEval;
    e.step = at_step;
    e.total_steps = total_steps;
    e.eval_loss = er.loss;
    e.eval_token_accuracy = er.token_accuracy;
    emit(e);
    return er;
  };
  auto run_heldout = [&]() -> absl::StatusOr<double> {
    model->eval();
    absl::StatusOr<double> acc = HeldoutAccuracy(*model, *tokenizer, cfg.eval.heldout, cfg.data.chat_template,
                                                 cfg.eval.max_new_tokens, device);
    model->train();
    return acc;
  };
  auto write_checkpoint = [&](int64_t at_step) -> absl::Status {
    FJORD_ASSIGN_OR_RETURN(std::string path,
                           WriteCheckpoint(ckpt_root, at_step, cfg.checkpoint.keep_last,
                                           [&](const std::string& tmp) -> absl::Status {
                                             FJORD_RETURN_IF_ERROR(adapter.SaveTo(tmp + "/adapter", options.env));
                                             return SaveTrainingState(tmp, optimizer, *loader, at_step,
                                                                      trained_tokens, epoch, total_steps, warmup,
                                                                      cfg, config_yaml, device);
                                           },
                                           options.env));
    result.last_checkpoint = path;
    TrainEvent e;
    e.type = TrainEvent::Type::kCheckpoint;
    e.step = at_step;
    e.total_steps = total_steps;
    e.message = path;
    emit(e);
    return absl::OkStatus();
  };

  if (valid_set && step == 0) {
    FJORD_ASSIGN_OR_RETURN(EvalResult er, run_eval(0));
    result.initial_eval_loss = er.loss;
  }
  if (!cfg.eval.heldout.empty() && step == 0) {
    FJORD_ASSIGN_OR_RETURN(result.initial_heldout_accuracy, run_heldout());
  }

  // ---- The loop ---------------------------------------------------------------------
  const auto started = Clock::now();
  double train_seconds = 0;  // in steps only: evaluation and checkpoints excluded
  int64_t tokens_since_start = 0;
  const int64_t first_step = step;
  while (step < total_steps) {
    const auto step_started = Clock::now();
    // Gather the whole accumulated batch first: the loss is normalised by its
    // trained tokens, not per micro-batch.
    std::vector<DeviceBatch> micro;
    int64_t step_trained = 0;
    for (int64_t i = 0; i < accum; ++i) {
      FJORD_ASSIGN_OR_RETURN(data::PackedBatch pb, loader->NextBatch(rows));
      if (pb.end_of_epoch) epoch = pb.epoch + 1;
      micro.push_back(ToDevice(pb, device, cfg.data.packing));
      step_trained += micro.back().trained_tokens;
    }
    const double lr = LearningRate(cfg.training.lr_scheduler, cfg.training.learning_rate, step, total_steps, warmup,
                                   cfg.training.min_lr_ratio);
    double loss_sum = 0;
    optimizer.ZeroGrad();
    for (DeviceBatch& b : micro) {
      tokens_since_start += b.tokens;
      if (b.trained_tokens == 0) continue;
      torch::Tensor hidden = model->Hidden(b.input_ids, b.position_ids, b.segment_ids);  // (B, T, C)
      torch::Tensor loss = model->LossSum(hidden, b.targets);                             // () fp32
      loss_sum += loss.item<double>();
      (loss / static_cast<double>(std::max<int64_t>(step_trained, 1))).backward();
    }
    if (options.on_gradients) options.on_gradients(step, trainable);
    const double grad_norm = ClipGradNorm(params, cfg.training.max_grad_norm);
    optimizer.Step(lr);
    ++step;
    trained_tokens += step_trained;

    const auto now = Clock::now();
    train_seconds += std::chrono::duration<double>(now - step_started).count();
    const double elapsed = std::chrono::duration<double>(now - started).count();  // wall, for the ETA
    TrainEvent e;
    e.type = TrainEvent::Type::kStep;
    e.step = step;
    e.total_steps = total_steps;
    e.epoch = epoch;
    e.loss = step_trained > 0 ? loss_sum / static_cast<double>(step_trained) : 0.0;
    e.lr = lr;
    e.grad_norm = grad_norm;
    e.tokens_per_s = train_seconds > 0 ? static_cast<double>(tokens_since_start) / train_seconds : 0.0;
    e.eta_s = elapsed / static_cast<double>(step - first_step) * static_cast<double>(total_steps - step);
    e.trained_tokens = trained_tokens;
    e.peak_memory_bytes = PeakMemoryBytes(device);
    emit(e);

    if (valid_set && cfg.eval.every_steps > 0 && step % cfg.eval.every_steps == 0 && step < total_steps) {
      FJORD_RETURN_IF_ERROR(run_eval(step).status());
    }
    const bool stop = (options.stop_requested != nullptr && options.stop_requested->load()) ||
                      (options.stop_after_steps > 0 && step >= options.stop_after_steps && step < total_steps);
    if (stop || (cfg.checkpoint.every_steps > 0 && step % cfg.checkpoint.every_steps == 0) || step == total_steps) {
      FJORD_RETURN_IF_ERROR(write_checkpoint(step));
    }
    if (stop && step < total_steps) {
      result.steps = step;
      result.stopped = true;
      return result;
    }
  }

  // ---- The end: evaluation and the final adapter -----------------------------------
  result.steps = step;
  if (valid_set) {
    FJORD_ASSIGN_OR_RETURN(EvalResult er, run_eval(step));
    result.final_eval_loss = er.loss;
    result.final_eval_token_accuracy = er.token_accuracy;
  }
  if (!cfg.eval.heldout.empty()) {
    FJORD_ASSIGN_OR_RETURN(result.final_heldout_accuracy, run_heldout());
  }
  result.adapter_dir = cfg.output.dir + "/adapter";
  FJORD_RETURN_IF_ERROR(SaveFinalAdapter(adapter, result.adapter_dir));
  TrainEvent done;
  done.type = TrainEvent::Type::kDone;
  done.step = step;
  done.total_steps = total_steps;
  done.eval_loss = result.final_eval_loss;
  done.heldout_accuracy = result.final_heldout_accuracy;
  done.message = result.adapter_dir;
  emit(done);
  return result;
}

}  // namespace

const char* EventTypeName(TrainEvent::Type type) {
  switch (type) {
    case TrainEvent::Type::kStart: return "start";
    case TrainEvent::Type::kStep: return "step";
    case TrainEvent::Type::kEval: return "eval";
    case TrainEvent::Type::kCheckpoint: return "checkpoint";
    case TrainEvent::Type::kLog: return "log";
    case TrainEvent::Type::kDone: return "done";
  }
  return "log";
}

absl::StatusOr<TrainResult> RunTraining(const TrainingConfig& config, const TrainOptions& options) {
  try {
    return RunTrainingImpl(config, options);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat("LibTorch error during training: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("error during training: ", e.what()));
  }
}

}  // namespace fjord::train
