// FieldReader: strict reading of a JSON object from the wire. Each getter
// checks the type and range of one field and fails with InvalidArgument whose
// param is the field's dotted path ("hyperparameters.epochs"); Finish()
// refuses fields nobody read (so a typo is an error, never a default). A JSON
// null counts as an absent field.
//
// The reader keeps a pointer to the object: it must outlive the reader.
#ifndef FJORD_DAEMON_PROTOCOL_JSON_READER_H_
#define FJORD_DAEMON_PROTOCOL_JSON_READER_H_

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::protocol {

class FieldReader {
 public:
  // `path` is the object's own dotted path ("" for the body itself). Fails
  // when `value` is not an object.
  static absl::StatusOr<FieldReader> Make(const nlohmann::json& value, std::string path);

  // True when the field is present and not null.
  bool Has(absl::string_view key) const;
  // The dotted path of a field of this object.
  std::string PathOf(absl::string_view key) const;

  // Each leaves *out unchanged when the field is absent (and `required` is
  // false). Strings: 1..max_bytes unless allow_empty.
  absl::Status String(absl::string_view key, std::string* out, bool required = false,
                      size_t max_bytes = 4096, bool allow_empty = false);
  absl::Status Int(absl::string_view key, int64_t* out, int64_t min, int64_t max,
                   bool required = false);
  absl::Status Int(absl::string_view key, int* out, int min, int max, bool required = false);
  // min_exclusive: the value must be > min (else >= min).
  absl::Status Number(absl::string_view key, double* out, double min, double max,
                      bool min_exclusive = false, bool max_exclusive = false);
  absl::Status Bool(absl::string_view key, bool* out);
  absl::Status StringList(absl::string_view key, std::vector<std::string>* out, size_t max_items,
                          size_t max_bytes);
  // A nested object (for a nested FieldReader); nullptr when absent.
  absl::StatusOr<const nlohmann::json*> Object(absl::string_view key);
  // Marks a field as handled without reading it.
  void Accept(absl::string_view key) { seen_.insert(std::string(key)); }

  // InvalidArgument for the first field (in key order) no getter asked for.
  absl::Status Finish() const;

 private:
  FieldReader(const nlohmann::json* object, std::string path)
      : object_(object), path_(std::move(path)) {}
  const nlohmann::json* Find(absl::string_view key);

  const nlohmann::json* object_;
  std::string path_;
  std::set<std::string> seen_;
};

// Nesting depth of a JSON text: the most objects and arrays open at once,
// counting brackets outside strings. A scan, not a parse, so that a deeply
// nested text is refused before a parser recurses into it.
int JsonNestingDepth(absl::string_view text);

}  // namespace fjord::protocol

#endif  // FJORD_DAEMON_PROTOCOL_JSON_READER_H_
