"""Data-parallel fjord-train on CPU (Gloo over loopback), as real processes:
N ranks train exactly as one rank with N times the gradient accumulation
(same per-step losses, evaluation and final adapter, with dropout on, packed
and unpacked); a run stopped on 2 ranks resumes on 1 or 3 and ends where the
uninterrupted run ends (elastic resume); a rank killed under the launcher or
under an external launcher ends the others within the timeout with a clear
error; SIGTERM stops every rank after the same step; bad launcher variables
are refused.

    bazel build //lora/cli:fjord-train
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/interop/test_fjord_train_distributed.py
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from ports import free_port
from test_fjord_train import TRAIN, make_job

LOSS_TOL = 1e-5     # relative, per step: the same float sums in another order
WEIGHT_TOL = 1e-5   # absolute, on the final adapter's weights (|w| <= ~0.15): the ranks sum
                    # gradients in another order; Adam magnifies the last bits (2.7e-6 seen)


def events(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run(config, *args, nproc=None, env=None, timeout=300, check_rc=0):
    cmd = [str(TRAIN), "--config", str(config), "--progress", "none", *args]
    if nproc is not None:
        cmd += ["--nproc-per-node", str(nproc)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    if check_rc is not None:
        assert r.returncode == check_rc, f"rc {r.returncode}\n{r.stderr[-3000:]}"
    return r


def job(tmp, name, **overrides):
    d = tmp / name
    d.mkdir()
    defaults = dict(training__max_steps=4, training__micro_batch_size=1, data__packing=True,
                    lora__dropout=0.1)
    defaults.update(overrides)
    config, _ = make_job(d, "llama", **defaults)
    return config, d


def adapter(d):
    return load_file(d / "out" / "adapter" / "adapter_model.safetensors")


def assert_same_run(a_dir, b_dir):
    ea, eb = events(a_dir / "events.jsonl"), events(b_dir / "events.jsonl")
    sa = [e for e in ea if e["type"] == "step"]
    sb = [e for e in eb if e["type"] == "step"]
    assert [e["step"] for e in sa] == [e["step"] for e in sb] and sa
    for x, y in zip(sa, sb):
        assert y["loss"] == pytest.approx(x["loss"], rel=LOSS_TOL), (x, y)
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-4), (x, y)
    va = [e["eval_loss"] for e in ea if e["type"] == "eval"]
    vb = [e["eval_loss"] for e in eb if e["type"] == "eval"]
    assert len(va) == len(vb)
    for x, y in zip(va, vb):
        assert y == pytest.approx(x, rel=LOSS_TOL)
    wa, wb = adapter(a_dir), adapter(b_dir)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=WEIGHT_TOL, rtol=0), k


@pytest.mark.parametrize("packing", [True, False])
def test_ranks_train_as_one_rank_with_accumulation(tmp_path, packing):
    # The global batch is 6 micro-batches in every run: 1 rank x 6, 2 x 3, 3 x 2.
    runs = {}
    for ranks in (1, 2, 3):
        config, d = job(tmp_path, f"r{ranks}", data__packing=packing,
                        training__gradient_accumulation_steps=6 // ranks,
                        data__validation=str(tmp_path / f"r{ranks}" / "train.jsonl"),
                        eval__every_steps=2)
        r = run(config, "--events", str(d / "events.jsonl"), nproc=ranks)
        runs[ranks] = d
        start = [e for e in events(d / "events.jsonl") if e["type"] == "start"][0]
        if ranks > 1:
            assert f"{ranks} data-parallel ranks (gloo)" in start["message"]
        assert "PEFT adapter" in r.stderr
    assert_same_run(runs[1], runs[2])
    assert_same_run(runs[1], runs[3])
    # Only rank 0 writes: one events file, one adapter, checkpoints once.
    assert len([e for e in events(runs[2] / "events.jsonl") if e["type"] == "done"]) == 1


def test_ranks_without_dropout_equal_the_single_process_trainer(tmp_path):
    single, d1 = job(tmp_path, "single", lora__dropout=0.0, training__gradient_accumulation_steps=2)
    run(single, "--events", str(d1 / "events.jsonl"))
    two, d2 = job(tmp_path, "two", lora__dropout=0.0, training__gradient_accumulation_steps=1)
    run(two, "--events", str(d2 / "events.jsonl"), nproc=2)
    assert_same_run(d1, d2)


def test_gradient_buckets_start_during_backward_and_change_no_number(tmp_path):
    # One rank with accumulation 4 against 2 ranks whose gradients are summed
    # in buckets of 2 kB started from the hooks during backward (with
    # and without gradient checkpointing, whose recomputation must not fire a
    # parameter's hook twice) and in one bucket after backward.
    # (A world of one: its dropout is seeded per micro-batch, as the ranks'.)
    one, d1 = job(tmp_path, "one", training__gradient_accumulation_steps=4)
    run(one, "--events", str(d1 / "events.jsonl"), nproc=1)
    reports = {}
    for name, bucket_mb, ckpt in (("flat", "0", False), ("buckets", "0.002", False),
                                  ("buckets_ckpt", "0.002", True)):
        config, d = job(tmp_path, name, training__gradient_accumulation_steps=2,
                        training__gradient_checkpointing=ckpt)
        r = run(config, "--events", str(d / "events.jsonl"), "--bucket-mb", bucket_mb, nproc=2)
        assert_same_run(d1, d)
        m = re.search(r"gradient all-reduce: (\d+) bucket\(s\), (\d+) bytes per step; "
                      r"(\d+) of (\d+) started during backward", r.stderr)
        assert m, r.stderr[-2000:]
        reports[name] = [int(x) for x in m.groups()]
    buckets, nbytes, started, total = reports["buckets"]
    assert reports["flat"][0] == 1 and buckets > 5
    assert nbytes == reports["flat"][1] and nbytes <= 0.002 * 2**20 * buckets
    # 4 steps; every bucket of every step started from a hook, none left to Finish.
    assert started == total == 4 * buckets
    assert reports["buckets_ckpt"] == reports["buckets"]


def test_a_bad_bucket_size_is_refused(tmp_path):
    config, _ = job(tmp_path, "bad")
    r = run(config, "--bucket-mb", "-1", check_rc=2)
    assert "--bucket-mb: '-1' is not a number of MB >= 0" in r.stderr


def base_mb(d):
    start = [e for e in events(d / "events.jsonl") if e["type"] == "start"][0]
    m = re.search(r"base sharded over the ranks \(([\d.]+) MB on each\)", start["message"])
    return float(m.group(1)) if m else None


@pytest.mark.parametrize("ranks", [2, 3])
def test_a_sharded_base_trains_as_the_whole_base(tmp_path, ranks):
    # The same job on the same ranks with the base whole on every rank and
    # sharded across them (with evaluation and gradient checkpointing): the
    # same losses and adapter; each rank holds ~1/N of the base.
    runs = {}
    for name, shard in (("whole", False), ("sharded", True)):
        config, d = job(tmp_path, name, training__gradient_accumulation_steps=1,
                        training__gradient_checkpointing=True, model__shard_base=shard,
                        data__validation=str(tmp_path / name / "train.jsonl"), eval__every_steps=2)
        run(config, "--events", str(d / "events.jsonl"), nproc=ranks)
        runs[name] = d
    assert_same_run(runs["whole"], runs["sharded"])
    assert base_mb(runs["whole"]) is None
    each = base_mb(runs["sharded"])
    # The tiny model: 2 layers of 7 linear weights, the embeddings (tied with
    # lm_head) and norms, in fp32.
    whole = json.loads((tmp_path / "whole" / "model" / "config.json").read_text())
    h, i, v, layers = whole["hidden_size"], whole["intermediate_size"], whole["vocab_size"], 2
    kv = h // whole["num_attention_heads"] * whole["num_key_value_heads"]
    total = 4 * (layers * (2 * h * h + 2 * h * kv + 3 * h * i) + v * h + (2 * layers + 1) * h)
    assert total / ranks < each * 1e6 < total / ranks * 1.1 + 4 * (2 * layers + 1) * h


def test_checkpointing_a_sharded_base_gathers_no_more_than_without(tmp_path):
    # Without gradient checkpointing a step gathers each decoder weight for
    # forward and again for backward (prefetched while the layer before runs).
    # With it, a layer's recompute gathers its weights and its backward uses
    # them: the same bytes, plus layer 0's q, k and v, which the recompute
    # gathers though their backward never runs (their input needs no
    # gradient). The same losses and adapter either way.
    runs, gathered = {}, {}
    for name, ckpt in (("plain", False), ("checkpointed", True)):
        config, d = job(tmp_path, name, training__gradient_accumulation_steps=1,
                        training__gradient_checkpointing=ckpt, model__shard_base=True)
        run(config, "--events", str(d / "events.jsonl"), nproc=2)
        runs[name] = d
        gathered[name] = {e["base_gather_bytes"] for e in events(d / "events.jsonl")
                          if e["type"] == "step"}
    assert_same_run(runs["plain"], runs["checkpointed"])
    cfg = json.loads((tmp_path / "plain" / "model" / "config.json").read_text())
    h = cfg["hidden_size"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    assert h % 2 == 0 and kv % 2 == 0  # no padding rows on 2 ranks
    qkv = 4 * (h * h + 2 * kv * h) // 2  # fp32, the other rank's half
    (plain,) = gathered["plain"]  # the same every step
    assert plain > 0
    assert gathered["checkpointed"] == {plain + qkv}


def test_a_sharded_base_asks_the_held_out_questions_as_the_whole_base(tmp_path):
    # Generation on a sharded base: every rank asks every question in step
    # (rank 0's tokens decide), and the accuracies equal the whole base's.
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"prompt": f"What color is the {t}?", "answer": c}) + "\n"
                               for t, c in (("sky", "blue"), ("leaf", "green"), ("snow", "white"))))
    accuracy = {}
    for name, shard in (("whole", False), ("sharded", True)):
        config, d = job(tmp_path, name, model__shard_base=shard, eval__heldout=str(heldout),
                        eval__max_new_tokens=6)
        run(config, "--events", str(d / "events.jsonl"), nproc=2, timeout=120)
        ev = events(d / "events.jsonl")
        accuracy[name] = ([e["heldout_accuracy"] for e in ev if e["type"] == "eval"][0],
                          [e["heldout_accuracy"] for e in ev if e["type"] == "done"][0])
    assert accuracy["whole"] == accuracy["sharded"] and accuracy["whole"][1] >= 0


# A sharded base is re-sliced for the new number of ranks; the adapter and
# the data order continue as without sharding.
@pytest.mark.parametrize("resume_ranks, shard", [(1, False), (3, False), (3, True)])
def test_a_run_stopped_on_two_ranks_resumes_on_another_number(tmp_path, resume_ranks, shard):
    full, d_full = job(tmp_path, "full", training__max_steps=6, training__gradient_accumulation_steps=2,
                       model__shard_base=shard)
    run(full, "--events", str(d_full / "events.jsonl"), nproc=2)
    cut, d_cut = job(tmp_path, "cut", training__max_steps=6, training__gradient_accumulation_steps=2,
                     model__shard_base=shard)
    r = run(cut, "--events", str(d_cut / "events.jsonl"), "--stop-after-steps", "3", nproc=2,
            check_rc=75)
    assert "stopped at step 3" in r.stderr
    state = json.loads((d_cut / "out" / "checkpoints" / "step-00000003" / "trainer_state.json").read_text())
    assert state["micro_batches_per_step"] == 4 and state["world_size"] == 2
    run(cut, "--events", str(d_cut / "events.jsonl"), nproc=resume_ranks)
    steps = [e for e in events(d_cut / "events.jsonl") if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5, 6]  # nothing repeated, nothing skipped
    full_steps = [e for e in events(d_full / "events.jsonl") if e["type"] == "step"]
    for x, y in zip(full_steps, steps):
        assert y["loss"] == pytest.approx(x["loss"], rel=LOSS_TOL)
    wa, wb = adapter(d_full), adapter(d_cut)
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=WEIGHT_TOL, rtol=0), k


def launch(config, ev, *args):
    """fjord-train in the background, events to `ev`."""
    return subprocess.Popen([str(TRAIN), "--config", str(config), "--progress", "none", "--events", str(ev), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def wait_for_step(events_path, step, proc, limit=120):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if events_path.exists() and any(e["type"] == "step" and e["step"] >= step for e in events(events_path)):
            return
        time.sleep(0.1)
    raise AssertionError(f"no step {step} within {limit} s")


def test_a_rank_killed_under_the_launcher_stops_the_group(tmp_path):
    config, d = job(tmp_path, "kill", training__max_steps=100000)
    ev = d / "events.jsonl"
    p = launch(config, ev, "--nproc-per-node", "2", "--dist-timeout", "20")
    try:
        wait_for_step(ev, 2, p)
        ranks = children(p.pid)
        assert len(ranks) == 2
        # Which child is rank 1: its environment says.
        rank1 = [c for c in ranks if b"RANK=1\0" in pathlib.Path(f"/proc/{c}/environ").read_bytes()][0]
        t0 = time.monotonic()
        os.kill(rank1, signal.SIGKILL)
        _, err = p.communicate(timeout=60)
        assert time.monotonic() - t0 < 45
        assert p.returncode == 128 + signal.SIGKILL, err[-3000:]
        assert "rank 1 was killed by signal 9" in err
        assert all(not pathlib.Path(f"/proc/{c}").exists() for c in ranks)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_rank_killed_under_an_external_launcher_fails_the_other_with_a_clear_error(tmp_path):
    config, d = job(tmp_path, "ext", training__max_steps=100000)
    ev = d / "events.jsonl"
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port}
        procs.append(subprocess.Popen([str(TRAIN), "--config", str(config), "--progress", "none",
                                       "--events", str(ev), "--dist-timeout", "15"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    try:
        wait_for_step(ev, 2, procs[0])
        t0 = time.monotonic()
        procs[1].kill()
        procs[1].wait()
        _, err = procs[0].communicate(timeout=60)
        assert time.monotonic() - t0 < 40
        assert procs[0].returncode == 3, err[-3000:]
        assert "rank 0 of 2:" in err and "another rank has stopped" in err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_sigterm_to_the_launcher_stops_every_rank_after_the_same_step(tmp_path):
    config, d = job(tmp_path, "term", training__max_steps=100000, checkpoint__every_steps=0)
    ev = d / "events.jsonl"
    p = launch(config, ev, "--nproc-per-node", "2")
    try:
        wait_for_step(ev, 1, p)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
        assert p.returncode == 75, err[-3000:]
        cps = [e for e in events(ev) if e["type"] == "checkpoint"]
        assert len(cps) == 1  # rank 0 wrote the one checkpoint
        assert pathlib.Path(cps[0]["message"]).is_dir()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("env,message", [
    ({"RANK": "5", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
     "RANK=5 is not below WORLD_SIZE=2"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "1"}, "MASTER_ADDR is not set"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "7"}, "SLURM_JOB_NODELIST is not set"),
])
def test_bad_launcher_variables_are_refused(tmp_path, env, message):
    config, _ = job(tmp_path, "bad")
    r = run(config, env=env, check_rc=2)
    assert message in r.stderr


def test_torchrun_launches_fjord_train_ranks(tmp_path):
    # PyTorch's own launcher, as users run it: torchrun --no-python.
    config, d = job(tmp_path, "torchrun", training__gradient_accumulation_steps=1, training__max_steps=3)
    ev = d / "events.jsonl"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--no-python", "--standalone", "--nproc-per-node", "2",
                        str(TRAIN), "--config", str(config), "--progress", "none", "--events", str(ev)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    start = [e for e in events(ev) if e["type"] == "start"][0]
    assert "2 data-parallel ranks (gloo)" in start["message"]
    assert [e["step"] for e in events(ev) if e["type"] == "step"] == [1, 2, 3]
    assert (d / "out" / "adapter" / "adapter_model.safetensors").exists()


def running(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_launcher_killed_with_sigkill_leaves_no_rank_behind(tmp_path):
    config, d = job(tmp_path, "orphans", training__max_steps=100000)
    ev = d / "events.jsonl"
    p = launch(config, ev, "--nproc-per-node", "2")
    try:
        wait_for_step(ev, 1, p)
        ranks = children(p.pid)
        assert len(ranks) == 2
        p.kill()
        p.wait()
        # Dead ranks are re-parented and reaped by init; none may still run.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(running(c) for c in ranks):
            time.sleep(0.05)
        assert not [c for c in ranks if running(c)]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
