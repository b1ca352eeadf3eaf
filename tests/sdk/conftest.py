"""Tests of the SDK. The Python package is imported from the source tree
(sdk/python), so they test this checkout whatever version the venv has;
helpers: sdk_testenv (paths), python/fake_daemon.py (a scripted FJD01 peer),
e2e/fjordd.py (a real daemon process)."""

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
for p in (HERE.parents[1] / "sdk" / "python", HERE, HERE / "python", HERE / "e2e"):
    sys.path.insert(0, str(p))
