"""A real single-node Slurm cluster (Debian 12's Slurm 22.05 and munge, as
root, on this machine): fjord-train submitted with configs/slurm/fjord-train.sbatch
(sbatch, then srun with 2 tasks) trains 2 data-parallel ranks from Slurm's
variables, and its adapter equals the one `fjord-train --nproc-per-node 2`
trains locally. The cluster (munged, slurmctld, slurmd) lives in a temporary
directory with its own config, ports and socket, and every daemon is stopped
by its PID at the end.

    bazel build //lora/cli:fjord-train
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/slurm
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "interop"))
from ports import free_port  # noqa: E402
from test_fjord_train import TRAIN, make_job  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
SBATCH_SCRIPT = REPO / "configs" / "slurm" / "fjord-train.sbatch"
NEEDED = ["munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "scontrol", "setpriv"]

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(p) is None and not os.path.exists(f"/usr/sbin/{p}") for p in NEEDED),
    reason="needs root and Debian's slurmctld, slurmd, slurm-client and munge (tools/bootstrap.sh installs them)")


def stop(procs):
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in reversed(procs):
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
def cluster(tmp_path):
    """munged + slurmctld + slurmd on this host; yields the environment for the client commands."""
    # Outside pytest's 0700 tree: munged runs as user munge and must reach it.
    d = pathlib.Path(tempfile.mkdtemp(prefix="fjord-slurm-"))
    for sub in ("munge", "state", "spool", "log"):
        (d / sub).mkdir(parents=True)
    host = socket.gethostname()
    shutil.copy("/etc/munge/munge.key", d / "munge" / "munge.key")
    shutil.chown(d / "munge", "munge", "munge")
    shutil.chown(d / "munge" / "munge.key", "munge", "munge")
    os.chmod(d / "munge", 0o711)  # munged: "execute permissions for all required" on the socket dir
    os.chmod(d / "munge" / "munge.key", 0o400)
    os.chmod(d, 0o755)
    sock = d / "munge" / "munge.socket"
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=fjordtest
SlurmctldHost={host}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'log' / 'slurmctld.log'}
SlurmdLogFile={d / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
SlurmdTimeout=30
{node} State=UNKNOWN
PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs = []
    try:
        procs.append(subprocess.Popen(
            ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups", "/usr/sbin/munged", "--foreground",
             f"--socket={sock}", f"--key-file={d / 'munge' / 'munge.key'}",
             f"--pid-file={d / 'munge' / 'munged.pid'}", f"--log-file={d / 'munge' / 'munged.log'}",
             f"--seed-file={d / 'munge' / 'munged.seed'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert procs[0].poll() is None, procs[0].communicate()[1]
            assert time.monotonic() < deadline, "munged did not start"
            time.sleep(0.05)
        procs.append(subprocess.Popen(["slurmctld", "-D", "-i", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        state = ""
        while time.monotonic() < deadline:
            for p in procs:
                assert p.poll() is None, (d / "log" / "slurmctld.log").read_text(errors="replace")[-3000:] + \
                    (d / "log" / "slurmd.log").read_text(errors="replace")[-3000:] if (d / "log").exists() else ""
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            state = r.stdout.strip()
            if state == "idle":
                break
            time.sleep(0.2)
        assert state == "idle", f"node state {state!r}"
        yield env, d
    finally:
        stop(procs)
        shutil.rmtree(d, ignore_errors=True)


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
