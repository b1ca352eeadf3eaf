#!/usr/bin/env bash
# Builds fjord's libFuzzer targets with clang (ASan + UBSan) and runs each for
# a bounded time on its seed corpus (tests/fuzz/<name>/).
#
#   tools/fuzz/fuzz.sh [--seconds N] [--fork N] [--junit FILE] [NAME...]
#
# CI runs every target for a short time (FJORD_FUZZ_SECONDS, default 20).
# Long campaigns, e.g. overnight on a many-core machine:
#   tools/fuzz/fuzz.sh --seconds 36000                 each target 10 h, one after another
#   tools/fuzz/fuzz.sh --seconds 3600 --fork 8 dataset one target, 8 fuzzing processes
# The corpus each run grows is kept in build/fuzz/<name>/corpus and reused.
# A crash leaves its input under build/fuzz/<name>/artifacts/: copy it into
# tests/fuzz/<name>/ (the seed corpus, replayed on every run) as the
# regression test, then fix the bug. Replay one input:
#   build/fuzz/<name>/fuzzer tests/fuzz/<name>/<file>
# Binaries are cached by a hash of the compiler, the flags and every source
# under runtime/ lora/ daemon/ sdk/ tests/fuzz/ (FJORD_FUZZ_CACHE, default
# ~/.cache/fjord/fuzz), so an unchanged tree does not rebuild them.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
seconds=${FJORD_FUZZ_SECONDS:-20}
fork=0
junit=""
names=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --fork) fork=$2; shift 2 ;;
    --junit) junit=$2; shift 2 ;;
    *) names+=("$1"); shift ;;
  esac
done
cxx=${FJORD_FUZZ_CXX:-clang++-14}
command -v "$cxx" >/dev/null || { echo "fuzz: $cxx not found (apt-get install clang-14 libclang-rt-14-dev libfuzzer-14-dev)"; exit 1; }
absl_libs=$(grep -o '"-labsl_[a-z0-9_]*"' third_party/system/BUILD.bazel | tr -d '"' | tr '\n' ' ')
out=build/fuzz
mkdir -p "$out"
cache=${FJORD_FUZZ_CACHE:-$HOME/.cache/fjord/fuzz}
mkdir -p "$cache"
cxxflags="-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
# Every first-party source a target can include: any change rebuilds them all.
tree_hash=$( { "$cxx" --version; echo "$cxxflags $absl_libs"; git ls-files -s -- runtime lora daemon sdk tests/fuzz ':!tests/fuzz/*/*' 2>/dev/null;
               git diff HEAD -- runtime lora daemon sdk tests/fuzz 2>/dev/null; git ls-files -o --exclude-standard -- runtime lora daemon sdk tests/fuzz | xargs -r cat; } | sha256sum | cut -c1-16)
pass=0; fail=0; cases=""
while IFS='|' read -r name src libs flags; do
  name=$(echo "$name" | xargs); src=$(echo "$src" | xargs); libs=$(echo "$libs" | xargs); flags=$(echo "$flags" | xargs)
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  if [ ${#names[@]} -gt 0 ] && [[ ! " ${names[*]} " =~ " $name " ]]; then continue; fi
  bin=$out/$name/fuzzer
  mkdir -p "$out/$name/artifacts" "$out/$name/corpus"
  start=$(date +%s)
  cached="$cache/$name-$(echo "$tree_hash $src $libs $flags" | sha256sum | cut -c1-16)"
  if [ -x "$cached" ]; then
    echo "== fuzz $name: cached build"
    cp "$cached" "$bin"
  else
    echo "== fuzz $name: build"
    # shellcheck disable=SC2086
    if ! $cxx $cxxflags -I. $src $libs -o "$bin" $flags $absl_libs -lpthread 2> "$out/$name/build.log"; then
      tail -20 "$out/$name/build.log"
      fail=$((fail+1)); cases+="<testcase classname=\"fuzz\" name=\"$name\"><failure message=\"build failed\"/></testcase>"
      continue
    fi
    cp "$bin" "$cached.tmp.$$" && mv "$cached.tmp.$$" "$cached"
  fi
  echo "== fuzz $name: ${seconds}s on tests/fuzz/$name + build/fuzz/$name/corpus"
  fork_flags=()
  [ "$fork" -gt 0 ] && fork_flags=(-fork="$fork" -ignore_crashes=0)
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 "$bin" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -artifact_prefix="$out/$name/artifacts/" -print_final_stats=1 "${fork_flags[@]}" \
      "$out/$name/corpus" "tests/fuzz/$name" > "$out/$name/run.log" 2>&1; then
    grep -E "stat::number_of_executed_units|Done" "$out/$name/run.log" | tail -2
    pass=$((pass+1)); cases+="<testcase classname=\"fuzz\" name=\"$name\" time=\"$(( $(date +%s) - start ))\"/>"
  else
    tail -40 "$out/$name/run.log"
    fail=$((fail+1)); cases+="<testcase classname=\"fuzz\" name=\"$name\"><failure message=\"crash: see build/fuzz/$name\"/></testcase>"
  fi
done < tools/fuzz/targets.txt
[ -n "$junit" ] && echo "<testsuite name=\"fuzz\" tests=\"$((pass+fail))\" failures=\"$fail\">$cases</testsuite>" > "$junit"
echo "fuzz: $pass passed, $fail failed"
[ $fail = 0 ]
