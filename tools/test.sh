#!/usr/bin/env bash
# Runs fjord's whole test suite: installs what is missing (tools/bootstrap.sh),
# builds everything with Bazel (the .cu kernels with nvcc when a CUDA toolkit
# is present), runs every Bazel test (GPU-tagged tests are skipped on a
# machine without a GPU; the chaos and storage-fault tests in tests/chaos are
# among them), the Python tests (pytest) in the venv, the libFuzzer targets
# for a bounded time, and the pure C++ tests again under ASan + UBSan.
# Ends with the line "N passed, N failed" counting test cases.
#
#   FJORD_FUZZ_SECONDS   seconds per fuzz target (default 20)
#   FJORD_CHAOS_ROUNDS   chaos rounds (default 20; tests/chaos/chaos_test.cc)
#   FJORD_ASAN=0         skip the ASan + UBSan run
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
[ -n "${FJORD_CHAOS_ROUNDS:-}" ] && bazel_flags+=(--test_env=FJORD_CHAOS_ROUNDS="$FJORD_CHAOS_ROUNDS")

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

# ASan + UBSan (.bazelrc --config=asan, its own output tree) on every C++ test
# that does not link LibTorch: the parsers (safetensors header, tokenizer,
# JSONL data, job config, LoRA config / PEFT format checks, fjordd config,
# keys), the protocol, the client and the CLI, and fjordd end to end with the
# fake worker (fjordd and the worker built with the sanitizers too).
# LibTorch-linked tests (the model, kernels, trainer, fjord-train, and the
# chaos and storage-fault tests that drive fjord-train) are left out: the
# prebuilt libtorch_cpu.so is not instrumented, so ASan cannot see inside it
# and reports its allocator's own memory, and a sanitized build of them costs
# as much CPU as the rest of the suite. --symlink_prefix=/ keeps bazel-bin
# and bazel-testlogs pointing at the plain build.
asan_rc=0
if [ "${FJORD_ASAN:-1}" != 0 ]; then
  echo "== bazel test --config=asan (ASan+UBSan: every C++ test without LibTorch) =="
  asan_targets=$(bazel query \
    'kind(cc_test, //...) except rdeps(//..., @libtorch//...) except attr(tags, "gpu", //...)' 2>/dev/null)
  if [ -z "$asan_targets" ]; then
    echo "asan: bazel query found no targets"; asan_rc=1
  else
    # shellcheck disable=SC2086
    bazel test "${bazel_flags[@]}" --config=asan --symlink_prefix=/ $asan_targets
    asan_rc=$?
    # Count this run's results only (a stale test.xml of a target no longer
    # in the set must not count): copy them out of the ASan output tree.
    asan_out=$(bazel info "${bazel_flags[@]}" --config=asan bazel-testlogs 2>/dev/null)
    mkdir -p "$logs/asan"
    for t in $asan_targets; do
      rel=${t#//}; rel=${rel/://}
      if [ -f "$asan_out/$rel/test.xml" ]; then
        mkdir -p "$logs/asan/$rel" && cp "$asan_out/$rel/test.xml" "$logs/asan/$rel/test.xml"
      fi
    done
  fi
fi

"$venv/bin/python" tools/count_results.py "$root/bazel-testlogs" "$logs/asan" "$logs/pytest.xml" "$logs/fuzz.xml"
count_rc=$?

if [ $build_rc != 0 ] || [ $bazel_rc != 0 ] || [ $pytest_rc != 0 ] || [ $fuzz_rc != 0 ] || [ $asan_rc != 0 ] || [ $count_rc != 0 ]; then
  exit 1
fi
