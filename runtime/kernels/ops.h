// The model's hot operations, each with a plain-LibTorch reference and (on
// CUDA, where built and where its start-up self-test passed) a fused kernel.
// The model calls only these entry points; which implementation runs is chosen
// at run time from the tensor's device and the process-wide Backend policy.
//
// Shape legend: N tokens (B·T flattened), B batch, T tokens, C hidden,
// Hq query heads, Hk key/value heads, D head dim, V vocab.
#ifndef FJORD_RUNTIME_KERNELS_OPS_H_
#define FJORD_RUNTIME_KERNELS_OPS_H_

#include <torch/types.h>

#include <cstdint>
#include <utility>

namespace fjord::kernels {

enum class Backend {
  kAuto,       // fused on CUDA when available and self-tested, else reference (default)
  kReference,  // always the plain LibTorch reference
  kFused,      // fused on CUDA tensors (reference on CPU tensors)
};

// Process-wide policy. Thread-safe.
void SetBackend(Backend backend);
Backend GetBackend();

// RMSNorm: y = x / sqrt(mean(x²) + eps) · weight, computed in fp32, returned in
// x's dtype. x: (..., C); weight: (C).
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// Rotary embedding with Hugging Face's rotate_half convention:
// out = x·cos + rotate_half(x)·sin. q: (B, Hq, T, D); k: (B, Hk, T, D);
// cos, sin: (B, T, D) (already expanded per position, llama3 scaling applied).
std::pair<torch::Tensor, torch::Tensor> ApplyRope(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& cos,
                                                  const torch::Tensor& sin);

// SwiGLU: silu(gate) · up. gate, up: (..., I).
torch::Tensor SwiGlu(const torch::Tensor& gate, const torch::Tensor& up);

// Gemma's RMSNorm: y = x / sqrt(mean(x²) + eps) · (1 + weight), all in fp32,
// cast to x's dtype last (Llama's RmsNorm casts before it scales). x: (..., C);
// weight: (C).
torch::Tensor GemmaRmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);

// GeGLU with GELU's tanh approximation (gelu_pytorch_tanh): gelu(gate) · up.
// gate, up: (..., I).
torch::Tensor GeGlu(const torch::Tensor& gate, const torch::Tensor& up);

// Sum over tokens whose label != -100 of the cross-entropy of
// softmax(hidden·weightᵀ) against labels, never holding more than
// `chunk_tokens` rows of logits at once (fp32 accumulation).
// hidden: (N, C); weight: (V, C); labels: (N) int64. Returns a 0-dim fp32
// tensor; the caller divides by its trained-token count.
torch::Tensor LinearCrossEntropySum(const torch::Tensor& hidden, const torch::Tensor& weight,
                                    const torch::Tensor& labels, int64_t chunk_tokens = 4096);

// NF4 dequantization (QLoRA's 4-bit NormalFloat, bitsandbytes' layout):
// element i of the weight is code[q_i] · absmax[i / blocksize], where q_i is
// the 4-bit index stored two per byte in `packed`, element 2j in the high
// nibble of byte j and 2j+1 in the low one. packed: (ceil(numel / 2))
// uint8; absmax: (ceil(numel / blocksize)) fp32 (already dequantized when
// the absmax values were double-quantized); code: (16) fp32; all on one
// device. Returns a (numel) tensor of `dtype` (fp32, bf16 or fp16) on that
// device, without autograd history.
torch::Tensor Nf4Dequantize(const torch::Tensor& packed, const torch::Tensor& absmax,
                            const torch::Tensor& code, int64_t numel, int64_t blocksize,
                            torch::Dtype dtype);

// The plain LibTorch references (used on CPU and as the fused kernels' oracle).
namespace reference {
// Building blocks of the chunked cross-entropy losses (reference::LinearCrossEntropySum,
// model::HeadCrossEntropySum, the sharded loss), in plain LibTorch ops.
//
// The indices (M) of the rows whose label is not -100, or an undefined
// tensor when every row's is: the others add nothing to a loss or its
// gradients, so the losses leave them out of their GEMMs. labels: (N) int64.
torch::Tensor TrainedRows(const torch::Tensor& labels);
// The summed cross-entropy (0-dim fp32) of rows of logits against their
// targets; with `grad`, also turns `logits` in place into that sum's
// gradient, softmax − one-hot (no other (rows, V) buffer). logits: (rows, V)
// fp32; targets: (rows, 1) int64 in [0, V).
torch::Tensor CrossEntropyInPlace(torch::Tensor& logits, const torch::Tensor& targets, bool grad);

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);
std::pair<torch::Tensor, torch::Tensor> ApplyRope(const torch::Tensor& q, const torch::Tensor& k,
                                                  const torch::Tensor& cos,
                                                  const torch::Tensor& sin);
torch::Tensor SwiGlu(const torch::Tensor& gate, const torch::Tensor& up);
torch::Tensor GemmaRmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps);
torch::Tensor GeGlu(const torch::Tensor& gate, const torch::Tensor& up);
torch::Tensor LinearCrossEntropySum(const torch::Tensor& hidden, const torch::Tensor& weight,
                                    const torch::Tensor& labels, int64_t chunk_tokens);
torch::Tensor Nf4Dequantize(const torch::Tensor& packed, const torch::Tensor& absmax,
                            const torch::Tensor& code, int64_t numel, int64_t blocksize,
                            torch::Dtype dtype);
}  // namespace reference

}  // namespace fjord::kernels

#endif  // FJORD_RUNTIME_KERNELS_OPS_H_
