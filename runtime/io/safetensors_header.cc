#include "runtime/io/safetensors_header.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace fjord::io {
namespace {

// std::map-backed: ordered_json's linear-time key lookup would make a header
// with many tensors quadratic. JSON key order is recovered by KeyScanner.
using Json = nlohmann::json;

// SAX handler recording the first duplicate key of any object, the order of
// the top-level keys, and the first JSON syntax error.
struct KeyScanner : nlohmann::json_sax<Json> {
  std::vector<std::optional<std::set<std::string>>> stack;  // nullopt: an array
  std::string duplicate;
  bool duplicate_is_tensor = false;
  std::map<std::string, size_t> key_order;  // top-level key -> position

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    stack.emplace_back(std::set<std::string>());
    return true;
  }
  bool key(string_t& k) override {
    if (!duplicate.empty() || stack.empty() || !stack.back()) return true;
    if (!stack.back()->insert(k).second) {
      duplicate = k;
      duplicate_is_tensor = stack.size() == 1;
    } else if (stack.size() == 1) {
      key_order.emplace(k, key_order.size());
    }
    return true;
  }
  bool end_object() override {
    if (!stack.empty()) stack.pop_back();
    return true;
  }
  bool start_array(std::size_t) override {
    stack.emplace_back(std::nullopt);
    return true;
  }
  bool end_array() override {
    if (!stack.empty()) stack.pop_back();
    return true;
  }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    error = ex.what();
    error_byte = position;
    return false;
  }
  std::string error;  // set when the JSON is malformed
  std::size_t error_byte = 0;
};

// The header's nesting is at most 3 levels deep; anything much deeper is
// refused before the JSON parser sees it.
constexpr int kMaxJsonDepth = 64;

struct DtypeInfo {
  const char* name;
  int bits;
};

constexpr DtypeInfo kDtypes[] = {
    {"BOOL", 8},        {"U8", 8},          {"I8", 8},      {"F8_E5M2", 8}, {"F8_E4M3", 8},
    {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"F8_E8M0", 8}, {"I16", 16},    {"U16", 16},
    {"F16", 16},        {"BF16", 16},       {"I32", 32},    {"U32", 32},    {"F32", 32},
    {"C64", 64},        {"F64", 64},        {"I64", 64},    {"U64", 64},    {"F4", 4},
    {"F6_E2M3", 6},     {"F6_E3M2", 6},
};

absl::Status Corrupt(absl::string_view file, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(file, ": invalid safetensors file: ", what));
}

absl::Status CorruptTensor(absl::string_view file, absl::string_view tensor,
                           absl::string_view what) {
  return absl::DataLossError(
      absl::StrCat(file, ": invalid safetensors file: tensor '", tensor, "': ", what));
}

uint64_t ReadLe64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// Byte offset of the first invalid UTF-8 sequence in s, or npos.
size_t FirstInvalidUtf8(absl::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return i;
    }
    if (n - i < len) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF.
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return i;
    }
    i += len;
  }
  return absl::string_view::npos;
}

// Deepest nesting of [ and { outside strings, stopping early past limit.
int MaxNesting(absl::string_view s, int limit) {
  int depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > limit) return max_depth;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

// Reads a JSON unsigned integer into *out; false if j is not one.
bool GetU64(const Json& j, uint64_t* out) {
  if (!j.is_number_unsigned()) return false;
  *out = j.get<uint64_t>();
  return true;
}

std::string Describe(const Json& j) {
  std::string s = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

absl::StatusOr<TensorEntry> ParseEntry(absl::string_view file, const std::string& name,
                                       const Json& value) {
  if (!value.is_object()) {
    return CorruptTensor(file, name,
                         absl::StrCat("entry is not an object (got ", Describe(value), ")"));
  }
  TensorEntry e;
  e.name = name;

  const auto dtype = value.find("dtype");
  if (dtype == value.end()) return CorruptTensor(file, name, "missing \"dtype\"");
  if (!dtype->is_string()) {
    return CorruptTensor(file, name,
                         absl::StrCat("\"dtype\" is not a string (got ", Describe(*dtype), ")"));
  }
  e.dtype = dtype->get<std::string>();
  const int bits = SafetensorsDtypeBits(e.dtype);
  if (bits == 0) return CorruptTensor(file, name, absl::StrCat("unknown dtype \"", e.dtype, "\""));

  const auto shape = value.find("shape");
  if (shape == value.end()) return CorruptTensor(file, name, "missing \"shape\"");
  if (!shape->is_array()) {
    return CorruptTensor(file, name,
                         absl::StrCat("\"shape\" is not an array (got ", Describe(*shape), ")"));
  }
  uint64_t numel = 1;
  bool overflow = false;
  for (size_t i = 0; i < shape->size(); ++i) {
    const Json& d = (*shape)[i];
    uint64_t dim;
    if (!GetU64(d, &dim)) {
      return CorruptTensor(
          file, name,
          absl::StrCat("shape[", i, "] is not a non-negative integer (got ", Describe(d), ")"));
    }
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return CorruptTensor(file, name, absl::StrCat("shape[", i, "] = ", dim, " is too large"));
    }
    e.shape.push_back(static_cast<int64_t>(dim));
    if (__builtin_mul_overflow(numel, dim, &numel)) overflow = true;
  }

  const auto offsets = value.find("data_offsets");
  if (offsets == value.end()) return CorruptTensor(file, name, "missing \"data_offsets\"");
  if (!offsets->is_array() || offsets->size() != 2 || !GetU64((*offsets)[0], &e.begin) ||
      !GetU64((*offsets)[1], &e.end)) {
    return CorruptTensor(file, name,
                         absl::StrCat("\"data_offsets\" is not [begin, end] of non-negative "
                                      "integers (got ",
                                      Describe(*offsets), ")"));
  }
  if (e.begin > e.end) {
    return CorruptTensor(
        file, name,
        absl::StrCat("data_offsets [", e.begin, ", ", e.end, "] end before they begin"));
  }
  // A zero dimension makes the product 0 whatever the others are, as in the
  // reference (which multiplies with checked arithmetic in order, so a zero
  // after an overflow still reports the overflow).
  uint64_t total_bits = 0;
  if (overflow || __builtin_mul_overflow(numel, static_cast<uint64_t>(bits), &total_bits)) {
    return CorruptTensor(file, name, "shape's byte size overflows 64 bits");
  }
  if (total_bits % 8 != 0) {
    return CorruptTensor(
        file, name,
        absl::StrCat(numel, " elements of ", e.dtype, " are not a whole number of bytes"));
  }
  const uint64_t bytes = total_bits / 8;
  if (bytes != e.end - e.begin) {
    return CorruptTensor(file, name,
                         absl::StrCat("shape and dtype give ", bytes, " bytes but data_offsets [",
                                      e.begin, ", ", e.end, "] hold ", e.end - e.begin));
  }
  return e;
}

}  // namespace

int SafetensorsDtypeBits(absl::string_view dtype) {
  for (const DtypeInfo& d : kDtypes) {
    if (dtype == d.name) return d.bits;
  }
  return 0;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view file_bytes,
                                                         absl::string_view file_name) {
  return ParseSafetensorsHeaderPrefix(file_bytes, file_bytes.size(), file_name);
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeaderPrefix(absl::string_view prefix,
                                                               uint64_t file_size,
                                                               absl::string_view file_name) {
  const absl::string_view file = file_name;
  if (prefix.size() > file_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": prefix of ", prefix.size(), " bytes is longer than the file size ", file_size));
  }
  if (file_size < 8) {
    return Corrupt(file, absl::StrCat("file is ", file_size,
                                      " bytes, too small to hold the 8-byte header length"));
  }
  if (prefix.size() < 8) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": need at least the first 8 bytes of the file"));
  }
  const uint64_t n = ReadLe64(prefix.data());
  if (n > kMaxSafetensorsHeaderSize) {
    return Corrupt(file, absl::StrCat("header length ", n, " exceeds the limit of ",
                                      kMaxSafetensorsHeaderSize, " bytes"));
  }
  if (n > file_size - 8) {
    return Corrupt(file, absl::StrCat("header length ", n, " runs past the end of the file (",
                                      file_size, " bytes; truncated?)"));
  }
  if (prefix.size() < 8 + n) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": need the first ", 8 + n, " bytes of the file, got ", prefix.size()));
  }
  const absl::string_view header = prefix.substr(8, n);
  const uint64_t buffer_size = file_size - 8 - n;

  if (const size_t bad = FirstInvalidUtf8(header); bad != absl::string_view::npos) {
    return Corrupt(file, absl::StrCat("header is not valid UTF-8 at file byte ", 8 + bad));
  }
  // Raw NUL is never valid JSON, and nlohmann's lexer would take it for the
  // end of input (accepting "{}\0garbage").
  if (const size_t nul = header.find('\0'); nul != absl::string_view::npos) {
    return Corrupt(file, absl::StrCat("header is not valid JSON: NUL byte at file byte ", 8 + nul));
  }
  if (header.empty() || header[0] != '{') {
    return Corrupt(file, "header does not start with '{' (not a JSON object)");
  }
  if (MaxNesting(header, kMaxJsonDepth) > kMaxJsonDepth) {
    return Corrupt(file, absl::StrCat("header JSON nests deeper than ", kMaxJsonDepth, " levels"));
  }

  // Duplicate keys are silently merged by JSON parsers: a SAX pass finds
  // them (and the top-level key order), then the DOM is built without a
  // callback (nlohmann's callback parser rescans the parent object at every
  // nested object's end, which is quadratic in the number of tensors).
  KeyScanner scanner;
  Json root;
  try {
    Json::sax_parse(header.begin(), header.end(), &scanner);
    if (!scanner.error.empty()) {
      return Corrupt(file, absl::StrCat("header is not valid JSON (error at file byte ",
                                        8 + scanner.error_byte, "): ", scanner.error));
    }
    if (scanner.duplicate.empty()) root = Json::parse(header.begin(), header.end());
  } catch (const Json::parse_error& e) {
    return Corrupt(file, absl::StrCat("header is not valid JSON (error at file byte ", 8 + e.byte,
                                      "): ", e.what()));
  } catch (const Json::exception& e) {
    return Corrupt(file, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  const std::string& duplicate = scanner.duplicate;
  const bool duplicate_is_tensor = scanner.duplicate_is_tensor;
  std::map<std::string, size_t>& key_order = scanner.key_order;
  if (!duplicate.empty()) {
    if (duplicate_is_tensor) return CorruptTensor(file, duplicate, "name appears twice");
    return Corrupt(file, absl::StrCat("duplicate key \"", duplicate, "\" in the header"));
  }
  if (!root.is_object()) return Corrupt(file, "header is not a JSON object");

  SafetensorsHeader out;
  out.data_offset = 8 + n;
  for (const auto& [key, value] : root.items()) {
    if (key == "__metadata__") {
      if (value.is_null()) continue;
      if (!value.is_object()) {
        return Corrupt(
            file, absl::StrCat("\"__metadata__\" is not an object (got ", Describe(value), ")"));
      }
      for (const auto& [mkey, mvalue] : value.items()) {
        if (!mvalue.is_string()) {
          return Corrupt(file, absl::StrCat("\"__metadata__\" value for \"", mkey,
                                            "\" is not a string (got ", Describe(mvalue), ")"));
        }
        out.metadata[mkey] = mvalue.get<std::string>();
      }
      continue;
    }
    FJORD_ASSIGN_OR_RETURN(TensorEntry entry, ParseEntry(file, key, value));
    out.tensors.push_back(std::move(entry));
  }

  // File order: by offsets; zero-sized tensors sharing an offset keep their
  // order in the JSON.
  std::vector<size_t> position(out.tensors.size());
  for (size_t i = 0; i < out.tensors.size(); ++i) position[i] = key_order[out.tensors[i].name];
  std::vector<size_t> perm(out.tensors.size());
  for (size_t i = 0; i < perm.size(); ++i) perm[i] = i;
  std::sort(perm.begin(), perm.end(), [&](size_t a, size_t b) {
    const TensorEntry& x = out.tensors[a];
    const TensorEntry& y = out.tensors[b];
    return std::tuple(x.begin, x.end, position[a]) < std::tuple(y.begin, y.end, position[b]);
  });
  {
    std::vector<TensorEntry> sorted;
    sorted.reserve(perm.size());
    for (size_t i : perm) sorted.push_back(std::move(out.tensors[i]));
    out.tensors = std::move(sorted);
  }
  uint64_t expected = 0;
  const TensorEntry* previous = nullptr;
  for (const TensorEntry& e : out.tensors) {
    if (e.begin < expected) {
      return CorruptTensor(
          file, e.name,
          absl::StrCat("data_offsets [", e.begin, ", ", e.end, ") overlap tensor '", previous->name,
                       "' [", previous->begin, ", ", previous->end, ")"));
    }
    if (e.begin > expected) {
      return CorruptTensor(file, e.name,
                           absl::StrCat("data_offsets begin at ", e.begin, " leaving a gap of ",
                                        e.begin - expected, " bytes after offset ", expected));
    }
    if (e.end > buffer_size) {
      return CorruptTensor(
          file, e.name,
          absl::StrCat("data_offsets end ", e.end, " is past the end of the data buffer (",
                       buffer_size, " bytes; truncated?)"));
    }
    expected = e.end;
    previous = &e;
  }
  if (expected != buffer_size) {
    return Corrupt(file, absl::StrCat(buffer_size - expected,
                                      " trailing bytes after the last tensor (data buffer is ",
                                      buffer_size, " bytes, tensors cover ", expected, ")"));
  }
  return out;
}

absl::StatusOr<std::string> EncodeSafetensorsHeader(
    std::vector<TensorEntry>* tensors, const std::map<std::string, std::string>& metadata) {
  // The top-level object is written piece by piece to keep the given order
  // (nlohmann's ordered_json would be quadratic in the number of tensors).
  using OrderedJson = nlohmann::ordered_json;
  std::string json = "{";
  auto dump = [](const auto& j) { return j.dump(-1, ' ', false, Json::error_handler_t::strict); };
  try {
    if (!metadata.empty()) json += "\"__metadata__\":" + dump(Json(metadata));
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors header: a metadata string is not UTF-8: ", e.what()));
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (TensorEntry& e : *tensors) {
    if (e.name == "__metadata__") {
      return absl::InvalidArgumentError("tensor name \"__metadata__\" is reserved");
    }
    if (!names.insert(e.name).second) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", e.name, "' appears twice"));
    }
    const int bits = SafetensorsDtypeBits(e.dtype);
    if (bits == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", e.name, "': unknown dtype \"", e.dtype, "\""));
    }
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      if (d < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", e.name, "': negative dimension ", d));
      }
      if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel)) {
        return absl::InvalidArgumentError(absl::StrCat("tensor '", e.name, "': size overflows"));
      }
    }
    uint64_t total_bits;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(bits), &total_bits) ||
        total_bits / 8 > std::numeric_limits<uint64_t>::max() - offset) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", e.name, "': size overflows"));
    }
    if (total_bits % 8 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", e.name, "': ", numel, " elements of ", e.dtype, " are not whole bytes"));
    }
    e.begin = offset;
    e.end = offset + total_bits / 8;
    offset = e.end;
    OrderedJson entry = OrderedJson::object();
    entry["dtype"] = e.dtype;
    entry["shape"] = e.shape;
    entry["data_offsets"] = {e.begin, e.end};
    try {
      if (json.size() > 1) json += ",";
      json += dump(Json(e.name)) + ":" + dump(entry);
    } catch (const Json::exception& ex) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", e.name, "': name is not UTF-8: ", ex.what()));
    }
  }
  json += "}";
  // Pad with spaces so the data buffer starts 8-byte aligned.
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>(n & 0xff);
    n >>= 8;
  }
  out += json;
  return out;
}

}  // namespace fjord::io
