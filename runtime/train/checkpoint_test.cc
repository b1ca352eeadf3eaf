#include "runtime/train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/util/env.h"
#include "runtime/util/status_macros.h"

namespace fjord::train {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) /
            ("ckpt-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  static absl::Status WriteFiles(const std::string& dir, const std::string& payload) {
    fs::create_directories(dir + "/adapter");
    std::ofstream(dir + "/adapter/adapter_model.safetensors") << payload;
    std::ofstream(dir + "/trainer_state.json") << "{\"step\": 1}";
    return absl::OkStatus();
  }

  fs::path root_;
};

TEST_F(CheckpointTest, WriteVerifyAndFindLatest) {
  auto a = WriteCheckpoint(root_, 10, 0, [](const std::string& d) { return WriteFiles(d, "ten"); });
  ASSERT_TRUE(a.ok()) << a.status();
  auto b =
      WriteCheckpoint(root_, 20, 0, [](const std::string& d) { return WriteFiles(d, "twenty"); });
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(*b, (root_ / "step-00000020").string());
  EXPECT_TRUE(VerifyCheckpoint(*a).ok());
  EXPECT_TRUE(fs::exists(fs::path(*b) / "MANIFEST.json"));
  std::vector<std::string> skipped;
  auto latest = FindLatestCheckpoint(root_, &skipped);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->step, 20);
  EXPECT_TRUE(skipped.empty());
  // No temporary directories are left behind.
  for (const auto& e : fs::directory_iterator(root_)) {
    EXPECT_EQ(e.path().filename().string().rfind("step-", 0), 0u) << e.path();
  }
}

TEST_F(CheckpointTest, CorruptNewestIsSkippedWithReason) {
  ASSERT_TRUE(WriteCheckpoint(root_, 10, 0, [](const std::string& d) {
                return WriteFiles(d, "ten");
              }).ok());
  auto b =
      WriteCheckpoint(root_, 20, 0, [](const std::string& d) { return WriteFiles(d, "twenty"); });
  ASSERT_TRUE(b.ok());
  std::ofstream(*b + "/adapter/adapter_model.safetensors") << "tw3nty";  // same size, other bytes
  absl::Status v = VerifyCheckpoint(*b);
  EXPECT_EQ(v.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(v.message(), HasSubstr("adapter/adapter_model.safetensors: SHA-256 does not match"));
  std::vector<std::string> skipped;
  auto latest = FindLatestCheckpoint(root_, &skipped);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->step, 10);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], HasSubstr("step-00000020"));
}

TEST_F(CheckpointTest, TornCheckpointWithoutManifestIsSkipped) {
  ASSERT_TRUE(WriteCheckpoint(root_, 5, 0, [](const std::string& d) {
                return WriteFiles(d, "five");
              }).ok());
  fs::create_directories(root_ / "step-00000009");
  std::ofstream(root_ / "step-00000009" / "trainer_state.json") << "{";
  std::vector<std::string> skipped;
  auto latest = FindLatestCheckpoint(root_, &skipped);
  ASSERT_TRUE(latest.ok());
  EXPECT_EQ(latest->step, 5);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_THAT(skipped[0], HasSubstr("MANIFEST.json: missing"));
}

TEST_F(CheckpointTest, TruncatedAndExtraFilesDetected) {
  auto a =
      WriteCheckpoint(root_, 1, 0, [](const std::string& d) { return WriteFiles(d, "payload"); });
  ASSERT_TRUE(a.ok());
  fs::resize_file(*a + "/adapter/adapter_model.safetensors", 3);
  EXPECT_THAT(VerifyCheckpoint(*a).message(), HasSubstr("size 3 != 7"));
  auto b =
      WriteCheckpoint(root_, 2, 0, [](const std::string& d) { return WriteFiles(d, "payload"); });
  ASSERT_TRUE(b.ok());
  std::ofstream(*b + "/stray.bin") << "x";
  EXPECT_THAT(VerifyCheckpoint(*b).message(), HasSubstr("stray.bin is not in the manifest"));
}

// The chaos test's tear, made exhaustive: any one byte of any file of a
// checkpoint XORed with 0x5a (the manifest included, whose strings stay
// valid JSON) is found.
TEST_F(CheckpointTest, EveryFlippedByteOfEveryFileIsFound) {
  auto a =
      WriteCheckpoint(root_, 2, 0, [](const std::string& d) { return WriteFiles(d, "payload"); });
  ASSERT_TRUE(a.ok()) << a.status();
  int flips = 0;
  for (const auto& e : fs::recursive_directory_iterator(*a)) {
    if (!e.is_regular_file()) continue;
    const std::string path = e.path().string();
    const uint64_t size = fs::file_size(path);
    for (uint64_t at = 0; at < size; ++at) {
      auto flip = [&] {
        std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
        f.seekg(static_cast<std::streamoff>(at));
        char c = 0;
        f.get(c);
        f.seekp(static_cast<std::streamoff>(at));
        f.put(static_cast<char>(c ^ 0x5a));
      };
      flip();
      EXPECT_EQ(VerifyCheckpoint(*a).code(), absl::StatusCode::kDataLoss) << path << " byte " << at;
      flip();  // back
      ++flips;
    }
  }
  EXPECT_GT(flips, 200);
  EXPECT_TRUE(VerifyCheckpoint(*a).ok());
}

TEST_F(CheckpointTest, TheManifestsHeaderIsChecked) {
  auto a =
      WriteCheckpoint(root_, 2, 0, [](const std::string& d) { return WriteFiles(d, "payload"); });
  ASSERT_TRUE(a.ok()) << a.status();
  const std::string manifest_path = *a + "/MANIFEST.json";
  std::string original;
  {
    std::ifstream in(manifest_path);
    original.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto with = [&](const std::string& from, const std::string& to) {
    std::string text = original;
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    std::ofstream(manifest_path, std::ios::trunc) << text;
    return VerifyCheckpoint(*a);
  };
  absl::Status s = with("\"fjord.checkpoint\"", "\"fjord.checkpoinT\"");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("field \"format\""));
  s = with("\"version\": 1", "\"version\": 2");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("field \"version\" is not 1"));
  s = with("\"step\": 2", "\"step\": 3");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("field \"step\" is 3 but the directory is step 2"));
  s = with("\"step\": 2", "\"step\": \"2\"");
  EXPECT_THAT(s.message(), HasSubstr("field \"step\" is not an integer"));
  s = with("\"step\": 2", "\"step\": 2");
  EXPECT_TRUE(s.ok()) << s;
}

TEST_F(CheckpointTest, KeepLastPrunesOldest) {
  for (int step : {1, 2, 3, 4}) {
    ASSERT_TRUE(WriteCheckpoint(root_, step, 2, [](const std::string& d) {
                  return WriteFiles(d, "x");
                }).ok());
  }
  std::vector<FoundCheckpoint> all = ListCheckpoints(root_);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].step, 3);
  EXPECT_EQ(all[1].step, 4);
}

TEST_F(CheckpointTest, FailedWriteLeavesPreviousIntactAndNoTemp) {
  ASSERT_TRUE(
      WriteCheckpoint(root_, 1, 0, [](const std::string& d) { return WriteFiles(d, "one"); }).ok());
  auto bad = WriteCheckpoint(root_, 2, 0, [](const std::string& d) {
    WriteFiles(d, "partial").IgnoreError();
    return absl::ResourceExhaustedError("No space left on device");
  });
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kResourceExhausted);
  std::vector<FoundCheckpoint> all = ListCheckpoints(root_);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].step, 1);
  EXPECT_TRUE(VerifyCheckpoint(all[0].dir).ok());
  int entries = 0;
  for (const auto& e : fs::directory_iterator(root_)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

// A writer killed mid-checkpoint (kill -9) leaves its temporary directory
// (and, mid-replace, a step-*.old-* one) named with its pid; the next writer
// of the root removes them, and neither ever counts as a checkpoint.
TEST_F(CheckpointTest, TemporariesOfAKilledWriterAreRemovedByTheNextWrite) {
  ASSERT_TRUE(
      WriteCheckpoint(root_, 1, 0, [](const std::string& d) { return WriteFiles(d, "one"); }).ok());
  fs::create_directories(root_ / ".tmp-step-00000002-99999/adapter");
  std::ofstream(root_ / ".tmp-step-00000002-99999/adapter/adapter_model.safetensors") << "half";
  fs::create_directories(root_ / "step-00000001.old-99998");
  ASSERT_EQ(ListCheckpoints(root_).size(), 1u);
  std::vector<std::string> skipped;
  ASSERT_EQ(FindLatestCheckpoint(root_, &skipped)->step, 1);
  EXPECT_TRUE(skipped.empty());
  ASSERT_TRUE(
      WriteCheckpoint(root_, 2, 0, [](const std::string& d) { return WriteFiles(d, "two"); }).ok());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root_)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_THAT(names, ::testing::ElementsAre("step-00000001", "step-00000002"));
}

// The root is created, its parent never: a checkpoint under a deleted job
// directory (or an unmounted storage root) fails as Unavailable, naming the
// path, and leaves nothing behind.
TEST_F(CheckpointTest, VanishedParentIsUnavailableNotRebuilt) {
  const fs::path gone = root_ / "job" / "checkpoints";
  auto r = WriteCheckpoint(gone.string(), 1, 0,
                           [](const std::string& d) { return WriteFiles(d, "one"); });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr(gone.string()));
  EXPECT_THAT(r.status().message(), HasSubstr("No such file or directory"));
  EXPECT_FALSE(fs::exists(root_ / "job"));
  fs::create_directories(root_ / "job");
  EXPECT_TRUE(WriteCheckpoint(gone.string(), 1, 0, [](const std::string& d) {
                return WriteFiles(d, "one");
              }).ok());
}

TEST_F(CheckpointTest, NoCheckpointIsNotFound) {
  std::vector<std::string> skipped;
  EXPECT_EQ(FindLatestCheckpoint(root_, &skipped).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fjord::train
