#!/usr/bin/env python3
"""The enclave image's software bill of materials, and its trusted computing base in numbers.

    tools/scripts/sbom.py sbom --binary target/x86_64-unknown-linux-musl/release/enclave-init
        writes the CycloneDX 1.5 JSON document for that binary to standard output
        (tools/scripts/reproducible-build.sh writes it beside the binary as enclave-init.cdx.json)
    tools/scripts/sbom.py sbom --binary .../enclave-init-unsealed --features unsealed
        the same for the unsealed image (tools/scripts/reproducible-build.sh --unsealed), whose
        binary is built with enclave-init's `unsealed` feature
    tools/scripts/sbom.py tcb [--target-dir target]
        counts the lines of Rust and of aws-lc's C and assembly that the enclave compiles

Python 3.11 standard library only, so that the bill of materials depends on nothing that is not
already part of the build environment. What goes in comes from cargo itself, never from a guess:

- the crates: `cargo tree -p enclave-init --target x86_64-unknown-linux-musl` (offline, locked),
  which resolves packages and features exactly as `cargo build -p enclave-init --release` does
  (default features, so no `dev`; no dev-dependencies). Edges of kind "normal" give the crates
  linked into the binary; crates reached only through build-dependencies (build scripts) or
  proc-macros run on the build machine and put no code of their own in the binary: they are
  listed too, with CycloneDX scope "excluded" and property cargo:role "build" or "proc-macro";
- version, source and SHA-256 checksum: Cargo.lock;
- license and repository: the crates' manifests, as cargo tree prints them;
- aws-lc's C: the version that aws-lc-sys bundles (AWSLC_VERSION_NUMBER_STRING in its
  include/openssl/base.h) and the source files its cc builder compiles for x86_64 Linux.

The output is byte-reproducible: components and dependencies are sorted, no path of the build
machine appears, metadata.timestamp comes from SOURCE_DATE_EPOCH (0 unless set), and the
serialNumber is a UUIDv5 of Cargo.lock, the binary's SHA-384 and this script.
"""

import argparse
import datetime
import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import uuid

PACKAGE = "enclave-init"
TARGET = "x86_64-unknown-linux-musl"
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def die(msg):
    sys.exit(f"sbom: {msg}")


def cargo_tree(edges, features=None):
    """The nodes and edges of `cargo tree` for the enclave binary with these edge kinds (and
    enclave-init's cargo features, none for the release image)."""
    fmt = "|{p}|{l}|{r}|"
    cmd = ["cargo", "tree", "--locked", "--offline", "-p", PACKAGE, "--target", TARGET,
           *(["--features", features] if features else []),
           "-e", edges, "--prefix", "depth", "--charset", "ascii", "--format", fmt]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    nodes, parent_at, graph = {}, {}, set()
    for line in out.splitlines():
        m = re.fullmatch(r"(\d+)\|(.*)\|(.*)\|(.*)\|( \(\*\))?", line)
        if not m:
            die(f"unexpected cargo tree line: {line!r}")
        depth, p, license_, repo = int(m[1]), m[2], m[3], m[4]
        pm = re.fullmatch(r"(\S+) v(\S+)((?: \([^)]*\))*)", p)
        if not pm:
            die(f"unexpected package in cargo tree: {p!r}")
        name, version, extra = pm[1], pm[2], pm[3]
        key = (name, version)
        nodes[key] = {
            "license": license_,
            "repository": repo,
            "proc_macro": "(proc-macro)" in extra,
            "path": any(x.startswith("(/") for x in re.findall(r"\([^)]*\)", extra)),
        }
        parent_at[depth] = key
        if depth > 0:
            graph.add((parent_at[depth - 1], key))
    if not nodes:
        die("cargo tree printed nothing")
    return nodes, graph


def crate_graph(features=None):
    """(root, nodes, edges, linked, roles) of the enclave binary's crate graph."""
    normal_nodes, normal_edges = cargo_tree("normal", features)
    nodes, edges = cargo_tree("normal,build", features)
    nodes.update(normal_nodes)
    root = next(k for k in nodes if k[0] == PACKAGE)
    # Linked into the binary: reached from the root by normal edges without going through a
    # proc-macro (which runs in the compiler, as a build script does).
    children = {}
    for a, b in normal_edges:
        children.setdefault(a, set()).add(b)
    linked, todo = set(), [root]
    while todo:
        k = todo.pop()
        if k in linked or nodes[k]["proc_macro"]:
            continue
        linked.add(k)
        todo.extend(children.get(k, ()))
    roles = {}
    for k in nodes:
        if k in linked:
            roles[k] = "linked"
        elif nodes[k]["proc_macro"]:
            roles[k] = "proc-macro"
        else:
            roles[k] = "build"
    return root, nodes, edges, linked, roles


def lock_packages():
    with open(os.path.join(ROOT, "Cargo.lock"), "rb") as f:
        lock = tomllib.load(f)
    pkgs = {}
    for p in lock["package"]:
        key = (p["name"], p["version"])
        if key in pkgs:
            die(f"{key} is in Cargo.lock twice")
        pkgs[key] = p
    return pkgs


def cargo_home():
    return os.environ.get("CARGO_HOME") or os.path.join(os.path.expanduser("~"), ".cargo")


def registry_dir(name, version):
    found = sorted(glob.glob(os.path.join(cargo_home(), "registry", "src", "*", f"{name}-{version}")))
    if not found:
        die(f"the sources of {name} {version} are not under {cargo_home()}/registry/src (build first)")
    return found[0]


def aws_lc(aws_lc_sys_version):
    """aws-lc's version and the C and assembly files aws-lc-sys compiles for x86_64 Linux."""
    src = registry_dir("aws-lc-sys", aws_lc_sys_version)
    with open(os.path.join(src, "aws-lc", "include", "openssl", "base.h")) as f:
        m = re.search(r'#define AWSLC_VERSION_NUMBER_STRING "([^"]+)"', f.read())
    if not m:
        die("no AWSLC_VERSION_NUMBER_STRING in aws-lc-sys's include/openssl/base.h")
    files = []
    for part in ("universal", "linux_x86_64"):
        with open(os.path.join(src, "builder", "cc_builder", f"{part}.rs")) as f:
            files += re.findall(r'^\s*"([^"]+\.(?:c|S|s))",$', f.read(), re.M)
    if not files:
        die("found no source list in aws-lc-sys's builder/cc_builder")
    return m[1], src, sorted(set(files))


def sha(algorithm, path):
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def license_expression(text):
    # Old manifests write "MIT/Apache-2.0" for "MIT OR Apache-2.0".
    return re.sub(r"\s*/\s*", " OR ", text.strip())


def bom_ref(key, node):
    name, version = key
    return f"{name}@{version}" if node["path"] else f"pkg:cargo/{name}@{version}"


def sbom(binary, features=None):
    root, nodes, edges, linked, roles = crate_graph(features)
    lock = lock_packages()
    refs = {k: bom_ref(k, n) for k, n in nodes.items()}

    components = []
    for key in sorted(nodes):
        if key == root:
            continue
        name, version = key
        node = nodes[key]
        c = {"type": "library", "bom-ref": refs[key], "name": name, "version": version}
        c["scope"] = "required" if roles[key] == "linked" else "excluded"
        if node["license"]:
            c["licenses"] = [{"expression": license_expression(node["license"])}]
        if node["path"]:
            source = "path (this repository)"
        else:
            entry = lock.get(key)
            if entry is None or "checksum" not in entry:
                die(f"{name} {version} has no checksum in Cargo.lock")
            source = entry["source"]
            if source != CRATES_IO:
                die(f"{name} {version} comes from {source}, not crates.io")
            c["purl"] = refs[key]
            c["hashes"] = [{"alg": "SHA-256", "content": entry["checksum"]}]
        if node["repository"]:
            c["externalReferences"] = [{"type": "vcs", "url": node["repository"]}]
        c["properties"] = [
            {"name": "cargo:role", "value": roles[key]},
            {"name": "cargo:source", "value": source},
        ]
        components.append(c)

    sys_key = next((k for k in linked if k[0] == "aws-lc-sys"), None)
    if sys_key is None:
        die("aws-lc-sys is not linked into enclave-init")
    lc_version, _, lc_files = aws_lc(sys_key[1])
    lc_ref = f"pkg:github/aws/aws-lc@v{lc_version}"
    components.append({
        "type": "library",
        "bom-ref": lc_ref,
        "name": "aws-lc",
        "version": lc_version,
        "description": f"AWS-LC, C and assembly, bundled in the aws-lc-sys {sys_key[1]} crate "
                       f"and compiled by its build script ({len(lc_files)} source files for "
                       f"x86_64 Linux)",
        "scope": "required",
        "licenses": [{"expression": license_expression(nodes[sys_key]["license"])}],
        "purl": lc_ref,
        "externalReferences": [{"type": "vcs", "url": "https://github.com/aws/aws-lc"}],
        "properties": [
            {"name": "cargo:role", "value": "linked"},
            {"name": "cargo:source", "value": f"bundled in {refs[sys_key]}"},
        ],
    })
    components.sort(key=lambda c: c["bom-ref"])

    depends = {}
    for a, b in edges:
        depends.setdefault(refs[a], set()).add(refs[b])
    depends.setdefault(refs[sys_key], set()).add(lc_ref)
    all_refs = set(refs.values()) | {lc_ref}
    dependencies = [{"ref": r, "dependsOn": sorted(depends.get(r, ()))} for r in sorted(all_refs)]

    bin_sha384 = sha("sha384", binary)
    lock_sha256 = sha("sha256", os.path.join(ROOT, "Cargo.lock"))
    tool_sha256 = sha("sha256", os.path.abspath(__file__))
    serial = uuid.uuid5(uuid.NAMESPACE_URL,
                        f"urn:bidding-enclave:sbom:{lock_sha256}:{bin_sha384}:{tool_sha256}")
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    timestamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    rustc = subprocess.run(["rustc", "--version"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.strip()
    root_node = nodes[root]

    doc = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{
                "type": "application",
                "name": "tools/scripts/sbom.py",
                "description": "this repository's SBOM generator (cargo tree + Cargo.lock)",
                "hashes": [{"alg": "SHA-256", "content": tool_sha256}],
            }]},
            "component": {
                "type": "application",
                "bom-ref": refs[root],
                "name": root[0],
                "version": root[1],
                "description": ("the bidding enclave's program (its image's only executable), "
                                "a static musl binary; its SHA-384 is given here"
                                + ("; the UNSEALED image (the proof of concept's flow, no seal "
                                   "round): a key policy naming its PCR0 trusts the operator with "
                                   "the terms" if features == "unsealed" else "")),
                "licenses": [{"expression": license_expression(root_node["license"])}],
                "hashes": [{"alg": "SHA-384", "content": bin_sha384}],
                "properties": [
                    {"name": "cargo:features", "value": features or "default"},
                    {"name": "cargo:profile", "value": "release"},
                    {"name": "cargo:target", "value": TARGET},
                    {"name": "rustc", "value": rustc},
                    {"name": "sha256:Cargo.lock", "value": lock_sha256},
                ],
            },
            "properties": [
                {"name": "crates:linked", "value": str(len(linked) - 1)},
                {"name": "crates:build-time", "value": str(len(nodes) - len(linked))},
            ],
        },
        "components": components,
        "dependencies": dependencies,
    }
    print(f"sbom: {len(components)} components: {len(linked) - 1} crates linked into "
          f"{root[0]}, {len(nodes) - len(linked)} build-time crates, aws-lc {lc_version}",
          file=sys.stderr)
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


# --- trusted computing base: lines of code ----------------------------------------------------

def rust_code_lines(path):
    """Lines of a Rust file that hold code: not blank, not only a comment (// or /* */, nested,
    doc comments included). String literals are not parsed, as in most line counters."""
    count, depth = 0, 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            code = False
            i, s = 0, line.strip()
            while i < len(s):
                if depth:
                    if s.startswith("*/", i):
                        depth, i = depth - 1, i + 2
                    elif s.startswith("/*", i):
                        depth, i = depth + 1, i + 2
                    else:
                        i += 1
                elif s.startswith("//", i):
                    break
                elif s.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                else:
                    code, i = True, i + 1
            count += code
    return count


def c_code_lines(path):
    """Lines of C or assembly that hold code: not blank, not only a comment (/* */ and //; in
    .S and .s files also # comments, which are not preprocessor directives)."""
    asm = path.endswith((".S", ".s"))
    directive = re.compile(r"#\s*(include|define|undef|if|ifdef|ifndef|elif|else|endif|error)\b")
    count, block = 0, False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            s, rest = line.strip(), ""
            if asm and s.startswith("#") and not block and not directive.match(s):
                continue
            while s:
                if block:
                    j = s.find("*/")
                    if j < 0:
                        s = ""
                    else:
                        block, s = False, s[j + 2:]
                else:
                    j, k = s.find("/*"), s.find("//")
                    if k >= 0 and (j < 0 or k < j):
                        rest, s = rest + s[:k], ""
                    elif j >= 0:
                        rest, block, s = rest + s[:j], True, s[j + 2:]
                    else:
                        rest, s = rest + s, ""
            count += bool(rest.strip())
    return count


def dep_info_files(target_dir):
    """The source files named in the dep-info (.d) files of a release build for TARGET, as two
    sets: what rustc read for TARGET (the code linked into the binary) and what it read for the
    build machine (build scripts, proc-macros and their dependencies). Files of an older build
    of the same crate version in the same target directory would count too."""
    def read(patterns):
        files = set()
        for pattern in patterns:
            for d in glob.glob(os.path.join(target_dir, *pattern)):
                with open(d, encoding="utf-8", errors="replace") as f:
                    for line in f:
                        if ":" not in line or line.startswith("#"):
                            continue
                        for p in line.split(":", 1)[1].split():
                            if p.endswith(".rs"):
                                # the workspace's own files are named relative to its root
                                files.add(os.path.normpath(os.path.join(ROOT, p)))
        return files
    target = read([(TARGET, "release", "deps", "*.d")])
    host = read([("release", "deps", "*.d"), ("release", "build", "*", "*.d"),
                 (TARGET, "release", "build", "*", "*.d")])
    return target, host


def tcb(target_dir):
    root, nodes, edges, linked, roles = crate_graph()
    target_files, host_files = dep_info_files(target_dir)
    if not target_files:
        die(f"no dep-info under {target_dir}: run tools/scripts/reproducible-build.sh first")
    rows = []
    for key in sorted(nodes):
        name, version = key
        if nodes[key]["path"]:
            base = os.path.join(ROOT, "core" if name == "bidding-core" else name)
        else:
            base = registry_dir(name, version)
        prefix = base.rstrip("/") + "/"
        if roles[key] == "linked":
            compiled = sorted(p for p in target_files if p.startswith(prefix))
            build = sorted(p for p in host_files - target_files if p.startswith(prefix))
        else:
            compiled, build = [], sorted(p for p in host_files if p.startswith(prefix))
        every = sorted(
            os.path.join(d, f) for d, _, fs in os.walk(base) for f in fs if f.endswith(".rs")
            and not re.search(r"/(tests|benches|examples)(/|$)", d[len(base):]))
        rows.append({
            "role": roles[key], "name": name, "version": version,
            "files": len(compiled), "lines": sum(rust_code_lines(p) for p in compiled),
            "build_files": len(build), "build_lines": sum(rust_code_lines(p) for p in build),
            "all_lines": sum(rust_code_lines(p) for p in every),
        })
    missing = [r["name"] for r in rows if r["role"] == "linked" and r["files"] == 0]
    if missing:
        die("no dep-info for %s: build with tools/scripts/reproducible-build.sh first" % ", ".join(missing))

    sys_key = next(k for k in linked if k[0] == "aws-lc-sys")
    lc_version, lc_src, lc_files = aws_lc(sys_key[1])
    lc_dir = os.path.join(lc_src, "aws-lc")
    c_lines = {"c": 0, "asm": 0}
    for f in lc_files:
        kind = "asm" if f.endswith((".S", ".s")) else "c"
        c_lines[kind] += c_code_lines(os.path.join(lc_dir, f))
    headers = [os.path.join(d, f) for d, _, fs in os.walk(lc_dir) for f in fs if f.endswith(".h")]
    h_lines = sum(c_code_lines(h) for h in headers)

    print("role        crate                              version        linked: files   lines"
          "   build time: files   lines   (all .rs of the package)")
    for r in sorted(rows, key=lambda r: (r["role"], -r["lines"], -r["build_lines"], r["name"])):
        print(f"{r['role']:<11} {r['name']:<34} {r['version']:<14} {r['files']:>13} "
              f"{r['lines']:>7} {r['build_files']:>19} {r['build_lines']:>7}   ({r['all_lines']})")
    lr = [r for r in rows if r["role"] == "linked"]
    print(f"linked into {root[0]}: {len(lr)} crates ({root[0]} included), "
          f"{sum(r['files'] for r in lr)} files, {sum(r['lines'] for r in lr)} lines of Rust "
          f"({sum(r['all_lines'] for r in lr)} in all the .rs files of these packages)")
    print(f"build time: {sum(r['build_files'] for r in rows)} files, "
          f"{sum(r['build_lines'] for r in rows)} lines of Rust in build scripts, proc-macros "
          f"and their {sum(1 for r in rows if r['role'] != 'linked')} crates")
    print(f"aws-lc {lc_version}: {len(lc_files)} files compiled for x86_64 Linux, "
          f"{c_lines['c']} lines of C, {c_lines['asm']} lines of assembly; "
          f"{len(headers)} headers in the package, {h_lines} lines")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sbom", help="CycloneDX 1.5 JSON for the enclave binary, to stdout")
    s.add_argument("--binary", required=True)
    s.add_argument("--features", choices=["unsealed"],
                   help="enclave-init's cargo features the binary was built with")
    t = sub.add_parser("tcb", help="lines of code compiled into the enclave")
    t.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR",
                                                          os.path.join(ROOT, "target")))
    args = ap.parse_args()
    if args.cmd == "sbom":
        sys.stdout.write(sbom(args.binary, args.features))
    else:
        tcb(args.target_dir)


if __name__ == "__main__":
    main()
