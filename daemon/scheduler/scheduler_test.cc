#include "daemon/scheduler/scheduler.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Started(const SchedulePlan& p) {
  std::vector<std::string> ids;
  for (const Assignment& a : p.start) ids.push_back(a.job_id);
  return ids;
}

TEST(SchedulerTest, FifoWithinPriorityAndGpuAssignment) {
  SchedulerConfig c;
  c.gpus = {0, 1, 2};
  SchedulePlan p = Schedule(c, {}, {{"a", "t", 0, 1, 1}, {"b", "t", 0, 2, 2}, {"c", "t", 0, 3, 1}});
  EXPECT_THAT(Started(p), ElementsAre("a", "b"));
  EXPECT_THAT(p.start[0].gpu_ids, ElementsAre(0));
  EXPECT_THAT(p.start[1].gpu_ids, ElementsAre(1, 2));
  EXPECT_EQ(p.queue_position.at("c"), 1);
}

TEST(SchedulerTest, PriorityFirst) {
  SchedulerConfig c;
  c.cpu_slots = 1;
  SchedulePlan p = Schedule(c, {}, {{"old", "t", 0, 1, 1}, {"urgent", "t", 5, 2, 1}});
  EXPECT_THAT(Started(p), ElementsAre("urgent"));
  EXPECT_EQ(p.queue_position.at("old"), 1);
  EXPECT_TRUE(p.start[0].gpu_ids.empty());
}

TEST(SchedulerTest, FairShareBetweenTenants) {
  SchedulerConfig c;
  c.cpu_slots = 2;
  // Tenant a submitted three jobs before b's one; one slot is busy with a.
  SchedulePlan p = Schedule(c, {{"r", "a", {}, 1}},
                            {{"a1", "a", 0, 1, 1}, {"a2", "a", 0, 2, 1}, {"b1", "b", 0, 3, 1}});
  EXPECT_THAT(Started(p), ElementsAre("b1"));
  EXPECT_EQ(p.queue_position.at("a1"), 1);
  EXPECT_EQ(p.queue_position.at("a2"), 2);
  // Interleaving when nothing runs: a, b, a, b...
  c.cpu_slots = 0;
  p = Schedule(
      c, {},
      {{"a1", "a", 0, 1, 1}, {"a2", "a", 0, 2, 1}, {"b1", "b", 0, 3, 1}, {"b2", "b", 0, 4, 1}});
  EXPECT_EQ(p.queue_position.at("a1"), 1);
  EXPECT_EQ(p.queue_position.at("b1"), 2);
  EXPECT_EQ(p.queue_position.at("a2"), 3);
  EXPECT_EQ(p.queue_position.at("b2"), 4);
}

TEST(SchedulerTest, PerTenantRunningLimit) {
  SchedulerConfig c;
  c.cpu_slots = 3;
  c.max_running_per_tenant = 1;
  SchedulePlan p =
      Schedule(c, {}, {{"a1", "a", 0, 1, 1}, {"a2", "a", 0, 2, 1}, {"b1", "b", 0, 3, 1}});
  EXPECT_THAT(Started(p), ElementsAre("a1", "b1"));
  EXPECT_EQ(p.queue_position.at("a2"), 1);
}

TEST(SchedulerTest, NoBackfillPastABigJob) {
  SchedulerConfig c;
  c.gpus = {0, 1};
  SchedulePlan p =
      Schedule(c, {{"r", "x", {0}, 1}}, {{"big", "t", 0, 1, 2}, {"small", "u", 0, 2, 1}});
  EXPECT_TRUE(p.start.empty());
  EXPECT_EQ(p.queue_position.at("big"), 1);
  EXPECT_EQ(p.queue_position.at("small"), 2);
}

TEST(SchedulerTest, BusyGpusAreNotReused) {
  SchedulerConfig c;
  c.gpus = {0, 1, 2, 3};
  SchedulePlan p = Schedule(c, {{"r", "x", {0, 2}, 2}}, {{"j", "t", 0, 1, 2}});
  ASSERT_EQ(p.start.size(), 1u);
  EXPECT_THAT(p.start[0].gpu_ids, ElementsAre(1, 3));
}

}  // namespace
}  // namespace fjord::daemon
