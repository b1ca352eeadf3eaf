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
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "absl/strings/str_cat.h"
#include "runtime/data/dataset.h"
#include "runtime/data/loader.h"
#include "runtime/data/model_template.h"
#include "runtime/data/preference.h"
#include "runtime/data/tokenizer_adapter.h"
#include "runtime/dist/world.h"
#include "runtime/io/safetensors.h"
#include "runtime/kernels/fused.h"
#include "runtime/kernels/ops.h"
#include "runtime/kernels/self_test.h"
#include "runtime/model/model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/data_parallel.h"
#include "runtime/train/generate.h"
#include "runtime/train/optimizer.h"
#include "runtime/train/preference_run.h"
#include "runtime/train/preference_step.h"
#include "runtime/train/training_state.h"
#include "runtime/util/status_macros.h"

#if FJORD_KERNELS_FUSED
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace fjord::train {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;
using internal::BroadcastParameters;
using internal::GradientReducer;
using internal::LoadTrainingState;
using internal::MicroBatchesPerStep;
using internal::RestoredState;
using internal::SaveFinalAdapter;
using internal::SaveTrainingState;
using internal::SeedMicroBatch;

// A micro-batch on the device. input_ids/targets/position_ids: (B, T) int64;
// segment_ids: (B, T) int64 on the host (0 = padding) or undefined when unpacked.
struct DeviceBatch {
  torch::Tensor input_ids, targets, position_ids, segment_ids;
  int64_t trained_tokens = 0;
  int64_t tokens = 0;                    // non-padding
  std::optional<PreferenceBatch> pairs;  // preference methods: the batch as pairs
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
    d.segment_ids = torch::from_blob(const_cast<int32_t*>(b.segment_ids.data()),
                                     {b.batch, b.seq_len}, torch::kInt32)
                        .to(torch::kInt64, /*non_blocking=*/false, /*copy=*/true);
  }
  d.trained_tokens = b.trained_tokens;
  for (int32_t s : b.segment_ids) d.tokens += (s != 0);
  return d;
}

constexpr int64_t kEvalChunkRows = 1024;

struct EvalResult {
  double loss = 0;
  double token_accuracy = 0;
  int64_t tokens = 0;
};

// Mean CE and next-token accuracy over the validation examples (no dropout,
// no gradients), in fixed order. With a world of several ranks each rank
// takes the batches b with b % size == rank and the sums are all-reduced.
absl::StatusOr<EvalResult> Evaluate(CausalLM& model, const data::Dataset& valid,
                                    const TrainingConfig& cfg, const torch::Device& device,
                                    dist::World* world) {
  const int64_t ranks = world != nullptr ? world->size() : 1;
  const int64_t rank = world != nullptr ? world->rank() : 0;
  torch::NoGradGuard no_grad;
  model.eval();
  data::LoaderOptions lo = internal::EvalLoaderOptions(cfg);
  lo.truncate = true;
  auto examples = std::make_shared<const std::vector<data::Example>>(valid.examples);
  FJORD_ASSIGN_OR_RETURN(auto loader, data::DataLoader::Create(examples, lo));
  double loss_sum = 0;
  int64_t correct = 0, tokens = 0, batches = 0;
  while (true) {
    FJORD_ASSIGN_OR_RETURN(data::PackedBatch pb, loader->NextBatch(cfg.training.micro_batch_size));
    DeviceBatch b;
    if (batches % ranks == rank) b = ToDevice(pb, device, cfg.data.packing);
    if (b.trained_tokens > 0) {
      torch::Tensor hidden = model.Hidden(b.input_ids, b.position_ids, b.segment_ids);  // (B, T, C)
      torch::Tensor mask = b.targets.ne(data::kIgnoreIndex);                            // (B, T)
      torch::Tensor h = hidden.index({mask});                                           // (n, C)
      torch::Tensor t = b.targets.index({mask});                                        // (n)
      // A few rows of logits at a time: (n, V) fp32 may not fit for a 128k vocab.
      for (int64_t start = 0; start < t.size(0); start += kEvalChunkRows) {
        const int64_t len = std::min(kEvalChunkRows, t.size(0) - start);
        torch::Tensor logits = model.Logits(h.narrow(0, start, len));  // (len, V) fp32
        torch::Tensor target = t.narrow(0, start, len);                // (len)
        loss_sum += torch::nn::functional::cross_entropy(
                        logits, target,
                        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                        .item<double>();
        correct += logits.argmax(-1).eq(target).sum().item<int64_t>();
      }
      tokens += t.size(0);
    }
    ++batches;
    if (pb.end_of_epoch || (cfg.eval.max_batches > 0 && batches >= cfg.eval.max_batches)) break;
  }
  model.train();
  if (world != nullptr && world->size() > 1) {
    torch::Tensor sums = torch::tensor(
        {loss_sum, static_cast<double>(correct), static_cast<double>(tokens)}, torch::kFloat64);
    FJORD_RETURN_IF_ERROR(world->AllReduceSum(sums, "the evaluation's sums"));
    loss_sum = sums[0].item<double>();
    correct = static_cast<int64_t>(sums[1].item<double>());
    tokens = static_cast<int64_t>(sums[2].item<double>());
  }
  EvalResult r;
  r.tokens = tokens;
  if (tokens > 0) {
    r.loss = loss_sum / static_cast<double>(tokens);
    r.token_accuracy = static_cast<double>(correct) / static_cast<double>(tokens);
  }
  return r;
}

// Micro-batches in `epochs` epochs (a dry run of the loader: packing only).
absl::StatusOr<int64_t> CountMicroBatches(
    std::shared_ptr<const std::vector<data::Example>> examples, const data::LoaderOptions& lo,
    int64_t rows, int64_t epochs) {
  FJORD_ASSIGN_OR_RETURN(auto loader, data::DataLoader::Create(examples, lo));
  int64_t n = 0;
  while (true) {
    FJORD_ASSIGN_OR_RETURN(data::PackedBatch b, loader->NextBatch(rows));
    ++n;
    if (b.end_of_epoch && b.epoch + 1 >= epochs) break;
  }
  return n;
}

absl::StatusOr<TrainResult> RunTrainingImpl(const TrainingConfig& cfg,
                                            const TrainOptions& options) {
  dist::World* const world = options.world;
  const int ranks = world != nullptr ? world->size() : 1;
  const int rank = world != nullptr ? world->rank() : 0;
  const bool is_main = rank == 0;
  // Events come from rank 0 only: it speaks for the job.
  auto emit = [&](TrainEvent e) {
    if (is_main && options.on_event) options.on_event(e);
  };
  auto log = [&](std::string msg) {
    TrainEvent e;
    e.type = TrainEvent::Type::kLog;
    e.message = std::move(msg);
    emit(e);
  };
  if (options.adapter == nullptr)
    return absl::InvalidArgumentError("RunTraining: no adapter method given");
  AdapterMethod& adapter = *options.adapter;
  FJORD_RETURN_IF_ERROR(cfg.Validate());
  FJORD_ASSIGN_OR_RETURN(const std::optional<PreferenceMethod> preference_method,
                         ParseTrainingMethod(cfg.training.method));
  const bool preference = preference_method.has_value();
  // The process-wide settings (trainer.h lists them) are made only with set_process_wide.
  const bool process_wide = options.set_process_wide;
  if (!process_wide && (cfg.training.threads != 0 || cfg.training.kernels != "auto")) {
    return absl::InvalidArgumentError(
        "training.threads and training.kernels change the whole process: with "
        "TrainOptions::set_process_wide false leave them at 0 and auto and set them yourself");
  }
  const std::string config_yaml = options.config_yaml.empty() ? cfg.ToYaml() : options.config_yaml;

  // ---- Setup: device, precision, kernels ---------------------------------------
  if (process_wide && cfg.training.threads > 0)
    torch::set_num_threads(static_cast<int>(cfg.training.threads));
  const bool cuda = cfg.training.device == "cuda" ||
                    (cfg.training.device == "auto" && torch::cuda::is_available());
  if (cuda && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError(
        "training.device is 'cuda' but no CUDA device is available");
  }
  // One GPU per rank: this node's rank picks it, unless the launcher gave
  // each rank a device of its own (one visible: srun --gpus-per-task=1).
  int gpu = world != nullptr ? world->spec().local_rank : 0;
  if (cuda && torch::cuda::device_count() == 1) gpu = 0;
  if (cuda && gpu >= static_cast<int>(torch::cuda::device_count())) {
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", rank, " is local rank ", gpu, " but this node has ",
                     torch::cuda::device_count(), " CUDA devices"));
  }
  const torch::Device device = cuda
                                   ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(gpu))
                                   : torch::Device(torch::kCPU);
#if FJORD_KERNELS_FUSED
  if (cuda) c10::cuda::set_device(static_cast<c10::DeviceIndex>(gpu));
#endif
  torch::Dtype dtype = torch::kFloat32;
  if (cfg.model.dtype == "bfloat16" || (cfg.model.dtype == "auto" && cuda))
    dtype = torch::kBFloat16;
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
  model::LoadOptions load;
  load.dtype = dtype;
  load.device = device;
  load.quantization = cfg.model.quantization == "nf4" ? "nf4" : "";
  // A sharded base: every rank must then run the same forwards and
  // backwards in the same order (each weight gather is a collective), so
  // no micro-batch is skipped and evaluation is not shared out (each rank
  // evaluates everything, the same way).
  const bool shard_base = cfg.model.shard_base && ranks > 1;
  std::shared_ptr<internal::WorldShardGroup> shard_group;
  if (shard_base) {
    shard_group = std::make_shared<internal::WorldShardGroup>(*world);
    load.shard_group = shard_group;
  }
  int64_t gathered_before = 0;  // shard_group->received_bytes() when the step started
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<CausalLM> model,
                         CausalLM::FromPretrained(cfg.model.path, load));
  dist::World* const share_world = shard_base ? nullptr : world;  // evaluation's sharing
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
  const std::string tok_path =
      cfg.data.tokenizer.empty() ? cfg.model.path + "/tokenizer.json" : cfg.data.tokenizer;
  FJORD_ASSIGN_OR_RETURN(auto tokenizer, tokenizer::Tokenizer::FromFile(tok_path));
  data::TokenizerAdapter data_tokenizer(*tokenizer);
  data::DataOptions dopt;
  // auto / model read the model's own chat template from its folder.
  FJORD_RETURN_IF_ERROR(
      data::ResolveChatTemplate(cfg.data.chat_template, cfg.model.path, &dopt.render));
  dopt.render.train_on_inputs = cfg.data.train_on_inputs;
  dopt.max_length = cfg.data.max_length;
  dopt.truncate = cfg.data.truncate;
  data::LoaderOptions lo;
  lo.seq_len = cfg.data.max_length;
  lo.packing = cfg.data.packing;
  lo.shuffle = cfg.data.shuffle;
  lo.seed = cfg.training.seed;
  lo.truncate = true;
  std::optional<data::Dataset> valid_set;
  std::shared_ptr<const std::vector<data::Example>> examples;
  internal::PreferenceSetup pref;
  if (preference) {
    // Pairs travel through the SFT loader as one example each
    // (data::PairAsExample), in rows of 2 x max_length tokens.
    FJORD_ASSIGN_OR_RETURN(
        pref, internal::LoadPreferenceSetup(cfg, *preference_method, data_tokenizer, dopt.render,
                                            adapter));
    auto pair_examples = std::make_shared<std::vector<data::Example>>();
    for (const data::PreferencePair& p : *pref.train)
      pair_examples->push_back(data::PairAsExample(p));
    examples = std::move(pair_examples);
    lo.seq_len = 2 * cfg.data.max_length;
  } else {
    FJORD_ASSIGN_OR_RETURN(data::Dataset train_set,
                           data::LoadJsonl(cfg.data.train, data_tokenizer, dopt));
    if (!cfg.data.validation.empty()) {
      FJORD_ASSIGN_OR_RETURN(valid_set, data::LoadJsonl(cfg.data.validation, data_tokenizer, dopt));
    }
    examples = std::make_shared<const std::vector<data::Example>>(std::move(train_set.examples));
  }
  const bool has_validation = valid_set.has_value() || pref.valid != nullptr;
  FJORD_ASSIGN_OR_RETURN(auto loader, data::DataLoader::Create(examples, lo));
  const int64_t rows = cfg.training.micro_batch_size;
  const std::string ckpt_root = cfg.output.dir + "/checkpoints";
  std::optional<FoundCheckpoint> found;
  if (options.resume) {
    std::vector<std::string> skipped;
    absl::StatusOr<FoundCheckpoint> f = FindLatestCheckpoint(ckpt_root, &skipped, options.env);
    for (const std::string& s : skipped)
      log(absl::StrCat("warning: skipping invalid checkpoint ", s));
    if (f.ok()) found = *std::move(f);
  }
  // One optimizer step takes the next micro_per_step micro-batches of the
  // one data order (every rank reads it whole): gradient accumulation x
  // ranks, dealt round-robin to the ranks. A resume keeps the checkpoint's
  // global batch on any number of ranks.
  int64_t micro_per_step = cfg.training.gradient_accumulation_steps * ranks;
  if (found) {
    micro_per_step =
        MicroBatchesPerStep(found->dir).value_or(cfg.training.gradient_accumulation_steps);
  }
  int64_t total_steps = cfg.training.max_steps;
  if (total_steps <= 0) {
    FJORD_ASSIGN_OR_RETURN(int64_t micro,
                           CountMicroBatches(examples, lo, rows, cfg.training.epochs));
    total_steps = (micro + micro_per_step - 1) / micro_per_step;
  }
  const int64_t warmup =
      cfg.training.warmup_steps > 0
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
    if (ec)
      return absl::UnavailableError(
          absl::StrCat("cannot create output.dir ", cfg.output.dir, ": ", ec.message()));
  }
  TrainResult result;
  result.total_steps = total_steps;
  int64_t step = 0, trained_tokens = 0, epoch = 0;
  if (found) {
    FJORD_ASSIGN_OR_RETURN(RestoredState rs, LoadTrainingState(found->dir, optimizer, *loader,
                                                               adapter, device, options.env));
    step = rs.step;
    trained_tokens = rs.trained_tokens;
    epoch = rs.epoch;
    result.resumed_from_step = step;
    log(absl::StrCat("resumed from ", found->dir, " at step ", step));
  }
  if (world != nullptr) FJORD_RETURN_IF_ERROR(BroadcastParameters(*world, params));
  std::unique_ptr<GradientReducer> reducer;
  if (world != nullptr && ranks > 1) {
    reducer = std::make_unique<GradientReducer>(*world, params, options.gradient_bucket_bytes);
  }
  auto record_reducer = [&] {
    if (reducer == nullptr) return;
    result.gradient_buckets = reducer->buckets();
    result.gradient_bytes_per_step = reducer->bytes_per_step();
    result.gradient_wait_seconds = reducer->finish_seconds();
    result.gradient_buckets_started_in_backward = reducer->buckets_started_in_backward();
  };

  TrainEvent start;
  start.type = TrainEvent::Type::kStart;
  start.step = step;
  start.total_steps = total_steps;
  start.message = absl::StrCat(
      "device ", cuda ? "cuda" : "cpu", ", ", n_trainable, " trainable parameters, ",
      examples->size(), preference ? " preference pairs (" : " training examples",
      preference ? absl::StrCat(cfg.training.method, ")") : std::string(), ", ", total_steps,
      " steps",
      ranks > 1 ? absl::StrCat(", ", ranks, " data-parallel ranks (", world->backend(), ")")
                : std::string(),
      model->quantization().empty() && !shard_base
          ? std::string()
          : absl::StrCat(
                ", base",
                model->quantization().empty() ? "" : absl::StrCat(" in ", model->quantization()),
                shard_base ? " sharded over the ranks (" : " (",
                absl::SixDigits(static_cast<double>(model->BaseBytes()) / 1e6),
                shard_base ? " MB on each)" : " MB)"));
  emit(start);

  // One "eval" event: the validation loss and token accuracy (-1 without
  // validation data) and the held-out answer accuracy measured with them
  // (-1: not measured).
  // Preference methods: the evaluation's loss is the mean preference loss,
  // its metrics TRL's (token accuracy not measured: -1).
  std::vector<std::pair<std::string, double>> eval_metrics;
  auto emit_eval = [&](int64_t at_step, const std::optional<EvalResult>& er,
                       double heldout_accuracy) {
    TrainEvent e;
    e.type = TrainEvent::Type::kEval;
    e.step = at_step;
    e.total_steps = total_steps;
    e.eval_loss = er ? er->loss : -1;
    e.eval_token_accuracy = er ? er->token_accuracy : -1;
    e.heldout_accuracy = heldout_accuracy;
    e.metrics = eval_metrics;
    emit(e);
  };
  auto evaluate = [&]() -> absl::StatusOr<EvalResult> {
    if (!preference) return Evaluate(*model, *valid_set, cfg, device, share_world);
    if (pref.valid_ref == std::nullopt && cfg.preference.precompute_ref &&
        NeedsReference(pref.loss.method)) {
      FJORD_ASSIGN_OR_RETURN(
          pref.valid_ref, internal::PrecomputeReference(*model, adapter, *pref.valid, cfg, device));
    }
    FJORD_ASSIGN_OR_RETURN(
        PreferenceMetrics m,
        internal::EvaluatePreference(*model, adapter, pref, cfg, device, share_world));
    eval_metrics = m.Named(pref.loss.method, "eval_");
    EvalResult er;
    er.loss = m.loss;
    er.token_accuracy = -1;
    er.tokens = static_cast<int64_t>(m.pairs);
    return er;
  };
  auto run_eval = [&](int64_t at_step) -> absl::StatusOr<EvalResult> {
    FJORD_ASSIGN_OR_RETURN(EvalResult er, evaluate());
    emit_eval(at_step, er, -1);
    return er;
  };
  // The ranks share the questions out and add up the answers (with a
  // sharded base each asks them all: the same generation steps on every
  // rank, whose weight gathers then match).
  auto run_heldout = [&]() -> absl::StatusOr<double> {
    model->eval();
    absl::StatusOr<HeldoutCounts> c =
        HeldoutShard(*model, *tokenizer, cfg.eval.heldout, cfg.data.chat_template,
                     cfg.eval.max_new_tokens, device, share_world != nullptr ? rank : 0,
                     share_world != nullptr ? ranks : 1, cfg.model.path);
    model->train();
    if (!c.ok()) return c.status();
    torch::Tensor counts = torch::tensor(
        {static_cast<double>(c->asked), static_cast<double>(c->right)}, torch::kFloat64);
    if (share_world != nullptr) {
      FJORD_RETURN_IF_ERROR(world->AllReduceSum(counts, "the held-out answers' counts"));
    }
    return counts[1].item<double>() / counts[0].item<double>();
  };
  // Rank 0 writes the checkpoints (every rank holds the same state).
  auto write_checkpoint = [&](int64_t at_step) -> absl::Status {
    if (!is_main) return absl::OkStatus();
    FJORD_ASSIGN_OR_RETURN(
        std::string path,
        WriteCheckpoint(
            ckpt_root, at_step, cfg.checkpoint.keep_last,
            [&](const std::string& tmp) -> absl::Status {
              FJORD_RETURN_IF_ERROR(adapter.SaveTo(tmp + "/adapter", options.env));
              return SaveTrainingState(tmp, optimizer, *loader, at_step, trained_tokens, epoch,
                                       total_steps, warmup, micro_per_step, ranks, cfg, config_yaml,
                                       device);
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

  // The base model, before training (not again on a resume): one step-0
  // eval event with the validation loss and the held-out answer accuracy.
  if (step == 0 && (has_validation || !cfg.eval.heldout.empty())) {
    std::optional<EvalResult> er;
    if (has_validation) {
      FJORD_ASSIGN_OR_RETURN(er, evaluate());
      result.initial_eval_loss = er->loss;
      result.initial_eval_metrics = eval_metrics;
    }
    if (!cfg.eval.heldout.empty()) {
      FJORD_ASSIGN_OR_RETURN(result.initial_heldout_accuracy, run_heldout());
    }
    emit_eval(0, er, result.initial_heldout_accuracy);
  }

  // preference.precompute_ref: the reference log-probs of every training
  // pair, once (also on a resume: the reference never changes).
  if (preference && cfg.preference.precompute_ref && NeedsReference(pref.loss.method)) {
    const auto t0 = Clock::now();
    FJORD_ASSIGN_OR_RETURN(
        pref.train_ref, internal::PrecomputeReference(*model, adapter, *pref.train, cfg, device));
    log(absl::StrCat("reference log-probs of ", pref.train->size(), " pairs precomputed in ",
                     absl::SixDigits(std::chrono::duration<double>(Clock::now() - t0).count()),
                     " s"));
  }
  const NllTokens nll_tokens = NllTokensFor(pref.loss);
  const double nll_weight = NllWeight(pref.loss);

  // ---- The loop ---------------------------------------------------------------------
  const auto started = Clock::now();
  double train_seconds = 0;  // in steps only: evaluation and checkpoints excluded
  int64_t tokens_since_start = 0;
  const int64_t first_step = step;
  while (step < total_steps) {
    const auto step_started = Clock::now();
    if (shard_group != nullptr) gathered_before = shard_group->received_bytes();
    // Gather the whole global batch first: the loss is normalised by its
    // trained tokens (on every rank: each reads the whole data order), not
    // per micro-batch or per rank. This rank keeps micro-batches i with
    // i % ranks == rank.
    std::vector<DeviceBatch> micro;
    std::vector<int64_t> micro_index;
    int64_t step_trained = 0;
    // Preference methods: the loss is normalised by the global batch's pairs
    // (and the NLL term by its NLL tokens), as TRL's mean over the batch.
    int64_t step_pairs = 0, step_nll_tokens = 0;
    std::optional<DeviceBatch> filler;  // sharded base: a pass that trains nothing
    for (int64_t i = 0; i < micro_per_step; ++i) {
      FJORD_ASSIGN_OR_RETURN(data::PackedBatch pb, loader->NextBatch(rows));
      if (pb.end_of_epoch) epoch = pb.epoch + 1;
      step_trained += preference ? 0 : pb.trained_tokens;
      for (int32_t s : pb.segment_ids) tokens_since_start += (s != 0);
      if (preference) {
        DeviceBatch d;
        d.pairs = MakePreferenceBatch(*pref.train, std::move(pb), device, nll_tokens);
        step_pairs += static_cast<int64_t>(d.pairs->spans.size());
        step_nll_tokens += d.pairs->nll_tokens;
        for (const data::PairSpans& s : d.pairs->spans) {  // response tokens carry the loss
          step_trained += s.chosen.response_length() + s.rejected.response_length();
        }
        d.trained_tokens = static_cast<int64_t>(d.pairs->spans.size());
        if (shard_base && !filler.has_value()) {  // the same rows, no pairs
          filler = d;
          filler->pairs->spans.clear();
          filler->pairs->nll_tokens = 0;
          filler->trained_tokens = 0;
        }
        if (i % ranks != rank) continue;
        micro.push_back(std::move(d));
        micro_index.push_back(i);
        continue;
      }
      if (shard_base && !filler.has_value()) {
        filler = ToDevice(pb, device, cfg.data.packing);
        filler->targets.fill_(data::kIgnoreIndex);
        filler->trained_tokens = 0;
      }
      if (i % ranks != rank) continue;
      micro.push_back(ToDevice(pb, device, cfg.data.packing));
      micro_index.push_back(i);
    }
    // With a sharded base every rank must make the same passes (each gather
    // is a collective): when the step's micro-batches do not divide evenly
    // among the ranks (a resume on another number of ranks), the ranks with
    // fewer make passes that train nothing (every target ignored).
    while (shard_base &&
           static_cast<int64_t>(micro.size()) < (micro_per_step + ranks - 1) / ranks) {
      micro.push_back(*filler);
      micro_index.push_back(micro_per_step + static_cast<int64_t>(micro.size()));
    }
    const double lr = LearningRate(cfg.training.lr_scheduler, cfg.training.learning_rate, step,
                                   total_steps, warmup, cfg.training.min_lr_ratio);
    double loss_sum = 0;
    PreferenceMetrics step_metrics;
    optimizer.ZeroGrad();
    size_t last = micro.size();  // this rank's last backward of the step
    for (size_t k = 0; k < micro.size(); ++k) {
      if (micro[k].trained_tokens > 0 || shard_base) last = k;
    }
    for (size_t k = 0; k < micro.size(); ++k) {
      DeviceBatch& b = micro[k];
      if (b.trained_tokens == 0 && !shard_base) continue;  // (sharded: every rank runs all)
      // (A sharded base gathers weights during backward: the gradient sums
      // then wait until it ends, so that no rank can interleave the two
      // kinds of collective in another order than the others.)
      if (reducer != nullptr && k == last && !shard_base) reducer->Arm(step);
      if (world != nullptr) SeedMicroBatch(cfg.training.seed, step, micro_index[k], device);
      if (b.pairs) {
        const PreferenceForward f = ForwardPreference(*model, adapter, *b.pairs, pref.loss,
                                                      pref.train_ref ? &*pref.train_ref : nullptr);
        torch::Tensor loss = f.terms.losses.sum() / static_cast<double>(step_pairs);  // () fp32
        if (nll_weight != 0 && step_nll_tokens > 0 && f.policy.nll_sum.defined()) {
          loss = loss + nll_weight * f.policy.nll_sum / static_cast<double>(step_nll_tokens);
        }
        if (f.policy.anchor.defined()) loss = loss + f.policy.anchor;  // (sharded base)
        const double share = loss.item<double>();
        loss_sum += share;
        step_metrics.Add(f, share);
        loss.backward();
        continue;
      }
      torch::Tensor hidden =
          model->Hidden(b.input_ids, b.position_ids, b.segment_ids);  // (B, T, C)
      torch::Tensor loss = model->LossSum(hidden, b.targets);         // () fp32
      loss_sum += loss.item<double>();
      (loss / static_cast<double>(std::max<int64_t>(step_trained, 1))).backward();
    }
    // Whether any rank was asked to stop: all stop after this step together.
    bool stop_asked = options.stop_requested != nullptr && options.stop_requested->load();
    if (world != nullptr && ranks > 1) {
      FJORD_RETURN_IF_ERROR(reducer->Finish(step));
      std::vector<double> values = {loss_sum, stop_asked ? 1.0 : 0.0};
      if (preference) {
        for (double v : step_metrics.Values()) values.push_back(v);
      }
      torch::Tensor sums = torch::tensor(values, torch::kFloat64);
      FJORD_RETURN_IF_ERROR(world->AllReduceSum(sums, absl::StrCat("the loss of step ", step + 1)));
      loss_sum = sums[0].item<double>();
      stop_asked = sums[1].item<double>() > 0;
      if (preference) {
        step_metrics = PreferenceMetrics::FromValues(std::vector<double>(
            sums.data_ptr<double>() + 2, sums.data_ptr<double>() + sums.numel()));
      }
    }
    if (options.on_gradients) options.on_gradients(step, trainable);
    const double grad_norm = ClipGradNorm(params, cfg.training.max_grad_norm);
    optimizer.Step(lr);
    ++step;
    trained_tokens += step_trained;

    const auto now = Clock::now();
    train_seconds += std::chrono::duration<double>(now - step_started).count();
    const double elapsed =
        std::chrono::duration<double>(now - started).count();  // wall, for the ETA
    TrainEvent e;
    e.type = TrainEvent::Type::kStep;
    e.step = step;
    e.total_steps = total_steps;
    e.epoch = epoch;
    e.loss = preference         ? loss_sum
             : step_trained > 0 ? loss_sum / static_cast<double>(step_trained)
                                : 0.0;
    if (preference) e.metrics = step_metrics.Named(pref.loss.method, "");
    if (shard_group != nullptr) {
      // The base's all-gathers this step: what this rank received.
      const int64_t gathered = shard_group->received_bytes();
      e.metrics.emplace_back("base_gather_bytes", static_cast<double>(gathered - gathered_before));
    }
    e.lr = lr;
    e.grad_norm = grad_norm;
    e.tokens_per_s =
        train_seconds > 0 ? static_cast<double>(tokens_since_start) / train_seconds : 0.0;
    e.eta_s =
        elapsed / static_cast<double>(step - first_step) * static_cast<double>(total_steps - step);
    e.trained_tokens = trained_tokens;
    e.peak_memory_bytes = PeakMemoryBytes(device);
    emit(e);

    if (has_validation && cfg.eval.every_steps > 0 && step % cfg.eval.every_steps == 0 &&
        step < total_steps) {
      FJORD_RETURN_IF_ERROR(run_eval(step).status());
    }
    // One process reads the flag now (a stop asked during this step's events
    // counts); ranks use the vote taken with the gradients, the same on all.
    const bool asked_now =
        world != nullptr ? stop_asked
                         : options.stop_requested != nullptr && options.stop_requested->load();
    const bool stop = asked_now || (options.stop_after_steps > 0 &&
                                    step >= options.stop_after_steps && step < total_steps);
    if (stop || (cfg.checkpoint.every_steps > 0 && step % cfg.checkpoint.every_steps == 0) ||
        step == total_steps) {
      FJORD_RETURN_IF_ERROR(write_checkpoint(step));
    }
    if (stop && step < total_steps) {
      record_reducer();
      result.steps = step;
      result.stopped = true;
      return result;
    }
  }

  // ---- The end: evaluation and the final adapter -----------------------------------
  record_reducer();
  result.steps = step;
  if (has_validation) {
    FJORD_ASSIGN_OR_RETURN(EvalResult er, run_eval(step));
    result.final_eval_loss = er.loss;
    result.final_eval_token_accuracy = er.token_accuracy;
    result.final_eval_metrics = eval_metrics;
  }
  if (!cfg.eval.heldout.empty()) {
    FJORD_ASSIGN_OR_RETURN(result.final_heldout_accuracy, run_heldout());
  }
  result.adapter_dir = cfg.output.dir + "/adapter";
  if (is_main) FJORD_RETURN_IF_ERROR(SaveFinalAdapter(adapter, result.adapter_dir));
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
    case TrainEvent::Type::kStart:
      return "start";
    case TrainEvent::Type::kStep:
      return "step";
    case TrainEvent::Type::kEval:
      return "eval";
    case TrainEvent::Type::kCheckpoint:
      return "checkpoint";
    case TrainEvent::Type::kLog:
      return "log";
    case TrainEvent::Type::kDone:
      return "done";
  }
  return "log";
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

void ResetPeakMemory(const torch::Device& device) {
#if FJORD_KERNELS_FUSED
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
#else
  (void)device;
#endif
}

absl::StatusOr<TrainResult> RunTraining(const TrainingConfig& config, const TrainOptions& options) {
  try {
    return RunTrainingImpl(config, options);
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("LibTorch error during training: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("error during training: ", e.what()));
  }
}

}  // namespace fjord::train
