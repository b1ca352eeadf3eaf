#include "daemon/jobs/job_yaml.h"

#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::HasSubstr;

// Every field a customer sets reaches fjord-train under its own name: each
// is set to a value other than its default, and the config says it back
// (and survives fjord-train's YAML round trip).
TEST(JobYamlTest, EveryCustomerFieldMapsToItsTrainerField) {
  protocol::JobSpec spec;
  protocol::Hyperparameters& h = spec.hyperparameters;
  h.epochs = 3;
  h.max_steps = 70;
  h.batch_size = 8;
  h.gradient_accumulation_steps = 2;
  h.learning_rate = 1e-3;
  h.lr_scheduler = "linear";
  h.warmup_steps = 5;
  h.weight_decay = 0.01;
  h.max_grad_norm = 0.5;
  h.max_length = 512;
  h.seed = 7;
  h.checkpoint_every_steps = 10;
  h.eval_every_steps = 20;
  spec.lora.r = 8;
  spec.lora.alpha = 16;
  spec.lora.dropout = 0.1;
  spec.lora.target_modules = {"q_proj", "v_proj"};
  spec.quantization = "nf4";
  const JobPaths paths{"/models/tiny", "/s/acme/files/file-1", "/s/acme/files/file-2",
                       "/s/acme/files/file-3", "/s/acme/jobs/job-1"};
  absl::StatusOr<std::string> yaml = TrainYamlFor(spec, paths);
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  absl::StatusOr<lora::JobConfig> c = lora::ParseJobConfig(*yaml, "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  // (SDK field, what fjord-train got, what was sent)
  EXPECT_EQ(c->model.path, "/models/tiny");
  EXPECT_EQ(c->model.quantization, "nf4");  // quantization
  EXPECT_THAT(*yaml, HasSubstr("quantization: nf4"));
  EXPECT_EQ(c->data.train, "/s/acme/files/file-1");       // training_file
  EXPECT_EQ(c->data.validation, "/s/acme/files/file-2");  // validation_file
  EXPECT_EQ(c->eval.heldout, "/s/acme/files/file-3");     // heldout_file
  EXPECT_EQ(c->output.dir, "/s/acme/jobs/job-1");
  EXPECT_EQ(c->training.epochs, 3);            // hyperparameters.epochs
  EXPECT_EQ(c->training.max_steps, 70);        // hyperparameters.max_steps
  EXPECT_EQ(c->training.micro_batch_size, 8);  // hyperparameters.batch_size
  EXPECT_EQ(c->training.gradient_accumulation_steps,
            2);                                       // hyperparameters.gradient_accumulation_steps
  EXPECT_DOUBLE_EQ(c->training.learning_rate, 1e-3);  // hyperparameters.learning_rate
  EXPECT_EQ(c->training.lr_scheduler, "linear");      // hyperparameters.lr_scheduler
  EXPECT_EQ(c->training.warmup_steps, 5);             // hyperparameters.warmup_steps
  EXPECT_DOUBLE_EQ(c->training.weight_decay, 0.01);   // hyperparameters.weight_decay
  EXPECT_DOUBLE_EQ(c->training.max_grad_norm, 0.5);   // hyperparameters.max_grad_norm
  EXPECT_EQ(c->data.max_length, 512);                 // hyperparameters.max_length
  EXPECT_EQ(c->training.seed, 7u);                    // hyperparameters.seed
  EXPECT_EQ(c->checkpoint.every_steps, 10);           // hyperparameters.checkpoint_every_steps
  EXPECT_EQ(c->eval.every_steps, 20);                 // hyperparameters.eval_every_steps
  EXPECT_EQ(c->lora.r, 8);                            // lora.r
  EXPECT_DOUBLE_EQ(c->lora.alpha, 16);                // lora.alpha
  EXPECT_DOUBLE_EQ(c->lora.dropout, 0.1);             // lora.dropout
  EXPECT_THAT(c->lora.target_modules,
              ::testing::ElementsAre("q_proj", "v_proj"));  // lora.target_modules
}

// What the SDK does not set keeps fjord-train's default.
TEST(JobYamlTest, FieldsTheCustomerDoesNotSetKeepTheTrainersDefaults) {
  const lora::JobConfig c = TrainConfigFor(protocol::JobSpec{}, JobPaths{"/m", "/t", "", "", "/o"});
  const lora::JobConfig defaults;
  EXPECT_EQ(c.model.quantization, "none");  // a bf16 base unless the customer asks for nf4
  EXPECT_EQ(c.model.quantization, defaults.model.quantization);
  EXPECT_FALSE(c.model.shard_base);  // every rank holds the whole base unless asked
  EXPECT_EQ(c.model.shard_base, defaults.model.shard_base);
  EXPECT_EQ(c.data.packing, defaults.data.packing);
  EXPECT_EQ(c.data.chat_template, defaults.data.chat_template);
  EXPECT_EQ(c.training.device, defaults.training.device);
  EXPECT_EQ(c.training.kernels, defaults.training.kernels);
  EXPECT_TRUE(c.data.validation.empty());
  EXPECT_TRUE(c.eval.heldout.empty());  // no held-out prompts: none asked
  EXPECT_EQ(c.eval.max_new_tokens, defaults.eval.max_new_tokens);
  EXPECT_EQ(c.output.dir, "/o");
}

// shard_base -> model.shard_base (with a bf16 base: the trainer refuses it
// with nf4, and so does job.create before a config is written; were such a
// spec to get here, the trainer's parser would refuse it too).
TEST(JobYamlTest, ShardBaseMapsToModelShardBase) {
  protocol::JobSpec spec;
  spec.gpus = 8;
  spec.shard_base = true;
  const JobPaths paths{"/models/big", "/t", "", "", "/o"};
  absl::StatusOr<std::string> yaml = TrainYamlFor(spec, paths);
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_THAT(*yaml, HasSubstr("shard_base: true"));
  absl::StatusOr<lora::JobConfig> c = lora::ParseJobConfig(*yaml, "job.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->model.shard_base);
  EXPECT_EQ(c->model.quantization, "none");
  spec.shard_base = false;
  yaml = TrainYamlFor(spec, paths);
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_THAT(*yaml, HasSubstr("shard_base: false"));

  // Both: a base sharded across the GPUs and held in 4 bits.
  spec.shard_base = true;
  spec.quantization = "nf4";
  yaml = TrainYamlFor(spec, paths);
  ASSERT_TRUE(yaml.ok()) << yaml.status();
  EXPECT_THAT(*yaml, HasSubstr("shard_base: true"));
  EXPECT_THAT(*yaml, HasSubstr("quantization: nf4"));
}

// fjord-train's parser has the last word: a value the SDK's checks let
// through but the trainer refuses is INVALID_ARGUMENT on hyperparameters.
TEST(JobYamlTest, AConfigTheTrainerRefusesIsInvalidArgument) {
  protocol::JobSpec spec;
  spec.hyperparameters.lr_scheduler = "sawtooth";
  absl::StatusOr<std::string> yaml = TrainYamlFor(spec, JobPaths{"/m", "/t", "", "", "/o"});
  ASSERT_FALSE(yaml.ok());
  EXPECT_EQ(yaml.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(protocol::ParamOf(yaml.status()), "hyperparameters");
  EXPECT_THAT(yaml.status().message(), HasSubstr("the job's config is invalid"));
}

}  // namespace
}  // namespace fjord::daemon
