// LibTorch wrappers and custom autograd functions for runtime/kernels' CUDA
// kernels (fused.h). Outputs are allocated through LibTorch's caching
// allocator and every launch goes to the current stream of the inputs'
// device. In a build without CUDA, the functions here throw and the
// XSupported() checks return false.
//
// Shape legend: N tokens, C hidden, B batch, H heads, T tokens, D head dim,
// V vocab.
#include "runtime/kernels/fused.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include <torch/autograd.h>

#if FJORD_KERNELS_FUSED
#include "runtime/kernels/launchers.h"
#include "runtime/kernels/torch_cuda.h"
#endif

namespace fjord::kernels::fused {

#if FJORD_KERNELS_FUSED

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using torch_cuda::Blas;
using torch_cuda::IsKernelDType;
using torch_cuda::Stream;
using torch_cuda::Tag;

constexpr int64_t kIgnoreIndex = -100;

// ---------------------------------------------------------------- RMSNorm

struct RmsNormFn : public torch::autograd::Function<RmsNormFn> {
  // x: (..., C); weight: (C).
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight, double eps,
                        bool gemma) {
    c10::cuda::CUDAGuard guard(x.device());
    const int64_t cols = x.size(-1);
    Tensor x2 = x.contiguous().view({-1, cols});                                    // (N, C)
    Tensor w = weight.contiguous();                                                 // (C)
    Tensor y = torch::empty_like(x2);                                               // (N, C)
    Tensor rstd = torch::empty({x2.size(0)}, x2.options().dtype(torch::kFloat32));  // (N)
    cuda::RmsNormForward(x2.data_ptr(), w.data_ptr(), y.data_ptr(), rstd.data_ptr<float>(),
                         x2.size(0), cols, static_cast<float>(eps), Tag(x2), Stream(), gemma);
    ctx->save_for_backward({x2, w, rstd});
    ctx->saved_data["shape"] = x.sizes().vec();
    ctx->saved_data["gemma"] = gemma;
    return y.view(x.sizes());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& x2 = saved[0];
    const Tensor& w = saved[1];
    const Tensor& rstd = saved[2];
    c10::cuda::CUDAGuard guard(x2.device());
    const int64_t rows = x2.size(0);
    const int64_t cols = x2.size(1);
    const bool need_dx = ctx->needs_input_grad(0);
    const bool need_dw = ctx->needs_input_grad(1);
    Tensor dy = grads[0].contiguous().view({-1, cols});  // (N, C)
    Tensor dx;
    Tensor dw;
    Tensor partial;
    if (need_dx) dx = torch::empty_like(x2);
    if (need_dw) {
      dw = torch::empty_like(w);
      partial = torch::empty({cuda::RmsNormBackwardScratchSize(rows, cols)},
                             x2.options().dtype(torch::kFloat32));
    }
    cuda::RmsNormBackward(dy.data_ptr(), x2.data_ptr(), w.data_ptr(), rstd.data_ptr<float>(),
                          need_dx ? dx.data_ptr() : nullptr, need_dw ? dw.data_ptr() : nullptr,
                          need_dw ? partial.data_ptr<float>() : nullptr, rows, cols, Tag(x2),
                          Stream(), ctx->saved_data["gemma"].toBool());
    if (need_dx) dx = dx.view(ctx->saved_data["shape"].toIntVector());
    return {dx, dw, Tensor(), Tensor()};
  }
};

// ---------------------------------------------------------------- RoPE

// Applies the rotation (or its adjoint) to x: (B, H, T, D) with unit stride in
// D; returns a contiguous (B, H, T, D) tensor. cos, sin: (B or 1, T, D)
// contiguous in x's dtype.
Tensor RopeOne(const Tensor& x, const Tensor& cos, const Tensor& sin, bool transpose) {
  Tensor xs = x.stride(3) == 1 ? x : x.contiguous();
  Tensor out =
      torch::empty(xs.sizes(), xs.options().memory_format(torch::MemoryFormat::Contiguous));
  const int64_t tokens = xs.size(2);
  const int64_t head_dim = xs.size(3);
  const int64_t cos_sb = cos.size(0) == 1 ? 0 : tokens * head_dim;
  cuda::RopeApply(xs.data_ptr(), xs.stride(0), xs.stride(1), xs.stride(2), out.data_ptr(),
                  cos.data_ptr(), sin.data_ptr(), cos_sb, xs.size(0), xs.size(1), tokens, head_dim,
                  transpose, Tag(xs), Stream());
  return out;
}

struct RopeFn : public torch::autograd::Function<RopeFn> {
  // q: (B, Hq, T, D); k: (B, Hk, T, D); cos, sin: (B or 1, T, D).
  static variable_list forward(AutogradContext* ctx, const Tensor& q, const Tensor& k,
                               const Tensor& cos, const Tensor& sin) {
    c10::cuda::CUDAGuard guard(q.device());
    Tensor c = cos.to(q.scalar_type()).contiguous();
    Tensor s = sin.to(q.scalar_type()).contiguous();
    Tensor q_out = RopeOne(q, c, s, /*transpose=*/false);
    Tensor k_out = RopeOne(k, c, s, /*transpose=*/false);
    ctx->save_for_backward({c, s});
    return {q_out, k_out};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    c10::cuda::CUDAGuard guard(saved[0].device());
    Tensor dq;
    Tensor dk;
    if (ctx->needs_input_grad(0)) dq = RopeOne(grads[0].contiguous(), saved[0], saved[1], true);
    if (ctx->needs_input_grad(1)) dk = RopeOne(grads[1].contiguous(), saved[0], saved[1], true);
    return {dq, dk, Tensor(), Tensor()};
  }
};

// ------------------------------------------------------- SwiGLU, GeGLU

// act(gate)·up with the launchers of glu.cu: SwiGLU (Forward =
// cuda::SwiGluForward, ...) or GeGLU.
using GluForwardFn = void (*)(const void*, const void*, void*, int64_t, cuda::DType, cudaStream_t);
using GluBackwardFn = void (*)(const void*, const void*, const void*, void*, void*, int64_t,
                               cuda::DType, cudaStream_t);

template <GluForwardFn Forward, GluBackwardFn Backward>
struct GluFn : public torch::autograd::Function<GluFn<Forward, Backward>> {
  // gate, up: (..., I).
  static Tensor forward(AutogradContext* ctx, const Tensor& gate, const Tensor& up) {
    c10::cuda::CUDAGuard guard(gate.device());
    Tensor g = gate.contiguous();
    Tensor u = up.contiguous();
    Tensor y = torch::empty_like(g);
    Forward(g.data_ptr(), u.data_ptr(), y.data_ptr(), g.numel(), Tag(g), Stream());
    ctx->save_for_backward({g, u});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& g = saved[0];
    const Tensor& u = saved[1];
    c10::cuda::CUDAGuard guard(g.device());
    Tensor dy = grads[0].contiguous();
    Tensor dg = torch::empty_like(g);
    Tensor du = torch::empty_like(u);
    Backward(dy.data_ptr(), g.data_ptr(), u.data_ptr(), dg.data_ptr(), du.data_ptr(), g.numel(),
             Tag(g), Stream());
    return {dg, du};
  }
};
using SwiGluFn = GluFn<cuda::SwiGluForward, cuda::SwiGluBackward>;
using GeGluFn = GluFn<cuda::GeGluForward, cuda::GeGluBackward>;

// ------------------------------------------------ Linear + cross-entropy

struct LceResult {
  Tensor loss;     // 0-dim fp32
  Tensor dhidden;  // (N, C) unscaled, or undefined
  Tensor dweight;  // (V, C) unscaled, or undefined
};

// The chunk loop. hidden: (N, C) contiguous; weight: (V, C) contiguous;
// labels: (N) int64 contiguous, validated.
LceResult RunChunks(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
                    int64_t chunk_tokens, bool want_dhidden, bool want_dweight) {
  const int64_t n = hidden.size(0);
  const int64_t c = hidden.size(1);
  const int64_t v = weight.size(0);
  const bool want_grad = want_dhidden || want_dweight;
  const int64_t chunk =
      chunk_tokens <= 0 ? std::max<int64_t>(n, 1) : std::min(chunk_tokens, std::max<int64_t>(n, 1));
  const cuda::DType tag = Tag(hidden);
  cudaStream_t stream = Stream();
  cublasHandle_t blas = Blas();

  Tensor losses = torch::empty({n}, hidden.options().dtype(torch::kFloat32));  // (N)
  LceResult r;
  if (want_dhidden) r.dhidden = torch::empty_like(hidden);
  Tensor dweight32;  // (V, C) fp32 accumulator
  if (want_dweight) dweight32 = torch::zeros({v, c}, hidden.options().dtype(torch::kFloat32));
  Tensor logits;  // (chunk, V): logits, then dlogits in place
  if (n > 0) logits = torch::empty({chunk, v}, hidden.options());

  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t len = std::min(chunk, n - start);
    Tensor h = hidden.narrow(0, start, len);  // (len, C), contiguous rows
    // logits = h·Wᵀ (fp32 accumulation, stored in hidden's dtype as the
    // reference's matmul does).
    cuda::Gemm(blas, stream, false, true, len, v, c, 1.0f, h.data_ptr(), c, weight.data_ptr(), c,
               tag, 0.0f, logits.data_ptr(), v, tag);
    cuda::CrossEntropyRows(logits.data_ptr(), v, labels.data_ptr<int64_t>() + start,
                           losses.data_ptr<float>() + start, len, v, want_grad, kIgnoreIndex, tag,
                           stream);
    if (want_dhidden) {
      // dhidden[chunk] = dlogits·W.
      cuda::Gemm(blas, stream, false, false, len, c, v, 1.0f, logits.data_ptr(), v,
                 weight.data_ptr(), c, tag, 0.0f, r.dhidden.narrow(0, start, len).data_ptr(), c,
                 tag);
    }
    if (want_dweight) {
      // dW += dlogitsᵀ·h, accumulated in fp32 across chunks.
      cuda::Gemm(blas, stream, true, false, v, c, len, 1.0f, logits.data_ptr(), v, h.data_ptr(), c,
                 tag, 1.0f, dweight32.data_ptr(), c, cuda::DType::kF32);
    }
  }
  if (want_dweight) r.dweight = dweight32.to(weight.scalar_type());
  r.loss = losses.sum();
  return r;
}

void CheckLabels(const Tensor& labels, int64_t vocab) {
  if (labels.numel() == 0) return;
  const bool bad =
      ((labels != kIgnoreIndex) & ((labels < 0) | (labels >= vocab))).any().item<bool>();
  TORCH_CHECK(!bad, "LinearCrossEntropySum: every label must be -100 or in [0, ", vocab, ")");
}

struct LinearCrossEntropyFn : public torch::autograd::Function<LinearCrossEntropyFn> {
  // hidden: (N, C); weight: (V, C); labels: (N).
  static Tensor forward(AutogradContext* ctx, const Tensor& hidden, const Tensor& weight,
                        const Tensor& labels, int64_t chunk_tokens, bool want_dhidden,
                        bool want_dweight) {
    c10::cuda::CUDAGuard guard(hidden.device());
    LceResult r = RunChunks(hidden.contiguous(), weight.contiguous(), labels.contiguous(),
                            chunk_tokens, want_dhidden, want_dweight);
    ctx->save_for_backward({r.dhidden, r.dweight});
    return r.loss;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& g = grads[0];  // 0-dim fp32
    Tensor dhidden = saved[0].defined() ? saved[0] * g : Tensor();
    Tensor dweight = saved[1].defined() ? saved[1] * g : Tensor();
    return {dhidden, dweight, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

bool SameCudaDevice(std::initializer_list<Tensor> tensors) {
  const Tensor& first = *tensors.begin();
  return first.is_cuda() && torch_cuda::AllOn(first.device(), tensors);
}

bool IsAligned(const void* p, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// Rows of x viewed as (N, last dim): the product of all but the last size.
int64_t LeadingRows(const Tensor& x) {
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  return rows;
}

// Edge of nf4_gemm.cu's square tiles of y; its grid holds at most INT_MAX of them.
constexpr int64_t kNf4GemmTile = 64;

}  // namespace

bool RmsNormSupported(const Tensor& x, const Tensor& weight) {
  return x.defined() && weight.defined() && SameCudaDevice({x, weight}) && x.dim() >= 1 &&
         IsKernelDType(x.scalar_type()) && weight.scalar_type() == x.scalar_type() &&
         weight.dim() == 1 && x.size(-1) > 0 && weight.size(0) == x.size(-1);
}

Tensor RmsNorm(const Tensor& x, const Tensor& weight, double eps) {
  TORCH_CHECK(RmsNormSupported(x, weight), "fused RmsNorm: unsupported arguments x ", x.sizes(),
              " ", x.scalar_type(), ", weight ", weight.sizes(), " ", weight.scalar_type());
  return RmsNormFn::apply(x, weight, eps, false);
}

Tensor GemmaRmsNorm(const Tensor& x, const Tensor& weight, double eps) {
  TORCH_CHECK(RmsNormSupported(x, weight), "fused GemmaRmsNorm: unsupported arguments x ",
              x.sizes(), " ", x.scalar_type(), ", weight ", weight.sizes(), " ",
              weight.scalar_type());
  return RmsNormFn::apply(x, weight, eps, true);
}

bool RopeSupported(const Tensor& q, const Tensor& k, const Tensor& cos, const Tensor& sin) {
  if (!q.defined() || !k.defined() || !cos.defined() || !sin.defined()) return false;
  if (!SameCudaDevice({q, k, cos, sin})) return false;
  if (q.dim() != 4 || k.dim() != 4 || cos.dim() != 3 || sin.dim() != 3) return false;
  if (!IsKernelDType(q.scalar_type()) || k.scalar_type() != q.scalar_type()) return false;
  if (!cos.is_floating_point() || !sin.is_floating_point()) return false;
  if (cos.requires_grad() || sin.requires_grad()) return false;
  const int64_t b = q.size(0);
  const int64_t t = q.size(2);
  const int64_t d = q.size(3);
  if (d == 0 || d % 2 != 0) return false;
  if (k.size(0) != b || k.size(2) != t || k.size(3) != d) return false;
  if (cos.sizes() != sin.sizes()) return false;
  if ((cos.size(0) != b && cos.size(0) != 1) || cos.size(1) != t || cos.size(2) != d) return false;
  return true;
}

std::pair<Tensor, Tensor> ApplyRope(const Tensor& q, const Tensor& k, const Tensor& cos,
                                    const Tensor& sin) {
  TORCH_CHECK(RopeSupported(q, k, cos, sin), "fused ApplyRope: unsupported arguments q ", q.sizes(),
              ", k ", k.sizes(), ", cos ", cos.sizes(), ", sin ", sin.sizes());
  variable_list out = RopeFn::apply(q, k, cos, sin);
  return {out[0], out[1]};
}

bool SwiGluSupported(const Tensor& gate, const Tensor& up) {
  return gate.defined() && up.defined() && SameCudaDevice({gate, up}) &&
         IsKernelDType(gate.scalar_type()) && up.scalar_type() == gate.scalar_type() &&
         gate.sizes() == up.sizes();
}

Tensor SwiGlu(const Tensor& gate, const Tensor& up) {
  TORCH_CHECK(SwiGluSupported(gate, up), "fused SwiGlu: unsupported arguments gate ", gate.sizes(),
              " ", gate.scalar_type(), ", up ", up.sizes(), " ", up.scalar_type());
  return SwiGluFn::apply(gate, up);
}

bool GeGluSupported(const Tensor& gate, const Tensor& up) { return SwiGluSupported(gate, up); }

Tensor GeGlu(const Tensor& gate, const Tensor& up) {
  TORCH_CHECK(GeGluSupported(gate, up), "fused GeGlu: unsupported arguments gate ", gate.sizes(),
              " ", gate.scalar_type(), ", up ", up.sizes(), " ", up.scalar_type());
  return GeGluFn::apply(gate, up);
}

bool LinearCrossEntropySupported(const Tensor& hidden, const Tensor& weight, const Tensor& labels) {
  return hidden.defined() && weight.defined() && labels.defined() &&
         SameCudaDevice({hidden, weight, labels}) && hidden.dim() == 2 && weight.dim() == 2 &&
         labels.dim() == 1 && IsKernelDType(hidden.scalar_type()) &&
         weight.scalar_type() == hidden.scalar_type() && labels.scalar_type() == torch::kInt64 &&
         weight.size(1) == hidden.size(1) && labels.size(0) == hidden.size(0) && hidden.size(1) > 0;
}

Tensor LinearCrossEntropySum(const Tensor& hidden, const Tensor& weight, const Tensor& labels,
                             int64_t chunk_tokens) {
  TORCH_CHECK(LinearCrossEntropySupported(hidden, weight, labels),
              "fused LinearCrossEntropySum: unsupported arguments hidden ", hidden.sizes(), " ",
              hidden.scalar_type(), ", weight ", weight.sizes(), " ", weight.scalar_type(),
              ", labels ", labels.sizes(), " ", labels.scalar_type());
  c10::cuda::CUDAGuard guard(hidden.device());
  CheckLabels(labels, weight.size(0));
  const bool grad_mode = torch::GradMode::is_enabled();
  const bool want_dhidden = grad_mode && hidden.requires_grad();
  const bool want_dweight = grad_mode && weight.requires_grad();
  if (!want_dhidden && !want_dweight) {
    return RunChunks(hidden.contiguous(), weight.contiguous(), labels.contiguous(), chunk_tokens,
                     false, false)
        .loss;
  }
  return LinearCrossEntropyFn::apply(hidden, weight, labels, chunk_tokens, want_dhidden,
                                     want_dweight);
}

bool Nf4DequantizeSupported(const Tensor& packed, const Tensor& absmax, const Tensor& code,
                            int64_t numel, int64_t blocksize, torch::Dtype dtype) {
  if (!packed.defined() || !absmax.defined() || !code.defined()) return false;
  if (!SameCudaDevice({packed, absmax, code})) return false;
  if (packed.scalar_type() != torch::kUInt8 || absmax.scalar_type() != torch::kFloat32 ||
      code.scalar_type() != torch::kFloat32 || !IsKernelDType(dtype)) {
    return false;
  }
  if (packed.dim() != 1 || absmax.dim() != 1 || code.dim() != 1) return false;
  if (!packed.is_contiguous() || !absmax.is_contiguous() || !code.is_contiguous()) return false;
  if (numel < 0 || blocksize <= 0 || blocksize % 2 != 0) return false;
  const int64_t blocks = numel / blocksize + (numel % blocksize != 0 ? 1 : 0);
  return packed.size(0) == numel / 2 + numel % 2 && absmax.size(0) == blocks && code.size(0) == 16;
}

Tensor Nf4Dequantize(const Tensor& packed, const Tensor& absmax, const Tensor& code, int64_t numel,
                     int64_t blocksize, torch::Dtype dtype) {
  TORCH_CHECK(Nf4DequantizeSupported(packed, absmax, code, numel, blocksize, dtype),
              "fused Nf4Dequantize: unsupported arguments packed ", packed.sizes(), " ",
              packed.scalar_type(), ", absmax ", absmax.sizes(), " ", absmax.scalar_type(),
              ", code ", code.sizes(), " ", code.scalar_type(), ", numel ", numel, ", blocksize ",
              blocksize, ", dtype ", dtype);
  c10::cuda::CUDAGuard guard(packed.device());
  Tensor out = torch::empty({numel}, packed.options().dtype(dtype));  // (n)
  cuda::Nf4Dequantize(packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(), code.data_ptr<float>(),
                      out.data_ptr(), numel, blocksize, Tag(out), Stream());
  return out;
}

bool Nf4LinearForwardSupported(const Tensor& x, const Tensor& packed, const Tensor& absmax,
                               const Tensor& code, int64_t out, int64_t in, int64_t blocksize,
                               const Tensor& bias) {
  if (!x.defined() || !packed.defined() || !absmax.defined() || !code.defined()) return false;
  if (!SameCudaDevice({x, packed, absmax, code}) || !torch_cuda::AllOn(x.device(), {bias})) {
    return false;
  }
  if (x.scalar_type() != torch::kBFloat16 || x.dim() < 1 || x.size(-1) != in) return false;
  if (packed.scalar_type() != torch::kUInt8 || absmax.scalar_type() != torch::kFloat32 ||
      code.scalar_type() != torch::kFloat32) {
    return false;
  }
  if (packed.dim() != 1 || absmax.dim() != 1 || code.dim() != 1) return false;
  if (!packed.is_contiguous() || !absmax.is_contiguous() || !code.is_contiguous()) return false;
  if (out < 0 || in < 0 || in > std::numeric_limits<int>::max()) return false;
  if (blocksize <= 0 || blocksize % 2 != 0 || in % 8 != 0 || in % blocksize != 0) return false;
  if (packed.size(0) != out * in / 2 || absmax.size(0) != out * in / blocksize ||
      code.size(0) != 16) {
    return false;
  }
  if (bias.defined() &&
      (bias.dim() != 1 || bias.size(0) != out || !IsKernelDType(bias.scalar_type()))) {
    return false;
  }
  const int64_t tiles = (LeadingRows(x) + kNf4GemmTile - 1) / kNf4GemmTile *
                        ((out + kNf4GemmTile - 1) / kNf4GemmTile);
  if (tiles > std::numeric_limits<int>::max()) return false;
  // bf16 WMMA: sm_80 or newer.
  return at::cuda::getDeviceProperties(x.device().index())->major >= 8;
}

Tensor Nf4LinearForward(const Tensor& x, const Tensor& packed, const Tensor& absmax,
                        const Tensor& code, int64_t out, int64_t in, int64_t blocksize,
                        const Tensor& bias) {
  TORCH_CHECK(Nf4LinearForwardSupported(x, packed, absmax, code, out, in, blocksize, bias),
              "fused Nf4LinearForward: unsupported arguments x ", x.sizes(), " ", x.scalar_type(),
              ", packed ", packed.sizes(), " ", packed.scalar_type(), ", absmax ", absmax.sizes(),
              " ", absmax.scalar_type(), ", code ", code.sizes(), " ", code.scalar_type(), ", out ",
              out, ", in ", in, ", blocksize ", blocksize, ", bias ",
              bias.defined() ? bias.sizes() : torch::IntArrayRef());
  c10::cuda::CUDAGuard guard(x.device());
  torch::NoGradGuard no_grad;
  const int64_t rows = LeadingRows(x);
  Tensor x2 = x.detach().reshape({rows, in}).contiguous();  // (N, in)
  // The kernel's 16-byte loads of x and 32-bit loads of packed: a view at an
  // odd offset is copied (a fresh allocation is aligned).
  if (!IsAligned(x2.data_ptr(), 16)) x2 = x2.clone();
  Tensor p = IsAligned(packed.data_ptr(), 4) ? packed : packed.clone();  // (out·in / 2)
  Tensor b = bias.defined() ? bias.detach().to(torch::kBFloat16).contiguous() : Tensor();  // (out)
  Tensor y = torch::empty({rows, out}, x2.options());  // (N, out)
  cuda::Nf4Gemm(x2.data_ptr(), p.data_ptr<uint8_t>(), absmax.data_ptr<float>(),
                code.data_ptr<float>(), b.defined() ? b.data_ptr() : nullptr, y.data_ptr(), rows,
                out, in, blocksize, Stream());
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = out;
  return y.view(shape);
}

#else  // !FJORD_KERNELS_FUSED

namespace {
[[noreturn]] void NotBuilt(const char* what) {
  TORCH_CHECK(false, what, ": fjord was built without CUDA kernels");
  throw std::logic_error("unreachable");
}
}  // namespace

bool RmsNormSupported(const torch::Tensor&, const torch::Tensor&) { return false; }
torch::Tensor GemmaRmsNorm(const torch::Tensor&, const torch::Tensor&, double) {
  NotBuilt("fused GemmaRmsNorm");
}
torch::Tensor RmsNorm(const torch::Tensor&, const torch::Tensor&, double) {
  NotBuilt("fused RmsNorm");
}
bool RopeSupported(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                   const torch::Tensor&) {
  return false;
}
std::pair<torch::Tensor, torch::Tensor> ApplyRope(const torch::Tensor&, const torch::Tensor&,
                                                  const torch::Tensor&, const torch::Tensor&) {
  NotBuilt("fused ApplyRope");
}
bool SwiGluSupported(const torch::Tensor&, const torch::Tensor&) { return false; }
torch::Tensor SwiGlu(const torch::Tensor&, const torch::Tensor&) { NotBuilt("fused SwiGlu"); }
bool GeGluSupported(const torch::Tensor&, const torch::Tensor&) { return false; }
torch::Tensor GeGlu(const torch::Tensor&, const torch::Tensor&) { NotBuilt("fused GeGlu"); }
bool LinearCrossEntropySupported(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&) {
  return false;
}
torch::Tensor LinearCrossEntropySum(const torch::Tensor&, const torch::Tensor&,
                                    const torch::Tensor&, int64_t) {
  NotBuilt("fused LinearCrossEntropySum");
}
bool Nf4DequantizeSupported(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                            int64_t, int64_t, torch::Dtype) {
  return false;
}
torch::Tensor Nf4Dequantize(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                            int64_t, int64_t, torch::Dtype) {
  NotBuilt("fused Nf4Dequantize");
}
bool Nf4LinearForwardSupported(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                               const torch::Tensor&, int64_t, int64_t, int64_t,
                               const torch::Tensor&) {
  return false;
}
torch::Tensor Nf4LinearForward(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                               const torch::Tensor&, int64_t, int64_t, int64_t,
                               const torch::Tensor&) {
  NotBuilt("fused Nf4LinearForward");
}

#endif  // FJORD_KERNELS_FUSED

}  // namespace fjord::kernels::fused
