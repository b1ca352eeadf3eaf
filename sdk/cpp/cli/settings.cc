#include "sdk/cpp/cli/settings.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "daemon/protocol/curve_keys.h"
#include "runtime/util/status_macros.h"

namespace fjord::cli {
namespace {

constexpr const char* kKnownKeys[] = {"endpoint", "server_public_key", "keys", "timeout_s"};

bool Exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string Cwd() {
  char buf[4096];
  return ::getcwd(buf, sizeof buf) ? std::string(buf) : std::string(".");
}

std::string DirName(const std::string& path) {
  std::string abs = !path.empty() && path[0] == '/' ? path : Cwd() + "/" + path;
  const size_t slash = abs.find_last_of('/');
  return slash == 0 ? "/" : abs.substr(0, slash);
}

std::string Join(const std::string& dir, const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  return dir + "/" + path;
}

std::string ExpandUser(const std::string& path, const EnvGetter& env) {
  if (path == "~" || absl::StartsWith(path, "~/")) {
    std::optional<std::string> home = env("HOME");
    if (home) return *home + path.substr(1);
  }
  return path;
}

std::string Unquote(std::string v) {
  v = std::string(absl::StripAsciiWhitespace(v));
  if (v.size() >= 2 && v.front() == v.back() && (v.front() == '\'' || v.front() == '"')) {
    return v.substr(1, v.size() - 2);
  }
  return v;
}

bool IsKeyChar(char c, bool first) {
  return absl::ascii_isalpha(c) || c == '_' || (!first && absl::ascii_isdigit(c));
}

}  // namespace

EnvGetter ProcessEnv() {
  return [](const char* name) -> std::optional<std::string> {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
  };
}

std::string DefaultConfigPath(const EnvGetter& env) {
  if (auto p = env("FJORD_CONFIG")) return *p;
  if (auto x = env("XDG_CONFIG_HOME")) return *x + "/fjord/client.yaml";
  return env("HOME").value_or("") + "/.config/fjord/client.yaml";
}

absl::StatusOr<std::map<std::string, std::pair<std::string, std::string>>> ReadClientConfig(
    const std::string& path) {
  std::ifstream f(path);
  if (!f) {
    if (errno == ENOENT)
      return absl::NotFoundError(absl::StrCat("client config file ", path, " does not exist"));
    return absl::PermissionDeniedError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::map<std::string, std::pair<std::string, std::string>> out;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    const std::string stripped(absl::StripAsciiWhitespace(line));
    if (stripped.empty() || stripped[0] == '#' || stripped == "---") continue;
    // A '#' after whitespace starts a comment.
    std::string text = line;
    for (size_t i = 1; i < text.size(); ++i) {
      if (text[i] == '#' && absl::ascii_isspace(text[i - 1])) {
        text = text.substr(0, i);
        break;
      }
    }
    const std::string t(absl::StripAsciiWhitespace(text));
    size_t k = 0;
    while (k < t.size() && IsKeyChar(t[k], k == 0)) ++k;
    size_t colon = k;
    while (colon < t.size() && t[colon] == ' ') ++colon;
    const bool ok = k > 0 && colon < t.size() && t[colon] == ':' &&
                    (colon + 1 == t.size() || absl::ascii_isspace(t[colon + 1])) &&
                    !absl::ascii_isspace(line[0]);
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", n, ": expected 'key: value', got '", t, "'"));
    }
    const std::string key = t.substr(0, k);
    bool known = false;
    for (const char* kk : kKnownKeys) known = known || key == kk;
    if (!known) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": unknown key '", key,
                                                     "' (known: ", absl::StrJoin(kKnownKeys, ", "),
                                                     ")"));
    }
    out[key] = {Unquote(t.substr(colon + 1)), absl::StrCat(path, ":", n)};
  }
  return out;
}

absl::StatusOr<ConnectionSettings> ResolveConnection(const ConnectionFlags& flags,
                                                     const EnvGetter& env) {
  ConnectionSettings s;
  const bool explicit_file = flags.config.has_value() || env("FJORD_CONFIG").has_value();
  s.config_path = flags.config ? *flags.config : DefaultConfigPath(env);
  std::map<std::string, std::pair<std::string, std::string>> file;
  if (Exists(s.config_path)) {
    FJORD_ASSIGN_OR_RETURN(file, ReadClientConfig(s.config_path));
  } else if (explicit_file) {
    return absl::NotFoundError(
        absl::StrCat("client config file ", s.config_path, " does not exist"));
  }
  const std::string file_dir = DirName(s.config_path);
  const std::string cwd = Cwd();

  // value, base dir for relative paths.
  auto pick = [&](const std::optional<std::string>& flag, const char* flag_name,
                  const char* env_name,
                  const char* key) -> std::optional<std::pair<std::string, std::string>> {
    if (flag) {
      s.source[key] = flag_name;
      return std::make_pair(*flag, cwd);
    }
    if (auto e = env(env_name)) {
      s.source[key] = env_name;
      return std::make_pair(*e, cwd);
    }
    auto it = file.find(key);
    if (it != file.end()) {
      s.source[key] = it->second.second;
      return std::make_pair(it->second.first, file_dir);
    }
    return std::nullopt;
  };

  auto ep = pick(flags.endpoint, "--endpoint", "FJORD_ENDPOINT", "endpoint");
  if (!ep || ep->first.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no daemon endpoint: pass --endpoint, set FJORD_ENDPOINT, or write 'endpoint: "
                     "tcp://HOST:PORT' in ",
                     s.config_path));
  }
  if (!absl::StartsWith(ep->first, "tcp://") && !absl::StartsWith(ep->first, "ipc://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint must be tcp://HOST:PORT or ipc://PATH, got '", ep->first, "' (",
                     s.source["endpoint"], ")"));
  }
  s.options.endpoint = ep->first;

  if (auto sk = pick(flags.server_key, "--server-key", "FJORD_SERVER_KEY", "server_public_key")) {
    if (ValidZ85Key(sk->first)) {
      s.options.server_public_key = sk->first;
    } else {
      const std::string path = Join(sk->second, ExpandUser(sk->first, env));
      if (!Exists(path)) {
        return absl::InvalidArgumentError(absl::StrCat(
            s.source["server_public_key"],
            ": server public key is neither a Z85 key (40 characters) nor an existing file (",
            sk->first, ")"));
      }
      FJORD_ASSIGN_OR_RETURN(std::string pub, LoadCurvePublicKeyFile(path));
      s.options.server_public_key = pub;
    }
  }
  bool have_keys = false;
  if (auto k = pick(flags.keys, "--keys", "FJORD_KEYS", "keys")) {
    FJORD_ASSIGN_OR_RETURN(CurveKeyPair pair,
                           LoadCurveSecretKeyFile(Join(k->second, ExpandUser(k->first, env))));
    s.options.client_keys = pair;
    have_keys = true;
  }
  if (!s.options.server_public_key.empty() && !have_keys) {
    return absl::InvalidArgumentError(
        "a server public key needs this client's keys too: pass --keys PREFIX.key, set FJORD_KEYS, "
        "or write "
        "'keys: PATH' in the config file");
  }
  if (have_keys && s.options.server_public_key.empty()) {
    return absl::InvalidArgumentError(
        "client keys need the daemon's public key too: pass --server-key, set FJORD_SERVER_KEY, or "
        "write "
        "'server_public_key: KEY' in the config file");
  }
  if (auto t = pick(flags.timeout, "--timeout", "FJORD_TIMEOUT", "timeout_s")) {
    char* end = nullptr;
    const double v = std::strtod(t->first.c_str(), &end);
    if (t->first.empty() || *end != '\0' || !std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat("timeout must be a number of seconds, got '",
                                                     t->first, "' (", s.source["timeout_s"], ")"));
    }
    if (!(v > 0))
      return absl::InvalidArgumentError(absl::StrCat("timeout must be > 0 s, got ", t->first));
    s.options.timeout_ms = std::max(1, static_cast<int>(std::lround(v * 1000)));
  }
  return s;
}

}  // namespace fjord::cli
