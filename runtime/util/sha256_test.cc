#include "runtime/util/sha256.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord {
namespace {

using ::testing::HasSubstr;

// FIPS 180-2 test vectors.
constexpr char kEmpty[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr char kAbc[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr char kTwoBlocks[] = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), kEmpty);
  EXPECT_EQ(Sha256Hex("abc"), kAbc);
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"), kTwoBlocks);
}

TEST(Sha256Test, StreamingMatchesOneShotAndResets) {
  const std::string data(100000, 'z');
  Sha256 h;
  for (size_t i = 0; i < data.size(); i += 333) h.Update(absl::string_view(data).substr(i, 333));
  EXPECT_EQ(h.FinalHex(), Sha256Hex(data));
  h.Update("abc");
  EXPECT_EQ(h.FinalHex(), kAbc);  // fresh after FinalHex
  EXPECT_EQ(h.FinalHex(), kEmpty);
}

TEST(Sha256Test, FileThroughEnv) {
  std::unique_ptr<Env> env = NewMemEnv();
  ASSERT_TRUE(env->WriteFileAtomic("/abc", "abc").ok());
  ASSERT_TRUE(env->WriteFileAtomic("/empty", "").ok());
  EXPECT_EQ(*Sha256File(env.get(), "/abc"), kAbc);
  EXPECT_EQ(*Sha256File(env.get(), "/empty"), kEmpty);
  const auto missing = Sha256File(env.get(), "/missing");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/missing"));
}

}  // namespace
}  // namespace fjord
