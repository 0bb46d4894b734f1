#!/usr/bin/env bash
# Debian packages some tests need (PostgreSQL server, Chromium; wrk for `make bench`). Installed when
# missing and we are root with apt-get; otherwise those tests skip with a clear message.
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
# Extra packages named on the command line (e.g. `wrk` for the benchmarks).
for pkg in "$@"; do command -v "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: cannot install ${need[*]} (not root or no apt-get): the tests that need them will skip"
  exit 0
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
(apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}") >/tmp/apt-install.log 2>&1 \
  || { echo "note: apt-get install ${need[*]} failed (see /tmp/apt-install.log): those tests will skip"; tail -5 /tmp/apt-install.log; }
exit 0
