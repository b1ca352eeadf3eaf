// Writes the protocol test vectors (docs/protocol.md §9) into a directory:
//   bazel run //daemon/protocol:make_vectors -- $PWD/tests/protocol/vectors
#include <cstdio>
#include <fstream>
#include <string>

#include "daemon/protocol/errors.h"
#include "daemon/protocol/vectors.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_vectors DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  for (const fjord::protocol::TestVector& v : fjord::protocol::BuildTestVectors()) {
    std::ofstream f(dir + "/" + v.name + ".frames", std::ios::binary);
    f << fjord::protocol::EncodeFrameFile(v.frames);
    std::ofstream m(dir + "/" + v.name + ".json");
    m << v.manifest.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    if (!f || !m) {
      std::fprintf(stderr, "make_vectors: cannot write %s/%s.*\n", dir.c_str(), v.name.c_str());
      return 1;
    }
  }
  return 0;
}
