#include "daemon/protocol/curve_keys.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/util/status_macros.h"

namespace fjord {
namespace {

absl::StatusOr<std::string> ReadKeyLine(const std::string& path, const char* what) {
  std::ifstream f(path);
  if (!f) {
    if (errno == ENOENT)
      return absl::NotFoundError(absl::StrCat(what, " file ", path, " does not exist"));
    return absl::PermissionDeniedError(
        absl::StrCat("cannot read ", what, " file ", path, ": ", std::strerror(errno)));
  }
  std::stringstream s;
  s << f.rdbuf();
  std::string text(absl::StripAsciiWhitespace(s.str()));
  if (!ValidZ85Key(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " file ", path, " does not hold a Z85 CURVE key (40 characters)"));
  }
  return text;
}

absl::Status WriteWithMode(const std::string& path, const std::string& text, mode_t mode,
                           bool exclusive) {
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC), mode);
  if (fd < 0) {
    if (errno == EEXIST)
      return absl::AlreadyExistsError(absl::StrCat(path, " exists; not overwriting a key"));
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fchmod(fd, mode) == 0 && ::fsync(fd) == 0;
  const int e = errno;
  ::close(fd);
  if (!ok) return absl::InternalError(absl::StrCat("cannot write ", path, ": ", std::strerror(e)));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CurveKeyPair> GenerateCurveKeyPair() {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) {
    return absl::InternalError(absl::StrCat("zmq_curve_keypair: ", zmq_strerror(zmq_errno()),
                                            " (libzmq built without CURVE?)"));
  }
  return CurveKeyPair{pub, sec};
}

bool ValidZ85Key(absl::string_view key) {
  if (key.size() != 40) return false;
  const std::string k(key);
  uint8_t raw[32];
  return zmq_z85_decode(raw, k.c_str()) != nullptr;
}

absl::StatusOr<std::string> CurvePublicKey(absl::string_view secret_key) {
  if (!ValidZ85Key(secret_key)) return absl::InvalidArgumentError("not a Z85 CURVE secret key");
  const std::string s(secret_key);
  char pub[41];
  if (zmq_curve_public(pub, s.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("zmq_curve_public: ", zmq_strerror(zmq_errno())));
  }
  return std::string(pub);
}

absl::StatusOr<CurveKeyPair> LoadCurveSecretKeyFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT)
      return absl::NotFoundError(absl::StrCat("secret key file ", path, " does not exist"));
    return absl::PermissionDeniedError(
        absl::StrCat("cannot stat ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("secret key file ", path, " is not a regular file"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrFormat(
        "secret key file %s has mode %04o: group or others can access it; run chmod 600 %s", path,
        st.st_mode & 07777, path));
  }
  FJORD_ASSIGN_OR_RETURN(std::string secret, ReadKeyLine(path, "secret key"));
  FJORD_ASSIGN_OR_RETURN(std::string pub, CurvePublicKey(secret));
  return CurveKeyPair{pub, secret};
}

absl::StatusOr<std::string> LoadCurvePublicKeyFile(const std::string& path) {
  return ReadKeyLine(path, "public key");
}

absl::Status WriteCurveKeyFiles(const std::string& prefix, const CurveKeyPair& keys) {
  FJORD_RETURN_IF_ERROR(
      WriteWithMode(prefix + ".key", keys.secret_key + "\n", 0600, /*exclusive=*/true));
  return WriteWithMode(prefix + ".pub", keys.public_key + "\n", 0644, /*exclusive=*/false);
}

}  // namespace fjord
