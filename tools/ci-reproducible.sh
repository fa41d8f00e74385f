#!/usr/bin/env bash
# CI: proves that the enclave binary is bit-for-bit reproducible. Builds enclave-init with
# tools/reproducible-build.sh twice, from two different checkout paths with two different
# CARGO_HOMEs and target directories, and fails unless both binaries are byte-identical and
# neither holds a path of the machine that built it. The same goes for the SBOMs
# (enclave-init.cdx.json) that the builds write beside the binaries.
#
#   1. this checkout, as it is (its tracked files must be committed), with the caller's CARGO_HOME;
#   2. a fresh clone of the same commit under a deeper, differently named directory in /tmp, with
#      its own CARGO_HOME (the registry cache copied over, sources unpacked anew) and target dir.
#
# The first build's output stays in target/ for the QEMU boot test to use.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd -P)
say() { printf 'ci-reproducible: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

if ! git diff --quiet HEAD -- 2>/dev/null; then
  die "tracked files differ from HEAD; commit them first (the clone builds HEAD)"
fi
commit=$(git rev-parse HEAD)
cargo_home_a=${CARGO_HOME:-$HOME/.cargo}

work=$(mktemp -d /tmp/ci-repro.XXXXXX)
trap 'rm -rf "$work"' EXIT
clone=$work/elsewhere/deeper/checkout-b
cargo_home_b=$work/cargo-home-b

started=$(date +%s)
say "build 1 of 2: $root (CARGO_HOME $cargo_home_a)"
hash_a=$(tools/reproducible-build.sh | tail -n 1)
bin_a=$root/target/x86_64-unknown-linux-musl/release/enclave-init
time_a=$(( $(date +%s) - started ))

git clone --quiet --no-hardlinks "$root" "$clone"
git -C "$clone" checkout --quiet --detach "$commit"
mkdir -p "$cargo_home_b/registry"
for d in index cache; do
  [ -d "$cargo_home_a/registry/$d" ] && cp -a "$cargo_home_a/registry/$d" "$cargo_home_b/registry/"
done
started_b=$(date +%s)
say "build 2 of 2: $clone (CARGO_HOME $cargo_home_b)"
hash_b=$(env -u CARGO_TARGET_DIR CARGO_HOME="$cargo_home_b" "$clone/tools/reproducible-build.sh" | tail -n 1)
bin_b=$clone/target/x86_64-unknown-linux-musl/release/enclave-init
time_b=$(( $(date +%s) - started_b ))

# No path of either build may be inside either binary or either SBOM.
for bin in "$bin_a" "$bin_b" "$bin_a.cdx.json" "$bin_b.cdx.json"; do
  [ -f "$bin" ] || die "$bin is missing"
  for p in "$root" "$clone" "$work" "$(realpath -m "$cargo_home_a")" "$HOME"; do
    if grep -qaF "$p/" "$bin"; then
      die "$bin contains the build path $p: $(grep -aoF "$p/" "$bin" | head -n 1)"
    fi
  done
done

if ! cmp -s "$bin_a" "$bin_b"; then
  say "sha384 $hash_a  $bin_a"
  say "sha384 $hash_b  $bin_b"
  say "sizes: $(stat -c %s "$bin_a") vs $(stat -c %s "$bin_b"); first differing bytes:"
  cmp -l "$bin_a" "$bin_b" | head -n 10 >&2 || true
  diff <(strings -n 8 "$bin_a") <(strings -n 8 "$bin_b") | head -n 20 >&2 || true
  die "the two builds differ"
fi
if ! cmp -s "$bin_a.cdx.json" "$bin_b.cdx.json"; then
  diff "$bin_a.cdx.json" "$bin_b.cdx.json" | head -n 20 >&2 || true
  die "the two builds' SBOMs differ"
fi
grep -q "\"content\": \"$hash_a\"" "$bin_a.cdx.json" || die "the SBOM does not give the binary's SHA-384"
say "builds took ${time_a} s and ${time_b} s"
say "identical: $(stat -c %s "$bin_a") bytes, sha384 $hash_a"
say "identical SBOMs: $(stat -c %s "$bin_a.cdx.json") bytes, sha256 $(sha256sum "$bin_a.cdx.json" | awk '{print $1}')"
echo "reproducible: 1 passed, 0 failed"
