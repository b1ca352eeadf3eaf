#include "runtime/kernels/compare.h"

#include <sstream>
#include <string>

#include <torch/autograd.h>
#include <torch/utils.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/util/status_macros.h"

namespace fjord::kernels {

Tolerance DefaultTolerance(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return {1e-5, 1e-4};
    case torch::kBFloat16:
      return {2e-2, 2e-2};
    case torch::kFloat16:
      return {2e-3, 2e-3};
    default:
      return {0, 0};
  }
}

absl::Status CheckClose(const torch::Tensor& actual, const torch::Tensor& expected, Tolerance tol,
                        const std::string& what) {
  try {
    if (!actual.defined() || !expected.defined()) {
      if (actual.defined() == expected.defined()) return absl::OkStatus();
      return absl::InvalidArgumentError(absl::StrCat(what, ": one tensor is undefined (actual ",
                                                     actual.defined() ? "defined" : "undefined",
                                                     ")"));
    }
    if (actual.sizes() != expected.sizes()) {
      std::ostringstream os;
      os << what << ": shape " << actual.sizes() << " != expected " << expected.sizes();
      return absl::InvalidArgumentError(os.str());
    }
    if (actual.numel() == 0) return absl::OkStatus();
    torch::NoGradGuard no_grad;
    torch::Tensor a = actual.detach().to(torch::kCPU, torch::kFloat64).flatten();
    torch::Tensor e = expected.detach().to(torch::kCPU, torch::kFloat64).flatten();
    torch::Tensor bound = tol.atol + tol.rtol * e.abs();
    torch::Tensor err = (a - e).abs();
    // Equal values pass (covers equal infinities, whose difference is NaN).
    torch::Tensor ok = (a == e) | (err <= bound);
    const int64_t failed = (~ok).sum().item<int64_t>();
    if (failed == 0) return absl::OkStatus();
    // Worst element: largest excess over the bound; NaNs count as worst.
    torch::Tensor excess = torch::where(ok, torch::full_like(err, -1.0),
                                        torch::nan_to_num(err - bound, 1e300, 1e300, 1e300));
    const int64_t i = excess.argmax().item<int64_t>();
    return absl::InternalError(absl::StrFormat(
        "%s: %d of %d elements out of tolerance (atol %g, rtol %g); worst at flat index %d: "
        "got %.8g, expected %.8g (|diff| %.3g > %.3g)",
        what, failed, a.numel(), tol.atol, tol.rtol, i, a[i].item<double>(), e[i].item<double>(),
        err[i].item<double>(), bound[i].item<double>()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": comparison failed: ", e.what()));
  }
}

namespace {

std::vector<torch::Tensor> LeafCopies(const std::vector<torch::Tensor>& inputs) {
  std::vector<torch::Tensor> copies;
  copies.reserve(inputs.size());
  for (const torch::Tensor& t : inputs) {
    if (!t.defined()) {
      copies.emplace_back();
      continue;
    }
    torch::Tensor c = t.detach().clone();
    if (t.requires_grad()) c.requires_grad_(true);
    copies.push_back(c);
  }
  return copies;
}

// Gradients of `outputs` (with `grad_outputs`) w.r.t. each input that
// requires grad; undefined entries for the others and for unused inputs.
std::vector<torch::Tensor> Grads(const std::vector<torch::Tensor>& outputs,
                                 const std::vector<torch::Tensor>& grad_outputs,
                                 const std::vector<torch::Tensor>& inputs) {
  std::vector<torch::Tensor> wrt;
  std::vector<size_t> index;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].defined() && inputs[i].requires_grad()) {
      wrt.push_back(inputs[i]);
      index.push_back(i);
    }
  }
  std::vector<torch::Tensor> outs;
  std::vector<torch::Tensor> gouts;
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (outputs[i].defined() && outputs[i].requires_grad()) {
      outs.push_back(outputs[i]);
      gouts.push_back(grad_outputs[i]);
    }
  }
  std::vector<torch::Tensor> result(inputs.size());
  if (wrt.empty() || outs.empty()) return result;
  std::vector<torch::Tensor> g = torch::autograd::grad(outs, wrt, gouts, /*retain_graph=*/false,
                                                       /*create_graph=*/false,
                                                       /*allow_unused=*/true);
  for (size_t j = 0; j < g.size(); ++j) result[index[j]] = g[j];
  return result;
}

// `t` with atol multiplied by max(1, max |ref|).
Tolerance ScaledToMagnitude(Tolerance t, const torch::Tensor& ref) {
  double m = 1;
  if (ref.defined() && ref.numel() > 0) {
    m = ref.detach().abs().max().to(torch::kCPU, torch::kFloat64).item<double>();
    if (!(m > 1)) m = 1;  // also for NaN
  }
  return {t.atol * m, t.rtol};
}

}  // namespace

absl::Status CompareWithReference(const std::string& what, const std::vector<torch::Tensor>& inputs,
                                  const TensorFn& fused, const TensorFn& reference,
                                  Tolerance out_tol, Tolerance grad_tol) {
  try {
    std::vector<torch::Tensor> in_f = LeafCopies(inputs);
    std::vector<torch::Tensor> in_r = LeafCopies(inputs);
    std::vector<torch::Tensor> out_f = fused(in_f);
    std::vector<torch::Tensor> out_r = reference(in_r);
    if (out_f.size() != out_r.size()) {
      return absl::InternalError(absl::StrCat(what, ": fused returned ", out_f.size(),
                                              " outputs, reference ", out_r.size()));
    }
    for (size_t i = 0; i < out_f.size(); ++i) {
      FJORD_RETURN_IF_ERROR(CheckClose(out_f[i], out_r[i], ScaledToMagnitude(out_tol, out_r[i]),
                                       absl::StrCat(what, " output ", i)));
    }
    std::vector<torch::Tensor> grad_outputs;
    for (const torch::Tensor& o : out_r) {
      // Drawn on the CPU so that only the CPU generator is consumed.
      grad_outputs.push_back(
          o.defined() ? torch::randn(o.sizes(), torch::kFloat32).to(o.device(), o.scalar_type())
                      : torch::Tensor());
    }
    std::vector<torch::Tensor> g_f = Grads(out_f, grad_outputs, in_f);
    std::vector<torch::Tensor> g_r = Grads(out_r, grad_outputs, in_r);
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (!inputs[i].defined() || !inputs[i].requires_grad()) continue;
      // An unused input has no gradient: treat it as zeros on both sides.
      torch::Tensor gf = g_f[i].defined() ? g_f[i] : torch::zeros_like(inputs[i]);
      torch::Tensor gr = g_r[i].defined() ? g_r[i] : torch::zeros_like(inputs[i]);
      FJORD_RETURN_IF_ERROR(CheckClose(gf, gr, ScaledToMagnitude(grad_tol, gr),
                                       absl::StrCat(what, " grad of input ", i)));
    }
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(what, ": threw: ", e.what()));
  }
}

}  // namespace fjord::kernels
