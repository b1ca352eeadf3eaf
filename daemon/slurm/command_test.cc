#include "daemon/slurm/command.h"

#include <chrono>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::HasSubstr;

TEST(CommandTest, StdinInStdoutAndStderrOutExitCodeKept) {
  absl::StatusOr<CommandResult> r = RunCommand({"/usr/bin/tr", "a-z", "A-Z"},
                                               {{"PATH", "/usr/bin:/bin"}}, "hello slurm\n", 10000);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->out, "HELLO SLURM\n");
  absl::StatusOr<CommandResult> e = RunCommand({"/bin/ls", "/no/such/dir"}, {}, "", 10000);
  ASSERT_TRUE(e.ok());
  EXPECT_FALSE(e->ok());
  EXPECT_NE(e->exit_code, 0);
  EXPECT_THAT(e->err, HasSubstr("/no/such/dir"));
  EXPECT_THAT(e->Describe("ls"), HasSubstr("ls exited"));
}

TEST(CommandTest, TheEnvironmentIsExactlyTheOneGiven) {
  absl::StatusOr<CommandResult> r = RunCommand({"/usr/bin/env"}, {{"ONLY", "this"}}, "", 10000);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->out, "ONLY=this\n");
}

TEST(CommandTest, ALargeStdinAndOutputDoNotDeadlock) {
  const std::string big(3 << 20, 'x');  // more than a pipe holds, both ways
  absl::StatusOr<CommandResult> r = RunCommand({"/bin/cat"}, {}, big, 20000);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->out.size(), big.size());
  absl::StatusOr<CommandResult> capped = RunCommand({"/bin/cat"}, {}, big, 20000, 1000);
  ASSERT_TRUE(capped.ok());
  EXPECT_EQ(capped->out.size(), 1000u);  // the rest read and dropped: cat still ended
  EXPECT_TRUE(capped->ok());
}

TEST(CommandTest, PastItsTimeTheProgramIsKilled) {
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<CommandResult> r = RunCommand({"/bin/sleep", "30"}, {}, "", 300);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->timed_out);
  EXPECT_FALSE(r->ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_THAT(r->Describe("squeue"), HasSubstr("squeue timed out"));
}

TEST(CommandTest, ProgramsThatCannotStartAreErrors) {
  EXPECT_EQ(RunCommand({"sbatch"}, {}, "", 1000).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunCommand({"/no/such/sbatch"}, {}, "", 1000).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fjord::daemon
