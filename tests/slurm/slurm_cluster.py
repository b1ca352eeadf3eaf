"""A real single-node Slurm cluster for the tests in this directory (conftest.py makes it their fixture)
(Debian 12's Slurm 22.05 and munge, as root, on this machine): munged,
slurmctld and slurmd with their own config, ports, state and socket in a
temporary directory; every daemon is stopped by its PID at the end."""

import contextlib
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

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "interop"))
from ports import free_port  # noqa: E402

NEEDED = ["munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "scontrol", "squeue", "scancel",
          "setpriv"]


def slurm_missing():
    """Why a real Slurm cluster cannot be started here ("" when it can)."""
    if os.geteuid() != 0:
        return "needs root"
    gone = [p for p in NEEDED if shutil.which(p) is None and not os.path.exists(f"/usr/sbin/{p}")]
    if gone:
        return "needs Debian's slurmctld, slurmd, slurm-client and munge (tools/bootstrap.sh installs them): " \
               f"missing {', '.join(gone)}"
    return ""


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


@pytest.fixture(scope="module")
def cluster():
    """The cluster of start_cluster for one test module."""
    with start_cluster() as c:
        yield c


@contextlib.contextmanager
def start_cluster():
    """munged + slurmctld + slurmd on this host; yields the environment for
    the client commands (SLURM_CONF) and the cluster's directory."""
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


