// NVML at run time: libnvidia-ml.so.1 is dlopen'ed when present (a node with
// the NVIDIA driver) and absent on CPU nodes, so nothing links it (fjordd
// reads energy per job, an evaluation per candidate).
// Reads the total-energy counter (millijoules since the driver loaded) and
// memory use per device index (PCI bus order; workers get
// CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA's indices agree).
//
// Thread-safe (NVML is).
#ifndef FJORD_RUNTIME_UTIL_NVML_H_
#define FJORD_RUNTIME_UTIL_NVML_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace fjord {

class Nvml {
 public:
  // nullptr when the library is missing or nvmlInit fails; `why` says which.
  static std::unique_ptr<Nvml> Load(std::string* why);
  ~Nvml();

  int device_count() const { return count_; }
  // Millijoules since the driver loaded (Volta and newer); nullopt if the
  // device does not support it.
  std::optional<uint64_t> TotalEnergyMillijoules(int index) const;
  std::optional<uint64_t> MemoryUsedBytes(int index) const;

 private:
  Nvml() = default;
  void* lib_ = nullptr;
  int count_ = 0;
  struct Fns;
  std::unique_ptr<Fns> fns_;
};

}  // namespace fjord

#endif  // FJORD_RUNTIME_UTIL_NVML_H_
