"""Writes the seed corpus of the safetensors fuzz target with the Python
safetensors library (run from the repository root with the fjord venv):

    ~/.cache/fjord/venv/bin/python tests/fuzz/make_safetensors_seeds.py
"""

import pathlib

import numpy as np
from safetensors.numpy import save

OUT = pathlib.Path(__file__).resolve().parent / "safetensors"


def main():
    OUT.mkdir(exist_ok=True)
    seeds = {
        "one_f32": ({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, None),
        "mixed": ({"a": np.ones((2,), np.int64), "b": np.zeros((3, 1), np.float16),
                   "c": np.array([True, False]), "d": np.arange(4, dtype=np.uint8)},
                  {"format": "pt", "note": "caf\u00e9"}),
        "empty_and_scalar": ({"e": np.zeros((0, 4), np.float32), "s": np.array(7, np.int32)}, None),
        "nothing": ({}, {"only": "metadata"}),
    }
    for name, (tensors, metadata) in seeds.items():
        (OUT / f"{name}.safetensors").write_bytes(save(tensors, metadata=metadata))


if __name__ == "__main__":
    main()
