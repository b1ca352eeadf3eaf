"""The FJD01 codec in Python: messages <-> ZeroMQ frames (docs/protocol.md §2).

Pure functions over bytes, written from the protocol document, so the Python
SDK needs no C++ code. tests/protocol/vectors/ (decoded here by
tests/sdk/python/test_sdk_vectors.py) keeps it byte-compatible with the C++ codec
in daemon/protocol.

Frames are the message as the client's DEALER sees it: frame 0 is the empty
delimiter. Decoders raise :class:`WireError` carrying the code
(``INVALID_ARGUMENT`` / ``RESOURCE_EXHAUSTED``), the param and a message naming
the frame, with the same wording as the C++ codec.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import Any, Dict, Optional, Sequence

from . import _json

SIGNATURE = b"FJD01"
PROTOCOL_VERSION = 1
UNKNOWN_REQUEST_ID = "-"
MAX_REQUEST_ID_BYTES = 64
MAX_IDEMPOTENCY_KEY_BYTES = 128
STATUS_OK = "OK"
UPLOAD_CHUNK_COMMAND = "file.upload.chunk"  # the only request that carries data (frame 6)
UTF8_BOM = b"\xef\xbb\xbf"

DEFAULT_MAX_MESSAGE_BYTES = 8 << 20
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_UPLOAD_CHUNK_BYTES = 4 << 20
DEFAULT_MAX_UPLOAD_BYTES = 1 << 30
DEFAULT_HEARTBEAT_INTERVAL_MS = 2000
HEARTBEAT_LIVENESS = 3
MAX_JSON_DEPTH = 32

# Status codes of §4 (the status frame of a reply; OK included).
STATUS_CODES = (
    "OK",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "UNIMPLEMENTED",
    "UNAVAILABLE",
    "INTERNAL",
    "DEADLINE_EXCEEDED",
)


class MessageType(enum.IntEnum):
    REQUEST = 0x01
    PARTIAL = 0x02
    FINAL = 0x03
    HEARTBEAT = 0x04
    DISCONNECT = 0x05
    CANCEL = 0x06


class WireError(ValueError):
    """A message that does not follow FJD01."""

    def __init__(self, code: str, message: str, param: Optional[str] = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclasses.dataclass
class ClientMessage:
    """What a client sends: REQUEST, HEARTBEAT, DISCONNECT or CANCEL."""

    type: MessageType = MessageType.REQUEST
    request_id: str = ""  # REQUEST; CANCEL: the stream's id
    command: str = ""  # REQUEST
    body: Dict[str, Any] = dataclasses.field(default_factory=dict)  # REQUEST
    data: Optional[bytes] = None  # REQUEST: frame 6 when present


@dataclasses.dataclass
class ServerMessage:
    """What the daemon sends: PARTIAL, FINAL or HEARTBEAT."""

    type: MessageType = MessageType.FINAL
    request_id: str = ""
    status: str = STATUS_OK
    body: Dict[str, Any] = dataclasses.field(default_factory=dict)
    data: Optional[bytes] = None

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


@dataclasses.dataclass
class Limits:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES  # all frames together
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # frame 5
    max_data_bytes: int = DEFAULT_UPLOAD_CHUNK_BYTES  # frame 6
    max_json_depth: int = MAX_JSON_DEPTH


UNLIMITED = Limits(1 << 62, 1 << 62, 1 << 62, MAX_JSON_DEPTH)


def valid_request_id(request_id: bytes | str) -> bool:
    """1..64 bytes, each printable ASCII (0x21..0x7E)."""
    b = request_id.encode("utf-8") if isinstance(request_id, str) else request_id
    return 1 <= len(b) <= MAX_REQUEST_ID_BYTES and all(0x21 <= c <= 0x7E for c in b)


def valid_command_name(command: bytes | str) -> bool:
    """1..64 bytes of lower-case ASCII letters, digits, '.', '_'."""
    b = command.encode("utf-8") if isinstance(command, str) else command
    return 1 <= len(b) <= 64 and all(
        (0x61 <= c <= 0x7A) or (0x30 <= c <= 0x39) or c in (0x2E, 0x5F) for c in b
    )


def valid_idempotency_key(key: str) -> bool:
    """1..128 printable ASCII bytes (space included)."""
    b = key.encode("utf-8")
    return 1 <= len(b) <= MAX_IDEMPOTENCY_KEY_BYTES and all(0x20 <= c <= 0x7E for c in b)


def _envelope(t: MessageType) -> list[bytes]:
    return [b"", SIGNATURE, bytes([int(t)])]


def encode_client_message(m: ClientMessage) -> list[bytes]:
    """The frames of a client message. The caller guarantees valid fields."""
    frames = _envelope(m.type)
    if m.type == MessageType.REQUEST:
        frames += [m.request_id.encode("ascii"), m.command.encode("ascii"), _json.dumps(m.body or {})]
        if m.data is not None:
            frames.append(bytes(m.data))
    elif m.type == MessageType.CANCEL:
        frames.append(m.request_id.encode("ascii"))
    return frames


def encode_server_message(m: ServerMessage) -> list[bytes]:
    """The frames of a daemon message (used by test peers)."""
    frames = _envelope(m.type)
    if m.type in (MessageType.PARTIAL, MessageType.FINAL):
        frames += [m.request_id.encode("ascii"), m.status.encode("ascii"), _json.dumps(m.body or {})]
        if m.data is not None:
            frames.append(bytes(m.data))
    return frames


def request(request_id: str, command: str, body: Optional[Dict[str, Any]] = None,
            data: Optional[bytes] = None) -> list[bytes]:
    return encode_client_message(ClientMessage(MessageType.REQUEST, request_id, command, body or {}, data))


def heartbeat() -> list[bytes]:
    return _envelope(MessageType.HEARTBEAT)


def disconnect() -> list[bytes]:
    return _envelope(MessageType.DISCONNECT)


def cancel(stream_request_id: str) -> list[bytes]:
    return encode_client_message(ClientMessage(MessageType.CANCEL, stream_request_id))


def _decode_envelope(frames: Sequence[bytes], limits: Limits) -> MessageType:
    total = sum(len(f) for f in frames)
    if total > limits.max_message_bytes:
        raise WireError("RESOURCE_EXHAUSTED", f"message is {total} bytes, limit {limits.max_message_bytes}", "message")
    if len(frames) < 3:
        raise WireError(
            "INVALID_ARGUMENT",
            f'message has {len(frames)} frames; at least 3 expected ("", "FJD01", type)',
            "frames",
        )
    if frames[0] != b"":
        raise WireError("INVALID_ARGUMENT", "frame 0: expected the empty delimiter frame", "frames")
    if frames[1] != SIGNATURE:
        raise WireError("INVALID_ARGUMENT", "frame 1: expected protocol signature 'FJD01'", "frames")
    if len(frames[2]) != 1:
        raise WireError("INVALID_ARGUMENT", f"frame 2: message type must be 1 byte, got {len(frames[2])}", "frames")
    t = frames[2][0]
    if not 0x01 <= t <= 0x06:
        raise WireError("INVALID_ARGUMENT", f"frame 2: unknown message type 0x{t:02x}", "frames")
    return MessageType(t)


def _expect_frames(frames: Sequence[bytes], lo: int, hi: int, what: str) -> None:
    if not lo <= len(frames) <= hi:
        if lo == hi:
            raise WireError("INVALID_ARGUMENT", f"{what} has {len(frames)} frames, expected {lo}", "frames")
        raise WireError("INVALID_ARGUMENT", f"{what} has {len(frames)} frames, expected {lo} to {hi}", "frames")


def _check_request_id(rid: bytes) -> str:
    if valid_request_id(rid):
        return rid.decode("ascii")
    if not rid:
        raise WireError("INVALID_ARGUMENT", "frame 3: request id is empty", "request_id")
    if len(rid) > MAX_REQUEST_ID_BYTES:
        raise WireError(
            "INVALID_ARGUMENT", f"frame 3: request id is {len(rid)} bytes, limit {MAX_REQUEST_ID_BYTES}", "request_id"
        )
    raise WireError("INVALID_ARGUMENT", "frame 3: request id must be printable ASCII (0x21-0x7E)", "request_id")


def _parse_body(text: bytes, limits: Limits) -> Dict[str, Any]:
    if len(text) > limits.max_body_bytes:
        raise WireError("RESOURCE_EXHAUSTED", f"frame 5: body is {len(text)} bytes, limit {limits.max_body_bytes}", "body")
    if not text:
        return {}
    if text.startswith(UTF8_BOM):  # RFC 8259: never sent; the body is a JSON object, nothing before it
        raise WireError(
            "INVALID_ARGUMENT",
            "frame 5: body starts with a UTF-8 byte order mark (EF BB BF); send the JSON object without it",
            "body",
        )
    if _json.depth(text) > limits.max_json_depth:
        raise WireError("INVALID_ARGUMENT", f"frame 5: body nests deeper than {limits.max_json_depth} levels", "body")
    try:
        body = _json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError("INVALID_ARGUMENT", f"frame 5: body is not valid JSON: {e}", "body") from None
    if not isinstance(body, dict):
        raise WireError("INVALID_ARGUMENT", f"frame 5: body must be a JSON object, got {_type_name(body)}", "body")
    return body


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _check_data(data: bytes, limits: Limits) -> bytes:
    if len(data) > limits.max_data_bytes:
        raise WireError("RESOURCE_EXHAUSTED", f"frame 6: data is {len(data)} bytes, limit {limits.max_data_bytes}", "data")
    return bytes(data)


def decode_client_message(frames: Sequence[bytes], limits: Limits = Limits()) -> ClientMessage:
    """Decodes what a client sent (the daemon's view, minus the routing id)."""
    frames = [bytes(f) for f in frames]
    t = _decode_envelope(frames, limits)
    m = ClientMessage(type=t)
    if t == MessageType.REQUEST:
        if not 6 <= len(frames) <= 7:
            param = "frames" if len(frames) >= 4 and valid_request_id(frames[3]) else "request_id"
            raise WireError(
                "INVALID_ARGUMENT",
                f'REQUEST has {len(frames)} frames, expected 6 or 7 ("", signature, type, request id, '
                "command, body[, data])",
                param,
            )
        m.request_id = _check_request_id(frames[3])
        if not valid_command_name(frames[4]):
            msg = (
                "frame 4: command is empty"
                if not frames[4]
                else f"frame 4: command must be 1-64 bytes of [a-z0-9._], got {len(frames[4])} bytes"
            )
            raise WireError("INVALID_ARGUMENT", msg, "command")
        m.command = frames[4].decode("ascii")
        m.body = _parse_body(frames[5], limits)
        if len(frames) == 7:  # an empty frame 6 is a data frame too
            if m.command != UPLOAD_CHUNK_COMMAND:
                raise WireError(
                    "INVALID_ARGUMENT",
                    f"frame 6: command '{m.command}' takes no data frame "
                    f"(only {UPLOAD_CHUNK_COMMAND} requests carry one)",
                    "data",
                )
            m.data = _check_data(frames[6], limits)
        return m
    if t in (MessageType.HEARTBEAT, MessageType.DISCONNECT):
        _expect_frames(frames, 3, 3, t.name)
        return m
    if t == MessageType.CANCEL:
        _expect_frames(frames, 4, 4, "CANCEL")
        m.request_id = _check_request_id(frames[3])
        return m
    raise WireError("INVALID_ARGUMENT", f"frame 2: message type 0x{int(t):02x} is not one a client sends", "frames")


def decode_server_message(frames: Sequence[bytes], limits: Limits = UNLIMITED) -> ServerMessage:
    """Decodes what the daemon sent (the client's view)."""
    frames = [bytes(f) for f in frames]
    t = _decode_envelope(frames, limits)
    m = ServerMessage(type=t)
    if t in (MessageType.PARTIAL, MessageType.FINAL):
        _expect_frames(frames, 6, 7, "reply")
        m.request_id = _check_request_id(frames[3])
        try:
            status = frames[4].decode("ascii")
        except UnicodeDecodeError:
            status = ""
        if status not in STATUS_CODES:
            raise WireError("INVALID_ARGUMENT", "frame 4: unknown status code", "status")
        m.status = status
        m.body = _parse_body(frames[5], limits)
        if len(frames) == 7:
            m.data = _check_data(frames[6], limits)
        return m
    if t == MessageType.HEARTBEAT:
        _expect_frames(frames, 3, 3, "HEARTBEAT")
        return m
    raise WireError(
        "INVALID_ARGUMENT", f"frame 2: message type 0x{int(t):02x} is not one the daemon sends", "frames"
    )


def error_of(m: ServerMessage) -> tuple[str, str, Optional[str]]:
    """(code, message, param) of an error reply; a body without a well-formed
    "error" object still gives the code, with a message saying so."""
    message = "(the reply carried no error message)"
    param = None
    e = m.body.get("error") if isinstance(m.body, dict) else None
    if isinstance(e, dict):
        if isinstance(e.get("message"), str):
            message = e["message"]
        if isinstance(e.get("param"), str):
            param = e["param"]
    return m.status, message, param


def encode_frame_file(frames: Sequence[bytes]) -> bytes:
    """Test-vector files (§9): each frame as a 4-byte big-endian length, then its bytes."""
    return b"".join(struct.pack(">I", len(f)) + bytes(f) for f in frames)


def decode_frame_file(data: bytes) -> list[bytes]:
    frames: list[bytes] = []
    pos = 0
    while pos < len(data):
        if len(frames) >= 64:
            raise ValueError("frame file: more than 64 frames")
        if len(data) - pos < 4:
            raise ValueError(f"frame file: truncated length at byte {pos}")
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        pos += 4
        if len(data) - pos < n:
            raise ValueError(f"frame file: frame {len(frames)} needs {n} bytes, {len(data) - pos} left")
        frames.append(data[pos : pos + n])
        pos += n
    return frames
