"""render_report (runtime/eval/report_html.h): the HTML page of a real
comparison, opened in a real browser.

  * fjord-compare compares the demo's base with the adapter
    configs/quickstart.yaml trains on it (test_compare.py's fixture); its
    report, as written, is rendered with render_report (with the candidates'
    intervals once fjord-compare writes them, without them until then);
  * headless Chromium loads the page from the file: every candidate and every
    metric is in the DOM it built, one SVG chart per metric, no script;
  * a screenshot at 1280 × 2400 is a real PNG; it is kept at
    $FJORD_ARTIFACTS_DIR/compare_report.png (tools/test.sh sets it to its
    logs folder) or else under pytest's tmp_path, and its path printed;
  * bad input is exit 1 naming the file, bad usage exit 2, and no page.

Chromium is Debian's (tools/bootstrap.sh installs it): missing, the test fails.

    bazel build //lora/cli:fjord-compare //lora/cli:fjord-train //tools/demo //runtime/eval:render_report
    ~/.cache/fjord/venv/bin/python -m pytest -q -s tests/interop/test_report_html.py
"""

import html
import json
import os
import pathlib
import shutil
import struct
import subprocess

import pytest

from test_compare import COMPARE, adapter, compare  # noqa: F401 (adapter is a fixture)
from test_fjord_train import BIN_DIR, DEMO

RENDER = BIN_DIR / "runtime" / "eval" / "render_report"
TIMEOUT = 60

pytestmark = [
    pytest.mark.skipif(not (DEMO / "model" / "config.json").exists(), reason="bazel build //tools/demo first"),
    pytest.mark.skipif(not RENDER.exists() or not COMPARE.exists(),
                       reason="bazel build //runtime/eval:render_report //lora/cli:fjord-compare first"),
]


def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium not found: run tools/bootstrap.sh (as root) to install Debian's chromium package")
    return exe


def browse(page, profile, *args):
    """Runs headless Chromium on the page (a file) with a fresh profile."""
    r = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", *args, page.as_uri()],
                       capture_output=True, text=True, timeout=TIMEOUT, env={**os.environ, "HOME": str(profile)})
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def render(report, out):
    return subprocess.run([str(RENDER), str(report), str(out)], capture_output=True, text=True, timeout=TIMEOUT)


def test_real_report_in_a_browser(adapter, tmp_path):  # noqa: F811
    report_path = tmp_path / "report.json"
    compare("--adapter", f"demo={adapter}", "--data", DEMO / "data" / "heldout.jsonl", "--out", report_path)
    report = json.loads(report_path.read_text())
    page = tmp_path / "report.html"
    r = render(report_path, page)
    assert r.returncode == 0, r.stderr
    text = page.read_text(encoding="utf-8")
    for bad in ("http://", "https://", "src=", "<script"):
        assert bad not in text, bad

    names = [c["name"] for c in report["candidates"]]
    metrics = sorted({m for c in report["candidates"] for m in c["metrics"]})
    assert names == ["base", "demo"] and "contains" in metrics

    profile = tmp_path / "chromium"
    profile.mkdir()
    dom = browse(page, profile, "--dump-dom").stdout
    assert dom.startswith("<!DOCTYPE html>") and "</body></html>" in dom
    for name in names:
        assert html.escape(name, quote=False) in dom, name
    for metric in metrics:
        assert metric in dom, metric
    assert dom.count("<svg") == len(metrics)
    assert dom.count('class="bars"') == len(metrics)
    assert "<script" not in dom
    # Whiskers exactly where the report has intervals (none until fjord-compare writes them).
    intervals = sum(len(c.get("intervals") or {}) for c in report["candidates"])
    assert dom.count('class="whisker"') == intervals
    for sample in report["samples"]:
        assert html.escape(sample["prompt"], quote=False) in dom

    artifacts = os.environ.get("FJORD_ARTIFACTS_DIR")
    shot_dir = pathlib.Path(artifacts) if artifacts else tmp_path
    shot_dir.mkdir(parents=True, exist_ok=True)
    shot = shot_dir / "compare_report.png"
    shot.unlink(missing_ok=True)
    browse(page, profile, f"--screenshot={shot}", "--window-size=1280,2400")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert len(data) > 10 * 1024, f"{len(data)} bytes: a blank page?"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert (width, height) == (1280, 2400)
    if artifacts:
        shutil.copyfile(page, shot_dir / "compare_report.html")
    print(f"\nHTML report screenshot: {shot}")


def test_bad_input_and_usage(tmp_path):
    out = tmp_path / "out.html"
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "fjord.compare/1", "candidates": [{"name": 3, "metrics": {}}]}')
    r = render(bad, out)
    assert r.returncode == 1 and "bad.json" in r.stderr and "candidates[0].name" in r.stderr, r.stderr
    bad.write_text("{not json")
    r = render(bad, out)
    assert r.returncode == 1 and "bad.json" in r.stderr and "not JSON" in r.stderr, r.stderr
    r = render(tmp_path / "missing.json", out)
    assert r.returncode == 1 and "missing.json" in r.stderr, r.stderr
    assert not out.exists()
    r = subprocess.run([str(RENDER), str(bad)], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 2 and "usage" in r.stderr
