#!/usr/bin/env bash
# CI: proves that both enclave images' binaries are bit-for-bit reproducible, and that they are
# two images. Builds enclave-init with tools/scripts/reproducible-build.sh (the sealed release image) and
# with --unsealed (the unsealed image), each twice, from two different checkout paths with two
# different CARGO_HOMEs and target directories, and fails unless each pair is byte-identical,
# none holds a path of the machine that built it, and the two images' SHA-384s (hence their
# PCR0s) differ although they come from the same commit. The same goes for the SBOMs
# (enclave-init.cdx.json, enclave-init-unsealed.cdx.json) the builds write beside the binaries.
#
#   1. this checkout, as it is (its tracked files must be committed), with the caller's CARGO_HOME;
#   2. a fresh clone of the same commit under a deeper, differently named directory in /tmp, with
#      its own CARGO_HOME (the registry cache copied over, sources unpacked anew) and target dir.
#
# The first build's output stays in target/ for the QEMU boot test to use.
set -euo pipefail
cd "$(dirname "$0")/../.."
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
hash_a=$(tools/scripts/reproducible-build.sh | tail -n 1)
hash_ua=$(tools/scripts/reproducible-build.sh --unsealed | tail -n 1)
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
hash_b=$(env -u CARGO_TARGET_DIR CARGO_HOME="$cargo_home_b" "$clone/tools/scripts/reproducible-build.sh" | tail -n 1)
hash_ub=$(env -u CARGO_TARGET_DIR CARGO_HOME="$cargo_home_b" "$clone/tools/scripts/reproducible-build.sh" --unsealed | tail -n 1)
bin_b=$clone/target/x86_64-unknown-linux-musl/release/enclave-init
time_b=$(( $(date +%s) - started_b ))

# No path of either build may be inside any binary or SBOM.
for bin in "$bin_a" "$bin_b" "$bin_a.cdx.json" "$bin_b.cdx.json" \
  "$bin_a-unsealed" "$bin_b-unsealed" "$bin_a-unsealed.cdx.json" "$bin_b-unsealed.cdx.json"; do
  [ -f "$bin" ] || die "$bin is missing"
  for p in "$root" "$clone" "$work" "$(realpath -m "$cargo_home_a")" "$HOME"; do
    if grep -qaF "$p/" "$bin"; then
      die "$bin contains the build path $p: $(grep -aoF "$p/" "$bin" | head -n 1)"
    fi
  done
done

# Each image: the two builds identical, binaries and SBOMs; each SBOM names its binary's hash.
same() { # image a b hash_a
  local image=$1 a=$2 b=$3 hash=$4
  if ! cmp -s "$a" "$b"; then
    say "$image: sha384 $(sha384sum "$a" | awk '{print $1}')  $a"
    say "$image: sha384 $(sha384sum "$b" | awk '{print $1}')  $b"
    say "sizes: $(stat -c %s "$a") vs $(stat -c %s "$b"); first differing bytes:"
    cmp -l "$a" "$b" | head -n 10 >&2 || true
    diff <(strings -n 8 "$a") <(strings -n 8 "$b") | head -n 20 >&2 || true
    die "the two builds of the $image image differ"
  fi
  if ! cmp -s "$a.cdx.json" "$b.cdx.json"; then
    diff "$a.cdx.json" "$b.cdx.json" | head -n 20 >&2 || true
    die "the two builds' SBOMs of the $image image differ"
  fi
  grep -q "\"content\": \"$hash\"" "$a.cdx.json" || die "the $image SBOM does not give its binary's SHA-384"
  say "$image image identical: $(stat -c %s "$a") bytes, sha384 $hash"
  say "$image SBOMs identical: $(stat -c %s "$a.cdx.json") bytes, sha256 $(sha256sum "$a.cdx.json" | awk '{print $1}')"
}
[ "$hash_a" = "$hash_b" ] && [ "$hash_ua" = "$hash_ub" ] || say "the scripts' printed hashes differ"
same sealed "$bin_a" "$bin_b" "$hash_a"
same unsealed "$bin_a-unsealed" "$bin_b-unsealed" "$hash_ua"
grep -q '"value": "unsealed"' "$bin_a-unsealed.cdx.json" || die "the unsealed SBOM does not name its feature"
# One image, one rule set: the same commit gives two images with two measurements.
[ "$hash_a" != "$hash_ua" ] || die "the sealed and unsealed images have the same SHA-384"
say "builds took ${time_a} s and ${time_b} s (both images each)"
say "two images from commit $commit: sealed sha384 $hash_a, unsealed sha384 $hash_ua"
echo "reproducible: 2 passed, 0 failed"
