#!/usr/bin/env bash
# Builds, once, what tools/nitro-vm/qemu/boot-test.sh needs to boot an enclave image (EIF) under
# QEMU's `nitro-enclave` machine, and prints where they are:
#
#   tools/nitro-vm/qemu/build.sh      # stdout: QEMU=, QEMU_DATA=, KERNEL=, VHOST_DEVICE_VSOCK= lines
#   tools/nitro-vm/qemu/build.sh --fetch-only   # only the packages and the sources (the network
#                                            # part), so that the builds then run offline
#
# - qemu-system-x86_64 with the nitro-enclave machine, from Debian's QEMU 10.0.2 source
#   (bookworm-backports; Debian's own build leaves the machine out for want of libcbor), and
#   nothing else: TCG, the machine's devices, vhost-user, libcbor, gnutls, the system libfdt.
#   It runs with `-L /usr/share/qemu` for qboot.rom (qemu-system-data).
# - a guest kernel (bzImage) from Debian's linux-source-6.12: tinyconfig plus kernel.config
#   here (virtio-mmio from the command line, vsock, the NSM driver, all built in). Debian's own
#   kernels cannot see the machine's devices; this one is not AWS's enclave kernel either.
# - vhost-device-vsock 0.3.0 from crates.io, the vsock backend QEMU's machine talks to, built
#   without its AF_VSOCK backend and with vhost-device-vsock-0.3.0.patch here (CID 3, where an
#   enclave finds its parent, served like the host's CID 2). The host side is Unix sockets only.
#
# Each part is cached under NITRO_QEMU_CACHE (default ~/.cache/bidding-nitro-qemu) in a
# directory named by a hash of its inputs (source version and hash, configuration, patch,
# compiler), so a change to any input builds that part again and nothing else. Builds run under
# `nice -n 15` with NITRO_QEMU_JOBS (default 2) jobs. As root, installs the Debian packages the
# builds need, adding bookworm-backports (deb and deb-src) to apt's sources when missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
root=$(cd "$here/../../.." && pwd -P)
cache=${NITRO_QEMU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bidding-nitro-qemu}
jobs=${NITRO_QEMU_JOBS:-2}
say() { printf 'nitro-qemu build: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

# Debian's orig tarball of QEMU 10.0.2 (the same for every Debian revision of 10.0.2+ds).
qemu_orig=qemu_10.0.2+ds.orig.tar.xz
qemu_orig_sha256=0901da33844a331bf8b3602b9c1fbd178e60b737c8e3ade678255bd090c9b9f1
qemu_configure=(
  --target-list=x86_64-softmmu --without-default-features --without-default-devices
  --with-devices-x86_64=bidding-nitro --enable-tcg --enable-libcbor --enable-gnutls
  --enable-fdt=system --enable-vhost-user --disable-docs --disable-werror --disable-install-blobs
)
vhost_version=0.3.0
# The cksum of vhost-device-vsock 0.3.0 in crates.io's index (index.crates.io/vh/os/vhost-device-vsock).
vhost_crate_sha256=52ce95d81af89ad693d067c650e42df0f217addfbc96cc4820f7c62eb4a28b13
vhost_patch=$here/vhost-device-vsock-$vhost_version.patch
kernel_fragment=$here/kernel.config
kernel_package=linux-source-6.12
toolchain=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$root/rust-toolchain.toml")

# --- Debian packages -------------------------------------------------------------------------
packages=(build-essential ninja-build pkg-config python3 python3-venv libglib2.0-dev libcbor-dev
  libfdt-dev libgnutls28-dev xz-utils flex bison bc libelf-dev patch "$kernel_package")
# linux-source-6.12 comes from bookworm-security (or, without it, bookworm-backports). From
# bookworm-backports: meson >= 1.5 and pycotap (QEMU 10's configure) and qemu-system-data 10
# (qboot.rom and the option ROMs of the QEMU version built here).
backports_packages=(meson python3-pycotap qemu-system-data)
backports_file=/etc/apt/sources.list.d/bidding-bookworm-backports.sources

# The mirror this machine already uses for bookworm (deb822 or one-line sources).
debian_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '/^$/ {u=""} /^URIs:/ {u=$2} /^Suites:/ && / bookworm( |$)/ && u != "" {print u; exit}' "$f"
  done | head -n 1 | grep . && return 0
  awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null | grep .
}

apt_install() { # args: apt-get install arguments
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=900 \
    --no-install-recommends "$@" >&2
}

ensure_packages() {
  local missing=() p meson_version data_version updated=0 mirror want
  mirror=$(debian_mirror) || die "cannot tell this machine's Debian mirror from apt's sources"
  want=$(printf 'Types: deb deb-src\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror")
  if [ "$(cat "$backports_file" 2>/dev/null)" != "$want" ]; then
    [ "$(id -u)" -eq 0 ] || die "$backports_file is missing; run as root once to add bookworm-backports"
    say "adding bookworm-backports (deb, deb-src) as $backports_file"
    printf '%s\n' "$want" >"$backports_file"
    apt-get update -q -o DPkg::Lock::Timeout=900 >&2
    updated=1
  fi
  for p in "${packages[@]}" "${backports_packages[@]}"; do
    [ "$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
  done
  # Installed, but bookworm's own versions: too old.
  meson_version=$(dpkg-query -W -f '${Version}' meson 2>/dev/null || true)
  if [ -n "$meson_version" ] && dpkg --compare-versions "$meson_version" lt 1.5; then
    missing+=(meson)
  fi
  data_version=$(dpkg-query -W -f '${Version}' qemu-system-data 2>/dev/null || true)
  if [ -n "$data_version" ] && dpkg --compare-versions "$data_version" lt 1:10; then
    missing+=(qemu-system-data)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages (install as root): ${missing[*]}"
  say "installing ${missing[*]}"
  [ "$updated" -eq 1 ] || apt-get update -q -o DPkg::Lock::Timeout=900 >&2
  apt_install "${packages[@]}"
  apt_install -t bookworm-backports "${backports_packages[@]}"
  meson_version=$(dpkg-query -W -f '${Version}' meson)
  dpkg --compare-versions "$meson_version" ge 1.5 || die "meson is $meson_version; QEMU 10 needs 1.5 or later"
  for p in "${packages[@]}" "${backports_packages[@]}"; do
    [ "$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || die "apt-get did not install $p"
  done
}

# --- helpers -----------------------------------------------------------------------------------
key() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }
elapsed() { echo $(( $(date +%s) - $1 )); }
record() { # part seconds
  say "$1 built in $2 s"
  printf '%s %s %s s\n' "$(date -u +%FT%TZ)" "$1" "$2" >>"$cache/build-times.log"
}

fetch_qemu() { # brings $cache/downloads/$qemu_orig, checked against its SHA-256
  local tarball=$cache/downloads/$qemu_orig
  mkdir -p "$cache/downloads"
  if [ ! -f "$tarball" ] || [ "$(sha256sum <"$tarball" | cut -d' ' -f1)" != "$qemu_orig_sha256" ]; then
    rm -f "$tarball"
    say "fetching $qemu_orig (apt-get source qemu/bookworm-backports)"
    (cd "$cache/downloads" && { apt-get source --tar-only --download-only -q qemu/bookworm-backports >&2 ||
      { apt-get update -q -o DPkg::Lock::Timeout=900 >&2 &&
        apt-get source --tar-only --download-only -q qemu/bookworm-backports >&2; }; }) || true
    if [ ! -f "$tarball" ]; then
      # bookworm-backports has moved past 10.0.2: the same file from the mirror's pool, where it
      # stays while any Debian suite (trixie's 10.0.2+ds-2+deb13u*) still refers to it.
      local url
      url=$(debian_mirror)/pool/main/q/qemu/$qemu_orig
      say "apt-get source brought no $qemu_orig; fetching $url"
      python3 -c 'import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=120) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f)' "$url" "$tarball.part" && mv "$tarball.part" "$tarball"
    fi
    [ -f "$tarball" ] || die "could not fetch $qemu_orig (apt-get source qemu/bookworm-backports, then the pool)"
    [ "$(sha256sum <"$tarball" | cut -d' ' -f1)" = "$qemu_orig_sha256" ] || die "$qemu_orig has an unexpected SHA-256"
  fi
}

build_qemu() { # out-dir
  local out=$1 work=$cache/work-qemu t0 src tarball=$cache/downloads/$qemu_orig
  t0=$(date +%s)
  fetch_qemu
  rm -rf "$work" && mkdir -p "$work/build"
  tar -xJf "$tarball" -C "$work"
  src=$work/qemu-10.0.2
  [ -x "$src/configure" ] || die "no qemu-10.0.2/configure in $qemu_orig"
  cp "$here/qemu-devices.mak" "$src/configs/devices/x86_64-softmmu/bidding-nitro.mak"
  # The +ds tarball has none of the prebuilt EDK2 firmware that QEMU's build unpacks for the
  # x86_64 target; the nitro-enclave machine boots with qboot and needs none of it.
  sed -i 's/^    unpack_edk2_blobs = bzip2.found()$/    unpack_edk2_blobs = false/' "$src/meson.build"
  grep -q '^    unpack_edk2_blobs = false$' "$src/meson.build" || die "QEMU's meson.build changed: cannot skip the EDK2 blobs"
  say "configuring QEMU (${qemu_configure[*]})"
  (cd "$work/build" && nice -n 15 "$src/configure" --python=/usr/bin/python3 "${qemu_configure[@]}" \
    >"$work/configure.log" 2>&1) || { tail -n 30 "$work/configure.log" >&2; die "QEMU's configure failed"; }
  say "building qemu-system-x86_64 (ninja -j$jobs, nice 15)"
  (cd "$work/build" && nice -n 15 ninja -j"$jobs" qemu-system-x86_64 >"$work/ninja.log" 2>&1) ||
    { tail -n 30 "$work/ninja.log" >&2; die "building qemu-system-x86_64 failed"; }
  "$work/build/qemu-system-x86_64" -M help | grep -q '^nitro-enclave ' ||
    die "the built QEMU has no nitro-enclave machine"
  mkdir -p "$out.tmp"
  cp "$work/build/qemu-system-x86_64" "$out.tmp/"
  cp "$work/configure.log" "$out.tmp/"
  mv "$out.tmp" "$out"
  rm -rf "$work"
  record qemu-system-x86_64 "$(elapsed "$t0")"
}

build_kernel() { # out-dir
  local out=$1 work=$cache/work-kernel t0 src line missing=()
  t0=$(date +%s)
  rm -rf "$work" && mkdir -p "$work"
  say "unpacking /usr/src/$kernel_package.tar.xz"
  tar -xJf "/usr/src/$kernel_package.tar.xz" -C "$work"
  src=$work/$kernel_package
  export KBUILD_BUILD_TIMESTAMP='1970-01-01 00:00:00 UTC' KBUILD_BUILD_USER=bidding KBUILD_BUILD_HOST=nitro-qemu
  (
    cd "$src"
    nice -n 15 make -s tinyconfig >/dev/null
    nice -n 15 scripts/kconfig/merge_config.sh -m .config "$kernel_fragment" >/dev/null
    nice -n 15 make -s olddefconfig >/dev/null
  ) >"$work/config.log" 2>&1 || { tail -n 30 "$work/config.log" >&2; die "configuring the kernel failed"; }
  while IFS= read -r line; do
    case $line in CONFIG_*=*) grep -qx "$line" "$src/.config" || missing+=("$line") ;; esac
  done <"$kernel_fragment"
  [ ${#missing[@]} -eq 0 ] || die "kernel.config lines that did not survive olddefconfig: ${missing[*]}"
  say "building the kernel (make -j$jobs bzImage, nice 15)"
  (cd "$src" && nice -n 15 make -j"$jobs" bzImage >"$work/make.log" 2>&1) ||
    { tail -n 30 "$work/make.log" >&2; die "building the kernel failed"; }
  mkdir -p "$out.tmp"
  cp "$src/arch/x86/boot/bzImage" "$src/.config" "$out.tmp/"
  mv "$out.tmp" "$out"
  rm -rf "$work"
  record "kernel ($kernel_package $(dpkg-query -W -f '${Version}' "$kernel_package"))" "$(elapsed "$t0")"
}

fetch_vhost() { # brings the crate's source to $cache/downloads and its dependencies to cargo's cache
  local src=$cache/downloads/vhost-device-vsock-$vhost_version crate=$cache/downloads/vhost-device-vsock-$vhost_version.crate
  if [ ! -f "$src/Cargo.lock" ]; then
    mkdir -p "$cache/downloads"
    # The .crate file from crates.io, checked against the SHA-256 crates.io's index gives for it
    # (cargo itself will not fetch a binary-only crate as a dependency).
    if [ ! -f "$crate" ] || [ "$(sha256sum <"$crate" | cut -d' ' -f1)" != "$vhost_crate_sha256" ]; then
      say "fetching vhost-device-vsock $vhost_version from crates.io"
      python3 -c 'import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=120) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f)' "https://static.crates.io/crates/vhost-device-vsock/vhost-device-vsock-$vhost_version.crate" \
        "$crate.part" && mv "$crate.part" "$crate" || die "could not fetch vhost-device-vsock $vhost_version"
      [ "$(sha256sum <"$crate" | cut -d' ' -f1)" = "$vhost_crate_sha256" ] ||
        die "vhost-device-vsock-$vhost_version.crate has an unexpected SHA-256"
    fi
    rm -rf "$src" "$src.tmp" && mkdir -p "$src.tmp"
    tar -xzf "$crate" -C "$src.tmp" --strip-components=1
    [ -f "$src.tmp/Cargo.lock" ] || die "vhost-device-vsock $vhost_version comes without its Cargo.lock"
    mv "$src.tmp" "$src"
  fi
  # Its locked dependencies, so that the build itself needs no network.
  (cd "$src" && RUSTUP_TOOLCHAIN=$toolchain cargo fetch --locked -q >&2) ||
    die "cargo could not fetch vhost-device-vsock's dependencies"
}

build_vhost() { # out-dir
  local out=$1 work=$cache/work-vhost t0
  t0=$(date +%s)
  fetch_vhost
  rm -rf "$work" && mkdir -p "$work"
  cp -r "$cache/downloads/vhost-device-vsock-$vhost_version" "$work/src"
  (cd "$work/src" && patch -p1 --forward --quiet <"$vhost_patch") || die "the patch does not apply"
  say "building vhost-device-vsock $vhost_version (--no-default-features, nice 15)"
  (cd "$work/src" && RUSTUP_TOOLCHAIN=$toolchain CARGO_TARGET_DIR=$work/target \
    nice -n 15 cargo build --release --locked --offline --no-default-features -j"$jobs" >"$work/cargo.log" 2>&1) ||
    { tail -n 30 "$work/cargo.log" >&2; die "building vhost-device-vsock failed"; }
  local bin=$work/target/release/vhost-device-vsock
  "$bin" --help | grep -q 'uds-path' || die "vhost-device-vsock has no --uds-path"
  if "$bin" --help | grep -q 'forward-cid'; then die "vhost-device-vsock was built with its AF_VSOCK backend"; fi
  mkdir -p "$out.tmp"
  cp "$bin" "$out.tmp/"
  mv "$out.tmp" "$out"
  rm -rf "$work"
  record "vhost-device-vsock $vhost_version" "$(elapsed "$t0")"
}

# --- main --------------------------------------------------------------------------------------
fetch_only=0
case ${1:-} in
  --fetch-only) fetch_only=1 ;;
  '') ;;
  *) die "unknown argument $1 (tools/nitro-vm/qemu/build.sh [--fetch-only])" ;;
esac
mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9
ensure_packages

# vhost-device-vsock builds with the repository's pinned Rust toolchain (rustup).
command -v rustup >/dev/null || die "rustup is needed (the repository's Rust toolchain builds vhost-device-vsock)"
rustup toolchain list | grep -q "^$toolchain" || rustup toolchain install --profile minimal "$toolchain" >&2
rustc_version=$(RUSTUP_TOOLCHAIN=$toolchain rustc --version) || die "no rustc $toolchain"
gcc_version=$(gcc --version | head -n 1)
qemu_dir=$cache/qemu-$(key qemu "$qemu_orig_sha256" "${qemu_configure[*]}" "$(cat "$here/qemu-devices.mak")" "$gcc_version" \
  "$(dpkg-query -W -f '${Version}' libcbor-dev libgnutls28-dev libfdt-dev libglib2.0-dev meson)")
kernel_dir=$cache/kernel-$(key kernel "$(dpkg-query -W -f '${Version}' "$kernel_package")" "$(cat "$kernel_fragment")" "$gcc_version")
vhost_dir=$cache/vhost-device-vsock-$(key vhost "$vhost_version" "$(cat "$vhost_patch")" \
  "$rustc_version" --no-default-features)

for part in qemu kernel vhost; do
  dir_var=${part}_dir
  dir=${!dir_var}
  rm -rf "$dir.tmp"
  if [ "$fetch_only" -eq 1 ]; then
    # Only what needs the network (the kernel's source is the linux-source package's tarball).
    if [ ! -d "$dir" ] && [ "$part" != kernel ]; then "fetch_$part"; fi
    continue
  fi
  if [ -d "$dir" ]; then
    say "$part: cached in $dir"
  else
    TIMEFORMAT="nitro-qemu build: $part: %0R s wall, %0U s user + %0S s system CPU"
    time "build_$part" "$dir"
  fi
done

[ "$fetch_only" -eq 0 ] || { say "packages installed and sources fetched"; exit 0; }
[ -f /usr/share/qemu/qboot.rom ] || die "/usr/share/qemu/qboot.rom missing (qemu-system-data)"
printf 'QEMU=%s\nQEMU_DATA=%s\nKERNEL=%s\nVHOST_DEVICE_VSOCK=%s\n' \
  "$qemu_dir/qemu-system-x86_64" /usr/share/qemu "$kernel_dir/bzImage" "$vhost_dir/vhost-device-vsock"
