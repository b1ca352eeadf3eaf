// Hand-made safetensors files, valid and malformed, shared by
// safetensors_header_test and safetensors_header_asan_test. Test-only.
#ifndef FJORD_RUNTIME_IO_SAFETENSORS_TEST_CORPUS_H_
#define FJORD_RUNTIME_IO_SAFETENSORS_TEST_CORPUS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace fjord::io::testing {

// 8-byte little-endian length n, then header, then data. n defaults to
// header.size().
inline std::string MakeSafetensors(const std::string& header, const std::string& data,
                                   uint64_t n = UINT64_MAX) {
  if (n == UINT64_MAX) n = header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

struct MalformedCase {
  std::string label;
  std::string bytes;
  std::string message;  // a substring the DataLoss message must contain
};

// Every class of malformed file; each must be refused with DataLoss.
inline std::vector<MalformedCase> MalformedCorpus() {
  const std::string d8(8, '\x01');
  const std::string f32x2 = R"("dtype":"F32","shape":[2],"data_offsets":)";
  std::vector<MalformedCase> c = {
      {"empty file", "", "too small to hold the 8-byte header length"},
      {"truncated under 8 bytes", std::string("\x10\x00\x00", 3), "file is 3 bytes"},
      {"header length past end", MakeSafetensors("{}", "", 100), "runs past the end of the file"},
      {"header length near u64 max", MakeSafetensors("{}", "", UINT64_MAX - 3),
       "exceeds the limit"},
      {"header length over 100MB", MakeSafetensors("{}", "", 100'000'001),
       "exceeds the limit of 100000000 bytes"},
      {"empty header", MakeSafetensors("", ""), "does not start with '{'"},
      {"not utf8", MakeSafetensors("{\"a\xff\":1}", ""), "not valid UTF-8 at file byte 11"},
      {"overlong utf8", MakeSafetensors("{\"\xc0\x80\":{}}", ""), "not valid UTF-8"},
      {"utf8 surrogate", MakeSafetensors("{\"\xed\xa0\x80\":{}}", ""), "not valid UTF-8"},
      {"invalid json", MakeSafetensors("{\"a\": ", ""), "not valid JSON"},
      {"trailing garbage json", MakeSafetensors("{} x", ""), "not valid JSON"},
      {"json array", MakeSafetensors("[1,2]", ""), "does not start with '{'"},
      {"json string", MakeSafetensors("\"x\"", ""), "does not start with '{'"},
      {"leading space", MakeSafetensors(" {}", ""), "does not start with '{'"},
      {"deep nesting",
       MakeSafetensors("{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}", ""),
       "nests deeper than 64"},
      {"entry not object", MakeSafetensors(R"({"w":5})", ""), "tensor 'w': entry is not an object"},
      {"missing dtype", MakeSafetensors(R"({"w":{"shape":[],"data_offsets":[0,0]}})", ""),
       "tensor 'w': missing \"dtype\""},
      {"dtype not string",
       MakeSafetensors(R"({"w":{"dtype":1,"shape":[],"data_offsets":[0,0]}})", ""),
       "\"dtype\" is not a string"},
      {"unknown dtype",
       MakeSafetensors(R"({"w":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})", d8),
       "tensor 'w': unknown dtype \"F31\""},
      {"missing shape", MakeSafetensors(R"({"w":{"dtype":"F32","data_offsets":[0,0]}})", ""),
       "tensor 'w': missing \"shape\""},
      {"shape not array",
       MakeSafetensors(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", d8),
       "\"shape\" is not an array"},
      {"negative shape",
       MakeSafetensors(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", d8),
       "tensor 'w': shape[0] is not a non-negative integer (got -2)"},
      {"fractional shape",
       MakeSafetensors(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", d8),
       "shape[0] is not a non-negative integer"},
      {"shape beyond int64",
       MakeSafetensors(R"({"w":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,8]}})",
                       d8),
       "shape[0] = 9223372036854775808 is too large"},
      {"overflow shape",
       MakeSafetensors(
           R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]}})",
           d8),
       "tensor 'w': shape's byte size overflows 64 bits"},
      {"overflow with a zero after it",
       MakeSafetensors(
           R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904,0],"data_offsets":[0,0]}})",
           ""),
       "overflows"},
      {"overflow by dtype size",
       MakeSafetensors(
           R"({"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", d8),
       "overflows"},
      {"missing offsets", MakeSafetensors(R"({"w":{"dtype":"F32","shape":[2]}})", d8),
       "tensor 'w': missing \"data_offsets\""},
      {"three offsets",
       MakeSafetensors(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,8]}})", d8),
       "\"data_offsets\" is not [begin, end]"},
      {"negative offset",
       MakeSafetensors(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", d8),
       "\"data_offsets\" is not [begin, end]"},
      {"offsets reversed",
       MakeSafetensors(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", d8),
       "tensor 'w': data_offsets [8, 0] end before they begin"},
      {"size mismatch",
       MakeSafetensors(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", d8.substr(4)),
       "tensor 'w': shape and dtype give 8 bytes but data_offsets [0, 4] hold 4"},
      {"sub-byte dtype not whole bytes",
       MakeSafetensors(R"({"w":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}})", "x"),
       "3 elements of F4 are not a whole number of bytes"},
      {"overlapping",
       MakeSafetensors("{\"a\":{" + f32x2 + "[0,8]},\"b\":{" + f32x2 + "[4,12]}}",
                       std::string(12, 'x')),
       "tensor 'b': data_offsets [4, 12) overlap tensor 'a' [0, 8)"},
      {"gap",
       MakeSafetensors("{\"a\":{" + f32x2 + "[0,8]},\"b\":{" + f32x2 + "[12,20]}}",
                       std::string(20, 'x')),
       "tensor 'b': data_offsets begin at 12 leaving a gap of 4 bytes"},
      {"first tensor not at 0",
       MakeSafetensors("{\"a\":{" + f32x2 + "[4,12]}}", std::string(12, 'x')),
       "tensor 'a': data_offsets begin at 4 leaving a gap of 4 bytes after offset 0"},
      {"trailing bytes", MakeSafetensors("{\"a\":{" + f32x2 + "[0,8]}}", std::string(12, 'x')),
       "4 trailing bytes after the last tensor"},
      {"trailing bytes without tensors", MakeSafetensors("{}", "xyz"),
       "3 trailing bytes after the last tensor"},
      {"offsets past end", MakeSafetensors("{\"a\":{" + f32x2 + "[0,8]}}", std::string(4, 'x')),
       "tensor 'a': data_offsets end 8 is past the end of the data buffer (4 bytes"},
      {"duplicate name",
       MakeSafetensors("{\"a\":{" + f32x2 + "[0,8]},\"a\":{" + f32x2 + "[8,16]}}",
                       std::string(16, 'x')),
       "tensor 'a': name appears twice"},
      {"duplicate key inside entry",
       MakeSafetensors(R"({"a":{"dtype":"F32","dtype":"F32","shape":[0],"data_offsets":[0,0]}})",
                       ""),
       "duplicate key \"dtype\""},
      {"metadata not object", MakeSafetensors(R"({"__metadata__":[1]})", ""),
       "\"__metadata__\" is not an object"},
      {"metadata value not string", MakeSafetensors(R"({"__metadata__":{"step":10}})", ""),
       "\"__metadata__\" value for \"step\" is not a string (got 10)"},
      {"metadata duplicate key", MakeSafetensors(R"({"__metadata__":{"k":"1","k":"2"}})", ""),
       "duplicate key \"k\""},
      {"nul in header", MakeSafetensors(std::string("{}\0", 3), ""), "not valid JSON"},
  };
  return c;
}

}  // namespace fjord::io::testing

#endif  // FJORD_RUNTIME_IO_SAFETENSORS_TEST_CORPUS_H_
