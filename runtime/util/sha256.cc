#include "runtime/util/sha256.h"
#include "runtime/util/status_macros.h"

#include <algorithm>
#include <cstdint>

namespace fjord {
namespace {

// sodium_init is thread-safe and idempotent; it picks the fastest
// implementation for this CPU.
void InitSodiumOnce() {
  static const int rc = sodium_init();
  (void)rc;
}

std::string ToHex(const unsigned char* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

}  // namespace

std::string Sha256Hex(absl::string_view data) {
  Sha256 hash;
  hash.Update(data);
  return hash.FinalHex();
}

Sha256::Sha256() {
  InitSodiumOnce();
  crypto_hash_sha256_init(&state_);
}

void Sha256::Update(absl::string_view data) {
  crypto_hash_sha256_update(&state_, reinterpret_cast<const unsigned char*>(data.data()),
                            data.size());
}

std::string Sha256::FinalHex() {
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256_final(&state_, digest);
  crypto_hash_sha256_init(&state_);
  return ToHex(digest, sizeof(digest));
}

absl::StatusOr<std::string> Sha256File(Env* env, const std::string& path) {
  if (env == nullptr) env = Env::Default();
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<ReadOnlyRegion> region, env->MapReadOnly(path));
  Sha256 hash;
  // Hash in slices so a huge mapping is paged in sequentially.
  constexpr size_t kSlice = size_t{1} << 24;
  const char* data = (region)->data();
  const size_t size = (region)->size();
  for (size_t off = 0; off < size; off += kSlice) {
    hash.Update(absl::string_view(data + off, std::min(kSlice, size - off)));
  }
  return hash.FinalHex();
}

}  // namespace fjord
