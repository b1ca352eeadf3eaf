"""Every config under configs/ runs with the command written at its top.

Each file's header comment names the command that runs it. The test takes
that command as written (continuation lines joined), points the paths it
sets (the base model, the data, the output directory) at the demo model and
data (//tools/demo), and runs it:

- configs/quickstart.yaml names the demo itself: it trains (a few steps) and
  writes a PEFT adapter;
- the configs for real models (Llama 3.1 8B, Qwen2.5 1.5B) cannot load those
  models here: their command runs as `fjord-train validate` (fjord-train's
  own parser and validator over the whole config and the data), which
  checks every flag and field of the command and the file; the chat
  template the config names belongs to its model, so with the demo's
  tokenizer it is `auto`;
- configs/fjordd.yaml runs as `fjordd --config ... --check-config`: the file
  parses, and the check reports what this machine lacks (its key files and
  directories), not a problem with the file.

    bazel build //lora/cli:fjord-train //daemon/server:fjordd //tools/demo
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/docs/test_configs.py
"""

import os
import pathlib
import shlex
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
DEMO = BIN_DIR / "tools" / "demo" / "out"
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def header_command(path):
    """The first command in the file's header comment, as an argv."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    for i, line in enumerate(lines):
        if line.startswith(("bazel-bin/", "fjordd ", "fjord-train ")):
            command = line
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + " " + lines[i]
            return shlex.split(command)
    raise AssertionError(f"{path.name}: no command in its header comment")


def test_every_config_names_its_command():
    assert CONFIGS, "no configs"
    for path in CONFIGS:
        argv = header_command(path)
        assert "--config" in argv, f"{path.name}: {argv}"
        assert argv[argv.index("--config") + 1].endswith(path.name), f"{path.name}: {argv}"


def demo_argv(argv, output_dir):
    """argv with bazel-bin/ at FJORD_BIN_DIR and the paths it sets at the demo."""
    demo_paths = {
        "model.path": DEMO / "model",
        "data.train": DEMO / "data" / "train.jsonl",
        "data.validation": DEMO / "data" / "valid.jsonl",
        "output.dir": output_dir,
    }
    out = []
    for arg in argv:
        if arg.startswith("bazel-bin/"):
            arg = str(BIN_DIR / arg[len("bazel-bin/"):])
        elif arg.startswith("configs/"):
            arg = str(REPO / arg)
        key = arg.split("=", 1)[0]
        if key in demo_paths:
            arg = f"{key}={demo_paths[key]}"
        out.append(arg)
    return out


def need(path):
    if not path.exists():
        pytest.skip(f"{path} is not built (bazel build //lora/cli:fjord-train //daemon/server:fjordd //tools/demo)")


TRAIN_CONFIGS = [p for p in CONFIGS if p.name != "fjordd.yaml"]


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=[p.name for p in TRAIN_CONFIGS])
def test_fjord_train_configs_run_with_their_command(path, tmp_path):
    need(BIN_DIR / "lora" / "cli" / "fjord-train")
    need(DEMO / "model")
    argv = demo_argv(header_command(path), tmp_path / "out")
    assert pathlib.Path(argv[0]).name == "fjord-train", argv
    names_the_demo = "tools/demo" in path.read_text(encoding="utf-8")
    if names_the_demo:
        # The config's own paths are relative to the repository (bazel-bin/...).
        argv += ["--set", f"output.dir={tmp_path / 'out'}", "--set", "training.max_steps=3",
                 "--set", "training.threads=1"]
        r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert (tmp_path / "out" / "adapter" / "adapter_config.json").exists()
        assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").exists()
    else:
        argv.insert(1, "validate")
        argv += ["--set", "data.chat_template=auto"]
        r = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{' '.join(argv)}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


def test_fjordd_config_runs_with_its_command():
    fjordd = BIN_DIR / "daemon" / "server" / "fjordd"
    need(fjordd)
    path = REPO / "configs" / "fjordd.yaml"
    argv = header_command(path)
    assert argv[0] == "fjordd" and "--check-config" in argv, argv
    argv = [str(fjordd)] + [str(path) if a.endswith("fjordd.yaml") else a for a in argv[1:]]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    # The file parses; what is missing is this machine's (keys, directories).
    assert r.returncode == 2, r.stderr
    assert "problems found" in r.stderr, r.stderr
    assert "/etc/fjordd/server.key" in r.stderr, r.stderr
