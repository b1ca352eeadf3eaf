#!/usr/bin/env bash
# Runs fjord's whole test suite: installs what is missing (tools/bootstrap.sh),
# builds everything with Bazel (the .cu kernels with nvcc when a CUDA toolkit
# is present), runs the LibTorch-linked C++ tests (GPU-tagged tests are
# skipped on a machine without a GPU; the chaos and storage-fault tests in
# tests/chaos are among them), the Python tests (pytest) in the venv, the
# libFuzzer targets for a bounded time, and the C++ tests without LibTorch
# built with ASan + UBSan; first it checks that fjord's C++ is formatted as
# .clang-format says (tools/check_format.sh). Ends with the line
# "N passed, N failed" counting test cases.
#
#   FJORD_ARTIFACTS_DIR  where tests leave files for CI to show (default: the
#                        logs folder, bazel-testlogs-summary): the HTML
#                        comparison report and its screenshot
#                        (tests/interop/test_report_html.py)
#   FJORD_FUZZ_SECONDS   seconds per fuzz target (default 20)
#   FJORD_CHAOS_ROUNDS   chaos rounds (default 20; tests/chaos/chaos_test.cc)
#   FJORD_ASAN=0         no ASan + UBSan build: the C++ tests without LibTorch
#                        run plain with the others
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/bootstrap.sh || exit 1
venv=${FJORD_VENV:-$HOME/.cache/fjord/venv}
cache=${FJORD_BAZEL_CACHE:-$HOME/.cache/fjord/bazel-disk}
mkdir -p "$cache"
logs=${FJORD_TEST_LOGS:-$root/bazel-testlogs-summary}
rm -rf "$logs" && mkdir -p "$logs"

echo "== format (clang-format 14, tools/check_format.sh) =="
bash tools/check_format.sh --junit "$logs/format.xml"
format_rc=$?

bazel_flags=(--disk_cache="$cache")
[ "${CI:-}" = true ] && bazel_flags+=(--curses=no --color=no)
[ -n "${FJORD_CHAOS_ROUNDS:-}" ] && bazel_flags+=(--test_env=FJORD_CHAOS_ROUNDS="$FJORD_CHAOS_ROUNDS")

# The C++ tests split in two sets, each run once:
#  - pure: every C++ test that does not link LibTorch (the parsers: safetensors
#    header, tokenizer, JSONL data, job config, LoRA config / PEFT format
#    checks, fjordd config, keys; the protocol, the client and the CLI; fjordd
#    end to end with the fake worker). They run built with ASan + UBSan
#    (.bazelrc --config=asan, its own output tree; fjordd and the worker they
#    start are sanitized too): that run checks everything a plain run does and
#    more, so they are not also built and run plain (that took a third of a
#    cold run). `bazel test //...` still runs them plain for a developer.
#  - torch: the LibTorch-linked tests (the model, kernels, trainer,
#    fjord-train, the chaos and storage-fault tests that drive fjord-train)
#    run plain: the prebuilt libtorch_cpu.so is not instrumented, so ASan
#    cannot see inside it and reports its allocator's own memory.
# Everything else (the libraries, fjordd, fjord, fjord-train, the GPU tests
# and benchmarks, the demo model) is built plain: pytest uses those binaries.
# Tests tagged no_asan (the daemon's resident set is measured: a sanitized
# one's is not comparable) run plain with the torch set.
pure_targets=$(bazel query \
  'kind(cc_test, //...) except rdeps(//..., @libtorch//...) except attr(tags, "gpu", //...) except attr(tags, "no_asan", //...)' 2>/dev/null)
if [ -z "$pure_targets" ]; then
  echo "bazel query found no C++ tests without LibTorch"; exit 1
fi
# The pure tests left out of the plain build and run (none with FJORD_ASAN=0).
asan_only=""; [ "${FJORD_ASAN:-1}" != 0 ] && asan_only=$pure_targets
minus_pure=()
for t in $asan_only; do minus_pure+=("-$t"); done
plain_tests=$(bazel query "tests(//...) except set($asan_only)" 2>/dev/null)

# Copies the test.xml of each target that ran into $2 (so that a stale
# result of a target no longer in the set is never counted).
copy_results() {  # testlogs_dir dest targets...
  local from=$1 dest=$2 t rel; shift 2
  mkdir -p "$dest"
  for t in "$@"; do
    rel=${t#//}; rel=${rel/://}
    if [ -f "$from/$rel/test.xml" ]; then
      mkdir -p "$dest/$rel" && cp "$from/$rel/test.xml" "$dest/$rel/test.xml"
    fi
  done
}

echo "== bazel build //... (${#minus_pure[@]} C++ tests without LibTorch left to the ASan build) =="
bazel build "${bazel_flags[@]}" -- //... "${minus_pure[@]}"
build_rc=$?

echo "== bazel test //... (but those ${#minus_pure[@]}) =="
bazel test "${bazel_flags[@]}" -- //... "${minus_pure[@]}"
bazel_rc=$?
# shellcheck disable=SC2086
copy_results "$root/bazel-testlogs" "$logs/plain" $plain_tests

echo "== pytest tests/ =="
export FJORD_BIN_DIR="$root/bazel-bin"
export FJORD_ARTIFACTS_DIR="${FJORD_ARTIFACTS_DIR:-$logs}"
"$venv/bin/python" -m pytest -q -p no:cacheprovider --junitxml="$logs/pytest.xml" tests
pytest_rc=$?
# pytest exits 5 when it collected no test: not a failure of the suite.
[ $pytest_rc = 5 ] && pytest_rc=0

echo "== fuzz (bounded: ${FJORD_FUZZ_SECONDS:-20}s per target, ASan+UBSan) =="
bash tools/fuzz/fuzz.sh --junit "$logs/fuzz.xml"
fuzz_rc=$?

# --symlink_prefix=/ keeps bazel-bin and bazel-testlogs pointing at the plain
# build.
asan_rc=0
if [ "${FJORD_ASAN:-1}" != 0 ]; then
  echo "== bazel test --config=asan (ASan+UBSan: every C++ test without LibTorch) =="
  # shellcheck disable=SC2086
  bazel test "${bazel_flags[@]}" --config=asan --symlink_prefix=/ $pure_targets
  asan_rc=$?
  # shellcheck disable=SC2086
  copy_results "$(bazel info "${bazel_flags[@]}" --config=asan bazel-testlogs 2>/dev/null)" "$logs/asan" $pure_targets
fi

"$venv/bin/python" tools/count_results.py "$logs/plain" "$logs/asan" "$logs/pytest.xml" "$logs/fuzz.xml" "$logs/format.xml"
count_rc=$?

if [ $format_rc != 0 ] || [ $build_rc != 0 ] || [ $bazel_rc != 0 ] || [ $pytest_rc != 0 ] || [ $fuzz_rc != 0 ] || [ $asan_rc != 0 ] || [ $count_rc != 0 ]; then
  exit 1
fi
