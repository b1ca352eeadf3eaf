// C-style launchers of runtime/kernels' CUDA kernels: raw device pointers,
// sizes, a dtype tag and the stream to run on. No LibTorch here, so nvcc
// compiles the .cu files without it; fused_ops.cc wraps these for LibTorch.
//
// Every launcher enqueues work on `stream` and returns without synchronising.
// It throws fjord::kernels::CudaError (cuda_check.h) when a launch or a cuBLAS
// call fails. Sizes of 0 are valid and launch nothing (except where a
// launcher must still write zeros, said below). All tensors are contiguous
// row-major unless strides are given.
//
// Shape legend: N rows (tokens), C columns (hidden), B batch, H heads,
// T tokens, D head dim, V vocab, I intermediate.
#ifndef FJORD_RUNTIME_KERNELS_LAUNCHERS_H_
#define FJORD_RUNTIME_KERNELS_LAUNCHERS_H_

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace fjord::kernels::cuda {

// Element type of the floating-point tensors a launcher reads and writes.
enum class DType : int {
  kF32 = 0,
  kBF16 = 1,
  kF16 = 2,
};

// Number of multiprocessors of the current device (cached per device).
int MultiprocessorCount();

// ---- RMSNorm (rmsnorm.cu) ----

// y = round(x·rstd)·w per row, rstd = 1/sqrt(mean(x²) + eps), all in fp32.
// x, y: (N, C) of `dtype`; w: (C) of `dtype`; rstd: (N) fp32, or null when
// not needed. y may alias x (in place).
// gemma: y = round(x·rstd·(1 + w)) instead (Gemma's RMSNorm).
void RmsNormForward(const void* x, const void* w, void* y, float* rstd, int64_t rows, int64_t cols,
                    float eps, DType dtype, cudaStream_t stream, bool gemma = false);

// Number of fp32 elements RmsNormBackward needs in `partial` for a dweight.
int64_t RmsNormBackwardScratchSize(int64_t rows, int64_t cols);

// dx = rstd·(dn − n·mean(dn·n)) with n = x·rstd, dn = round(dy·w);
// dw = Σ_rows dy·round(n). dy, x, dx: (N, C); w, dw: (C); rstd: (N) fp32 from
// the forward. dx may be null (not wanted) and may alias dy (in place). dw
// may be null; when set, `partial` holds RmsNormBackwardScratchSize floats:
// each block sums its rows' dw into its own slice of it (no atomics) and a
// second kernel adds the slices in a fixed order, so dw is deterministic. dw
// is written (zeros when rows == 0), never accumulated.
// gemma: dn = dy·(1 + w) and dw = Σ_rows dy·n, in fp32 (nothing rounded
// before dx and dw), as the autograd of Gemma's fp32 graph.
void RmsNormBackward(const void* dy, const void* x, const void* w, const float* rstd, void* dx,
                     void* dw, float* partial, int64_t rows, int64_t cols, DType dtype,
                     cudaStream_t stream, bool gemma = false);

// ---- Rotary embedding (rope.cu) ----

// out = x·cos + rotate_half(x)·sin (rotate_half(x) = [−x2, x1], halves of D),
// or with `transpose` its adjoint, the backward:
// dx1 = g1·cos1 + g2·sin2, dx2 = g2·cos2 − g1·sin1 (a rotation by −sin when
// the two halves of sin are equal, as in Llama).
// x: (B, H, T, D) with strides (sxb, sxh, sxt) in elements and unit stride in
// D; out: (B, H, T, D) contiguous; cos, sin: (B, T, D) contiguous, or batch
// stride 0 (`cos_batch_stride`) to broadcast one batch row. D must be even.
void RopeApply(const void* x, int64_t sxb, int64_t sxh, int64_t sxt, void* out, const void* cos,
               const void* sin, int64_t cos_batch_stride, int64_t batch, int64_t heads,
               int64_t tokens, int64_t head_dim, bool transpose, DType dtype, cudaStream_t stream);

// ---- SwiGLU (glu.cu) ----

// y = round(silu(g))·u. g, u, y: (n) contiguous.
void SwiGluForward(const void* gate, const void* up, void* y, int64_t n, DType dtype,
                   cudaStream_t stream);
// dg = round(dy·u)·silu'(g), du = dy·round(silu(g)). dg may alias dy.
void SwiGluBackward(const void* dy, const void* gate, const void* up, void* dgate, void* dup,
                    int64_t n, DType dtype, cudaStream_t stream);

// ---- GeGLU (glu.cu) ----

// y = round(gelu_tanh(g))·u. g, u, y: (n) contiguous.
void GeGluForward(const void* gate, const void* up, void* y, int64_t n, DType dtype,
                  cudaStream_t stream);
// dg = round(dy·u)·gelu_tanh'(g), du = dy·round(gelu_tanh(g)). dg may alias dy.
void GeGluBackward(const void* dy, const void* gate, const void* up, void* dgate, void* dup,
                   int64_t n, DType dtype, cudaStream_t stream);

// ---- Cross-entropy over a chunk of logits (cross_entropy.cu) ----

// For each row i of `logits` (rows, V; row stride ld): loss[i] =
// logsumexp(logits[i]) − logits[i][labels[i]] in fp32 (online max/sum), or 0
// when labels[i] == ignore_index. With `write_grad`, overwrites the row in
// place with softmax(logits[i]) − onehot(labels[i]) (zeros for ignored rows),
// unscaled. Labels must be ignore_index or in [0, V) (the caller checks).
// labels: (rows) int64; loss: (rows) fp32.
void CrossEntropyRows(void* logits, int64_t ld, const int64_t* labels, float* loss, int64_t rows,
                      int64_t vocab, bool write_grad, int64_t ignore_index, DType dtype,
                      cudaStream_t stream);

// ---- GEMM through cuBLAS (gemm.cu) ----

// Row-major C = alpha·op(A)·op(B) + beta·C with fp32 accumulation
// (cublasGemmEx, CUBLAS_COMPUTE_32F), on `handle`'s stream set to `stream`.
// op(A): (m, k), stored (m, k) with row stride lda, or (k, m) when trans_a;
// op(B): (k, n), stored (k, n) with row stride ldb, or (n, k) when trans_b;
// C: (m, n) with row stride ldc. A and B have `ab_type`; C has `c_type`,
// either ab_type or kF32. beta = 1 accumulates into C (no intermediate).
// k == 0 writes beta·C (zeros when beta == 0).
void Gemm(cublasHandle_t handle, cudaStream_t stream, bool trans_a, bool trans_b, int64_t m,
          int64_t n, int64_t k, float alpha, const void* a, int64_t lda, const void* b, int64_t ldb,
          DType ab_type, float beta, void* c, int64_t ldc, DType c_type);

// ---- NF4 dequantization (nf4.cu) ----

// out[i] = code[q_i]·absmax[i / blocksize]: one fp32 multiply rounded to
// nearest even (subnormals kept), then rounded to `dtype` (nearest even).
// q_i, the 4-bit index of element i, is the high nibble of packed[i / 2] for
// even i and the low nibble for odd i (bitsandbytes' NF4 layout).
// packed: (ceil(n / 2)) uint8; absmax: (ceil(n / blocksize)) fp32; code: (16)
// fp32; out: (n) of `dtype`. Any alignment is accepted (the vector path needs
// packed 4-byte aligned and out aligned to 8 elements). Throws
// std::invalid_argument when numel < 0 or blocksize is not even and positive.
void Nf4Dequantize(const uint8_t* packed, const float* absmax, const float* code, void* out,
                   int64_t numel, int64_t blocksize, DType dtype, cudaStream_t stream);

// ---- NF4 linear forward, dequantization fused into the GEMM (nf4_gemm.cu) ----

// y = x·Wᵀ (+ bias) on bf16 tensor cores (sm_80 or newer), W (out, in) the
// NF4 weight Nf4Dequantize would produce from packed/absmax/code (its values
// rounded to bf16 exactly as Nf4Dequantize to bf16 rounds them), products
// summed in fp32, the bias added in fp32, one rounding to bf16.
// x: (N, in) bf16, 16-byte aligned; packed: (out·in / 2) uint8, 4-byte
// aligned; absmax: (out·in / blocksize) fp32; code: (16) fp32; bias: (out)
// bf16 or null; y: (N, out) bf16, written (bias or zeros when in == 0).
// Throws std::invalid_argument for negative sizes, a blocksize not even and
// positive, an `in` not a multiple of both 8 and blocksize, or misaligned x
// or packed. N == 0 or out == 0 launches nothing.
void Nf4Gemm(const void* x, const uint8_t* packed, const float* absmax, const float* code,
             const void* bias, void* y, int64_t rows, int64_t out, int64_t in, int64_t blocksize,
             cudaStream_t stream);

}  // namespace fjord::kernels::cuda

#endif  // FJORD_RUNTIME_KERNELS_LAUNCHERS_H_
