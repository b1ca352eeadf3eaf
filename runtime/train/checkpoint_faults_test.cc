// VerifyCheckpoint, WriteCheckpoint and FindLatestCheckpoint under storage
// faults (a full, failing or read-only disk) injected through the Env; the
// plain cases are in checkpoint_test.cc.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/train/checkpoint.h"
#include "runtime/util/env.h"
#include "runtime/util/status_macros.h"

namespace fjord::train {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// The same storage faults a full, failing or read-only disk causes, injected
// with a FaultInjectionEnv, so they run without root and without mounts:
// over the POSIX Env (a real temp directory) and over MemEnv. Each checks
// that the error names the operation and the path, that the checkpoint
// before it stays intact and is the one found, that no step-* directory that
// does not verify ever exists, and that the next write succeeds and leaves no
// temporary behind. (tests/chaos/storage_faults_test.cc keeps what needs a
// real mount: another process seeing the storage fill up, turn read-only or
// vanish.)

using Op = FaultInjectionEnv::Op;

constexpr size_t kPayloadBytes = 48 << 10;
constexpr size_t kChunkBytes = 4 << 10;
constexpr char kState[] = "{\"step\": 1}";

absl::Status Eio() { return absl::UnavailableError("Input/output error"); }

std::string StepName(int64_t step) { return absl::StrFormat("step-%08d", step); }

// Every fault test runs over the POSIX Env (true) and over MemEnv (false).
class CheckpointFaultTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      base_ = Env::Default();
      const char* tmp = std::getenv("TEST_TMPDIR");
      std::string tmpl = absl::StrCat(tmp ? tmp : "/tmp", "/ckpt_faults.XXXXXX");
      ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
      dir_ = tmpl;
    } else {
      mem_ = NewMemEnv();
      base_ = mem_.get();
      dir_ = "/job";
      ASSERT_TRUE(base_->CreateDirs(dir_).ok());
    }
    root_ = JoinPath(dir_, "checkpoints");
    env_ = std::make_unique<FaultInjectionEnv>(base_);
  }
  void TearDown() override {
    if (GetParam() && !dir_.empty()) {
      EXPECT_TRUE(base_->DeleteRecursively(dir_).ok());
    }
  }

  static std::string Payload(char c) { return std::string(kPayloadBytes, c); }

  // Fills a checkpoint directory through `env` as the trainer does: the
  // adapter weights appended in chunks, trainer_state.json, no fsyncs (the
  // checkpoint does them).
  static absl::Status WriteFiles(Env* env, const std::string& dir, const std::string& payload) {
    FJORD_RETURN_IF_ERROR(env->CreateDir(JoinPath(dir, "adapter")));
    FJORD_ASSIGN_OR_RETURN(
        std::unique_ptr<WritableFile> weights,
        env->NewWritableFile(JoinPath(dir, "adapter/adapter_model.safetensors")));
    for (size_t at = 0; at < payload.size(); at += kChunkBytes) {
      FJORD_RETURN_IF_ERROR(weights->Append(absl::string_view(payload).substr(at, kChunkBytes)));
    }
    FJORD_RETURN_IF_ERROR(weights->Close());
    FJORD_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> state,
                           env->NewWritableFile(JoinPath(dir, "trainer_state.json")));
    FJORD_RETURN_IF_ERROR(state->Append(kState));
    return state->Close();
  }

  absl::StatusOr<std::string> Write(FaultInjectionEnv* env, const std::string& root, int64_t step,
                                    char fill = 0, int64_t keep_last = 0) {
    const std::string payload = Payload(fill != 0 ? fill : static_cast<char>('a' + step % 26));
    return WriteCheckpoint(
        root, step, keep_last, [&](const std::string& d) { return WriteFiles(env, d, payload); },
        env);
  }
  absl::StatusOr<std::string> Write(int64_t step, char fill = 0, int64_t keep_last = 0) {
    return Write(env_.get(), root_, step, fill, keep_last);
  }

  // Checkpoint `step` under root is there, verifies (read without faults)
  // and holds the weights written with `fill`.
  void ExpectIntact(const std::string& root, int64_t step, char fill = 0) {
    const std::string dir = JoinPath(root, StepName(step));
    EXPECT_TRUE(VerifyCheckpoint(dir, base_).ok()) << dir << ": " << VerifyCheckpoint(dir, base_);
    EXPECT_EQ(
        base_->ReadFileToString(JoinPath(dir, "adapter/adapter_model.safetensors")).value_or(""),
        Payload(fill != 0 ? fill : static_cast<char>('a' + step % 26)))
        << dir;
  }
  void ExpectIntact(int64_t step, char fill = 0) { ExpectIntact(root_, step, fill); }

  // The checkpoint found (without faults) is `step`, and every step-*
  // directory under root verifies: none torn, none half-written.
  void ExpectLatest(const std::string& root, int64_t step) {
    std::vector<std::string> skipped;
    absl::StatusOr<FoundCheckpoint> found = FindLatestCheckpoint(root, &skipped, base_);
    ASSERT_TRUE(found.ok()) << found.status();
    EXPECT_EQ(found->step, step);
    EXPECT_EQ(found->dir, JoinPath(root, StepName(step)));
    EXPECT_THAT(skipped, ::testing::IsEmpty());
    for (const FoundCheckpoint& c : ListCheckpoints(root, base_)) {
      EXPECT_TRUE(VerifyCheckpoint(c.dir, base_).ok())
          << "a step-* directory that does not verify: " << c.dir;
    }
  }
  void ExpectLatest(int64_t step) { ExpectLatest(root_, step); }

  // Names under root (sorted).
  std::vector<std::string> Entries(const std::string& root) {
    return base_->ListDir(root).value_or(std::vector<std::string>());
  }
  std::vector<std::string> Entries() { return Entries(root_); }

  // "<root>/.tmp-step-<step>-": how the temporary directory's path starts.
  std::string TmpPrefix(int64_t step) {
    return JoinPath(root_, absl::StrCat(".tmp-", StepName(step), "-"));
  }

  std::unique_ptr<Env> mem_;
  Env* base_ = nullptr;
  std::unique_ptr<FaultInjectionEnv> env_;
  std::string dir_, root_;
};

INSTANTIATE_TEST_SUITE_P(PosixAndMem, CheckpointFaultTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Posix" : "Mem"; });

// The Env alone, no faults: write, find, replace, prune, remove what a killed
// writer left. On MemEnv this is the same code path as on disk.
TEST_P(CheckpointFaultTest, WriteFindReplaceAndPruneThroughTheEnv) {
  ASSERT_TRUE(Write(1).ok());
  absl::StatusOr<std::string> two = Write(2);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(*two, JoinPath(root_, "step-00000002"));
  ExpectLatest(2);
  ExpectIntact(1);
  // The same step again replaces it.
  ASSERT_TRUE(Write(2, 'z').ok());
  ExpectIntact(2, 'z');
  // A killed writer's temporaries are removed by the next write; keep_last prunes.
  ASSERT_TRUE(base_->CreateDirs(JoinPath(root_, ".tmp-step-00000003-99999/adapter")).ok());
  ASSERT_TRUE(base_->CreateDirs(JoinPath(root_, "step-00000001.old-99998")).ok());
  EXPECT_EQ(ListCheckpoints(root_, base_).size(), 2u);
  ASSERT_TRUE(Write(3, 0, /*keep_last=*/2).ok());
  EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000002", "step-00000003"));
  ExpectLatest(3);
  EXPECT_EQ(env_->faults_injected(), 0);
}

// The disk fills up while a checkpoint file is being written: the short
// write fails the checkpoint with ResourceExhausted naming the file; the
// previous checkpoint is intact and is the one found; nothing is left.
TEST_P(CheckpointFaultTest, DiskFullMidWriteOfACheckpointFile) {
  ASSERT_TRUE(Write(1).ok());
  env_->FailWritesAfterBytes(kPayloadBytes / 2);
  const absl::StatusOr<std::string> r = Write(2);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("write " + TmpPrefix(2)));
  EXPECT_THAT(
      std::string(r.status().message()),
      HasSubstr("/adapter/adapter_model.safetensors: No space left on device (injected fault)"));
  EXPECT_EQ(env_->bytes_written(),
            kPayloadBytes + sizeof(kState) - 1 + kPayloadBytes / 2 +
                *base_->FileSize(JoinPath(root_, "step-00000001/MANIFEST.json")));
  ExpectLatest(1);
  ExpectIntact(1);
  EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000001"));
  env_->ClearFaults();
  ASSERT_TRUE(Write(2).ok());
  ExpectLatest(2);
}

// The disk fills up just after the files, while the checkpoint writes its
// own MANIFEST.json.
TEST_P(CheckpointFaultTest, DiskFullWritingTheManifest) {
  ASSERT_TRUE(Write(1).ok());
  env_->FailWritesAfterBytes(kPayloadBytes + sizeof(kState) - 1 + 10);
  const absl::StatusOr<std::string> r = Write(2);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("write " + TmpPrefix(2)));
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("/MANIFEST.json: No space left on device"));
  ExpectLatest(1);
  ExpectIntact(1);
  EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000001"));
}

// fsync fails (EIO) on each file of the new checkpoint in turn: the
// checkpoint fails (Internal, as any I/O error) naming the file and fsync.
TEST_P(CheckpointFaultTest, FailingFsyncOfACheckpointFile) {
  ASSERT_TRUE(Write(1).ok());
  for (const std::string file :
       {"/adapter/adapter_model.safetensors", "/trainer_state.json", "/MANIFEST.json"}) {
    SCOPED_TRACE(file);
    env_->FailCallsIf(
        Op::kSync, [file](absl::string_view p) { return absl::EndsWith(p, file); }, Eio());
    const absl::StatusOr<std::string> r = Write(2);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("fsync " + TmpPrefix(2)));
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr(file + ": Input/output error (injected fault)"));
    ExpectLatest(1);
    ExpectIntact(1);
    EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000001"));
    env_->ClearFaults();
  }
  ASSERT_TRUE(Write(2).ok());
  ExpectLatest(2);
}

// The rename of the finished temporary directory into place fails.
TEST_P(CheckpointFaultTest, FailingRenameIntoPlace) {
  ASSERT_TRUE(Write(1).ok());
  env_->FailCallsIf(
      Op::kRename, [&](absl::string_view p) { return absl::StartsWith(p, TmpPrefix(2)); }, Eio());
  const absl::StatusOr<std::string> r = Write(2);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("rename " + TmpPrefix(2)));
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr(" to " + JoinPath(root_, "step-00000002") +
                        ": Input/output error (injected fault)"));
  ExpectLatest(1);
  ExpectIntact(1);
  EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000001"));
  env_->ClearFaults();
  ASSERT_TRUE(Write(2).ok());
  ExpectLatest(2);
}

// Rewriting a step that exists (a resumed run repeating it) moves the old
// one aside first: when the new one cannot be renamed into place the old one
// is put back, whole.
TEST_P(CheckpointFaultTest, FailingRenameWhenReplacingAStepPutsTheOldOneBack) {
  ASSERT_TRUE(Write(1).ok());
  ASSERT_TRUE(Write(2, 'o').ok());
  env_->FailCallsIf(
      Op::kRename, [&](absl::string_view p) { return absl::StartsWith(p, TmpPrefix(2)); }, Eio());
  const absl::StatusOr<std::string> r = Write(2, 'n');
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("rename " + TmpPrefix(2)));
  ExpectLatest(2);
  ExpectIntact(2, 'o');
  ExpectIntact(1);
  EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000001", "step-00000002"));
  env_->ClearFaults();
  ASSERT_TRUE(Write(2, 'n').ok());
  ExpectIntact(2, 'n');
  EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000001", "step-00000002"));
}

// fsync of the new checkpoint's directories (before the rename) fails.
TEST_P(CheckpointFaultTest, FailingDirectoryFsyncBeforeTheRename) {
  ASSERT_TRUE(Write(1).ok());
  for (const std::string sub : {"", "/adapter"}) {
    SCOPED_TRACE(sub);
    env_->FailCallsIf(
        Op::kSyncDir,
        [&](absl::string_view p) {
          return absl::StartsWith(p, TmpPrefix(2)) && absl::EndsWith(p, sub);
        },
        Eio());
    const absl::StatusOr<std::string> r = Write(2);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
    EXPECT_THAT(std::string(r.status().message()), HasSubstr("fsync directory " + TmpPrefix(2)));
    EXPECT_THAT(std::string(r.status().message()),
                HasSubstr(sub + ": Input/output error (injected fault)"));
    ExpectLatest(1);
    ExpectIntact(1);
    EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000001"));
    env_->ClearFaults();
  }
}

// fsync of the root after the rename fails: the error names the root; the
// new checkpoint is in place and whole (whether its rename is durable is
// unknown, and either it or the previous one is found after a crash), and
// nothing older is pruned: keep_last waits for a write that fully succeeds.
TEST_P(CheckpointFaultTest, FailingRootFsyncAfterTheRenamePrunesNothing) {
  ASSERT_TRUE(Write(1, 0, /*keep_last=*/1).ok());
  env_->FailCallsIf(
      Op::kSyncDir, [&](absl::string_view p) { return p == root_; }, Eio());
  const absl::StatusOr<std::string> r = Write(2, 0, /*keep_last=*/1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("fsync directory " + root_ + ": Input/output error (injected fault)"));
  ExpectLatest(2);
  ExpectIntact(2);
  ExpectIntact(1);
  EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000001", "step-00000002"));
  env_->ClearFaults();
  ASSERT_TRUE(Write(3, 0, /*keep_last=*/1).ok());
  EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000003"));
}

// A read fails (EIO, a bad sector) while a checkpoint is verified: the
// newest is skipped naming the file and the read error, the previous one is
// found. The bytes on disk are whole: without the fault both verify.
TEST_P(CheckpointFaultTest, FailingReadDuringVerificationFallsBackToThePreviousCheckpoint) {
  ASSERT_TRUE(Write(1).ok());
  ASSERT_TRUE(Write(2).ok());
  const std::string newest = JoinPath(root_, "step-00000002");
  for (const std::string file : {"adapter/adapter_model.safetensors", "MANIFEST.json"}) {
    SCOPED_TRACE(file);
    const std::string path = JoinPath(newest, file);
    env_->FailCallsIf(
        Op::kRead, [path](absl::string_view p) { return p == path; }, Eio());
    const absl::Status v = VerifyCheckpoint(newest, env_.get());
    EXPECT_EQ(v.code(), absl::StatusCode::kDataLoss) << v;
    EXPECT_THAT(std::string(v.message()), HasSubstr(path + ": "));
    EXPECT_THAT(std::string(v.message()),
                HasSubstr("unreadable: read " + path + ": Input/output error (injected fault)"));
    std::vector<std::string> skipped;
    absl::StatusOr<FoundCheckpoint> found = FindLatestCheckpoint(root_, &skipped, env_.get());
    ASSERT_TRUE(found.ok()) << found.status();
    EXPECT_EQ(found->step, 1);
    ASSERT_EQ(skipped.size(), 1u);
    EXPECT_THAT(skipped[0], HasSubstr(newest + ": " + path));
    EXPECT_THAT(skipped[0], HasSubstr("Input/output error"));
    env_->ClearFaults();
  }
  ExpectLatest(2);
  ExpectIntact(1);
}

// A read fails while the checkpoint reads its new files back for the manifest.
TEST_P(CheckpointFaultTest, FailingReadBackWhileManifesting) {
  ASSERT_TRUE(Write(1).ok());
  env_->FailCallsIf(
      Op::kRead, [&](absl::string_view p) { return absl::StartsWith(p, TmpPrefix(2)); }, Eio());
  const absl::StatusOr<std::string> r = Write(2);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInternal) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("read " + TmpPrefix(2)));
  ExpectLatest(1);
  EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000001"));
}

// Every storage operation a checkpoint write makes, failed in turn (from
// that call on, as a disk that has gone bad): the write either succeeds (a
// best-effort delete failed) or fails naming the root and the fault; step 1
// is intact either way, every step-* directory verifies, and once the
// storage is healthy again the next write succeeds and removes whatever the
// failed one left.
TEST_P(CheckpointFaultTest, EveryFaultPointKeepsThePreviousCheckpoint) {
  const Op ops[] = {Op::kAppend,  Op::kSync,       Op::kClose,  Op::kOpenWrite, Op::kRename,
                    Op::kSyncDir, Op::kCreateDirs, Op::kDelete, Op::kRead};
  // How often a clean write of step 2 (after step 1) calls each op.
  int64_t clean[static_cast<int>(Op::kNumOps)] = {};
  {
    FaultInjectionEnv counting(base_);
    const std::string root = JoinPath(dir_, "clean");
    ASSERT_TRUE(Write(&counting, root, 1).ok());
    int64_t before[static_cast<int>(Op::kNumOps)];
    for (Op op : ops) before[static_cast<int>(op)] = counting.calls(op);
    ASSERT_TRUE(Write(&counting, root, 2).ok());
    for (Op op : ops)
      clean[static_cast<int>(op)] = counting.calls(op) - before[static_cast<int>(op)];
  }
  int points = 0;
  for (Op op : ops) {
    ASSERT_GT(clean[static_cast<int>(op)], 0) << static_cast<int>(op);
    for (int64_t k = 0; k < clean[static_cast<int>(op)]; ++k) {
      SCOPED_TRACE(absl::StrCat("op ", static_cast<int>(op), ", failing from call ", k));
      ++points;
      const std::string root = JoinPath(dir_, absl::StrCat("run-", static_cast<int>(op), "-", k));
      FaultInjectionEnv env(base_);
      ASSERT_TRUE(Write(&env, root, 1).ok());
      env.FailAfterCalls(op, k, Eio());
      const absl::StatusOr<std::string> r = Write(&env, root, 2);
      env.ClearFaults();
      if (r.ok()) {
        EXPECT_EQ(op, Op::kDelete)
            << "only a best-effort delete may fail without failing the write";
        ExpectLatest(root, 2);
      } else {
        EXPECT_THAT(std::string(r.status().message()), HasSubstr(root));
        EXPECT_THAT(std::string(r.status().message()), HasSubstr("(injected fault)"));
        std::vector<std::string> skipped;
        absl::StatusOr<FoundCheckpoint> found = FindLatestCheckpoint(root, &skipped, base_);
        ASSERT_TRUE(found.ok()) << found.status();
        ExpectLatest(root, found->step);  // 1, or 2 when only the root's fsync failed
        if (found->step == 2) {
          EXPECT_EQ(op, Op::kSyncDir);
        }
      }
      ExpectIntact(root, 1);
      ASSERT_TRUE(Write(&env, root, 3).ok());
      ExpectLatest(root, 3);
      for (const std::string& name : Entries(root))
        EXPECT_TRUE(absl::StartsWith(name, "step-")) << name;
    }
  }
  EXPECT_GE(points, 20);
}

// The storage turns read-only (EROFS): every operation that would change it
// fails, except mkdir of the existing root (Linux answers EEXIST first). The
// checkpoint fails with PermissionDenied naming the directory it could not
// make; the previous one is intact and found.
TEST_P(CheckpointFaultTest, ReadOnlyStorageIsPermissionDenied) {
  ASSERT_TRUE(Write(1).ok());
  const absl::Status erofs = absl::PermissionDeniedError("Read-only file system");
  for (Op op : {Op::kAppend, Op::kSync, Op::kOpenWrite, Op::kRename, Op::kSyncDir, Op::kDelete}) {
    env_->FailAfterCalls(op, 0, erofs);
  }
  env_->FailCallsIf(
      Op::kCreateDirs, [&](absl::string_view p) { return p != root_; }, erofs);
  const absl::StatusOr<std::string> r = Write(2);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("mkdir " + TmpPrefix(2)));
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr(": Read-only file system (injected fault)"));
  std::vector<std::string> skipped;
  absl::StatusOr<FoundCheckpoint> found =
      FindLatestCheckpoint(root_, &skipped, env_.get());  // reads still work
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->step, 1);
  ExpectIntact(1);
  EXPECT_THAT(Entries(), ::testing::ElementsAre("step-00000001"));
  env_->ClearFaults();
  ASSERT_TRUE(Write(2).ok());
  ExpectLatest(2);
}

// The root is created, its parent never: on any Env.
TEST_P(CheckpointFaultTest, VanishedParentIsUnavailableNotRebuilt) {
  const std::string gone = JoinPath(dir_, "deleted-job/checkpoints");
  const absl::StatusOr<std::string> r = Write(env_.get(), gone, 1);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_THAT(std::string(r.status().message()),
              HasSubstr("mkdir " + gone + ": No such file or directory"));
  EXPECT_FALSE(base_->FileExists(JoinPath(dir_, "deleted-job")));
}

}  // namespace
}  // namespace fjord::train
