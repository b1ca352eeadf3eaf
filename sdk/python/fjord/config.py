"""Where a client finds its connection settings; the ``fjord`` CLI uses the
same rules, so the SDK and the CLI agree on which daemon and keys they use.

Each setting comes from the first of: an explicit argument (a CLI flag), an
environment variable, the client config file. The settings:

==================  ====================  ========================  ==========================================
setting             environment           config file key           value
==================  ====================  ========================  ==========================================
endpoint            ``FJORD_ENDPOINT``    ``endpoint``              ``tcp://HOST:PORT`` or ``ipc:///PATH``
server public key   ``FJORD_SERVER_KEY``  ``server_public_key``     the daemon's Z85 key, or a file holding it
client keys         ``FJORD_KEYS``        ``keys``                  this client's secret key file (``PREFIX.key``)
timeout             ``FJORD_TIMEOUT``     ``timeout_s``             seconds per attempt (default 10)
==================  ====================  ========================  ==========================================

The config file is ``$FJORD_CONFIG``, else ``$XDG_CONFIG_HOME/fjord/client.yaml``,
else ``~/.config/fjord/client.yaml``; a missing default file is fine. It is a
flat YAML mapping of those keys (``key: value`` lines, ``#`` comments);
relative paths in it are relative to the file's directory. Without a server
public key the connection is plain (only a daemon with
``security.allow_plaintext`` on loopback accepts it).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from .errors import InvalidArgumentError, NotFoundError
from .keys import KeyPair, load_public_key_file, load_secret_key_file, public_key_for, valid_z85_key

__all__ = ["Settings", "default_config_path", "read_config_file", "resolve"]

DEFAULT_TIMEOUT_S = 10.0
_KEYS = ("endpoint", "server_public_key", "keys", "timeout_s")
_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:(?:\s+(.*))?$")


@dataclasses.dataclass
class Settings:
    endpoint: str
    server_public_key: Optional[str]  # Z85; None: plain connection
    client_keys: Optional[KeyPair]
    timeout_s: float
    source: Dict[str, str]  # setting -> where it came from ("flag", "FJORD_ENDPOINT", "/path/client.yaml:3")


def default_config_path(env: Mapping[str, str] = os.environ) -> str:
    if env.get("FJORD_CONFIG"):
        return env["FJORD_CONFIG"]
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "fjord", "client.yaml")


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    return v


def read_config_file(path: str) -> Dict[str, Tuple[str, str]]:
    """{key: (value, "path:line")} of a client config file.

    InvalidArgumentError naming the line for anything but flat ``key: value``
    lines with the known keys.
    """
    out: Dict[str, Tuple[str, str]] = {}
    with open(path, "r", encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if "#" in line:
                # A '#' starts a comment unless it is inside a quoted value.
                stripped = line.lstrip()
                if stripped.startswith("#"):
                    continue
                line = re.sub(r"\s+#.*$", "", line)
            if not line.strip() or line.strip() == "---":
                continue
            m = _LINE.match(line.strip())
            if not m or line[0].isspace():
                raise InvalidArgumentError(f"{path}:{n}: expected 'key: value', got {line.strip()!r}")
            key, value = m.group(1), _unquote(m.group(2) or "")
            if key not in _KEYS:
                raise InvalidArgumentError(
                    f"{path}:{n}: unknown key '{key}' (known: {', '.join(_KEYS)})", param=key
                )
            out[key] = (value, f"{path}:{n}")
    return out


def _server_key(value: str, where: str, base_dir: str) -> str:
    if valid_z85_key(value):
        return value
    path = value if os.path.isabs(value) else os.path.join(base_dir, value)
    if os.path.exists(path):
        return load_public_key_file(path)
    raise InvalidArgumentError(
        f"{where}: server public key is neither a Z85 key (40 characters) nor an existing file ({value})",
        param="server_public_key",
    )


def resolve(
    endpoint: Optional[str] = None,
    server_public_key: Optional[str] = None,
    keys: Optional[str] = None,
    timeout_s: Optional[float] = None,
    config_file: Optional[str] = None,
    env: Mapping[str, str] = os.environ,
    public_key: Optional[str] = None,
    secret_key: Optional[str] = None,
) -> Settings:
    """The connection settings (see the module doc for the precedence).

    ``keys`` is a secret key file; ``secret_key``/``public_key`` give the
    pair directly (``public_key`` is derived when omitted). A
    ``secret_key`` that is not a Z85 key is taken as a key file path.
    """
    source: Dict[str, str] = {}
    explicit_file = config_file or env.get("FJORD_CONFIG")
    path = config_file or default_config_path(env)
    file_values: Dict[str, Tuple[str, str]] = {}
    if os.path.exists(path):
        file_values = read_config_file(path)
    elif explicit_file:
        raise NotFoundError(f"client config file {path} does not exist")
    base_dir = os.path.dirname(os.path.abspath(path))

    def pick(arg: Any, env_name: str, key: str) -> Tuple[Any, str]:
        """(value, the directory a relative path in it is relative to); (None, "") when unset."""
        if arg is not None:
            source[key] = "argument"
            return arg, os.getcwd()
        if env.get(env_name):
            source[key] = env_name
            return env[env_name], os.getcwd()
        if key in file_values:
            value, where = file_values[key]
            source[key] = where
            return value, base_dir
        return None, ""

    ep, _ = pick(endpoint, "FJORD_ENDPOINT", "endpoint")
    if not ep:
        raise InvalidArgumentError(
            "no daemon endpoint: pass one (CLI: --endpoint), set FJORD_ENDPOINT, or write "
            f"'endpoint: tcp://HOST:PORT' in {path}",
            param="endpoint",
        )
    if not (ep.startswith("tcp://") or ep.startswith("ipc://")):
        raise InvalidArgumentError(
            f"endpoint must be tcp://HOST:PORT or ipc://PATH, got '{ep}' ({source['endpoint']})", param="endpoint"
        )

    skey_raw, skey_dir = pick(server_public_key, "FJORD_SERVER_KEY", "server_public_key")
    skey = _server_key(skey_raw, source["server_public_key"], skey_dir) if skey_raw else None

    pair: Optional[KeyPair] = None
    if secret_key is not None:
        source["keys"] = "argument"
        if valid_z85_key(secret_key):
            derived = public_key_for(secret_key)
            if public_key is not None and public_key != derived:
                raise InvalidArgumentError("public_key does not belong to secret_key", param="public_key")
            pair = KeyPair(derived, secret_key)
        else:
            pair = load_secret_key_file(secret_key)
    else:
        if public_key is not None:
            raise InvalidArgumentError("public_key needs its secret_key", param="secret_key")
        kpath, kdir = pick(keys, "FJORD_KEYS", "keys")
        if kpath:
            kpath = os.path.expanduser(kpath)
            pair = load_secret_key_file(kpath if os.path.isabs(kpath) else os.path.join(kdir, kpath))
    if skey and pair is None:
        raise InvalidArgumentError(
            "a server public key needs this client's keys too: pass a secret key file "
            "(CLI: --keys), set FJORD_KEYS, or write 'keys: PATH' in the config file",
            param="keys",
        )
    if pair is not None and not skey:
        raise InvalidArgumentError(
            "client keys need the daemon's public key too: pass it (CLI: --server-key), set "
            "FJORD_SERVER_KEY, or write 'server_public_key: KEY' in the config file",
            param="server_public_key",
        )

    t_raw, _ = pick(timeout_s, "FJORD_TIMEOUT", "timeout_s")
    if t_raw is None:
        timeout = DEFAULT_TIMEOUT_S
    else:
        try:
            timeout = float(t_raw)
        except ValueError:
            raise InvalidArgumentError(
                f"timeout must be a number of seconds, got {t_raw!r} ({source['timeout_s']})", param="timeout_s"
            ) from None
        if not timeout > 0:
            raise InvalidArgumentError(f"timeout must be > 0 s, got {t_raw}", param="timeout_s")
    return Settings(ep, skey, pair, timeout, source)
