#include "runtime/io/model_dir.h"

#include <torch/types.h>

#include <nlohmann/json.hpp>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/util/env.h"

namespace fjord::io {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_ = NewMemEnv();
    ASSERT_TRUE(env_->CreateDirs("/m").ok());
    // 4 tensors of 64 bytes each (+ one empty).
    for (int i = 0; i < 4; ++i) {
      tensors_.emplace_back("model.layers." + std::to_string(i) + ".weight",
                            torch::full({16}, static_cast<float>(i)));
    }
    tensors_.emplace_back("model.empty", torch::zeros({0}));
  }

  void ExpectReadsBack(const std::string& dir) {
    const auto reader = ModelDirReader::Open(dir, env_.get());
    ASSERT_TRUE(reader.ok()) << reader.status();
    std::vector<std::string> names;
    for (const auto& [name, t] : tensors_) {
      names.push_back(name);
      EXPECT_TRUE((*reader)->Contains(name));
      const auto got = (*reader)->Get(name);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_TRUE(torch::equal(*got, t)) << name;
    }
    EXPECT_EQ((*reader)->Names(), names);
  }

  std::unique_ptr<Env> env_;
  std::vector<std::pair<std::string, torch::Tensor>> tensors_;
};

TEST_F(CheckpointTest, SingleFileRoundTrip) {
  ASSERT_TRUE(WriteModelDirTensors("/m", tensors_, 1 << 20, env_.get()).ok());
  EXPECT_THAT(*env_->ListDir("/m"), ElementsAre("model.safetensors"));
  ExpectReadsBack("/m");
  const auto reader = ModelDirReader::Open("/m", env_.get());
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->files().size(), 1u);
  EXPECT_EQ((*reader)->files()[0]->metadata().at("format"), "pt");
  const auto missing = (*reader)->Get("lm_head.weight");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("'lm_head.weight'"));
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("/m"));
  EXPECT_FALSE((*reader)->Contains("lm_head.weight"));
  EXPECT_EQ((*reader)->Find("lm_head.weight"), nullptr);
}

TEST_F(CheckpointTest, ShardedRoundTripLikeTransformers) {
  // 150 bytes per shard: two 64-byte tensors fit, a third does not.
  ASSERT_TRUE(WriteModelDirTensors("/m/out", tensors_, 150, env_.get()).ok());
  EXPECT_THAT(*env_->ListDir("/m/out"),
              ElementsAre("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                          "model.safetensors.index.json"));
  const auto index =
      nlohmann::json::parse(*env_->ReadFileToString("/m/out/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 256);
  EXPECT_EQ(index["weight_map"]["model.layers.0.weight"], "model-00001-of-00002.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.1.weight"], "model-00001-of-00002.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.2.weight"], "model-00002-of-00002.safetensors");
  EXPECT_EQ(index["weight_map"]["model.empty"], "model-00002-of-00002.safetensors");
  ExpectReadsBack("/m/out");
  const auto reader = ModelDirReader::Open("/m/out", env_.get());
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->files().size(), 2u);
  ASSERT_NE((*reader)->Find("model.layers.3.weight"), nullptr);
  EXPECT_EQ((*reader)->Find("model.layers.3.weight")->dtype, "F32");
}

TEST_F(CheckpointTest, OversizedTensorGetsItsOwnShard) {
  ASSERT_TRUE(WriteModelDirTensors("/m", tensors_, 10, env_.get()).ok());
  // Four 64-byte tensors each over the limit; the empty one joins the last.
  EXPECT_TRUE(env_->FileExists("/m/model-00004-of-00004.safetensors"));
  ExpectReadsBack("/m");
}

TEST_F(CheckpointTest, RewritingWithOtherLayoutRemovesStaleFiles) {
  ASSERT_TRUE(WriteModelDirTensors("/m", tensors_, 10, env_.get()).ok());
  ASSERT_TRUE(WriteModelDirTensors("/m", tensors_, 150, env_.get()).ok());
  EXPECT_THAT(*env_->ListDir("/m"),
              ElementsAre("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                          "model.safetensors.index.json"));
  ASSERT_TRUE(WriteModelDirTensors("/m", tensors_, 1 << 20, env_.get()).ok());
  EXPECT_THAT(*env_->ListDir("/m"), ElementsAre("model.safetensors"));
  ExpectReadsBack("/m");
  ASSERT_TRUE(WriteModelDirTensors("/m", tensors_, 150, env_.get()).ok());
  EXPECT_FALSE(env_->FileExists("/m/model.safetensors"));
  ExpectReadsBack("/m");
}

TEST_F(CheckpointTest, WriteRefusesBadArguments) {
  EXPECT_EQ(WriteModelDirTensors("/m", tensors_, 0, env_.get()).code(),
            absl::StatusCode::kInvalidArgument);
  tensors_.push_back(tensors_[0]);
  const absl::Status dup = WriteModelDirTensors("/m", tensors_, 100, env_.get());
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(dup.message()), HasSubstr("'model.layers.0.weight' appears twice"));
}

TEST_F(CheckpointTest, DiskFullDuringShardReportsPath) {
  FaultInjectionEnv faulty(env_.get());
  faulty.FailWritesAfterBytes(300);
  const absl::Status s = WriteModelDirTensors("/m", tensors_, 150, &faulty);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(s.message()), HasSubstr("/m/model-0000"));
  EXPECT_FALSE(env_->FileExists("/m/model.safetensors.index.json"));
}

TEST_F(CheckpointTest, OpenErrors) {
  const auto none = ModelDirReader::Open("/m", env_.get());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("no model.safetensors"));
  EXPECT_THAT(std::string(none.status().message()), HasSubstr("/m"));
  const auto nodir = ModelDirReader::Open("/nowhere", env_.get());
  EXPECT_EQ(nodir.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(nodir.status().message()), HasSubstr("/nowhere does not exist"));
}

class ShardedIndexTest : public CheckpointTest {
 protected:
  void SetUp() override {
    CheckpointTest::SetUp();
    ASSERT_TRUE(WriteModelDirTensors("/m", tensors_, 150, env_.get()).ok());
  }
  void WriteIndex(const nlohmann::json& index) {
    ASSERT_TRUE(env_->WriteFileAtomic("/m/model.safetensors.index.json", index.dump()).ok());
  }
  absl::Status OpenStatus() { return ModelDirReader::Open("/m", env_.get()).status(); }
};

TEST_F(ShardedIndexTest, MissingShard) {
  ASSERT_TRUE(env_->DeleteFile("/m/model-00002-of-00002.safetensors").ok());
  const absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(s.message()), HasSubstr("model-00002-of-00002.safetensors"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("does not exist"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("model.safetensors.index.json"));
}

TEST_F(ShardedIndexTest, NameNotInShard) {
  nlohmann::json index =
      nlohmann::json::parse(*env_->ReadFileToString("/m/model.safetensors.index.json"));
  index["weight_map"]["model.layers.9.weight"] = "model-00001-of-00002.safetensors";
  WriteIndex(index);
  const absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'model.layers.9.weight'"));
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("/m/model-00001-of-00002.safetensors has no such tensor"));
}

TEST_F(ShardedIndexTest, ShardPathMustStayInsideDir) {
  for (const std::string bad :
       {"../model-00001-of-00002.safetensors", "/etc/passwd", "sub/../../x.safetensors", ""}) {
    WriteIndex({{"weight_map", {{"model.layers.0.weight", bad}}}});
    const absl::Status s = OpenStatus();
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << bad;
    EXPECT_THAT(std::string(s.message()), HasSubstr("is not a relative path inside /m")) << bad;
  }
}

TEST_F(ShardedIndexTest, MalformedIndex) {
  ASSERT_TRUE(env_->WriteFileAtomic("/m/model.safetensors.index.json", "{not json").ok());
  EXPECT_EQ(OpenStatus().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(OpenStatus().message()),
              HasSubstr("model.safetensors.index.json: not a JSON object"));
  WriteIndex({{"metadata", {}}});
  EXPECT_THAT(std::string(OpenStatus().message()), HasSubstr("missing object \"weight_map\""));
  WriteIndex({{"weight_map", {{"a", 3}}}});
  EXPECT_THAT(std::string(OpenStatus().message()),
              HasSubstr("weight_map[\"a\"] is not a file name string"));
}

TEST_F(ShardedIndexTest, CorruptShardNamesFile) {
  const std::string shard = "/m/model-00001-of-00002.safetensors";
  const std::string bytes = *env_->ReadFileToString(shard);
  ASSERT_TRUE(env_->WriteFileAtomic(shard, bytes.substr(0, bytes.size() - 1)).ok());
  const absl::Status s = OpenStatus();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr(shard));
}

TEST_F(ShardedIndexTest, IndexSubsetOfShardTensors) {
  // Tensors a shard holds but the index does not list are not exposed.
  WriteIndex({{"weight_map", {{"model.layers.1.weight", "model-00001-of-00002.safetensors"}}}});
  const auto reader = ModelDirReader::Open("/m", env_.get());
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_THAT((*reader)->Names(), ElementsAre("model.layers.1.weight"));
  EXPECT_FALSE((*reader)->Contains("model.layers.0.weight"));
}

}  // namespace
}  // namespace fjord::io
