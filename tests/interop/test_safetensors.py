"""runtime/io against the Python `safetensors` library.

Files written by `safetensors.torch.save_file` must read identically through
`//runtime/io:safetensors_tool info`, and files fjord rewrites
(`safetensors_tool roundtrip`) must load in Python with the same tensors and
metadata (plus format=pt). Broken files make the tool fail, naming the file.

    bazel build //runtime/io:safetensors_tool
    ~/.cache/fjord/venv/bin/python -m pytest -q tests/interop/test_safetensors.py
"""

import json
import os
import pathlib
import struct
import subprocess

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("FJORD_BIN_DIR", REPO / "bazel-bin"))
TOOL = BIN_DIR / "runtime" / "io" / "safetensors_tool"

DTYPE_NAMES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float64: "F64",
    torch.float8_e4m3fn: "F8_E4M3",
}


def run_tool(*args, check=True):
    if not TOOL.exists():
        raise FileNotFoundError(f"{TOOL} not built: run `bazel build //runtime/io:safetensors_tool`")
    proc = subprocess.run([str(TOOL), *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"safetensors_tool {args} failed ({proc.returncode}): {proc.stderr}")
    return proc


def python_header(path):
    """The raw JSON header, parsed independently of both libraries."""
    data = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), 8 + n


def sample_tensors():
    g = torch.Generator().manual_seed(7)
    return {
        "model.layers.0.self_attn.q_proj.weight": torch.randn(3, 5, 7, generator=g),
        "odd.bf16": torch.randn(13, generator=g).to(torch.bfloat16),
        "odd.f16": torch.randn(1, 3, 1, generator=g).to(torch.float16),
        "ids.i64": torch.arange(-5, 6, dtype=torch.int64),
        "scalar.i64": torch.tensor(42, dtype=torch.int64),
        "empty.f32": torch.zeros(0, 4),
        "empty.bf16": torch.zeros(2, 0, 3, dtype=torch.bfloat16),
        "mask.bool": torch.tensor([True, False, True]),
        "bytes.u8": torch.tensor([0, 7, 255], dtype=torch.uint8),
        "f64": torch.randn(2, 2, dtype=torch.float64, generator=g),
        "i32": torch.tensor([-1, 2**31 - 1], dtype=torch.int32),
        "f8": torch.randn(5, generator=g).to(torch.float8_e4m3fn),
        "ünïcode.name": torch.ones(2),
    }


METADATA = {"source": "pytest", "note": "ünïcode ✓", "step": "12"}


def assert_same(got, want, name):
    assert got.dtype == want.dtype, name
    assert tuple(got.shape) == tuple(want.shape), name
    if want.dtype == torch.float8_e4m3fn:
        got, want = got.view(torch.uint8), want.view(torch.uint8)
    assert torch.equal(got, want), name


@pytest.fixture
def python_file(tmp_path):
    path = tmp_path / "py.safetensors"
    tensors = sample_tensors()
    save_file(tensors, str(path), metadata=METADATA)
    return path, tensors


def test_info_matches_python(python_file):
    path, tensors = python_file
    info = json.loads(run_tool("info", path).stdout)
    header, data_offset = python_header(path)
    assert info["file"] == str(path)
    assert info["data_offset"] == data_offset
    assert info["metadata"] == header["__metadata__"] == METADATA
    by_name = {t["name"]: t for t in info["tensors"]}
    assert set(by_name) == set(tensors)
    for name, t in tensors.items():
        entry = by_name[name]
        assert entry["dtype"] == DTYPE_NAMES[t.dtype], name
        assert entry["shape"] == list(t.shape), name
        assert entry["data_offsets"] == header[name]["data_offsets"], name
    # fjord lists tensors in file order.
    offsets = [tuple(t["data_offsets"]) for t in info["tensors"]]
    assert offsets == sorted(offsets)


def test_roundtrip_reads_back_in_python(python_file, tmp_path):
    path, tensors = python_file
    out = tmp_path / "fjord.safetensors"
    run_tool("roundtrip", path, out)
    loaded = load_file(str(out))
    assert set(loaded) == set(tensors)
    for name, want in tensors.items():
        assert_same(loaded[name], want, name)
    with safe_open(str(out), framework="pt") as f:
        assert f.metadata() == {**METADATA, "format": "pt"}
    # fjord keeps the file order it read, and pads the header to 8 bytes.
    header, data_offset = python_header(out)
    assert data_offset % 8 == 0
    src_header, _ = python_header(path)
    for name in tensors:
        assert header[name]["data_offsets"] == src_header[name]["data_offsets"], name
    # A second round trip is byte-identical.
    out2 = tmp_path / "fjord2.safetensors"
    run_tool("roundtrip", out, out2)
    assert out.read_bytes() == out2.read_bytes()
    # No temp files left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["py.safetensors", "fjord.safetensors", "fjord2.safetensors"])


def test_unaligned_layout(tmp_path):
    """A valid file whose F32 tensor starts at an odd offset (read by copy)."""
    a = torch.tensor([1, 2, 3], dtype=torch.uint8)
    b = torch.tensor([1.5, -2.25, 1e30], dtype=torch.float32)
    header = {
        "a": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
        "b": {"dtype": "F32", "shape": [3], "data_offsets": [3, 15]},
    }
    blob = json.dumps(header).encode()
    path = tmp_path / "unaligned.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + a.numpy().tobytes() + b.numpy().tobytes())
    info = json.loads(run_tool("info", path).stdout)
    assert [t["name"] for t in info["tensors"]] == ["a", "b"]
    out = tmp_path / "out.safetensors"
    run_tool("roundtrip", path, out)
    loaded = load_file(str(out))
    assert_same(loaded["a"], a, "a")
    assert_same(loaded["b"], b, "b")


def test_empty_file_of_tensors(tmp_path):
    path = tmp_path / "none.safetensors"
    save_file({}, str(path))
    info = json.loads(run_tool("info", path).stdout)
    assert info["tensors"] == []
    out = tmp_path / "none_out.safetensors"
    run_tool("roundtrip", path, out)
    assert load_file(str(out)) == {}


@pytest.mark.parametrize("cut", [4, 30, -1])
def test_truncated_file_fails_naming_it(python_file, tmp_path, cut):
    path, _ = python_file
    data = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[:cut])
    for args in (("info", bad), ("roundtrip", bad, tmp_path / "never.safetensors")):
        proc = run_tool(*args, check=False)
        assert proc.returncode != 0
        assert str(bad) in proc.stderr
        assert "DATA_LOSS" in proc.stderr
        assert proc.stdout == ""
    assert not (tmp_path / "never.safetensors").exists()


def test_corrupt_header_fails_naming_tensor(python_file, tmp_path):
    path, _ = python_file
    header, data_offset = python_header(path)
    header["ids.i64"]["shape"] = [12]  # one element more than its bytes
    blob = json.dumps(header).encode()
    data = path.read_bytes()
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(struct.pack("<Q", len(blob)) + blob + data[data_offset:])
    proc = run_tool("info", bad, check=False)
    assert proc.returncode == 1
    assert str(bad) in proc.stderr
    assert "tensor 'ids.i64'" in proc.stderr


def test_missing_file_and_usage(tmp_path):
    proc = run_tool("info", tmp_path / "absent.safetensors", check=False)
    assert proc.returncode == 1
    assert "absent.safetensors" in proc.stderr
    assert "NOT_FOUND" in proc.stderr
    assert run_tool("bogus", check=False).returncode == 2
