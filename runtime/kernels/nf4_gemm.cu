// The forward of QLoRA's frozen 4-bit base layer with the dequantization fused
// into the GEMM: y = x·Wᵀ (+ bias), W an NF4 weight in bitsandbytes' layout
// (as nf4.cu: W row-major and flattened, element 2j in the high nibble of
// byte j, element e scaled by absmax[e / blocksize]), x and y bf16, products
// summed in fp32 on the tensor cores (WMMA, bf16 16x16x16 fragments, sm_80+).
//
// Fused: the dequantization of W (nibble unpacking, code lookup, absmax
// scale, rounding to bf16), the GEMM and the bias add with one rounding of
// the fp32 sum to bf16.
// Never materialised: the dequantized W (out, in) in global memory (the
// dequantize + cuBLAS path writes it in full and reads it back); each block
// holds only a (64, 32) tile of it, in shared memory.
// Gradients: none (the base weight is frozen; a caller's backward computes
// dx from W dequantized on its own).
//
// Design (simple over fast: correctness is checked on a GPU later, and
// kernel_bench compares it with dequantize + cuBLAS):
// - One block of 128 threads (4 warps, 2 x 2) per (64, 64) tile of y; each
//   warp computes a (32, 32) sub-tile as 2 x 2 fp32 accumulator fragments.
//   The grid is 1-D with the output tiles varying fastest, so the blocks
//   running together share the same rows of x and walk all of W, which
//   stays in L2 (4096 x 14336 NF4 is 29 MB).
// - Per k-step of 32: the block stages x's (64, 32) tile and W's (64, 32)
//   tile in shared memory as bf16. x moves as 16-byte chunks of 8 elements;
//   W as one 32-bit load of 4 packed bytes per 8 elements, which the thread
//   dequantizes (code table in shared memory, one absmax per chunk when
//   blocksize % 8 == 0, else one per byte) into one 16-byte shared store.
//   The next step's global loads are issued into registers before the
//   current step's MMAs, so they overlap (one shared buffer, two barriers
//   per step).
// - Bounds: rows of x past N and rows of W past out are staged as zeros, as
//   are chunks past `in` (in % 8 == 0, so a chunk is all in or all out); the
//   epilogue stores the accumulators to shared memory and writes only the
//   elements inside (N, out), adding the bias in fp32.
// - Requirements (the launcher checks them): in % 8 == 0 and
//   in % blocksize == 0 (so a row holds whole absmax blocks and a chunk's
//   packed bytes are 4-byte aligned), x 16-byte and packed 4-byte aligned.
//
// W's values are bit for bit those of Nf4Dequantize to bf16 (one fp32
// product rounded to nearest even, subnormals kept, then one bf16 rounding),
// so y differs from dequantize + matmul only in the order of the fp32 sums
// and the final rounding.
//
// Shape legend: N rows of x (tokens), in input features, out output
// features (W's rows).
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "runtime/kernels/cuda_check.h"
#include "runtime/kernels/cuda_common.h"
#include "runtime/kernels/launchers.h"

namespace fjord::kernels::cuda {
namespace {

namespace wmma = nvcuda::wmma;
using bf16 = __nv_bfloat16;

constexpr int kTileM = 64;  // rows of x and y per block
constexpr int kTileN = 64;  // rows of W (columns of y) per block
constexpr int kTileK = 32;  // reduction elements per step
constexpr int kThreads = 128;
constexpr int kWarpTile = 32;  // each warp's (32, 32) sub-tile of y
constexpr int kFrag = 16;      // WMMA fragment edge
constexpr int kFragsPerWarp = kWarpTile / kFrag;
constexpr int kWarpsN = kTileN / kWarpTile;
// Elements per staged chunk: one 16-byte load of x, one 32-bit load of W.
constexpr int kChunk = 8;
constexpr int kChunksPerRow = kTileK / kChunk;
constexpr int kChunksPerThread = kTileM * kChunksPerRow / kThreads;
static_assert(kTileM == kTileN, "x and W tiles share the chunk-to-thread map");
static_assert(kTileM * kChunksPerRow % kThreads == 0, "whole chunks per thread");
static_assert((kTileM / kWarpTile) * kWarpsN * 32 == kThreads, "one warp per sub-tile");

// Shared row strides in elements. WMMA needs a multiple of 8 (bf16) or 4
// (fp32) and 32-byte aligned fragment starts: 40 bf16 = 80 bytes, so a
// fragment at row 16·i, column 16·j starts at 1280·i + 32·j bytes; 68 fp32 =
// 272 bytes, fragments at 4352·i + 64·j. The padding also spreads a column
// of 16-byte chunks over the banks.
constexpr int kLdAB = kTileK + 8;
constexpr int kLdC = kTileN + 4;

struct alignas(128) SharedTiles {
  bf16 x[kTileM][kLdAB];  // (tile rows, k)
  bf16 w[kTileN][kLdAB];  // (tile outputs, k): B = Wᵀ read column-major
  float c[kTileM][kLdC];  // the accumulators, for the guarded epilogue
  float code[16];
};

// a·b in fp32, rounded to nearest even, subnormal results kept (as nf4.cu:
// --use_fast_math would flush them).
__device__ __forceinline__ float MulRn(float a, float b) {
  float r;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

// One thread's staged chunks of a k-step, between the global loads and the
// shared stores.
struct Staged {
  uint4 x[kChunksPerThread];         // 8 bf16 of x, zeros out of bounds
  uint32_t w[kChunksPerThread];      // 4 packed bytes = 8 NF4 indices
  float scale[kChunksPerThread][4];  // absmax of each byte's pair
  bool w_in[kChunksPerThread];       // the W chunk is inside (out, in)
};

__global__ void __launch_bounds__(kThreads)
    Nf4GemmKernel(const bf16* __restrict__ x,          // (N, in)
                  const uint8_t* __restrict__ packed,  // (out·in / 2)
                  const float* __restrict__ absmax,    // (out·in / blocksize)
                  const float* __restrict__ code,      // (16)
                  const bf16* __restrict__ bias,       // (out) or null
                  bf16* __restrict__ y,                // (N, out)
                  int64_t rows, int64_t out, int in, int blocksize, int64_t tiles_n) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // bf16 WMMA needs sm_80; fused::Nf4LinearForwardSupported refuses older
  // devices, so this is never launched there.
  __trap();
#else
  __shared__ SharedTiles s;
  const int tid = threadIdx.x;
  if (tid < 16) s.code[tid] = code[tid];

  const int64_t m0 = static_cast<int64_t>(blockIdx.x / tiles_n) * kTileM;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x % tiles_n) * kTileN;
  const int blocks_per_row = in / blocksize;
  const bool chunk_scale = blocksize % kChunk == 0;  // a chunk lies in one absmax block

  // Chunk i of this thread: tile row (tid + kThreads·i) / kChunksPerRow,
  // columns kChunk·((tid + kThreads·i) % kChunksPerRow) + [0, 8), for both
  // tiles.
  Staged st;
  const auto load = [&](int k0) {
#pragma unroll
    for (int i = 0; i < kChunksPerThread; ++i) {
      const int c = tid + kThreads * i;
      const int r = c / kChunksPerRow;
      const int k = k0 + kChunk * (c % kChunksPerRow);
      const int64_t m = m0 + r;
      st.x[i] = (m < rows && k < in) ? *reinterpret_cast<const uint4*>(x + m * in + k)
                                     : make_uint4(0, 0, 0, 0);
      const int64_t o = n0 + r;
      st.w_in[i] = o < out && k < in;
      if (st.w_in[i]) {
        // o·in + k is a multiple of 8: 4-byte aligned packed bytes.
        st.w[i] = *reinterpret_cast<const uint32_t*>(packed + (o * in + k) / 2);
        const float* row_absmax = absmax + o * blocks_per_row;
        if (chunk_scale) {
          const float a = row_absmax[k / blocksize];
#pragma unroll
          for (int b = 0; b < 4; ++b) st.scale[i][b] = a;
        } else {
          // blocksize is even: both nibbles of a byte share a block.
#pragma unroll
          for (int b = 0; b < 4; ++b) st.scale[i][b] = row_absmax[(k + 2 * b) / blocksize];
        }
      }
    }
  };
  const auto store = [&] {
#pragma unroll
    for (int i = 0; i < kChunksPerThread; ++i) {
      const int c = tid + kThreads * i;
      const int r = c / kChunksPerRow;
      const int col = kChunk * (c % kChunksPerRow);
      *reinterpret_cast<uint4*>(&s.x[r][col]) = st.x[i];
      Pack<bf16, kChunk> v;
      if (st.w_in[i]) {
#pragma unroll
        for (int b = 0; b < 4; ++b) {
          // Little-endian: byte b of the word holds elements 2b (high nibble)
          // and 2b + 1 (low nibble) of the chunk.
          const uint32_t byte = st.w[i] >> (8 * b);
          v.v[2 * b] = __float2bfloat16_rn(MulRn(s.code[(byte >> 4) & 0xFu], st.scale[i][b]));
          v.v[2 * b + 1] = __float2bfloat16_rn(MulRn(s.code[byte & 0xFu], st.scale[i][b]));
        }
      } else {
#pragma unroll
        for (int e = 0; e < kChunk; ++e) v.v[e] = __float2bfloat16_rn(0.0f);
      }
      StorePack<bf16, kChunk>(&s.w[r][col], v);
    }
  };

  const int warp = tid / 32;
  const int wm = (warp / kWarpsN) * kWarpTile;  // the warp's sub-tile in the block's
  const int wn = (warp % kWarpsN) * kWarpTile;
  wmma::fragment<wmma::accumulator, kFrag, kFrag, kFrag, float> acc[kFragsPerWarp][kFragsPerWarp];
#pragma unroll
  for (int i = 0; i < kFragsPerWarp; ++i) {
#pragma unroll
    for (int j = 0; j < kFragsPerWarp; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }

  if (in > 0) load(0);
  __syncthreads();  // the code table, before the first store reads it
  for (int k0 = 0; k0 < in; k0 += kTileK) {
    store();
    __syncthreads();
    if (k0 + kTileK < in) load(k0 + kTileK);  // in flight during the MMAs
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += kFrag) {
      wmma::fragment<wmma::matrix_a, kFrag, kFrag, kFrag, bf16, wmma::row_major> a[kFragsPerWarp];
      wmma::fragment<wmma::matrix_b, kFrag, kFrag, kFrag, bf16, wmma::col_major> b[kFragsPerWarp];
#pragma unroll
      for (int i = 0; i < kFragsPerWarp; ++i) {
        wmma::load_matrix_sync(a[i], &s.x[wm + kFrag * i][kk], kLdAB);
        // B (k, n) = W[n][k]: column n of B is row n of the W tile.
        wmma::load_matrix_sync(b[i], &s.w[wn + kFrag * i][kk], kLdAB);
      }
#pragma unroll
      for (int i = 0; i < kFragsPerWarp; ++i) {
#pragma unroll
        for (int j = 0; j < kFragsPerWarp; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();  // every warp is done with the tiles before the next store
  }

#pragma unroll
  for (int i = 0; i < kFragsPerWarp; ++i) {
#pragma unroll
    for (int j = 0; j < kFragsPerWarp; ++j) {
      wmma::store_matrix_sync(&s.c[wm + kFrag * i][wn + kFrag * j], acc[i][j], kLdC,
                              wmma::mem_row_major);
    }
  }
  __syncthreads();
  // Consecutive threads write consecutive columns of a row of y.
  for (int e = tid; e < kTileM * kTileN; e += kThreads) {
    const int r = e / kTileN;
    const int col = e % kTileN;
    const int64_t m = m0 + r;
    const int64_t o = n0 + col;
    if (m < rows && o < out) {
      float v = s.c[r][col];
      if (bias != nullptr) v += __bfloat162float(bias[o]);
      y[m * out + o] = __float2bfloat16_rn(v);
    }
  }
#endif
}

[[noreturn]] void Reject(const std::string& what) {
  throw std::invalid_argument("Nf4Gemm: " + what);
}

}  // namespace

void Nf4Gemm(const void* x, const uint8_t* packed, const float* absmax, const float* code,
             const void* bias, void* y, int64_t rows, int64_t out, int64_t in, int64_t blocksize,
             cudaStream_t stream) {
  if (rows < 0 || out < 0 || in < 0) {
    Reject("sizes must be >= 0, got N " + std::to_string(rows) + ", out " + std::to_string(out) +
           ", in " + std::to_string(in));
  }
  if (blocksize <= 0 || blocksize % 2 != 0) {
    Reject("blocksize must be even and positive, got " + std::to_string(blocksize));
  }
  if (in % kChunk != 0 || in % blocksize != 0) {
    Reject("in must be a multiple of 8 and of blocksize " + std::to_string(blocksize) + ", got " +
           std::to_string(in));
  }
  if (in > std::numeric_limits<int>::max()) Reject("in = " + std::to_string(in) + " is too large");
  if (!Aligned(x, 16)) Reject("x must be 16-byte aligned");
  if (!Aligned(packed, 4)) Reject("packed must be 4-byte aligned");
  if (rows == 0 || out == 0) return;
  const int64_t tiles_n = (out + kTileN - 1) / kTileN;
  const int64_t tiles = (rows + kTileM - 1) / kTileM * tiles_n;
  if (tiles > std::numeric_limits<int>::max()) {
    Reject(std::to_string(tiles) + " tiles of (64, 64) exceed the grid");
  }
  Nf4GemmKernel<<<static_cast<unsigned int>(tiles), kThreads, 0, stream>>>(
      static_cast<const bf16*>(x), packed, absmax, code, static_cast<const bf16*>(bias),
      static_cast<bf16*>(y), rows, out, static_cast<int>(in), static_cast<int>(blocksize), tiles_n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace fjord::kernels::cuda
