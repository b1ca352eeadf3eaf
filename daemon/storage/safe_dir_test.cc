#include "daemon/storage/safe_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

// Each test gets a fresh directory with:
//   <root>/secret            a root-only (0600) file outside the job dir
//   <root>/secret-dir/       a root-only (0700) directory of 200 files
//   <root>/job/              what a worker may fill with anything ("the job
//                            directory"), opened as job_
class SafeDirTest : public ::testing::Test {
 protected:
  static constexpr char kSecret[] = "root-only bytes\n";

  void SetUp() override {
    const char* t = std::getenv("TEST_TMPDIR");
    root_ = std::string(t ? t : "/tmp") + "/safe-dir-" + std::to_string(::getpid());
    fs::remove_all(root_);
    fs::create_directories(root_ + "/job");
    Write(root_ + "/secret", kSecret);
    fs::permissions(root_ + "/secret", fs::perms::owner_read | fs::perms::owner_write);
    fs::create_directories(root_ + "/secret-dir");
    for (int i = 0; i < 200; ++i) Write(SecretFile(i), "s" + std::to_string(i));
    fs::permissions(root_ + "/secret-dir", fs::perms::owner_all);
    absl::StatusOr<SafeDir> job = SafeDir::OpenTrusted(root_ + "/job");
    ASSERT_TRUE(job.ok()) << job.status();
    job_ = *std::move(job);
  }
  void TearDown() override { fs::remove_all(root_); }

  static void Write(const std::string& p, const std::string& s) { std::ofstream(p) << s; }
  static std::string Read(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  std::string SecretFile(int i) const { return root_ + "/secret-dir/f" + std::to_string(i); }
  std::string Job(const std::string& rel) const { return root_ + "/job/" + rel; }

  // The root-only file and directory are exactly as SetUp made them.
  void ExpectSecretsUntouched() const {
    EXPECT_EQ(Read(root_ + "/secret"), kSecret);
    struct stat st {};
    ASSERT_EQ(::stat((root_ + "/secret").c_str(), &st), 0);
    EXPECT_EQ(static_cast<size_t>(st.st_size), sizeof(kSecret) - 1);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_uid, ::geteuid());
    for (int i = 0; i < 200; ++i) {
      ASSERT_TRUE(fs::is_regular_file(SecretFile(i))) << SecretFile(i);
      EXPECT_EQ(Read(SecretFile(i)), "s" + std::to_string(i));
    }
  }

  std::string root_;
  SafeDir job_;
};

// --- Files: symlinks, hard links and FIFOs planted by a worker. ---

TEST_F(SafeDirTest, OpenAppendRefusesASymlinkAndWritesNothing) {
  fs::create_symlink(root_ + "/secret", Job("events.jsonl"));
  absl::StatusOr<UniqueFd> fd = job_.OpenAppend("events.jsonl", 0640);
  EXPECT_EQ(fd.status().code(), absl::StatusCode::kFailedPrecondition) << fd.status();
  EXPECT_THAT(fd.status().message(),
              HasSubstr(Job("events.jsonl") + " is a symbolic link; refused"));
  // A dangling link is not created through either.
  fs::create_symlink(root_ + "/created-by-root", Job("worker.log"));
  EXPECT_EQ(job_.OpenAppend("worker.log", 0640).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(fs::exists(root_ + "/created-by-root"));
  ExpectSecretsUntouched();
}

TEST_F(SafeDirTest, ReadHeadAndTailRefuseASymlink) {
  fs::create_symlink(root_ + "/secret", Job("events.jsonl"));
  fs::create_symlink(root_ + "/secret", Job("worker.log"));
  uint64_t size = 12345;
  absl::StatusOr<std::string> head = job_.ReadHead("events.jsonl", 1 << 20, &size);
  EXPECT_EQ(head.status().code(), absl::StatusCode::kFailedPrecondition) << head.status();
  EXPECT_THAT(head.status().message(), HasSubstr(Job("events.jsonl") + " is a symbolic link"));
  EXPECT_EQ(size, 12345u);  // not even the size leaks
  absl::StatusOr<std::string> tail = job_.ReadTail("worker.log", 1 << 20);
  EXPECT_EQ(tail.status().code(), absl::StatusCode::kFailedPrecondition) << tail.status();
  EXPECT_THAT(tail.status().message(), HasSubstr(Job("worker.log") + " is a symbolic link"));
  EXPECT_EQ(job_.OpenRead("worker.log").status().code(), absl::StatusCode::kFailedPrecondition);
  ExpectSecretsUntouched();
}

TEST_F(SafeDirTest, HardLinkToARootOnlyFileIsRefused) {
  // As root, link(2) works whatever fs.protected_hardlinks says; a worker
  // gets the same where it is off.
  ASSERT_EQ(::link((root_ + "/secret").c_str(), Job("events.jsonl").c_str()), 0);
  for (const absl::Status& s :
       {job_.OpenRead("events.jsonl").status(), job_.OpenAppend("events.jsonl", 0640).status(),
        job_.ReadHead("events.jsonl", 100).status(), job_.ReadTail("events.jsonl", 100).status(),
        job_.ChownEntry("events.jsonl", 61001, 61002)}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_THAT(s.message(), HasSubstr(Job("events.jsonl") + " has 2 hard links; refused"));
  }
  ExpectSecretsUntouched();
}

TEST_F(SafeDirTest, FifoIsRefusedWithoutBlocking) {
  ASSERT_EQ(::mkfifo(Job("events.jsonl").c_str(), 0666), 0);
  // Run the calls on another thread: a blocking open would hang it, not
  // the test, which then unblocks it by opening the FIFO itself.
  auto calls = std::async(std::launch::async, [&] {
    return std::vector<absl::Status>{job_.OpenAppend("events.jsonl", 0640).status(),
                                     job_.OpenRead("events.jsonl").status(),
                                     job_.ReadTail("events.jsonl", 100).status()};
  });
  if (calls.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    const int fd = ::open(Job("events.jsonl").c_str(), O_RDWR | O_NONBLOCK);
    calls.wait();
    ::close(fd);
    FAIL() << "opening a FIFO blocked";
  }
  for (const absl::Status& s : calls.get()) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_THAT(s.message(), HasSubstr(Job("events.jsonl") + " is not a regular file"));
  }
}

TEST_F(SafeDirTest, OpenAppendCreatesAndAppends) {
  absl::StatusOr<UniqueFd> fd = job_.OpenAppend("events.jsonl", 0640);
  ASSERT_TRUE(fd.ok()) << fd.status();
  ASSERT_EQ(::write(fd->get(), "a\n", 2), 2);
  EXPECT_EQ(::fcntl(fd->get(), F_GETFL) & O_NONBLOCK, 0);  // cleared after the checks
  fd = job_.OpenAppend("events.jsonl", 0640);
  ASSERT_TRUE(fd.ok()) << fd.status();
  ASSERT_EQ(::write(fd->get(), "b\n", 2), 2);
  EXPECT_EQ(Read(Job("events.jsonl")), "a\nb\n");
  EXPECT_EQ(job_.OpenAppend("a/b", 0640).status().code(), absl::StatusCode::kInvalidArgument);
  fs::create_directory(Job("dir"));
  EXPECT_EQ(job_.OpenAppend("dir", 0640).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SafeDirTest, ReadHeadAndTailAreBounded) {
  std::string text;
  for (int i = 0; i < 1000; ++i) text += static_cast<char>('a' + i % 26);
  fs::create_directories(Job("logs"));
  Write(Job("logs/worker.log"), text);
  uint64_t size = 0;
  absl::StatusOr<std::string> head = job_.ReadHead("logs/worker.log", 10, &size);
  ASSERT_TRUE(head.ok()) << head.status();
  EXPECT_EQ(*head, text.substr(0, 10));
  EXPECT_EQ(size, 1000u);
  absl::StatusOr<std::string> tail = job_.ReadTail("logs/worker.log", 10);
  ASSERT_TRUE(tail.ok()) << tail.status();
  EXPECT_EQ(*tail, text.substr(990));
  EXPECT_EQ(*job_.ReadTail("logs/worker.log", 5000), text);
  EXPECT_EQ(*job_.ReadHead("logs/worker.log", 5000), text);
  absl::Status missing = job_.ReadHead("logs/none.log", 10).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
  EXPECT_THAT(missing.message(), HasSubstr(Job("logs/none.log")));
  // A symlinked directory on the way is refused like a symlinked file.
  fs::create_directory_symlink(root_ + "/secret-dir", Job("linked"));
  absl::Status linked = job_.ReadHead("linked/f1", 10).status();
  EXPECT_EQ(linked.code(), absl::StatusCode::kFailedPrecondition) << linked;
  EXPECT_THAT(linked.message(), HasSubstr(Job("linked") + " is a symbolic link"));
}

TEST_F(SafeDirTest, WriteFileAtomicReplacesASymlinkAndLeavesItsTarget) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (a group other than the caller's)";
  fs::create_symlink(root_ + "/secret", Job("job.yaml"));
  const mode_t umask = ::umask(077);  // the mode does not depend on it
  ASSERT_TRUE(job_.WriteFileAtomic("job.yaml", "id: 1\n", 0640, 61002).ok());
  ::umask(umask);
  EXPECT_FALSE(fs::is_symlink(Job("job.yaml")));
  EXPECT_EQ(Read(Job("job.yaml")), "id: 1\n");
  struct stat st {};
  ASSERT_EQ(::lstat(Job("job.yaml").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_gid, 61002u);
  EXPECT_EQ(st.st_uid, 0u);
  ASSERT_TRUE(job_.WriteFileAtomic("job.yaml", "id: 2\n", 0600).ok());
  EXPECT_EQ(Read(Job("job.yaml")), "id: 2\n");
  // No temporary is left behind, including after a failure (a directory
  // cannot be replaced by a file).
  fs::create_directory(Job("dir"));
  EXPECT_FALSE(job_.WriteFileAtomic("dir", "x", 0600).ok());
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root_ + "/job")) names.push_back(e.path().filename());
  EXPECT_THAT(names, ::testing::UnorderedElementsAre("job.yaml", "dir"));
  ExpectSecretsUntouched();
}

// --- Directories. ---

TEST_F(SafeDirTest, OpenDirRefusesASymlinkedComponent) {
  fs::create_directories(root_ + "/elsewhere/sub");
  fs::create_directory_symlink(root_ + "/elsewhere", Job("adapter"));
  absl::Status s = job_.OpenDir("adapter").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr(Job("adapter") + " is a symbolic link; refused"));
  s = job_.OpenDir("adapter/sub").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr(Job("adapter") + " is a symbolic link; refused"));
  fs::create_directories(Job("a/b"));
  fs::create_directory_symlink(root_ + "/elsewhere", Job("a/b/c"));
  s = job_.OpenDir("a/b/c").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr(Job("a/b/c") + " is a symbolic link; refused"));
  // Also a link to a directory inside the tree.
  fs::create_directory_symlink(Job("a"), Job("up"));
  EXPECT_EQ(job_.OpenDir("up/b").status().code(), absl::StatusCode::kFailedPrecondition);

  Write(Job("file"), "x");
  s = job_.OpenDir("file").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr(Job("file") + " is not a directory"));
  s = job_.OpenDir("a/none/c").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr(Job("a/none") + " does not exist"));

  absl::StatusOr<SafeDir> b = job_.OpenDir("a/b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->path(), Job("a/b"));
}

TEST_F(SafeDirTest, OpenDirRefusesMalformedPaths) {
  fs::create_directories(Job("a/b"));
  for (const std::string& rel :
       std::vector<std::string>{"..", "", "/abs", "a//b", "a/../a", "./a", "a/.", "a/", "a/b/..",
                                std::string("a\0b", 3)}) {
    SCOPED_TRACE(rel);
    absl::Status s = job_.OpenDir(rel).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(s.message(), HasSubstr(root_ + "/job"));
    EXPECT_EQ(job_.OpenRead(rel).status().code(), absl::StatusCode::kInvalidArgument);
  }
  for (const char* name : {"a/b", "..", "."}) {
    EXPECT_EQ(job_.MakeDir(name, 0750).status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(job_.RemoveTree(name).code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(job_.ChownEntry(name, 1, 1).code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(job_.WriteFileAtomic(name, "x", 0600).code(), absl::StatusCode::kInvalidArgument)
        << name;
  }
}

TEST_F(SafeDirTest, MakeDirCreatesOrOpensButNeverFollows) {
  absl::StatusOr<SafeDir> made = job_.MakeDir("checkpoints", 0750);
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_TRUE(fs::is_directory(Job("checkpoints")));
  Write(Job("checkpoints/x"), "1");
  made = job_.MakeDir("checkpoints", 0750);  // exists: opened
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_TRUE(fs::exists(Job("checkpoints/x")));
  fs::create_directory_symlink(root_ + "/secret-dir", Job("adapter"));
  absl::Status s = job_.MakeDir("adapter", 0750).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr("is a symbolic link"));
}

TEST_F(SafeDirTest, ClosedAndUntrusted) {
  SafeDir closed;
  EXPECT_FALSE(closed.is_open());
  EXPECT_EQ(closed.OpenDir("a").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(closed.RemoveTree("a").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(closed.Sync().code(), absl::StatusCode::kFailedPrecondition);
  absl::Status s = SafeDir::OpenTrusted(root_ + "/none").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_THAT(s.message(), HasSubstr(root_ + "/none is not an accessible directory"));
  // The trusted start itself may be a link (the operator's choice).
  fs::create_directory_symlink(root_ + "/job", root_ + "/job-link");
  EXPECT_TRUE(SafeDir::OpenTrusted(root_ + "/job-link").ok());
}

TEST_F(SafeDirTest, ListReportsEntriesWithoutFollowing) {
  Write(Job("b"), "12");
  Write(Job("a"), "1");
  fs::create_directory(Job("d"));
  fs::create_symlink(root_ + "/secret", Job("c"));
  ASSERT_EQ(::mkfifo(Job("e").c_str(), 0600), 0);
  absl::StatusOr<std::vector<SafeDir::Entry>> entries = job_.List();
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_EQ(entries->size(), 5u);
  using Type = SafeDir::Entry::Type;
  const std::vector<std::pair<std::string, Type>> want = {{"a", Type::kFile},
                                                          {"b", Type::kFile},
                                                          {"c", Type::kSymlink},
                                                          {"d", Type::kDir},
                                                          {"e", Type::kOther}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ((*entries)[i].name, want[i].first);
    EXPECT_EQ((*entries)[i].type, want[i].second) << want[i].first;
  }
  EXPECT_EQ((*entries)[1].bytes, 2u);
  EXPECT_EQ((*entries)[1].links, 1u);
  // Listing twice gives the same (no shared read position).
  EXPECT_EQ(job_.List()->size(), 5u);
}

// --- RemoveTree. ---

TEST_F(SafeDirTest, RemoveTreeRemovesLinksNotTheirTargets) {
  fs::create_directories(Job("b/sub/deeper"));
  Write(Job("b/sub/deeper/x"), "x");
  fs::create_symlink(root_ + "/secret", Job("b/file-link"));
  fs::create_directory_symlink(root_ + "/secret-dir", Job("b/dir-link"));
  fs::create_directory_symlink(root_ + "/secret-dir", Job("b/sub/deeper/dir-link"));
  ASSERT_EQ(::link((root_ + "/secret").c_str(), Job("b/hard").c_str()), 0);
  ASSERT_EQ(::mkfifo(Job("b/sub/fifo").c_str(), 0600), 0);
  ASSERT_TRUE(job_.RemoveTree("b").ok());
  EXPECT_FALSE(fs::exists(fs::symlink_status(Job("b"))));
  ExpectSecretsUntouched();
  // The top itself as a link: the link goes, the target stays.
  fs::create_directory_symlink(root_ + "/secret-dir", Job("adapter"));
  ASSERT_TRUE(job_.RemoveTree("adapter").ok());
  EXPECT_FALSE(fs::exists(fs::symlink_status(Job("adapter"))));
  ExpectSecretsUntouched();
  EXPECT_TRUE(job_.RemoveTree("never-there").ok());
  Write(Job("plain"), "x");
  EXPECT_TRUE(job_.RemoveTree("plain").ok());
  EXPECT_FALSE(fs::exists(Job("plain")));
}

// Directories nested far deeper than the descriptors RemoveTree holds (and
// than PATH_MAX allows to name) are removed completely.
TEST_F(SafeDirTest, RemoveTreeRemovesAVeryDeepTree) {
  constexpr int kDepth = 3000;
  int dir = ::open(Job("").c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(dir, 0);
  for (int i = 0; i < kDepth; ++i) {
    const char* name = i == 0 ? "deep" : "d";
    ASSERT_EQ(::mkdirat(dir, name, 0700), 0) << i;
    const int next = ::openat(dir, name, O_RDONLY | O_DIRECTORY);
    ASSERT_GE(next, 0) << i;
    ::close(dir);
    dir = next;
    if (i % 100 == 0) {
      const int file = ::openat(dir, "f", O_CREAT | O_WRONLY, 0600);
      ASSERT_GE(file, 0);
      ::close(file);
    }
  }
  ::close(dir);
  absl::StatusOr<SafeDir::Usage> usage = job_.TreeUsage(1 << 20);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->entries, kDepth + kDepth / 100u);
  absl::Status s = job_.RemoveTree("deep");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_FALSE(fs::exists(Job("deep")));
  EXPECT_TRUE(fs::is_empty(root_ + "/job"));  // nothing moved out of the tree
}

// The reported attack: while root removes b/, the worker keeps swapping
// b/<sub> for a symlink to a root-only directory (and back). Whatever
// RemoveTree then returns, nothing outside b/ is removed.
TEST_F(SafeDirTest, RemoveTreeRacingADirectorySwapRemovesNothingOutside) {
  constexpr int kSubs = 30;
  for (int i = 0; i < kSubs; ++i) {
    const std::string sub = Job("b/s" + std::to_string(i));
    fs::create_directories(sub);
    for (int f = 0; f < 200; ++f) Write(sub + "/f" + std::to_string(f), "x");
  }
  fs::create_directories(root_ + "/moved");
  std::atomic<bool> stop{false};
  std::atomic<int> swaps{0};
  std::thread attacker([&] {
    for (int round = 0; !stop.load(); ++round) {
      for (int i = 0; i < kSubs && !stop.load(); ++i) {
        const std::string sub = Job("b/s" + std::to_string(i));
        const std::string away = root_ + "/moved/" + std::to_string(i);
        if (::rename(sub.c_str(), away.c_str()) != 0) continue;
        if (::symlink((root_ + "/secret-dir").c_str(), sub.c_str()) == 0) ++swaps;
        std::this_thread::yield();
        // Half the time put the directory back, so that RemoveTree meets
        // directories, links and everything in between.
        if (round % 2 == 0 && ::unlink(sub.c_str()) == 0) ::rename(away.c_str(), sub.c_str());
      }
    }
  });
  const absl::Status s = job_.RemoveTree("b");
  stop = true;
  attacker.join();
  // OK, or given up on an entry that kept changing.
  EXPECT_TRUE(s.ok() || s.code() == absl::StatusCode::kAborted) << s;
  if (s.ok()) {
    EXPECT_FALSE(fs::exists(fs::symlink_status(Job("b"))));
  }
  EXPECT_GT(swaps.load(), 0);
  ExpectSecretsUntouched();
  EXPECT_TRUE(fs::is_directory(root_ + "/secret-dir"));
}

// --- TreeUsage and ownership. ---

TEST_F(SafeDirTest, TreeUsageCountsWithoutFollowingAndStops) {
  fs::create_directories(Job("a/b"));
  Write(Job("x"), "12345");
  Write(Job("a/y"), "123");
  Write(Job("a/b/z"), "1");
  fs::create_symlink(root_ + "/secret", Job("a/link"));            // counted, not followed
  fs::create_directory_symlink(root_ + "/secret-dir", Job("dl"));  // counted, not entered
  absl::StatusOr<SafeDir::Usage> usage = job_.TreeUsage(100);
  ASSERT_TRUE(usage.ok()) << usage.status();
  EXPECT_EQ(usage->bytes, 9u);
  EXPECT_EQ(usage->entries, 7u);  // x a a/y a/b a/b/z a/link dl
  EXPECT_TRUE(job_.TreeUsage(7).ok());
  absl::Status s = job_.TreeUsage(6).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(s.message(), HasSubstr(root_ + "/job holds more than 6 entries"));
  EXPECT_EQ(job_.TreeUsage(0).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(SafeDirTest, ChownEntryChangesFilesAndDirectoriesNotLinks) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown to other ids)";
  Write(Job("file"), "x");
  fs::create_directory(Job("dir"));
  fs::create_symlink(root_ + "/secret", Job("link"));
  ASSERT_TRUE(job_.ChownEntry("file", 61001, 61002).ok());
  ASSERT_TRUE(job_.ChownEntry("dir", std::nullopt, 61002).ok());
  ASSERT_TRUE(job_.ChownEntry("link", 61001, 61002).ok());
  auto ids = [](const std::string& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return std::make_pair(static_cast<uint32_t>(st.st_uid), static_cast<uint32_t>(st.st_gid));
  };
  using Ids = std::pair<uint32_t, uint32_t>;
  EXPECT_EQ(ids(Job("file")), Ids(61001, 61002));
  EXPECT_EQ(ids(Job("dir")), Ids(0, 61002));
  EXPECT_EQ(ids(Job("link")), Ids(0, 0));
  EXPECT_EQ(ids(root_ + "/secret"), Ids(0, 0));
  EXPECT_EQ(job_.ChownEntry("none", 1, 1).code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(job_.Chown(61001, std::nullopt).ok());
  EXPECT_EQ(ids(root_ + "/job"), Ids(61001, 0));
  ExpectSecretsUntouched();
}

}  // namespace
}  // namespace fjord::daemon
