#!/usr/bin/env bash
# Installs everything fjord needs on a Debian 12 machine, as root. Idempotent:
# a second run checks and skips what is there.
#   - Debian packages: Bazel 4.2.3 (bazel-bootstrap) + platforms, the -dev
#     libraries fjord links (ZeroMQ, Abseil, GoogleTest, nlohmann-json,
#     yaml-cpp, libsodium, PCRE2, utf8proc, SQLite, cpp-httplib), clang for fuzzing,
#     Chromium (headless: tests/interop/test_report_html.py opens the HTML
#     comparison report in it).
#   - A virtualenv outside the repo (FJORD_VENV, default ~/.cache/fjord/venv)
#     with the torch wheel (LibTorch's headers and libraries) and the Python
#     packages in tools/requirements.txt, and the fjord Python SDK (sdk/python,
#     reinstalled when its sources change).
# The CUDA toolkit is optional (CUDA_HOME or /usr/local/cuda): with it, the
# .cu kernels compile and link; without it, a CPU-only build.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${FJORD_VENV:-$HOME/.cache/fjord/venv}

say() { echo "[bootstrap] $*" >&2; }
die() { echo "[bootstrap] ERROR: $*" >&2; exit 1; }

# --- OS -----------------------------------------------------------------------
if [ "${FJORD_SKIP_OS_CHECK:-0}" != 1 ]; then
  [ -r /etc/os-release ] || die "cannot read /etc/os-release: fjord's setup supports Debian 12 (bookworm). Set FJORD_SKIP_OS_CHECK=1 to try anyway."
  . /etc/os-release
  if [ "${ID:-}" != debian ] || [ "${VERSION_ID:-}" != 12 ]; then
    die "unsupported OS '${PRETTY_NAME:-unknown}': fjord's setup supports Debian 12 (bookworm), whose bazel-bootstrap 4.2.3 and -dev packages the build uses. Set FJORD_SKIP_OS_CHECK=1 to try anyway."
  fi
fi

# --- Debian packages ------------------------------------------------------------
pkgs=(bazel-bootstrap bazel-platforms default-jdk-headless g++ python3 python3-venv
      libzmq3-dev cppzmq-dev libabsl-dev libgtest-dev libgmock-dev nlohmann-json3-dev
      libyaml-cpp-dev libsodium-dev libpcre2-dev libutf8proc-dev libsqlite3-dev libcpp-httplib-dev
      clang-14 clang-format-14 libclang-rt-14-dev libfuzzer-14-dev libgloo-dev
      slurmctld slurmd slurm-client munge chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing Debian packages (${missing[*]}); run as root or install them with apt-get."
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || die "apt-get update failed: no network to the Debian mirrors? Check /etc/apt/sources.list and connectivity."
  apt-get install -y -q "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed (see above)."
else
  say "Debian packages: all present"
fi
[ -d /usr/share/bazel/tools/platforms ] || die "/usr/share/bazel/tools/platforms missing: install Debian's bazel-platforms package."

# --- Python virtualenv with the torch wheel --------------------------------------
py=$(command -v python3) || die "python3 not found"
if [ ! -x "$venv/bin/python" ]; then
  say "creating virtualenv $venv"
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv" || die "cannot create a virtualenv at $venv (install python3-venv)."
fi
stamp="$venv/.fjord-requirements"
if ! cmp -s "$here/requirements.txt" "$stamp"; then
  say "installing Python packages into $venv (torch wheel: ~3 GB with its CUDA libraries)"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"; then
    die "pip could not install tools/requirements.txt: no network to PyPI? Set PIP_INDEX_URL to a reachable mirror, or point FJORD_LIBTORCH_DIR at an existing LibTorch (the C++ build needs only that; the interop tests need the Python packages)."
  fi
  cp "$here/requirements.txt" "$stamp"
else
  say "virtualenv $venv: requirements up to date"
fi
"$venv/bin/python" - <<'PY' || die "torch in $venv does not import; delete $venv and run again."
import os, torch
d = os.path.dirname(torch.__file__)
assert os.path.isfile(os.path.join(d, "include", "torch", "script.h")), "the torch wheel has no C++ headers"
PY

# --- the fjord Python SDK (sdk/python) into the venv ---------------------------
# Reinstalled when its sources change (a stamp holds their checksum). Built
# from a copy, offline, with the venv's setuptools: nothing is written into
# the source tree and pyzmq (its only dependency) is already installed above.
sdk_src="$here/../sdk/python"
sdk_stamp="$venv/.fjord-sdk-python"
sdk_sum=$(cd "$sdk_src" && find . -type f \( -name '*.py' -o -name '*.toml' -o -name '*.md' -o -name py.typed \) \
            -not -path './build/*' -not -path '*.egg-info/*' -not -path '*__pycache__*' | LC_ALL=C sort |
          xargs sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$sdk_stamp" 2>/dev/null)" != "$sdk_sum" ]; then
  say "installing the fjord Python SDK (sdk/python) into $venv"
  sdk_tmp=$(mktemp -d)
  cp -r "$sdk_src" "$sdk_tmp/python"
  rm -rf "$sdk_tmp/python/build" "$sdk_tmp/python"/*.egg-info
  if ! "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --no-index --force-reinstall \
       --no-deps "$sdk_tmp/python"; then
    rm -rf "$sdk_tmp"
    die "pip could not install sdk/python into $venv (see above)."
  fi
  rm -rf "$sdk_tmp"
  echo "$sdk_sum" > "$sdk_stamp"
else
  say "fjord Python SDK in $venv: up to date"
fi

if [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
  say "CUDA toolkit: ${CUDA_HOME:-/usr/local/cuda} (kernels will be compiled)"
else
  say "CUDA toolkit: none (CPU-only build)"
fi
say "ready"
