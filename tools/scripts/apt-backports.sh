#!/usr/bin/env bash
# Installs Debian packages from bookworm-backports when missing: `tools/scripts/apt-backports.sh WHO
# PACKAGE...`. Adds the suite to apt's sources first (from the mirror this machine already uses
# for bookworm), as tools/nitro-vm/qemu/build.sh does.
#
# Why: machines of this kind come with qemu-utils 10 from bookworm-backports, which Breaks
# bookworm's own qemu-system-common 7.2, so qemu-system-x86 can only come from backports too.
set -euo pipefail
who=${1:?usage: apt-backports.sh WHO PACKAGE...}
shift
say() { printf '%s: %s\n' "$who" "$*" >&2; }
missing=()
for p in "$@"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  say "missing Debian packages (from bookworm-backports): ${missing[*]}; run this as root once"
  exit 1
fi
file=/etc/apt/sources.list.d/bidding-bookworm-backports.sources
if ! grep -qs '^Suites: bookworm-backports$' "$file"; then
  mirror=$(
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      awk '/^$/ {u=""} /^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u != "" {print u; exit}' "$f"
    done | head -n 1
  )
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  [ -n "$mirror" ] || { say "cannot tell this machine's Debian mirror from apt's sources"; exit 1; }
  say "adding bookworm-backports as $file"
  printf 'Types: deb deb-src\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" >"$file"
fi
say "installing from bookworm-backports: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends -t bookworm-backports "${missing[@]}" >/dev/null
for p in "${missing[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] \
    || { say "apt-get did not install $p"; exit 1; }
done
