// Clock: the time seam of the daemon (LevelDB's Env idea for time), so
// heartbeat, expiry and timeout tests advance a FakeClock instead of sleeping.
#ifndef FJORD_DAEMON_UTIL_CLOCK_H_
#define FJORD_DAEMON_UTIL_CLOCK_H_

#include <atomic>
#include <chrono>
#include <cstdint>

namespace fjord::daemon {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic milliseconds (for timeouts). Thread-safe.
  virtual int64_t NowMs() = 0;
  // Unix time in milliseconds (for timestamps shown to users). Thread-safe.
  virtual int64_t WallMs() = 0;
  // The process-wide real clock.
  static Clock* Real();
};

class RealClock : public Clock {
 public:
  int64_t NowMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  int64_t WallMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

inline Clock* Clock::Real() {
  static RealClock* clock = new RealClock();
  return clock;
}

// Time moves only when told. Thread-safe.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1'700'000'000'000) : now_(start_ms) {}
  int64_t NowMs() override { return now_.load(); }
  int64_t WallMs() override { return now_.load(); }
  void Advance(int64_t ms) { now_ += ms; }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_UTIL_CLOCK_H_
