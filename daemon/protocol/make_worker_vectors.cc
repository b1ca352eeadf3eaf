// Writes the worker protocol's test vectors (docs/protocol.md §10) into a
// directory:
//   bazel run //daemon/protocol:make_worker_vectors -- $PWD/tests/protocol/worker_vectors
#include <cstdio>
#include <fstream>
#include <string>

#include "daemon/protocol/worker_vectors.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_worker_vectors DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  for (const fjord::protocol::WorkerTestVector& v : fjord::protocol::BuildWorkerTestVectors()) {
    std::ofstream f(dir + "/" + v.name + ".msg", std::ios::binary);
    f << v.bytes;
    std::ofstream m(dir + "/" + v.name + ".json");
    m << v.manifest.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    if (!f || !m) {
      std::fprintf(stderr, "make_worker_vectors: cannot write %s/%s.*\n", dir.c_str(),
                   v.name.c_str());
      return 1;
    }
  }
  return 0;
}
