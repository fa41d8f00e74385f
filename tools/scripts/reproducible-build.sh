#!/usr/bin/env bash
# Builds enclave-init for x86_64-unknown-linux-musl so that its bytes depend only on the source
# (and the pinned build environment), never on where the checkout, CARGO_HOME or the target
# directory live, nor on when the build ran. Prints the binary's SHA-384 as its last line.
# Beside the binary it writes the enclave image's software bill of materials (CycloneDX 1.5
# JSON, tools/scripts/sbom.py), as reproducible as the binary: publish both with the PCRs.
#
#   tools/scripts/reproducible-build.sh            # -> target/x86_64-unknown-linux-musl/release/enclave-init
#                                          #    and enclave-init.cdx.json beside it
#   tools/scripts/reproducible-build.sh --unsealed # -> .../release/enclave-init-unsealed and
#                                          #    enclave-init-unsealed.cdx.json beside it: the
#                                          #    unsealed image (feature `unsealed`), its own PCR0
#   tools/scripts/reproducible-build.sh --dev-image OUT
#                                          # -> OUT: the same build with the `dev` feature, for
#                                          #    test images only (tools/nitro-vm/qemu/auction-test.sh)
#
# One image, one rule set (DESIGN §2): the release image serves sealed auctions only; the proof
# of concept's flow (no seal round) is the unsealed image, a separate build with its own SHA-384,
# PCR0 and SBOM. A buyer who puts the unsealed image's PCR0 in a key policy trusts the operator
# with the terms, and so with every amount that key can open.
#
# --unsealed and --dev-image build with the same flags, so they reuse every compiled dependency
# and only bidding-core and enclave-init are compiled again; the release binary is then put back
# in its place, so target/.../release/enclave-init always holds the sealed release build.
#
# What makes the bytes reproducible:
#   - the toolchain pinned in rust-toolchain.toml and `cargo build --locked` (Cargo.lock);
#   - --remap-path-prefix for the checkout (/build), CARGO_HOME (/cargo), the target directory
#     (/target) and the toolchain's sysroot (/rustc-sysroot): panic locations and any other
#     path rustc embeds come out the same from any directory. Config files cannot expand $PWD,
#     which is why this script, not .cargo/config.toml, sets them;
#   - matching -ffile-prefix-map in CFLAGS for aws-lc's C and assembly (its __FILE__ strings);
#   - SOURCE_DATE_EPOCH=0 for anything that would stamp a date (nothing does today);
#   - the release profile: LTO, one codegen unit, panic=abort, symbols stripped.
# Other environment that could change the output (wrappers, extra flags) is cleared.
#
# Environment: CARGO_HOME and CARGO_TARGET_DIR are honoured (any paths without whitespace).
# Needs rustup, musl-gcc (Debian: musl-tools) and python3 (3.11 or later, for the SBOM). The bytes also depend on the C toolchain
# (Debian 12's gcc 12.2 and musl 1.2.3 here), which is why they are part of the pinned build
# environment described in the README.
set -euo pipefail

target=x86_64-unknown-linux-musl
die() { printf 'reproducible-build: %s\n' "$*" >&2; exit 1; }
note() { printf 'reproducible-build: %s\n' "$*" >&2; }

dev_out=""
unsealed=""
case ${1:-} in
  "") ;;
  --unsealed) unsealed=1; [ $# -eq 1 ] || die "--unsealed takes nothing else" ;;
  --dev-image) dev_out=${2:?--dev-image needs an output path}; [ $# -eq 2 ] || die "--dev-image OUT takes nothing else" ;;
  *) die "unknown argument $1 (usage: tools/scripts/reproducible-build.sh [--unsealed | --dev-image OUT])" ;;
esac
case $dev_out in ""|/*) ;; *) dev_out=$PWD/$dev_out ;; esac

cd "$(dirname "$0")/../.."
root=$(pwd -P)
[ -f "$root/Cargo.lock" ] && [ -d "$root/enclave-init" ] || die "$root is not the project's checkout"

command -v cargo >/dev/null || die "cargo not found (install rustup)"
command -v musl-gcc >/dev/null || die "musl-gcc not found (Debian: apt-get install musl-tools)"
command -v python3 >/dev/null || die "python3 not found (Debian: apt-get install python3)"

abs() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
cargo_home=$(abs "${CARGO_HOME:-$HOME/.cargo}")
target_dir=$(abs "${CARGO_TARGET_DIR:-$root/target}")
sysroot=$(rustc --print sysroot)
for p in "$root" "$cargo_home" "$target_dir" "$sysroot"; do
  case $p in *[[:space:]]*) die "paths with whitespace are not supported: '$p'" ;; esac
done

# The pinned toolchain (rust-toolchain.toml) must be the one running.
want=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
have=$(rustc --version | awk '{print $2}')
[ "$have" = "$want" ] || die "rustc is $have but rust-toolchain.toml pins $want"
rustup target list --installed 2>/dev/null | grep -qx "$target" \
  || die "the $target target is missing (rustup target add $target)"

# Nothing in the build should read the clock; if something does (GCC's __DATE__), it gets a
# constant. Always this one, whatever the caller's environment says, so that nobody's differs.
SOURCE_DATE_EPOCH=0
export SOURCE_DATE_EPOCH

# Prefix maps, most general first: rustc and GCC both let the last matching one win, and the
# target directory usually lies inside the checkout.
maps=("$sysroot=/rustc-sysroot" "$cargo_home=/cargo" "$root=/build" "$target_dir=/target")
# The same directories reached through symlinks would be other strings: map those spellings too.
for m in "${maps[@]}"; do
  from=${m%=*} to=${m##*=}
  real=$(realpath -m "$from")
  [ "$real" = "$from" ] || maps+=("$real=$to")
done

rustflags=(-C target-feature=+crt-static)
cflags=()
for m in "${maps[@]}"; do
  rustflags+=("--remap-path-prefix=$m")
  cflags+=("-ffile-prefix-map=$m")
done

# Anything in the caller's environment that would change what cargo, rustc, cc or the linker
# are asked to do (profiles, flags, wrappers, linkers, include paths, aws-lc's switches).
for name in $(compgen -e); do
  case $name in
    CARGO_PROFILE_*|CARGO_BUILD_*|CARGO_TARGET_*|CARGO_ENCODED_RUSTFLAGS|CARGO_INCREMENTAL|\
    CARGO_UNSTABLE_*|RUSTFLAGS|RUSTC|RUSTC_*|RUSTDOC|RUSTDOCFLAGS|CC|CC_*|CXX|CXX_*|AR|AR_*|\
    CFLAGS|CFLAGS_*|CXXFLAGS|CXXFLAGS_*|CPPFLAGS|LDFLAGS|TARGET_*|HOST_*|AWS_LC_SYS_*|\
    CPATH|C_INCLUDE_PATH|LIBRARY_PATH|COMPILER_PATH|GCC_EXEC_PREFIX)
      unset "$name" ;;
  esac
done
# Names with hyphens, which bash cannot hold but cc would read; env drops them below.
env_drop=()
for v in CC AR CFLAGS CXXFLAGS; do env_drop+=(-u "${v}_x86_64-unknown-linux-musl"); done
# Cargo configuration files can set profiles and linkers too; they cannot be switched off, so
# say where they are.
configs=()
d=$root
while :; do
  for f in "$d/.cargo/config.toml" "$d/.cargo/config"; do [ -f "$f" ] && configs+=("$f"); done
  [ "$d" = / ] && break
  d=$(dirname "$d")
done
for f in "$cargo_home/config.toml" "$cargo_home/config"; do [ -f "$f" ] && configs+=("$f"); done
[ ${#configs[@]} -eq 0 ] \
  || note "WARNING: cargo also reads ${configs[*]}: a profile, linker or flag set there changes the bytes"
export CARGO_ENCODED_RUSTFLAGS
CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f'; printf '%s' "${rustflags[*]}")
export CC_x86_64_unknown_linux_musl=musl-gcc
export CFLAGS_x86_64_unknown_linux_musl="${cflags[*]}"
export CARGO_HOME=$cargo_home CARGO_TARGET_DIR=$target_dir
export TZ=UTC LC_ALL=C

note "checkout $root, CARGO_HOME $cargo_home, target dir $target_dir"
note "$(rustc --version); $(musl-gcc --version | head -n 1); SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
start=$(date +%s)
bin=$target_dir/$target/release/enclave-init
if [ -n "$dev_out" ]; then
  env "${env_drop[@]}" \
    cargo build --release --locked --target "$target" -p enclave-init --features dev >&2
  cp "$bin" "$dev_out.tmp" && mv "$dev_out.tmp" "$dev_out"
  note "dev build (--features dev, for test images only) in $(( $(date +%s) - start )) s: $dev_out"
  # Put the release binary back (its compiled unit is still there: a copy, not a build).
  env "${env_drop[@]}" \
    cargo build --release --locked --target "$target" -p enclave-init >&2
  sha384sum "$dev_out" | awk '{print $1}'
  exit 0
fi
features=()
out=$bin
if [ -n "$unsealed" ]; then
  features=(--features unsealed)
  out=$bin-unsealed
fi
env "${env_drop[@]}" \
  cargo build --release --locked --target "$target" -p enclave-init "${features[@]}" >&2
[ -f "$bin" ] || die "cargo did not produce $bin"
if [ -n "$unsealed" ]; then
  cp "$bin" "$out.tmp" && mv "$out.tmp" "$out"
  # Put the release (sealed) binary back: its compiled unit is still there, so a copy, or a
  # build from nothing on a checkout that never built it.
  env "${env_drop[@]}" \
    cargo build --release --locked --target "$target" -p enclave-init >&2
  if cmp -s "$bin" "$out"; then die "the unsealed build is byte-identical to the sealed one"; fi
fi

if command -v file >/dev/null; then
  file -b "$out" | grep -qE 'statically linked|static-pie linked' || die "$out is not statically linked: $(file -b "$out")"
fi
note "built in $(( $(date +%s) - start )) s: $out ($(stat -c %s "$out") bytes, static)"

# The bill of materials: the crates cargo compiled for this binary (cargo tree, same target and
# features), their checksums from Cargo.lock, and aws-lc's C. Same environment as the build.
sbom=$out.cdx.json
env "${env_drop[@]}" python3 "$root/tools/scripts/sbom.py" sbom --binary "$out" "${features[@]}" >"$sbom.tmp"
mv "$sbom.tmp" "$sbom"
note "SBOM (CycloneDX 1.5): $sbom ($(stat -c %s "$sbom") bytes)"
sha384sum "$out" | awk '{print $1}'
