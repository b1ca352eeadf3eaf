"""The Python SDK's module layout: each module imports only the modules below
it (no cycles, not even under TYPE_CHECKING but for the one named here), the
data classes of fjord.types know nothing of clients or connections, and the
public names of fjord stay where users import them from.

    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/python/test_sdk_layout.py
"""

import ast
import dataclasses
import pathlib
import subprocess
import sys

import pytest

import fjord

PACKAGE = pathlib.Path(fjord.__file__).resolve().parent

# Bottom to top: a module may import those before it, never one after it.
LAYERS = [
    "errors",      # FjordError and its subclasses
    "_json",       # JSON as the C++ codec writes it
    "_wire",       # the FJD01 codec
    "keys",        # CURVE keys and key files
    "config",      # where a client finds its settings
    "types",       # the inert data classes (Job, FileObject, ...)
    "reports",     # the evaluation report's data classes
    "_progress",   # the progress line of a job's events
    "connection",  # socket, CURVE, retries, heartbeats, call
    "_download",   # checked chunked downloads (adapters, reports)
    "events",      # a job's event stream
    "files",       # client.files
    "adapters",    # client.adapters
    "models",      # client.models
    "jobs",        # client.jobs, BoundJob, BoundJobPage
    "evaluations", # client.evaluations
    "client",      # fjord.Client
]
# Imports under TYPE_CHECKING (annotations only, never executed) that point
# up: JobFailedError carries the failed Job.
TYPE_ONLY_UP = {("errors", "types")}


def modules():
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def test_every_module_has_a_layer():
    assert sorted(LAYERS) == modules()


def imports_of(name):
    """{(imported module, under TYPE_CHECKING)} of fjord.<name>, from its source."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    type_only_nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only_nodes.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            targets = [node.module] if node.module else [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fjord."):
            targets = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("fjord.")]
        out.update((t.split(".")[0], id(node) in type_only_nodes) for t in targets)
    return out


@pytest.mark.parametrize("name", LAYERS)
def test_imports_point_down(name):
    here = LAYERS.index(name)
    for target, type_only in imports_of(name):
        assert target in LAYERS, f"fjord.{name} imports fjord.{target}, which has no layer"
        if LAYERS.index(target) < here:
            continue
        assert type_only and (name, target) in TYPE_ONLY_UP, (
            f"fjord.{name} imports fjord.{target}, which is above it" + (" (under TYPE_CHECKING)" if type_only else "")
        )


ISOLATED = """
import importlib, sys, types
package = types.ModuleType("fjord")
package.__path__ = [sys.argv[1]]
sys.modules["fjord"] = package  # without fjord/__init__.py, which imports everything
importlib.import_module("fjord." + sys.argv[2])
print(" ".join(sorted(m[len("fjord."):] for m in sys.modules if m.startswith("fjord."))))
"""


def loaded_by(name):
    out = subprocess.run([sys.executable, "-c", ISOLATED, str(PACKAGE), name], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize("name", LAYERS)
def test_each_module_imports_alone_and_loads_only_what_is_below(name):
    loaded = loaded_by(name)
    above = {m for m in loaded if LAYERS.index(m) > LAYERS.index(name)}
    assert not above, f"importing fjord.{name} alone loads fjord.{', fjord.'.join(sorted(above))}"


def test_types_know_no_client():
    assert loaded_by("types") == {"types", "errors"}
    assert loaded_by("reports") == {"reports", "errors"}
    source = (PACKAGE / "types.py").read_text()
    for word in ("client", "connection", "Connection", "zmq", "_wire"):
        assert f"import {word}" not in source and f".{word} import" not in source
    # No field of a data class holds a client (the old Job had one).
    for cls in (fjord.Job, fjord.JobPage, fjord.FileObject, fjord.Event, fjord.PingInfo):
        assert not [f.name for f in dataclasses.fields(cls) if "client" in f.name or f.name.startswith("_")]


def test_resources_do_not_import_each_other_or_the_client():
    for name in ("files", "adapters", "models", "events"):
        loaded = loaded_by(name)
        assert not loaded & ({"jobs", "client"} | ({"files", "adapters", "models", "events"} - {name}))
    assert "client" not in loaded_by("jobs")


def test_public_names_stay_where_users_import_them():
    import fjord.client
    import fjord.reports
    import fjord.types

    for name in ("Client", "EventStream", "Files", "Jobs", "Adapters", "Models", "Evaluations"):
        assert getattr(fjord.client, name) is getattr(fjord, name)
    for name in ("Job", "JobPage", "FileObject", "Event", "Checkpoint", "Hyperparameters", "LoraConfig",
                 "JobError", "StorageUsage", "AdapterFile", "Model", "PingInfo", "JOB_STATUSES",
                 "FINAL_STATUSES", "Candidate", "EvaluationSettings"):
        assert getattr(fjord.types, name) is getattr(fjord, name)
    for name in ("EvaluationReport", "DatasetReport", "CandidateResult", "Interval", "PairResult", "Rank",
                 "Sample", "JudgeResult", "JudgePair", "WinRate"):
        assert getattr(fjord.reports, name) is getattr(fjord, name)
    assert set(fjord.__all__) <= set(dir(fjord))
    assert issubclass(fjord.BoundJob, fjord.Job) and issubclass(fjord.BoundJobPage, fjord.JobPage)


def test_no_assert_in_library_code():
    for name in modules():
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        lines = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Assert)]
        assert not lines, f"fjord/{name}.py asserts on lines {lines}: raise an SDK error instead"
