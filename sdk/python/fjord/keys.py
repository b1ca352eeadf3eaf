"""CURVE keys (Curve25519, Z85-encoded, 40 characters) and key files.

Key files are the C++ SDK's (daemon/protocol/curve_keys.h): ``PREFIX.key`` holds the
Z85 secret key, ``PREFIX.pub`` the public key, one line each. A secret key
file that group or others may read or write is refused, as ssh does. Secret
keys never appear in error messages.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import NamedTuple, Union

import zmq
from zmq.utils import z85

from .errors import AlreadyExistsError, InvalidArgumentError, NotFoundError, PermissionDeniedError

__all__ = ["KeyPair", "generate_keypair", "valid_z85_key", "public_key_for",
           "load_secret_key_file", "load_public_key_file", "write_key_files"]

PathLike = Union[str, "os.PathLike[str]"]


class KeyPair(NamedTuple):
    public_key: str
    secret_key: str


def generate_keypair() -> KeyPair:
    """A fresh key pair (libzmq's zmq_curve_keypair)."""
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE")
    pub, sec = zmq.curve_keypair()
    return KeyPair(pub.decode("ascii"), sec.decode("ascii"))


def valid_z85_key(key: object) -> bool:
    """True for 40 characters of the Z85 alphabet that decode to 32 bytes."""
    if isinstance(key, bytes):
        try:
            key = key.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(key, str) or len(key) != 40:
        return False
    try:
        return len(z85.decode(key)) == 32
    except (ValueError, KeyError, TypeError, struct.error, UnicodeError):
        return False


def public_key_for(secret_key: str) -> str:
    """The public key of a Z85 secret key."""
    if not valid_z85_key(secret_key):
        raise InvalidArgumentError("not a Z85 CURVE secret key (40 characters)", param="secret_key")
    return zmq.curve_public(secret_key.encode("ascii")).decode("ascii")


def _read_key_line(path: str, what: str) -> str:
    try:
        with open(path, "r", encoding="ascii", errors="replace") as f:
            text = f.read().strip()
    except FileNotFoundError:
        raise NotFoundError(f"{what} file {path} does not exist") from None
    except OSError as e:
        raise PermissionDeniedError(f"cannot read {what} file {path}: {e.strerror}") from None
    if not valid_z85_key(text):
        raise InvalidArgumentError(f"{what} file {path} does not hold a Z85 CURVE key (40 characters)")
    return text


def load_secret_key_file(path: PathLike) -> KeyPair:
    """Reads PREFIX.key and derives its public key.

    NotFoundError if missing, PermissionDeniedError if group/others can
    access it ("chmod 600 PATH"), InvalidArgumentError if it holds no key.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFoundError(f"secret key file {path} does not exist") from None
    except OSError as e:
        raise PermissionDeniedError(f"cannot stat {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgumentError(f"secret key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise PermissionDeniedError(
            f"secret key file {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can "
            f"access it; run chmod 600 {path}"
        )
    secret = _read_key_line(path, "secret key")
    return KeyPair(public_key_for(secret), secret)


def load_public_key_file(path: PathLike) -> str:
    """Reads a public key file (any permissions)."""
    return _read_key_line(os.fspath(path), "public key")


def write_key_files(prefix: PathLike, keys: KeyPair | None = None) -> KeyPair:
    """Writes PREFIX.key (mode 0600) and PREFIX.pub (0644); returns the pair.

    A fresh pair when ``keys`` is None. AlreadyExistsError if PREFIX.key
    exists: a secret is never overwritten.
    """
    prefix = os.fspath(prefix)
    keys = keys or generate_keypair()
    secret_path, public_path = prefix + ".key", prefix + ".pub"
    try:
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        raise AlreadyExistsError(f"{secret_path} exists; not overwriting a key") from None
    except OSError as e:
        raise PermissionDeniedError(f"cannot create {secret_path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(keys.secret_key + "\n")
        f.flush()
        os.fsync(f.fileno())
    with open(public_path, "w") as f:
        f.write(keys.public_key + "\n")
    os.chmod(public_path, 0o644)
    return keys
