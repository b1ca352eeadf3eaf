#include "runtime/util/env.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

// Runs every test of EnvContractTest against the POSIX Env (in a fresh temp
// directory) and against MemEnv (under "/t").
class EnvContractTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      env_ = Env::Default();
      const char* tmp = std::getenv("TEST_TMPDIR");
      std::string tmpl = absl::StrCat(tmp ? tmp : "/tmp", "/env_test.XXXXXX");
      ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
      root_ = tmpl;
    } else {
      mem_ = NewMemEnv();
      env_ = mem_.get();
      root_ = "/t";
      ASSERT_TRUE(env_->CreateDirs(root_).ok());
    }
  }
  void TearDown() override {
    if (!root_.empty()) {
      EXPECT_TRUE(env_->DeleteRecursively(root_).ok());
    }
  }
  std::string Path(const std::string& rel) { return JoinPath(root_, rel); }

  std::unique_ptr<Env> mem_;
  Env* env_ = nullptr;
  std::string root_;
};

INSTANTIATE_TEST_SUITE_P(PosixAndMem, EnvContractTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Posix" : "Mem"; });

TEST_P(EnvContractTest, WriteAtomicThenRead) {
  const std::string p = Path("a.txt");
  ASSERT_TRUE(env_->WriteFileAtomic(p, "hello").ok());
  EXPECT_EQ(*env_->ReadFileToString(p), "hello");
  EXPECT_EQ(*env_->FileSize(p), 5u);
  ASSERT_TRUE(env_->WriteFileAtomic(p, std::string("x\0y", 3)).ok());
  EXPECT_EQ(*env_->ReadFileToString(p), std::string("x\0y", 3));
  // No temp file left behind.
  EXPECT_THAT(*env_->ListDir(root_), ElementsAre("a.txt"));
}

TEST_P(EnvContractTest, ReadMissingIsNotFoundNamingPath) {
  const absl::StatusOr<std::string> r = env_->ReadFileToString(Path("missing"));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(Path("missing")));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("No such file or directory"));
  EXPECT_EQ(env_->FileSize(Path("missing")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(env_->MapReadOnly(Path("missing")).status().code(), absl::StatusCode::kNotFound);
}

TEST_P(EnvContractTest, WritableFileAppendSyncClose) {
  auto f = env_->NewWritableFile(Path("w"));
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_TRUE((*f)->Append("ab").ok());
  ASSERT_TRUE((*f)->Append("").ok());
  ASSERT_TRUE((*f)->Append("cd").ok());
  ASSERT_TRUE((*f)->Sync().ok());
  ASSERT_TRUE((*f)->Close().ok());
  const absl::Status again = (*f)->Append("x");
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(again.message()), HasSubstr(Path("w")));
  EXPECT_EQ(*env_->ReadFileToString(Path("w")), "abcd");
  // Reopening truncates.
  auto g = env_->NewWritableFile(Path("w"));
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE((*g)->Close().ok());
  EXPECT_EQ(*env_->FileSize(Path("w")), 0u);
}

TEST_P(EnvContractTest, NewWritableFileNeedsParentDir) {
  const auto f = env_->NewWritableFile(Path("no/such/dir/f"));
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(Path("no/such/dir/f")));
  EXPECT_EQ(env_->WriteFileAtomic(Path("no/f"), "x").code(), absl::StatusCode::kNotFound);
}

TEST_P(EnvContractTest, CreateDirsIsMkdirP) {
  ASSERT_TRUE(env_->CreateDirs(Path("x/y/z")).ok());
  ASSERT_TRUE(env_->CreateDirs(Path("x/y/z")).ok());  // exists: fine
  ASSERT_TRUE(env_->CreateDirs(Path("x/y/z/")).ok());
  EXPECT_TRUE(env_->IsDirectory(Path("x/y")));
  EXPECT_TRUE(env_->FileExists(Path("x/y/z")));
  ASSERT_TRUE(env_->WriteFileAtomic(Path("x/file"), "1").ok());
  EXPECT_FALSE(env_->IsDirectory(Path("x/file")));
  const absl::Status s = env_->CreateDirs(Path("x/file/sub"));
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr(Path("x/file")));
  EXPECT_EQ(env_->CreateDirs("").code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(EnvContractTest, ListDirSortedNamesOnly) {
  ASSERT_TRUE(env_->CreateDirs(Path("d/sub/deeper")).ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("d/b"), "").ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("d/a"), "").ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("d/sub/c"), "").ok());
  EXPECT_THAT(*env_->ListDir(Path("d")), ElementsAre("a", "b", "sub"));
  EXPECT_THAT(*env_->ListDir(Path("d/sub/deeper")), IsEmpty());
  EXPECT_EQ(env_->ListDir(Path("nope")).status().code(), absl::StatusCode::kNotFound);
}

TEST_P(EnvContractTest, RenameReplacesTarget) {
  ASSERT_TRUE(env_->WriteFileAtomic(Path("from"), "new").ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("to"), "old").ok());
  ASSERT_TRUE(env_->RenameFile(Path("from"), Path("to")).ok());
  EXPECT_FALSE(env_->FileExists(Path("from")));
  EXPECT_EQ(*env_->ReadFileToString(Path("to")), "new");
  const absl::Status s = env_->RenameFile(Path("from"), Path("to"));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr(Path("from")));
}

TEST_P(EnvContractTest, DeleteFileAndRecursively) {
  ASSERT_TRUE(env_->CreateDirs(Path("t/a/b")).ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("t/a/b/f"), "1").ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("t/g"), "2").ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("tt"), "3").ok());  // shares the prefix "t"
  ASSERT_TRUE(env_->DeleteFile(Path("t/g")).ok());
  EXPECT_EQ(env_->DeleteFile(Path("t/g")).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(env_->DeleteFile(Path("t/a")).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(env_->DeleteRecursively(Path("t")).ok());
  EXPECT_FALSE(env_->FileExists(Path("t")));
  EXPECT_FALSE(env_->FileExists(Path("t/a/b/f")));
  EXPECT_TRUE(env_->FileExists(Path("tt")));
  EXPECT_TRUE(env_->DeleteRecursively(Path("t")).ok());  // absent: fine
}

TEST_P(EnvContractTest, MapReadOnlySeesContentsAndOutlivesReplacement) {
  ASSERT_TRUE(env_->WriteFileAtomic(Path("m"), "mapped bytes").ok());
  auto region = env_->MapReadOnly(Path("m"));
  ASSERT_TRUE(region.ok()) << region.status();
  ASSERT_EQ((*region)->size(), 12u);
  EXPECT_EQ(std::string((*region)->data(), (*region)->size()), "mapped bytes");
  // Replacing the file by rename leaves the mapping intact.
  ASSERT_TRUE(env_->WriteFileAtomic(Path("m"), "other").ok());
  EXPECT_EQ(std::string((*region)->data(), (*region)->size()), "mapped bytes");

  ASSERT_TRUE(env_->WriteFileAtomic(Path("empty"), "").ok());
  auto empty = env_->MapReadOnly(Path("empty"));
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ((*empty)->size(), 0u);
  EXPECT_EQ((*empty)->data(), nullptr);
}

TEST_P(EnvContractTest, DirectoriesAreNotFiles) {
  ASSERT_TRUE(env_->CreateDirs(Path("dir")).ok());
  EXPECT_EQ(env_->ReadFileToString(Path("dir")).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(env_->FileSize(Path("dir")).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(env_->SyncDir(Path("dir")).ok());
  EXPECT_EQ(env_->SyncDir(Path("nodir")).code(), absl::StatusCode::kNotFound);
}

// Reads everything a SequentialFile has left, `chunk` bytes at a time.
std::string ReadAll(SequentialFile* f, size_t chunk) {
  std::string out, buf(chunk, '\0');
  while (true) {
    absl::StatusOr<size_t> n = f->Read(buf.data(), chunk);
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok() || *n == 0) return out;
    out.append(buf.data(), *n);
  }
}

TEST_P(EnvContractTest, SequentialFileReadsInOrderToTheEnd) {
  ASSERT_TRUE(env_->WriteFileAtomic(Path("s"), "hello world").ok());
  auto f = env_->NewSequentialFile(Path("s"));
  ASSERT_TRUE(f.ok()) << f.status();
  char buf[16];
  absl::StatusOr<size_t> n = (*f)->Read(buf, 4);
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 4u);
  EXPECT_EQ(std::string(buf, 4), "hell");
  EXPECT_EQ(*(*f)->Read(buf, 0), 0u);
  EXPECT_EQ(ReadAll(f->get(), 3), "o world");
  EXPECT_EQ(*(*f)->Read(buf, sizeof buf), 0u);  // stays at the end

  // An open file keeps reading what it opened after a replacement by rename.
  auto g = env_->NewSequentialFile(Path("s"));
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("s"), "other").ok());
  EXPECT_EQ(ReadAll(g->get(), 5), "hello world");
  ASSERT_TRUE(env_->WriteFileAtomic(Path("empty"), "").ok());
  auto e = env_->NewSequentialFile(Path("empty"));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(*(*e)->Read(buf, sizeof buf), 0u);

  const auto missing = env_->NewSequentialFile(Path("missing"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(Path("missing")));
  ASSERT_TRUE(env_->CreateDirs(Path("dir")).ok());
  EXPECT_EQ(env_->NewSequentialFile(Path("dir")).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_P(EnvContractTest, CreateDirMakesOneLevelOnly) {
  ASSERT_TRUE(env_->CreateDir(Path("a")).ok());
  EXPECT_TRUE(env_->IsDirectory(Path("a")));
  const absl::Status again = env_->CreateDir(Path("a"));
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(std::string(again.message()), HasSubstr("mkdir " + Path("a")));
  const absl::Status deep = env_->CreateDir(Path("x/y"));
  EXPECT_EQ(deep.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(deep.message()),
              HasSubstr("mkdir " + Path("x/y") + ": No such file or directory"));
  EXPECT_FALSE(env_->FileExists(Path("x")));  // the parent is never made
  ASSERT_TRUE(env_->WriteFileAtomic(Path("f"), "1").ok());
  EXPECT_EQ(env_->CreateDir(Path("f")).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(env_->CreateDir(Path("f/sub")).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(env_->CreateDir("").code(), absl::StatusCode::kInvalidArgument);
}

TEST_P(EnvContractTest, RenameDirMovesTheWholeTree) {
  ASSERT_TRUE(env_->CreateDirs(Path("d/sub/deeper")).ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("d/sub/f"), "deep").ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("d/g"), "top").ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("dd"), "sibling").ok());  // shares the prefix "d"
  ASSERT_TRUE(env_->RenameDir(Path("d"), Path("e")).ok());
  EXPECT_FALSE(env_->FileExists(Path("d")));
  EXPECT_FALSE(env_->FileExists(Path("d/sub/f")));
  EXPECT_THAT(*env_->ListDir(Path("e")), ElementsAre("g", "sub"));
  EXPECT_THAT(*env_->ListDir(Path("e/sub")), ElementsAre("deeper", "f"));
  EXPECT_EQ(*env_->ReadFileToString(Path("e/sub/f")), "deep");
  EXPECT_EQ(*env_->ReadFileToString(Path("dd")), "sibling");
  EXPECT_THAT(*env_->ListDir(root_), ElementsAre("dd", "e"));

  // An empty target directory is replaced; onto itself changes nothing.
  ASSERT_TRUE(env_->CreateDir(Path("empty")).ok());
  ASSERT_TRUE(env_->RenameDir(Path("e"), Path("empty")).ok());
  EXPECT_EQ(*env_->ReadFileToString(Path("empty/g")), "top");
  ASSERT_TRUE(env_->RenameDir(Path("empty"), Path("empty")).ok());
  EXPECT_EQ(*env_->ReadFileToString(Path("empty/sub/f")), "deep");
}

TEST_P(EnvContractTest, RenameDirErrors) {
  ASSERT_TRUE(env_->CreateDirs(Path("d/sub")).ok());
  ASSERT_TRUE(env_->CreateDirs(Path("full/x")).ok());
  ASSERT_TRUE(env_->WriteFileAtomic(Path("file"), "1").ok());
  const absl::Status missing = env_->RenameDir(Path("nope"), Path("e"));
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()),
              HasSubstr("rename " + Path("nope") + " to " + Path("e")));
  EXPECT_EQ(env_->RenameDir(Path("d"), Path("no/e")).code(), absl::StatusCode::kNotFound);
  const absl::Status not_dir = env_->RenameDir(Path("file"), Path("e"));
  EXPECT_EQ(not_dir.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(not_dir.message()), HasSubstr(Path("file") + " is not a directory"));
  EXPECT_EQ(env_->RenameDir(Path("d"), Path("file")).code(), absl::StatusCode::kFailedPrecondition);
  const absl::Status not_empty = env_->RenameDir(Path("d"), Path("full"));
  EXPECT_EQ(not_empty.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(not_empty.message()), HasSubstr(Path("full")));
  EXPECT_EQ(env_->RenameDir(Path("d"), Path("d/sub/e")).code(), absl::StatusCode::kInvalidArgument);
  // Nothing moved.
  EXPECT_TRUE(env_->IsDirectory(Path("d/sub")));
  EXPECT_TRUE(env_->IsDirectory(Path("full/x")));
  EXPECT_EQ(*env_->ReadFileToString(Path("file")), "1");
}

TEST_P(EnvContractTest, SyncFileNeedsAnExistingFile) {
  ASSERT_TRUE(env_->WriteFileAtomic(Path("f"), "1").ok());
  EXPECT_TRUE(env_->SyncFile(Path("f")).ok());
  const absl::Status missing = env_->SyncFile(Path("missing"));
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.message()), HasSubstr(Path("missing")));
  ASSERT_TRUE(env_->CreateDirs(Path("dir")).ok());
  EXPECT_EQ(env_->SyncFile(Path("dir")).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_P(EnvContractTest, ConcurrentAtomicWritesOfOneFileNeverTear) {
  const std::string p = Path("shared");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const std::string data(1000, static_cast<char>('a' + t));
      for (int i = 0; i < 20; ++i) EXPECT_TRUE(env_->WriteFileAtomic(p, data).ok());
    });
  }
  for (auto& th : threads) th.join();
  const std::string got = *env_->ReadFileToString(p);
  ASSERT_EQ(got.size(), 1000u);
  EXPECT_EQ(got, std::string(1000, got[0]));
  EXPECT_THAT(*env_->ListDir(root_), ElementsAre("shared"));
}

TEST(PathTest, ParentAndJoin) {
  EXPECT_EQ(ParentDir("/a/b/c"), "/a/b");
  EXPECT_EQ(ParentDir("/a"), "/");
  EXPECT_EQ(ParentDir("a"), ".");
  EXPECT_EQ(ParentDir("a/b/"), "a");
  EXPECT_EQ(JoinPath("/a/", "/b"), "/a/b");
  EXPECT_EQ(JoinPath("/", "b"), "/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
  EXPECT_EQ(JoinPath("a", ""), "a");
  EXPECT_THAT(AtomicTempPath("/x/y"), HasSubstr(absl::StrCat("/x/y.tmp.", ::getpid(), ".")));
  EXPECT_NE(AtomicTempPath("/x/y"), AtomicTempPath("/x/y"));
}

TEST(PosixEnvTest, PermissionDeniedNamesPath) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: permissions are not enforced";
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(tmp ? tmp : "/tmp", "/env_ro.XXXXXX");
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  ASSERT_EQ(::chmod(dir.c_str(), 0555), 0);
  const absl::Status s = Env::Default()->WriteFileAtomic(dir + "/f", "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(s.message()), HasSubstr(dir + "/f.tmp."));
  EXPECT_THAT(std::string(s.message()), HasSubstr("Permission denied"));
  ::chmod(dir.c_str(), 0755);
  EXPECT_TRUE(Env::Default()->DeleteRecursively(dir).ok());
}

TEST(PosixEnvTest, MappingIsPrivateCopyOnWrite) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string p = absl::StrCat(tmp ? tmp : "/tmp", "/cow_", ::getpid());
  Env* env = Env::Default();
  ASSERT_TRUE(env->WriteFileAtomic(p, "abc").ok());
  {
    auto region = env->MapReadOnly(p);
    ASSERT_TRUE(region.ok());
    const_cast<char*>((*region)->data())[0] = 'X';  // allowed: private mapping
    EXPECT_EQ((*region)->data()[0], 'X');
  }
  EXPECT_EQ(*env->ReadFileToString(p), "abc");
  EXPECT_TRUE(env->DeleteFile(p).ok());
}

// ------------------------------------------------------------ faults

class FaultInjectionEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mem_ = NewMemEnv();
    env_ = std::make_unique<FaultInjectionEnv>(mem_.get());
    ASSERT_TRUE(env_->CreateDirs("/d").ok());
  }
  std::unique_ptr<Env> mem_;
  std::unique_ptr<FaultInjectionEnv> env_;
};

TEST_F(FaultInjectionEnvTest, ForwardsWhenNothingArmed) {
  ASSERT_TRUE(env_->WriteFileAtomic("/d/f", "data").ok());
  EXPECT_EQ(*mem_->ReadFileToString("/d/f"), "data");
  EXPECT_EQ(env_->bytes_written(), 4u);
  EXPECT_EQ(env_->calls(FaultInjectionEnv::Op::kSync), 1);
  EXPECT_EQ(env_->calls(FaultInjectionEnv::Op::kRename), 1);
  EXPECT_EQ(env_->calls(FaultInjectionEnv::Op::kSyncDir), 1);
  EXPECT_EQ(env_->faults_injected(), 0);
}

TEST_F(FaultInjectionEnvTest, DiskFullAfterBytesShortWritesAndLeavesOldFile) {
  ASSERT_TRUE(env_->WriteFileAtomic("/d/f", "old").ok());
  env_->FailWritesAfterBytes(5);
  const absl::Status s = env_->WriteFileAtomic("/d/f", "0123456789");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("No space left on device"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("/d/f.tmp."));
  EXPECT_EQ(*mem_->ReadFileToString("/d/f"), "old");
  EXPECT_THAT(*mem_->ListDir("/d"), ElementsAre("f"));  // temp removed
  EXPECT_EQ(env_->bytes_written(), 3u + 5u);            // the short write happened

  // Direct use: the crossing Append writes up to the limit.
  env_->FailWritesAfterBytes(2);
  auto f = env_->NewWritableFile("/d/g");
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->Append("abc").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*f)->Append("d").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(*mem_->ReadFileToString("/d/g"), "ab");
  env_->ClearFaults();
  EXPECT_TRUE((*f)->Append("e").ok());
  EXPECT_EQ(*mem_->ReadFileToString("/d/g"), "abe");
}

TEST_F(FaultInjectionEnvTest, FsyncFailureAbortsAtomicWrite) {
  env_->FailSyncsAfter(0, absl::DataLossError("Input/output error"));
  const absl::Status s = env_->WriteFileAtomic("/d/f", "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("fsync /d/f.tmp."));
  EXPECT_THAT(std::string(s.message()), HasSubstr("Input/output error"));
  EXPECT_FALSE(mem_->FileExists("/d/f"));
  EXPECT_THAT(*mem_->ListDir("/d"), IsEmpty());
}

TEST_F(FaultInjectionEnvTest, RenameFailsAfterNCalls) {
  env_->FailRenamesAfter(2);
  EXPECT_TRUE(env_->WriteFileAtomic("/d/a", "1").ok());
  EXPECT_TRUE(env_->WriteFileAtomic("/d/b", "2").ok());
  const absl::Status s = env_->WriteFileAtomic("/d/c", "3");
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("rename /d/c.tmp."));
  EXPECT_THAT(std::string(s.message()), HasSubstr("(injected fault)"));
  EXPECT_THAT(*mem_->ListDir("/d"), ElementsAre("a", "b"));
  EXPECT_EQ(env_->faults_injected(), 1);
  // Stays armed until cleared.
  EXPECT_FALSE(env_->WriteFileAtomic("/d/c", "3").ok());
  env_->ClearFaults();
  EXPECT_TRUE(env_->WriteFileAtomic("/d/c", "3").ok());
}

TEST_F(FaultInjectionEnvTest, OtherOps) {
  env_->FailAfterCalls(FaultInjectionEnv::Op::kSyncDir, 0, absl::UnavailableError("EIO"));
  const absl::Status s = env_->WriteFileAtomic("/d/f", "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("fsync directory /d"));
  env_->ClearFaults();

  env_->FailAfterCalls(FaultInjectionEnv::Op::kOpenWrite, 0);
  EXPECT_EQ(env_->NewWritableFile("/d/g").status().code(), absl::StatusCode::kResourceExhausted);
  env_->FailAfterCalls(FaultInjectionEnv::Op::kCreateDirs, 0);
  EXPECT_THAT(std::string(env_->CreateDirs("/e").message()), HasSubstr("mkdir /e"));
  env_->FailAfterCalls(FaultInjectionEnv::Op::kRead, 0, absl::PermissionDeniedError("EACCES"));
  EXPECT_EQ(env_->ReadFileToString("/d/f").status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(env_->MapReadOnly("/d/f").status().code(), absl::StatusCode::kPermissionDenied);
  env_->FailAfterCalls(FaultInjectionEnv::Op::kDelete, 0);
  EXPECT_FALSE(env_->DeleteFile("/d/f").ok());
  EXPECT_TRUE(mem_->FileExists("/d/f"));
  env_->ClearFaults();
  EXPECT_TRUE(env_->DeleteFile("/d/f").ok());
  env_->FailAfterCalls(FaultInjectionEnv::Op::kClose, 0);
  const absl::Status c = env_->WriteFileAtomic("/d/h", "x");
  EXPECT_EQ(c.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(c.message()), HasSubstr("close /d/h.tmp."));
  EXPECT_THAT(*mem_->ListDir("/d"), IsEmpty());
}

TEST_F(FaultInjectionEnvTest, DirectoryOpsSequentialReadsAndSyncFile) {
  using Op = FaultInjectionEnv::Op;
  ASSERT_TRUE(env_->WriteFileAtomic("/d/f", "abcdef").ok());

  // kRead: opening counts as one call, then every Read; a failed Read reads
  // nothing, so the next one continues where the last good one stopped.
  env_->FailAfterCalls(Op::kRead, 2, absl::UnavailableError("Input/output error"));
  auto f = env_->NewSequentialFile("/d/f");
  ASSERT_TRUE(f.ok());
  char buf[4];
  ASSERT_EQ(*(*f)->Read(buf, 2), 2u);
  const absl::StatusOr<size_t> bad = (*f)->Read(buf, 2);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(bad.status().message()),
              HasSubstr("read /d/f: Input/output error (injected fault)"));
  env_->ClearFaults();
  ASSERT_EQ(*(*f)->Read(buf, 4), 4u);
  EXPECT_EQ(std::string(buf, 4), "cdef");
  env_->FailAfterCalls(Op::kRead, 0);
  EXPECT_EQ(env_->NewSequentialFile("/d/f").status().code(), absl::StatusCode::kResourceExhausted);
  env_->ClearFaults();

  // kRename covers RenameDir; kCreateDirs covers CreateDir; kSync covers SyncFile.
  ASSERT_TRUE(env_->CreateDirs("/d/sub").ok());
  env_->FailRenamesAfter(0);
  const absl::Status r = env_->RenameDir("/d/sub", "/d/moved");
  EXPECT_EQ(r.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(r.message()),
              HasSubstr("rename /d/sub to /d/moved: No space left on device (injected fault)"));
  EXPECT_TRUE(mem_->IsDirectory("/d/sub"));
  env_->FailAfterCalls(Op::kCreateDirs, 0);
  EXPECT_THAT(std::string(env_->CreateDir("/d/new").message()), HasSubstr("mkdir /d/new"));
  EXPECT_FALSE(mem_->FileExists("/d/new"));
  env_->FailSyncsAfter(0, absl::DataLossError("Input/output error"));
  const absl::Status s = env_->SyncFile("/d/f");
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("fsync /d/f: Input/output error (injected fault)"));
  env_->ClearFaults();
  EXPECT_TRUE(env_->RenameDir("/d/sub", "/d/moved").ok());
  EXPECT_TRUE(env_->CreateDir("/d/new").ok());
  EXPECT_TRUE(env_->SyncFile("/d/f").ok());
  EXPECT_EQ(env_->calls(Op::kRename), 3);  // WriteFileAtomic's, and two RenameDir
  EXPECT_EQ(env_->calls(Op::kSync), 3);    // WriteFileAtomic's, and two SyncFile
}

TEST_F(FaultInjectionEnvTest, FailCallsIfHitsOnlyMatchingPaths) {
  using Op = FaultInjectionEnv::Op;
  ASSERT_TRUE(env_->WriteFileAtomic("/d/good", "1").ok());
  ASSERT_TRUE(env_->WriteFileAtomic("/d/bad", "2").ok());
  // A bad sector under /d/bad: every read of it fails, other files read fine.
  env_->FailCallsIf(
      Op::kRead, [](absl::string_view p) { return p == "/d/bad"; },
      absl::UnavailableError("Input/output error"));
  EXPECT_EQ(*env_->ReadFileToString("/d/good"), "1");
  for (int i = 0; i < 2; ++i) {
    const auto bad = env_->ReadFileToString("/d/bad");
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(std::string(bad.status().message()),
                HasSubstr("read /d/bad: Input/output error (injected fault)"));
  }
  EXPECT_FALSE(env_->NewSequentialFile("/d/bad").ok());
  EXPECT_EQ(env_->faults_injected(), 3);

  // Renames match on "<from> to <to>"; a call failed by the predicate does
  // not count down FailAfterCalls, the others do.
  env_->FailCallsIf(Op::kRename,
                    [](absl::string_view p) { return absl::StrContains(p, " to /d/x"); });
  env_->FailRenamesAfter(1);
  EXPECT_EQ(env_->RenameFile("/d/good", "/d/x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(env_->RenameFile("/d/good", "/d/y").ok());  // the one allowed by FailRenamesAfter(1)
  EXPECT_THAT(std::string(env_->RenameFile("/d/y", "/d/z").message()),
              HasSubstr("rename /d/y to /d/z"));
  env_->ClearFaults();
  EXPECT_TRUE(env_->RenameFile("/d/y", "/d/x").ok());
  EXPECT_EQ(*env_->ReadFileToString("/d/bad"), "2");
}

TEST_F(FaultInjectionEnvTest, WrapsPosixToo) {
  FaultInjectionEnv env(Env::Default());
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string p = absl::StrCat(tmp ? tmp : "/tmp", "/fault_", ::getpid());
  env.FailWritesAfterBytes(0);
  EXPECT_EQ(env.WriteFileAtomic(p, "abc").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(Env::Default()->FileExists(p));
  env.ClearFaults();
  ASSERT_TRUE(env.WriteFileAtomic(p, "abc").ok());
  EXPECT_EQ(*Env::Default()->ReadFileToString(p), "abc");
  EXPECT_TRUE(Env::Default()->DeleteFile(p).ok());
}

}  // namespace
}  // namespace fjord
