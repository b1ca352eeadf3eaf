#!/usr/bin/env bash
# Builds fjord's libFuzzer targets with clang (ASan + UBSan) and runs each for
# a bounded time on its seed corpus (tests/fuzz/<name>/).
#
#   tools/fuzz/fuzz.sh [--seconds N] [--junit FILE] [NAME...]
#
# CI runs every target for a short time (FJORD_FUZZ_SECONDS, default 20);
# run it for hours with --seconds 36000. A crash leaves its input under
# build/fuzz/<name>/artifacts/: copy it into tests/fuzz/<name>/ (the seed
# corpus, replayed on every run) as the regression test, then fix the bug.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
seconds=${FJORD_FUZZ_SECONDS:-20}
junit=""
names=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --junit) junit=$2; shift 2 ;;
    *) names+=("$1"); shift ;;
  esac
done
cxx=${FJORD_FUZZ_CXX:-clang++-14}
command -v "$cxx" >/dev/null || { echo "fuzz: $cxx not found (apt-get install clang-14 libclang-rt-14-dev libfuzzer-14-dev)"; exit 1; }
absl_libs=$(grep -o '"-labsl_[a-z0-9_]*"' third_party/system/BUILD.bazel | tr -d '"' | tr '\n' ' ')
out=build/fuzz
mkdir -p "$out"
pass=0; fail=0; cases=""
while IFS='|' read -r name src libs flags; do
  name=$(echo "$name" | xargs); src=$(echo "$src" | xargs); libs=$(echo "$libs" | xargs); flags=$(echo "$flags" | xargs)
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  if [ ${#names[@]} -gt 0 ] && [[ ! " ${names[*]} " =~ " $name " ]]; then continue; fi
  bin=$out/$name/fuzzer
  mkdir -p "$out/$name/artifacts" "$out/$name/corpus"
  echo "== fuzz $name: build"
  start=$(date +%s)
  if ! $cxx -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
      -I. $src $libs -o "$bin" $flags $absl_libs -lpthread 2> "$out/$name/build.log"; then
    tail -20 "$out/$name/build.log"
    fail=$((fail+1)); cases+="<testcase classname=\"fuzz\" name=\"$name\"><failure message=\"build failed\"/></testcase>"
    continue
  fi
  echo "== fuzz $name: ${seconds}s on tests/fuzz/$name + build/fuzz/$name/corpus"
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 "$bin" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -artifact_prefix="$out/$name/artifacts/" -print_final_stats=1 \
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
