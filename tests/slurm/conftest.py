"""The Slurm tests' fixture: a real single-node cluster (slurm_cluster.py)."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from slurm_cluster import cluster  # noqa: E402,F401  (the fixture)
