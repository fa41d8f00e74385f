#!/usr/bin/env bash
# Boots the release enclave-init, unchanged, as PID 1 of an EIF under QEMU's `nitro-enclave`
# machine (TCG), with a real NSM device behind the guest kernel's driver and vsock through
# vhost-device-vsock (Unix sockets on the host), and checks what a parent instance sees:
#
#   tools/nitro-vm/qemu/boot-test.sh [--enclave-init PATH]
#
#   1. tools/nitro-vm/qemu/build.sh: QEMU, the guest kernel and the vsock backend (cached);
#   2. the ramdisk from `bidctl initramfs` (no nsm.ko: the kernel has the driver built in), the
#      cmdline nitro-cli gives enclaves, and `bidctl pcr` of kernel, cmdline and ramdisk;
#   3. nitro-qemu-boot (tools/nitro-vm): an EIF by AWS's builder (its PCRs must be
#      bidctl's), the boot, the heartbeat echoed on the parent's port 9000, enclave-init
#      listening on vsock 5005, and a hello through `CONNECT 5005` whose attestation document
#      from QEMU's NSM has our nonce, SBHS (the sealed rule set), an RSA-2048 key and bidctl's PCR0/1/2.
#
# Default enclave-init: tools/scripts/reproducible-build.sh's output (built if missing or stale).
# Environment: BOOT_TIMEOUT (seconds for the boot and hello, default 240), NITRO_QEMU_LOG_DIR
# (keep the serial console and backend logs there), NITRO_QEMU_CACHE (see build.sh).
set -euo pipefail
cd "$(dirname "$0")/../../.."
root=$(pwd -P)
say() { printf 'nitro-qemu boot-test: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

enclave_init=""
while [ $# -gt 0 ]; do
  case $1 in
    --enclave-init) enclave_init=${2:?--enclave-init needs a path}; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
done
target=${CARGO_TARGET_DIR:-$root/target}
started=$(date +%s)

. tools/nitro-vm/qemu/lib.sh
nitro_qemu_parts
built=$(date +%s)

if [ -z "$enclave_init" ]; then
  say "building enclave-init (tools/scripts/reproducible-build.sh)"
  tools/scripts/reproducible-build.sh >/dev/null
  enclave_init=$target/x86_64-unknown-linux-musl/release/enclave-init
fi
[ -f "$enclave_init" ] || die "no enclave-init at $enclave_init"
say "building bidctl and nitro-qemu-boot"
cargo build --quiet --locked -p bidctl --bin bidctl
cargo build --quiet --locked --manifest-path tools/nitro-vm/Cargo.toml --target-dir "$target" --bin nitro-qemu-boot

# A short directory: the vsock backend's Unix socket paths must fit in sun_path.
work=$(mktemp -d /tmp/nitro-qemu.XXXXXX)
cleanup() {
  nitro_qemu_end_leftovers "$work"
  if [ -n "${NITRO_QEMU_LOG_DIR:-}" ]; then
    mkdir -p "$NITRO_QEMU_LOG_DIR"
    cp "$work"/*.log "$NITRO_QEMU_LOG_DIR"/ 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

"$target/debug/bidctl" initramfs --enclave-init "$enclave_init" --out "$work/initramfs.cpio" >/dev/null
# nitro-cli's x86-64 cmdline blob (nitro_vm.rs's NITRO_CMDLINE, for the auction test): what the enclave's kernel gets (QEMU's machine appends its
# virtio-mmio devices at boot; the measured cmdline is the EIF's).
printf '%s\n' "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on" >"$work/cmdline"
"$target/debug/bidctl" pcr --kernel "$kernel" --cmdline "$work/cmdline" --ramdisk "$work/initramfs.cpio" >"$work/pcrs.txt"

say "booting (QEMU $qemu, kernel $kernel)"
"$target/debug/nitro-qemu-boot" --qemu "$qemu" --qemu-data "$qemu_data" --vhost-device-vsock "$vhost" \
  --kernel "$kernel" --cmdline-file "$work/cmdline" --ramdisk "$work/initramfs.cpio" \
  --expect-pcrs "$work/pcrs.txt" --dir "$work" --timeout "${BOOT_TIMEOUT:-240}" --memory 512
say "build.sh $((built - started)) s, images and boot $(( $(date +%s) - built )) s"
