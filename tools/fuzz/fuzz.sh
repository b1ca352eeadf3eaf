#!/usr/bin/env bash
# Builds fjord's libFuzzer targets with clang (ASan + UBSan) and runs each for
# a bounded time on its seed corpus (tests/fuzz/<name>/).
#
#   tools/fuzz/fuzz.sh [--seconds N] [--fork N] [--junit FILE] [NAME...]
#
# CI runs every target for a short time (FJORD_FUZZ_SECONDS, default 20).
# Sources are compiled (each once, shared by the targets that use it), targets
# linked, then run, FJORD_FUZZ_JOBS at a time (default: one per CPU).
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
jobs=${FJORD_FUZZ_JOBS:-$(nproc)}
[ "$fork" -gt 0 ] && jobs=1  # a --fork campaign takes the machine itself

# The selected targets, in targets.txt's order.
t_names=(); t_src=(); t_libs=(); t_flags=()
while IFS='|' read -r name src libs flags; do
  name=$(echo "$name" | xargs); src=$(echo "$src" | xargs); libs=$(echo "$libs" | xargs); flags=$(echo "$flags" | xargs)
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  if [ ${#names[@]} -gt 0 ] && [[ ! " ${names[*]} " =~ " $name " ]]; then continue; fi
  t_names+=("$name"); t_src+=("$src"); t_libs+=("$libs"); t_flags+=("$flags")
done < tools/fuzz/targets.txt

# Each step writes its outcome to build/fuzz/<name>/status ("ok", or
# "build" / "crash" on failure) so that steps can run side by side.
cached_bin() {  # index
  echo "$cache/${t_names[$1]}-$(echo "$tree_hash ${t_src[$1]} ${t_libs[$1]} ${t_flags[$1]}" | sha256sum | cut -c1-16)"
}

# Sources shared by several targets (the tokenizer's, the protocol's) are
# compiled once per tree hash into build/fuzz/obj/<hash>/.
objdir=$out/obj/$tree_hash
obj_of() { local s=${1//\//_}; echo "$objdir/${s%.cc}.o"; }
compile_one() {  # source
  local o; o=$(obj_of "$1")
  [ -f "$o" ] && return
  # shellcheck disable=SC2086
  if $cxx $cxxflags -I. -c "$1" -o "$o.tmp.$$" 2> "$o.log"; then mv "$o.tmp.$$" "$o"; rm -f "$o.log"; fi
}

link_one() {  # index
  local i=$1 name=${t_names[$1]} bin cached s objs=() missing=""
  bin=$out/$name/fuzzer
  for s in ${t_src[$i]} ${t_libs[$i]}; do
    objs+=("$(obj_of "$s")")
    [ -f "$(obj_of "$s")" ] || missing+=" $s"
  done
  if [ -n "$missing" ]; then
    echo "== fuzz $name: build failed (compiling$missing)"
    for s in $missing; do cat "$(obj_of "$s").log"; done | tee "$out/$name/build.log" | head -40
    echo build > "$out/$name/status"
    return
  fi
  # shellcheck disable=SC2086
  if ! $cxx $cxxflags "${objs[@]}" -o "$bin" ${t_flags[$i]} $absl_libs -lpthread 2> "$out/$name/build.log"; then
    echo "== fuzz $name: link failed"; tail -20 "$out/$name/build.log"
    echo build > "$out/$name/status"
    return
  fi
  echo "== fuzz $name: built"
  cached=$(cached_bin "$i")
  cp "$bin" "$cached.tmp.$$.$i" && mv "$cached.tmp.$$.$i" "$cached"
  echo ok > "$out/$name/status"
}

run_one() {  # index
  local name=${t_names[$1]} bin start fork_flags=()
  bin=$out/$name/fuzzer
  [ "$(cat "$out/$name/status" 2>/dev/null)" = ok ] || return
  start=$(date +%s)
  [ "$fork" -gt 0 ] && fork_flags=(-fork="$fork" -ignore_crashes=0)
  if ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 "$bin" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -artifact_prefix="$out/$name/artifacts/" -print_final_stats=1 "${fork_flags[@]}" \
      "$out/$name/corpus" "tests/fuzz/$name" > "$out/$name/run.log" 2>&1; then
    echo "== fuzz $name: ${seconds}s on tests/fuzz/$name + build/fuzz/$name/corpus: $(grep -E "^Done" "$out/$name/run.log" | tail -1)"
    echo "$(( $(date +%s) - start ))" > "$out/$name/time"
  else
    echo "== fuzz $name: FAILED"; tail -40 "$out/$name/run.log"
    echo crash > "$out/$name/status"
  fi
}

# Runs "$1 arg" for every following arg, at most $jobs at a time.
for_each() {
  local f=$1 a; shift
  for a in "$@"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    "$f" "$a" &
  done
  wait
}

# Cached binaries are copied; the other targets' sources are compiled, then
# those targets linked.
sources=(); to_link=()
for i in "${!t_names[@]}"; do
  name=${t_names[$i]}
  rm -f "$out/$name/status" "$out/$name/time"
  mkdir -p "$out/$name/artifacts" "$out/$name/corpus"
  cached=$(cached_bin "$i")
  if [ -x "$cached" ]; then
    echo "== fuzz $name: cached build"
    cp "$cached" "$out/$name/fuzzer" && echo ok > "$out/$name/status"
  else
    to_link+=("$i"); sources+=(${t_src[$i]} ${t_libs[$i]})
  fi
done
if [ ${#sources[@]} -gt 0 ]; then
  find "$out/obj" -mindepth 1 -maxdepth 1 ! -name "$tree_hash" -exec rm -rf {} + 2>/dev/null
  mkdir -p "$objdir"
  mapfile -t sources < <(printf '%s\n' "${sources[@]}" | sort -u)
  echo "== fuzz: compiling ${#sources[@]} sources, $jobs at a time"
  for_each compile_one "${sources[@]}"
fi
for_each link_one "${to_link[@]}"
for_each run_one "${!t_names[@]}"

pass=0; fail=0; cases=""
for name in "${t_names[@]}"; do
  case "$(cat "$out/$name/status" 2>/dev/null)" in
    ok) pass=$((pass+1)); cases+="<testcase classname=\"fuzz\" name=\"$name\" time=\"$(cat "$out/$name/time" 2>/dev/null || echo 0)\"/>" ;;
    build) fail=$((fail+1)); cases+="<testcase classname=\"fuzz\" name=\"$name\"><failure message=\"build failed: see build/fuzz/$name/build.log\"/></testcase>" ;;
    *) fail=$((fail+1)); cases+="<testcase classname=\"fuzz\" name=\"$name\"><failure message=\"crash: see build/fuzz/$name\"/></testcase>" ;;
  esac
done
[ -n "$junit" ] && echo "<testsuite name=\"fuzz\" tests=\"$((pass+fail))\" failures=\"$fail\">$cases</testsuite>" > "$junit"
echo "fuzz: $pass passed, $fail failed"
[ $fail = 0 ]
