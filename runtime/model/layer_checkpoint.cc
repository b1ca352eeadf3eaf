#include "runtime/model/layer_checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <torch/autograd.h>

#include <mutex>
#include <vector>

#include "runtime/model/shard.h"

namespace fjord::model {
namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The parameters that required grad at call time are passed to the
// autograd Function as inputs, so that autograd routes their gradients.

struct RngSnapshot {
  Tensor cpu;   // CPU generator state
  Tensor cuda;  // CUDA generator state of `cuda_device`, or undefined
  c10::DeviceIndex cuda_device = -1;
};

RngSnapshot TakeRng(const torch::Device& device) {
  RngSnapshot s;
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    s.cpu = gen.get_state();
  }
  if (device.is_cuda()) {
    s.cuda_device = device.has_index() ? device.index() : 0;
    at::Generator gen =
        at::globalContext().defaultGenerator(torch::Device(torch::kCUDA, s.cuda_device));
    std::lock_guard<std::mutex> lock(gen.mutex());
    s.cuda = gen.get_state();
  }
  return s;
}

void RestoreRng(const RngSnapshot& s) {
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s.cpu);
  }
  if (s.cuda.defined()) {
    at::Generator gen =
        at::globalContext().defaultGenerator(torch::Device(torch::kCUDA, s.cuda_device));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s.cuda);
  }
}

// What backward needs besides the saved input.
struct CheckpointState : torch::CustomClassHolder {
  std::shared_ptr<DecoderLayer> layer;
  Tensor cos, sin;  // (B, T, D), (B, T, D)
  AttentionLayout layout;
  std::vector<Tensor> params;  // parameters that required grad at call time
  RngSnapshot rng;
  bool input_requires_grad = false;
};

struct CheckpointedLayerFn : public torch::autograd::Function<CheckpointedLayerFn> {
  // x: (B, T, C); params: the layer's trainable parameters (for autograd's
  // bookkeeping; the layer reads its own). Returns (B, T, C).
  static Tensor forward(AutogradContext* ctx, const Tensor& x, at::TensorList params,
                        c10::intrusive_ptr<CheckpointState> state) {
    state->rng = TakeRng(x.device());
    state->input_requires_grad = x.requires_grad();
    Tensor y = state->layer->forward(x, state->cos, state->sin, state->layout);
    ctx->save_for_backward({x});
    ctx->saved_data["state"] = c10::IValue::make_capsule(state);
    (void)params;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto state =
        c10::static_intrusive_pointer_cast<CheckpointState>(ctx->saved_data["state"].toCapsule());
    Tensor x = ctx->get_saved_variables()[0];
    Tensor x_in = x.detach().requires_grad_(state->input_requires_grad);

    const RngSnapshot now = TakeRng(x.device());
    RestoreRng(state->rng);
    Tensor y;
    {
      torch::AutoGradMode enable(true);
      // A sharded base: the recompute's gathered weights serve its backward
      // too (one gather for both).
      KeepGatheredForBackward keep;
      y = state->layer->forward(x_in, state->cos, state->sin, state->layout);
    }
    RestoreRng(now);

    std::vector<Tensor> inputs;
    if (state->input_requires_grad) inputs.push_back(x_in);
    for (const Tensor& p : state->params) inputs.push_back(p);
    std::vector<Tensor> g;
    if (!inputs.empty() && y.requires_grad()) {
      g = torch::autograd::grad({y}, inputs, {grads[0]}, /*retain_graph=*/false,
                                /*create_graph=*/false, /*allow_unused=*/true);
    } else {
      g.assign(inputs.size(), Tensor());
    }
    variable_list out;
    size_t k = 0;
    out.push_back(state->input_requires_grad ? g[k++] : Tensor());
    for (size_t i = 0; i < state->params.size(); ++i) out.push_back(g[k++]);
    out.push_back(Tensor());  // state
    return out;
  }
};

}  // namespace

Tensor CheckpointedLayer(const std::shared_ptr<DecoderLayer>& layer, const Tensor& x,
                         const Tensor& cos, const Tensor& sin, const AttentionLayout& layout) {
  auto state = c10::make_intrusive<CheckpointState>();
  state->layer = layer;
  state->cos = cos;
  state->sin = sin;
  state->layout = layout;
  for (const Tensor& p : layer->parameters()) {
    if (p.requires_grad()) state->params.push_back(p);
  }
  if (!x.requires_grad() && state->params.empty()) {
    return layer->forward(x, cos, sin, layout);  // nothing to differentiate
  }
  const std::vector<Tensor> params = state->params;
  return CheckpointedLayerFn::apply(x, at::TensorList(params), state);
}

}  // namespace fjord::model
