#include "daemon/protocol/curve_keys.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord {
namespace {

using ::testing::HasSubstr;

std::string TempPrefix(const char* name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name + "-" + std::to_string(::getpid());
}

TEST(CurveKeysTest, GenerateWriteLoad) {
  absl::StatusOr<CurveKeyPair> k = GenerateCurveKeyPair();
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_TRUE(ValidZ85Key(k->public_key));
  EXPECT_EQ(*CurvePublicKey(k->secret_key), k->public_key);
  const std::string prefix = TempPrefix("gen");
  ASSERT_TRUE(WriteCurveKeyFiles(prefix, *k).ok());
  struct stat st {};
  ASSERT_EQ(::stat((prefix + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  absl::StatusOr<CurveKeyPair> back = LoadCurveSecretKeyFile(prefix + ".key");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->public_key, k->public_key);
  EXPECT_EQ(*LoadCurvePublicKeyFile(prefix + ".pub"), k->public_key);
  // Never overwrites a secret.
  EXPECT_EQ(WriteCurveKeyFiles(prefix, *k).code(), absl::StatusCode::kAlreadyExists);
}

TEST(CurveKeysTest, RefusesReadableSecretKeyWithoutLeakingIt) {
  absl::StatusOr<CurveKeyPair> k = GenerateCurveKeyPair();
  const std::string prefix = TempPrefix("perm");
  ASSERT_TRUE(WriteCurveKeyFiles(prefix, *k).ok());
  ASSERT_EQ(::chmod((prefix + ".key").c_str(), 0640), 0);
  absl::StatusOr<CurveKeyPair> back = LoadCurveSecretKeyFile(prefix + ".key");
  EXPECT_EQ(back.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(back.status().message(), HasSubstr("chmod 600"));
  EXPECT_THAT(back.status().message(), HasSubstr("0640"));
  EXPECT_EQ(std::string(back.status().message()).find(k->secret_key), std::string::npos);
}

TEST(CurveKeysTest, BadFiles) {
  EXPECT_EQ(LoadCurveSecretKeyFile("/nonexistent/x.key").status().code(),
            absl::StatusCode::kNotFound);
  const std::string path = TempPrefix("bad") + ".key";
  {
    std::ofstream f(path);
    f << "not a key\n";
  }
  ::chmod(path.c_str(), 0600);
  absl::StatusOr<CurveKeyPair> k = LoadCurveSecretKeyFile(path);
  EXPECT_EQ(k.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(k.status().message(), HasSubstr("does not hold a Z85 CURVE key"));
  EXPECT_FALSE(ValidZ85Key("short"));
}

}  // namespace
}  // namespace fjord
