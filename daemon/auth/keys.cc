#include "daemon/auth/keys.h"

#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/protocol/curve_keys.h"
#include "daemon/protocol/messages.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {

std::optional<Principal> KeyRing::Find(absl::string_view public_key) const {
  auto it = keys_.find(std::string(public_key));
  if (it == keys_.end()) return std::nullopt;
  return it->second;
}

namespace {

absl::StatusOr<std::shared_ptr<const KeyRing>> ParseKeys(absl::string_view yaml,
                                                         absl::string_view name) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not valid YAML: ", e.what()));
  }
  if (!root.IsMap() || !root["clients"] || !root["clients"].IsSequence()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected a mapping with a 'clients' list"));
  }
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (!it->first.IsScalar()) {
      return absl::InvalidArgumentError(absl::StrCat(name, ":", it->first.Mark().line + 1,
                                                     ": field names must be plain strings"));
    }
    if (it->first.as<std::string>() != "clients") {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": unknown field '", it->first.as<std::string>(), "'"));
    }
  }
  std::map<std::string, Principal> keys;
  int index = 0;
  for (const YAML::Node& entry : root["clients"]) {
    const std::string where =
        absl::StrCat(name, ":", entry.Mark().line + 1, ": clients[", index++, "]");
    if (!entry.IsMap())
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected a mapping"));
    Principal p;
    std::string key, role = "tenant";
    for (auto f = entry.begin(); f != entry.end(); ++f) {
      if (!f->first.IsScalar())
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": field names must be plain strings"));
      const std::string k = f->first.as<std::string>();
      if (!f->second.IsScalar())
        return absl::InvalidArgumentError(absl::StrCat(where, ".", k, ": expected a string"));
      const std::string v = f->second.as<std::string>();
      if (k == "name")
        p.key_name = v;
      else if (k == "public_key")
        key = v;
      else if (k == "tenant")
        p.tenant = v;
      else if (k == "role")
        role = v;
      else
        return absl::InvalidArgumentError(absl::StrCat(where, ": unknown field '", k, "'"));
    }
    if (!ValidZ85Key(key)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".public_key: not a Z85 CURVE public key (40 characters)"));
    }
    if (!protocol::ValidTenantName(p.tenant)) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".tenant: '", p.tenant, "' is not a valid tenant name ([a-z0-9][a-z0-9_-]*)"));
    }
    if (role != "tenant" && role != "admin") {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".role: '", role, "' is not tenant or admin"));
    }
    p.admin = role == "admin";
    if (p.key_name.empty()) p.key_name = key.substr(0, 8);
    if (!keys.emplace(key, p).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".public_key: the same key is listed twice"));
    }
  }
  return std::make_shared<const KeyRing>(std::move(keys));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const KeyRing>> ParseKeysFile(absl::string_view yaml,
                                                             absl::string_view name) {
  // yaml-cpp throws on conversions the checks above do not foresee: never let
  // one escape (fjordd would abort on a bad keys file).
  try {
    return ParseKeys(yaml, name);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", e.what()));
  }
}

namespace {

absl::Status StatKeyFile(const std::string& path, absl::string_view what, struct stat* st) {
  if (::stat(path.c_str(), st) == 0) return absl::OkStatus();
  if (errno == ENOENT) return absl::NotFoundError(absl::StrCat(what, " ", path, " does not exist"));
  return absl::PermissionDeniedError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// The owner check of CheckKeyFileOwner on a file already stat()ed.
absl::Status CheckOwner(const struct stat& st, const std::string& path, absl::string_view what) {
  const uid_t me = ::geteuid();
  if (st.st_uid != 0 && st.st_uid != me) {
    return absl::PermissionDeniedError(
        absl::StrFormat("%s %s is owned by uid %d, who can change it: it must belong to root or to "
                        "fjordd's user (uid %d); run chown %d %s",
                        what, path, st.st_uid, me, me, path));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckKeyFileOwner(const std::string& path, absl::string_view what) {
  struct stat st {};
  FJORD_RETURN_IF_ERROR(StatKeyFile(path, what, &st));
  return CheckOwner(st, path, what);
}

absl::StatusOr<std::string> LoadBearerTokenFile(const std::string& path, absl::string_view what) {
  struct stat st {};
  FJORD_RETURN_IF_ERROR(StatKeyFile(path, what, &st));
  if (!S_ISREG(st.st_mode))
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, " is not a regular file"));
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(
        absl::StrFormat("%s %s has mode %04o: group or others can access it; run chmod 600 %s",
                        what, path, st.st_mode & 07777, path));
  }
  FJORD_RETURN_IF_ERROR(CheckOwner(st, path, what));
  std::ifstream f(path, std::ios::binary);
  std::stringstream text;
  text << f.rdbuf();
  const std::string token(absl::StripAsciiWhitespace(text.str()));
  const bool printable =
      std::all_of(token.begin(), token.end(), [](char ch) { return ch > ' ' && ch < 127; });
  if (token.size() < 16 || token.size() > 4096 || !printable) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", path,
                     ": the token must be 16 to 4096 printable ASCII characters without spaces"));
  }
  return token;
}

absl::StatusOr<std::shared_ptr<const KeyRing>> LoadKeysFile(const std::string& path) {
  struct stat st {};
  FJORD_RETURN_IF_ERROR(StatKeyFile(path, "keys file", &st));
  FJORD_RETURN_IF_ERROR(CheckOwner(st, path, "keys file"));
  if ((st.st_mode & 022) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "keys file %s has mode %04o: group or others can change who may connect; run chmod 644 %s",
        path, st.st_mode & 07777, path));
  }
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return ParseKeysFile(s.str(), path);
}

}  // namespace fjord::daemon
