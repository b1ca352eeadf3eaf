// NF4: the 4-bit NormalFloat data type of QLoRA (Dettmers et al., 2023),
// stored as bitsandbytes stores it, for a frozen base weight held in 4 bits.
//
// A weight of n elements (row-major, flattened) is cut into blocks of 64;
// each block keeps its absolute maximum (absmax) and each element the index
// (0-15) of the NF4 code value nearest to element / absmax, two indices per
// byte, the first element of a pair in the high nibble. With double
// quantization the absmax values themselves are stored in 8 bits: their mean
// (the offset) is subtracted, and the rest quantized in blocks of 256 to the
// nearest value of bitsandbytes' signed dynamic 8-bit code, with an fp32
// absmax per block of 256. Memory per weight element: 0.5 B + 1/64 B (+
// 4/16384 B) with double quantization, 0.5 B + 4/64 B without.
//
// Quantization (QuantizeNf4) and its inverse (DequantizeNf4, through
// runtime/kernels' Nf4Dequantize: a fused kernel on CUDA) run on CPU and
// CUDA tensors. FromBitsandbytes reads a weight that transformers +
// bitsandbytes saved (save_pretrained of a model loaded in 4 bits);
// ToBitsandbytes writes the same tensors back.
#ifndef FJORD_RUNTIME_QUANT_NF4_H_
#define FJORD_RUNTIME_QUANT_NF4_H_

#include <torch/types.h>

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/util/status_macros.h"

namespace fjord::quant {

inline constexpr int64_t kNf4BlockSize = 64;
inline constexpr int64_t kNf4AbsmaxBlockSize = 256;

// The 16 NF4 values (QLoRA, appendix E; bitsandbytes' "nf4" code), ascending,
// from -1 to 1 with an exact 0 at index 7.
const std::array<float, 16>& Nf4Code();

// bitsandbytes' signed dynamic 8-bit code (256 fp32 values, ascending, in
// [-1, 1]): for e = 0..6, 2^e values (the means of 2^e + 1 points evenly
// spaced from 0.1 to 1) scaled by 10^(e - 6), their negatives, 0 and 1.
// The second level of double quantization uses it.
torch::Tensor DynamicCode();

struct Nf4Tensor {
  std::vector<int64_t> shape;            // the weight's, e.g. (out, in)
  torch::Dtype dtype = torch::kFloat32;  // the weight's dtype before quantization
  int64_t blocksize = kNf4BlockSize;
  torch::Tensor packed;  // (ceil(numel / 2)) uint8: two 4-bit indices per byte
  torch::Tensor code;    // (16) fp32: the values the indices select (Nf4Code())
  // The absmax of each block: fp32 (blocks), or with double quantization
  // uint8 indices into nested_code, blocks of nested_blocksize scaled by
  // nested_absmax, plus nested_offset.
  torch::Tensor absmax;
  bool nested = false;
  int64_t nested_blocksize = kNf4AbsmaxBlockSize;
  torch::Tensor nested_absmax;  // (ceil(blocks / nested_blocksize)) fp32
  torch::Tensor nested_code;    // (256) fp32 (DynamicCode())
  float nested_offset = 0;

  int64_t numel() const;
  int64_t blocks() const { return (numel() + blocksize - 1) / blocksize; }
  // Bytes held by the tensors above (what the weight costs in memory).
  int64_t bytes() const;
  torch::Device device() const { return packed.device(); }
  // A copy on `device`.
  Nf4Tensor To(const torch::Device& device) const;
};

// Quantizes `w` (any float dtype and shape, CPU or CUDA) to NF4 in blocks
// of 64, with double quantization of the absmax values when `double_quant`.
// The result lives on w's device. Throws c10::Error for an empty or
// non-finite tensor.
Nf4Tensor QuantizeNf4(const torch::Tensor& w, bool double_quant);

// The fp32 absmax of every block (undoing double quantization).
torch::Tensor BlockAbsmax(const Nf4Tensor& q);

// The weight, dequantized to `dtype` (fp32, bf16 or fp16), in q's shape, on
// q's device; no autograd history.
torch::Tensor DequantizeNf4(const Nf4Tensor& q, torch::Dtype dtype);

// The suffixes bitsandbytes adds to a 4-bit weight's name in a checkpoint
// (the packed weight keeps the plain name).
const std::vector<std::string>& BitsandbytesSuffixes();

// Reads a 4-bit weight that bitsandbytes serialized: `parts` maps the
// suffixes ("" for the packed weight itself, ".absmax", ".quant_map",
// ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4")
// to their tensors. InvalidArgument, naming `name`, for a quant_type other
// than nf4 (fp4 is refused by name), a missing part, a malformed
// quant_state, or sizes that disagree with the shape.
absl::StatusOr<Nf4Tensor> FromBitsandbytes(const std::string& name,
                                           const std::map<std::string, torch::Tensor>& parts);

// FromBitsandbytes of weight `name` and its parts as `reader` (an
// io::ModelDirReader or io::SafetensorsFile: Find and Get) holds them.
template <typename Reader>
absl::StatusOr<Nf4Tensor> ReadBitsandbytes(const Reader& reader, const std::string& name) {
  std::map<std::string, torch::Tensor> parts;
  FJORD_ASSIGN_OR_RETURN(parts[""], reader.Get(name));
  for (const std::string& suffix : BitsandbytesSuffixes()) {
    if (reader.Find(name + suffix) == nullptr) continue;
    FJORD_ASSIGN_OR_RETURN(parts[suffix], reader.Get(name + suffix));
  }
  return FromBitsandbytes(name, parts);
}

// The tensors bitsandbytes would write for `q` (the same suffixes), on CPU.
std::map<std::string, torch::Tensor> ToBitsandbytes(const Nf4Tensor& q);

}  // namespace fjord::quant

#endif  // FJORD_RUNTIME_QUANT_NF4_H_
