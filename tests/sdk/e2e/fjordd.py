"""A real fjordd for end-to-end tests: a process on loopback tcp and ipc, CURVE
with freshly generated keys, its state, storage and logs in a temporary
directory, stopped (SIGTERM, then SIGKILL) at the end.

    with Fjordd(worker=FAKE_WORKER) as d:
        client = d.client()           # fjord.Client as tenant "acme"
        d.cli("jobs", "list")         # the fjord CLI, configured through a client config file

Programs come from $FJORD_BIN_DIR (default <repo>/bazel-bin): fjordd
(//daemon/server:fjordd), the fjord CLI (//sdk/cpp/cli:fjord), the workers
fjord-train (//lora/cli:fjord-train) or the daemon's scripted fake
(//daemon/worker:fake_worker), the demo model (//tools/demo:demo). $FJORD_TRAIN
overrides the fjord-train program.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

import fjord
from sdk_testenv import BIN_DIR, REPO

sys.path.insert(0, str(REPO / "tests" / "interop"))
from ports import free_port  # noqa: E402  (below the ephemeral range)

FJORDD = BIN_DIR / "daemon" / "server" / "fjordd"
FJORD_CLI = BIN_DIR / "sdk" / "cpp" / "cli" / "fjord"
FAKE_WORKER = BIN_DIR / "daemon" / "worker" / "fake_worker"
FJORD_TRAIN = pathlib.Path(os.environ.get("FJORD_TRAIN", BIN_DIR / "lora" / "cli" / "fjord-train"))
DEMO = BIN_DIR / "tools" / "demo" / "out"


def require(*paths) -> None:
    for p in paths:
        if not os.path.exists(p):
            raise FileNotFoundError(f"{p} not built: run `bazel build //daemon/server:fjordd //sdk/cpp/cli:fjord "
                                    "//daemon/worker:fake_worker //lora/cli:fjord-train //tools/demo:demo`")


def require_trainer() -> None:
    """fjord-train must be built; until //lora/cli is part of the checkout the
    tests that need it are skipped (saying so), after that they fail if it is
    missing."""
    import pytest

    if "FJORD_TRAIN" not in os.environ and not (REPO / "lora" / "cli" / "BUILD.bazel").exists():
        pytest.skip("fjord-train (//lora/cli) is not in this checkout yet")
    require(FJORD_TRAIN)




class Fjordd:
    def __init__(self, worker=FAKE_WORKER, models: Optional[dict] = None, heartbeat_interval_ms: int = 500,
                 cpu_slots: int = 1, extra_worker_args: Optional[list] = None, limits: Optional[dict] = None,
                 executor: Optional[dict] = None, worker_env: Optional[dict] = None,
                 scheduler: Optional[dict] = None):
        require(FJORDD, worker)
        self.dir = tempfile.mkdtemp(prefix="fjord-e2e-", dir="/tmp")  # short: worker ipc sockets live here
        for d in ("state", "storage", "keys", "models", "home"):
            os.makedirs(os.path.join(self.dir, d))
        k = os.path.join(self.dir, "keys")
        self.server_keys = fjord.write_key_files(os.path.join(k, "server"))
        self.acme = fjord.write_key_files(os.path.join(k, "acme"))
        self.other = fjord.write_key_files(os.path.join(k, "other"))
        self.stranger = fjord.write_key_files(os.path.join(k, "stranger"))  # not in the keys file
        with open(os.path.join(k, "clients.yaml"), "w") as f:
            f.write("clients:\n"
                    f"  - name: acme-ci\n    public_key: \"{self.acme.public_key}\"\n    tenant: acme\n"
                    f"  - name: other\n    public_key: \"{self.other.public_key}\"\n    tenant: other\n")
        os.chmod(os.path.join(k, "clients.yaml"), 0o600)
        if models is None:
            models = {}
            if os.path.exists(DEMO / "model" / "config.json"):
                models["demo"] = str(DEMO / "model")
            else:  # the fake worker never reads the model
                stand_in = os.path.join(self.dir, "models", "demo")
                os.makedirs(stand_in)
                with open(os.path.join(stand_in, "config.json"), "w") as f:
                    json.dump({"model_type": "llama"}, f)
                models["demo"] = stand_in
        self.models = models
        self.port = free_port()
        self.tcp = f"tcp://127.0.0.1:{self.port}"
        self.ipc = f"ipc://{self.dir}/fjordd.sock"
        self.endpoint = self.tcp
        self.log = os.path.join(self.dir, "fjordd.log")
        config = {
            "node_name": "e2e",
            "state_dir": os.path.join(self.dir, "state"),
            "storage_root": os.path.join(self.dir, "storage"),
            "listen": [self.tcp, self.ipc],
            "security": {"curve": True, "server_secret_key_file": os.path.join(k, "server.key"),
                         "keys_file": os.path.join(k, "clients.yaml")},
            "models": models,
            "worker": {"program": str(worker), "args": extra_worker_args or [], "env": worker_env or {}},
            "scheduler": {"gpus": [], "cpu_slots": cpu_slots, **(scheduler or {})},
            "limits": {"heartbeat_interval_ms": heartbeat_interval_ms, **(limits or {})},
            "metrics": {"listen": ""},
            "logging": {"level": "info", "file": self.log},
        }
        if executor:
            config["executor"] = executor
        self.config_path = os.path.join(self.dir, "fjordd.yaml")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)  # JSON is YAML
        # The client config file the CLI (and fjord.Client(config_file=...)) use.
        self.client_config = os.path.join(self.dir, "client.yaml")
        with open(self.client_config, "w") as f:
            f.write(f"endpoint: {self.endpoint}\nserver_public_key: keys/server.pub\nkeys: keys/acme.key\ntimeout_s: 10\n")
        self.proc: Optional[subprocess.Popen] = None
        try:
            self.start()
        except BaseException:
            self.close()  # never leave a daemon behind
            raise

    def start(self) -> None:
        out = open(os.path.join(self.dir, "fjordd.out"), "ab")
        self.proc = subprocess.Popen([str(FJORDD), "--config", self.config_path], stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL)
        out.close()
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fjordd exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with self.client(timeout=0.3, retries=0) as c:
                    c.ping()
                return
            except fjord.FjordError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fjordd did not answer within 30 s:\n{self.output()}")

    def output(self) -> str:
        text = ""
        for name in ("fjordd.out", "fjordd.log"):
            p = os.path.join(self.dir, name)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    text += f"--- {name}\n" + "".join(f.readlines()[-40:])
        return text

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        """kill -9: no shutdown at all (what a crash or a node's power loss leaves)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self, keys: Optional[fjord.KeyPair] = None, **kw) -> fjord.Client:
        keys = keys or self.acme
        kw.setdefault("timeout", 10)
        return fjord.Client(kw.pop("endpoint", self.endpoint), server_public_key=self.server_keys.public_key,
                            secret_key=keys.secret_key, config_file=os.devnull, **kw)

    def cli_env(self, **extra) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FJORD_")}
        env.update(HOME=os.path.join(self.dir, "home"), FJORD_CONFIG=self.client_config)
        env.update(extra)
        return env

    def cli(self, *args, env: Optional[dict] = None, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
        require(FJORD_CLI)
        return subprocess.run([str(FJORD_CLI), *map(str, args)], capture_output=True, text=True,
                              env=env or self.cli_env(), timeout=timeout, cwd=cwd)

    def worker_log(self, tenant: str, job_id: str) -> str:
        p = os.path.join(self.dir, "storage", tenant, "jobs", job_id, "worker.log")
        return open(p, errors="replace").read() if os.path.exists(p) else "(no worker log)"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Fjordd":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def fake_data(path, **script) -> str:
    """A JSONL training file whose first line scripts the fake worker (see
    daemon/worker/fake_worker.cc): steps, step_ms, checkpoint_every, mode..."""
    with open(path, "w") as f:
        f.write(json.dumps({"fake_worker": script}) + "\n")
        for i in range(3):
            f.write(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                             {"role": "assistant", "content": f"a{i}"}]}) + "\n")
    return str(path)
