#!/usr/bin/env bash
# The supply-chain check (CI runs it): cargo-deny against the offline RustSec snapshot, then a
# self-test that plants an advisory, a disallowed license, banned crates and a git source, and
# fails unless cargo-deny fails on each of them.
#
#   tools/scripts/supply-chain.sh                   # check + self-test
#   tools/scripts/supply-chain.sh --no-self-test    # check only
#
# What is checked:
#   1. the whole workspace (Cargo.lock, every platform) against deny.toml: advisories, licenses,
#      bans (no OpenSSL, no second TLS stack) and sources (crates.io only);
#   2. the enclave's own tree against deny.enclave.toml: bans only (no tokio beyond the
#      tokio::sync that aws-sigv4's crates need, no hyper, no second TLS or crypto library).
#      cargo metadata unifies features across the workspace, where the tools run a tokio
#      runtime, so this check reads the metadata of a temporary workspace holding only
#      bidding-core and enclave-init, resolved offline from the same Cargo.lock (the script
#      checks that no version moved).
#
# Network: `cargo metadata --locked` may download crates from the registry (crates.io) the first
# time; cargo-deny runs with --offline. cargo-deny itself is installed from crates.io with
# `cargo install --locked` when ~/.cargo/bin lacks the pinned version (a few minutes, once).
#
# Environment: KEEP_WORK=1 keeps the temporary directory (metadata, logs); ADVISORY_DB overrides the snapshot's location (default ../shared/advisory-db
# beside the checkout: the `crates/` tree of rustsec/advisory-db, no .git).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd -P)

deny_version=0.20.2
# cargo-deny keeps each advisory database in <db-path>/<last url segment>-<xxh64 of the url>
# (url_to_db_path in cargo-deny 0.20); this is the directory for deny.toml's db-urls entry.
db_dir_name=advisory-db-3157b0e258782691
enclave_target=x86_64-unknown-linux-musl

say() { printf 'supply-chain: %s\n' "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

self_test=1
case ${1:-} in
  "") ;;
  --no-self-test) self_test=0 ;;
  *) die "usage: $0 [--no-self-test]" ;;
esac

db_src=${ADVISORY_DB:-$root/../shared/advisory-db}
[ -d "$db_src/crates" ] || die "no advisory database at $db_src (expected its crates/ directory)"
command -v git >/dev/null || die "git not found"
command -v python3 >/dev/null || die "python3 not found"

started=$(date +%s)

# --- cargo-deny, pinned -------------------------------------------------------------------
if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $deny_version"; then
  say "installing cargo-deny $deny_version (cargo install --locked)"
  t=$(date +%s)
  cargo install cargo-deny --version "$deny_version" --locked
  say "installed cargo-deny in $(( $(date +%s) - t )) s"
fi
cargo deny --version | grep -qx "cargo-deny $deny_version" \
  || die "cargo deny is $(cargo deny --version 2>&1 | head -n 1), wanted $deny_version"

work=$(mktemp -d /tmp/supply-chain.XXXXXX)
trap '[ -n "${KEEP_WORK:-}" ] || rm -rf "$work"' EXIT

# --- metadata -----------------------------------------------------------------------------
say "cargo metadata (workspace)"
cargo metadata --locked --format-version 1 >"$work/workspace.json"

# A workspace of bidding-core and enclave-init alone, with the checkout's lock file. Its
# metadata resolves features as `cargo build -p enclave-init` does (default features, no `dev`).
enclave_ws() { # DIR: lays the temporary workspace out in DIR
  local dir=$1
  mkdir -p "$dir"
  cp Cargo.toml Cargo.lock rust-toolchain.toml "$dir/"
  local m
  for m in core enclave-init; do
    git ls-files -z -- "$m" | (cd "$root" && xargs -0 cp --parents -t "$dir")
  done
  sed -i 's/^members = \[.*\]$/members = ["core", "enclave-init"]/' "$dir/Cargo.toml"
  grep -qx 'members = \["core", "enclave-init"\]' "$dir/Cargo.toml" \
    || die "could not narrow the workspace members in a copy of Cargo.toml"
}
enclave_metadata() { # DIR OUT
  (cd "$1" && cargo metadata --offline --format-version 1 --filter-platform "$enclave_target") >"$2"
}
# Every package of the narrowed lock file must be in Cargo.lock as it is (same version, source
# and checksum): the enclave's tree is checked at exactly the versions that are built.
lock_subset() { # NARROW_LOCK
  python3 - "$root/Cargo.lock" "$1" <<'EOF'
import sys, tomllib
def pkgs(path):
    with open(path, "rb") as f:
        return {(p["name"], p["version"], p.get("source"), p.get("checksum")) for p in tomllib.load(f)["package"]}
full, narrow = pkgs(sys.argv[1]), pkgs(sys.argv[2])
moved = sorted(narrow - full)
if moved:
    sys.exit("packages that Cargo.lock does not hold: %s" % moved)
EOF
}
say "cargo metadata (bidding-core and enclave-init alone, $enclave_target)"
enclave_ws "$work/enclave-ws"
enclave_metadata "$work/enclave-ws" "$work/enclave.json"
lock_subset "$work/enclave-ws/Cargo.lock" || die "the enclave-only workspace resolved other versions"

# --- the advisory database as a git repository ----------------------------------------------
# cargo-deny reads the database from a git checkout. The commit gets the snapshot's date when its
# README gives one (for the record: with --offline cargo-deny judges staleness by the checkout's
# own files, which are new).
make_db() { # ROOT: puts a fresh repository of $db_src at ROOT/$db_dir_name
  local repo=$1/$db_dir_name
  mkdir -p "$1"
  cp -r "$db_src" "$repo"
  chmod -R u+w "$repo"
  local date
  date=$(grep -o '([0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\})' "$repo/README.md" 2>/dev/null | head -n 1 | tr -d '()') || true
  date=${date:-1970-01-01}
  git -C "$repo" init -q -b main
  git -C "$repo" add -A
  GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z" \
    git -C "$repo" -c user.name=supply-chain -c user.email=supply-chain@localhost \
      -c commit.gpgsign=false commit -q -m "RustSec advisory-db snapshot"
}
say "advisory database: $db_src ($(find "$db_src/crates" -name '*.md' | wc -l) advisories)"
make_db "$work/dbs"

# --- the checks ---------------------------------------------------------------------------
# deny LOG DBS CONFIG METADATA CHECK...: runs cargo-deny offline, output to LOG; its status.
# The manifest is the workspace's that the metadata describes. The enclave's bans leave out
# dev-dependencies (bidding-core's and enclave-init's tests are not in the image); the
# workspace check keeps them.
deny() {
  local log=$1 dbs=$2 config=$3 metadata=$4
  shift 4
  local manifest extra=()
  manifest=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["workspace_root"])' \
    "$metadata")/Cargo.toml
  [ "$config" != deny.enclave.toml ] || extra=(--exclude-dev)
  BIDDING_ADVISORY_DBS=$dbs cargo deny --offline --locked --color never "${extra[@]}" \
    --manifest-path "$manifest" --metadata-path "$metadata" --config "$config" \
    check --show-stats "$@" >"$log" 2>&1
}

status=0
say "cargo deny check advisories licenses bans sources (workspace, deny.toml)"
if deny "$work/workspace.log" "$work/dbs" deny.toml "$work/workspace.json" \
    advisories licenses bans sources; then
  grep -E '^(warning|error)\[' "$work/workspace.log" >&2 || true
  tail -n 4 "$work/workspace.log" >&2
else
  cat "$work/workspace.log" >&2
  say "the workspace check FAILED"
  status=1
fi
say "cargo deny check bans (enclave-init's tree, deny.enclave.toml)"
if deny "$work/enclave.log" "$work/dbs" deny.enclave.toml "$work/enclave.json" bans; then
  tail -n 1 "$work/enclave.log" >&2
else
  cat "$work/enclave.log" >&2
  say "the enclave check FAILED"
  status=1
fi
[ $status -eq 0 ] || die "cargo-deny found problems (above)"

if [ $self_test -eq 0 ]; then
  say "passed in $(( $(date +%s) - started )) s (self-test skipped)"
  exit 0
fi

# --- self-test: each planted problem must make cargo-deny fail, with the expected error --------
passed=0 failed=0
expect_failure() { # NAME CODE PATTERN DBS CONFIG METADATA CHECK...
  local name=$1 code=$2 pattern=$3
  shift 3
  local log=$work/self-test-${name// /-}.log
  if deny "$log" "$@"; then
    say "self-test FAILED: cargo-deny passed with $name"
    failed=$((failed + 1))
  elif ! grep -q "^error\[$code\]" "$log" || ! grep -qE -- "$pattern" "$log"; then
    cat "$log" >&2
    say "self-test FAILED: cargo-deny failed with $name, but not with error[$code] about $pattern"
    failed=$((failed + 1))
  else
    say "self-test: $name -> $(grep -m 1 "^error\[$code\]" "$log")"
    passed=$((passed + 1))
  fi
}
# JSON edits of a metadata file: python3 - IN OUT <<< program using md (the metadata) and pkg().
edit_metadata() { # IN OUT PROGRAM
  python3 -c '
import json, sys
md = json.load(open(sys.argv[1]))
def pkg(name):
    found = [p for p in md["packages"] if p["name"] == name]
    assert len(found) == 1, (name, len(found))
    return found[0]
exec(sys.argv[3])
json.dump(md, open(sys.argv[2], "w"))
' "$1" "$2" "$3"
}

# 1. An advisory for a crate that the enclave compiles (httparse, at its locked version).
httparse_version=$(python3 -c '
import json, sys
print([p["version"] for p in json.load(open(sys.argv[1]))["packages"] if p["name"] == "httparse"][0])
' "$work/enclave.json")
make_db "$work/dbs-planted"
planted=$work/dbs-planted/$db_dir_name
mkdir -p "$planted/crates/httparse"
cat >"$planted/crates/httparse/RUSTSEC-2099-0001.md" <<EOF
\`\`\`toml
[advisory]
id = "RUSTSEC-2099-0001"
package = "httparse"
date = "2099-01-01"
url = "https://example.invalid/planted"
categories = ["memory-corruption"]
keywords = ["self-test"]

[versions]
patched = [">= 99.0.0"]
\`\`\`

# Planted by tools/scripts/supply-chain.sh's self-test

httparse $httparse_version is not really affected: this advisory exists only in a temporary copy
of the database, to prove that the check fails on a new advisory.
EOF
git -C "$planted" add -A
git -C "$planted" -c user.name=supply-chain -c user.email=supply-chain@localhost \
  -c commit.gpgsign=false commit -q -m "planted advisory"
expect_failure "a planted advisory for httparse $httparse_version" vulnerability 'RUSTSEC-2099-0001' \
  "$work/dbs-planted" deny.toml "$work/workspace.json" advisories

# 2. A disallowed license on a crate that the enclave compiles.
edit_metadata "$work/workspace.json" "$work/license.json" 'pkg("lexopt")["license"] = "GPL-3.0-only"'
expect_failure "lexopt relicensed GPL-3.0-only" rejected 'GPL-3.0-only' \
  "$work/dbs" deny.toml "$work/license.json" licenses

# 3. tokio with a runtime, added to bidding-core's dependencies, and the same runtime reached
#    through aws-smithy-async, a crate allowed to wrap tokio::sync (real manifest edits in
#    copies of the enclave-only workspace, resolved by cargo from Cargo.lock's versions).
add_dependency() { # WORKSPACE_DIR CRATE_DIR LINE
  enclave_ws "$1"
  sed -i "s/^\[dependencies\]\$/[dependencies]\n$3/" "$1/$2/Cargo.toml"
  grep -qxF "$3" "$1/$2/Cargo.toml" || die "could not add a dependency to a copy of $2/Cargo.toml"
}
add_dependency "$work/tokio-ws" core 'tokio = { version = "1", features = ["rt"] }'
enclave_metadata "$work/tokio-ws" "$work/tokio.json"
expect_failure "tokio (rt) as a dependency of bidding-core" banned "tokio" \
  "$work/dbs" deny.enclave.toml "$work/tokio.json" bans
add_dependency "$work/smithy-ws" enclave-init \
  'aws-smithy-async = { version = "1", features = ["rt-tokio", "test-util"] }'
enclave_metadata "$work/smithy-ws" "$work/smithy.json"
expect_failure "tokio's runtime through aws-smithy-async" exact-features-mismatch "'rt' feature was enabled" \
  "$work/dbs" deny.enclave.toml "$work/smithy.json" bans

# 4. openssl-sys under enclave-init: a package added to the workspace metadata.
edit_metadata "$work/workspace.json" "$work/openssl.json" '
src = "registry+https://github.com/rust-lang/crates.io-index"
oid = src + "#openssl-sys@0.9.999"
base = pkg("libc")
md["packages"].append(dict(base, name="openssl-sys", version="0.9.999", id=oid,
    license="MIT", license_file=None, dependencies=[], targets=[], features={},
    manifest_path=base["manifest_path"].replace("libc-", "openssl-sys-"), links="openssl"))
enclave = pkg("enclave-init")
enclave["dependencies"].append({"name": "openssl-sys", "source": src, "req": "^0.9",
    "kind": None, "rename": None, "optional": False, "uses_default_features": True,
    "features": [], "target": None, "registry": None})
md["resolve"]["nodes"].append({"id": oid, "dependencies": [], "deps": [], "features": []})
for n in md["resolve"]["nodes"]:
    if n["id"] == enclave["id"]:
        n["dependencies"].append(oid)
        n["deps"].append({"name": "openssl_sys", "pkg": oid,
            "dep_kinds": [{"kind": None, "target": None}]})
'
expect_failure "openssl-sys as a dependency of enclave-init" banned "openssl-sys" \
  "$work/dbs" deny.toml "$work/openssl.json" bans

# 5. A crate from a git repository instead of crates.io.
edit_metadata "$work/workspace.json" "$work/git.json" '
p = pkg("lexopt")
old = p["id"]
p["source"] = "git+https://example.invalid/lexopt?rev=0123456789abcdef0123456789abcdef01234567#0123456789abcdef0123456789abcdef01234567"
p["id"] = "git+https://example.invalid/lexopt?rev=0123456789abcdef0123456789abcdef01234567#lexopt@" + p["version"]
for n in md["resolve"]["nodes"]:
    if n["id"] == old:
        n["id"] = p["id"]
    n["dependencies"] = [p["id"] if d == old else d for d in n["dependencies"]]
    for d in n["deps"]:
        if d["pkg"] == old:
            d["pkg"] = p["id"]
'
expect_failure "lexopt from a git repository" source-not-allowed 'example.invalid' \
  "$work/dbs" deny.toml "$work/git.json" sources

say "self-test: $passed planted problems caught, $failed missed"
[ $failed -eq 0 ] || die "the self-test found checks that do not fail"
say "passed in $(( $(date +%s) - started )) s"
echo "supply-chain: $passed passed, 0 failed"
