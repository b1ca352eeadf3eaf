"""Runs the examples of the customer docs against a real fjordd, so the docs
say what the code does.

In docs/user-guide.md and docs/python-sdk.md, fenced blocks whose info string
carries "test" are run, in document order, in one directory per document:

    ```sh test [exit=N]     bash -euo pipefail; must exit 0 (or N)
    ```python test          exec'd in one namespace per document (like a notebook)
    ```LANG file=NAME       written to NAME before the next blocks run

Other blocks are shown, not run. The directory holds what the docs say is
there: train.jsonl and valid.jsonl (the demo data) and demo-model/ (the demo
base model); FJORD_CONFIG points at a client config for a fresh fjordd
(CURVE on loopback, tenant "acme", model "demo", fjord-train as the worker),
and `fjord` is on PATH.

    bazel build //daemon/server:fjordd //sdk/cpp/cli:fjord //lora/cli:fjord-train //tools/demo:demo
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/docs
"""

import contextlib
import io
import os
import pathlib
import re
import shutil
import subprocess
import traceback

import pytest

from sdk_testenv import REPO
from fjordd import DEMO, FJORD_CLI, FJORD_TRAIN, Fjordd, require, require_trainer

DOCS = ["docs/user-guide.md", "docs/python-sdk.md"]
FENCE = re.compile(r"^```(\S*)(.*)$")


def blocks(path):
    """[(line, lang, attrs, text)] of every fenced block."""
    out, lines = [], pathlib.Path(path).read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and m.group(1):
            start, lang = i + 1, m.group(1)
            words = m.group(2).split()
            attrs = {"test": "test" in words}
            for w in words:
                if "=" in w:
                    k, v = w.split("=", 1)
                    attrs[k] = v
            body = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            out.append((start, lang, attrs, "\n".join(body) + "\n"))
        i += 1
    return out


def test_docs_have_runnable_examples():
    for doc in DOCS:
        bs = blocks(REPO / doc)
        runnable = [b for b in bs if b[2]["test"]]
        assert len(runnable) >= 5, f"{doc}: only {len(runnable)} runnable examples"
        for line, lang, attrs, _ in bs:
            assert not (attrs["test"] and lang not in ("sh", "python")), f"{doc}:{line}: cannot run {lang}"
            assert "file" not in attrs or not attrs["test"], f"{doc}:{line}: a file block is not run"


@pytest.fixture(scope="module")
def daemon():
    require_trainer()
    require(FJORD_CLI, DEMO / "model" / "config.json", DEMO / "data" / "train.jsonl")
    with Fjordd(worker=FJORD_TRAIN, models={"demo": str(DEMO / "model")}) as d:
        yield d


@pytest.mark.parametrize("doc", DOCS)
def test_doc_examples_run(doc, daemon, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(DEMO / "data" / "train.jsonl", work / "train.jsonl")
    shutil.copy(DEMO / "data" / "valid.jsonl", work / "valid.jsonl")
    os.symlink(DEMO / "model", work / "demo-model")
    env = daemon.cli_env(PATH=f"{FJORD_CLI.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    namespace = {"__name__": "__doc__"}
    ran = 0
    for line, lang, attrs, text in blocks(REPO / doc):
        where = f"{doc}:{line}"
        if "file" in attrs:
            (work / attrs["file"]).write_text(text)
            continue
        if not attrs["test"]:
            continue
        ran += 1
        if lang == "sh":
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=work, env=env, capture_output=True,
                               text=True, timeout=300)
            want = int(attrs.get("exit", 0))
            assert r.returncode == want, (f"{where}: exit {r.returncode}, expected {want}\n--- stdout\n{r.stdout}"
                                          f"\n--- stderr\n{r.stderr}\n{daemon.output()}")
            print(f"{where}: ok\n{r.stdout}{r.stderr}")
        else:
            saved_env, saved_cwd = dict(os.environ), os.getcwd()
            os.environ.clear()
            os.environ.update(env)
            os.chdir(work)
            out = io.StringIO()
            try:
                with contextlib.redirect_stdout(out):
                    exec(compile(text, where, "exec"), namespace)
            except Exception:  # noqa: BLE001 - reported with the doc's line
                pytest.fail(f"{where}: the example raised\n{traceback.format_exc()}\n--- its output\n{out.getvalue()}"
                            f"\n{daemon.output()}")
            finally:
                os.chdir(saved_cwd)
                os.environ.clear()
                os.environ.update(saved_env)
            print(f"{where}: ok\n{out.getvalue()}")
    assert ran >= 5
