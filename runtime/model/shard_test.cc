// A sharded frozen base's pieces (shard.h) against the dense operations
// they stand for, on N ranks as N threads.
#include "runtime/model/shard.h"

#include <torch/nn/functional/loss.h>
#include <torch/torch.h>

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/model/linear.h"
#include "runtime/model/thread_shard_group.h"

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
