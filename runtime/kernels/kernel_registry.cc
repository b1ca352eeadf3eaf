#include "runtime/kernels/kernel_registry.h"

#include <functional>
#include <map>
#include <mutex>
#include <utility>

namespace fjord::kernels {
namespace {

struct Registry {
  std::mutex mu;
  std::vector<std::pair<std::string, KernelSelfTest>> tests;  // registration order
  std::map<std::string, KernelHealth, std::less<>> health;
};

// Never destroyed: static initialisers in other files register into it, and
// it must outlive every user.
Registry& GetRegistry() {
  static Registry* registry = new Registry;
  return *registry;
}

}  // namespace

bool RegisterKernel(std::string name, KernelSelfTest test) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (auto& entry : r.tests) {
    if (entry.first == name) {
      entry.second = std::move(test);
      return true;
    }
  }
  r.tests.emplace_back(std::move(name), std::move(test));
  return true;
}

std::vector<std::string> RegisteredKernels() {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> names;
  names.reserve(r.tests.size());
  for (const auto& entry : r.tests) names.push_back(entry.first);
  return names;
}

KernelSelfTest GetKernelSelfTest(std::string_view name) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const auto& entry : r.tests) {
    if (entry.first == name) return entry.second;
  }
  return {};
}

KernelHealth GetKernelHealth(std::string_view name) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = r.health.find(name);
  return it == r.health.end() ? KernelHealth::kUntested : it->second;
}

void SetKernelHealth(std::string_view name, KernelHealth health) {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.health[std::string(name)] = health;
}

void ResetKernelHealth() {
  Registry& r = GetRegistry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.health.clear();
}

const char* KernelHealthName(KernelHealth health) {
  switch (health) {
    case KernelHealth::kUntested:
      return "untested";
    case KernelHealth::kPassed:
      return "passed";
    case KernelHealth::kDisabled:
      return "disabled";
  }
  return "unknown";
}

}  // namespace fjord::kernels
