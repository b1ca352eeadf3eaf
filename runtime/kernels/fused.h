// The fused CUDA implementations behind runtime/kernels/ops.h, as LibTorch
// functions with custom autograd. ops.h's entry points choose between these
// and the references; tests, the start-up self-test and the benchmark call
// them directly.
//
// Each XSupported() says whether the fused X accepts the arguments (CUDA
// tensors on one device, supported dtypes and shapes, cos/sin without
// gradients...); it is false in a build without CUDA. Calling a fused
// function on unsupported arguments throws c10::Error; in a build without
// CUDA every fused function throws c10::Error.
//
// Shape legend: N tokens, C hidden, B batch, Hq/Hk heads, T tokens, D head dim,
// V vocab.
#ifndef FJORD_RUNTIME_KERNELS_FUSED_H_
#define FJORD_RUNTIME_KERNELS_FUSED_H_

#include <torch/types.h>

#include <cstdint>
#include <utility>

// FJORD_KERNELS_FUSED is 1 when the fused kernels are compiled in: a CUDA
// toolkit built the .cu files (FJORD_HAVE_CUDA) and LibTorch has its CUDA
// backend (FJORD_TORCH_HAS_CUDA).
#if defined(FJORD_HAVE_CUDA) && defined(FJORD_TORCH_HAS_CUDA)
#define FJORD_KERNELS_FUSED 1
#else
#define FJORD_KERNELS_FUSED 0
#endif

namespace fjord::kernels::fused {

// Whether this build has the fused kernels at all.
constexpr bool kBuilt = FJORD_KERNELS_FUSED != 0;

// x: (..., C) fp32/bf16/fp16 CUDA; weight: (C) of x's dtype.
bool RmsNormSupported(const torch::Tensor& x, const torch::Tensor& weight);
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);
// Gemma's RMSNorm, (1 + weight) in fp32: the same arguments as RmsNorm.
torch::Tensor GemmaRmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// q: (B, Hq, T, D), k: (B, Hk, T, D), any strides with unit stride in D, D
// even; cos, sin: (B, T, D) or (1, T, D), not requiring grad. Outputs are
// contiguous.
bool RopeSupported(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& cos,
                   const torch::Tensor& sin);
std::pair<torch::Tensor, torch::Tensor> ApplyRope(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& cos,
                                                  const torch::Tensor& sin);

// gate, up: same shape and dtype.
bool SwiGluSupported(const torch::Tensor& gate, const torch::Tensor& up);
torch::Tensor SwiGlu(const torch::Tensor& gate, const torch::Tensor& up);

// GeGLU (tanh GELU, Gemma): gate, up: same shape and dtype.
bool GeGluSupported(const torch::Tensor& gate, const torch::Tensor& up);
torch::Tensor GeGlu(const torch::Tensor& gate, const torch::Tensor& up);

// hidden: (N, C), weight: (V, C) of one dtype; labels: (N) int64, -100 or in
// [0, V) (checked: one device-to-host sync). With gradients wanted, they are
// computed during the forward, chunk by chunk (Liger's approach: the logits
// chunk becomes dlogits in place, then dhidden = dlogits·W and
// dW += dlogitsᵀ·hidden), and only dhidden (N, C) and dW (V, C) are kept for
// the backward, which scales them by grad_output. No (N, V) tensor is ever
// held: at most (chunk_tokens, V) logits in hidden's dtype.
bool LinearCrossEntropySupported(const torch::Tensor& hidden, const torch::Tensor& weight,
                                 const torch::Tensor& labels);
torch::Tensor LinearCrossEntropySum(const torch::Tensor& hidden, const torch::Tensor& weight,
                                    const torch::Tensor& labels, int64_t chunk_tokens);

// NF4 dequantization (ops.h's Nf4Dequantize): packed uint8, absmax and code
// fp32, contiguous CUDA tensors on one device of the sizes ops.h states;
// dtype fp32, bf16 or fp16; blocksize a positive multiple of 2.
bool Nf4DequantizeSupported(const torch::Tensor& packed, const torch::Tensor& absmax,
                            const torch::Tensor& code, int64_t numel, int64_t blocksize,
                            torch::Dtype dtype);
torch::Tensor Nf4Dequantize(const torch::Tensor& packed, const torch::Tensor& absmax,
                            const torch::Tensor& code, int64_t numel, int64_t blocksize,
                            torch::Dtype dtype);

// QLoRA's base layer forward on an NF4 weight, the dequantization fused into
// the GEMM (nf4_gemm.cu): y = x·Wᵀ (+ bias), W (out, in) the weight that
// Nf4Dequantize(packed, absmax, code, out·in, blocksize, bf16) gives, the
// products summed in fp32 on the tensor cores, the bias added in fp32, y
// rounded to bf16 once.
// x: (..., in) bf16 CUDA, any strides (copied when not contiguous or not
// 16-byte aligned); packed: (out·in / 2) uint8, absmax: (out·in / blocksize)
// fp32, code: (16) fp32, each 1-D and contiguous; bias: undefined or (out) of
// fp32, bf16 or fp16 (rounded to bf16 first, as Nf4Linear's
// bias.to(dtype)); all on one device of compute capability 8.0 or newer
// (bf16 tensor cores). in must be a multiple of 8 and of blocksize (even,
// positive): Llama's 4096 and 14336 with blocks of 64 are. Returns y:
// (..., out) bf16, without autograd history: there is no backward (a
// caller's autograd Function would use it for its forward only).
// Not used by ops.h's dispatch nor by quant::Nf4Linear (which dequantizes to
// a buffer, then matmul): kernel_bench's qlora_forward measures both ways
// first.
bool Nf4LinearForwardSupported(const torch::Tensor& x, const torch::Tensor& packed,
                               const torch::Tensor& absmax, const torch::Tensor& code, int64_t out,
                               int64_t in, int64_t blocksize,
                               const torch::Tensor& bias = torch::Tensor());
torch::Tensor Nf4LinearForward(const torch::Tensor& x, const torch::Tensor& packed,
                               const torch::Tensor& absmax, const torch::Tensor& code, int64_t out,
                               int64_t in, int64_t blocksize,
                               const torch::Tensor& bias = torch::Tensor());

}  // namespace fjord::kernels::fused

#endif  // FJORD_RUNTIME_KERNELS_FUSED_H_
