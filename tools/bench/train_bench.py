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
    # ~30M parameters, the CPU setting.
    "cpu-30m": dict(hidden=512, intermediate=1376, layers=4, heads=8, kv_heads=8, vocab=32000,
                    seq=256, batch=8, rank=16, steps=6, warmup=2, device="cpu", dtype="float32"),
    # Llama-3.2-1B shapes.
    "gpu-1b": dict(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, vocab=128256,
                   seq=2048, batch=4, rank=16, steps=10, warmup=3, device="cuda", dtype="bfloat16"),
    # Llama-3.1-8B shapes.
    "gpu-8b": dict(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8, vocab=128256,
                   seq=2048, batch=1, rank=16, steps=8, warmup=3, device="cuda", dtype="bfloat16"),
}


def make_model(p, out_dir):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=p["vocab"], hidden_size=p["hidden"], intermediate_size=p["intermediate"],
                      num_hidden_layers=p["layers"], num_attention_heads=p["heads"],
                      num_key_value_heads=p["kv_heads"], max_position_embeddings=max(4096, p["seq"]),
                      tie_word_embeddings=p["vocab"] < 100000, rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device("meta" if p["device"] == "cuda" and p["hidden"] >= 4096 else "cpu"):
        model = LlamaForCausalLM(cfg)
    if next(model.parameters()).is_meta:
        model = model.to_empty(device="cpu")
        for prm in model.parameters():
            torch.nn.init.normal_(prm, std=0.02)
    model = model.to(getattr(torch, p["dtype"]))
    model.save_pretrained(out_dir, safe_serialization=True)
    n = sum(x.numel() for x in model.parameters())
    return n


def flops_per_token(p, n_params):
    # 4·N (forward 2N + backward input-grads 2N; frozen base needs no weight
    # grads) + 3·attention (fwd + 2x bwd) + 6·N_lora.
    n_emb = p["vocab"] * p["hidden"]
    n_dense = n_params - n_emb  # embedding lookup is not a matmul (the lm_head is, tied or not)
    n_dense += p["vocab"] * p["hidden"]
    attn = 2 * 2 * p["layers"] * p["seq"] * p["hidden"] / 2  # causal: half of QKᵀ and PV
    hd = p["hidden"] // p["heads"]
    kv = p["kv_heads"] * hd
    r = p["rank"]
    lora_per_layer = r * ((p["hidden"] + p["hidden"]) + (p["hidden"] + kv) * 2 + (p["hidden"] + p["hidden"])
                          + 2 * (p["hidden"] + p["intermediate"]) + (p["intermediate"] + p["hidden"]))
    n_lora = lora_per_layer * p["layers"]
    return 4 * n_dense + 3 * attn + 6 * n_lora, n_lora


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
    opt = torch.optim.AdamW([x for x in model.parameters() if x.requires_grad], lr=1e-4)
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
    cmd = [exe, "--model", model_dir, "--batch", str(p["batch"]), "--seq", str(p["seq"]),
           "--rank", str(p["rank"]), "--steps", str(p["steps"]), "--warmup", str(p["warmup"]),
           "--device", p["device"], "--dtype", p["dtype"]]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", choices=sorted(PRESETS), help="repeatable")
    ap.add_argument("--impl", choices=["hf", "fjord"], help=argparse.SUPPRESS)  # child mode
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
        res = run_hf(p, args.model_dir) if args.impl == "hf" else run_fjord(p, args.model_dir, bin_dir, args.threads)
        print(json.dumps(res))
        return

    results = []
    for name in args.preset or ["cpu-30m"]:
        p = PRESETS[name]
        with tempfile.TemporaryDirectory() as tmp:
            n_params = make_model(p, tmp)
            fpt, n_lora = flops_per_token(p, n_params)
            row = {"preset": name, "params": n_params, "lora_params": n_lora, **p}
            for _ in range(max(1, args.repeat)):
                for impl in ("hf", "fjord"):
                    cmd = [sys.executable, __file__, "--impl", impl, "--preset", name, "--model-dir", tmp,
                           "--threads", str(args.threads)]
                    out = subprocess.run(cmd, capture_output=True, text=True)
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
