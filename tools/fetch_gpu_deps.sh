#!/usr/bin/env bash
# Downloads (here, where Debian's mirrors are reachable) the Debian packages the
# CMake build needs into .gpu-deps/ (ignored by git), so they can travel to a
# GPU machine that has no network: tools/gpu_check.sh unpacks them there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p .gpu-deps
grep -qx '/.gpu-deps/' .git/info/exclude 2>/dev/null || echo '/.gpu-deps/' >> .git/info/exclude
cd .gpu-deps
pkgs=(libabsl-dev libabsl20220623 libgtest-dev libgmock-dev googletest nlohmann-json3-dev
      libyaml-cpp-dev libyaml-cpp0.7 libsodium-dev libsodium23 libpcre2-dev libpcre2-8-0
      libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2 libsqlite3-dev libsqlite3-0 libzmq3-dev libzmq5
      cppzmq-dev libbsd0 libnorm1 libpgm-5.3-0 libgssapi-krb5-2
      # gloo's headers for c10d's ProcessGroupGloo (runtime/dist/world.cc)
      libgloo-dev
      # what libgssapi-krb5-2 needs in turn: the linker resolves every
      # library's dependencies when it links an executable
      libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libmd0)
apt-get download "${pkgs[@]}" >/dev/null
ls -1 | wc -l | xargs echo "debs in .gpu-deps:"
