#!/usr/bin/env bash
# Whole sealed auctions through enclave images booted under QEMU's `nitro-enclave` machine
# (TCG), with the real NSM device behind the guest kernel's driver, vsock through
# vhost-device-vsock (Unix sockets on the host) and KMS through a relay standing in for the
# vsock-proxy:
#
#   tools/nitro-vm/qemu/auction-test.sh [--release-enclave-init PATH]
#
#   1. tools/nitro-vm/qemu/build.sh: QEMU, the guest kernel and the vsock backend (cached);
#   2. the test image's enclave-init: `tools/scripts/reproducible-build.sh --dev-image` (the `dev`
#      feature, so that it takes --kms-ca; the same flags, so only enclave-init is compiled
#      again);
#   3. nitro-qemu-auction (tools/nitro-vm): four runs, each on a fresh S3 server, KMS
#      emulator and buyers' keys naming that image's PCR0, and a fresh boot:
#        - the test image (the emulator's CA in it, `--kms-ca /kms-ca` on its cmdline),
#          emulator with --accept-qemu-unsigned-attestation: a per-bid buyer and an envelope
#          buyer, output.csv equal to the reference, no amount in anything the parent sees;
#        - the same image, emulator without that option: KMS refuses QEMU's unsigned document;
#        - the release image: the auction fails at KMS's TLS certificate (unknown CA);
#        - the release image given --kms-ca: it refuses the option at boot.
#
# Default release enclave-init: tools/scripts/reproducible-build.sh's output (built, or brought up to date).
# Environment: AUCTION_TIMEOUT (seconds per run, default 300), NITRO_QEMU_LOG_DIR (keep the
# consoles and logs there), NITRO_QEMU_CACHE (see build.sh).
set -euo pipefail
cd "$(dirname "$0")/../../.."
root=$(pwd -P)
say() { printf 'nitro-qemu auction-test: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

release_init=""
while [ $# -gt 0 ]; do
  case $1 in
    --release-enclave-init) release_init=${2:?--release-enclave-init needs a path}; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
done
target=${CARGO_TARGET_DIR:-$root/target}
started=$(date +%s)

. tools/nitro-vm/qemu/lib.sh
nitro_qemu_parts

# A short directory: the vsock backend's Unix socket paths must fit in sun_path.
work=$(mktemp -d /tmp/nitro-qemu.XXXXXX)
cleanup() {
  nitro_qemu_end_leftovers "$work"/case*
  if [ -n "${NITRO_QEMU_LOG_DIR:-}" ]; then
    for d in "$work"/case*; do
      [ -d "$d" ] || continue
      mkdir -p "$NITRO_QEMU_LOG_DIR/auction-$(basename "$d")"
      cp "$d"/*.log "$NITRO_QEMU_LOG_DIR/auction-$(basename "$d")"/ 2>/dev/null || true
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# The dev build below passes through the release binary's path, so a release binary there is
# brought up to date first (a no-op when it is): then it must come out of the dev build unchanged.
built_release=$target/x86_64-unknown-linux-musl/release/enclave-init
if [ -z "$release_init" ] || [ "$(realpath -m "$release_init")" = "$(realpath -m "$built_release")" ]; then
  say "building the release enclave-init (tools/scripts/reproducible-build.sh)"
  tools/scripts/reproducible-build.sh >/dev/null
  release_init=$built_release
fi
[ -f "$release_init" ] || die "no enclave-init at $release_init"
# The release binary is copied first: the dev build shares its output path for a moment.
cp "$release_init" "$work/enclave-init-release"
say "building the test image's enclave-init (tools/scripts/reproducible-build.sh --dev-image)"
t=$(date +%s)
tools/scripts/reproducible-build.sh --dev-image "$work/enclave-init-dev" >/dev/null
dev_built=$(( $(date +%s) - t ))
cmp -s "$release_init" "$work/enclave-init-release" \
  || die "the release binary at $release_init changed during the dev build"

say "building bidctl and nitro-qemu-auction"
cargo build --quiet --locked -p bidctl --bin bidctl
cargo build --quiet --locked --manifest-path tools/nitro-vm/Cargo.toml --target-dir "$target" --bin nitro-qemu-auction
built=$(date +%s)

"$target/debug/nitro-qemu-auction" --qemu "$qemu" --qemu-data "$qemu_data" --vhost-device-vsock "$vhost" \
  --kernel "$kernel" --dev-enclave-init "$work/enclave-init-dev" \
  --release-enclave-init "$work/enclave-init-release" --bidctl "$target/debug/bidctl" \
  --dir "$work" --timeout "${AUCTION_TIMEOUT:-300}" --memory 512
say "dev enclave-init ${dev_built} s, builds in all $((built - started)) s, four boots and auctions $(( $(date +%s) - built )) s"
