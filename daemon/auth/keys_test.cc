#include "daemon/auth/keys.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "daemon/protocol/curve_keys.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::HasSubstr;

TEST(KeysTest, Parses) {
  const std::string a = GenerateCurveKeyPair()->public_key, b = GenerateCurveKeyPair()->public_key;
  auto ring = ParseKeysFile("clients:\n  - name: ci\n    public_key: \"" + a +
                                "\"\n    tenant: acme\n"
                                "  - public_key: \"" +
                                b + "\"\n    tenant: ops\n    role: admin\n",
                            "clients.yaml");
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_EQ((*ring)->Find(a)->tenant, "acme");
  EXPECT_FALSE((*ring)->Find(a)->admin);
  EXPECT_TRUE((*ring)->Find(b)->admin);
  EXPECT_FALSE((*ring)->Find("x").has_value());
}

TEST(KeysTest, Errors) {
  const std::string a = GenerateCurveKeyPair()->public_key;
  const std::string entry = "clients:\n  - public_key: \"" + a + "\"\n    tenant: acme\n";
  EXPECT_THAT(
      ParseKeysFile("clients:\n  - public_key: abc\n    tenant: acme\n", "k").status().message(),
      HasSubstr("k:2: clients[0].public_key: not a Z85"));
  EXPECT_THAT(ParseKeysFile("clients:\n  - public_key: \"" + a + "\"\n    tenant: ../x\n", "k")
                  .status()
                  .message(),
              HasSubstr("not a valid tenant name"));
  EXPECT_THAT(ParseKeysFile(entry + "    role: root\n", "k").status().message(),
              HasSubstr("'root' is not tenant or admin"));
  EXPECT_THAT(ParseKeysFile(entry + "    colour: red\n", "k").status().message(),
              HasSubstr("unknown field 'colour'"));
  EXPECT_THAT(ParseKeysFile(entry + "  - public_key: \"" + a + "\"\n    tenant: b\n", "k")
                  .status()
                  .message(),
              HasSubstr("listed twice"));
  EXPECT_THAT(ParseKeysFile("[", "k").status().message(), HasSubstr("not valid YAML"));
}

// Regression (found by tests/fuzz/keys_file_fuzz.cc): a mapping or list used
// as a field name made yaml-cpp throw out of ParseKeysFile, aborting fjordd.
TEST(KeysTest, NonScalarFieldNamesAreErrorsNotCrashes) {
  const std::string a = GenerateCurveKeyPair()->public_key;
  EXPECT_THAT(
      ParseKeysFile("{a: b}: c\nclients: []\n", "k").status(),
      ::testing::AllOf(::testing::Property(&absl::Status::code, absl::StatusCode::kInvalidArgument),
                       ::testing::Property(&absl::Status::message,
                                           HasSubstr("k:1: field names must be plain strings"))));
  absl::Status s =
      ParseKeysFile("clients:\n  - {[x]: 1, public_key: \"" + a + "\", tenant: acme}\n", "k")
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("k:2: clients[0]: field names must be plain strings"));
  s = ParseKeysFile("clients:\n  - {name: [x], public_key: \"" + a + "\", tenant: acme}\n", "k")
          .status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("clients[0].name: expected a string"));
}

TEST(KeysTest, WritableKeysFileIsRefused) {
  const std::string path = ::testing::TempDir() + "/keys-" + std::to_string(::getpid()) + ".yaml";
  std::ofstream(path) << "clients: []\n";
  ::chmod(path.c_str(), 0664);
  auto r = LoadKeysFile(path);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r.status().message(), HasSubstr("chmod 644"));
  ::chmod(path.c_str(), 0644);
  EXPECT_TRUE(LoadKeysFile(path).ok());
  EXPECT_EQ(LoadKeysFile(path + ".none").status().code(), absl::StatusCode::kNotFound);
}

// A keys file another user owns can be changed by that user whatever its
// mode: refused unless root or this process's user owns it.
TEST(KeysTest, KeysFileOwnedByAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  const std::string path =
      ::testing::TempDir() + "/keys-owner-" + std::to_string(::getpid()) + ".yaml";
  std::ofstream(path) << "clients: []\n";
  ::chmod(path.c_str(), 0644);
  ASSERT_EQ(::chown(path.c_str(), 65534, 65534), 0);
  auto r = LoadKeysFile(path);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(r.status().message(), HasSubstr("keys file " + path + " is owned by uid 65534"));
  EXPECT_THAT(r.status().message(), HasSubstr("run chown 0 " + path));
  EXPECT_EQ(CheckKeyFileOwner(path, "server secret key file").code(),
            absl::StatusCode::kPermissionDenied);
  ASSERT_EQ(::chown(path.c_str(), 0, 0), 0);
  EXPECT_TRUE(LoadKeysFile(path).ok());
  EXPECT_EQ(CheckKeyFileOwner(path + ".none", "keys file").code(), absl::StatusCode::kNotFound);
  ::unlink(path.c_str());
}

// metrics.bearer_token_file: a 0600 file; the token without surrounding
// whitespace, 16..4096 printable characters and no spaces.
TEST(KeysTest, BearerTokenFile) {
  const std::string path =
      ::testing::TempDir() + "/metrics-" + std::to_string(::getpid()) + ".token";
  std::ofstream(path) << "  0123456789abcdef-token\n";
  ::chmod(path.c_str(), 0600);
  absl::StatusOr<std::string> t = LoadBearerTokenFile(path);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t, "0123456789abcdef-token");
  ::chmod(path.c_str(), 0640);
  EXPECT_THAT(LoadBearerTokenFile(path).status().message(),
              HasSubstr("has mode 0640: group or others can access it"));
  std::ofstream(path, std::ios::trunc) << "short\n";
  ::chmod(path.c_str(), 0600);
  EXPECT_THAT(LoadBearerTokenFile(path).status().message(),
              HasSubstr("16 to 4096 printable ASCII characters"));
  std::ofstream(path, std::ios::trunc) << "0123456789 abcdef\n";
  EXPECT_THAT(LoadBearerTokenFile(path).status().message(), HasSubstr("without spaces"));
  EXPECT_EQ(LoadBearerTokenFile(path + ".none").status().code(), absl::StatusCode::kNotFound);
  ::unlink(path.c_str());
}

}  // namespace
}  // namespace fjord::daemon
