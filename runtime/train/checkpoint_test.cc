#include "runtime/train/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::train {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("ckpt-" + std::to_string(::getpid()) + "-" +
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
  auto b = WriteCheckpoint(root_, 20, 0, [](const std::string& d) { return WriteFiles(d, "twenty"); });
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
  ASSERT_TRUE(WriteCheckpoint(root_, 10, 0, [](const std::string& d) { return WriteFiles(d, "ten"); }).ok());
  auto b = WriteCheckpoint(root_, 20, 0, [](const std::string& d) { return WriteFiles(d, "twenty"); });
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
  ASSERT_TRUE(WriteCheckpoint(root_, 5, 0, [](const std::string& d) { return WriteFiles(d, "five"); }).ok());
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
  auto a = WriteCheckpoint(root_, 1, 0, [](const std::string& d) { return WriteFiles(d, "payload"); });
  ASSERT_TRUE(a.ok());
  fs::resize_file(*a + "/adapter/adapter_model.safetensors", 3);
  EXPECT_THAT(VerifyCheckpoint(*a).message(), HasSubstr("size 3 != 7"));
  auto b = WriteCheckpoint(root_, 2, 0, [](const std::string& d) { return WriteFiles(d, "payload"); });
  ASSERT_TRUE(b.ok());
  std::ofstream(*b + "/stray.bin") << "x";
  EXPECT_THAT(VerifyCheckpoint(*b).message(), HasSubstr("stray.bin is not in the manifest"));
}

TEST_F(CheckpointTest, KeepLastPrunesOldest) {
  for (int step : {1, 2, 3, 4}) {
    ASSERT_TRUE(WriteCheckpoint(root_, step, 2, [](const std::string& d) { return WriteFiles(d, "x"); }).ok());
  }
  std::vector<FoundCheckpoint> all = ListCheckpoints(root_);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].step, 3);
  EXPECT_EQ(all[1].step, 4);
}

TEST_F(CheckpointTest, FailedWriteLeavesPreviousIntactAndNoTemp) {
  ASSERT_TRUE(WriteCheckpoint(root_, 1, 0, [](const std::string& d) { return WriteFiles(d, "one"); }).ok());
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
  ASSERT_TRUE(WriteCheckpoint(root_, 1, 0, [](const std::string& d) { return WriteFiles(d, "one"); }).ok());
  fs::create_directories(root_ / ".tmp-step-00000002-99999/adapter");
  std::ofstream(root_ / ".tmp-step-00000002-99999/adapter/adapter_model.safetensors") << "half";
  fs::create_directories(root_ / "step-00000001.old-99998");
  ASSERT_EQ(ListCheckpoints(root_).size(), 1u);
  std::vector<std::string> skipped;
  ASSERT_EQ(FindLatestCheckpoint(root_, &skipped)->step, 1);
  EXPECT_TRUE(skipped.empty());
  ASSERT_TRUE(WriteCheckpoint(root_, 2, 0, [](const std::string& d) { return WriteFiles(d, "two"); }).ok());
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
  auto r = WriteCheckpoint(gone.string(), 1, 0, [](const std::string& d) { return WriteFiles(d, "one"); });
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_THAT(r.status().message(), HasSubstr(gone.string()));
  EXPECT_THAT(r.status().message(), HasSubstr("No such file or directory"));
  EXPECT_FALSE(fs::exists(root_ / "job"));
  fs::create_directories(root_ / "job");
  EXPECT_TRUE(WriteCheckpoint(gone.string(), 1, 0, [](const std::string& d) { return WriteFiles(d, "one"); }).ok());
}

TEST_F(CheckpointTest, NoCheckpointIsNotFound) {
  std::vector<std::string> skipped;
  EXPECT_EQ(FindLatestCheckpoint(root_, &skipped).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace fjord::train
