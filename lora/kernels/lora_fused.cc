// Fused LoRA linear (single and grouped) as LibTorch autograd functions over
// cuBLAS GEMMs and lora_dropout.cu. See lora_fused.h for what is computed,
// saved and never materialised.
//
// Shape legend: N tokens, in, out features, r rank (R = Σ r_i in a group).
#include "lora/kernels/lora_fused.h"

#include <limits>
#include <stdexcept>

#include <torch/autograd.h>

#include "runtime/kernels/fused.h"

#if FJORD_KERNELS_FUSED
#include "lora/kernels/lora_launchers.h"
#include "runtime/kernels/launchers.h"
#include "runtime/kernels/torch_cuda.h"
#endif

namespace fjord::lora::kernels::fused {

#if FJORD_KERNELS_FUSED

namespace {

namespace kc = ::fjord::kernels::cuda;
namespace tc = ::fjord::kernels::torch_cuda;
using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::vector<int64_t> OutShape(const Tensor& x, int64_t out) {
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = out;
  return shape;
}

uint64_t DrawSeed() {
  // From the default CPU generator: reproducible under torch::manual_seed.
  return static_cast<uint64_t>(
      torch::randint(std::numeric_limits<int64_t>::max(), {1}, torch::kInt64).item<int64_t>());
}

// x2 with the dropout mask of `seed` applied: a new (N, in) tensor.
Tensor Dropped(const Tensor& x2, double p, uint64_t seed) {
  Tensor xd = torch::empty_like(x2);
  cuda::DropoutForward(x2.data_ptr(), xd.data_ptr(), x2.numel(), static_cast<float>(p), seed,
                       tc::Tag(x2), tc::Stream());
  return xd;
}

// C (m, n) = alpha·op(A)·op(B) + beta·C on the current stream; see
// runtime/kernels/launchers.h for the argument conventions.
void Gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const void* a,
          int64_t lda, const void* b, int64_t ldb, kc::DType ab, double beta, void* c, int64_t ldc,
          kc::DType ct) {
  kc::Gemm(tc::Blas(), tc::Stream(), ta, tb, m, n, k, static_cast<float>(alpha), a, lda, b, ldb, ab,
           static_cast<float>(beta), c, ldc, ct);
}

// The base projection x2·Wᵀ + bias (N, out), through LibTorch (cuBLASLt,
// bias in the epilogue). Contiguous.
Tensor Base(const Tensor& x2, const Tensor& weight, const Tensor& bias) {
  Tensor y = bias.defined() ? torch::addmm(bias, x2, weight.t()) : torch::mm(x2, weight.t());
  return y.is_contiguous() ? y : y.contiguous();
}

// ------------------------------------------------------------ Single

struct LoraLinearFn : public torch::autograd::Function<LoraLinearFn> {
  // x: (..., in); weight: (out, in); bias: (out) if given; a: (r, in);
  // b: (out, r). dropout_p > 0 means dropout is active with `seed`.
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const std::optional<Tensor>& bias, const Tensor& a, const Tensor& b,
                        double scale, double dropout_p, int64_t seed) {
    c10::cuda::CUDAGuard guard(x.device());
    const int64_t in = weight.size(1);
    const int64_t out = weight.size(0);
    const int64_t r = a.size(0);
    const auto dt = x.scalar_type();
    const kc::DType tag = tc::Tag(x);
    Tensor x2 = x.reshape({-1, in}).contiguous();  // (N, in)
    const int64_t n = x2.size(0);
    Tensor w = weight.contiguous();     // (out, in)
    Tensor ac = a.to(dt).contiguous();  // (r, in)
    Tensor bc = b.to(dt).contiguous();  // (out, r)

    Tensor y = Base(x2, w, bias.has_value() ? *bias : Tensor());  // (N, out)
    Tensor xd = dropout_p > 0 ? Dropped(x2, dropout_p, static_cast<uint64_t>(seed)) : x2;
    Tensor xa = torch::empty({n, r}, x2.options());  // (N, r)
    Gemm(false, true, n, r, in, 1.0, xd.data_ptr(), in, ac.data_ptr(), in, tag, 0.0, xa.data_ptr(),
         r, tag);
    Gemm(false, true, n, out, r, scale, xa.data_ptr(), r, bc.data_ptr(), r, tag, 1.0, y.data_ptr(),
         out, tag);

    ctx->save_for_backward({x2, xa, w, ac, bc});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["p"] = dropout_p;
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["x_shape"] = x.sizes().vec();
    ctx->saved_data["a_dtype"] = static_cast<int64_t>(a.scalar_type());
    ctx->saved_data["b_dtype"] = static_cast<int64_t>(b.scalar_type());
    return y.view(OutShape(x, out));
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& x2 = saved[0];  // (N, in)
    const Tensor& xa = saved[1];  // (N, r)
    const Tensor& w = saved[2];   // (out, in)
    const Tensor& ac = saved[3];  // (r, in)
    const Tensor& bc = saved[4];  // (out, r)
    c10::cuda::CUDAGuard guard(x2.device());
    const double scale = ctx->saved_data["scale"].toDouble();
    const double p = ctx->saved_data["p"].toDouble();
    const uint64_t seed = static_cast<uint64_t>(ctx->saved_data["seed"].toInt());
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const auto a_dtype = static_cast<torch::ScalarType>(ctx->saved_data["a_dtype"].toInt());
    const auto b_dtype = static_cast<torch::ScalarType>(ctx->saved_data["b_dtype"].toInt());
    const int64_t n = x2.size(0);
    const int64_t in = x2.size(1);
    const int64_t out = w.size(0);
    const int64_t r = ac.size(0);
    const kc::DType tag = tc::Tag(x2);

    // Input-variable indices: x, weight, [bias], a, b.
    const size_t hb = has_bias ? 1 : 0;
    const bool need_x = ctx->needs_input_grad(0);
    const bool need_w = ctx->needs_input_grad(1);
    const bool need_bias = has_bias && ctx->needs_input_grad(2);
    const bool need_a = ctx->needs_input_grad(2 + hb);
    const bool need_b = ctx->needs_input_grad(3 + hb);

    Tensor dy = grads[0].reshape({-1, out}).contiguous();  // (N, out)
    Tensor dx, dw, dbias, da, db;
    Tensor dxa;  // (N, r)
    if (need_a || need_x) {
      dxa = torch::empty({n, r}, x2.options());
      Gemm(false, false, n, r, out, scale, dy.data_ptr(), out, bc.data_ptr(), r, tag, 0.0,
           dxa.data_ptr(), r, tag);
    }
    if (need_b) {
      db = torch::empty({out, r}, x2.options().dtype(torch::kFloat32));  // (out, r)
      Gemm(true, false, out, r, n, scale, dy.data_ptr(), out, xa.data_ptr(), r, tag, 0.0,
           db.data_ptr(), r, kc::DType::kF32);
      db = db.to(b_dtype);
    }
    if (need_a) {
      Tensor xd = p > 0 ? Dropped(x2, p, seed) : x2;
      da = torch::empty({r, in}, x2.options().dtype(torch::kFloat32));  // (r, in)
      Gemm(true, false, r, in, n, 1.0, dxa.data_ptr(), r, xd.data_ptr(), in, tag, 0.0,
           da.data_ptr(), in, kc::DType::kF32);
      da = da.to(a_dtype);
    }
    if (need_x) {
      dx = torch::empty({n, in}, x2.options());  // (N, in)
      Gemm(false, false, n, in, out, 1.0, dy.data_ptr(), out, w.data_ptr(), in, tag, 0.0,
           dx.data_ptr(), in, tag);
      if (p > 0) {
        Tensor t = torch::empty({n, in}, x2.options());
        Gemm(false, false, n, in, r, 1.0, dxa.data_ptr(), r, ac.data_ptr(), in, tag, 0.0,
             t.data_ptr(), in, tag);
        cuda::DropoutMaskedAdd(dx.data_ptr(), t.data_ptr(), n * in, static_cast<float>(p), seed,
                               tag, tc::Stream());
      } else {
        Gemm(false, false, n, in, r, 1.0, dxa.data_ptr(), r, ac.data_ptr(), in, tag, 1.0,
             dx.data_ptr(), in, tag);
      }
      dx = dx.view(ctx->saved_data["x_shape"].toIntVector());
    }
    if (need_w) dw = torch::mm(dy.t(), x2);
    if (need_bias) dbias = dy.sum(0);
    return {dx, dw, dbias, da, db, Tensor(), Tensor(), Tensor()};
  }
};

// ------------------------------------------------------------ Grouped

struct LoraGroupedFn : public torch::autograd::Function<LoraGroupedFn> {
  // x: (..., in); weights[i]: (out_i, in); biases: the defined biases, of
  // projections bias_owner[j]; as[i]: (r_i, in); bs[i]: (out_i, r_i).
  static variable_list forward(AutogradContext* ctx, const Tensor& x, torch::TensorList weights,
                               torch::TensorList biases, torch::TensorList as, torch::TensorList bs,
                               const std::vector<int64_t>& bias_owner,
                               const std::vector<double>& scales) {
    c10::cuda::CUDAGuard guard(x.device());
    const int64_t k = static_cast<int64_t>(weights.size());
    const int64_t in = x.size(-1);
    const auto dt = x.scalar_type();
    const kc::DType tag = tc::Tag(x);
    Tensor x2 = x.reshape({-1, in}).contiguous();  // (N, in)
    const int64_t n = x2.size(0);

    std::vector<int64_t> ranks;
    std::vector<Tensor> a_parts;
    for (const Tensor& a : as) {
      ranks.push_back(a.size(0));
      a_parts.push_back(a.to(dt));
    }
    Tensor a_cat = torch::cat(a_parts, 0).contiguous();  // (R, in)
    const int64_t rt = a_cat.size(0);
    Tensor xa = torch::empty({n, rt}, x2.options());  // (N, R): every adapter's x·Aᵀ
    Gemm(false, true, n, rt, in, 1.0, x2.data_ptr(), in, a_cat.data_ptr(), in, tag, 0.0,
         xa.data_ptr(), rt, tag);

    std::vector<Tensor> bias_of(k);
    for (size_t j = 0; j < bias_owner.size(); ++j) bias_of[bias_owner[j]] = biases[j];
    variable_list ys;
    std::vector<Tensor> to_save = {x2, xa, a_cat};
    int64_t offset = 0;
    for (int64_t i = 0; i < k; ++i) {
      const int64_t out = weights[i].size(0);
      const int64_t r = ranks[i];
      Tensor w = weights[i].contiguous();
      Tensor bc = bs[i].to(dt).contiguous();  // (out_i, r_i)
      Tensor y = Base(x2, w, bias_of[i]);     // (N, out_i)
      // y += s_i · xa[:, offset:offset + r_i] · B_iᵀ (xa's rows have stride R).
      Gemm(false, true, n, out, r, scales[i], xa.narrow(1, offset, r).data_ptr(), rt, bc.data_ptr(),
           r, tag, 1.0, y.data_ptr(), out, tag);
      ys.push_back(y.view(OutShape(x, out)));
      to_save.push_back(w);
      to_save.push_back(bc);
      offset += r;
    }
    ctx->save_for_backward(to_save);
    ctx->saved_data["scales"] = scales;
    ctx->saved_data["ranks"] = ranks;
    ctx->saved_data["bias_owner"] = bias_owner;
    ctx->saved_data["x_shape"] = x.sizes().vec();
    std::vector<int64_t> a_dtypes, b_dtypes;
    for (const Tensor& a : as) a_dtypes.push_back(static_cast<int64_t>(a.scalar_type()));
    for (const Tensor& b : bs) b_dtypes.push_back(static_cast<int64_t>(b.scalar_type()));
    ctx->saved_data["a_dtypes"] = a_dtypes;
    ctx->saved_data["b_dtypes"] = b_dtypes;
    return ys;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& x2 = saved[0];     // (N, in)
    const Tensor& xa = saved[1];     // (N, R)
    const Tensor& a_cat = saved[2];  // (R, in)
    c10::cuda::CUDAGuard guard(x2.device());
    const std::vector<double> scales = ctx->saved_data["scales"].toDoubleVector();
    const std::vector<int64_t> ranks = ctx->saved_data["ranks"].toIntVector();
    const std::vector<int64_t> bias_owner = ctx->saved_data["bias_owner"].toIntVector();
    const std::vector<int64_t> a_dtypes = ctx->saved_data["a_dtypes"].toIntVector();
    const std::vector<int64_t> b_dtypes = ctx->saved_data["b_dtypes"].toIntVector();
    const int64_t k = static_cast<int64_t>(ranks.size());
    const int64_t nb = static_cast<int64_t>(bias_owner.size());
    const int64_t n = x2.size(0);
    const int64_t in = x2.size(1);
    const int64_t rt = a_cat.size(0);
    const kc::DType tag = tc::Tag(x2);

    // Input-variable indices: x, weights[k], biases[nb], as[k], bs[k].
    const bool need_x = ctx->needs_input_grad(0);
    auto need_w = [&](int64_t i) { return ctx->needs_input_grad(1 + i); };
    auto need_bias = [&](int64_t j) { return ctx->needs_input_grad(1 + k + j); };
    auto need_a = [&](int64_t i) { return ctx->needs_input_grad(1 + k + nb + i); };
    auto need_b = [&](int64_t i) { return ctx->needs_input_grad(1 + 2 * k + nb + i); };
    bool any_a = false;
    for (int64_t i = 0; i < k; ++i) any_a = any_a || need_a(i);

    std::vector<Tensor> dys;
    for (int64_t i = 0; i < k; ++i) {
      const int64_t out = saved[3 + 2 * i].size(0);
      dys.push_back(grads[i].reshape({-1, out}).contiguous());  // (N, out_i)
    }

    // dxa for all adapters, side by side (N, R).
    Tensor dxa;
    if (any_a || need_x) {
      dxa = torch::empty({n, rt}, x2.options());
      int64_t offset = 0;
      for (int64_t i = 0; i < k; ++i) {
        const Tensor& bc = saved[4 + 2 * i];
        const int64_t out = bc.size(0);
        Gemm(false, false, n, ranks[i], out, scales[i], dys[i].data_ptr(), out, bc.data_ptr(),
             ranks[i], tag, 0.0, dxa.narrow(1, offset, ranks[i]).data_ptr(), rt, tag);
        offset += ranks[i];
      }
    }

    std::vector<Tensor> dws(k), dbs(k), das(k);
    std::vector<Tensor> dbiases(nb);
    int64_t offset = 0;
    for (int64_t i = 0; i < k; ++i) {
      const Tensor& w = saved[3 + 2 * i];
      const int64_t out = w.size(0);
      const int64_t r = ranks[i];
      if (need_b(i)) {
        Tensor db = torch::empty({out, r}, x2.options().dtype(torch::kFloat32));  // (out_i, r_i)
        Gemm(true, false, out, r, n, scales[i], dys[i].data_ptr(), out,
             xa.narrow(1, offset, r).data_ptr(), rt, tag, 0.0, db.data_ptr(), r, kc::DType::kF32);
        dbs[i] = db.to(static_cast<torch::ScalarType>(b_dtypes[i]));
      }
      if (need_w(i)) dws[i] = torch::mm(dys[i].t(), x2);
      offset += r;
    }
    for (int64_t j = 0; j < nb; ++j) {
      if (need_bias(j)) dbiases[j] = dys[bias_owner[j]].sum(0);
    }
    if (any_a) {
      // One GEMM for every dA: (R, in) = dxaᵀ·x.
      Tensor da = torch::empty({rt, in}, x2.options().dtype(torch::kFloat32));
      Gemm(true, false, rt, in, n, 1.0, dxa.data_ptr(), rt, x2.data_ptr(), in, tag, 0.0,
           da.data_ptr(), in, kc::DType::kF32);
      int64_t row = 0;
      for (int64_t i = 0; i < k; ++i) {
        if (need_a(i)) {
          // A fresh tensor per adapter (copy = true), not a view into da.
          das[i] = da.narrow(0, row, ranks[i])
                       .to(static_cast<torch::ScalarType>(a_dtypes[i]), /*non_blocking=*/false,
                           /*copy=*/true);
        }
        row += ranks[i];
      }
    }
    Tensor dx;
    if (need_x) {
      // dx = Σ dy_i·W_i + dxa·[A_0; A_1; ...], accumulated in one buffer.
      dx = torch::empty({n, in}, x2.options());
      for (int64_t i = 0; i < k; ++i) {
        const Tensor& w = saved[3 + 2 * i];
        Gemm(false, false, n, in, w.size(0), 1.0, dys[i].data_ptr(), w.size(0), w.data_ptr(), in,
             tag, i == 0 ? 0.0 : 1.0, dx.data_ptr(), in, tag);
      }
      Gemm(false, false, n, in, rt, 1.0, dxa.data_ptr(), rt, a_cat.data_ptr(), in, tag, 1.0,
           dx.data_ptr(), in, tag);
      dx = dx.view(ctx->saved_data["x_shape"].toIntVector());
    }

    variable_list result;
    result.push_back(dx);
    for (const Tensor& t : dws) result.push_back(t);
    for (const Tensor& t : dbiases) result.push_back(t);
    for (const Tensor& t : das) result.push_back(t);
    for (const Tensor& t : dbs) result.push_back(t);
    result.emplace_back();  // bias_owner
    result.emplace_back();  // scales
    return result;
  }
};

bool IsAdapterDType(torch::ScalarType t) { return tc::IsKernelDType(t); }

}  // namespace

bool LoraLinearSupported(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& a,
                         const Tensor& b, double dropout_p) {
  if (!x.defined() || !weight.defined() || !a.defined() || !b.defined()) return false;
  if (!x.is_cuda() || !tc::AllOn(x.device(), {weight, bias, a, b})) return false;
  if (!tc::IsKernelDType(x.scalar_type()) || weight.scalar_type() != x.scalar_type()) return false;
  if (bias.defined() && (bias.scalar_type() != x.scalar_type() || bias.dim() != 1)) return false;
  if (!IsAdapterDType(a.scalar_type()) || !IsAdapterDType(b.scalar_type())) return false;
  if (x.dim() < 1 || weight.dim() != 2 || a.dim() != 2 || b.dim() != 2) return false;
  const int64_t out = weight.size(0);
  const int64_t in = weight.size(1);
  const int64_t r = a.size(0);
  if (in == 0 || out == 0 || r == 0) return false;
  if (x.size(-1) != in || a.size(1) != in || b.size(0) != out || b.size(1) != r) return false;
  if (bias.defined() && bias.size(0) != out) return false;
  return dropout_p >= 0.0 && dropout_p < 1.0;
}

Tensor LoraLinear(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& a,
                  const Tensor& b, double scale, double dropout_p, bool training,
                  std::optional<uint64_t> seed) {
  TORCH_CHECK(LoraLinearSupported(x, weight, bias, a, b, dropout_p),
              "fused LoraLinear: unsupported arguments x ", x.sizes(), " ", x.scalar_type(),
              ", weight ", weight.sizes(), ", a ", a.sizes(), ", b ", b.sizes(), ", dropout ",
              dropout_p);
  const double p = training ? dropout_p : 0.0;
  const uint64_t s = p > 0 ? (seed.has_value() ? *seed : DrawSeed()) : 0;
  std::optional<Tensor> bias_opt;
  if (bias.defined()) bias_opt = bias;
  return LoraLinearFn::apply(x, weight, bias_opt, a, b, scale, p, static_cast<int64_t>(s));
}

bool LoraLinearGroupedSupported(const Tensor& x, const std::vector<LoraProjection>& projections,
                                double dropout_p) {
  if (projections.empty()) return false;
  for (const LoraProjection& pr : projections) {
    if (!LoraLinearSupported(x, pr.weight, pr.bias, pr.a, pr.b, dropout_p)) return false;
  }
  return true;
}

std::vector<Tensor> LoraLinearGrouped(const Tensor& x,
                                      const std::vector<LoraProjection>& projections,
                                      double dropout_p, bool training) {
  TORCH_CHECK(LoraLinearGroupedSupported(x, projections, dropout_p),
              "fused LoraLinearGrouped: unsupported arguments (x ", x.sizes(), ", ",
              projections.size(), " projections)");
  const double p = training ? dropout_p : 0.0;
  if (p > 0) {
    // Independent masks per projection: no shared xa.
    std::vector<Tensor> ys;
    for (const LoraProjection& pr : projections) {
      ys.push_back(LoraLinear(x, pr.weight, pr.bias, pr.a, pr.b, pr.scale, p, true));
    }
    return ys;
  }
  std::vector<Tensor> weights, biases, as, bs;
  std::vector<int64_t> bias_owner;
  std::vector<double> scales;
  for (size_t i = 0; i < projections.size(); ++i) {
    const LoraProjection& pr = projections[i];
    weights.push_back(pr.weight);
    if (pr.bias.defined()) {
      biases.push_back(pr.bias);
      bias_owner.push_back(static_cast<int64_t>(i));
    }
    as.push_back(pr.a);
    bs.push_back(pr.b);
    scales.push_back(pr.scale);
  }
  return LoraGroupedFn::apply(x, torch::TensorList(weights), torch::TensorList(biases),
                              torch::TensorList(as), torch::TensorList(bs), bias_owner, scales);
}

Tensor DropoutMask(int64_t rows, int64_t cols, double p, uint64_t seed,
                   const torch::Device& device) {
  TORCH_CHECK(device.is_cuda(), "DropoutMask: needs a CUDA device");
  c10::cuda::CUDAGuard guard(device);
  Tensor ones = torch::ones({rows, cols}, torch::dtype(torch::kFloat32).device(device));
  return Dropped(ones, p, seed);
}

#else  // !FJORD_KERNELS_FUSED

namespace {
[[noreturn]] void NotBuilt(const char* what) {
  TORCH_CHECK(false, what, ": fjord was built without CUDA kernels");
  throw std::logic_error("unreachable");
}
}  // namespace

bool LoraLinearSupported(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                         const torch::Tensor&, const torch::Tensor&, double) {
  return false;
}
torch::Tensor LoraLinear(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                         const torch::Tensor&, const torch::Tensor&, double, double, bool,
                         std::optional<uint64_t>) {
  NotBuilt("fused LoraLinear");
}
bool LoraLinearGroupedSupported(const torch::Tensor&, const std::vector<LoraProjection>&, double) {
  return false;
}
std::vector<torch::Tensor> LoraLinearGrouped(const torch::Tensor&,
                                             const std::vector<LoraProjection>&, double, bool) {
  NotBuilt("fused LoraLinearGrouped");
}
torch::Tensor DropoutMask(int64_t, int64_t, double, uint64_t, const torch::Device&) {
  NotBuilt("fused DropoutMask");
}

#endif  // FJORD_KERNELS_FUSED

}  // namespace fjord::lora::kernels::fused
