#!/usr/bin/env bash
# Checks that fjord's own C++ and CUDA sources are formatted as .clang-format
# says (Google style, 100 columns), with Debian 12's clang-format 14: another
# major version formats some constructs differently, so no other is used.
#
#   bash tools/check_format.sh [--fix] [--junit FILE] [PATH...]
#     PATH...       files or folders to check (default: every tracked
#                   *.cc, *.h, *.cu, *.cuh outside third_party/)
#     --fix         rewrite the files in place instead of checking
#     --junit FILE  also write the result as one JUnit test case (tools/test.sh)
# Exit 0 when every file is formatted; 1 with each file's first differing
# lines (file:line:column) and the command that fixes them; 2 on usage errors
# or when clang-format 14 is missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

fix=0 junit="" paths=()
while [ $# -gt 0 ]; do
  case $1 in
    --fix) fix=1; shift ;;
    --junit) junit=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "check_format.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) paths+=("$1"); shift ;;
  esac
done

cf=""
for c in clang-format-14 clang-format; do
  if command -v "$c" >/dev/null && "$c" --version | grep -q 'version 14\.'; then cf=$c; break; fi
done
if [ -z "$cf" ]; then
  echo "check_format.sh: clang-format 14 not found (Debian 12: apt-get install clang-format-14; tools/bootstrap.sh installs it)" >&2
  exit 2
fi

files=()
if [ ${#paths[@]} -eq 0 ]; then
  mapfile -t files < <(git ls-files -- '*.cc' '*.h' '*.cu' '*.cuh' ':!:third_party/**')
else
  for p in "${paths[@]}"; do
    if [ -d "$p" ]; then
      mapfile -t -O ${#files[@]} files < <(find "$p" -type f \( -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | LC_ALL=C sort)
    elif [ -f "$p" ]; then
      files+=("$p")
    else
      echo "check_format.sh: no such file or folder: $p" >&2
      exit 2
    fi
  done
fi

if [ $fix = 1 ]; then
  printf '%s\0' "${files[@]}" | xargs -0 -r -n 50 -P 2 "$cf" -i --style=file
  echo "formatted ${#files[@]} files with $($cf --version | sed 's/.*version //')"
  exit 0
fi

start=$SECONDS
report=$(mktemp)
trap 'rm -f "$report"' EXIT
# --dry-run --Werror: one "file:line:col: error: code should be
# clang-formatted" per differing place, exit 1 for any file that differs.
printf '%s\0' "${files[@]}" | xargs -0 -r -n 50 -P 2 "$cf" --style=file --dry-run --Werror \
  > "$report" 2>&1 || true
bad=$(grep -oE '^[^:]+:[0-9]+:[0-9]+: error' "$report" | cut -d: -f1 | LC_ALL=C sort -u || true)
n_bad=$(printf '%s' "$bad" | grep -c . || true)
elapsed=$((SECONDS - start))

if [ -n "$junit" ]; then
  mkdir -p "$(dirname "$junit")"
  {
    echo '<?xml version="1.0" encoding="UTF-8"?>'
    echo "<testsuite name=\"clang-format\" tests=\"1\" failures=\"$([ "$n_bad" = 0 ] && echo 0 || echo 1)\" time=\"$elapsed\">"
    echo "  <testcase classname=\"format\" name=\"clang_format_14\" time=\"$elapsed\">"
    if [ "$n_bad" != 0 ]; then
      echo "    <failure message=\"$n_bad files not formatted\"><![CDATA["
      printf '%s\n' "$bad"
      echo "]]></failure>"
    fi
    echo "  </testcase>"
    echo "</testsuite>"
  } > "$junit"
fi

if [ "$n_bad" = 0 ]; then
  echo "format: ${#files[@]} files formatted as .clang-format says ($cf, ${elapsed} s)"
  exit 0
fi
echo "format: $n_bad of ${#files[@]} files are not formatted as .clang-format says ($cf):" >&2
for f in $bad; do
  grep -m 3 -E "^$f:[0-9]+:[0-9]+: error" "$report" | sed 's/: error: code should be clang-formatted.*/: differs from clang-format/' >&2
done
echo "fix them with: bash tools/check_format.sh --fix $(printf '%s ' $bad)" >&2
exit 1
