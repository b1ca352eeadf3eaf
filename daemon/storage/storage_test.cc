#include "daemon/storage/storage.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "daemon/protocol/errors.h"
#include "daemon/storage/safe_dir.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class StorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* t = std::getenv("TEST_TMPDIR");
    root_ = std::string(t ? t : "/tmp") + "/storage-" + std::to_string(::getpid());
    fs::remove_all(root_);
    fs::create_directories(root_);
    storage_ = std::make_unique<Storage>(root_);
    ASSERT_TRUE(storage_->EnsureTenant("acme").ok());
    ASSERT_TRUE(storage_->EnsureTenant("zeta").ok());
    Write(root_ + "/acme/files/train.jsonl", "{}\n");
    fs::create_directories(root_ + "/acme/data/sub");
    Write(root_ + "/acme/data/sub/x.jsonl", "{}\n");
    Write(root_ + "/zeta/files/secret.jsonl", "secret\n");
    Write(root_ + "/outside.jsonl", "outside\n");
  }
  void TearDown() override { fs::remove_all(root_); }
  static void Write(const std::string& p, const std::string& s) { std::ofstream(p) << s; }

  absl::Status Resolve(const std::string& rel) {
    return storage_->ResolveTenantFile("acme", rel, "training_file").status();
  }

  std::string root_;
  std::unique_ptr<Storage> storage_;
};

TEST_F(StorageTest, ResolvesInsideTheTenantArea) {
  absl::StatusOr<std::string> p =
      storage_->ResolveTenantFile("acme", "files/train.jsonl", "training_file");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, root_ + "/acme/files/train.jsonl");
  EXPECT_TRUE(Resolve("data/sub/x.jsonl").ok());
}

TEST_F(StorageTest, TraversalIsRefused) {
  for (const std::string rel :
       {"../zeta/files/secret.jsonl", "files/../../zeta/files/secret.jsonl", "/etc/passwd",
        "files//train.jsonl", "./files/train.jsonl", "..", "files/"}) {
    SCOPED_TRACE(rel);
    absl::Status s = Resolve(rel);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(protocol::ParamOf(s), "training_file");
  }
  EXPECT_THAT(Resolve("/etc/passwd").message(), HasSubstr("absolute path"));
  EXPECT_THAT(Resolve("../x").message(), HasSubstr("'..'"));
}

TEST_F(StorageTest, SymlinksAreRefused) {
  fs::create_symlink(root_ + "/zeta/files/secret.jsonl", root_ + "/acme/files/link.jsonl");
  fs::create_directory_symlink(root_ + "/zeta/files", root_ + "/acme/zfiles");
  fs::create_directory_symlink(root_, root_ + "/acme/up");
  EXPECT_THAT(Resolve("files/link.jsonl").message(), HasSubstr("symbolic link"));
  EXPECT_THAT(Resolve("zfiles/secret.jsonl").message(), HasSubstr("symbolic link ('zfiles')"));
  EXPECT_THAT(Resolve("up/outside.jsonl").message(), HasSubstr("symbolic link"));
}

TEST_F(StorageTest, MissingAndNonRegular) {
  EXPECT_THAT(Resolve("files/none.jsonl").message(), HasSubstr("does not exist"));
  EXPECT_THAT(Resolve("data").message(), HasSubstr("not a regular file"));
  EXPECT_THAT(Resolve("files/train.jsonl/x").message(), HasSubstr("not a directory"));
  EXPECT_THAT(storage_->ResolveTenantFile("nobody", "files/a", "training_file").status().message(),
              HasSubstr("does not exist"));
}

TEST_F(StorageTest, TenantDirThatIsASymlinkIsRefused) {
  fs::create_directory_symlink(root_ + "/zeta", root_ + "/evil");
  EXPECT_EQ(storage_->EnsureTenant("evil").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(
      storage_->ResolveTenantFile("evil", "files/secret.jsonl", "training_file").status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_F(StorageTest, EnsureJobDirMakesCheckpointsAndOpensTheJobDir) {
  absl::StatusOr<SafeDir> job = storage_->EnsureJobDir("acme", "job-1");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->path(), root_ + "/acme/jobs/job-1");
  EXPECT_TRUE(fs::is_directory(root_ + "/acme/jobs/job-1/checkpoints"));
  EXPECT_EQ(fs::status(root_ + "/acme/jobs/job-1").permissions() & fs::perms::others_all,
            fs::perms::none);
  ASSERT_TRUE(job->WriteFileAtomic("job.yaml", "id: job-1\n", 0640).ok());
  EXPECT_TRUE(fs::is_regular_file(root_ + "/acme/jobs/job-1/job.yaml"));
  // Again: the existing directory is opened, nothing is lost.
  job = storage_->EnsureJobDir("acme", "job-1");
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(fs::is_regular_file(root_ + "/acme/jobs/job-1/job.yaml"));
  absl::StatusOr<SafeDir> opened = storage_->OpenJobDir("acme", "job-1");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->path(), root_ + "/acme/jobs/job-1");
  EXPECT_EQ(storage_->OpenJobDir("acme", "job-2").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(storage_->EnsureJobDir("acme", "../zeta").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(storage_->OpenJobDir("acme", "..").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(storage_->OpenTenantDir("acme/jobs").status().code(),
            absl::StatusCode::kInvalidArgument);
}

// A worker owns its job directory, not jobs/ or the area; but if a link
// ever stands in for one of them, opening a job through it is refused.
TEST_F(StorageTest, JobDirThroughASymlinkIsRefused) {
  ASSERT_TRUE(storage_->EnsureJobDir("zeta", "job-9").ok());
  fs::create_directory_symlink(root_ + "/zeta/jobs/job-9", root_ + "/acme/jobs/job-1");
  for (const absl::Status& s : {storage_->OpenJobDir("acme", "job-1").status(),
                                storage_->EnsureJobDir("acme", "job-1").status()}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_THAT(s.message(), HasSubstr(root_ + "/acme/jobs/job-1 is a symbolic link"));
  }
  fs::create_directory_symlink(root_ + "/zeta", root_ + "/evil");
  EXPECT_EQ(storage_->OpenTenantDir("evil").status().code(), absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<SafeDir> root = storage_->OpenRoot();
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(root->path(), root_);
}

// A vanished storage root is the node's problem, not the client's:
// Unavailable naming the root, for creating a tenant's area and for a job's.
TEST_F(StorageTest, VanishedRootIsUnavailable) {
  fs::remove_all(root_);
  for (absl::Status s :
       {storage_->EnsureTenant("acme"), storage_->EnsureJobDir("acme", "job-1").status(),
        storage_->OpenRoot().status(), storage_->OpenJobDir("acme", "job-1").status()}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_THAT(s.message(),
                HasSubstr("storage root " + root_ + " is not an accessible directory"));
  }
  absl::Status s =
      storage_->ResolveTenantFile("acme", "files/train.jsonl", "training_file").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_FALSE(fs::exists(root_));  // nothing re-created
}

// A valid adapter (config and weights) in directory `dir`.
void WriteAdapter(const std::string& dir) {
  fs::create_directories(dir);
  const std::string header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  std::string st(8, '\0');
  for (int i = 0; i < 8; ++i) st[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  std::ofstream(dir + "/adapter_config.json") << "{\"peft_type\": \"LORA\", \"r\": 8}";
  std::ofstream(dir + "/adapter_model.safetensors") << st + header + std::string(8, '\1');
}

// What a worker leaves as a job's adapter is checked before it is reported.
TEST_F(StorageTest, VerifyAdapterDirRefusesTornAdapters) {
  const std::string dir = root_ + "/adapter";
  WriteAdapter(dir);
  std::ifstream in(dir + "/adapter_model.safetensors", std::ios::binary);
  const std::string weights((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  absl::StatusOr<SafeDir> adapter = SafeDir::OpenTrusted(dir);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  EXPECT_TRUE(VerifyAdapterDir(*adapter).ok()) << VerifyAdapterDir(*adapter);

  Write(dir + "/adapter_model.safetensors",
        weights.substr(0, weights.size() - 3));  // truncated data
  absl::Status s = VerifyAdapterDir(*adapter);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr(dir + "/adapter_model.safetensors"));
  Write(dir + "/adapter_model.safetensors", weights.substr(0, 20));  // truncated header
  s = VerifyAdapterDir(*adapter);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr("does not fit"));
  Write(dir + "/adapter_model.safetensors", "");
  EXPECT_EQ(VerifyAdapterDir(*adapter).code(), absl::StatusCode::kDataLoss);
  fs::remove(dir + "/adapter_model.safetensors");
  s = VerifyAdapterDir(*adapter);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr("adapter_model.safetensors"));

  Write(dir + "/adapter_model.safetensors", weights);
  Write(dir + "/adapter_config.json", "{\"peft_type\": \"LO");  // torn JSON
  s = VerifyAdapterDir(*adapter);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr("adapter_config.json: not a PEFT adapter config"));
  Write(dir + "/adapter_config.json", "[]");
  EXPECT_EQ(VerifyAdapterDir(*adapter).code(), absl::StatusCode::kDataLoss);
  Write(dir + "/adapter_config.json",
        std::string(1 << 20, ' ') + "{\"peft_type\": \"LORA\"}");  // past 1 MiB
  EXPECT_EQ(VerifyAdapterDir(*adapter).code(), absl::StatusCode::kDataLoss);
}

// A worker could make a valid adapter elsewhere (or point at any file) and
// leave only links in its adapter directory: they are refused, not read.
TEST_F(StorageTest, VerifyAdapterDirRefusesLinkedFiles) {
  const std::string elsewhere = root_ + "/valid";
  WriteAdapter(elsewhere);
  const std::string dir = root_ + "/adapter";
  fs::create_directories(dir);
  for (const char* name : {"adapter_config.json", "adapter_model.safetensors"}) {
    fs::create_symlink(elsewhere + "/" + name, dir + "/" + name);
  }
  absl::StatusOr<SafeDir> adapter = SafeDir::OpenTrusted(dir);
  ASSERT_TRUE(adapter.ok()) << adapter.status();
  absl::Status s = VerifyAdapterDir(*adapter);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr(dir + "/adapter_config.json is a symbolic link"));

  fs::remove(dir + "/adapter_config.json");
  fs::copy_file(elsewhere + "/adapter_config.json", dir + "/adapter_config.json");
  s = VerifyAdapterDir(*adapter);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr(dir + "/adapter_model.safetensors is a symbolic link"));

  fs::remove(dir + "/adapter_model.safetensors");
  fs::create_hard_link(elsewhere + "/adapter_model.safetensors",
                       dir + "/adapter_model.safetensors");
  s = VerifyAdapterDir(*adapter);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr(dir + "/adapter_model.safetensors has 2 hard links"));

  // The adapter directory itself as a link: OpenDir refuses it.
  fs::remove_all(dir);
  fs::create_directory_symlink(elsewhere, dir);
  absl::StatusOr<SafeDir> root = SafeDir::OpenTrusted(root_);
  ASSERT_TRUE(root.ok()) << root.status();
  EXPECT_EQ(root->OpenDir("adapter").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(UploadNameTest, Names) {
  EXPECT_TRUE(ValidUploadFilename("train.jsonl"));
  EXPECT_FALSE(ValidUploadFilename("a/b"));
  EXPECT_FALSE(ValidUploadFilename(".."));
  EXPECT_FALSE(ValidUploadFilename(""));
  EXPECT_FALSE(ValidUploadFilename(std::string(256, 'a')));
  EXPECT_FALSE(ValidUploadFilename("a\nb"));
  EXPECT_FALSE(ValidUploadFilename(std::string("a\0b", 3)));
  EXPECT_FALSE(ValidUploadFilename("a\x7f"));
}

// Names that would render as another name, or break a log line, are
// refused; other Unicode is welcome.
TEST(UploadNameTest, UnicodeNames) {
  EXPECT_FALSE(ValidUploadFilename("a\u0085b"));           // NEL (C1 control)
  EXPECT_FALSE(ValidUploadFilename("a\u009bb"));           // CSI (C1 control)
  EXPECT_FALSE(ValidUploadFilename("a\u2028b"));           // line separator
  EXPECT_FALSE(ValidUploadFilename("a\u2029b"));           // paragraph separator
  EXPECT_FALSE(ValidUploadFilename("x\u202Egnp.exe"));     // right-to-left override
  EXPECT_FALSE(ValidUploadFilename("x\u2066y\u2069"));     // isolates
  EXPECT_FALSE(ValidUploadFilename("a\u200Bb"));           // zero-width space
  EXPECT_FALSE(ValidUploadFilename("\uFEFFtrain.jsonl"));  // byte order mark
  EXPECT_FALSE(ValidUploadFilename("a\u061Cb"));           // Arabic letter mark
  // Invalid UTF-8: a stray byte, a truncated sequence, an overlong '/', a
  // surrogate, past U+10FFFF.
  EXPECT_FALSE(ValidUploadFilename("\xff"));
  EXPECT_FALSE(ValidUploadFilename("a\xc3"));
  EXPECT_FALSE(
      ValidUploadFilename("a\xc0\xaf"
                          "b"));
  EXPECT_FALSE(
      ValidUploadFilename("a\xed\xa0\x80"
                          "b"));
  EXPECT_FALSE(ValidUploadFilename("a\xf4\x90\x80\x80"));

  EXPECT_TRUE(ValidUploadFilename("\u00dcn\u00efc\u00f6d\u00e9 train.jsonl"));  // Ünïcödé
  EXPECT_TRUE(ValidUploadFilename("\u8a13\u7df4\u30c7\u30fc\u30bf.jsonl"));     // 訓練データ
  EXPECT_TRUE(ValidUploadFilename("\ud55c\uad6d\uc5b4.jsonl"));                 // 한국어
  EXPECT_TRUE(ValidUploadFilename("\U0001F600.jsonl"));                         // 4-byte UTF-8
  EXPECT_TRUE(ValidUploadFilename(std::string(255, 'a')));
}

TEST_F(StorageTest, ReownTenantAreaGivesJobsToTheWorkerAndFilesToItsGroup) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown to other ids)";
  ASSERT_TRUE(storage_->EnsureJobDir("acme", "job-1").ok());
  Write(root_ + "/acme/jobs/job-1/checkpoints/step-2.safetensors", "x");
  fs::create_directories(root_ + "/acme/jobs/job-1/adapter");
  fs::create_symlink("/etc/passwd", root_ + "/acme/jobs/job-1/link");
  ASSERT_TRUE(storage_->ReownTenantArea("acme", 61001, 61002).ok());
  auto owner = [](const std::string& p) {
    struct stat st {};
    EXPECT_EQ(::lstat(p.c_str(), &st), 0) << p;
    return std::make_pair(static_cast<uint32_t>(st.st_uid), static_cast<uint32_t>(st.st_gid));
  };
  using Ids = std::pair<uint32_t, uint32_t>;
  for (const std::string p : {"/acme", "/acme/files", "/acme/files/train.jsonl", "/acme/jobs",
                              "/acme/data/sub/x.jsonl"}) {
    EXPECT_EQ(owner(root_ + p), Ids(0, 61002))
        << p;  // readable by the worker's group, not its to change
  }
  for (const std::string p :
       {"/acme/jobs/job-1", "/acme/jobs/job-1/checkpoints",
        "/acme/jobs/job-1/checkpoints/step-2.safetensors", "/acme/jobs/job-1/adapter"}) {
    EXPECT_EQ(owner(root_ + p), Ids(61001, 61002)) << p;  // the worker writes here
  }
  EXPECT_EQ(owner(root_ + "/acme/jobs/job-1/link"), Ids(0, 0));  // not followed, not changed
  EXPECT_EQ(owner("/etc/passwd"), Ids(0, 0));
  EXPECT_EQ(owner(root_ + "/zeta/files/secret.jsonl"),
            Ids(0, 0));  // another tenant's area is untouched
  EXPECT_EQ(storage_->ReownTenantArea("nobody-here", 1, 1).code(), absl::StatusCode::kUnavailable);
}

// A worker links a root-only file into its job directory so that re-owning
// the area would hand it over: refused, naming the link; the file keeps its
// owner.
TEST_F(StorageTest, ReownTenantAreaRefusesAHardLinkedFile) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown to other ids)";
  ASSERT_TRUE(storage_->EnsureJobDir("acme", "job-1").ok());
  const std::string secret = root_ + "/root-only";
  Write(secret, "secret");
  fs::permissions(secret, fs::perms::owner_read | fs::perms::owner_write);
  ASSERT_EQ(::link(secret.c_str(), (root_ + "/acme/jobs/job-1/events.jsonl").c_str()), 0);
  absl::Status s = storage_->ReownTenantArea("acme", 61001, 61002);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(s.message(), HasSubstr(root_ + "/acme/jobs/job-1/events.jsonl has 2 hard links"));
  struct stat st {};
  ASSERT_EQ(::stat(secret.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 0u);
}

}  // namespace
}  // namespace fjord::daemon
