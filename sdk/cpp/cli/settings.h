// Where the `fjord` CLI finds its daemon and keys. The rules are the Python
// SDK's (sdk/python/fjord/config.py), so both front ends pick the same daemon:
// each setting comes from the first of a flag, an environment variable, the
// client config file.
//
//   setting            flag          environment        config file key
//   endpoint           --endpoint    FJORD_ENDPOINT     endpoint
//   server public key  --server-key  FJORD_SERVER_KEY   server_public_key  (Z85, or a file holding
//   it) client keys        --keys        FJORD_KEYS         keys               (this client's
//   PREFIX.key) timeout (s)        --timeout     FJORD_TIMEOUT      timeout_s          (default 10)
//
// The config file is --config, else $FJORD_CONFIG, else
// $XDG_CONFIG_HOME/fjord/client.yaml, else ~/.config/fjord/client.yaml (a
// missing default file is fine). It is a flat YAML mapping of the keys above;
// relative paths in it are relative to its directory.
#ifndef FJORD_SDK_CPP_CLI_SETTINGS_H_
#define FJORD_SDK_CPP_CLI_SETTINGS_H_

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "sdk/cpp/client.h"

namespace fjord::cli {

using EnvGetter = std::function<std::optional<std::string>(const char* name)>;
// The process environment (unset and empty variables are nullopt).
EnvGetter ProcessEnv();

struct ConnectionFlags {
  std::optional<std::string> endpoint;
  std::optional<std::string> server_key;
  std::optional<std::string> keys;
  std::optional<std::string> timeout;  // seconds, as typed
  std::optional<std::string> config;
};

struct ConnectionSettings {
  ClientOptions options;                      // endpoint, keys, timeout_ms filled in
  std::map<std::string, std::string> source;  // setting -> "--endpoint", "FJORD_KEYS", "PATH:LINE"
  std::string config_path;                    // the config file looked at
};

std::string DefaultConfigPath(const EnvGetter& env);

// key -> (value, "PATH:LINE"). InvalidArgument naming the line for anything
// but flat "key: value" lines with the known keys; NotFound if missing.
absl::StatusOr<std::map<std::string, std::pair<std::string, std::string>>> ReadClientConfig(
    const std::string& path);

// Errors: InvalidArgument (no endpoint, a malformed one, a server key that is
// neither a key nor a file, keys without a server key or the reverse, a bad
// timeout) naming where the value came from; NotFound / PermissionDenied /
// InvalidArgument from the key files; NotFound for a named config file that
// does not exist.
absl::StatusOr<ConnectionSettings> ResolveConnection(const ConnectionFlags& flags,
                                                     const EnvGetter& env);

}  // namespace fjord::cli

#endif  // FJORD_SDK_CPP_CLI_SETTINGS_H_
