#include "daemon/storage/storage.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "daemon/protocol/errors.h"
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
  absl::StatusOr<std::string> p = storage_->ResolveTenantFile("acme", "files/train.jsonl", "training_file");
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(*p, root_ + "/acme/files/train.jsonl");
  EXPECT_TRUE(Resolve("data/sub/x.jsonl").ok());
}

TEST_F(StorageTest, TraversalIsRefused) {
  for (const std::string rel : {"../zeta/files/secret.jsonl", "files/../../zeta/files/secret.jsonl",
                                "/etc/passwd", "files//train.jsonl", "./files/train.jsonl", "..",
                                "files/"}) {
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
  EXPECT_EQ(storage_->ResolveTenantFile("evil", "files/secret.jsonl", "training_file").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(StorageTest, JobDirAndListing) {
  ASSERT_TRUE(storage_->EnsureJobDir("acme", "job-1").ok());
  EXPECT_TRUE(fs::is_directory(root_ + "/acme/jobs/job-1/checkpoints"));
  Write(root_ + "/acme/jobs/job-1/b", "12");
  Write(root_ + "/acme/jobs/job-1/a", "1");
  fs::create_symlink("/etc/passwd", root_ + "/acme/jobs/job-1/c");
  auto files = *Storage::ListRegularFiles(root_ + "/acme/jobs/job-1");
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].name, "a");
  EXPECT_EQ(files[1].bytes, 2u);
}

// A vanished storage root is the node's problem, not the client's:
// Unavailable naming the root, for creating a tenant's area and for a job's.
TEST_F(StorageTest, VanishedRootIsUnavailable) {
  fs::remove_all(root_);
  for (absl::Status s : {storage_->EnsureTenant("acme"), storage_->EnsureJobDir("acme", "job-1")}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_THAT(s.message(), HasSubstr("storage root " + root_ + " is not an accessible directory"));
  }
  absl::Status s = storage_->ResolveTenantFile("acme", "files/train.jsonl", "training_file").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_FALSE(fs::exists(root_));  // nothing re-created
}

// What a worker leaves as a job's adapter is checked before it is reported.
TEST_F(StorageTest, VerifyAdapterDirRefusesTornAdapters) {
  const std::string dir = root_ + "/adapter";
  fs::create_directories(dir);
  const std::string header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  std::string st(8, '\0');
  for (int i = 0; i < 8; ++i) st[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  const std::string weights = st + header + std::string(8, '\1');
  Write(dir + "/adapter_config.json", "{\"peft_type\": \"LORA\", \"r\": 8}");
  Write(dir + "/adapter_model.safetensors", weights);
  EXPECT_TRUE(VerifyAdapterDir(dir).ok()) << VerifyAdapterDir(dir);

  Write(dir + "/adapter_model.safetensors", weights.substr(0, weights.size() - 3));  // truncated data
  absl::Status s = VerifyAdapterDir(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr(dir + "/adapter_model.safetensors"));
  Write(dir + "/adapter_model.safetensors", weights.substr(0, 20));  // truncated header
  s = VerifyAdapterDir(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr("does not fit"));
  Write(dir + "/adapter_model.safetensors", "");
  EXPECT_EQ(VerifyAdapterDir(dir).code(), absl::StatusCode::kDataLoss);
  fs::remove(dir + "/adapter_model.safetensors");
  s = VerifyAdapterDir(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr("adapter_model.safetensors"));

  Write(dir + "/adapter_model.safetensors", weights);
  Write(dir + "/adapter_config.json", "{\"peft_type\": \"LO");  // torn JSON
  s = VerifyAdapterDir(dir);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(s.message(), HasSubstr("adapter_config.json: not a PEFT adapter config"));
  Write(dir + "/adapter_config.json", "[]");
  EXPECT_EQ(VerifyAdapterDir(dir).code(), absl::StatusCode::kDataLoss);
}

TEST(UploadNameTest, Names) {
  EXPECT_TRUE(ValidUploadFilename("train.jsonl"));
  EXPECT_FALSE(ValidUploadFilename("a/b"));
  EXPECT_FALSE(ValidUploadFilename(".."));
  EXPECT_FALSE(ValidUploadFilename(""));
  EXPECT_FALSE(ValidUploadFilename(std::string(256, 'a')));
  EXPECT_FALSE(ValidUploadFilename("a\nb"));
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
  for (const std::string p : {"/acme", "/acme/files", "/acme/files/train.jsonl", "/acme/jobs", "/acme/data/sub/x.jsonl"}) {
    EXPECT_EQ(owner(root_ + p), Ids(0, 61002)) << p;  // readable by the worker's group, not its to change
  }
  for (const std::string p : {"/acme/jobs/job-1", "/acme/jobs/job-1/checkpoints",
                              "/acme/jobs/job-1/checkpoints/step-2.safetensors", "/acme/jobs/job-1/adapter"}) {
    EXPECT_EQ(owner(root_ + p), Ids(61001, 61002)) << p;  // the worker writes here
  }
  EXPECT_EQ(owner(root_ + "/acme/jobs/job-1/link"), Ids(0, 0));    // not followed, not changed
  EXPECT_EQ(owner("/etc/passwd"), Ids(0, 0));
  EXPECT_EQ(owner(root_ + "/zeta/files/secret.jsonl"), Ids(0, 0));  // another tenant's area is untouched
  EXPECT_EQ(storage_->ReownTenantArea("nobody-here", 1, 1).code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace fjord::daemon
