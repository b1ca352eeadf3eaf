"""Tests of the SDK: the Python package is imported from the source tree
(sdk/python), so they test this checkout whatever version the venv has;
fake_daemon (a scripted FJD01 peer) lives in tests/sdk/python, fjordd (a real
daemon process) in tests/sdk/e2e."""

import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "sdk" / "python"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "python"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "e2e"))  # fjordd.py: a real daemon

BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
