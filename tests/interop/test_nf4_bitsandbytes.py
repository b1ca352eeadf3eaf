"""fjord's NF4 (QLoRA's 4-bit base) against bitsandbytes' CPU backend and
transformers + peft:

  * tensors: fjord's quantization (`//runtime/quant:nf4_tool quantize`) of
    random and real-shaped weights equals bitsandbytes' quantize_4bit: the
    packed 4-bit indices bit for bit, the absmax values exactly without
    double quantization; with it, the offset, the second-level absmax and
    the code tables exactly, and the 8-bit absmax codes equal except in at
    most 0.5% of blocks, where the value lies near the midpoint of two codes
    and fjord takes the strictly nearest one (bitsandbytes' CPU backend the
    other: checked, never farther). fjord's dequantization of bitsandbytes'
    serialized tensors equals bitsandbytes' dequantize_4bit exactly;
  * models: a tiny Llama that transformers loaded in 4 bits (load_in_4bit,
    nf4, double quantization) and saved: fjord reads the saved checkpoint and
    its logits equal, within 1e-4, those of transformers in fp32 with
    bitsandbytes' own dequantization of each 4-bit weight (bitsandbytes'
    CPU matmul itself rounds like bf16: within 0.1); fjord quantizing the
    full-precision checkpoint itself (--quantization nf4) lands within 2e-3
    (the rare absmax codes above);
  * training: a LoRA fine-tune on the 4-bit base (the saved one, and the
    full-precision one with model.quantization: nf4) learns like the fp32
    base's; its adapter is an ordinary PEFT adapter that peft loads on that
    dequantized model with fjord's logits (within 1e-4), and
    export merges it into the dequantized base as a checkpoint transformers
    loads without bitsandbytes;
  * refusals: other quantized checkpoints (gptq, bitsandbytes fp4 and
    8-bit) are refused by name.

    bazel build //runtime/quant:nf4_tool //runtime/model:model_tool //lora/cli:adapter_tool //lora/cli:fjord-train
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/interop/test_nf4_bitsandbytes.py
"""

import json
import os
import pathlib
import subprocess
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_fjord_train import BIN_DIR, TOOL, TRAIN, make_job, run_train

bnb = pytest.importorskip("bitsandbytes")
import bitsandbytes.functional as F  # noqa: E402
from peft import PeftModel  # noqa: E402
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

NF4_TOOL = BIN_DIR / "runtime" / "quant" / "nf4_tool"
MODEL_TOOL = BIN_DIR / "runtime" / "model" / "model_tool"
IDS = [[1, 5, 9, 20, 33, 7, 2, 60], [4, 4, 100, 8, 16, 23, 42, 15]]
IDS_ARG = ";".join(",".join(map(str, r)) for r in IDS)

warnings.filterwarnings("ignore", message=".*kernels.*")

# A full-precision base quantized on load and sharded over 2 ranks against
# the same base quantized whole: relative, per step loss (each rank
# double-quantizes its own rows' absmax).
OWN_SHARDED_TOL = 1e-3


def quantize(tmp, tensors, double_quant):
    src, dst = tmp / "in.safetensors", tmp / f"q{int(double_quant)}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, src)
    subprocess.run([str(NF4_TOOL), "quantize", "--in", str(src), "--out", str(dst),
                    "--double-quant", str(int(double_quant))], check=True)
    return load_file(dst)


def weights():
    g = torch.Generator().manual_seed(0)
    return {"random": torch.randn(256, 512, generator=g),
            "bf16_odd_rows": (torch.randn(64, 300, generator=g) * 3).to(torch.bfloat16),
            "q_proj_scale": torch.randn(1024, 4096, generator=g) * 0.02}


@pytest.mark.parametrize("double_quant", [False, True])
def test_quantization_equals_bitsandbytes(tmp_path, double_quant):
    got = quantize(tmp_path, weights(), double_quant)
    for name, w in weights().items():
        q, st = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=double_quant,
                                quant_storage=torch.uint8)
        assert torch.equal(got[name].reshape(-1), q.reshape(-1)), name
        assert torch.equal(got[name + ".quant_map"], st.code), name
        state = json.loads(bytes(got[name + ".quant_state.bitsandbytes__nf4"].tolist()))
        assert state["quant_type"] == "nf4" and state["blocksize"] == 64
        assert state["shape"] == list(w.shape) and state["dtype"] == str(w.dtype).split(".")[1]
        if not double_quant:
            assert torch.equal(got[name + ".absmax"], st.absmax), name
            continue
        assert state["nested_blocksize"] == 256
        assert state["nested_offset"] == pytest.approx(st.offset.item(), rel=0, abs=0)
        assert torch.equal(got[name + ".nested_absmax"], st.state2.absmax), name
        assert torch.equal(got[name + ".nested_quant_map"], st.state2.code), name
        mine, theirs = got[name + ".absmax"].long(), st.absmax.long()
        differ = (mine != theirs).nonzero().reshape(-1)
        assert len(differ) <= 0.005 * len(theirs), (name, len(differ))
        # Where they differ, fjord's code is the nearer (or as near) to the true value.
        absmax = w.float().reshape(-1, 64).abs().amax(1) - st.offset
        blocks = torch.nn.functional.pad(absmax, (0, (-len(absmax)) % 256)).reshape(-1, 256)
        norm = (blocks / blocks.abs().amax(1, keepdim=True)).reshape(-1)[: len(absmax)]
        code = st.state2.code
        assert ((code[mine[differ]] - norm[differ]).abs() <=
                (code[theirs[differ]] - norm[differ]).abs() + 1e-7).all(), name


@pytest.mark.parametrize("double_quant", [False, True])
def test_dequantizing_bitsandbytes_tensors_equals_bitsandbytes(tmp_path, double_quant):
    serialized = {}
    want = {}
    for name, w in weights().items():
        q, st = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=double_quant,
                                quant_storage=torch.uint8)
        serialized[name] = q
        for k, v in st.as_dict(packed=True).items():
            serialized[f"{name}.{k}"] = v
        want[name] = F.dequantize_4bit(q, st).float()
    src, dst = tmp_path / "bnb.safetensors", tmp_path / "deq.safetensors"
    save_file({k: v.contiguous() for k, v in serialized.items()}, src)
    subprocess.run([str(NF4_TOOL), "dequantize", "--in", str(src), "--out", str(dst)], check=True)
    got = load_file(dst)
    for name in want:
        # bitsandbytes returns the original dtype; fjord fp32 (the same values before rounding).
        assert torch.equal(got[name].to(want[name].dtype if name != "bf16_odd_rows" else torch.bfloat16).float(),
                           want[name]), name


def bnb_config():
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32)


def four_bit_model(mdir):
    return AutoModelForCausalLM.from_pretrained(mdir, quantization_config=bnb_config(), device_map="cpu",
                                                dtype=torch.float32, attn_implementation="eager").eval()


def dequantized_model(mdir):
    """What the 4-bit model means, computed exactly: transformers in fp32
    with every 4-bit weight replaced by bitsandbytes' own dequantization of
    it. (bitsandbytes' CPU matmul on a batch of sequences rounds like bf16:
    its logits differ from these by up to ~0.04 on this model.)"""
    q = four_bit_model(mdir)
    full = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager").eval()
    sd = full.state_dict()
    for name, mod in q.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            sd[name + ".weight"] = F.dequantize_4bit(mod.weight.data, mod.weight.quant_state).float()
    full.load_state_dict(sd)
    return full, q


def fjord_logits(tmp, mdir, *extra, adapter=None):
    out = tmp / f"logits_{len(list(tmp.iterdir()))}.safetensors"
    if adapter is None:
        cmd = [str(MODEL_TOOL), "logits", "--model", str(mdir), "--ids", IDS_ARG, "--out", str(out), *extra]
    else:
        cmd = [str(TOOL), "logits", "--model", str(mdir), "--adapter", str(adapter), "--ids", IDS_ARG,
               "--out", str(out), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return load_file(out)["logits"]


def make_nf4_job(tmp):
    """make_job's job and tokenizer with a tiny Llama whose every quantized
    layer has a multiple of 32 outputs and of 64 inputs (bitsandbytes' CPU
    matmul needs both)."""
    config, mdir = make_job(tmp, "llama")
    old = json.loads((mdir / "config.json").read_text())
    model = LlamaForCausalLM(LlamaConfig(vocab_size=old["vocab_size"], hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=128, tie_word_embeddings=True))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    for f in mdir.glob("*.safetensors"):
        f.unlink()
    model.save_pretrained(mdir, safe_serialization=True)
    return config, mdir


@pytest.fixture
def saved_4bit(tmp_path):
    """(job config, full-precision model dir, the model transformers saved in 4 bits)."""
    config, mdir = make_nf4_job(tmp_path)
    q = four_bit_model(mdir)
    qdir = tmp_path / "model_nf4"
    q.save_pretrained(qdir)
    (qdir / "tokenizer.json").write_bytes((mdir / "tokenizer.json").read_bytes())
    return config, mdir, qdir


def test_a_checkpoint_saved_in_4_bits_gives_bitsandbytes_logits(tmp_path, saved_4bit):
    _, mdir, qdir = saved_4bit
    names = load_file(next(qdir.glob("*.safetensors"))).keys()
    assert "model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4" in names
    exact, four_bit = dequantized_model(mdir)
    with torch.no_grad():
        ref = exact(input_ids=torch.tensor(IDS)).logits
        approx = four_bit(input_ids=torch.tensor(IDS)).logits
    got = fjord_logits(tmp_path, qdir)
    assert (got - ref).abs().max().item() < 1e-4
    assert (got - approx).abs().max().item() < 0.1  # bitsandbytes' own CPU matmul
    # fjord quantizing the full-precision checkpoint itself: the same but for
    # the rare 8-bit absmax codes it rounds to the strictly nearest value.
    own = fjord_logits(tmp_path, mdir, "--quantization", "nf4")
    assert (own - ref).abs().max().item() < 2e-3
    full = fjord_logits(tmp_path, mdir)
    assert (full - ref).abs().max().item() > 1e-3  # 4 bits do change the logits


def losses(d):
    events = [json.loads(line) for line in open(d)]
    return [e["loss"] for e in events if e["type"] == "step"]


def test_lora_on_a_4_bit_base_learns_and_its_adapter_is_peft_s(tmp_path, saved_4bit):
    config, mdir, qdir = saved_4bit
    import yaml
    job = yaml.safe_load(config.read_text())
    job["training"]["max_steps"] = 24
    job["checkpoint"] = {"every_steps": 0}
    runs = {}
    for name, model, quant in (("fp32", mdir, "none"), ("nf4_own", mdir, "nf4"), ("nf4_saved", qdir, "none")):
        j = json.loads(json.dumps(job))
        j["model"] = {"path": str(model), "quantization": quant}
        j["output"] = {"dir": str(tmp_path / f"out_{name}")}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(j))
        events = tmp_path / f"{name}.events"
        run_train(path, "--events", str(events))
        runs[name] = losses(events)
        start = [e for e in map(json.loads, open(events)) if e["type"] == "start"][0]
        if name != "fp32":
            assert "base in nf4" in start["message"], start
    for name in ("nf4_own", "nf4_saved"):
        first, last = runs[name][0], runs[name][-1]
        assert last < 0.8 * first, runs[name]                    # it learns
        assert last == pytest.approx(runs["fp32"][-1], rel=0.1)  # like the fp32 base
    # The adapter trained on the saved 4-bit base, in peft on transformers + bitsandbytes.
    adapter = tmp_path / "out_nf4_saved" / "adapter"
    meta = json.loads((adapter / "adapter_config.json").read_text())
    assert meta["peft_type"] == "LORA"
    base, _ = dequantized_model(mdir)
    peft_model = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        ref = peft_model(input_ids=torch.tensor(IDS)).logits
    got = fjord_logits(tmp_path, qdir, adapter=adapter)
    assert (got - ref).abs().max().item() < 1e-4
    # Export merges into the dequantized base: a plain checkpoint transformers loads.
    merged = tmp_path / "merged"
    subprocess.run([str(TOOL), "export", "--model", str(qdir), "--adapter", str(adapter), "--out", str(merged)],
                   check=True)
    cfg = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in cfg
    plain = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        exported = plain(input_ids=torch.tensor(IDS)).logits
    assert (exported - ref).abs().max().item() < 1e-4


def two_rank_run(tmp, name, job, model, quantization, shard_base):
    """fjord-train on 2 Gloo ranks (real processes); returns (step events, adapter tensors)."""
    import yaml
    j = json.loads(json.dumps(job))
    j["model"] = {"path": str(model), "quantization": quantization, "shard_base": shard_base}
    j["output"] = {"dir": str(tmp / f"out_{name}")}
    path, events = tmp / f"{name}.yaml", tmp / f"{name}.events"
    path.write_text(yaml.safe_dump(j))
    r = subprocess.run([str(TRAIN), "--config", str(path), "--progress", "none", "--events", str(events),
                        "--nproc-per-node", "2"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    steps = [e for e in map(json.loads, open(events)) if e["type"] == "step"]
    return steps, load_file(tmp / f"out_{name}" / "adapter" / "adapter_model.safetensors")


def test_a_4_bit_base_sharded_over_two_ranks(tmp_path, saved_4bit):
    # A base both sharded across the ranks and held in 4 bits (QLoRA over
    # FSDP-style shards), on 2 ranks:
    #  * a checkpoint stored in 4 bits is sharded by slicing its rows as
    #    stored: the run equals the same run with the base whole on each rank;
    #  * a full-precision checkpoint quantized on load: each rank quantizes its
    #    own rows. Every row of this model ends on a block of 64, so the 4-bit
    #    indices and block absmax are the whole weight's; only the double
    #    quantization of the absmax (each rank scales its own) differs;
    #  * a layer's gather carries its 4-bit rows and fp32 block absmax (0.5625
    #    bytes a weight) instead of fp32 rows (4 bytes): per step, exactly
    #    (4 - 0.5625) bytes x half of the decoder weights gathered less on
    #    rank 0, each pass.
    config, mdir, qdir = saved_4bit
    import yaml
    job = yaml.safe_load(config.read_text())
    job["training"].update(max_steps=4, gradient_accumulation_steps=2, gradient_checkpointing=False)
    job["checkpoint"] = {"every_steps": 0}
    runs = {name: two_rank_run(tmp_path, name, job, *how) for name, how in (
        ("stored_whole", (qdir, "none", False)), ("stored_sharded", (qdir, "none", True)),
        ("own_whole", (mdir, "nf4", False)), ("own_sharded", (mdir, "nf4", True)),
        ("fp32_sharded", (mdir, "none", True)))}
    (stored, stored_adapter), (sharded, sharded_adapter) = runs["stored_whole"], runs["stored_sharded"]
    assert [e["step"] for e in stored] == [e["step"] for e in sharded] == [1, 2, 3, 4]
    for x, y in zip(stored, sharded):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5), (x, y)
    for k in stored_adapter:
        assert torch.allclose(stored_adapter[k], sharded_adapter[k], atol=1e-5, rtol=0), k
    own, own_sharded = runs["own_whole"][0], runs["own_sharded"][0]
    for x, y in zip(own, own_sharded):
        assert y["loss"] == pytest.approx(x["loss"], rel=OWN_SHARDED_TOL), (x, y)
    gathered = {name: {e["base_gather_bytes"] for e in runs[name][0]}
                for name in ("stored_sharded", "own_sharded", "fp32_sharded")}
    (fp32,), (nf4,) = gathered["fp32_sharded"], gathered["own_sharded"]
    assert gathered["stored_sharded"] == {nf4}
    h, i, layers, kv = 64, 128, 2, 32  # make_nf4_job's model; every row count even: no padding
    per_layer = 2 * h * h + 2 * kv * h + 3 * h * i
    weights = 2 * layers * per_layer - (h * h + 2 * kv * h)  # forward, and backward but layer 0's q, k, v
    passes = 2  # micro-batches a rank runs a step: gradient_accumulation_steps
    assert fp32 - nf4 == passes * weights // 2 * (4 - 0.5625)


@pytest.mark.parametrize("qc, message", [
    ({"quant_method": "gptq", "bits": 4}, "'gptq' checkpoints are not supported"),
    ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "fp4"},
     "'fp4' is not supported; fjord reads nf4"),
    ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "8-bit checkpoints are not supported"),
])
def test_other_quantized_checkpoints_are_refused_by_name(tmp_path, qc, message):
    _, mdir = make_job(tmp_path, "llama")
    cfg = json.loads((mdir / "config.json").read_text())
    cfg["quantization_config"] = qc
    (mdir / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "x.safetensors"
    r = subprocess.run([str(MODEL_TOOL), "logits", "--model", str(mdir), "--ids", "1,2", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "quantization_config" in r.stderr and message in r.stderr, r.stderr
