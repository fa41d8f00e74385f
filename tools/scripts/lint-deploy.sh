#!/usr/bin/env bash
# Lints deploy/ (CI runs it): the CloudFormation templates, the systemd units and the watcher.
#
#   tools/scripts/lint-deploy.sh           check; any finding fails
#   tools/scripts/lint-deploy.sh --sync    first rewrite operator.yaml's embedded copies of deploy/ files
#
# 1. cfn-lint (PyPI, pinned, in target/deploy-venv) on deploy/*.yaml: no error, warning or
#    informational finding.
# 2. What cfn-lint cannot know: operator.yaml's user data carries exact copies of the units,
#    the sysusers and tmpfiles files and the watcher, creates the lock's directory at first
#    boot, fits EC2's 16 KiB, lets the vsock-proxy reach only this region's KMS, and the
#    allocator's CPUs and memory are what bidding-enclave.service asks for (its --memory is
#    ENCLAVE_MEMORY_MIB, which the user data's drop-in sets to EnclaveMemoryMiB, as
#    allocator.yaml's memory_mib); the launch template enables enclaves and requires IMDSv2;
#    routine per-auction updates cannot replace the instance (the launch template uses no
#    per-auction parameter, and ImageId is a pinned AMI, not an SSM parameter);
#    buyer.yaml gives the operator's role kms:Decrypt under the PCR0 condition and
#    s3:GetObject, and nothing else, and denies seals (Encrypt with a manifest context) to all
#    but the administrator; no unit runs --debug-mode.
# 3. shellcheck on the deploy and set-up scripts.
# 4. bidding-enclave-watch against a stand-in nitro-cli: exits 1 when the enclave is gone or
#    another one has the name, terminates a debug-mode one, exits 0 on SIGTERM.
# 5. systemd-analyze verify on the units, in a scratch root (--root) that holds this machine's
#    own units (for sysinit.target, network-online.target, ...), stand-ins for what only an
#    Amazon Linux instance has (nitro-cli, the allocator and vsock-proxy units) and for the
#    parent binary (built elsewhere), and the real watcher script, at the paths the units name:
#    a unit naming a wrong path fails, as do unknown keys, bad values and bad calendar
#    expressions (verify only warns about those, so any output fails); systemd-sysusers on the
#    sysusers file, systemd-tmpfiles on the tmpfiles file (the lock's directory, owned by
#    bidding); `systemd-analyze security --offline` holds bidding-parent.service to an
#    exposure of at most 2.0.
# 6. deploy/auction.toml.example passes bidding-parent's configuration checks (BIDDING_PARENT=
#    names a built binary; otherwise it is built).
set -euo pipefail
cd "$(dirname "$0")/../.."
say() { printf 'lint-deploy: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
sync=false
case ${1:-} in
  --sync) sync=true ;;
  "") ;;
  *) echo "usage: tools/scripts/lint-deploy.sh [--sync]" >&2; exit 2 ;;
esac

tools/scripts/apt-need.sh lint-deploy python3 python3-venv ca-certificates systemd jq shellcheck util-linux

cfn_lint_version=1.58.0
venv=target/deploy-venv
if [ "$("$venv/bin/cfn-lint" --version 2>/dev/null)" != "cfn-lint $cfn_lint_version" ]; then
  say "installing cfn-lint $cfn_lint_version into $venv (once)"
  python3 -m venv --clear "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "cfn-lint==$cfn_lint_version"
fi

if $sync; then
  "$venv/bin/python" - <<'EOF'
import pathlib, re
p = pathlib.Path("deploy/operator.yaml")
text = p.read_text()
begin = "            # BEGIN copies of deploy/ files (tools/scripts/lint-deploy.sh --sync writes them)\n"
end = "            # END copies of deploy/ files\n"
files = [("/etc/sysusers.d/bidding.conf", "deploy/systemd/bidding-sysusers.conf", "0644"),
         ("/etc/tmpfiles.d/bidding.conf", "deploy/systemd/bidding-tmpfiles.conf", "0644"),
         ("/usr/local/sbin/bidding-enclave-watch", "deploy/bidding-enclave-watch", "0755")]
files += [(f"/etc/systemd/system/{u.name}", str(u), "0644")
          for u in sorted(pathlib.Path("deploy/systemd").iterdir()) if u.suffix in (".service", ".timer")]
out = begin
for dest, src, mode in files:
    out += f"            - path: {dest}\n              permissions: \"{mode}\"\n              content: |\n"
    out += "".join((" " * 16 + l) if l.strip() else l for l in pathlib.Path(src).read_text().splitlines(True))
out += end
a, b = text.index(begin), text.index(end) + len(end)
p.write_text(text[:a] + out + text[b:])
print("lint-deploy: rewrote deploy/operator.yaml's copies of deploy/ files")
EOF
fi

say "cfn-lint $cfn_lint_version: deploy/*.yaml"
"$venv/bin/cfn-lint" deploy/*.yaml || fail "cfn-lint found the problems above"

say "what cfn-lint cannot know"
"$venv/bin/python" - <<'EOF' || fail "the checks above"
import json, pathlib, re, sys, yaml
from cfnlint.decode import cfn_yaml

problems = []
def check(ok, what):
    if not ok:
        problems.append(what)

op = cfn_yaml.load("deploy/operator.yaml")
lt = op["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
check(lt.get("EnclaveOptions") == {"Enabled": True}, "operator.yaml: the launch template must enable Nitro Enclaves")
md = lt.get("MetadataOptions", {})
check(md.get("HttpTokens") == "required" and md.get("HttpPutResponseHopLimit") == 1,
      "operator.yaml: the launch template must require IMDSv2 with hop limit 1")
user_data = lt["UserData"]["Fn::Base64"]["Fn::Sub"]
check(isinstance(user_data, str) and user_data.startswith("#cloud-config\n"), "operator.yaml: user data is not a cloud-config")
# Rendered as CloudFormation would, with the worst case for the size: the longest region name,
# 5 digits of memory, a long schedule.
sample = {"AWS::Region": "ap-southeast-5", "EnclaveMemoryMiB": "16384", "ParentSchedule": "x" * 64}
rendered = re.sub(r"\$\{([^}!]+)\}", lambda m: sample.get(m.group(1), "UNKNOWN-" + m.group(1)), user_data)
check("UNKNOWN-" not in rendered, "operator.yaml: user data uses an unexpected ${...}: " + ", ".join(set(re.findall(r"UNKNOWN-[^\s]*", rendered))))
check(len(rendered.encode()) <= 16384, f"operator.yaml: user data is {len(rendered.encode())} bytes, EC2 takes 16384")
cc = yaml.safe_load(rendered)
files = {f["path"]: f for f in cc.get("write_files", [])}
expected = {"/etc/sysusers.d/bidding.conf": "deploy/systemd/bidding-sysusers.conf",
            "/etc/tmpfiles.d/bidding.conf": "deploy/systemd/bidding-tmpfiles.conf",
            "/usr/local/sbin/bidding-enclave-watch": "deploy/bidding-enclave-watch"}
for u in pathlib.Path("deploy/systemd").iterdir():
    if u.suffix in (".service", ".timer"):
        expected[f"/etc/systemd/system/{u.name}"] = str(u)
for dest, src in sorted(expected.items()):
    check(dest in files and files[dest]["content"] == pathlib.Path(src).read_text(),
          f"operator.yaml: the user data's {dest} is not an exact copy of {src} (tools/scripts/lint-deploy.sh --sync)")
check("systemd-tmpfiles --create /etc/tmpfiles.d/bidding.conf" in cc.get("runcmd", []),
      "operator.yaml: the user data must create /var/lib/bidding at first boot (systemd-tmpfiles), for runs by hand")
# Routine updates never replace the instance: the per-auction parameters stay out of the launch
# template, and the AMI is pinned (an SSM parameter is resolved again on every update).
for name in ("AuctionId", "BuyerPrincipals", "BuyerKeyArns", "BuyerBidObjectArns"):
    check(name not in json.dumps(lt), f"operator.yaml: the launch template must not use {name} (an update of it would replace the instance)")
image = op["Parameters"]["ImageId"]
check(image.get("Type") == "AWS::EC2::Image::Id" and "Default" not in image,
      "operator.yaml: ImageId must be a pinned AMI id without a default, never an SSM parameter resolved again on every update")
proxy = yaml.safe_load(files.get("/etc/nitro_enclaves/vsock-proxy.yaml", {}).get("content", "{}"))
check(proxy == {"allowlist": [{"address": "kms.ap-southeast-5.amazonaws.com", "port": 443}]},
      f"operator.yaml: the vsock-proxy allowlist must be this region's KMS alone, not {proxy}")
alloc = yaml.safe_load(files.get("/etc/nitro_enclaves/allocator.yaml", {}).get("content", "{}"))
unit = pathlib.Path("deploy/systemd/bidding-enclave.service").read_text()
run = re.search(r"^ExecStartPre=/usr/bin/nitro-cli run-enclave (.*)$", unit, re.M)
check(run is not None, "bidding-enclave.service: no ExecStartPre=/usr/bin/nitro-cli run-enclave")
if run:
    args = run.group(1).split()
    opt = lambda name: args[args.index(name) + 1] if name in args else None
    check(opt("--eif-path") == "/opt/bidding/bidding-enclave.eif", "bidding-enclave.service: --eif-path")
    check(str(alloc.get("cpu_count")) == opt("--cpu-count"), "allocator.yaml's cpu_count differs from the unit's --cpu-count")
    check(alloc.get("memory_mib") == 16384, "allocator.yaml's memory_mib must be the EnclaveMemoryMiB parameter")
    check(opt("--memory") == "$ENCLAVE_MEMORY_MIB",
          "bidding-enclave.service: --memory must be $ENCLAVE_MEMORY_MIB (operator.yaml's EnclaveMemoryMiB)")
    dropin = files.get("/etc/systemd/system/bidding-enclave.service.d/memory.conf", {}).get("content", "")
    check("Environment=ENCLAVE_MEMORY_MIB=16384" in dropin.splitlines(),
          "operator.yaml: the user data must set bidding-enclave.service's ENCLAVE_MEMORY_MIB to EnclaveMemoryMiB")
    default = re.search(r"^Environment=ENCLAVE_MEMORY_MIB=([0-9]+)$", unit, re.M)
    check(default is not None and int(default.group(1)) >= int(op["Parameters"]["EnclaveMemoryMiB"]["MinValue"]),
          "bidding-enclave.service: its default ENCLAVE_MEMORY_MIB must be at least EnclaveMemoryMiB's MinValue")
for f in pathlib.Path("deploy/systemd").iterdir():
    for line in f.read_text().splitlines():
        check(not (line.startswith("Exec") and "--debug-mode" in line), f"{f}: {line}: never --debug-mode")

buyer = cfn_yaml.load("deploy/buyer.yaml")
res = buyer["Resources"]
operator = {"Ref": "OperatorRoleArn"}
def grants(doc):
    return [s for s in doc["Statement"]
            if isinstance(s.get("Principal"), dict) and s["Principal"].get("AWS") == operator]
kms = grants(res["BidKey"]["Properties"]["KeyPolicy"])
check(len(kms) == 1 and kms[0]["Effect"] == "Allow" and kms[0]["Action"] == "kms:Decrypt",
      "buyer.yaml: the operator's role may only kms:Decrypt, in one statement")
if kms:
    cond = kms[0].get("Condition", {})
    check(list(cond) == ["StringEqualsIgnoreCase"]
          and cond["StringEqualsIgnoreCase"].get("kms:RecipientAttestation:ImageSha384") == {"Ref": "Pcr0"},
          "buyer.yaml: the operator's kms:Decrypt must require ImageSha384 = Pcr0")
s3 = grants(res["BidBucketPolicy"]["Properties"]["PolicyDocument"])
check(len(s3) == 1 and s3[0]["Effect"] == "Allow" and s3[0]["Action"] == "s3:GetObject",
      "buyer.yaml: the operator's role may only s3:GetObject on the bid objects")
seal = [s for s in res["BidKey"]["Properties"]["KeyPolicy"]["Statement"] if s.get("Sid") == "OnlyTheAdministratorSeals"]
check(len(seal) == 1 and seal[0]["Effect"] == "Deny" and seal[0]["Principal"] == {"AWS": "*"}
      and seal[0]["Action"] == "kms:Encrypt" and "kms:EncryptionContext:manifest" in str(seal[0].get("Condition")),
      "buyer.yaml: the key policy must deny kms:Encrypt with a manifest context to all but the administrator")
zero = "0" * 96
check(any(zero in str(a.get("Assert")) for a in buyer["Rules"]["Pcr0IsNotAllZero"]["Assertions"]),
      "buyer.yaml: a rule must refuse an all-zero PCR0")

for p in problems:
    print(f"lint-deploy: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

say "shellcheck"
shellcheck deploy/bidding-enclave-watch tools/scripts/lint-deploy.sh tools/test.sh tools/scripts/apt-need.sh

scratch=$(mktemp -d)
cleanup() { rm -rf "$scratch"; }
trap cleanup EXIT

say "bidding-enclave-watch against a stand-in nitro-cli"
mkdir -p "$scratch/bin"
cat >"$scratch/bin/nitro-cli" <<'EOF'
#!/bin/sh
case $1 in
  describe-enclaves) cat "$STUB_STATE" ;;
  terminate-enclave) echo "terminate $*" >>"$STUB_LOG" ;;
  *) exit 9 ;;
esac
EOF
chmod +x "$scratch/bin/nitro-cli"
export STUB_STATE="$scratch/state.json" STUB_LOG="$scratch/nitro-cli.log"
running='[{"EnclaveName":"bidding-enclave","EnclaveCID":16,"State":"RUNNING","Flags":"NONE"}]'
# watch_case STATE EXPECTED_EXIT [ACTION]: ACTION (gone | term) happens while the watcher runs.
watch_case() {
  printf '%s' "$1" >"$STUB_STATE"
  : >"$STUB_LOG"
  PATH="$scratch/bin:$PATH" deploy/bidding-enclave-watch bidding-enclave 1 2>"$scratch/watch.err" &
  local pid=$! rc=0
  if [ -n "${3:-}" ]; then
    sleep 1.5
    kill -0 "$pid" 2>/dev/null || fail "watcher ended while $1 was running: $(cat "$scratch/watch.err")"
    case $3 in
      gone) printf '[]' >"$STUB_STATE" ;;
      term) kill -TERM "$pid" ;;
    esac
  fi
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill "$pid"; fail "watcher still running (state $1, $3)"; fi
  wait "$pid" || rc=$?
  [ "$rc" -eq "$2" ] || fail "watcher exited $rc, not $2 (state $1, ${3:-}): $(cat "$scratch/watch.err")"
}
watch_case "$running" 1 gone
grep -q "is gone" "$scratch/watch.err" || fail "watcher did not say the enclave is gone"
watch_case "$running" 0 term
watch_case '[{"EnclaveName":"other","State":"RUNNING","Flags":"NONE"}]' 1
watch_case '[{"EnclaveName":"bidding-enclave","State":"TERMINATING","Flags":"NONE"}]' 1
watch_case '[{"EnclaveName":"bidding-enclave","State":"RUNNING","Flags":"DEBUG_MODE"}]' 1
grep -q "terminate terminate-enclave --enclave-name bidding-enclave" "$STUB_LOG" \
  || fail "watcher did not terminate a debug-mode enclave"
watch_case 'not json' 1

say "systemd-analyze verify (systemd $(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p'))"
root="$scratch/root"
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$root/usr/bin" "$root/usr/local/bin" \
  "$root/usr/local/sbin" "$root/usr/sbin"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp deploy/systemd/*.service deploy/systemd/*.timer "$root/etc/systemd/system/"
install -m 0755 deploy/bidding-enclave-watch "$root/usr/local/sbin/bidding-enclave-watch"
for stand_in in /usr/bin/nitro-cli /usr/local/bin/bidding-parent; do
  printf '#!/bin/sh\nexit 0\n' >"$root$stand_in"
  chmod 0755 "$root$stand_in"
done
for unit in nitro-enclaves-allocator nitro-enclaves-vsock-proxy; do
  printf '[Unit]\nDescription=stand-in for %s\n[Service]\nExecStart=/usr/bin/nitro-cli\n' "$unit" \
    >"$root/etc/systemd/system/$unit.service"
done
# The schedule drop-in operator.yaml writes, with its default schedule.
schedule=$("$venv/bin/python" -c 'from cfnlint.decode import cfn_yaml; print(cfn_yaml.load("deploy/operator.yaml")["Parameters"]["ParentSchedule"]["Default"])')
mkdir -p "$root/etc/systemd/system/bidding-parent.timer.d" "$root/etc/systemd/system/bidding-enclave.service.d"
printf '[Timer]\nOnCalendar=\nOnCalendar=%s\n' "$schedule" >"$root/etc/systemd/system/bidding-parent.timer.d/schedule.conf"
printf '[Service]\nEnvironment=ENCLAVE_MEMORY_MIB=1024\n' >"$root/etc/systemd/system/bidding-enclave.service.d/memory.conf"
units=()
for f in deploy/systemd/*.service deploy/systemd/*.timer; do units+=("$(basename "$f")"); done
if ! out=$(systemd-analyze verify --root="$root" --man=no --generators=no "${units[@]}" 2>&1) || [ -n "$out" ]; then
  printf '%s\n' "$out" >&2
  fail "systemd-analyze verify ${units[*]}"
fi

say "systemd-sysusers"
mkdir -p "$root/etc/sysusers.d"
cp deploy/systemd/bidding-sysusers.conf "$root/etc/sysusers.d/bidding.conf"
out=$(systemd-sysusers --root="$root" 2>&1) \
  || { printf '%s\n' "$out" >&2; fail "systemd-sysusers deploy/systemd/bidding-sysusers.conf"; }
grep -q '^bidding:x:[0-9]*:[0-9]*:Sealed-bid auction parent:/var/lib/bidding:/usr/sbin/nologin$' "$root/etc/passwd" \
  || fail "systemd-sysusers did not make the bidding user: $(cat "$root/etc/passwd")"

say "systemd-tmpfiles"
mkdir -p "$root/etc/tmpfiles.d"
cp deploy/systemd/bidding-tmpfiles.conf "$root/etc/tmpfiles.d/bidding.conf"
out=$(systemd-tmpfiles --root="$root" --create 2>&1) \
  || { printf '%s\n' "$out" >&2; fail "systemd-tmpfiles deploy/systemd/bidding-tmpfiles.conf"; }
uid=$(awk -F: '$1 == "bidding" { print $3 }' "$root/etc/passwd")
[ "$(stat -c '%a %u' "$root/var/lib/bidding")" = "750 $uid" ] \
  || fail "deploy/systemd/bidding-tmpfiles.conf did not make /var/lib/bidding 0750, owned by bidding"

say "systemd-analyze security bidding-parent.service"
if ! out=$(systemd-analyze security --offline=true --root="$root" --threshold=20 --no-pager \
  bidding-parent.service 2>&1); then
  printf '%s\n' "$out" >&2
  fail "bidding-parent.service is exposed beyond 2.0"
fi
printf '%s\n' "$out" | tail -n 1 >&2

say "auction.toml.example against bidding-parent's own configuration checks"
# The parent validates its whole configuration before it takes the lock, and exits 7 when
# another process holds the lock: so, with the lock held here, 7 means the example (with its
# placeholders filled in) passed every check, and nothing was read or sent anywhere.
parent=${BIDDING_PARENT:-}
if [ -z "$parent" ]; then
  cargo build --locked --quiet -p bidding-parent --bin bidding-parent
  parent=$(cargo metadata --format-version 1 --no-deps | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/bidding-parent
fi
"$venv/bin/python" - deploy/auction.toml.example "$scratch/auction.toml" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
n = iter(range(1, 100))
def fill(m):
    what = m.group(1)
    if what == "PCR0":
        return "ab" * 48
    if what.endswith("KeyArn"):
        return f"arn:aws:kms:us-east-1:111122223333:key/{next(n):08d}-0000-4000-8000-000000000000"
    if what.endswith("BucketName"):
        return f"example-bucket-{next(n)}"
    sys.exit(f"lint-deploy: auction.toml.example: unknown placeholder <{what}>")
open(sys.argv[2], "w").write(re.sub(r"<([^>]+)>", fill, text))
EOF
set +e
out=$(flock "$scratch/parent.lock" "$parent" --config "$scratch/auction.toml" --lock-file "$scratch/parent.lock" 2>&1)
rc=$?
set -e
[ "$rc" -eq 7 ] || { printf '%s\n' "$out" >&2; fail "bidding-parent exited $rc on deploy/auction.toml.example, not 7 (lock held)"; }

say "deploy/ is clean"
