"""Paths the SDK tests share: the repository and the Bazel outputs
($FJORD_BIN_DIR, default <repo>/bazel-bin)."""

import os
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
