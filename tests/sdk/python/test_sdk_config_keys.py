"""fjord.keys (key files as the C++ SDK writes them) and fjord.config (the
connection settings the SDK and the CLI share: arguments > FJORD_* > config file).

    ~/.cache/fjord/venv/bin/python -m pytest -q tests/sdk/python/test_sdk_config_keys.py
"""

import os
import shutil
import stat
import subprocess
import sys

import pytest
import zmq

import fjord
from fjord import config, keys


def test_write_and_load_key_files(tmp_path):
    pair = keys.write_key_files(tmp_path / "me")
    assert stat.S_IMODE(os.stat(tmp_path / "me.key").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "me.pub").st_mode) == 0o644
    assert (tmp_path / "me.pub").read_text() == pair.public_key + "\n"
    assert keys.load_secret_key_file(tmp_path / "me.key") == pair
    assert keys.load_public_key_file(tmp_path / "me.pub") == pair.public_key
    assert zmq.curve_public(pair.secret_key.encode()).decode() == pair.public_key
    with pytest.raises(fjord.AlreadyExistsError, match="not overwriting a key"):
        keys.write_key_files(tmp_path / "me")


def test_key_file_errors(tmp_path):
    with pytest.raises(fjord.NotFoundError, match="does not exist"):
        keys.load_secret_key_file(tmp_path / "none.key")
    pair = keys.write_key_files(tmp_path / "k")
    os.chmod(tmp_path / "k.key", 0o644)
    with pytest.raises(fjord.PermissionDeniedError, match=r"mode 0644: group or others can access it; run chmod 600"):
        keys.load_secret_key_file(tmp_path / "k.key")
    (tmp_path / "bad.key").write_text("not a key\n")
    os.chmod(tmp_path / "bad.key", 0o600)
    with pytest.raises(fjord.InvalidArgumentError, match="does not hold a Z85 CURVE key") as e:
        keys.load_secret_key_file(tmp_path / "bad.key")
    assert pair.secret_key not in str(e.value)
    assert not keys.valid_z85_key("x" * 39) and keys.valid_z85_key(pair.public_key)


def write(path, text):
    path.write_text(text)
    return str(path)


def test_precedence_argument_env_file(tmp_path):
    server = keys.write_key_files(tmp_path / "server")
    me = keys.write_key_files(tmp_path / "me")
    cfg = write(tmp_path / "client.yaml", "# fjord client\nendpoint: tcp://file-host:7700\n"
                "server_public_key: server.pub   # a file, relative to this one\nkeys: me.key\ntimeout_s: 3\n")
    s = config.resolve(config_file=cfg, env={})
    assert (s.endpoint, s.server_public_key, s.client_keys, s.timeout_s) == \
        ("tcp://file-host:7700", server.public_key, me, 3.0)
    assert s.source["endpoint"] == f"{cfg}:2"
    s = config.resolve(config_file=cfg, env={"FJORD_ENDPOINT": "ipc:///tmp/env.sock", "FJORD_TIMEOUT": "7"})
    assert (s.endpoint, s.timeout_s, s.source["endpoint"]) == ("ipc:///tmp/env.sock", 7.0, "FJORD_ENDPOINT")
    s = config.resolve(endpoint="tcp://arg:1", timeout_s=1.5, config_file=cfg, env={"FJORD_ENDPOINT": "tcp://env:2"})
    assert (s.endpoint, s.timeout_s) == ("tcp://arg:1", 1.5)
    # FJORD_CONFIG names the file; the default file is used when it exists.
    s = config.resolve(env={"FJORD_CONFIG": cfg})
    assert s.endpoint == "tcp://file-host:7700"
    os.makedirs(tmp_path / "xdg" / "fjord")
    write(tmp_path / "xdg" / "fjord" / "client.yaml", "endpoint: tcp://xdg:9\n")
    assert config.resolve(env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}).endpoint == "tcp://xdg:9"


def test_plain_settings_and_defaults(tmp_path):
    s = config.resolve(endpoint="ipc:///tmp/x.sock", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert s.server_public_key is None and s.client_keys is None and s.timeout_s == 10.0


def test_config_errors_name_the_place(tmp_path):
    with pytest.raises(fjord.InvalidArgumentError, match="no daemon endpoint: .*FJORD_ENDPOINT"):
        config.resolve(env={"XDG_CONFIG_HOME": str(tmp_path)})
    with pytest.raises(fjord.InvalidArgumentError, match=r"endpoint must be tcp://HOST:PORT or ipc://PATH, got 'http://x' \(argument\)"):
        config.resolve(endpoint="http://x", env={})
    cfg = write(tmp_path / "c.yaml", "endpoint: tcp://h:1\nenpoint: tcp://typo:2\n")
    with pytest.raises(fjord.InvalidArgumentError, match=r"c.yaml:2: unknown key 'enpoint'") as e:
        config.resolve(config_file=cfg, env={})
    assert e.value.param == "enpoint"
    cfg = write(tmp_path / "c2.yaml", "endpoint: tcp://h:1\n  nested: 1\n")
    with pytest.raises(fjord.InvalidArgumentError, match=r"c2.yaml:2: expected 'key: value'"):
        config.resolve(config_file=cfg, env={})
    with pytest.raises(fjord.NotFoundError, match="client config file .* does not exist"):
        config.resolve(env={"FJORD_CONFIG": str(tmp_path / "missing.yaml")})
    server = keys.generate_keypair()
    with pytest.raises(fjord.InvalidArgumentError, match="needs this client's keys too") as e:
        config.resolve(endpoint="tcp://h:1", server_public_key=server.public_key, env={})
    assert e.value.param == "keys"
    with pytest.raises(fjord.InvalidArgumentError, match="neither a Z85 key .* nor an existing file"):
        config.resolve(endpoint="tcp://h:1", server_public_key="server.pub", env={})
    with pytest.raises(fjord.InvalidArgumentError, match="timeout must be a number of seconds, got 'soon' \\(FJORD_TIMEOUT\\)"):
        config.resolve(endpoint="tcp://h:1", env={"FJORD_TIMEOUT": "soon"})


def test_client_key_arguments(tmp_path):
    server, me = keys.generate_keypair(), keys.write_key_files(tmp_path / "me")
    c = fjord.Client("ipc:///tmp/none.sock", server_public_key=server.public_key, secret_key=me.secret_key,
                     public_key=me.public_key, config_file=os.devnull)
    assert c.settings.client_keys == me
    c = fjord.Client("ipc:///tmp/none.sock", server_public_key=server.public_key,
                     secret_key=str(tmp_path / "me.key"), config_file=os.devnull)
    assert c.settings.client_keys == me
    c = fjord.Client("ipc:///tmp/none.sock", server_public_key=server.public_key, keys_file=tmp_path / "me.key",
                     config_file=os.devnull)
    assert c.settings.client_keys == me
    with pytest.raises(fjord.InvalidArgumentError, match="public_key does not belong to secret_key"):
        fjord.Client("ipc:///tmp/none.sock", server_public_key=server.public_key, secret_key=me.secret_key,
                     public_key=server.public_key, config_file=os.devnull)


def test_package_installs_with_pip_and_ships_py_typed(tmp_path):
    """`pip install ./sdk/python` works offline (setuptools from the venv) and the
    installed package carries its type marker."""
    # From a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = str(tmp_path / "src")
    shutil.copytree(os.path.join(os.path.dirname(__file__), "..", "..", "..", "sdk", "python"), src,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index",
         "--target", str(tmp_path / "site"), src],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "site" / "fjord" / "py.typed").exists()
    out = subprocess.run([sys.executable, "-c", "import fjord, sys; print(fjord.__file__, fjord.__version__)"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "site") in out.stdout and "0.1.0" in out.stdout
