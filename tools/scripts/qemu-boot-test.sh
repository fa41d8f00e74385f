#!/usr/bin/env bash
# Boots the enclave's initramfs under QEMU (TCG, no KVM) with a Debian kernel and checks that
# enclave-init does PID 1's work: it starts as PID 1, mounts devtmpfs and proc, loads /nsm.ko
# when the image has one, finds no vsock device for the boot heartbeat, says so on the serial
# console, and powers the VM off by itself (reboot(2) -> QEMU's -no-reboot exits) in time.
#
#   tools/scripts/qemu-boot-test.sh [--enclave-init PATH] [--kernel PATH]
#
# Two boots, with nitro-cli's own x86-64 kernel command line:
#   1. the image as `bidctl initramfs` makes it without --nsm-ko: heartbeat fails, no AF_VSOCK;
#   2. with a stand-in for nsm.ko (the kernel's own vsock.ko, which has no dependencies):
#      enclave-init loads it with finit_module, and the heartbeat then fails for want of a
#      vsock transport.
#
# Default enclave-init: tools/scripts/reproducible-build.sh's output (built if missing or stale).
# Default kernel: the newest /boot/vmlinuz-* (Debian: apt-get install linux-image-amd64).
# Environment: BOOT_TIMEOUT (seconds per boot, default 120), QEMU_MEMORY (MiB, default 256),
# QEMU_LOG_DIR (keep the serial console logs there).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd -P)
say() { printf 'qemu-boot-test: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

enclave_init="" kernel=""
while [ $# -gt 0 ]; do
  case $1 in
    --enclave-init) enclave_init=${2:?--enclave-init needs a path}; shift 2 ;;
    --kernel) kernel=${2:?--kernel needs a path}; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
done
timeout_s=${BOOT_TIMEOUT:-120}
memory=${QEMU_MEMORY:-256}

command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
if [ -z "$kernel" ]; then
  kernel=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$kernel" ] || die "no /boot/vmlinuz-* (apt-get install linux-image-amd64) and no --kernel"
fi
[ -r "$kernel" ] || die "cannot read the kernel $kernel"
kver=${kernel##*/vmlinuz-}
vsock_ko=/lib/modules/$kver/kernel/net/vmw_vsock/vsock.ko

started=$(date +%s)
if [ -z "$enclave_init" ]; then
  say "building enclave-init (tools/scripts/reproducible-build.sh)"
  tools/scripts/reproducible-build.sh >/dev/null
  enclave_init=${CARGO_TARGET_DIR:-$root/target}/x86_64-unknown-linux-musl/release/enclave-init
fi
[ -f "$enclave_init" ] || die "no enclave-init at $enclave_init"
say "building bidctl"
cargo build --quiet --locked -p bidctl --bin bidctl
bidctl=${CARGO_TARGET_DIR:-$root/target}/debug/bidctl

work=$(mktemp -d /tmp/qemu-boot-test.XXXXXX)
keep_logs() { [ -z "${QEMU_LOG_DIR:-}" ] || { mkdir -p "$QEMU_LOG_DIR" && cp "$work"/*.log "$QEMU_LOG_DIR"/ 2>/dev/null; } || true; }
trap 'keep_logs; rm -rf "$work"' EXIT

# nitro-cli's x86-64 blobs/cmdline, as the enclave gets it, plus panic=-1: should the kernel
# panic, QEMU then stops at once instead of 30 s later.
cmdline="reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on panic=-1"

passed=0
boot() { # name initramfs -> leaves $work/$name.log, sets boot_seconds
  local name=$1 initrd=$2 rc=0 t0
  t0=$(date +%s%N)
  timeout --kill-after=5 "$timeout_s" qemu-system-x86_64 \
    -accel tcg -machine pc -cpu qemu64 -smp 2 -m "$memory" \
    -no-reboot -nodefaults -display none -serial stdio \
    -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
    </dev/null >"$work/$name.log" 2>&1 || rc=$?
  boot_seconds=$(( ($(date +%s%N) - t0) / 1000000 ))
  boot_seconds=$(printf '%d.%03d' $((boot_seconds / 1000)) $((boot_seconds % 1000)))
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    tail -n 30 "$work/$name.log" >&2
    die "$name: the VM did not power off within ${timeout_s} s"
  fi
  [ "$rc" -eq 0 ] || { tail -n 30 "$work/$name.log" >&2; die "$name: qemu exited with status $rc"; }
}
expect() { # name extended-regex description
  if ! grep -aqE "$2" "$work/$1.log"; then
    say "--- serial console of $1 (last 40 lines) ---"
    tail -n 40 "$work/$1.log" >&2
    die "$1: $3 (no line matching /$2/)"
  fi
}
refuse() { # name extended-regex description
  if grep -aqE "$2" "$work/$1.log"; then
    grep -aE "$2" "$work/$1.log" | head -n 5 >&2
    die "$1: $3"
  fi
}
common_checks() { # name
  expect "$1" 'enclave-init: .* starting \(pid 1, release build\)' "enclave-init did not start as PID 1"
  expect "$1" "enclave-init: ignoring the kernel's boot words \[\"nomodules\"\]" \
    "the kernel's leftover boot word was not set aside"
  expect "$1" 'enclave-init: mounted devtmpfs on /dev' "devtmpfs was not mounted"
  expect "$1" 'enclave-init: mounted proc on /proc' "proc was not mounted"
  expect "$1" 'reboot: Restarting system' "the kernel did not see a reboot request"
  refuse "$1" 'Kernel panic|Attempted to kill init|bad arguments' "the kernel panicked or init died"
}

"$bidctl" initramfs --enclave-init "$enclave_init" --out "$work/plain.cpio" >/dev/null
boot plain "$work/plain.cpio"
common_checks plain
expect plain 'enclave-init: /nsm.ko not present' "a missing /nsm.ko was not reported"
expect plain 'enclave-init: fatal: heartbeat: cannot connect to vsock 3:9000: .*not supported' \
  "the failed heartbeat (no AF_VSOCK) was not reported"
say "boot 1 (no vsock, no nsm.ko): passed in ${boot_seconds} s"
passed=$((passed + 1))

if [ -f "$vsock_ko" ]; then
  "$bidctl" initramfs --enclave-init "$enclave_init" --nsm-ko "$vsock_ko" --out "$work/ko.cpio" >/dev/null
  boot ko "$work/ko.cpio"
  common_checks ko
  expect ko 'enclave-init: loaded /nsm.ko' "/nsm.ko (here vsock.ko) was not loaded"
  expect ko 'NET: Registered PF_VSOCK protocol family' "the module did not register AF_VSOCK"
  expect ko 'enclave-init: fatal: heartbeat: cannot connect to vsock 3:9000' \
    "the failed heartbeat (no vsock transport) was not reported"
  say "boot 2 (module loaded, no vsock transport): passed in ${boot_seconds} s"
  passed=$((passed + 1))
else
  die "$vsock_ko not found: the kernel package's modules are needed for the module-loading boot"
fi

say "kernel $kernel, ${memory} MiB, TCG; total $(( $(date +%s) - started )) s"
echo "qemu boot: $passed passed, 0 failed"
