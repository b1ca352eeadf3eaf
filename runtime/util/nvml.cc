#include "runtime/util/nvml.h"

#include <dlfcn.h>

namespace fjord {

// The few NVML entry points used, with NVML's C types (nvml.h is not needed:
// nvmlDevice_t is an opaque pointer, nvmlReturn_t an int, 0 = success).
struct NvmlMemory {
  unsigned long long total, free, used;
};
struct Nvml::Fns {
  int (*init)() = nullptr;
  int (*shutdown)() = nullptr;
  int (*count)(unsigned int*) = nullptr;
  int (*handle)(unsigned int, void**) = nullptr;
  int (*energy)(void*, unsigned long long*) = nullptr;
  int (*memory)(void*, NvmlMemory*) = nullptr;
};

std::unique_ptr<Nvml> Nvml::Load(std::string* why) {
  void* lib = ::dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    if (why)
      *why =
          "libnvidia-ml.so.1 not found (no NVIDIA driver): GPU energy and memory are not reported";
    return nullptr;
  }
  std::unique_ptr<Nvml> n(new Nvml());
  n->lib_ = lib;
  n->fns_ = std::make_unique<Fns>();
  Fns& f = *n->fns_;
  f.init = reinterpret_cast<int (*)()>(::dlsym(lib, "nvmlInit_v2"));
  f.shutdown = reinterpret_cast<int (*)()>(::dlsym(lib, "nvmlShutdown"));
  f.count = reinterpret_cast<int (*)(unsigned int*)>(::dlsym(lib, "nvmlDeviceGetCount_v2"));
  f.handle = reinterpret_cast<int (*)(unsigned int, void**)>(
      ::dlsym(lib, "nvmlDeviceGetHandleByIndex_v2"));
  f.energy = reinterpret_cast<int (*)(void*, unsigned long long*)>(
      ::dlsym(lib, "nvmlDeviceGetTotalEnergyConsumption"));
  f.memory = reinterpret_cast<int (*)(void*, NvmlMemory*)>(::dlsym(lib, "nvmlDeviceGetMemoryInfo"));
  if (!f.init || !f.shutdown || !f.count || !f.handle) {
    if (why) *why = "libnvidia-ml.so.1 lacks nvmlInit_v2/nvmlDeviceGetCount_v2";
    ::dlclose(lib);
    n->lib_ = nullptr;
    return nullptr;
  }
  if (f.init() != 0) {
    if (why) *why = "nvmlInit_v2 failed (driver not loaded?)";
    ::dlclose(lib);
    n->lib_ = nullptr;
    return nullptr;
  }
  unsigned int c = 0;
  if (f.count(&c) == 0) n->count_ = static_cast<int>(c);
  return n;
}

Nvml::~Nvml() {
  if (lib_ != nullptr) {
    fns_->shutdown();
    ::dlclose(lib_);
  }
}

std::optional<uint64_t> Nvml::TotalEnergyMillijoules(int index) const {
  void* dev = nullptr;
  unsigned long long mj = 0;
  if (!fns_->energy || index < 0 || fns_->handle(static_cast<unsigned int>(index), &dev) != 0 ||
      fns_->energy(dev, &mj) != 0) {
    return std::nullopt;
  }
  return static_cast<uint64_t>(mj);
}

std::optional<uint64_t> Nvml::MemoryUsedBytes(int index) const {
  void* dev = nullptr;
  NvmlMemory m{};
  if (!fns_->memory || index < 0 || fns_->handle(static_cast<unsigned int>(index), &dev) != 0 ||
      fns_->memory(dev, &m) != 0) {
    return std::nullopt;
  }
  return static_cast<uint64_t>(m.used);
}

}  // namespace fjord
