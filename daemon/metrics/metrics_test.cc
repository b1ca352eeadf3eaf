#include "daemon/metrics/metrics.h"

#include <httplib.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/util/nvml.h"

namespace fjord::daemon {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, RendersPrometheusText) {
  Metrics m;
  m.Set("fjord_queue_depth", "", 3);
  m.Add("fjord_jobs_finished_total", "status=\"succeeded\"");
  m.Add("fjord_jobs_finished_total", "status=\"succeeded\"");
  m.ObserveLatency("job.get", 0.0003);
  m.ObserveLatency("job.get", 0.2);
  const std::string text = m.Render();
  EXPECT_THAT(text, HasSubstr("# TYPE fjord_queue_depth gauge\nfjord_queue_depth 3\n"));
  EXPECT_THAT(text, HasSubstr("fjord_jobs_finished_total{status=\"succeeded\"} 2\n"));
  EXPECT_THAT(
      text,
      HasSubstr("fjord_request_duration_seconds_bucket{command=\"job.get\",le=\"0.0005\"} 1\n"));
  EXPECT_THAT(
      text,
      HasSubstr("fjord_request_duration_seconds_bucket{command=\"job.get\",le=\"+Inf\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("fjord_request_duration_seconds_count{command=\"job.get\"} 2\n"));
}

TEST(MetricsTest, ServesOverHttpOnLoopback) {
  Metrics m;
  m.SetCollector([](Metrics& self) { self.Set("fjord_peers", "", 7); });
  auto s = MetricsHttpServer::Start("127.0.0.1:0", &m);
  ASSERT_TRUE(s.ok()) << s.status();
  httplib::Client c("127.0.0.1", (*s)->port());
  auto res = c.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_THAT(res->body, HasSubstr("fjord_peers 7"));
  EXPECT_EQ(MetricsHttpServer::Start("nonsense", &m).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// /healthz is 200 "ok" until the daemon sets a problem (its storage root
// missing or read-only), then 503 with the problem, and 200 again after.
TEST(MetricsTest, BearerTokenGuardsMetricsButNotHealthz) {
  Metrics m;
  m.SetCollector([](Metrics& self) { self.Set("fjord_peers", "", 2); });
  auto s = MetricsHttpServer::Start("127.0.0.1:0", &m, "s3cret-token-0123456789");
  ASSERT_TRUE(s.ok()) << s.status();
  httplib::Client c("127.0.0.1", (*s)->port());
  auto none = c.Get("/metrics");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  EXPECT_EQ(none->get_header_value("WWW-Authenticate"), "Bearer realm=\"fjordd metrics\"");
  EXPECT_THAT(none->body, Not(HasSubstr("fjord_peers")));
  for (const char* wrong : {"Bearer s3cret-token-0123456788", "Bearer s3cret-token-012345678",
                            "Bearer s3cret-token-01234567890", "Basic s3cret-token-0123456789",
                            "s3cret-token-0123456789"}) {
    auto r = c.Get("/metrics", {{"Authorization", wrong}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << wrong;
  }
  auto ok = c.Get("/metrics", {{"Authorization", "Bearer s3cret-token-0123456789"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_THAT(ok->body, HasSubstr("fjord_peers 2"));
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST(MetricsTest, HealthzSaysWhatIsWrong) {
  Metrics m;
  auto s = MetricsHttpServer::Start("127.0.0.1:0", &m);
  ASSERT_TRUE(s.ok()) << s.status();
  httplib::Client c("127.0.0.1", (*s)->port());
  auto res = c.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body, "ok\n");
  m.SetHealthProblem("storage root /mnt/fjord is not accessible: No such file or directory");
  res = c.Get("/healthz");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  EXPECT_EQ(res->body, "storage root /mnt/fjord is not accessible: No such file or directory\n");
  m.SetHealthProblem("");
  EXPECT_EQ(c.Get("/healthz")->status, 200);
}

// On a machine without the NVIDIA driver, Load says so; with one, the
// counters read (the GPU check runs this on a GPU machine).
TEST(NvmlTest, LoadsOrSaysWhy) {
  std::string why;
  std::unique_ptr<Nvml> n = Nvml::Load(&why);
  if (n == nullptr) {
    EXPECT_THAT(why, HasSubstr("libnvidia-ml"));
    GTEST_SKIP() << why;
  }
  ASSERT_GT(n->device_count(), 0);
  EXPECT_TRUE(n->MemoryUsedBytes(0).has_value());
  std::optional<uint64_t> e = n->TotalEnergyMillijoules(0);
  ASSERT_TRUE(e.has_value());
  EXPECT_GT(*e, 0u);
}

}  // namespace
}  // namespace fjord::daemon
