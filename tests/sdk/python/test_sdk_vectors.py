"""The Python codec (fjord._wire) against the shared FJD01 test vectors
(tests/protocol/vectors, docs/protocol.md §9), which the C++ codec also
passes: every *.frames decodes to its *.json, and every valid message
encodes back to exactly the same bytes.

    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/python/test_sdk_vectors.py
"""

import json
import math
import pathlib
import random
import struct

import pytest

from fjord import _json, _wire
from fjord._wire import ClientMessage, Limits, MessageType, ServerMessage, WireError

VECTORS = pathlib.Path(__file__).resolve().parents[2] / "protocol" / "vectors"
NAMES = sorted(p.stem for p in VECTORS.glob("*.frames"))


def load(name):
    meta = json.loads((VECTORS / f"{name}.json").read_text())
    frames = _wire.decode_frame_file((VECTORS / f"{name}.frames").read_bytes())
    return meta, frames


def describe_client(m: ClientMessage) -> dict:
    d = {"type": m.type.name}
    if m.type in (MessageType.REQUEST, MessageType.CANCEL):
        d["request_id"] = m.request_id
    if m.type == MessageType.REQUEST:
        d["command"] = m.command
        d["body"] = m.body
        d["data_hex"] = m.data.hex() if m.data is not None else None
    return d


def describe_server(m: ServerMessage) -> dict:
    d = {"type": m.type.name}
    if m.type in (MessageType.PARTIAL, MessageType.FINAL):
        d.update(request_id=m.request_id, status=m.status, body=m.body,
                 data_hex=m.data.hex() if m.data is not None else None)
    return d


def from_description(d: dict, to_daemon: bool):
    t = MessageType[d["type"]]
    data = bytes.fromhex(d["data_hex"]) if d.get("data_hex") else None
    if to_daemon:
        return ClientMessage(t, d.get("request_id", ""), d.get("command", ""), d.get("body", {}), data)
    return ServerMessage(t, d.get("request_id", ""), d.get("status", "OK"), d.get("body", {}), data)


def test_every_vector_has_both_files():
    assert len(NAMES) >= 30, f"expected the shared vectors under {VECTORS}"
    for name in NAMES:
        assert (VECTORS / f"{name}.json").exists(), name
    assert sorted(p.stem for p in VECTORS.glob("*.json")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_vector(name):
    meta, frames = load(name)
    kind, to_daemon = meta["kind"], meta["direction"] == "to_daemon"
    limits = Limits(**meta.get("limits", {})) if to_daemon else _wire.UNLIMITED
    if "limits" in meta and not to_daemon:
        limits = Limits(**meta["limits"])
    decode = _wire.decode_client_message if to_daemon else _wire.decode_server_message
    if kind in ("request", "reply"):
        m = decode(frames, limits)
        described = describe_client(m) if to_daemon else describe_server(m)
        assert described == meta["decoded"]
        # Encoding the decoded message gives back exactly the vector's bytes.
        again = from_description(meta["decoded"], to_daemon)
        encoded = _wire.encode_client_message(again) if to_daemon else _wire.encode_server_message(again)
        assert encoded == frames
        assert _wire.encode_frame_file(encoded) == (VECTORS / f"{name}.frames").read_bytes()
    else:
        assert kind in ("invalid_request", "invalid_reply")
        with pytest.raises(WireError) as e:
            decode(frames, limits)
        want = meta["error"]
        assert e.value.code == want["code"]
        assert e.value.param == want["param"]
        assert want["message_contains"] in e.value.message


def test_frame_file_errors():
    with pytest.raises(ValueError, match="truncated length at byte 0"):
        _wire.decode_frame_file(b"\x00\x00")
    with pytest.raises(ValueError, match="frame 0 needs 5 bytes, 2 left"):
        _wire.decode_frame_file(b"\x00\x00\x00\x05ab")
    assert _wire.decode_frame_file(b"") == []


def test_request_body_limits():
    big = _wire.request("r1", "ping", {"x": "y" * 100})
    with pytest.raises(WireError) as e:
        _wire.decode_client_message(big, Limits(max_body_bytes=50))
    assert (e.value.code, e.value.param) == ("RESOURCE_EXHAUSTED", "body")
    data = _wire.request("r1", "file.upload.chunk", {"upload_id": "u", "offset": 0}, b"x" * 10)
    with pytest.raises(WireError) as e:
        _wire.decode_client_message(data, Limits(max_data_bytes=9))
    assert (e.value.code, e.value.param) == ("RESOURCE_EXHAUSTED", "data")
    assert _wire.decode_client_message(data).data == b"x" * 10


def test_empty_body_frame_means_empty_object():
    frames = [b"", b"FJD01", b"\x01", b"r-1", b"ping", b""]
    assert _wire.decode_client_message(frames).body == {}


def test_refuses_nan_and_non_object_bodies():
    frames = [b"", b"FJD01", b"\x03", b"r-1", b"OK", b'{"x": NaN}']
    with pytest.raises(WireError, match="not valid JSON"):
        _wire.decode_server_message(frames)
    frames[5] = b"[1]"
    with pytest.raises(WireError, match="must be a JSON object, got array"):
        _wire.decode_server_message(frames)


def test_json_matches_the_cpp_layout():
    # Written as nlohmann::json dumps them (the vectors hold more of these).
    assert _json.dumps({"b": 1, "a": [1.0, 0.001, 2e-4, None, True, "é\n\x01"]}) == \
        '{"a":[1.0,0.001,0.0002,null,true,"é\\n\\u0001"],"b":1}'.encode()
    assert _json.dumps([1e-5, 1e15, 1e16, 1.5e20, -0.0, 0.0, 123.456, float("nan")]) == \
        b"[1e-05,1e+15,1e+16,1.5e+20,-0.0,0.0,123.456,null]"
    # Keys sort by their UTF-8 bytes, as std::map<std::string> does.
    assert _json.dumps({"é": 1, "z": 2, "A": 3}) == '{"A":3,"z":2,"é":1}'.encode()
    with pytest.raises(TypeError):
        _json.dumps({1: "x"})


def test_json_floats_round_trip():
    rng = random.Random(7)
    for _ in range(20000):
        x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        text = _json.dumps(x)
        if math.isfinite(x):
            assert float(text) == x, (x, text)
        else:
            assert text == b"null"
