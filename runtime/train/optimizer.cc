#include "runtime/train/optimizer.h"

#include <cmath>

#include <torch/utils.h>

#include "absl/strings/str_cat.h"

namespace fjord::train {

AdamW::AdamW(std::vector<std::pair<std::string, torch::Tensor>> params, AdamWOptions options)
    : options_(options) {
  for (auto& [name, p] : params) {
    auto opts = p.options().dtype(torch::kFloat32);
    slots_.push_back({name, p, torch::zeros(p.sizes(), opts), torch::zeros(p.sizes(), opts)});
  }
}

void AdamW::Step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(step_));
  const double bias2 = 1.0 - std::pow(b2, static_cast<double>(step_));
  const double step_size = lr / bias1;
  const double bias2_sqrt = std::sqrt(bias2);
  for (Slot& s : slots_) {
    const torch::Tensor& g_raw = s.param.grad();
    if (!g_raw.defined()) continue;
    torch::Tensor g = g_raw.to(torch::kFloat32);
    if (options_.weight_decay != 0.0) s.param.mul_(1.0 - lr * options_.weight_decay);
    s.exp_avg.mul_(b1).add_(g, 1.0 - b1);
    s.exp_avg_sq.mul_(b2).addcmul_(g, g, 1.0 - b2);
    torch::Tensor denom = (s.exp_avg_sq.sqrt() / bias2_sqrt).add_(options_.eps);
    torch::Tensor update = (s.exp_avg / denom) * step_size;
    s.param.sub_(update.to(s.param.scalar_type()));
  }
}

void AdamW::ZeroGrad() {
  for (Slot& s : slots_) {
    if (s.param.grad().defined()) s.param.mutable_grad() = torch::Tensor();
  }
}

std::vector<std::pair<std::string, torch::Tensor>> AdamW::StateTensors() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const Slot& s : slots_) {
    out.emplace_back(s.name + ".exp_avg", s.exp_avg);
    out.emplace_back(s.name + ".exp_avg_sq", s.exp_avg_sq);
  }
  out.emplace_back("step", torch::tensor(step_, torch::kInt64));
  return out;
}

absl::Status AdamW::LoadStateTensors(const std::map<std::string, torch::Tensor>& state) {
  auto step_it = state.find("step");
  if (step_it == state.end() || step_it->second.numel() != 1) {
    return absl::InvalidArgumentError("optimizer state: tensor 'step' missing");
  }
  // Check everything before changing anything.
  for (const Slot& s : slots_) {
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      auto it = state.find(s.name + suffix);
      if (it == state.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("optimizer state: tensor '", s.name, suffix, "' missing"));
      }
      if (it->second.sizes() != s.param.sizes()) {
        return absl::InvalidArgumentError(
            absl::StrCat("optimizer state: tensor '", s.name, suffix, "' has the wrong shape"));
      }
    }
  }
  torch::NoGradGuard no_grad;
  for (Slot& s : slots_) {
    s.exp_avg.copy_(state.at(s.name + ".exp_avg"));
    s.exp_avg_sq.copy_(state.at(s.name + ".exp_avg_sq"));
  }
  step_ = step_it->second.item<int64_t>();
  return absl::OkStatus();
}

double LearningRate(const std::string& schedule, double peak, int64_t step, int64_t total,
                    int64_t warmup, double min_ratio) {
  if (warmup > 0 && step < warmup)
    return peak * static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (schedule == "constant") return peak;
  const int64_t decay_steps = std::max<int64_t>(1, total - warmup);
  const double progress =
      std::min(1.0, static_cast<double>(step - warmup) / static_cast<double>(decay_steps));
  const double floor = peak * min_ratio;
  if (schedule == "linear") return floor + (peak - floor) * (1.0 - progress);
  // cosine
  return floor + (peak - floor) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

double ClipGradNorm(const std::vector<torch::Tensor>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  for (const auto& p : params) {
    if (p.grad().defined()) norms.push_back(p.grad().to(torch::kFloat32).norm());
  }
  if (norms.empty()) return 0.0;
  const double norm = torch::stack(norms).norm().item<double>();  // one device sync
  if (max_norm > 0 && norm > max_norm) {
    const double scale = max_norm / (norm + 1e-6);
    for (const auto& p : params) {
      if (p.grad().defined()) p.mutable_grad().mul_(scale);
    }
  }
  return norm;
}

}  // namespace fjord::train
