#include "runtime/io/safetensors.h"

#include <torch/types.h>

#include <unistd.h>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/util/env.h"

namespace fjord::io {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

std::string TempDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string tmpl = absl::StrCat(tmp ? tmp : "/tmp", "/safetensors_test.XXXXXX");
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

void ExpectSameTensor(const torch::Tensor& got, const torch::Tensor& want,
                      const std::string& name) {
  EXPECT_EQ(got.scalar_type(), want.scalar_type()) << name;
  EXPECT_EQ(got.sizes(), want.sizes()) << name;
  EXPECT_TRUE(got.device().is_cpu()) << name;
  EXPECT_TRUE(torch::equal(got, want.cpu())) << name;
}

TEST(SafetensorsTest, RoundTripsDtypesShapesAndMetadata) {
  const std::string path = TempDir() + "/t.safetensors";
  const std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"f32", torch::randn({3, 5})},
      {"bf16", torch::randn({7}).to(torch::kBFloat16)},
      {"f16", torch::randn({2, 3, 1}).to(torch::kFloat16)},
      {"i64", torch::arange(-4, 5, torch::kInt64)},
      {"scalar", torch::tensor(3.5)},
      {"empty", torch::zeros({0, 4})},
      {"bool", torch::tensor({true, false, true})},
      {"u8", torch::tensor({1, 255}, torch::kUInt8)},
      {"f64", torch::randn({2}, torch::kFloat64)},
      {"i32", torch::tensor({-1, 2}, torch::kInt32)},
      {"f8", torch::randn({4}).to(torch::kFloat8_e4m3fn)},
      {"noncontig", torch::randn({4, 6}).t()},  // written contiguous
  };
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"step", "12"}}).ok());

  const auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  std::vector<std::string> want_names;
  for (const auto& [name, t] : tensors) want_names.push_back(name);
  EXPECT_EQ((*file)->Names(), want_names);  // the given order is file order
  EXPECT_THAT((*file)->metadata(), ElementsAre(Pair("format", "pt"), Pair("step", "12")));
  EXPECT_EQ((*file)->path(), path);
  for (const auto& [name, want] : tensors) {
    const auto got = (*file)->Get(name);
    ASSERT_TRUE(got.ok()) << got.status();
    if (want.scalar_type() == torch::kFloat8_e4m3fn) {
      ExpectSameTensor(got->view(torch::kUInt8), want.view(torch::kUInt8), name);
    } else {
      ExpectSameTensor(*got, want, name);
    }
  }
  const TensorEntry* e = (*file)->Find("bf16");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->dtype, "BF16");
  EXPECT_THAT(e->shape, ElementsAre(7));
  EXPECT_EQ(e->num_bytes(), 14u);
  EXPECT_EQ((*file)->Find("nope"), nullptr);
}

TEST(SafetensorsTest, CallersFormatWins) {
  const std::string path = TempDir() + "/f.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"x", torch::ones({1})}}, {{"format", "mlx"}}).ok());
  const auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_THAT((*file)->metadata(), ElementsAre(Pair("format", "mlx")));
}

TEST(SafetensorsTest, AlignedGetIsZeroCopyAndKeepsMappingAlive) {
  const std::string path = TempDir() + "/z.safetensors";
  // "a" holds 3 bytes, so "b" (F32) starts at an odd offset: unaligned.
  const torch::Tensor a = torch::tensor({1, 2, 3}, torch::kUInt8);
  const torch::Tensor b = torch::tensor({1.5f, -2.0f});
  const torch::Tensor c = torch::tensor({7}, torch::kUInt8);
  ASSERT_TRUE(WriteSafetensors(path, {{"a", a}, {"b", b}, {"c", c}}).ok());

  torch::Tensor aligned, unaligned;
  {
    const auto file = SafetensorsFile::Open(path);
    ASSERT_TRUE(file.ok()) << file.status();
    const TensorEntry* eb = (*file)->Find("b");
    ASSERT_NE(eb, nullptr);
    ASSERT_EQ(eb->begin, 3u);
    const auto ra = (*file)->Get("a");
    const auto rb = (*file)->Get("b");
    ASSERT_TRUE(ra.ok() && rb.ok());
    aligned = *ra;
    unaligned = *rb;
    // The aligned tensor points into the mapping: its address is exactly
    // the mapping's data offset + begin from the address of another
    // zero-copy tensor of the same file.
    const auto rc = (*file)->Get("c");
    ASSERT_TRUE(rc.ok());
    const auto* pa = static_cast<const char*>(aligned.data_ptr());
    const auto* pc = static_cast<const char*>(rc->data_ptr());
    EXPECT_EQ(pc - pa, static_cast<ptrdiff_t>((*file)->Find("c")->begin));
    // The unaligned one is a copy elsewhere.
    const auto* pb = static_cast<const char*>(unaligned.data_ptr());
    EXPECT_NE(pb, pa + eb->begin);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(pb) % alignof(float), 0u);
  }
  // The file object is gone; the tensors still read the right bytes.
  ExpectSameTensor(aligned, a, "a");
  ExpectSameTensor(unaligned, b, "b");
  // In-place changes are private: they never reach the file.
  aligned.add_(1);
  const auto again = SafetensorsFile::Open(path);
  ASSERT_TRUE(again.ok());
  ExpectSameTensor(*(*again)->Get("a"), a, "a reread");
}

// Forwards to another Env and remembers the last region it mapped.
class RecordingEnv : public FaultInjectionEnv {
 public:
  using FaultInjectionEnv::FaultInjectionEnv;
  absl::StatusOr<std::shared_ptr<ReadOnlyRegion>> MapReadOnly(const std::string& path) override {
    auto region = FaultInjectionEnv::MapReadOnly(path);
    if (region.ok()) last_region = *region;
    return region;
  }
  std::shared_ptr<ReadOnlyRegion> last_region;
};

TEST(SafetensorsTest, ZeroCopyPointerLiesInsideMapping) {
  const std::string path = TempDir() + "/w.safetensors";
  const torch::Tensor w = torch::arange(16, torch::kFloat32);
  const torch::Tensor h = torch::arange(3, torch::kFloat16);  // 6 bytes
  const torch::Tensor v = torch::arange(4, torch::kFloat32);  // at offset 70: unaligned
  ASSERT_TRUE(WriteSafetensors(path, {{"w", w}, {"h", h}, {"v", v}}).ok());
  RecordingEnv env(Env::Default());
  const auto file = SafetensorsFile::Open(path, &env);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_NE(env.last_region, nullptr);
  const char* lo = env.last_region->data();
  const char* hi = lo + env.last_region->size();
  EXPECT_EQ((*file)->header().data_offset % 8, 0u);

  const auto t = (*file)->Get("w");
  ASSERT_TRUE(t.ok());
  ExpectSameTensor(*t, w, "w");
  const char* p = static_cast<const char*>(t->data_ptr());
  EXPECT_EQ(p, lo + (*file)->header().data_offset);
  EXPECT_TRUE(p >= lo && p + 64 <= hi);
  EXPECT_EQ((*file)->Get("w")->data_ptr(), t->data_ptr());  // same bytes, shared

  const auto u = (*file)->Get("v");
  ASSERT_TRUE(u.ok());
  ExpectSameTensor(*u, v, "v");
  const char* q = static_cast<const char*>(u->data_ptr());
  EXPECT_FALSE(q >= lo && q < hi) << "unaligned data must be copied";
}

TEST(SafetensorsTest, ReadsPythonStyleLayoutsFromMemEnv) {
  std::unique_ptr<Env> env = NewMemEnv();
  ASSERT_TRUE(env->CreateDirs("/d").ok());
  // Written with WriteSafetensors through a FaultInjectionEnv with no fault:
  // identical to the plain write.
  FaultInjectionEnv faulty(env.get());
  ASSERT_TRUE(WriteSafetensors("/d/a.safetensors", {{"x", torch::ones({2, 2})}}, {}, &faulty).ok());
  const auto file = SafetensorsFile::Open("/d/a.safetensors", env.get());
  ASSERT_TRUE(file.ok());
  ExpectSameTensor(*(*file)->Get("x"), torch::ones({2, 2}), "x");
}

TEST(SafetensorsTest, GetMissingNamesTensorAndFile) {
  const std::string path = TempDir() + "/m.safetensors";
  ASSERT_TRUE(WriteSafetensors(path, {{"x", torch::ones({1})}}).ok());
  const auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  const auto got = (*file)->Get("model.layers.0.mlp.up_proj.weight");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(got.status().message()),
              HasSubstr("'model.layers.0.mlp.up_proj.weight'"));
  EXPECT_THAT(std::string(got.status().message()), HasSubstr(path));
}

TEST(SafetensorsTest, OpenErrors) {
  const std::string dir = TempDir();
  const auto missing = SafetensorsFile::Open(dir + "/nope.safetensors");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr(dir + "/nope.safetensors"));

  ASSERT_TRUE(WriteSafetensors(dir + "/ok.safetensors", {{"x", torch::ones({4})}}).ok());
  const std::string bytes = *Env::Default()->ReadFileToString(dir + "/ok.safetensors");
  ASSERT_TRUE(Env::Default()
                  ->WriteFileAtomic(dir + "/cut.safetensors", bytes.substr(0, bytes.size() - 3))
                  .ok());
  const auto cut = SafetensorsFile::Open(dir + "/cut.safetensors");
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(cut.status().message()), HasSubstr(dir + "/cut.safetensors"));
  EXPECT_THAT(std::string(cut.status().message()), HasSubstr("tensor 'x'"));

  ASSERT_TRUE(Env::Default()->WriteFileAtomic(dir + "/empty.safetensors", "").ok());
  EXPECT_EQ(SafetensorsFile::Open(dir + "/empty.safetensors").status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(SafetensorsTest, UnsupportedDtypes) {
  std::unique_ptr<Env> env = NewMemEnv();
  // F4 is valid safetensors but has no LibTorch dtype with the same shape.
  std::vector<TensorEntry> entries = {{"packed", "F4", {4}, 0, 0}};
  const auto header = EncodeSafetensorsHeader(&entries, {});
  ASSERT_TRUE(header.ok());
  ASSERT_TRUE(env->WriteFileAtomic("/f4.safetensors", *header + "ab").ok());
  const auto file = SafetensorsFile::Open("/f4.safetensors", env.get());
  ASSERT_TRUE(file.ok()) << file.status();
  const auto got = (*file)->Get("packed");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("'packed'"));
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("/f4.safetensors"));

  const absl::Status s = WriteSafetensors(
      "/c128.safetensors", {{"z", torch::ones({2}, torch::kComplexDouble)}}, {}, env.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("tensor 'z'"));
  EXPECT_FALSE(env->FileExists("/c128.safetensors"));
}

TEST(SafetensorsTest, WriteRefusesBadInput) {
  std::unique_ptr<Env> env = NewMemEnv();
  const absl::Status dup = WriteSafetensors(
      "/d.safetensors", {{"a", torch::ones({1})}, {"a", torch::ones({1})}}, {}, env.get());
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dup.message()), HasSubstr("tensor 'a' appears twice"));
  EXPECT_THAT(std::string(dup.message()), HasSubstr("/d.safetensors"));
  const absl::Status undef =
      WriteSafetensors("/u.safetensors", {{"u", torch::Tensor()}}, {}, env.get());
  EXPECT_EQ(undef.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(undef.message()), HasSubstr("tensor 'u' is undefined"));
  const absl::Status nodir = WriteSafetensors("/no/dir/x.safetensors", {}, {}, env.get());
  EXPECT_EQ(nodir.code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, DiskFullLeavesPreviousFileIntact) {
  std::unique_ptr<Env> mem = NewMemEnv();
  FaultInjectionEnv env(mem.get());
  const torch::Tensor old_w = torch::zeros({64});
  ASSERT_TRUE(WriteSafetensors("/w.safetensors", {{"w", old_w}}, {}, &env).ok());
  env.FailWritesAfterBytes(100);
  const absl::Status s = WriteSafetensors("/w.safetensors", {{"w", torch::ones({1024})}}, {}, &env);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("No space left on device"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("/w.safetensors.tmp."));
  EXPECT_THAT(*mem->ListDir("/"), ElementsAre("w.safetensors"));
  const auto file = SafetensorsFile::Open("/w.safetensors", mem.get());
  ASSERT_TRUE(file.ok());
  ExpectSameTensor(*(*file)->Get("w"), old_w, "w");

  env.ClearFaults();
  env.FailRenamesAfter(0);
  EXPECT_EQ(WriteSafetensors("/w.safetensors", {{"w", torch::ones({2})}}, {}, &env).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(*mem->ListDir("/"), ElementsAre("w.safetensors"));
}

TEST(SafetensorsDtypeTest, NamesBothWays) {
  EXPECT_EQ(*SafetensorsDtypeName(torch::kBFloat16), "BF16");
  EXPECT_EQ(*SafetensorsDtypeName(torch::kFloat8_e5m2), "F8_E5M2");
  EXPECT_EQ(*TorchDtypeFromSafetensors("I16"), torch::kInt16);
  EXPECT_EQ(TorchDtypeFromSafetensors("F6_E3M2").status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(TorchDtypeFromSafetensors("X").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SafetensorsDtypeName(torch::kComplexDouble).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fjord::io
