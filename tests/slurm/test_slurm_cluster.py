"""A real single-node Slurm cluster (Debian 12's Slurm 22.05 and munge, as
root, on this machine): fjord-train submitted with configs/slurm/fjord-train.sbatch
(sbatch, then srun with 2 tasks) trains 2 data-parallel ranks from Slurm's
variables, and its adapter equals the one `fjord-train --nproc-per-node 2`
trains locally. The cluster is conftest.py's (munged, slurmctld, slurmd in a temporary
directory, stopped by their PIDs at the end).

    bazel build //lora/cli:fjord-train
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/slurm
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "interop"))
from test_fjord_train import TRAIN, make_job  # noqa: E402
from slurm_cluster import slurm_missing  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
SBATCH_SCRIPT = REPO / "configs" / "slurm" / "fjord-train.sbatch"

pytestmark = pytest.mark.skipif(bool(slurm_missing()), reason=slurm_missing() or "-")


def test_an_sbatch_job_of_two_tasks_trains_as_two_local_ranks(tmp_path, cluster):
    env, d = cluster
    local_dir = tmp_path / "local"
    local_dir.mkdir()
    local_cfg, _ = make_job(local_dir, "llama", training__max_steps=4, training__micro_batch_size=1)
    r = subprocess.run([str(TRAIN), "--config", str(local_cfg), "--progress", "none", "--nproc-per-node", "2"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]

    slurm_dir = tmp_path / "slurm_job"
    slurm_dir.mkdir()
    slurm_cfg, _ = make_job(slurm_dir, "llama", training__max_steps=4, training__micro_batch_size=1)
    out = slurm_dir / "slurm-%j.out"
    r = subprocess.run(["sbatch", "--wait", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
                        f"--output={out}", "--chdir", str(slurm_dir), str(SBATCH_SCRIPT), str(slurm_cfg),
                        "--events", str(slurm_dir / "events.jsonl")],
                       capture_output=True, text=True, timeout=300,
                       env={**env, "FJORD_TRAIN": str(TRAIN), "OMP_NUM_THREADS": "1"})
    logs = "\n".join(p.read_text(errors="replace") for p in slurm_dir.glob("slurm-*.out"))
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{logs[-3000:]}"
    events = [json.loads(line) for line in (slurm_dir / "events.jsonl").read_text().splitlines() if line]
    start = [e for e in events if e["type"] == "start"]
    assert len(start) == 1 and "2 data-parallel ranks (gloo)" in start[0]["message"], logs[-3000:]
    assert [e["type"] for e in events].count("done") == 1

    a = load_file(local_dir / "out" / "adapter" / "adapter_model.safetensors")
    b = load_file(slurm_dir / "out" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        # The same ranks, the same order of the sums: equal to the last bit.
        assert torch.equal(a[k], b[k]), k
