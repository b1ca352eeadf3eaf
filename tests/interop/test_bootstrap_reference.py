"""The bootstrap of runtime/eval/stats.h against a Python reimplementation
written from the header's definition ("The bootstrap, exactly"): the same
data, options and seed give the same mean and interval (to 1e-12 relative;
in practice bit for bit) and the same verdict. The C++ side is
runtime/eval/bootstrap_tool (JSON on stdin, JSON on stdout).

    bazel build --disk_cache=$HOME/.cache/fjord/bazel-disk //runtime/eval:bootstrap_tool
    FJORD_BIN_DIR=$PWD/bazel-bin ~/.cache/fjord/venv/bin/python -m pytest -q \
        tests/interop/test_bootstrap_reference.py
"""

import json
import math
import os
import pathlib
import subprocess

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
TOOL = BIN_DIR / "runtime" / "eval" / "bootstrap_tool"

pytestmark = pytest.mark.skipif(not TOOL.exists(), reason=f"{TOOL} missing: bazel build //runtime/eval:bootstrap_tool")

MASK = 0xFFFFFFFFFFFFFFFF


# --- the reference, step by step as stats.h states it ---------------------

class SplitMix64:
    """Step 1."""

    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def index(self, n):
        """Step 2: Lemire's multiply-and-reject, an index in [0, n)."""
        m = self.next() * n
        low = m & MASK
        if low < n:
            t = ((1 << 64) - n) % n
            while low < t:
                m = self.next() * n
                low = m & MASK
        return m >> 64


def percentile(s, q):
    """Step 5: numpy's linear percentile at quantile q of sorted s."""
    last = len(s) - 1
    h = float(last) * q
    j = math.floor(h)
    g = h - j
    lo = s[min(j, last)]
    hi = s[min(j + 1, last)]
    diff = hi - lo
    return hi - diff * (1.0 - g) if g >= 0.5 else lo + diff * g


def reference(a, b=None, iterations=2000, confidence=0.95, seed=0, higher_is_better=True):
    d = [x - y for x, y in zip(a, b)] if b is not None else [float(x) for x in a]
    n = len(d)
    total = 0.0
    for v in d:  # step 3: in index order
        total += v
    mean = total / n
    gen = SplitMix64(seed)
    means = []
    for _ in range(iterations):  # step 4
        s = 0.0
        for _ in range(n):
            s += d[gen.index(n)]
        means.append(s / n)
    means.sort()
    low = percentile(means, (1.0 - confidence) / 2.0)
    high = percentile(means, (1.0 + confidence) / 2.0)
    # The percentile rule is numpy's default: check the reference says so.
    np_low, np_high = np.percentile(np.array(means), [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2])
    assert math.isclose(low, np_low, rel_tol=1e-12, abs_tol=1e-15), (low, np_low)
    assert math.isclose(high, np_high, rel_tol=1e-12, abs_tol=1e-15), (high, np_high)
    out = {"n": n, "mean": mean, "low": low, "high": high}
    if b is not None:  # step 6
        a_ahead = low > 0 if higher_is_better else high < 0
        b_ahead = high < 0 if higher_is_better else low > 0
        out["verdict"] = "better" if a_ahead else "worse" if b_ahead else "tie"
    return out


def tool(a, b=None, **options):
    request = {"a": a, **options}
    if b is not None:
        request["b"] = b
    r = subprocess.run([str(TOOL)], input=json.dumps(request), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def same(got, want):
    assert got.keys() == want.keys()
    assert got["n"] == want["n"]
    for k in ("mean", "low", "high"):
        assert math.isclose(got[k], want[k], rel_tol=1e-12, abs_tol=0.0), (k, got[k], want[k])
    assert got.get("verdict") == want.get("verdict")


# --- the data ---------------------------------------------------------------

def lcg_data(n, seed, scale=1.0, offset=0.0):
    """Fixed pseudo-random reals (a plain LCG, so the data never changes)."""
    x, out = seed, []
    for _ in range(n):
        x = (6364136223846793005 * x + 1442695040888963407) & MASK
        out.append(offset + scale * ((x >> 11) / float(1 << 53) - 0.5))
    return out


PAIRED = [
    # (name, a, b, options)
    ("binary_ties", [1, 0, 1, 1, 0, 1, 0, 1], [0, 0, 1, 0, 0, 1, 0, 0], {"seed": 9}),
    ("one_example", [0.25], [1.5], {"seed": 0, "iterations": 50}),
    ("negative_reals", lcg_data(37, 1, scale=3.0, offset=-2.0), lcg_data(37, 2, scale=3.0, offset=-1.9),
     {"seed": 123456789, "confidence": 0.9, "iterations": 1500}),
    ("separated", [x + 0.3 + y for x, y in zip(lcg_data(100, 3), lcg_data(100, 4))], lcg_data(100, 3),
     {"seed": 3, "iterations": 1000}),
    ("separated_loss", [x + 0.3 + y for x, y in zip(lcg_data(100, 3), lcg_data(100, 4))], lcg_data(100, 3),
     {"seed": 3, "iterations": 1000, "higher_is_better": False}),
    ("worse_big_seed", lcg_data(64, 5, offset=-0.2), lcg_data(64, 6),
     {"seed": 0xFFFFFFFFFFFFFFFF, "confidence": 0.99, "iterations": 777}),
    ("all_tied", [0.5] * 12, [0.5] * 12, {"seed": 1, "iterations": 100}),
    ("odd_n_high_confidence", lcg_data(13, 7), lcg_data(13, 8), {"seed": 42, "confidence": 0.999, "iterations": 2000}),
    ("defaults", [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], [2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4], {}),
]

ONE_SAMPLE = [
    ("scores", [1, 0, 1, 1, 0, 1, 0, 1], {"seed": 9}),
    ("half_points", [1, 0.5, 0.5, 0, 1, 1, 0.5, 1, 0, 0.5], {"seed": 2024, "confidence": 0.8, "iterations": 999}),
    ("negative_reals", lcg_data(251, 11, scale=10.0, offset=-4.0), {"seed": 7, "iterations": 300}),
    ("one_value", [-1.25], {"seed": 5, "iterations": 10}),
    ("big_seed_n_not_power_of_two", lcg_data(1000, 13), {"seed": 0x8000000000000001, "confidence": 0.5,
                                                         "iterations": 200}),
]


@pytest.mark.parametrize("name,a,b,options", PAIRED, ids=[p[0] for p in PAIRED])
def test_paired_bootstrap_matches_the_reference(name, a, b, options):
    same(tool(a, b, **options), reference(a, b, **options))


@pytest.mark.parametrize("name,x,options", ONE_SAMPLE, ids=[p[0] for p in ONE_SAMPLE])
def test_mean_bootstrap_matches_the_reference(name, x, options):
    same(tool(x, **options), reference(x, **options))


def test_verdicts_cover_all_three():
    """The data sets above exercise every verdict, so a verdict mix-up shows."""
    verdicts = {reference(a, b, **o)["verdict"] for _, a, b, o in PAIRED}
    assert verdicts == {"better", "worse", "tie"}


def test_splitmix64_known_values():
    """SplitMix64 from seed 0 (the reference values of Vigna's splitmix64.c)."""
    gen = SplitMix64(0)
    assert [gen.next() for _ in range(3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_bad_input_is_refused():
    r = subprocess.run([str(TOOL)], input='{"a": [1, 2], "b": [1]}', capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "equal counts" in r.stderr
    r = subprocess.run([str(TOOL)], input='{"a": [1], "confidence": 1}', capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "confidence" in r.stderr
    r = subprocess.run([str(TOOL)], input='not json', capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "JSON" in r.stderr
