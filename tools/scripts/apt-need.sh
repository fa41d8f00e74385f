#!/usr/bin/env bash
# Makes sure Debian packages are installed: `tools/scripts/apt-need.sh WHO PACKAGE...`.
#
# Installs only what is missing, with `apt-get install -y --no-install-recommends`, after one
# `apt-get update` (only when something is missing). Not root: prints the exact command and
# fails. Not Debian (no dpkg-query): says which packages it could not check and goes on, so the
# caller's own checks (the tests require every peer) report what is really missing.
#
# "Installed" means dpkg's status is `installed`. `dpkg -s` alone is not enough: it also
# succeeds for a package that was removed but left its configuration files behind (state
# `rc`, e.g. openssl after `apt-get remove openssl`).
set -euo pipefail
who=${1:?usage: apt-need.sh WHO PACKAGE...}
shift
say() { printf '%s: %s\n' "$who" "$*" >&2; }

if ! command -v dpkg-query >/dev/null; then
  say "not a Debian system: cannot check for $*; install their equivalents if a test says so"
  exit 0
fi
missing=()
for p in "$@"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  say "missing Debian packages: ${missing[*]}. As root, run:"
  printf '  apt-get update && apt-get install -y --no-install-recommends %s\n' "${missing[*]}" >&2
  exit 1
fi
say "installing missing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
for p in "${missing[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] \
    || { say "apt-get did not install $p"; exit 1; }
done
