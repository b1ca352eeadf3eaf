// fjord: the command line for fjordd (see cli.h; `fjord --help`).
#include <unistd.h>

#include <climits>
#include <string>
#include <vector>

#include "sdk/cpp/cli/cli.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  char self[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  const std::string self_path =
      n > 0 ? std::string(self, static_cast<size_t>(n)) : std::string(argv[0]);
  return fjord::cli::Main(args, stdout, stderr, fjord::cli::ProcessEnv(), self_path);
}
