"""JSON as FJD01 writes it (docs/protocol.md §2, §9).

Bodies go on the wire as compact JSON with object keys in sorted order, the
way the C++ codec (nlohmann::json's dump) writes them, so that a message
encoded here is byte-for-byte the one the C++ SDK sends:

- no whitespace; keys sorted by their UTF-8 bytes; non-ASCII text as raw
  UTF-8; control characters as ``\\b \\f \\n \\r \\t`` or ``\\u00xx``;
- integral floats keep a ``.0`` (``1.0``), numbers use the shortest
  round-trip digits, in fixed notation when the decimal point falls within
  [-3, 15] digits and as ``1e-05`` / ``1.5e+20`` otherwise;
- NaN and infinities become ``null`` (JSON has no such numbers).

Decoding accepts any valid JSON but, like the C++ codec, refuses ``NaN`` /
``Infinity`` literals and bodies nested deeper than the limit.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["dumps", "loads", "depth", "JSONDecodeError"]

JSONDecodeError = json.JSONDecodeError

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_string_encoder = json.JSONEncoder(ensure_ascii=False)


def _format_float(x: float) -> str:
    """A double as nlohmann::json writes it (Grisu2 digits, its layout rules)."""
    if not math.isfinite(x):
        return "null"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    text = repr(abs(x))  # shortest round-trip digits
    if "e" in text:
        mantissa, exp_text = text.split("e")
        exponent = int(exp_text)
    else:
        mantissa, exponent = text, 0
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + exponent  # decimal point after this many digits
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    if not digits:
        return sign + "0.0"
    k = len(digits)  # number of digits
    n = point  # value = 0.DIGITS * 10^n
    min_exp, max_exp = -4, 15
    if k <= n <= max_exp:
        return sign + digits + "0" * (n - k) + ".0"
    if 0 < n <= max_exp:
        return sign + digits[:n] + "." + digits[n:]
    if min_exp < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    out = digits[0] + ("." + digits[1:] if k > 1 else "")
    esign = "-" if e < 0 else "+"
    e = abs(e)
    return sign + out + "e" + esign + (f"{e:02d}" if e < 100 else str(e))


def _format_string(s: str) -> str:
    if _LONE_SURROGATE.search(s):
        s = _LONE_SURROGATE.sub("\ufffd", s)  # invalid UTF-8 -> U+FFFD, as the C++ codec
    return _string_encoder.encode(s)


def _sort_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(_format_float(value))
    elif isinstance(value, str):
        out.append(_format_string(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key in sorted(value, key=lambda k: _sort_key(_key_str(k))):
            if not first:
                out.append(",")
            first = False
            out.append(_format_string(_key_str(key)))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _key_str(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"JSON object keys must be strings, got {type(key).__name__}")
    return key


def dumps(value: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON, byte-identical to the C++ codec's."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")


def depth(text: bytes) -> int:
    """Bracket nesting depth of a JSON text, counted outside strings."""
    level = max_level = 0
    in_string = escape = False
    for c in text:
        if in_string:
            if escape:
                escape = False
            elif c == 0x5C:  # backslash
                escape = True
            elif c == 0x22:
                in_string = False
            continue
        if c == 0x22:
            in_string = True
        elif c in (0x7B, 0x5B):
            level += 1
            max_level = max(max_level, level)
        elif c in (0x7D, 0x5D):
            level -= 1
    return max_level


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(text: bytes) -> Any:
    """Parses UTF-8 JSON; ValueError (JSONDecodeError) when it is not valid."""
    return json.loads(text.decode("utf-8"), parse_constant=_refuse_constant)
