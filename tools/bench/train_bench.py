"""Side-by-side LoRA training benchmark: fjord against the peers people run.

Implementations (--peers, in this order; each in its own process):
  hf-sdpa   transformers with its default attention (SDPA) + peft: the baseline
            every user has, and the correctness guard's reference;
  fjord     fjord's C++ program //lora/cli:train_bench (FJORD_BIN_DIR, default
            bazel-bin; on a GPU machine the CMake build's build/cmake);
  hf-liger  transformers + Liger Kernel + peft: apply_liger_kernel_to_llama /
            _qwen2 before the model is made (RMSNorm, RoPE, SwiGLU and the
            fused linear cross-entropy, Liger's documented defaults);
  unsloth   Unsloth's FastLanguageModel, 16-bit LoRA (load_in_4bit off);
  hf-eager  transformers with attn_implementation="eager" + peft: a reference
            row only.
A side that cannot run has a row that says why: Liger on CPU (its ops are
Triton kernels, and Triton has no CPU backend), a package that is not
installed (CI's venv has neither Liger nor Unsloth). Unsloth runs on CPU
where it is installed, through its own CPU fallback: not the path it takes
on a GPU.

Every side fine-tunes the same model (random weights, saved once as an HF
checkpoint that all load) with LoRA (r, alpha 2r, no dropout) on every linear
layer but lm_head (--lm-head: and on lm_head), AdamW (lr 1e-4, no weight decay; torch's fused AdamW on
CUDA), on the same two random batches (torch.randint seeded 1, alternating),
next-token loss averaged over B·(T-1) tokens, gradient checkpointing off or on
for all alike (--checkpointing). In bf16 the frozen weights are bf16, the
adapters fp32 and the steps run under bf16 autocast on the Python sides (what
transformers' Trainer does with bf16=True). The headline's rows are
unpacked: one sequence per row, plain causal attention for everyone
(--packed adds packed rows, below).

Reported per implementation: tokens/s over the steps after the warm-up ones;
tokens per CPU-second of the process (CPU runs); peak memory (the CUDA
allocator's peak allocated bytes after loading on a GPU, the process's peak
RSS on CPU); MFU, counted as (4·N + 3·attention + 6·N_lora) FLOPs per trained
token (flops_per_token; recomputation under checkpointing is not counted)
against the GPU's dense bf16 peak (--peak-tflops, 989 for an H100 SXM); joules
per million tokens from NVML's energy counter (pynvml), else nvidia-smi's power
readings, over the timed steps (the parent marks the counter when the child
prints the last warm-up step's line and the last step's).

Correctness guard: the first --guard-steps losses (warm-up steps included) of
every side are compared with the reference's (hf-sdpa, else hf-eager), within
TOLERANCE's bounds per dtype (tight at step 0, where every side computes the
same function; looser after: Unsloth draws its own adapters A, the other
sides start from the one the harness saves beside the model). A
side outside them is reported as diverged instead of its speed (the JSON
keeps its numbers).

  # CI's dry run on CPU: tiny shapes, checkpointing off and on, every peer
  python tools/bench/train_bench.py --dry-run
  # CPU (issue target: fjord >= 2x tokens/s at <= 0.7x peak RSS)
  python tools/bench/train_bench.py --preset cpu-30m [--repeat 3]
  # GPU (one H100), what tools/bench/e2e_gpu.sh runs by default
  python tools/bench/train_bench.py --preset gpu-8b --checkpointing on \\
      --peers hf-sdpa,fjord,hf-liger,unsloth
  # everything: three shapes, checkpointing off and on, the eager reference
  python tools/bench/train_bench.py --preset gpu-1b --preset gpu-8b \\
      --preset gpu-qwen7b --checkpointing both
  # what a plan would cost on the GPU, without running it (see ESTIMATE)
  python tools/bench/train_bench.py --preset gpu-8b --checkpointing on --estimate

--max-batch N adds a second table: for each side the largest micro-batch
(<= N, a doubling then bisecting search, one process per try) that trains
without running out of GPU memory. Off by default: each try loads the model
again (unpacked rows only).

--packed K adds a second table: the same runs with each row packing K
sequences (K-1 of seq // K tokens, the last the rest). Positions restart at
each sequence, attention stays within it, and no token predicts across a
boundary (the K-1 such targets are ignored by every side). fjord runs
attention per sequence (its packed path); transformers gets restarting
position_ids and no attention mask, from which it builds its per-sequence
mask (masking_utils.find_packed_sequence_indices) for SDPA or eager, and
Liger's patched model the same. Transformers' fastest packed path on a GPU,
flash_attention_2's varlen kernel from those position ids, needs the
flash-attn package, which has no wheel for the GPU machine's torch and CUDA
13 (PyPI has its sources only, a long CUDA build): not a peer here. The
correctness guard compares the packed rows' losses too, but at these random
weights attention moves the loss too little for it to see a side that lets
tokens attend across sequences: that each side's packed path is per sequence
is tested elsewhere (tests/interop/test_model_parity.py for fjord,
tests/bench/test_train_bench.py for transformers' mask from position ids).
"""
import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time

PRESETS = {
    # A few seconds on one core: tests/bench/test_train_bench.py runs the whole
    # harness with it (every side, the guard, the JSON, the tables).
    "cpu-tiny": dict(family="llama", hidden=64, intermediate=160, layers=2, heads=4, kv_heads=2, vocab=320,
                     tie=False, seq=32, batch=2, rank=4, steps=3, warmup=1, device="cpu", dtype="float32"),
    # The same with Qwen2's layout (q/k/v biases): the gpu-qwen7b preset's path.
    "cpu-tiny-qwen": dict(family="qwen2", hidden=64, intermediate=160, layers=2, heads=4, kv_heads=2, vocab=320,
                          tie=False, seq=32, batch=2, rank=4, steps=3, warmup=1, device="cpu", dtype="float32"),
    # ~30M parameters, the CPU setting.
    "cpu-30m": dict(family="llama", hidden=512, intermediate=1376, layers=4, heads=8, kv_heads=8, vocab=32000,
                    tie=True, seq=256, batch=8, rank=16, steps=6, warmup=2, device="cpu", dtype="float32"),
    # Llama-3.2-1B's shapes (tied embeddings, as the released model).
    "gpu-1b": dict(family="llama", hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, vocab=128256,
                   tie=True, seq=2048, batch=4, rank=16, steps=8, warmup=2, device="cuda", dtype="bfloat16"),
    # Llama-3.1-8B's shapes.
    "gpu-8b": dict(family="llama", hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256,
                   tie=False, seq=2048, batch=2, rank=16, steps=8, warmup=2, device="cuda", dtype="bfloat16"),
    # Qwen2.5-7B's shapes (q/k/v biases, 28 heads of 128, 4 KV heads).
    "gpu-qwen7b": dict(family="qwen2", hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4,
                       vocab=152064, tie=False, seq=2048, batch=2, rank=16, steps=8, warmup=2, device="cuda",
                       dtype="bfloat16"),
}

PEERS = ("hf-sdpa", "fjord", "hf-liger", "unsloth", "hf-eager")
GUARD_REFERENCES = ("hf-sdpa", "hf-eager")
# The correctness guard's bounds on |loss - reference|, per dtype: (step 0,
# later steps). At step 0 every adapter's B is 0, so all sides compute the
# same function of the same weights and batch: there two bf16 implementations
# differed by <= 3e-4 (transformers' SDPA against eager, models of 2 and 4
# layers on CPU), while a missing causal mask moved the loss by 3e-3 to 1.3e-2
# and unshifted labels by 1.4e-2 to 0.69 (random weights and batches like
# these; a wrong RoPE position moved it by 7e-4 only, below the bound).
# Later steps: every side starts from the same adapter (make_model saves
# peft's initialisation; fjord's train_bench --init_from loads it), so the
# sides stay close (fjord against transformers + peft on cpu-tiny, float32:
# 5e-6 over 8 steps, with lm_head adapted too); Unsloth builds its own A, so
# its losses drift by learning-rate-sized amounts (with lm_head adapted,
# 2.9e-3 on cpu-30m when fjord still drew its own). The looser bound allows
# that and catches a side that blows up or trains on another scale.
TOLERANCE = {"float32": (2e-4, 1e-3), "bfloat16": (2e-3, 2e-2)}

# --estimate's assumptions (seconds; GB/s): to be replaced by the first GPU
# run's measured per-child wall times. Python start-up imports torch,
# transformers and peft; loading reads the checkpoint from /dev/shm onto the
# GPU; Liger compiles its Triton kernels once per process; Unsloth patches
# transformers and compiles at import.
ESTIMATE = dict(mfu=0.40, python_start_s=8.0, load_gb_s=2.0, fjord_start_s=3.0, liger_jit_s=20.0,
                unsloth_start_s=45.0, make_gb_s=1.5)

STEP_LINE = re.compile(r"^step (\d+): (\S+) s, loss (\S+)\s*$")
LIGER_CPU_REASON = ("Liger Kernel's ops are Triton kernels and Triton has no CPU backend (on CPU they raise "
                    "'RuntimeError: 0 active drivers'; liger-kernel 0.8.5, triton 3.9)")


def hf_config(p):
    """The transformers config of a preset: LlamaConfig or Qwen2Config."""
    common = dict(vocab_size=p["vocab"], hidden_size=p["hidden"], intermediate_size=p["intermediate"],
                  num_hidden_layers=p["layers"], num_attention_heads=p["heads"],
                  num_key_value_heads=p["kv_heads"], max_position_embeddings=max(4096, p["seq"]),
                  tie_word_embeddings=p["tie"])
    if p.get("family", "llama") == "qwen2":
        from transformers import Qwen2Config
        return Qwen2Config(rope_theta=1000000.0, rms_norm_eps=1e-6, use_sliding_window=False, **common)
    from transformers import LlamaConfig
    return LlamaConfig(rope_theta=500000.0, **common)


def hf_model_class(p):
    if p.get("family", "llama") == "qwen2":
        from transformers import Qwen2ForCausalLM
        return Qwen2ForCausalLM
    from transformers import LlamaForCausalLM
    return LlamaForCausalLM


def bias_params(p):
    """Qwen2's q/k/v biases (Llama has none)."""
    kv = p["kv_heads"] * (p["hidden"] // p["heads"])
    return p["layers"] * (p["hidden"] + 2 * kv) if p.get("family", "llama") == "qwen2" else 0


def model_bytes(p):
    """Bytes of the checkpoint make_model writes (an upper bound: untied). The
    parameters are the matrix products' N plus the embedding, the norms and
    Qwen2's biases."""
    _, n_matmul, _ = flops_per_token(p)
    n = n_matmul + p["vocab"] * p["hidden"] + (2 * p["layers"] + 1) * p["hidden"] + bias_params(p)
    return n * (2 if p["dtype"] == "bfloat16" else 4)


def model_parent_dir(p):
    """Where the random checkpoint goes: /dev/shm (RAM) when it has room for
    it twice over, so that writing and loading 16 GB is not a disk benchmark."""
    import shutil
    shm = "/dev/shm"
    if os.path.isdir(shm) and shutil.disk_usage(shm).free > 2 * model_bytes(p):
        return shm
    return None


def make_model(p, out_dir, tokenizer=False):
    """Writes a random HF checkpoint of the preset's shape; returns its
    parameter count. Weights are drawn as transformers initialises Llama and
    Qwen2 (normal, std 0.02; RMSNorm weights 1), on the GPU when the
    preset runs on one (faster than drawing 8B parameters on the CPU). With
    tokenizer, also a word-level tokenizer of the vocabulary's size (Unsloth
    loads one from the model's folder; the others need none)."""
    import torch
    torch.manual_seed(0)
    with torch.device("meta"):
        model = hf_model_class(p)(hf_config(p))
    dev = "cuda" if p["device"] == "cuda" and torch.cuda.is_available() else "cpu"
    model = model.to_empty(device=dev).to(getattr(torch, p["dtype"]))
    if p["tie"]:
        model.tie_weights()
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name.endswith("norm.weight"):
                prm.fill_(1.0)
            else:  # biases too (transformers starts them at 0): the guard then covers them
                prm.normal_(0.0, 0.02)
    model.save_pretrained(out_dir, safe_serialization=True)
    if tokenizer:
        make_tokenizer(p["vocab"], out_dir)
    n = sum(x.numel() for x in model.parameters())
    # The adapter every side starts from (peft's initialisation: A random, B
    # 0), so that their losses stay comparable after step 0 (Unsloth, which
    # builds its own, excepted).
    from peft import get_peft_model
    torch.manual_seed(0)
    get_peft_model(model, lora_config(p)).save_pretrained(init_adapter_dir(out_dir))
    return n


def lora_config(p):
    """The LoRA every side trains: r, alpha 2r, no dropout, every linear
    layer but lm_head (with lm_head: and lm_head)."""
    from peft import LoraConfig
    targets = "all-linear" if not p.get("lm_head") else [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
    return LoraConfig(r=p["rank"], lora_alpha=2 * p["rank"], lora_dropout=0.0, target_modules=targets)


def init_adapter_dir(model_dir):
    return os.path.join(model_dir, "init-adapter")


def make_tokenizer(vocab, out_dir):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t1", eos_token="t2",
                            pad_token="t3").save_pretrained(out_dir)


def segment_starts(seq, segments):
    """Where each of a packed row's sequences starts: K-1 of seq // K tokens,
    the last one takes the rest (as fjord's train_bench --segments)."""
    return [k * (seq // segments) for k in range(segments)]


def flops_per_token(p):
    """(FLOPs per trained token, N, N_lora) with N the parameters that take
    part in a matrix product (every linear layer's weight and the lm_head,
    tied or not; not the embedding lookup, the norms or biases): 4·N (forward
    2N + backward input gradients 2N; the frozen base needs no weight
    gradients) + 3·attention (forward, and twice that backward; causal, so
    half of QKᵀ and PV) + 6·N_lora (forward, input and weight gradients)."""
    c, i, L, r = p["hidden"], p["intermediate"], p["layers"], p["rank"]
    kv = p["kv_heads"] * (c // p["heads"])
    shapes = [(c, c), (c, kv), (c, kv), (c, c), (c, i), (c, i), (i, c)]  # q k v o gate up down: (in, out)
    n_matmul = L * sum(a * b for a, b in shapes) + p["vocab"] * c
    n_lora = L * r * sum(a + b for a, b in shapes) + (r * (c + p["vocab"]) if p.get("lm_head") else 0)
    attn = 2 * 2 * L * (p["seq"] / p.get("segments", 1)) * c / 2  # packed: each sequence attends to itself
    return 4 * n_matmul + 3 * attn + 6 * n_lora, n_matmul, n_lora


def executed_flops_per_token(p, checkpointing):
    """flops_per_token plus, under checkpointing, the decoder's forward run
    again in backward (2·N_decoder + attention + 2·N_lora): the work a GPU
    does, for --estimate; MFU counts flops_per_token alone."""
    fpt, n_matmul, n_lora = flops_per_token(p)
    if not checkpointing:
        return fpt
    attn = 2 * 2 * p["layers"] * p["seq"] * p["hidden"] / 2
    return fpt + 2 * (n_matmul - p["vocab"] * p["hidden"]) + attn + 2 * n_lora


def guard_check(losses, reference, dtype, steps):
    """(ok, max |Δ|, step of the first violation or None, steps compared): the
    correctness guard on the first `steps` losses of two runs (TOLERANCE)."""
    first, later = TOLERANCE[dtype]
    n = min(steps, len(losses), len(reference))
    worst, bad = 0.0, None
    for k in range(n):
        d = abs(losses[k] - reference[k])
        if not math.isfinite(d):
            d = math.inf
        worst = max(worst, d)
        if bad is None and d > (first if k == 0 else later):
            bad = k
    return bad is None and n > 0, worst, bad, n


def search_max_batch(fits, start, limit):
    """The largest b in [1, limit] with fits(b), fits being monotone (what fits
    at b fits below b): doubles from start until a try fails or limit is
    reached, then bisects. About 2·log2(limit) calls; 0 if 1 does not fit."""
    lo, hi = 0, None
    b = max(1, min(start, limit))
    while True:
        if fits(b):
            lo = b
            if b >= limit:
                return lo
            b = min(2 * b, limit)
        else:
            hi = b
            break
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _cpu_seconds():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


# ---------------------------------------------------------------- the Python sides (child processes)

def load_hf(p, model_dir, impl, checkpointing):
    """transformers (+ Liger) + peft, as its users write it."""
    import torch
    if impl == "hf-liger":  # patches transformers' classes: before the model is made
        import liger_kernel.transformers as liger
        apply = {"llama": liger.apply_liger_kernel_to_llama, "qwen2": liger.apply_liger_kernel_to_qwen2}
        apply[p["family"]](rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                           fused_linear_cross_entropy=True)
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM
    kw = dict(dtype=getattr(torch, p["dtype"]))
    if impl == "hf-eager":
        kw["attn_implementation"] = "eager"
    if p["device"] == "cuda":
        kw["device_map"] = "cuda"  # straight onto the GPU
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kw)
    if p["device"] != "cuda":
        model = model.to(torch.device(p["device"]))
    attn = getattr(model.config, "_attn_implementation", None)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    torch.manual_seed(0)
    model = get_peft_model(model, lora_config(p))
    init = os.path.join(init_adapter_dir(model_dir), "adapter_model.safetensors")
    if os.path.exists(init):  # the adapter every side starts from
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file
        set_peft_model_state_dict(model, load_file(init))
    model.train()
    return model, attn


def load_unsloth(p, model_dir, checkpointing):
    """Unsloth's 16-bit LoRA: FastLanguageModel.from_pretrained with 4- and
    8-bit loading off, then its get_peft_model on the same seven projections."""
    import unsloth  # noqa: F401  (first: it patches transformers and peft)
    import torch
    from unsloth import FastLanguageModel
    model, _ = FastLanguageModel.from_pretrained(
        model_name=model_dir, max_seq_length=p["seq"], dtype=getattr(torch, p["dtype"]), load_in_4bit=False,
        load_in_8bit=False, full_finetuning=False, use_gradient_checkpointing=checkpointing)
    model = FastLanguageModel.get_peft_model(
        model, r=p["rank"], lora_alpha=2 * p["rank"], lora_dropout=0.0, bias="none",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        + (["lm_head"] if p.get("lm_head") else []),
        use_gradient_checkpointing=checkpointing, random_state=0)
    FastLanguageModel.for_training(model, use_gradient_checkpointing=checkpointing)
    return model, getattr(model.config, "_attn_implementation", None)


def run_python_side(p, model_dir, impl, checkpointing):
    """One Python side's timed steps. Prints "step i: seconds s, loss L" on
    stderr after each step, as fjord's train_bench does (the parent reads
    these lines for the losses and the energy marks); returns the result."""
    import torch
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    dev = torch.device(p["device"])
    cuda = dev.type == "cuda"
    try:
        if impl == "unsloth":
            model, attn = load_unsloth(p, model_dir, checkpointing)
        else:
            model, attn = load_hf(p, model_dir, impl, checkpointing)
    except oom as e:
        sys.exit(f"out of memory while loading: {str(e).splitlines()[0]}")
    params = [x for x in model.parameters() if x.requires_grad]
    for prm in params:  # peft's default already; made certain
        prm.data = prm.data.float()
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0, **({"fused": True} if cuda else {}))
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, p["vocab"], (p["batch"], p["seq"]), generator=g).to(dev) for _ in range(2)]
    # Packed rows (segments > 1): restarting position ids and no attention
    # mask, which transformers turns into its per-sequence mask
    # (masking_utils.find_packed_sequence_indices), and -100 labels on each
    # later sequence's first token, so that no token predicts across a
    # boundary (the labels are shifted inside the model).
    segments = p.get("segments", 1)
    starts = segment_starts(p["seq"], segments)
    pos = torch.cat([torch.arange(b - a) for a, b in zip(starts, starts[1:] + [p["seq"]])])
    pos = pos.unsqueeze(0).expand(p["batch"], -1).to(dev)
    labels = []
    for x in batches:
        y = x.clone()
        y[:, starts[1:]] = -100
        labels.append(y)
    bf16 = p["dtype"] == "bfloat16"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, losses, cpu0 = [], [], None
    step = 0
    try:
        for step in range(p["warmup"] + p["steps"]):
            if step == p["warmup"]:
                cpu0 = _cpu_seconds()
            x, y = batches[step % 2], labels[step % 2]
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                kw = {"position_ids": pos} if segments > 1 else {}
                loss = model(input_ids=x, labels=y, use_cache=False, **kw).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            value = loss.item()
            if cuda:
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            losses.append(value)
            if step >= p["warmup"]:
                times.append(dt)
            print(f"step {step}: {dt:.6f} s, loss {value:.6f}", file=sys.stderr, flush=True)
    except oom as e:
        sys.exit(f"out of memory at step {step}: {str(e).splitlines()[0]}")
    tok = p["batch"] * p["seq"]
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cpu = _cpu_seconds() - cpu0 if cpu0 is not None else 0.0
    res = {"tokens_per_s": tok * len(times) / sum(times) if times else 0.0, "peak_bytes": peak,
           "loss": losses[-1] if losses else float("nan"), "losses": losses, "step_s": times,
           "tokens_per_cpu_s": tok * len(times) / cpu if cpu > 0 else 0.0, "attn": attn,
           "lora_params": sum(x.numel() for x in params), "threads": torch.get_num_threads()}
    if cuda:
        res["device_name"] = torch.cuda.get_device_name()
        res["device_total_bytes"] = torch.cuda.get_device_properties(0).total_memory
    return res


# ---------------------------------------------------------------- energy (the parent; no CUDA context)

class EnergyMeter:
    """Joules the GPU used so far: NVML's energy counter (pynvml, from the
    nvidia-ml-py package), else an integral of nvidia-smi's power readings
    every 50 ms. read() is None where neither works; `skipped` says why."""

    def __init__(self, device):
        self.how, self.skipped, self._read = None, None, None
        if device != "cuda":
            self.skipped = "CPU run"
            return
        try:
            import pynvml
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self._read = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0  # mJ
            self.how = "NVML energy counter"
            return
        except Exception as e:  # no pynvml, or a GPU without the counter
            why = f"pynvml: {type(e).__name__}: {e}"
        try:
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=power.draw", "--format=csv,noheader,nounits", "-i", "0", "-lms", "50"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError as e:
            self.skipped = f"{why}; nvidia-smi: {e}"
            return
        self._joules, self._last, self._lock = 0.0, None, threading.Lock()
        threading.Thread(target=self._sample, daemon=True).start()
        self._read = lambda: self._joules
        self.how = "nvidia-smi power.draw every 50 ms, integrated"

    def _sample(self):
        for line in self._proc.stdout:
            try:
                watts = float(line.strip())
            except ValueError:
                continue
            now = time.monotonic()
            with self._lock:
                if self._last is not None:
                    self._joules += 0.5 * (watts + self._last[1]) * (now - self._last[0])
                self._last = (now, watts)

    def read(self):
        try:
            return self._read() if self._read else None
        except Exception:
            return None

    def close(self):
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait()


# ---------------------------------------------------------------- the parent

def package_versions():
    out = {}
    for name in ("torch", "transformers", "peft", "liger-kernel", "unsloth", "unsloth_zoo", "triton",
                 "accelerate", "trl"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        root = os.path.dirname(os.path.abspath(__file__))
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)
        if rev.returncode == 0:
            out["fjord"] = rev.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return out


def skip_reason(impl, p):
    if impl == "hf-liger":
        if p["device"] != "cuda":
            return LIGER_CPU_REASON
        if importlib.util.find_spec("liger_kernel") is None:
            return "liger-kernel is not installed (tools/fetch_gpu_wheels.sh fetches it)"
    if impl == "unsloth" and importlib.util.find_spec("unsloth") is None:
        return ("unsloth is not installed (tools/fetch_gpu_wheels.sh fetches it for the GPU machine; "
                "tools/requirements.txt leaves it out: it needs torch<2.15)")
    return None


def fjord_exe(bin_dir):
    for exe in (os.path.join(bin_dir, "lora", "cli", "train_bench"), os.path.join(bin_dir, "train_bench")):
        if os.path.exists(exe):
            return exe
    return None


def run_child(cmd, env, cwd, p, meter, timeout):
    """Runs one side; returns (exit code, stdout, stderr lines, losses, joules
    over the timed steps or None, wall seconds). Reads stderr as it comes:
    a step line marks the energy counter (last warm-up step, last step)."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        lines, losses, e0, e1 = [], [], None, None
        last = p["warmup"] + p["steps"] - 1
        if p["warmup"] == 0:
            e0 = meter.read()
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            m = STEP_LINE.match(line)
            if m:
                step = int(m.group(1))
                losses.append(float(m.group(3)))
                if step == p["warmup"] - 1:
                    e0 = meter.read()
                if step == last:
                    e1 = meter.read()
        rc = proc.wait()
        timed_out = not timer.is_alive() and rc != 0
        timer.cancel()
        out.seek(0)
        stdout = out.read()
    if timed_out:
        lines.append(f"killed after {timeout} s (--child-timeout)")
    joules = e1 - e0 if e0 is not None and e1 is not None else None
    return rc, stdout, lines, losses, joules, time.monotonic() - t0


def error_line(lines, rc):
    """The message that explains a failed child: a Python exception's last
    line, or fjord's 'train_bench: ...'."""
    text = [x for x in lines if x.strip() and not STEP_LINE.match(x)]
    for x in reversed(text):
        if x.startswith("train_bench:") or x.startswith("out of memory") or x.startswith("killed after"):
            return x.strip()
    return text[-1].strip() if text else f"exited {rc}"


def last_json(stdout):
    """The result a child printed: its last stdout line that is a JSON object
    (libraries may print banners there too)."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def is_oom(message):
    return "out of memory" in message.lower()


def side_command(impl, p, model_dir, checkpointing, args, bin_dir):
    if impl == "fjord":
        exe = fjord_exe(bin_dir)
        if exe is None:
            return None, (f"fjord's train_bench is not in {bin_dir} (FJORD_BIN_DIR): "
                          "bazel build //lora/cli:train_bench")
        cmd = [exe, "--model", model_dir, "--batch", str(p["batch"]), "--seq", str(p["seq"]),
               "--rank", str(p["rank"]), "--steps", str(p["steps"]), "--warmup", str(p["warmup"]),
               "--device", p["device"], "--dtype", p["dtype"]]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if p.get("segments", 1) > 1:
            cmd += ["--segments", str(p["segments"])]
        if checkpointing:
            cmd.append("--checkpointing")
        if p.get("lm_head"):
            cmd.append("--lm_head")
        if os.path.isdir(init_adapter_dir(model_dir)):
            cmd += ["--init_from", init_adapter_dir(model_dir)]
        return cmd, None
    return [sys.executable, os.path.abspath(__file__), "--impl", impl, "--spec", json.dumps(p),
            "--model-dir", model_dir, "--threads", str(args.threads),
            "--checkpointing", "on" if checkpointing else "off"], None


def child_env(scratch):
    env = dict(os.environ)
    # No network on the GPU machine: never wait on the Hub; Unsloth's
    # statistics ping and its compile cache stay off the network and the repo.
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               UNSLOTH_DISABLE_STATISTICS="1", TOKENIZERS_PARALLELISM="false",
               UNSLOTH_COMPILE_LOCATION=os.path.join(scratch, "unsloth_compiled_cache"))
    return env


def run_side(impl, p, model_dir, checkpointing, args, bin_dir, meter, scratch):
    """One run of one side: its result dict ({"error": ...} when it failed)."""
    cmd, err = side_command(impl, p, model_dir, checkpointing, args, bin_dir)
    if err:
        return {"error": err}
    rc, stdout, lines, losses, joules, wall = run_child(cmd, child_env(scratch), scratch, p, meter,
                                                        args.child_timeout)
    if impl == "fjord" and rc == 0:
        sys.stderr.write("".join(x + "\n" for x in lines if not STEP_LINE.match(x)))
    r = last_json(stdout)
    if rc != 0 or r is None:
        return {"error": error_line(lines, rc), "wall_s": wall, "losses": losses}
    r["losses"], r["wall_s"] = losses, wall
    if p["device"] == "cuda":
        if joules is not None and r["step_s"]:
            r["joules_per_mtok"] = joules / (p["batch"] * p["seq"] * len(r["step_s"])) * 1e6
        else:
            r["energy_skipped"] = meter.skipped or "no energy reading over the timed steps"
    return r


def estimate(plan, args):
    """Seconds each child of a plan would take on one H100 (ESTIMATE's
    assumptions): start-up + loading + steps × FLOPs / (MFU · peak)."""
    rows, total, made = [], 0.0, set()
    for name, p, ckpt, peers in plan:
        gb = model_bytes(p) / 1e9
        if name not in made:  # once per preset, as main() makes it
            made.add(name)
            make = ESTIMATE["python_start_s"] + gb / ESTIMATE["make_gb_s"]
            rows.append((name, "-", "make model", make))
            total += make
        step = p["batch"] * p["seq"] * executed_flops_per_token(p, ckpt) / (ESTIMATE["mfu"] * args.peak_tflops * 1e12)
        for impl in peers:
            start = ESTIMATE["fjord_start_s"] if impl == "fjord" else ESTIMATE["python_start_s"]
            start += {"hf-liger": ESTIMATE["liger_jit_s"], "unsloth": ESTIMATE["unsloth_start_s"]}.get(impl, 0.0)
            s = start + gb / ESTIMATE["load_gb_s"] + (p["warmup"] + p["steps"]) * step
            rows.append((name, "on" if ckpt else "off", impl + rows_label(p), s))
            total += s
    return rows, total


def fmt_row(row, impl, r, base):
    """One line of the headline table (plain text and markdown share it)."""
    head = [row["preset"], "on" if row["checkpointing"] else "off", impl]
    if "skipped" in r:
        return head + [f"skipped: {r['skipped']}"]
    if "error" in r:
        return head + [f"error: {r['error']}"]
    if "diverged" in r:
        return head + [f"diverged: {r['diverged']}"]
    ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
    mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "-"
    joules = f"{r['joules_per_mtok']:.0f}" if "joules_per_mtok" in r else "-"
    guard = row.get("guard", {}).get(impl)
    g = "ref" if impl == row.get("guard_reference") else (f"{guard['max_abs_diff']:.2g}" if guard else "-")
    return head + [f"{r['tokens_per_s']:.1f}", ratio, f"{r.get('tokens_per_cpu_s', 0):.1f}",
                   f"{r['peak_bytes'] / 2**20:.0f}", mfu, joules, f"{r['loss']:.4f}", g]


HEADLINE = ["preset", "ckpt", "impl", "tokens/s", "vs hf-sdpa", "tok/cpu-s", "peak MiB", "MFU", "J/Mtok",
            "last loss", "guard max Δ"]


def tables(results, searches):
    """The headline table (one sequence per row), the packed rows' table and
    the max-batch table as lists of rows."""
    head, packed = [], []
    for row in results:
        base = row["impls"].get("hf-sdpa")
        base = base if base and "tokens_per_s" in base and "diverged" not in base else None
        for impl, r in row["impls"].items():
            (packed if row.get("segments", 1) > 1 else head).append(fmt_row(row, impl, r, base))
    mb = []
    for s in searches:
        if "error" in s:
            mb.append([s["preset"], s["ckpt"], s["impl"], f"error: {s['error']}"])
        elif "skipped" in s:
            mb.append([s["preset"], s["ckpt"], s["impl"], f"skipped: {s['skipped']}"])
        else:
            mb.append([s["preset"], s["ckpt"], s["impl"], str(s["max_batch"]), str(s["max_batch"] * s["seq"]),
                       f"{s['peak_bytes'] / 2**30:.1f}" if s.get("peak_bytes") else "-", str(s["tries"])])
    return head, packed, mb


def rows_label(p):
    return f" packed x{p['segments']}" if p.get("segments", 1) > 1 else ""


def packed_title(meta):
    return (f"Packed rows: {meta['segments']} sequences per row, positions restart and attention stays "
            "within each sequence (fjord: attention per sequence; transformers: its per-sequence mask from "
            "the restarting position ids, through the same attention implementation):")


def print_text(head, packed, mb, meta):
    widths = [13, 4, 8, 10, 10, 10, 9, 6, 7, 9, 11]
    print(" ".join(f"{h:>{w}}" if i > 2 else f"{h:{w}}" for i, (h, w) in enumerate(zip(HEADLINE, widths))))
    for r in head:
        if len(r) == 4:
            print(f"{r[0]:13} {r[1]:4} {r[2]:8} {r[3]}")
        else:
            print(" ".join(f"{c:>{w}}" if i > 2 else f"{c:{w}}" for i, (c, w) in enumerate(zip(r, widths))))
    if packed:
        print("\n" + packed_title(meta))
        for r in packed:
            print(" ".join(f"{c:>{w}}" if i > 2 else f"{c:{w}}" for i, (c, w) in enumerate(zip(r, widths)))
                  if len(r) > 4 else f"{r[0]:13} {r[1]:4} {r[2]:8} {r[3]}")
    if mb:
        print(f"\nmax micro-batch that trains on {meta.get('device_name', 'this device')} (<= --max-batch):")
        for r in mb:
            print(" ".join(f"{c:10}" for c in r))
    print("\n" + "; ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    for line in meta["notes"]:
        print(line)


def markdown(head, packed, mb, meta):
    out = [f"Measured {meta['date']} on {meta.get('device_name', 'CPU')}; {meta['energy']}. Versions: "
           + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".", ""]
    out += ["| " + " | ".join(HEADLINE) + " |", "|" + "---|" * len(HEADLINE)]
    for r in head:
        r = [c.replace("|", "\\|") for c in r] + [""] * (len(HEADLINE) - len(r))
        out.append("| " + " | ".join(r) + " |")
    if packed:
        out += ["", packed_title(meta), "", "| " + " | ".join(HEADLINE) + " |", "|" + "---|" * len(HEADLINE)]
        for r in packed:
            r = [c.replace("|", "\\|") for c in r] + [""] * (len(HEADLINE) - len(r))
            out.append("| " + " | ".join(r) + " |")
    if mb:
        cols = ["preset", "ckpt", "impl", "max micro-batch", "tokens per step", "peak GiB", "tries"]
        out += ["", f"Max tokens per step on {meta.get('device_name', 'this device')}:", "",
                "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in mb:
            r = [c.replace("|", "\\|") for c in r] + [""] * (len(cols) - len(r))
            out.append("| " + " | ".join(r) + " |")
    out += [""] + [f"- {x}" for x in meta["notes"]]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=sorted(PRESETS), help="repeatable")
    ap.add_argument("--dry-run", action="store_true",
                    help="CI's check of the harness: --preset cpu-tiny --checkpointing both, every peer")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, of {','.join(PEERS)}")
    ap.add_argument("--checkpointing", choices=["off", "on", "both"], default="off")
    ap.add_argument("--batch", type=int, help="override the presets' micro-batch")
    ap.add_argument("--steps", type=int, help="override the presets' timed steps")
    ap.add_argument("--warmup", type=int, help="override the presets' warm-up steps")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], help="override the presets' dtype")
    ap.add_argument("--lm-head", action="store_true",
                    help="LoRA on lm_head too, on every side (its loss: fjord's chunked adapted head)")
    ap.add_argument("--guard-steps", type=int, default=10)
    ap.add_argument("--packed", type=int, default=0, metavar="K",
                    help="also run packed rows of K sequences each, a second table (0: off; --dry-run: 2)")
    ap.add_argument("--packed-peers", help="the sides of the packed table (default: --peers)")
    ap.add_argument("--max-batch", type=int, default=0,
                    help="also search each side's largest micro-batch up to N (0: off; a process per try)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("FJORD_BENCH_THREADS", "0")))
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--child-timeout", type=float, default=900.0, help="seconds before a side is killed")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--markdown", help="write the tables here, for docs/benchmarks.md")
    ap.add_argument("--estimate", action="store_true", help="print the plan's estimated GPU time; run nothing")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each implementation N times, alternating, and keep each one's best run "
                         "(on a shared machine the slowest runs measure the neighbours, not the code)")
    ap.add_argument("--impl", choices=["make"] + [x for x in PEERS if x != "fjord"], help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)  # child: the preset as JSON
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--tokenizer", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    bin_dir = os.environ.get("FJORD_BIN_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "bazel-bin"))

    if args.impl:  # child: one side (or the model), one preset
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        p = json.loads(args.spec)
        if args.impl == "make":
            res = {"params": make_model(p, args.model_dir, args.tokenizer)}
        else:
            res = run_python_side(p, args.model_dir, args.impl, args.checkpointing == "on")
        print(json.dumps(res))
        return

    presets = args.preset or (["cpu-tiny"] if args.dry_run else ["cpu-30m"])
    ckpt_mode = "both" if args.dry_run and args.checkpointing == "off" else args.checkpointing
    ckpts = {"off": [False], "on": [True], "both": [False, True]}[ckpt_mode]
    peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    for x in peers:
        if x not in PEERS:
            ap.error(f"--peers: unknown '{x}' (of {', '.join(PEERS)})")
    peers = [x for x in PEERS if x in peers]  # the reference first
    plan = []
    for name in presets:
        p = dict(PRESETS[name])
        for key in ("batch", "steps", "warmup", "dtype"):
            if getattr(args, key) is not None:
                p[key] = getattr(args, key)
        if args.lm_head:
            p["lm_head"] = True
        for ckpt in ckpts:
            plan.append((name, p, ckpt, peers))
    packed = args.packed or (2 if args.dry_run else 0)
    if packed > 1:
        packed_peers = peers
        if args.packed_peers:
            asked = [x.strip() for x in args.packed_peers.split(",") if x.strip()]
            for x in asked:
                if x not in peers:
                    ap.error(f"--packed-peers: '{x}' is not one of --peers ({', '.join(peers)})")
            packed_peers = [x for x in peers if x in asked]
        plan += [(name, dict(p, segments=packed), ckpt, packed_peers) for name, p, ckpt, _ in plan]

    if args.estimate:
        rows, total = estimate(plan, args)
        print(f"estimate on one GPU of {args.peak_tflops:.0f} TFLOP/s at {100 * ESTIMATE['mfu']:.0f}% MFU "
              f"(ESTIMATE in {os.path.basename(__file__)}):")
        for r in rows:
            print(f"  {r[0]:10} {r[1]:4} {r[2]:18} {r[3]:6.0f} s")
        print(f"  total {total:.0f} s ({total / 60:.1f} min)")
        return

    versions = package_versions()
    meter = EnergyMeter("cuda" if any(p["device"] == "cuda" for _, p, _, _ in plan) else "cpu")
    results, searches, meta = [], [], {"versions": versions, "notes": []}
    started = time.monotonic()
    made = {}  # preset name -> (scratch dir, model dir, parameters), or an error: each model made once
    tmps = []
    try:
        for name, p, ckpt, peers in plan:
            if name not in made:
                tmp = tempfile.TemporaryDirectory(dir=model_parent_dir(p))
                tmps.append(tmp)
                model_dir = os.path.join(tmp.name, "model")
                cmd = [sys.executable, os.path.abspath(__file__), "--impl", "make", "--spec", json.dumps(p),
                       "--model-dir", model_dir, "--threads", str(args.threads)]
                if "unsloth" in peers and skip_reason("unsloth", p) is None:
                    cmd.append("--tokenizer")
                t0 = time.monotonic()
                mk = subprocess.run(cmd, capture_output=True, text=True, env=child_env(tmp.name))
                made_res = last_json(mk.stdout)
                if mk.returncode != 0 or made_res is None:
                    # The other presets still run; this one's rows say why not.
                    sys.stderr.write(f"train_bench: making the {name} model failed:\n{mk.stderr}")
                    made[name] = error_line(mk.stderr.splitlines(), mk.returncode)
                else:
                    made[name] = (tmp.name, model_dir, made_res["params"])
                    meta["notes"].append(f"{name}: model made in {time.monotonic() - t0:.0f} s")
            fpt, n_matmul, n_lora = flops_per_token(p)
            row = {"preset": name, "checkpointing": ckpt, "matmul_params": n_matmul, "lora_params": n_lora,
                   "flops_per_token": fpt, **p, "impls": {}}
            if isinstance(made[name], str):
                row["impls"] = {x: {"error": f"making the model failed: {made[name]}"} for x in peers}
                results.append(row)
                continue
            scratch, model_dir, row["params"] = made[name]
            for impl in peers:
                why = skip_reason(impl, p)
                if why:
                    row["impls"][impl] = {"skipped": why}
            runnable = [x for x in peers if x not in row["impls"]]
            for _ in range(max(1, args.repeat)):
                for impl in runnable:
                    r = run_side(impl, p, model_dir, ckpt, args, bin_dir, meter, scratch)
                    print(f"[{time.monotonic() - started:6.0f} s] {name}{rows_label(p)} ckpt {'on' if ckpt else 'off'} {impl}: "
                          + (f"error: {r['error']}" if "error" in r else f"{r['tokens_per_s']:.1f} tokens/s")
                          + f" ({r.get('wall_s', 0):.0f} s)", file=sys.stderr, flush=True)
                    if "error" in r:
                        row["impls"].setdefault(impl, r)
                        continue
                    if p["device"] == "cuda":
                        r["mfu"] = r["tokens_per_s"] * fpt / (args.peak_tflops * 1e12)
                        if r.get("device_name"):
                            meta.setdefault("device_name", f"{r['device_name']} "
                                            f"({r['device_total_bytes'] / 2**30:.0f} GiB)")
                    old = row["impls"].get(impl, {})
                    r["runs"] = old.get("runs", []) + [
                        {"tokens_per_s": r["tokens_per_s"], "tokens_per_cpu_s": r.get("tokens_per_cpu_s"),
                         "peak_bytes": r["peak_bytes"], "wall_s": r["wall_s"]}]
                    if "tokens_per_s" not in old or r["tokens_per_s"] > old["tokens_per_s"]:
                        row["impls"][impl] = r
                    else:
                        old["runs"] = r["runs"]
            row["impls"] = {x: row["impls"][x] for x in peers if x in row["impls"]}
            apply_guard(row, args.guard_steps)
            results.append(row)
            if args.max_batch > 0 and p["device"] == "cuda" and p.get("segments", 1) == 1:
                for impl in peers:
                    searches.append(max_batch_search(impl, name, p, ckpt, row, model_dir, args, bin_dir, scratch))
    finally:
        meter.close()
        for tmp in tmps:
            tmp.cleanup()

    meta["date"] = time.strftime("%Y-%m-%d")
    meta["energy"] = f"energy: {meter.how}" if meter.how else f"energy not measured: {meter.skipped}"
    meta["notes"].append(f"whole run: {time.monotonic() - started:.0f} s")
    for row in results:
        if "guard_note" in row:
            meta["notes"].append(f"{row['preset']}{rows_label(row)} ckpt {'on' if row['checkpointing'] else 'off'}: "
                                 f"{row['guard_note']}")
    meta["segments"] = packed
    head, packed_rows, mb = tables(results, searches)
    print_text(head, packed_rows, mb, meta)
    md = markdown(head, packed_rows, mb, meta)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "max_batch": searches, "meta": meta, "markdown": md}, f, indent=2)


def apply_guard(row, guard_steps):
    """Compares every side's first losses with the reference's; a side
    outside the tolerance gets "diverged" (the tables print it instead of
    its speed)."""
    ref = next((x for x in GUARD_REFERENCES if "tokens_per_s" in row["impls"].get(x, {})), None)
    row["guard"] = {}
    if ref is None:
        row["guard_note"] = "correctness guard not applied: no transformers reference ran"
        return
    row["guard_reference"] = ref
    first, later = TOLERANCE[row["dtype"]]
    reference = row["impls"][ref]["losses"]
    for impl, r in row["impls"].items():
        if impl == ref or "tokens_per_s" not in r:
            continue
        ok, worst, bad, n = guard_check(r["losses"], reference, row["dtype"], guard_steps)
        row["guard"][impl] = {"max_abs_diff": worst, "steps": n, "ok": ok}
        if n == 0:
            r["diverged"] = "no losses to compare"
        elif not ok:
            r["diverged"] = (f"loss {r['losses'][bad]:.5f} at step {bad} against {ref}'s {reference[bad]:.5f} "
                             f"(|Δ| > {first if bad == 0 else later:g})")
    n = min(guard_steps, len(reference))
    row["guard_note"] = (f"correctness guard: first {n} losses against {ref}'s, |Δ| <= {first:g} at step 0 "
                         f"and {later:g} after ({row['dtype']})")


class SearchFailed(Exception):
    """A try of the max-batch search failed for another reason than memory."""


def max_batch_search(impl, name, p, ckpt, row, model_dir, args, bin_dir, scratch):
    """The largest micro-batch (<= --max-batch) with which a side trains two
    steps (one warm-up) without running out of memory."""
    base = {"preset": name, "ckpt": "on" if ckpt else "off", "impl": impl, "seq": p["seq"]}
    r = row["impls"].get(impl, {})
    if "skipped" in r:
        return {**base, "skipped": r["skipped"]}
    peaks, tries = {}, [0]

    def fits(b):
        tries[0] += 1
        q = dict(p, batch=b, steps=1, warmup=1)
        out = run_side(impl, q, model_dir, ckpt, args, bin_dir, EnergyMeter("cpu"), scratch)
        if "error" in out:
            if not is_oom(out["error"]):
                raise SearchFailed(f"batch {b}: {out['error']}")
            return False
        peaks[b] = out["peak_bytes"]
        return True

    try:
        best = search_max_batch(fits, p["batch"], args.max_batch)
    except SearchFailed as e:
        return {**base, "error": str(e)}
    return {**base, "max_batch": best, "peak_bytes": peaks.get(best), "tries": tries[0]}


if __name__ == "__main__":
    main()
