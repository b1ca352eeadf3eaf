// jinja_tool TEMPLATE CONTEXT.json [--origins]: renders a chat template file
// with fjord's Jinja (jinja.h). CONTEXT.json is the template's variables as a
// JSON object ("-" reads stdin). Prints the rendered text to stdout, or with
// --origins a JSON object {"text": ..., "origins": [[begin, end, message]...]}.
// Exit 0 on success; 1 with the error on stderr (parse and render errors name
// the template's line); 2 on usage errors.
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "nlohmann/json.hpp"
#include "runtime/data/jinja.h"

namespace {

bool ReadFile(const std::string& path, std::string* out) {
  if (path == "-") {
    std::ostringstream s;
    s << std::cin.rdbuf();
    *out = s.str();
    return true;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream s;
  s << in.rdbuf();
  *out = s.str();
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4 || (argc == 4 && std::string(argv[3]) != "--origins")) {
    std::cerr << "usage: jinja_tool TEMPLATE CONTEXT.json [--origins]\n";
    return 2;
  }
  std::string source, context_text;
  if (!ReadFile(argv[1], &source)) {
    std::cerr << argv[1] << ": cannot read\n";
    return 1;
  }
  if (!ReadFile(argv[2], &context_text)) {
    std::cerr << argv[2] << ": cannot read\n";
    return 1;
  }
  nlohmann::ordered_json context = nlohmann::ordered_json::parse(context_text, nullptr, false);
  if (context.is_discarded() || !context.is_object()) {
    std::cerr << argv[2] << ": not a JSON object\n";
    return 1;
  }
  absl::StatusOr<fjord::data::JinjaTemplate> tmpl = fjord::data::JinjaTemplate::Parse(source);
  if (!tmpl.ok()) {
    std::cerr << argv[1] << ": " << tmpl.status().message() << "\n";
    return 1;
  }
  absl::StatusOr<fjord::data::JinjaOutput> out = tmpl->RenderWithOrigins(context);
  if (!out.ok()) {
    std::cerr << argv[1] << ": " << out.status().message() << "\n";
    return 1;
  }
  if (argc == 4) {
    nlohmann::json j;
    j["text"] = out->text;
    j["origins"] = nlohmann::json::array();
    for (const fjord::data::OriginSpan& span : out->origins) {
      j["origins"].push_back({span.begin, span.end, span.message});
    }
    std::cout << j.dump();
  } else {
    std::cout << out->text;
  }
  return 0;
}
