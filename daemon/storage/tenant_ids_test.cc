#include "daemon/storage/tenant_ids.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

class TenantIdsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* t = std::getenv("TEST_TMPDIR");
    root_ = std::string(t ? t : "/tmp") + "/tenant-ids-" + std::to_string(::getpid());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }
  std::string root_;
};

TEST_F(TenantIdsTest, IdsAreStableDistinctAndInTheRange) {
  std::map<std::string, uint32_t> given;
  {
    TenantIds ids(root_, 61000, 50);
    for (int i = 0; i < 50; ++i) {
      const std::string t = "tenant-" + std::to_string(i);
      absl::StatusOr<uint32_t> id = ids.Resolve(t);
      ASSERT_TRUE(id.ok()) << id.status();
      EXPECT_GE(*id, 61000u);
      EXPECT_LT(*id, 61050u);
      given[t] = *id;
      EXPECT_EQ(*ids.Resolve(t), *id);  // cached
    }
  }
  std::set<uint32_t> distinct;
  for (const auto& [t, id] : given) distinct.insert(id);
  EXPECT_EQ(distinct.size(), 50u);
  // Another daemon (a restart, or another node on the same storage) agrees.
  TenantIds again(root_, 61000, 50);
  for (const auto& [t, id] : given) EXPECT_EQ(*again.Resolve(t), id) << t;
  // The claim names its tenant; no temporary claim is left.
  std::ifstream f(root_ + "/.fjord-tenant-ids/" + std::to_string(given["tenant-7"]));
  std::string text((std::istreambuf_iterator<char>(f)), {});
  EXPECT_EQ(text, "tenant-7\n");
  for (const auto& e : fs::directory_iterator(root_ + "/.fjord-tenant-ids")) {
    EXPECT_EQ(e.path().filename().string().find(".claim-"), std::string::npos) << e.path();
  }
  struct stat st {};
  ASSERT_EQ(::stat((root_ + "/.fjord-tenant-ids").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(TenantIdsTest, AFullRangeIsAClearError) {
  TenantIds ids(root_, 70000, 2);
  ASSERT_TRUE(ids.Resolve("a").ok());
  ASSERT_TRUE(ids.Resolve("b").ok());
  absl::StatusOr<uint32_t> c = ids.Resolve("c");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(c.status().message(),
              HasSubstr("worker.tenant_uid_range 70000-70001 has no free id for tenant 'c'"));
  // The tenants that have one keep it.
  TenantIds again(root_, 70000, 2);
  EXPECT_TRUE(again.Resolve("a").ok());
}

// Nodes claiming at once (separate instances, like separate daemons over
// shared storage): every tenant gets one id that all of them agree on.
TEST_F(TenantIdsTest, ConcurrentClaimsAgree) {
  constexpr int kNodes = 4, kTenants = 40;
  std::vector<std::map<std::string, uint32_t>> seen(kNodes);
  std::vector<std::thread> threads;
  for (int n = 0; n < kNodes; ++n) {
    threads.emplace_back([&, n] {
      TenantIds ids(root_, 1000, kTenants);
      for (int i = 0; i < kTenants; ++i) {
        const std::string t = "t" + std::to_string((i * 7 + n * 13) % kTenants);
        absl::StatusOr<uint32_t> id = ids.Resolve(t);
        if (id.ok()) seen[n][t] = *id;
      }
    });
  }
  for (auto& t : threads) t.join();
  std::set<uint32_t> distinct;
  for (const auto& [t, id] : seen[0]) distinct.insert(id);
  ASSERT_EQ(seen[0].size(), static_cast<size_t>(kTenants));
  EXPECT_EQ(distinct.size(), static_cast<size_t>(kTenants));
  for (int n = 1; n < kNodes; ++n) EXPECT_EQ(seen[n], seen[0]) << "node " << n;
}

TEST_F(TenantIdsTest, AClaimsDirectoryOthersCanWriteIsRefused) {
  fs::create_directories(root_ + "/.fjord-tenant-ids");
  ::chmod((root_ + "/.fjord-tenant-ids").c_str(), 0777);
  TenantIds ids(root_, 1000, 10);
  absl::StatusOr<uint32_t> id = ids.Resolve("acme");
  EXPECT_EQ(id.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(id.status().message(), HasSubstr("with mode 777"));
  fs::remove(root_ + "/.fjord-tenant-ids");
  fs::create_directories(root_ + "/elsewhere");
  fs::create_directory_symlink(root_ + "/elsewhere", root_ + "/.fjord-tenant-ids");
  id = TenantIds(root_, 1000, 10).Resolve("acme");
  EXPECT_EQ(id.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(id.status().message(), HasSubstr("a symbolic link"));
}

}  // namespace
}  // namespace fjord::daemon
