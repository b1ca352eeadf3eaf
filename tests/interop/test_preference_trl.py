"""fjord's preference tuning against TRL (trl 1.16, tools/requirements.txt).

On a tiny random Llama with SmolLM2-135M-Instruct's tokenizer and chat
template (../shared/models), with one PEFT adapter (random A and B, so the
policy differs from the reference) loaded by both sides:

- DPO: TRL's DPOTrainer tokenizes the pairs (prompt_ids / chosen_ids /
  rejected_ids) exactly as fjord does; its compute_loss on one batch of all
  pairs gives the loss and the metrics fjord reports (rewards/chosen,
  rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen,
  logps/rejected), and after backward the same LoRA gradients; per pair, the
  policy and reference log-probs (transformers + peft, adapter off for the
  reference), the loss term and the rewards.
- DPO training: three optimizer steps of one pair each from the same adapter
  (fjord-train's lora.init_from) give DPOTrainer.train()'s logged losses and
  metrics and, after them, the same adapter (1e-4).
- ORPO, SimPO: TRL's loss functions (ORPOTrainer.odds_ratio_loss,
  CPOTrainer.cpo_loss with loss_type simpo) on log-probs from the same model
  and tokens, with TRL's NLL term, give fjord's loss, metrics and gradients.
  (Their trainers tokenize with their own older scheme; fjord tokenizes all
  three methods as DPOTrainer does.)

Tolerances (fp32 on CPU): log-probs and losses atol 1e-4 + rtol 1e-4;
gradients atol 1e-6 + rtol 1e-3 of the largest entry.

    bazel build //lora/cli:preference_tool
    FJORD_BIN_DIR=$PWD/bazel-bin ~/.cache/fjord/venv/bin/python -m pytest -q tests/interop/test_preference_trl.py
"""

import json
import os
import pathlib
import shutil
import subprocess
import types

import pytest
import torch
import torch.nn.functional as F
import yaml

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
TOOL = BIN_DIR / "lora" / "cli" / "preference_tool"
SMOL = REPO.parent / "shared" / "models" / "smollm2-135m-instruct"
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ATOL, RTOL = 1e-4, 1e-4

pytestmark = pytest.mark.skipif(not SMOL.is_dir(), reason="../shared/models/smollm2-135m-instruct is absent")

PAIRS = [
    {"prompt": [{"role": "user", "content": "What color is the sky?"}],
     "chosen": [{"role": "assistant", "content": "The sky is blue."}],
     "rejected": [{"role": "assistant", "content": "The sky is green, I think."}]},
    {"prompt": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "2 + 2?"}],
     "chosen": [{"role": "assistant", "content": "4"}],
     "rejected": [{"role": "assistant", "content": "Five."}]},
    {"prompt": [{"role": "user", "content": "Name a fruit."}],
     "chosen": [{"role": "assistant", "content": "An apple."}],
     "rejected": [{"role": "assistant", "content": "A carrot is a fruit."}]},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    if not TOOL.exists():
        pytest.skip(f"{TOOL} not built (bazel build //lora/cli:preference_tool)")
    tmp = tmp_path_factory.mktemp("pref")
    mdir = tmp / "model"
    mdir.mkdir()
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copy(SMOL / name, mdir / name)
    tok = AutoTokenizer.from_pretrained(mdir)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.copy_(0.2 * torch.randn(p.shape))
    model.save_pretrained(mdir, safe_serialization=True)
    # A PEFT adapter with random A and B (init_lora_weights=False): policy != reference.
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=MODULES,
                                                  init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.5)
    adapter = tmp / "adapter"
    peft_model.save_pretrained(adapter)
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    return types.SimpleNamespace(tmp=tmp, mdir=mdir, adapter=adapter, data=data, tok=tok)


def run_fjord(s, method, **preference):
    cfg = {"model": {"path": str(s.mdir)},
           "data": {"train": str(s.data), "max_length": 128, "shuffle": False},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": MODULES},
           "training": {"method": method, "device": "cpu", "threads": 1},
           "preference": preference,
           "output": {"dir": str(s.tmp / "out")}}
    path = s.tmp / f"{method}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = s.tmp / f"{method}.json"
    r = subprocess.run([str(TOOL), "--config", str(path), "--adapter", str(s.adapter), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def peft_policy(s):
    base = LlamaForCausalLM.from_pretrained(s.mdir, dtype=torch.float32, attn_implementation="eager")
    return PeftModel.from_pretrained(base, s.adapter, is_trainable=True)


def sequence_logps(model, prompt, response):
    """Summed log-probs of `response` after `prompt`, and the whole sequence's token log-probs."""
    ids = torch.tensor([prompt + response])
    logp = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    token = logp.gather(1, ids[0, 1:, None])[:, 0]
    return token[len(prompt) - 1:].sum(), token


def fjord_grads(out):
    return {k: torch.tensor(v) for k, v in out["grads"].items()}


def check_grads(model, out):
    got = fjord_grads(out)
    n = 0
    for name, p in model.named_parameters():
        if "lora_" not in name:
            continue
        key = name.replace("base_model.model.", "").replace(".default", "")
        want = p.grad.reshape(-1)
        scale = want.abs().max().item()
        assert torch.allclose(got[key], want, atol=1e-6, rtol=0) or \
            (got[key] - want).abs().max().item() <= 1e-6 + 1e-3 * scale, key
        n += 1
    assert n == 2 * 2 * len(MODULES)


def close(a, b):
    return abs(a - b) <= ATOL + RTOL * abs(b)


def test_dpo_matches_trl_dpotrainer(setup):
    s = setup
    out = run_fjord(s, "dpo", beta=0.1)
    model = peft_policy(s)
    args = trl.DPOConfig(output_dir=str(s.tmp / "trl"), beta=0.1, max_length=128, per_device_train_batch_size=3,
                         report_to=[], use_cpu=True, bf16=False, remove_unused_columns=False)
    trainer = trl.DPOTrainer(model=model, args=args, processing_class=s.tok,
                             train_dataset=datasets.Dataset.from_list(PAIRS))
    # Given a trained adapter, TRL keeps a copy of it as the reference ("ref"); fjord's reference is the
    # base with the adapter off, what TRL does for a new adapter: drop the copy.
    if "ref" in model.peft_config:
        model.delete_adapter("ref")
        model.set_adapter("default")
    rows = [trainer.train_dataset[i] for i in range(len(PAIRS))]
    # Tokenization: the same prompt, chosen and rejected ids, pair by pair.
    for row, pair in zip(rows, out["pairs"]):
        assert row["prompt_ids"] == pair["prompt"]
        assert row["chosen_ids"] == pair["chosen"]
        assert row["rejected_ids"] == pair["rejected"]
    # Per pair: log-probs from transformers + peft, the reference with the adapter off.
    for pair in out["pairs"]:
        with torch.no_grad():
            pc, _ = sequence_logps(model, pair["prompt"], pair["chosen"])
            pr, _ = sequence_logps(model, pair["prompt"], pair["rejected"])
            with model.disable_adapter():
                rc, _ = sequence_logps(model, pair["prompt"], pair["chosen"])
                rr, _ = sequence_logps(model, pair["prompt"], pair["rejected"])
        assert close(pair["logps_chosen"], pc.item()) and close(pair["logps_rejected"], pr.item())
        assert close(pair["ref_logps_chosen"], rc.item()) and close(pair["ref_logps_rejected"], rr.item())
        delta = (pc - rc) - (pr - rr)
        assert close(pair["loss"], -F.logsigmoid(0.1 * delta).item())
        assert close(pair["reward_chosen"], 0.1 * (pc - rc).item())
        assert close(pair["reward_rejected"], 0.1 * (pr - rr).item())
    # TRL's own loss, metrics and gradients on the batch of all pairs.
    model.train()
    batch = trainer.data_collator(rows)
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    assert close(out["loss"], loss.item())
    metrics = trainer._metrics["train"]
    for name in ["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                 "logps/rejected"]:
        assert close(out["metrics"][name], metrics[name][-1]), name
    check_grads(model, out)


def orpo_or_simpo_reference(s, out, method):
    """TRL's loss functions on log-probs of the same model and tokens: (loss, metrics, model)."""
    model = peft_policy(s)
    model.train()
    chosen, rejected, nll_num, nll_den = [], [], 0.0, 0
    for pair in out["pairs"]:
        pc, tokens = sequence_logps(model, pair["prompt"], pair["chosen"])
        pr, _ = sequence_logps(model, pair["prompt"], pair["rejected"])
        chosen.append(pc / len(pair["chosen"]))
        rejected.append(pr / len(pair["rejected"]))
        if method == "orpo":  # ORPOTrainer: the NLL over the whole chosen sequence
            nll_num = nll_num - tokens.sum()
            nll_den += tokens.numel()
    chosen, rejected = torch.stack(chosen), torch.stack(rejected)
    cpu = types.SimpleNamespace(device="cpu")
    if method == "orpo":
        from trl.experimental.orpo import ORPOTrainer
        this = types.SimpleNamespace(beta=0.2, accelerator=cpu)
        losses, cr, rr, ratio, log_odds = ORPOTrainer.odds_ratio_loss(this, chosen, rejected)
        nll = nll_num / nll_den
        loss = nll - losses.mean()
        extra = {"nll_loss": nll.item(), "log_odds_ratio": ratio.item(), "log_odds_chosen": log_odds.item()}
    else:
        from trl.experimental.cpo import CPOTrainer
        this = types.SimpleNamespace(beta=2.0, simpo_gamma=0.5, label_smoothing=0.0, loss_type="simpo", alpha=0.0,
                                     accelerator=cpu)
        losses, cr, rr = CPOTrainer.cpo_loss(this, chosen, rejected)
        loss = losses.mean()
        extra = {}
    loss.backward()
    metrics = {"rewards/chosen": cr.mean().item(), "rewards/rejected": rr.mean().item(),
               "rewards/accuracies": (cr > rr).float().mean().item(), "rewards/margins": (cr - rr).mean().item(),
               "logps/chosen": chosen.mean().item(), "logps/rejected": rejected.mean().item(), **extra}
    return loss.item(), metrics, model


@pytest.mark.parametrize("method,preference", [("orpo", {"beta": 0.2}),
                                               ("simpo", {"beta": 2.0, "simpo_gamma": 0.5})])
def test_orpo_and_simpo_match_trl_losses(setup, method, preference):
    out = run_fjord(setup, method, **preference)
    loss, metrics, model = orpo_or_simpo_reference(setup, out, method)
    assert close(out["loss"], loss)
    for name, value in metrics.items():
        assert close(out["metrics"][name], value), name
    check_grads(model, out)


def test_dpo_training_steps_match_trl_dpotrainer(setup):
    """Three optimizer steps of DPO, one pair each in file order, from the
    same adapter (fjord-train's lora.init_from; TRL's trainable PeftModel):
    fjord-train's step losses and TRL metrics equal DPOTrainer.train()'s
    logged ones, and the adapters after the three steps are equal (AdamW,
    constant learning rate, gradient clipping at 1.0 on both sides)."""
    s = setup
    out = s.tmp / "steps"
    cfg = {"model": {"path": str(s.mdir)},
           "data": {"train": str(s.data), "max_length": 128, "shuffle": False, "packing": False},
           "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": MODULES, "init_from": str(s.adapter)},
           "training": {"method": "dpo", "device": "cpu", "threads": 1, "max_steps": 3, "micro_batch_size": 1,
                        "learning_rate": 1e-2, "lr_scheduler": "constant", "warmup_steps": 0, "max_grad_norm": 1.0,
                        "weight_decay": 0.0},
           "preference": {"beta": 0.1, "precompute_ref": False},
           "checkpoint": {"every_steps": 0},
           "output": {"dir": str(out)}}
    path = s.tmp / "steps.yaml"
    path.write_text(yaml.safe_dump(cfg))
    events = s.tmp / "steps.events.jsonl"
    train = BIN_DIR / "lora" / "cli" / "fjord-train"
    r = subprocess.run([str(train), "--config", str(path), "--progress", "none", "--events", str(events)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [e for e in map(json.loads, events.read_text().splitlines()) if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3]

    model = peft_policy(s)
    args = trl.DPOConfig(output_dir=str(s.tmp / "trl-steps"), beta=0.1, max_length=128, per_device_train_batch_size=1,
                         max_steps=3, learning_rate=1e-2, lr_scheduler_type="constant", warmup_steps=0,
                         max_grad_norm=1.0, weight_decay=0.0, logging_steps=1, save_strategy="no", report_to=[],
                         use_cpu=True, bf16=False, remove_unused_columns=False)
    trainer = trl.DPOTrainer(model=model, args=args, processing_class=s.tok,
                             train_dataset=datasets.Dataset.from_list(PAIRS))
    if "ref" in model.peft_config:  # the reference is the base, as fjord's (see test_dpo_matches_trl_dpotrainer)
        model.delete_adapter("ref")
        model.set_adapter("default")
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    assert len(logged) == 3
    for mine, theirs in zip(steps, logged):
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-4), (mine, theirs)  # TRL rounds to 4 digits
        for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"):
            assert close(mine[name], theirs[name]), (name, mine[name], theirs[name])
        assert mine["rewards/accuracies"] == theirs["rewards/accuracies"]
    from safetensors.torch import load_file
    got = load_file(out / "adapter" / "adapter_model.safetensors")
    n = 0
    for name, p in model.named_parameters():
        if "lora_" not in name:
            continue
        key = name.replace(".default", "")
        assert key in got, key
        assert (got[key] - p.detach()).abs().max().item() < 1e-4, key
        n += 1
    assert n == len(got) > 0
    start = load_file(s.adapter / "adapter_model.safetensors")
    assert max((got[k] - start[k]).abs().max().item() for k in got) > 1e-3  # the steps moved the adapter
