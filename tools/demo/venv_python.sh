#!/usr/bin/env bash
# The runner of tools/demo's Python tests (sh_test): the venv's python, which
# has torch and transformers (FJORD_VENV, default ~/.cache/fjord/venv).
python=${FJORD_VENV:-$HOME/.cache/fjord/venv}/bin/python
[ -x "$python" ] || { echo "no $python: run tools/bootstrap.sh (or set FJORD_VENV)" >&2; exit 1; }
exec "$python" "$@"
