#include "runtime/dist/world_spec.h"

#include <map>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::dist {
namespace {

using ::testing::HasSubstr;

EnvLookup Env(std::map<std::string, std::string> vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

TEST(WorldSpecTest, NoLauncherIsNoWorld) {
  auto w = WorldSpecFromEnv(Env({{"PATH", "/bin"}}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_FALSE(w->has_value());
}

TEST(WorldSpecTest, TorchrunVariables) {
  auto w = WorldSpecFromEnv(Env({{"RANK", "5"},
                                 {"WORLD_SIZE", "8"},
                                 {"LOCAL_RANK", "1"},
                                 {"LOCAL_WORLD_SIZE", "4"},
                                 {"MASTER_ADDR", "10.0.0.7"},
                                 {"MASTER_PORT", "29400"}}));
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE(w->has_value());
  const WorldSpec& s = **w;
  EXPECT_EQ(s.rank, 5);
  EXPECT_EQ(s.world_size, 8);
  EXPECT_EQ(s.local_rank, 1);
  EXPECT_EQ(s.local_world_size, 4);
  EXPECT_EQ(s.master_addr, "10.0.0.7");
  EXPECT_EQ(s.master_port, 29400);
  EXPECT_EQ(s.source, "torchrun");
  EXPECT_EQ(s.ToString(),
            "rank 5 of 8 (local 1 of 4), rendezvous 10.0.0.7:29400, from torchrun's variables");
}

TEST(WorldSpecTest, TorchrunErrorsNameTheVariable) {
  struct Case {
    std::map<std::string, std::string> vars;
    std::string error;
  };
  const Case cases[] = {
      {{{"WORLD_SIZE", "2"}}, "RANK is not set"},
      {{{"RANK", "x"}, {"WORLD_SIZE", "2"}}, "RANK=\"x\": not an integer"},
      {{{"RANK", "-1"}, {"WORLD_SIZE", "2"}}, "RANK=\"-1\": must be at least 0"},
      {{{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}},
       "RANK=2 is not below WORLD_SIZE=2"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "0"}}, "WORLD_SIZE=\"0\": must be at least 1"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "29500"}}, "MASTER_ADDR is not set"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}, "MASTER_PORT is not set"},
      {{{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}},
       "MASTER_PORT=\"70000\": not a TCP port"},
      {{{"RANK", "1"},
        {"WORLD_SIZE", "2"},
        {"LOCAL_RANK", "2"},
        {"LOCAL_WORLD_SIZE", "2"},
        {"MASTER_ADDR", "h"},
        {"MASTER_PORT", "1"}},
       "LOCAL_RANK=2 is not below the ranks on this node (2)"},
  };
  for (const Case& c : cases) {
    auto w = WorldSpecFromEnv(Env(c.vars));
    ASSERT_FALSE(w.ok()) << c.error;
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(w.status().message()), HasSubstr(c.error));
  }
}

TEST(WorldSpecTest, AWorldOfOneNeedsNoRendezvous) {
  auto w = WorldSpecFromEnv(Env({{"RANK", "0"}, {"WORLD_SIZE", "1"}}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->world_size, 1);
  EXPECT_EQ((*w)->master_port, 0);
}

TEST(WorldSpecTest, SlurmVariables) {
  auto w = WorldSpecFromEnv(Env({{"SLURM_PROCID", "3"},
                                 {"SLURM_NTASKS", "4"},
                                 {"SLURM_LOCALID", "1"},
                                 {"SLURM_TASKS_PER_NODE", "2(x2)"},
                                 {"SLURM_JOB_NODELIST", "gpu[07-08]"},
                                 {"SLURM_JOB_ID", "123456"}}));
  ASSERT_TRUE(w.ok()) << w.status();
  const WorldSpec& s = **w;
  EXPECT_EQ(s.rank, 3);
  EXPECT_EQ(s.world_size, 4);
  EXPECT_EQ(s.local_rank, 1);
  EXPECT_EQ(s.local_world_size, 2);
  EXPECT_EQ(s.master_addr, "gpu07");
  EXPECT_EQ(s.master_port, kSlurmPortBase + 123456 % kSlurmPortSpan);
  EXPECT_EQ(s.source, "slurm");
}

TEST(WorldSpecTest, SlurmMasterVariablesWinAndTorchrunWinsOverSlurm) {
  auto w = WorldSpecFromEnv(Env({{"SLURM_PROCID", "0"},
                                 {"SLURM_NTASKS", "2"},
                                 {"SLURM_JOB_NODELIST", "a,b"},
                                 {"MASTER_ADDR", "10.1.1.1"},
                                 {"MASTER_PORT", "4000"}}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->master_addr, "10.1.1.1");
  EXPECT_EQ((*w)->master_port, 4000);

  auto t = WorldSpecFromEnv(Env({{"SLURM_PROCID", "0"},
                                 {"SLURM_NTASKS", "1"},
                                 {"RANK", "1"},
                                 {"WORLD_SIZE", "2"},
                                 {"MASTER_ADDR", "h"},
                                 {"MASTER_PORT", "5"}}));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ((*t)->source, "torchrun");
  EXPECT_EQ((*t)->rank, 1);
}

TEST(WorldSpecTest, SlurmStepOfOneTaskIsAWorldOfOne) {
  auto w = WorldSpecFromEnv(Env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}}));
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ((*w)->world_size, 1);
}

TEST(WorldSpecTest, SlurmErrors) {
  auto no_list =
      WorldSpecFromEnv(Env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_ID", "1"}}));
  ASSERT_FALSE(no_list.ok());
  EXPECT_THAT(std::string(no_list.status().message()), HasSubstr("SLURM_JOB_NODELIST is not set"));
  auto bad_list = WorldSpecFromEnv(Env({{"SLURM_PROCID", "0"},
                                        {"SLURM_NTASKS", "2"},
                                        {"SLURM_JOB_NODELIST", "n[1-2"},
                                        {"SLURM_JOB_ID", "1"}}));
  ASSERT_FALSE(bad_list.ok());
  EXPECT_THAT(std::string(bad_list.status().message()),
              HasSubstr("SLURM_JOB_NODELIST=\"n[1-2\": unbalanced '['"));
  auto no_job = WorldSpecFromEnv(
      Env({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_JOB_NODELIST", "n1"}}));
  ASSERT_FALSE(no_job.ok());
  EXPECT_THAT(std::string(no_job.status().message()), HasSubstr("SLURM_JOB_ID is not set"));
}

TEST(WorldSpecTest, FirstSlurmHost) {
  EXPECT_EQ(*FirstSlurmHost("node[03-05,09],gpu1"), "node03");
  EXPECT_EQ(*FirstSlurmHost("gpu-a,gpu-b"), "gpu-a");
  EXPECT_EQ(*FirstSlurmHost("n[1-2]x"), "n1x");
  EXPECT_EQ(*FirstSlurmHost("single"), "single");
  EXPECT_EQ(*FirstSlurmHost("rack[7,9]"), "rack7");
  EXPECT_FALSE(FirstSlurmHost("").ok());
  EXPECT_FALSE(FirstSlurmHost("a]").ok());
  EXPECT_FALSE(FirstSlurmHost("n[x-y]").ok());
  EXPECT_FALSE(FirstSlurmHost(",b").ok());
}

TEST(WorldSpecTest, FirstSlurmTasksPerNode) {
  EXPECT_EQ(*FirstSlurmTasksPerNode("4(x2),3"), 4);
  EXPECT_EQ(*FirstSlurmTasksPerNode("2"), 2);
  EXPECT_FALSE(FirstSlurmTasksPerNode("").ok());
  EXPECT_FALSE(FirstSlurmTasksPerNode("x(2)").ok());
}

}  // namespace
}  // namespace fjord::dist
