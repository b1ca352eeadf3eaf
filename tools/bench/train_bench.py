"""Side-by-side LoRA training benchmark: fjord vs transformers + peft (eager).

Both fine-tune the same Llama-architecture model (random weights, saved once
as an HF checkpoint that both load) with LoRA on all linear layers, on the
same random token batches, with AdamW; each runs in its own process so peak
memory is its own. Reports tokens/s (after warm-up steps), tokens per CPU-second of
the process (user + system time; robust to other load on the machine when
each side runs one thread), peak memory (RSS on CPU, CUDA peak allocated on
GPU) and, on GPU, MFU counted as
(4·N + 3·attention + 6·N_lora) FLOPs per token against the GPU's dense bf16
peak (989 TFLOP/s for H100 SXM unless --peak-tflops).

  # CPU (issue target: fjord >= 2x tokens/s at <= 0.7x peak RSS)
  python tools/bench/train_bench.py --preset cpu-30m [--repeat 3]
  # GPU (one H100): Llama-3.2-1B / Llama-3.1-8B shapes, bf16, seq 2048
  python tools/bench/train_bench.py --preset gpu-1b --preset gpu-8b

fjord's side is the C++ program //lora/cli:train_bench (FJORD_BIN_DIR, default
bazel-bin; on a GPU machine the CMake build's build/cmake).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

PRESETS = {
    # A few seconds on one core: tests/bench/test_train_bench.py runs the whole
    # harness with it (both sides, the JSON, the table).
    "cpu-tiny": dict(hidden=64, intermediate=160, layers=2, heads=4, kv_heads=2, vocab=320, tie=False,
                     seq=32, batch=2, rank=4, steps=3, warmup=1, device="cpu", dtype="float32"),
    # ~30M parameters, the CPU setting.
    "cpu-30m": dict(hidden=512, intermediate=1376, layers=4, heads=8, kv_heads=8, vocab=32000, tie=True,
                    seq=256, batch=8, rank=16, steps=6, warmup=2, device="cpu", dtype="float32"),
    # Llama-3.2-1B shapes (tied embeddings, as the released model).
    "gpu-1b": dict(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, vocab=128256, tie=True,
                   seq=2048, batch=4, rank=16, steps=10, warmup=3, device="cuda", dtype="bfloat16"),
    # Llama-3.1-8B shapes.
    "gpu-8b": dict(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256, tie=False,
                   seq=2048, batch=1, rank=16, steps=8, warmup=3, device="cuda", dtype="bfloat16"),
}


def hf_config(p):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=p["vocab"], hidden_size=p["hidden"], intermediate_size=p["intermediate"],
                       num_hidden_layers=p["layers"], num_attention_heads=p["heads"],
                       num_key_value_heads=p["kv_heads"], max_position_embeddings=max(4096, p["seq"]),
                       tie_word_embeddings=p["tie"], rope_theta=500000.0)


def model_bytes(p):
    """Bytes of the checkpoint make_model writes (an upper bound: untied). The
    parameters are the matrix products' N plus the embedding and the norms."""
    _, n_matmul, _ = flops_per_token(p)
    n = n_matmul + p["vocab"] * p["hidden"] + (2 * p["layers"] + 1) * p["hidden"]
    return n * (2 if p["dtype"] == "bfloat16" else 4)


def model_parent_dir(p):
    """Where the random checkpoint goes: /dev/shm (RAM) when it has room for
    it twice over, so that writing and loading 16 GB is not a disk benchmark."""
    import shutil
    shm = "/dev/shm"
    if os.path.isdir(shm) and shutil.disk_usage(shm).free > 2 * model_bytes(p):
        return shm
    return None


def make_model(p, out_dir):
    """Writes a random HF checkpoint of the preset's shape; returns its
    parameter count. Weights are drawn as transformers initialises Llama
    (normal, std 0.02; RMSNorm weights 1), on the GPU when the preset runs on
    one (faster than drawing 8B parameters on the CPU)."""
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    with torch.device("meta"):
        model = LlamaForCausalLM(hf_config(p))
    dev = "cuda" if p["device"] == "cuda" and torch.cuda.is_available() else "cpu"
    model = model.to_empty(device=dev).to(getattr(torch, p["dtype"]))
    if p["tie"]:
        model.tie_weights()
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name.endswith("norm.weight"):
                prm.fill_(1.0)
            else:
                prm.normal_(0.0, 0.02)
    model.save_pretrained(out_dir, safe_serialization=True)
    return sum(x.numel() for x in model.parameters())


def flops_per_token(p):
    """(FLOPs per trained token, N, N_lora) with N the parameters that take
    part in a matrix product (every linear layer's weight and the lm_head,
    tied or not; not the embedding lookup or the norms): 4·N (forward 2N +
    backward input gradients 2N; the frozen base needs no weight gradients)
    + 3·attention (forward, and twice that backward; causal, so half of QKᵀ
    and PV) + 6·N_lora (forward, input and weight gradients)."""
    c, i, L, r = p["hidden"], p["intermediate"], p["layers"], p["rank"]
    kv = p["kv_heads"] * (c // p["heads"])
    shapes = [(c, c), (c, kv), (c, kv), (c, c), (c, i), (c, i), (i, c)]  # q k v o gate up down: (in, out)
    n_matmul = L * sum(a * b for a, b in shapes) + p["vocab"] * c
    n_lora = L * r * sum(a + b for a, b in shapes)
    attn = 2 * 2 * L * p["seq"] * c / 2
    return 4 * n_matmul + 3 * attn + 6 * n_lora, n_matmul, n_lora


def _cpu_seconds():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def run_hf(p, model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    dev = torch.device(p["device"])
    dtype = getattr(torch, p["dtype"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="eager").to(dev)
    model = get_peft_model(model, LoraConfig(r=p["rank"], lora_alpha=2 * p["rank"], lora_dropout=0.0,
                                             target_modules="all-linear"))
    for prm in model.parameters():
        if prm.requires_grad:
            prm.data = prm.data.float()
    # fjord's AdamW defaults (no weight decay); torch's default decay is 0.01.
    opt = torch.optim.AdamW([x for x in model.parameters() if x.requires_grad], lr=1e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, p["vocab"], (p["batch"], p["seq"]), generator=g).to(dev) for _ in range(2)]
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    cpu0 = None
    for step in range(p["warmup"] + p["steps"]):
        if step == p["warmup"]:
            cpu0 = _cpu_seconds()
        x = batches[step % 2]
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if step >= p["warmup"]:
            times.append(time.perf_counter() - t0)
    tok = p["batch"] * p["seq"]
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cpu = _cpu_seconds() - cpu0
    return {"tokens_per_s": tok * len(times) / sum(times), "peak_bytes": peak, "loss": loss.item(),
            "tokens_per_cpu_s": tok * len(times) / cpu, "step_s": times}


def run_fjord(p, model_dir, bin_dir, threads=0):
    exe = os.path.join(bin_dir, "lora", "cli", "train_bench")
    if not os.path.exists(exe):
        exe = os.path.join(bin_dir, "train_bench")  # CMake layout
    if not os.path.exists(exe):
        sys.exit(f"fjord's train_bench is not in {bin_dir} (FJORD_BIN_DIR): bazel build //lora/cli:train_bench")
    cmd = [exe, "--model", model_dir, "--batch", str(p["batch"]), "--seq", str(p["seq"]),
           "--rank", str(p["rank"]), "--steps", str(p["steps"]), "--warmup", str(p["warmup"]),
           "--device", p["device"], "--dtype", p["dtype"]]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:  # its own message, not a Python traceback, ends up in the row
        sys.exit(f"{' '.join(cmd)} exited {out.returncode}: {out.stderr.strip()[-2000:]}")
    sys.stderr.write(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=sorted(PRESETS), help="repeatable")
    ap.add_argument("--impl", choices=["make", "hf", "fjord"], help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("FJORD_BENCH_THREADS", "0")))
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each implementation N times, alternating, and keep each one's best run "
                         "(on a shared machine the slowest runs measure the neighbours, not the code)")
    args = ap.parse_args()
    bin_dir = os.environ.get("FJORD_BIN_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "bazel-bin"))

    if args.impl:  # child: one implementation, one preset
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        p = PRESETS[args.preset[0]]
        if args.impl == "make":
            res = {"params": make_model(p, args.model_dir)}
        elif args.impl == "hf":
            res = run_hf(p, args.model_dir)
        else:
            res = run_fjord(p, args.model_dir, bin_dir, args.threads)
        print(json.dumps(res))
        return

    def child(impl, name, model_dir):
        cmd = [sys.executable, __file__, "--impl", impl, "--preset", name, "--model-dir", model_dir,
               "--threads", str(args.threads)]
        return subprocess.run(cmd, capture_output=True, text=True)

    results = []
    for name in args.preset or ["cpu-30m"]:
        p = PRESETS[name]
        # Each side, and the model's creation, runs in its own process: this one
        # never touches the GPU, so each side's peak memory is its own.
        with tempfile.TemporaryDirectory(dir=model_parent_dir(p)) as tmp:
            made = child("make", name, tmp)
            if made.returncode != 0:
                sys.exit(f"train_bench: making the {name} model failed:\n{made.stderr}")
            n_params = json.loads(made.stdout.strip().splitlines()[-1])["params"]
            fpt, n_matmul, n_lora = flops_per_token(p)
            row = {"preset": name, "params": n_params, "matmul_params": n_matmul, "lora_params": n_lora,
                   "flops_per_token": fpt, **p}
            for _ in range(max(1, args.repeat)):
                for impl in ("hf", "fjord"):
                    out = child(impl, name, tmp)
                    if out.returncode != 0:
                        row.setdefault(impl, {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"})
                        continue
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    if p["device"] == "cuda":
                        r["mfu"] = r["tokens_per_s"] * fpt / (args.peak_tflops * 1e12)
                    r["runs"] = row.get(impl, {}).get("runs", []) + [
                        {"tokens_per_s": r["tokens_per_s"], "tokens_per_cpu_s": r.get("tokens_per_cpu_s"),
                         "peak_bytes": r["peak_bytes"]}]
                    if impl not in row or "error" in row[impl] or r["tokens_per_s"] > row[impl]["tokens_per_s"]:
                        row[impl] = r
                    else:
                        row[impl]["runs"] = r["runs"]
            results.append(row)
    print(f"{'preset':8} {'impl':6} {'tokens/s':>10} {'tok/cpu-s':>10} {'peak MiB':>9} {'MFU':>6}")
    for row in results:
        for impl in ("hf", "fjord"):
            r = row[impl]
            if "error" in r:
                print(f"{row['preset']:8} {impl:6} error: {r['error']}")
                continue
            mfu = f"{100 * r['mfu']:.1f}%" if "mfu" in r else "-"
            print(f"{row['preset']:8} {impl:6} {r['tokens_per_s']:10.1f} {r.get('tokens_per_cpu_s', 0):10.1f} "
                  f"{r['peak_bytes'] / 2**20:9.0f} {mfu:>6}")
        if "error" not in row["hf"] and "error" not in row["fjord"]:
            f, h = row["fjord"], row["hf"]
            cpu_ratio = (f"{f['tokens_per_cpu_s'] / h['tokens_per_cpu_s']:9.2f}x"
                         if f.get("tokens_per_cpu_s") and h.get("tokens_per_cpu_s") else f"{'-':>10}")
            print(f"{row['preset']:8} ratio  {f['tokens_per_s'] / h['tokens_per_s']:9.2f}x {cpu_ratio} "
                  f"{f['peak_bytes'] / h['peak_bytes']:8.2f}x  (fjord / hf)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
