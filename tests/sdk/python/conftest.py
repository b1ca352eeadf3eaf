"""Tests of the Python SDK (sdk/python) import it from the source tree, so they
test this checkout whatever version is installed in the venv."""

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "sdk" / "python"))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
