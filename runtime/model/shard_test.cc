// A sharded frozen base's pieces (shard.h) against the dense operations
// they stand for, on N ranks as N threads.
#include "runtime/model/shard.h"

#include <torch/nn/functional/loss.h>
#include <torch/torch.h>

#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

#include "gtest/gtest.h"
#include "runtime/model/linear.h"
#include "runtime/model/thread_shard_group.h"
#include "runtime/quant/nf4.h"
#include "runtime/quant/nf4_linear.h"

namespace fjord::model {
namespace {

using torch::Tensor;

TEST(ShardPiecesTest, PiecesCoverEveryRowOnce) {
  for (int64_t rows : {1, 7, 10, 50}) {
    for (int ranks : {1, 2, 3}) {
      for (int64_t pieces : {1, 2, 4, 6, 100}) {
        const ShardPieces p = ShardPieces::Make(rows, ranks, pieces);
        std::vector<int> seen(static_cast<size_t>(p.rp * ranks), 0);
        for (int64_t k = 0; k < p.count; ++k) {
          ASSERT_GT(p.Take(k), 0);
          Tensor r = p.RowsOf(k, torch::kCPU);
          ASSERT_EQ(r.size(0), ranks * p.Take(k));
          for (int64_t i = 0; i < r.size(0); ++i) ++seen[static_cast<size_t>(r[i].item<int64_t>())];
        }
        for (int s : seen) EXPECT_EQ(s, 1) << rows << " rows, " << ranks << " ranks, " << pieces;
        EXPECT_LE(p.count, pieces);
      }
    }
  }
}

TEST(ShardedLinearTest, ForwardAndInputGradientEqualTheDenseLayer) {
  torch::manual_seed(7);
  Tensor w = torch::randn({10, 6}), b = torch::randn({10});
  Tensor x = torch::randn({2, 3, 6});
  Tensor up = torch::randn({2, 3, 10});
  Tensor xd = x.clone().requires_grad_(true);
  DenseLinear dense(w, b);
  Tensor yd = dense.forward(xd);
  (yd * up).sum().backward();
  // Whole (1 piece) and in pieces, as lm_head is (4 rows a rank, 2 of them
  // padding on rank 2).
  for (int64_t pieces : {1, 2, 3, 6}) {
    auto shared = std::make_shared<ThreadShardGroup::Shared>(3);
    std::vector<Tensor> ys(3), gs(3);
    RunRanks(3, shared, [&](int r, std::shared_ptr<ThreadShardGroup> group) {
      ShardedLinear layer(ShardRows(w, *group), 10, b, group, pieces);
      Tensor xs = x.clone().requires_grad_(true);
      ys[r] = layer.forward(xs);
      (ys[r] * up).sum().backward();
      gs[r] = xs.grad();
    });
    for (int r = 0; r < 3; ++r) {
      EXPECT_TRUE(torch::allclose(ys[r], yd, 1e-6, 1e-6)) << pieces << " pieces, rank " << r;
      EXPECT_TRUE(torch::allclose(gs[r], xd.grad(), 1e-6, 1e-6)) << pieces << " pieces, rank " << r;
    }
    if (pieces > 1) {
      EXPECT_LT(shared->most_rows.load(), 10) << pieces;
    }
  }
}

// y and the input gradient of `layer` for x, with upstream gradient up.
std::pair<Tensor, Tensor> ForwardBackward(LinearBase& layer, const Tensor& x, const Tensor& up) {
  Tensor xs = x.clone().requires_grad_(true);
  Tensor y = layer.forward(xs);
  (y * up).sum().backward();
  return {y.detach(), xs.grad()};
}

// Rows of 128 weights end on a block of 64: each rank's rows quantized on
// their own are the whole weight's NF4 rows, so without double quantization
// the sharded layer computes exactly what Nf4Linear of the whole weight
// does. With it (each rank scales its own absmax values), and with rows of
// 40 weights (blocks then cross rows, and each rank's last block is its
// own), it computes what the dense layer of each rank's rows quantized and
// dequantized on their own does. One gather a forward: every rank's 4-bit
// rows and fp32 absmax, 0.5625 bytes a weight.
TEST(ShardedLinearTest, Nf4ShardComputesWhatItsRowsInNf4Do) {
  torch::manual_seed(5);
  for (int64_t in : {128, 40}) {
    for (bool double_quant : {false, true}) {
      for (int n : {1, 2, 3}) {
        Tensor w = torch::randn({10, in}) * 0.1, b = torch::randn({10});
        Tensor x = torch::randn({2, 3, in}), up = torch::randn({2, 3, 10});
        // The oracle: each rank's rows through NF4 on their own, concatenated.
        std::vector<Tensor> rows;
        for (int r = 0; r < n; ++r) {
          auto shared = std::make_shared<ThreadShardGroup::Shared>(n);
          ThreadShardGroup g(shared, r);
          rows.push_back(quant::DequantizeNf4(quant::QuantizeNf4(ShardRows(w, g), double_quant),
                                              torch::kFloat32));
        }
        DenseLinear oracle(torch::cat(rows).narrow(0, 0, 10), b);
        auto [want_y, want_g] = ForwardBackward(oracle, x, up);
        if (in % quant::kNf4BlockSize == 0 && !double_quant) {
          quant::Nf4Linear whole(quant::QuantizeNf4(w, false), b, torch::kFloat32);
          auto [y, g] = ForwardBackward(whole, x, up);
          ASSERT_TRUE(torch::allclose(y, want_y, 1e-6, 1e-6));
          ASSERT_TRUE(torch::allclose(g, want_g, 1e-6, 1e-6));
        }
        auto shared = std::make_shared<ThreadShardGroup::Shared>(n);
        std::vector<Tensor> ys(n), gs(n), bases(n);
        RunRanks(n, shared, [&](int r, std::shared_ptr<ThreadShardGroup> group) {
          ShardedLinear layer(quant::QuantizeNf4(ShardRows(w, *group), double_quant), 10, b, group,
                              torch::kFloat32);
          ASSERT_TRUE(layer.nf4());
          EXPECT_EQ(layer.in_features(), in);
          EXPECT_EQ(layer.out_features(), 10);
          std::tie(ys[r], gs[r]) = ForwardBackward(layer, x, up);
          bases[r] = layer.base_weight();
        });
        const std::string where =
            absl::StrCat("in ", in, ", double quant ", double_quant, ", ", n, " ranks");
        for (int r = 0; r < n; ++r) {
          EXPECT_TRUE(torch::allclose(ys[r], want_y, 1e-5, 1e-6)) << where << ", rank " << r;
          EXPECT_TRUE(torch::allclose(gs[r], want_g, 1e-5, 1e-6)) << where << ", rank " << r;
          EXPECT_TRUE(torch::equal(bases[r], oracle.base_weight())) << where << ", rank " << r;
        }
        // The largest gather: n ranks' bytes of 4 rows (10 over 3 ranks) or 5.
        const int64_t rp = RowsPerRank(10, n);
        const int64_t blocks = (rp * in + quant::kNf4BlockSize - 1) / quant::kNf4BlockSize;
        EXPECT_EQ(shared->most_rows.load(), n * (rp * in / 2 + 4 * blocks)) << where;
      }
    }
  }
}

// A weight already in NF4 (a checkpoint stored in 4 bits) is sharded by
// slicing its 4-bit rows as they are: the sharded layer computes exactly
// what Nf4Linear of the whole stored weight does. Rows that do not end on
// a block cannot be sliced so.
TEST(ShardedLinearTest, StoredNf4RowsShardAsTheyAre) {
  torch::manual_seed(6);
  Tensor w = torch::randn({7, 128}) * 0.1;
  Tensor x = torch::randn({3, 128}), up = torch::randn({3, 7});
  const quant::Nf4Tensor stored = quant::QuantizeNf4(w, /*double_quant=*/true);
  quant::Nf4Linear whole(stored, Tensor(), torch::kFloat32);
  auto [want_y, want_g] = ForwardBackward(whole, x, up);
  for (int n : {2, 3}) {
    auto shared = std::make_shared<ThreadShardGroup::Shared>(n);
    std::vector<Tensor> ys(n), gs(n);
    RunRanks(n, shared, [&](int r, std::shared_ptr<ThreadShardGroup> group) {
      quant::Nf4Tensor mine = ShardNf4Rows(stored, *group);
      EXPECT_EQ(mine.shape, (std::vector<int64_t>{RowsPerRank(7, n), 128}));
      EXPECT_FALSE(mine.nested);  // its absmax in fp32
      ShardedLinear layer(std::move(mine), 7, Tensor(), group, torch::kFloat32);
      std::tie(ys[r], gs[r]) = ForwardBackward(layer, x, up);
    });
    for (int r = 0; r < n; ++r) {
      EXPECT_TRUE(torch::allclose(ys[r], want_y, 1e-6, 1e-6)) << n << " ranks, rank " << r;
      EXPECT_TRUE(torch::allclose(gs[r], want_g, 1e-6, 1e-6)) << n << " ranks, rank " << r;
    }
  }
  auto shared = std::make_shared<ThreadShardGroup::Shared>(2);
  ThreadShardGroup g(shared, 0);
  EXPECT_THROW(ShardNf4Rows(quant::QuantizeNf4(torch::randn({4, 40}), true), g), c10::Error);
}

TEST(ShardedEmbeddingTest, EqualsTheLookupInTheWholeTable) {
  torch::manual_seed(3);
  Tensor table = torch::randn({11, 4});
  // Every row, the last rows (next to the padding) and repeats, per rank.
  Tensor ids = torch::tensor({0, 10, 9, 5, 5, 1, 2, 3, 4, 6, 7, 8}, torch::kInt64).reshape({3, 4});
  for (int n : {2, 3}) {
    for (int64_t pieces : {1, 2, 2 * n, 50}) {
      auto shared = std::make_shared<ThreadShardGroup::Shared>(n);
      std::vector<Tensor> got(n), want(n);
      RunRanks(n, shared, [&](int r, std::shared_ptr<ThreadShardGroup> group) {
        Tensor mine = ids.roll(r, 1);  // each rank its own ids
        got[r] = ShardedEmbedding(ShardRows(table, *group), 11, mine, *group, pieces);
        want[r] = torch::embedding(table, mine);
      });
      for (int r = 0; r < n; ++r) {
        EXPECT_TRUE(torch::equal(got[r], want[r])) << n << " ranks, " << pieces << " pieces";
      }
    }
  }
}

// The reference: all logits at once, soft-capped or not.
Tensor DenseLoss(const Tensor& h, const Tensor& w, const Tensor& y, double cap) {
  Tensor l = torch::matmul(h, w.t()).to(torch::kFloat32);
  if (cap > 0) l = torch::tanh(l / cap) * cap;
  return torch::nn::functional::cross_entropy(
      l, y,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
}

TEST(ShardedLinearCrossEntropyTest, LossAndHiddenGradientEqualTheDenseLoss) {
  torch::manual_seed(11);
  const int64_t vocab = 23, c = 8;
  Tensor w = torch::randn({vocab, c});
  Tensor h = torch::randn({9, c}) * 2;
  // Labels in every piece, the last row of the vocab, and ignored ones.
  Tensor y = torch::tensor({0, 22, 21, -100, 7, 12, 3, -100, 16}, torch::kInt64);
  for (double cap : {0.0, 3.0}) {
    Tensor hd = h.clone().requires_grad_(true);
    Tensor want = DenseLoss(hd, w, y, cap);
    want.backward();
    for (int n : {1, 2, 3}) {
      for (int64_t pieces : {1, 2 * n, 5}) {
        for (int64_t chunk : {0, 4}) {
          auto shared = std::make_shared<ThreadShardGroup::Shared>(n);
          std::vector<Tensor> loss(n), grad(n);
          RunRanks(n, shared, [&](int r, std::shared_ptr<ThreadShardGroup> group) {
            ShardedLinear head(ShardRows(w, *group), vocab, Tensor(), group, pieces);
            Tensor hs = h.clone().requires_grad_(true);
            loss[r] = ShardedLinearCrossEntropySum(hs, head, y, chunk, cap);
            (loss[r] * 1.5).backward();
            grad[r] = hs.grad() / 1.5;
          });
          for (int r = 0; r < n; ++r) {
            EXPECT_NEAR(loss[r].item<double>(), want.item<double>(), 1e-4)
                << "cap " << cap << ", " << n << " ranks, " << pieces << " pieces";
            EXPECT_TRUE(torch::allclose(grad[r], hd.grad(), 1e-5, 1e-6))
                << "cap " << cap << ", " << n << " ranks, " << pieces
                << " pieces: " << (grad[r] - hd.grad()).abs().max().item<float>();
          }
          if (pieces > 1 && n > 1) {
            EXPECT_LT(shared->most_rows.load(), vocab);
          }
        }
      }
    }
  }
}

// Each row's loss on its own, as preference tuning sums them per sequence:
// equal to the dense per-row cross-entropy, and so is the hidden gradient
// for any weighting of the rows. Each rank holds a different number of rows
// (the gathers do not depend on them).
TEST(ShardedLinearCrossEntropyTest, PerRowLossesAndGradientEqualTheDenseOnes) {
  torch::manual_seed(13);
  const int64_t vocab = 23, c = 8;
  Tensor w = torch::randn({vocab, c});
  for (double cap : {0.0, 3.0}) {
    for (int n : {1, 2, 3}) {
      auto shared = std::make_shared<ThreadShardGroup::Shared>(n);
      std::vector<Tensor> got(n), want(n), grad(n), want_grad(n);
      RunRanks(n, shared, [&](int r, std::shared_ptr<ThreadShardGroup> group) {
        const int64_t rows = 3 + 2 * r;
        Tensor h = torch::randn({rows, c}) * 2;
        Tensor y = torch::randint(vocab, {rows}, torch::kInt64);
        y[1] = -100;
        Tensor weights = torch::randn({rows});
        Tensor hd = h.clone().requires_grad_(true);
        Tensor l = torch::matmul(hd, w.t());
        if (cap > 0) l = torch::tanh(l / cap) * cap;
        want[r] = torch::nn::functional::cross_entropy(
            l, y,
            torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(
                torch::kNone));
        (want[r] * weights).sum().backward();
        want_grad[r] = hd.grad();
        ShardedLinear head(ShardRows(w, *group), vocab, Tensor(), group, 2 * n);
        Tensor hs = h.clone().requires_grad_(true);
        got[r] = ShardedLinearCrossEntropy(hs, head, y, 2, cap);
        (got[r] * weights).sum().backward();
        grad[r] = hs.grad();
      });
      for (int r = 0; r < n; ++r) {
        const std::string where = absl::StrCat("cap ", cap, ", ", n, " ranks, rank ", r);
        ASSERT_EQ(got[r].sizes(), want[r].sizes()) << where;
        EXPECT_EQ(got[r][1].item<float>(), 0.0f) << where;  // ignored
        EXPECT_TRUE(torch::allclose(got[r], want[r].detach(), 1e-5, 1e-5)) << where;
        EXPECT_TRUE(torch::allclose(grad[r], want_grad[r], 1e-5, 1e-6)) << where;
      }
    }
  }
}

TEST(ShardedLinearCrossEntropyTest, RefusesLabelsOutsideTheVocab) {
  auto shared = std::make_shared<ThreadShardGroup::Shared>(1);
  auto group = std::make_shared<ThreadShardGroup>(shared, 0);
  ShardedLinear head(torch::randn({5, 3}), 5, Tensor(), group, 2);
  EXPECT_THROW(ShardedLinearCrossEntropySum(torch::randn({2, 3}), head,
                                            torch::tensor({1, 5}, torch::kInt64), 0, 0),
               c10::Error);
}

}  // namespace
}  // namespace fjord::model
