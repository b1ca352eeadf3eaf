#include "runtime/quant/nf4.h"

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/kernels/ops.h"

namespace fjord::quant {
namespace {

using torch::Tensor;

// Index of the nearest value of `code` (ascending) for every element of x:
// the midpoints between neighbours are the decision boundaries, a value on
// one going to the lower index.
Tensor Nearest(const Tensor& x, const Tensor& code) {
  Tensor mid = (code.narrow(0, 0, code.numel() - 1) + code.narrow(0, 1, code.numel() - 1)) / 2;
  return torch::bucketize(x, mid, /*out_int32=*/true);
}

// x (n) padded with zeros to a whole number of blocks: (blocks, blocksize).
Tensor Blocks(const Tensor& x, int64_t blocksize) {
  const int64_t n = x.numel();
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  if (blocks * blocksize == n) return x.reshape({blocks, blocksize});
  return torch::constant_pad_nd(x, {0, blocks * blocksize - n}).reshape({blocks, blocksize});
}

// Per-block absmax and the indices of x / absmax in `code`; an all-zero
// block keeps absmax 0 and selects code's zero.
std::pair<Tensor, Tensor> QuantizeBlocks(const Tensor& x, int64_t blocksize, const Tensor& code) {
  Tensor b = Blocks(x, blocksize);
  Tensor absmax = b.abs().amax(1);  // (blocks)
  Tensor safe = torch::where(absmax > 0, absmax, torch::ones_like(absmax));
  Tensor idx = Nearest(b / safe.unsqueeze(1), code);  // (blocks, blocksize)
  return {absmax, idx.reshape({-1}).narrow(0, 0, x.numel())};
}

const char* DtypeName(torch::Dtype d) {
  switch (d) {
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kFloat16:
      return "float16";
    default:
      return "float32";
  }
}

}  // namespace

const std::array<float, 16>& Nf4Code() {
  // QLoRA (arXiv:2305.14314), appendix E, as bitsandbytes' "nf4" code.
  static const std::array<float, 16> code = {
      -1.0f,
      -0.6961928009986877f,
      -0.5250730514526367f,
      -0.39491748809814453f,
      -0.28444138169288635f,
      -0.18477343022823334f,
      -0.09105003625154495f,
      0.0f,
      0.07958029955625534f,
      0.16093020141124725f,
      0.24611230194568634f,
      0.33791524171829224f,
      0.44070982933044434f,
      0.5626170039176941f,
      0.7229568362236023f,
      1.0f,
  };
  return code;
}

Tensor DynamicCode() {
  std::vector<float> values;
  for (int e = 0; e < 7; ++e) {
    const int64_t points = (int64_t{1} << e) + 1;
    Tensor bounds = torch::linspace(0.1, 1.0, points, torch::kFloat32);
    Tensor means = (bounds.narrow(0, 0, points - 1) + bounds.narrow(0, 1, points - 1)) / 2;
    means = means * std::pow(10.0, e - 6);
    for (int64_t i = 0; i < means.numel(); ++i) {
      const float v = means[i].item<float>();
      values.push_back(v);
      values.push_back(-v);
    }
  }
  values.push_back(0.0f);
  values.push_back(1.0f);
  std::sort(values.begin(), values.end());
  return torch::tensor(values, torch::kFloat32);
}

int64_t Nf4Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Nf4Tensor::bytes() const {
  int64_t total = 0;
  for (const Tensor* t : {&packed, &code, &absmax, &nested_absmax, &nested_code}) {
    if (t->defined()) total += t->numel() * static_cast<int64_t>(t->element_size());
  }
  return total;
}

Nf4Tensor Nf4Tensor::To(const torch::Device& device) const {
  Nf4Tensor q = *this;
  for (Tensor* t : {&q.packed, &q.code, &q.absmax, &q.nested_absmax, &q.nested_code}) {
    if (t->defined()) *t = t->to(device);
  }
  return q;
}

Nf4Tensor QuantizeNf4(const Tensor& w, bool double_quant) {
  TORCH_CHECK(w.numel() > 0, "QuantizeNf4: an empty tensor");
  torch::NoGradGuard no_grad;
  Tensor x = w.detach().reshape({-1}).to(torch::kFloat32);
  TORCH_CHECK(torch::isfinite(x).all().item<bool>(),
              "QuantizeNf4: the weight has non-finite values");
  Nf4Tensor q;
  q.shape = w.sizes().vec();
  q.dtype = w.scalar_type();
  q.blocksize = kNf4BlockSize;
  q.code = torch::tensor(std::vector<float>(Nf4Code().begin(), Nf4Code().end()), torch::kFloat32)
               .to(x.device());
  auto [absmax, idx] = QuantizeBlocks(x, q.blocksize, q.code);
  if (idx.numel() % 2 != 0) idx = torch::constant_pad_nd(idx, {0, 1});
  idx = idx.to(torch::kUInt8).reshape({-1, 2});
  q.packed = idx.select(1, 0).bitwise_left_shift(4).bitwise_or(idx.select(1, 1)).contiguous();
  if (!double_quant) {
    q.absmax = absmax.contiguous();
    return q;
  }
  q.nested = true;
  q.nested_blocksize = kNf4AbsmaxBlockSize;
  q.nested_offset = absmax.mean().item<float>();
  q.nested_code = DynamicCode().to(x.device());
  auto [absmax2, idx2] =
      QuantizeBlocks(absmax - q.nested_offset, q.nested_blocksize, q.nested_code);
  q.absmax = idx2.to(torch::kUInt8).contiguous();
  q.nested_absmax = absmax2.contiguous();
  return q;
}

Tensor BlockAbsmax(const Nf4Tensor& q) {
  torch::NoGradGuard no_grad;
  if (!q.nested) return q.absmax.to(torch::kFloat32);
  const int64_t blocks = q.absmax.numel();
  Tensor values = q.nested_code.to(torch::kFloat32).index_select(0, q.absmax.to(torch::kInt32));
  Tensor scale = q.nested_absmax.to(torch::kFloat32)
                     .repeat_interleave(q.nested_blocksize)
                     .narrow(0, 0, blocks);
  return values * scale + q.nested_offset;
}

Tensor DequantizeNf4(const Nf4Tensor& q, torch::Dtype dtype) {
  Tensor flat = kernels::Nf4Dequantize(q.packed.reshape({-1}), BlockAbsmax(q).contiguous(),
                                       q.code.to(torch::kFloat32).contiguous(), q.numel(),
                                       q.blocksize, dtype);
  return flat.view(q.shape);
}

const std::vector<std::string>& BitsandbytesSuffixes() {
  static const std::vector<std::string> suffixes = {".absmax",
                                                    ".quant_map",
                                                    ".nested_absmax",
                                                    ".nested_quant_map",
                                                    ".quant_state.bitsandbytes__nf4",
                                                    ".quant_state.bitsandbytes__fp4"};
  return suffixes;
}

absl::StatusOr<Nf4Tensor> FromBitsandbytes(const std::string& name,
                                           const std::map<std::string, Tensor>& parts) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("4-bit weight '", name, "' (bitsandbytes): ", why));
  };
  if (parts.count(".quant_state.bitsandbytes__fp4") > 0) {
    return bad("quant_type fp4 is not supported; fjord reads nf4 (QLoRA's 4-bit NormalFloat)");
  }
  for (const char* need : {"", ".absmax", ".quant_map", ".quant_state.bitsandbytes__nf4"}) {
    if (parts.count(need) == 0)
      return bad(absl::StrCat("the tensor '", name, need, "' is missing"));
  }
  const Tensor& state_bytes = parts.at(".quant_state.bitsandbytes__nf4");
  if (state_bytes.scalar_type() != torch::kUInt8) return bad("quant_state is not a uint8 tensor");
  Tensor sb = state_bytes.contiguous().to(torch::kCPU);
  const std::string text(reinterpret_cast<const char*>(sb.data_ptr<uint8_t>()),
                         static_cast<size_t>(sb.numel()));
  const nlohmann::json state = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!state.is_object()) return bad("its quant_state is not a JSON object");
  Nf4Tensor q;
  try {
    if (state.value("quant_type", std::string()) != "nf4") {
      return bad(absl::StrCat("quant_type '", state.value("quant_type", std::string("?")),
                              "' is not supported (nf4 only)"));
    }
    q.blocksize = state.at("blocksize").get<int64_t>();
    q.shape = state.at("shape").get<std::vector<int64_t>>();
    const std::string dtype = state.value("dtype", std::string("float32"));
    q.dtype = dtype == "bfloat16"  ? torch::kBFloat16
              : dtype == "float16" ? torch::kFloat16
                                   : torch::kFloat32;
    if (state.contains("nested_blocksize")) {
      q.nested = true;
      q.nested_blocksize = state.at("nested_blocksize").get<int64_t>();
      q.nested_offset = state.at("nested_offset").get<float>();
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(absl::StrCat("its quant_state lacks or mistypes a field: ", e.what()));
  }
  if (q.blocksize <= 0 || q.blocksize % 2 != 0) {
    return bad(absl::StrCat("blocksize ", q.blocksize, " is not a positive even number"));
  }
  if (q.shape.empty()) return bad("its quant_state has an empty shape");
  for (int64_t d : q.shape) {
    if (d <= 0) return bad(absl::StrCat("shape [", absl::StrJoin(q.shape, ", "), "]"));
  }
  const Tensor& packed = parts.at("");
  if (packed.scalar_type() != torch::kUInt8) return bad("the packed weight is not uint8");
  if (packed.numel() != (q.numel() + 1) / 2) {
    return bad(absl::StrCat("the packed weight has ", packed.numel(), " bytes; shape [",
                            absl::StrJoin(q.shape, ", "), "] needs ", (q.numel() + 1) / 2));
  }
  q.packed = packed.reshape({-1}).contiguous();
  q.code = parts.at(".quant_map").to(torch::kFloat32).reshape({-1}).contiguous();
  if (q.code.numel() != 16) return bad("its quant_map does not hold 16 values");
  q.absmax = parts.at(".absmax").reshape({-1}).contiguous();
  if (q.absmax.numel() != q.blocks()) {
    return bad(absl::StrCat("absmax holds ", q.absmax.numel(), " values; ", q.numel(),
                            " elements in blocks of ", q.blocksize, " need ", q.blocks()));
  }
  if (q.nested) {
    if (parts.count(".nested_absmax") == 0 || parts.count(".nested_quant_map") == 0) {
      return bad("double-quantized, but nested_absmax or nested_quant_map is missing");
    }
    if (q.absmax.scalar_type() != torch::kUInt8) return bad("nested absmax is not uint8");
    q.nested_absmax = parts.at(".nested_absmax").to(torch::kFloat32).reshape({-1}).contiguous();
    q.nested_code = parts.at(".nested_quant_map").to(torch::kFloat32).reshape({-1}).contiguous();
    if (q.nested_code.numel() != 256) return bad("its nested_quant_map does not hold 256 values");
    if (q.nested_blocksize <= 0 ||
        q.nested_absmax.numel() != (q.blocks() + q.nested_blocksize - 1) / q.nested_blocksize) {
      return bad("nested_absmax's size disagrees with nested_blocksize");
    }
  } else {
    q.absmax = q.absmax.to(torch::kFloat32);
  }
  return q;
}

std::map<std::string, Tensor> ToBitsandbytes(const Nf4Tensor& q) {
  std::map<std::string, Tensor> out;
  out[""] = q.packed.to(torch::kCPU).reshape({-1, 1});
  out[".absmax"] = q.absmax.to(torch::kCPU);
  out[".quant_map"] = q.code.to(torch::kCPU);
  nlohmann::json state = {{"quant_type", "nf4"},
                          {"blocksize", q.blocksize},
                          {"dtype", DtypeName(q.dtype)},
                          {"shape", q.shape}};
  if (q.nested) {
    out[".nested_absmax"] = q.nested_absmax.to(torch::kCPU);
    out[".nested_quant_map"] = q.nested_code.to(torch::kCPU);
    state["nested_blocksize"] = q.nested_blocksize;
    state["nested_dtype"] = "float32";
    state["nested_offset"] = q.nested_offset;
  }
  const std::string text = state.dump();
  out[".quant_state.bitsandbytes__nf4"] =
      torch::from_blob(const_cast<char*>(text.data()), {static_cast<int64_t>(text.size())},
                       torch::kUInt8)
          .clone();
  return out;
}

}  // namespace fjord::quant
