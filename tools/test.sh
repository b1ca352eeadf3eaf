#!/usr/bin/env bash
# Runs fjord's whole test suite: installs what is missing (tools/bootstrap.sh),
# builds everything with Bazel (the .cu kernels with nvcc when a CUDA toolkit
# is present), runs every Bazel test (GPU-tagged tests are skipped on a
# machine without a GPU) and the Python interop tests (pytest) in the venv.
# Ends with the line "N passed, N failed" counting test cases.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/bootstrap.sh || exit 1
venv=${FJORD_VENV:-$HOME/.cache/fjord/venv}
cache=${FJORD_BAZEL_CACHE:-$HOME/.cache/fjord/bazel-disk}
mkdir -p "$cache"
logs=${FJORD_TEST_LOGS:-$root/bazel-testlogs-summary}
rm -rf "$logs" && mkdir -p "$logs"

bazel_flags=(--disk_cache="$cache")
[ "${CI:-}" = true ] && bazel_flags+=(--curses=no --color=no)

echo "== bazel build //... =="
bazel build "${bazel_flags[@]}" //...
build_rc=$?

echo "== bazel test //... =="
bazel test "${bazel_flags[@]}" //...
bazel_rc=$?

echo "== pytest tests/ =="
export FJORD_BIN_DIR="$root/bazel-bin"
"$venv/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$logs/pytest.xml" tests
pytest_rc=$?
# pytest exits 5 when it collected no test: not a failure of the suite.
[ $pytest_rc = 5 ] && pytest_rc=0

echo "== fuzz (bounded: ${FJORD_FUZZ_SECONDS:-20}s per target, ASan+UBSan) =="
bash tools/fuzz/fuzz.sh --junit "$logs/fuzz.xml"
fuzz_rc=$?

"$venv/bin/python" tools/count_results.py "$root/bazel-testlogs" "$logs/pytest.xml" "$logs/fuzz.xml"
count_rc=$?

if [ $build_rc != 0 ] || [ $bazel_rc != 0 ] || [ $pytest_rc != 0 ] || [ $fuzz_rc != 0 ] || [ $count_rc != 0 ]; then
  exit 1
fi
