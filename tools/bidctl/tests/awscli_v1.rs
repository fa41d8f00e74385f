//! The proof of concept's buyer steps with the real AWS CLI v1 (PyPI `awscli`) against
//! `bidctl dev-stack`, end to end, as people at a shell do them:
//! - dev-stack runs as a process (`--json --dir`), and everything below takes its endpoints,
//!   credentials, PCR0 and auction.toml from the JSON it prints;
//! - Buyer1 makes a key with `aws kms create-key` and puts on it the policy that `bidctl
//!   key-policy --document` prints (`aws kms put-key-policy`); Buyer2 uses the stack's key;
//! - each buyer, in a shell script, encrypts bids with `aws kms encrypt` and
//!   `--encryption-context auction=…,lot=…,buyer=…,rules=sealed` (the sealed image's context),
//!   every amount at one width, with `--plaintext 000000000000200000.00` and from a file with
//!   `--plaintext fileb://bid.txt`; writes
//!   `encrypted.csv` by hand with the base64 ciphertexts and `aws s3 cp`s it to their bucket;
//! - the operator makes the manifest, each buyer seals it (`bidctl seal --upload`), the parent
//!   runs the auction, `aws s3 cp` fetches the result, `bidctl verify` checks it; Buyer1 runs
//!   the README's own fetch-and-verify block (read from README.md, placeholders filled in),
//!   which ends with the buyer's check `bidctl verify --buyer NAME --key-id ARN --bids FILE`;
//! - `bidctl dev-stack restart-enclave` gives a fresh enclave, and the rerun gives the same bytes;
//! - SIGINT stops dev-stack cleanly (exit 0); without `--dir` its directory is removed;
//! - no amount appears in any output, log or file outside the buyers' own working directories.
//!
//! Needs `BIDDING_PYTHON` pointing into a venv holding `aws` (tools/test.sh makes one); without
//! it the test says it is skipped, unless `BIDDING_REQUIRE_PEERS=1`.

#[path = "../../test-support/peers/mod.rs"]
mod peers;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIDCTL: &str = env!("CARGO_BIN_EXE_bidctl");
const AUCTION: &str = "awscli-auction";

/// Every amount bid below, as the buyers typed them.
const AMOUNTS: [&str; 5] = ["100000", "200000", "150000", "95000", "250000"];

fn aws_cli() -> Option<PathBuf> {
    peers::peer_tool("aws", "the AWS CLI v1", "awscli_v1")
}

/// A running `bidctl dev-stack`, its stderr collected by a thread.
struct DevStack {
    child: Child,
    info: Value,
    stderr: Arc<Mutex<String>>,
    stdout: String,
}

impl DevStack {
    fn start(args: &[&str]) -> DevStack {
        let mut child = Command::new(BIDCTL)
            .arg("dev-stack")
            .arg("--json")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting bidctl dev-stack");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // The JSON is one line on stdout, once everything runs.
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let n = out
            .read_line(&mut line)
            .expect("reading dev-stack's stdout");
        if n == 0 {
            let status = child.wait().expect("waiting");
            panic!(
                "dev-stack printed nothing and exited ({status}):\n{}",
                stderr.lock().unwrap()
            );
        }
        let info: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("dev-stack's stdout is not one JSON object ({e}): {line}"));
        DevStack {
            child,
            info,
            stderr,
            stdout: line,
        }
    }

    fn s(&self, pointer: &str) -> String {
        self.info
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("dev-stack's JSON has no string at {pointer}: {}", self.info))
            .to_owned()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a signal to the child process this test started and has not reaped.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "signalling dev-stack");
    }

    /// Waits (at most 60 s) for dev-stack to exit on its own.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "dev-stack did not stop within 60 s of the signal:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DevStack {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One role's shell: its environment from dev-stack's JSON and nothing of the machine's AWS
/// configuration, the venv's `aws` first on PATH, HOME in a directory of its own.
fn shell_env(cmd: &mut Command, env: &Value, aws: &Path, home: &Path) {
    let venv_bin = aws.parent().expect("venv bin");
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    cmd.env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .current_dir(home);
    for (k, v) in env.as_object().expect("env is an object") {
        cmd.env(k, v.as_str().expect("env values are strings"));
    }
}

/// Everything the run printed, for the leak search at the end.
#[derive(Default)]
struct Transcript(Vec<(String, Vec<u8>)>);

impl Transcript {
    fn run(&mut self, what: &str, cmd: &mut Command) -> Output {
        let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        self.0
            .push((format!("{what} (stdout)"), out.stdout.clone()));
        self.0
            .push((format!("{what} (stderr)"), out.stderr.clone()));
        out
    }

    fn ok(&mut self, what: &str, cmd: &mut Command) -> String {
        let out = self.run(what, cmd);
        assert!(
            out.status.success(),
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Where an amount appears in `text` as a number of its own (leading zeros and a `.00` tail
/// included, digits or letters around it not: those are parts of digests, ports or base64), or
/// in base64 (as KMS request bodies carry plaintexts).
fn find_amount(text: &[u8], amount: &str) -> Option<usize> {
    use base64::Engine;
    let a = amount.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].windows(a.len()).position(|w| w == a) {
        let start = i + pos;
        let mut left = start;
        while left > 0 && text[left - 1] == b'0' {
            left -= 1;
        }
        let mut right = start + a.len();
        if text.get(right) == Some(&b'.') {
            right += 1;
            while text.get(right).is_some_and(u8::is_ascii_digit) {
                right += 1;
            }
        }
        let alnum = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
        if !alnum(left.checked_sub(1).and_then(|l| text.get(l))) && !alnum(text.get(right)) {
            return Some(start);
        }
        i = start + 1;
    }
    let whole = a.len() / 3 * 3;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&a[..whole]);
    text.windows(b64.len()).position(|w| w == b64.as_bytes())
}

/// The README's ```sh block that holds `needle`, so that a test runs the commands as the
/// README prints them.
fn readme_block(needle: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("README.md has no line with {needle:?}"));
    let start = (0..at)
        .rev()
        .find(|&i| lines[i].starts_with("```"))
        .expect("the line is in a code block");
    assert_eq!(lines[start], "```sh", "{needle:?} is not in a sh block");
    let end = (at..lines.len())
        .find(|&i| lines[i].starts_with("```"))
        .expect("the block ends");
    lines[start + 1..end].join("\n") + "\n"
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => files_under(&path, out),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
}

/// Buyer1's bids, the README's way: every amount written at one width
/// (`000000000000100000.00`, as `bidctl encrypt` writes them, so every ciphertext has one
/// length) and the sealed image's context (`rules=sealed`): from a file with `fileb://` and
/// with `--plaintext`.
const BUYER1_SCRIPT: &str = r#"set -eu
key="$1"
printf '%s' 000000000000100000.00 > bid.txt
c1=$(aws kms encrypt --key-id "$key" --plaintext fileb://bid.txt \
  --encryption-context auction=awscli-auction,lot=1,buyer=Buyer1,rules=sealed --query CiphertextBlob --output text)
c2=$(aws kms encrypt --key-id "$key" --plaintext 000000000000200000.00 \
  --encryption-context auction=awscli-auction,lot=2,buyer=Buyer1,rules=sealed --query CiphertextBlob --output text)
c3=$(aws kms encrypt --key-id "$key" --plaintext 000000000000150000.00 \
  --encryption-context auction=awscli-auction,lot=3,buyer=Buyer1,rules=sealed --query CiphertextBlob --output text)
printf '%s\n' '[].contract,[].bid' "1,$c1" "2,$c2" "3,$c3" > encrypted.csv
aws s3 cp encrypted.csv s3://buyer1-bids/encrypted.csv
"#;

/// Buyer2's, with the stack's own key: property 3 ties Buyer1.
const BUYER2_SCRIPT: &str = r#"set -eu
key="$1"
c1=$(aws kms encrypt --key-id "$key" --plaintext 000000000000095000.00 \
  --encryption-context auction=awscli-auction,lot=1,buyer=Buyer2,rules=sealed --query CiphertextBlob --output text)
printf '%s' 000000000000250000.00 > bid.txt
c2=$(aws kms encrypt --key-id "$key" --plaintext fileb://bid.txt \
  --encryption-context auction=awscli-auction,lot=2,buyer=Buyer2,rules=sealed --query CiphertextBlob --output text)
c3=$(aws kms encrypt --key-id "$key" --plaintext 000000000000150000.00 \
  --encryption-context auction=awscli-auction,lot=3,buyer=Buyer2,rules=sealed --query CiphertextBlob --output text)
printf '%s\n' '[].contract,[].bid' "1,$c1" "2,$c2" "3,$c3" > encrypted.csv
aws s3 cp encrypted.csv s3://buyer2-bids/encrypted.csv
"#;

#[test]
fn proof_of_concept_buyer_steps_with_aws_cli_v1() {
    let Some(aws) = aws_cli() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let stack_dir = tmp.path().join("stack");
    let mut stack = DevStack::start(&["--dir", stack_dir.to_str().unwrap(), "--auction", AUCTION]);
    let mut t = Transcript::default();
    let version = t.ok("aws --version", Command::new(&aws).arg("--version"));
    let stderr_version = String::from_utf8_lossy(&t.0.last().unwrap().1).into_owned();
    assert!(
        format!("{version}{stderr_version}").contains("aws-cli/1."),
        "not the AWS CLI v1: {version}{stderr_version}"
    );

    assert_eq!(stack.info["temporary"], false);
    assert_eq!(stack.s("/dir"), stack_dir.display().to_string());
    let pcr0 = stack.s("/enclave/pcr0");
    assert_eq!(pcr0.len(), 96);
    let role = stack.s("/operator/role_arn");
    let config_path = PathBuf::from(stack.s("/auction_toml"));
    let names = ["Buyer1", "Buyer2"];
    for (i, name) in names.iter().enumerate() {
        assert_eq!(stack.s(&format!("/buyers/{i}/name")), *name);
    }
    let homes: Vec<PathBuf> = names
        .iter()
        .map(|n| {
            let h = tmp.path().join(n);
            std::fs::create_dir_all(&h).unwrap();
            h
        })
        .collect();
    let operator_home = tmp.path().join("operator");
    std::fs::create_dir_all(&operator_home).unwrap();
    let buyer = |i: usize, program: &Path| {
        let mut c = Command::new(program);
        shell_env(&mut c, &stack.info["buyers"][i]["env"], &aws, &homes[i]);
        c
    };
    let operator = |program: &str| {
        let mut c = Command::new(program);
        shell_env(&mut c, &stack.info["operator"]["env"], &aws, &operator_home);
        c
    };

    // Buyer1 makes a key of their own and gives only the attested enclave Decrypt on it.
    let key1 = t
        .ok(
            "Buyer1: aws kms create-key",
            buyer(0, &aws).args([
                "kms",
                "create-key",
                "--description",
                "Buyer1 sealed bids",
                "--query",
                "KeyMetadata.Arn",
                "--output",
                "text",
            ]),
        )
        .trim()
        .to_owned();
    assert!(key1.starts_with("arn:aws:kms:us-east-1:"), "{key1}");
    let policy = t.ok(
        "Buyer1: bidctl key-policy --document",
        buyer(0, Path::new(BIDCTL)).args([
            "key-policy",
            "--document",
            "--role-arn",
            &role,
            "--pcr0",
            &pcr0,
            "--admin-arn",
            &stack.s("/buyers/0/arn"),
        ]),
    );
    std::fs::write(homes[0].join("policy.json"), &policy).unwrap();
    t.ok(
        "Buyer1: aws kms put-key-policy",
        buyer(0, &aws).args([
            "kms",
            "put-key-policy",
            "--key-id",
            &key1,
            "--policy-name",
            "default",
            "--policy",
            "file://policy.json",
        ]),
    );
    let got = t.ok(
        "Buyer1: aws kms get-key-policy",
        buyer(0, &aws).args([
            "kms",
            "get-key-policy",
            "--key-id",
            &key1,
            "--policy-name",
            "default",
            "--query",
            "Policy",
            "--output",
            "text",
        ]),
    );
    assert!(got.contains(&pcr0), "the key policy names the PCR0: {got}");
    let key2 = stack.s("/buyers/1/key_arn");

    // The bids, by shell scripts, and encrypted.csv to each buyer's bucket.
    for (i, (script, key)) in [(BUYER1_SCRIPT, &key1), (BUYER2_SCRIPT, &key2)]
        .into_iter()
        .enumerate()
    {
        std::fs::write(homes[i].join("bids.sh"), script).unwrap();
        let out = t.ok(
            &format!("{}: bids.sh", names[i]),
            buyer(i, Path::new("sh")).args(["bids.sh", key]),
        );
        assert!(
            out.contains(&format!(
                "upload: ./encrypted.csv to s3://{}/encrypted.csv",
                stack.s(&format!("/buyers/{i}/bucket"))
            )),
            "{out}"
        );
        let csv = std::fs::read_to_string(homes[i].join("encrypted.csv")).unwrap();
        assert!(csv.starts_with("[].contract,[].bid\n1,"), "{csv}");
        assert_eq!(csv.lines().count(), 4);
    }
    // The object in the (signature-checking) local S3 is the file the buyer wrote.
    let listed = t.ok(
        "Buyer1: aws s3 ls",
        buyer(0, &aws).args(["s3", "ls", "s3://buyer1-bids/"]),
    );
    assert!(listed.contains("encrypted.csv"), "{listed}");

    // The operator's auction.toml, with the key Buyer1 made (a buyer sends its ARN).
    let config = std::fs::read_to_string(&config_path).unwrap();
    let old_key1 = stack.s("/buyers/0/key_arn");
    assert!(
        config.contains(&old_key1) && config.contains(&key2),
        "{config}"
    );
    std::fs::write(&config_path, config.replace(&old_key1, &key1)).unwrap();
    let config_arg = config_path.to_str().unwrap();

    t.ok(
        "operator: bidding-parent manifest",
        operator(BIDCTL).args(["__parent", "manifest", "--config", config_arg]),
    );
    for (i, key) in [&key1, &key2].into_iter().enumerate() {
        t.ok(
            &format!("{}: bidctl seal --upload", names[i]),
            buyer(i, Path::new(BIDCTL)).args([
                "seal",
                "--manifest",
                &stack.s("/manifest_url"),
                "--buyer",
                names[i],
                "--key-id",
                key,
                "--bids",
                "encrypted.csv",
                "--upload",
            ]),
        );
        // The README's recipe draws no warning (one width, one ciphertext length), and the
        // first bid opens under the manifest's context with the buyer's own credentials.
        let err = String::from_utf8_lossy(&t.0.last().unwrap().1).into_owned();
        assert!(!err.contains("WARNING"), "{err}");
        assert!(err.contains("opens with your key"), "{err}");
    }
    t.ok(
        "operator: bidding-parent",
        operator(BIDCTL).args(["__parent", "--config", config_arg, "--log-format", "human"]),
    );

    // The result, fetched with the AWS CLI, and checked by anyone's `bidctl verify`.
    for f in [
        "output.csv",
        "output.json",
        "output.csv.attestation",
        "manifest.json",
    ] {
        t.ok(
            &format!("operator: aws s3 cp {f}"),
            operator(aws.to_str().unwrap()).args([
                "s3",
                "cp",
                &format!("s3://auction-results/{AUCTION}/{f}"),
                f,
            ]),
        );
    }
    let output = std::fs::read_to_string(operator_home.join("output.csv")).unwrap();
    assert_eq!(
        output, "Property,Result\n1,Buyer1 Wins\n2,Buyer2 Wins\n3,\"Tie: Buyer1, Buyer2\"\n",
        "every bid counted: the fileb:// ones and v1's raw --plaintext, all at one width"
    );
    let verified = t.ok(
        "bidctl verify",
        operator(BIDCTL).args([
            "verify",
            "--output",
            "output.csv",
            "--attestation",
            "output.csv.attestation",
            "--manifest",
            "manifest.json",
            "--root",
            &stack.s("/attestation_root"),
            "--expect-pcr0",
            &pcr0,
        ]),
    );
    assert!(!verified.is_empty());

    // Buyer1, as the README's walkthrough shows it: fetch the result object by object with the
    // AWS CLI, then the buyer's own check with their key and bid file.
    let script = readme_block("bidctl verify --output result/output.csv")
        .replace("<PCR0 printed by dev-stack>", &pcr0)
        .replace("dev/nsm/root.pem", &stack.s("/attestation_root"))
        .replace("dev-auction", AUCTION);
    assert!(
        script.contains("--buyer Buyer1 --key-id \"$KEY\" --bids encrypted.csv")
            && !script.contains('<'),
        "{script}"
    );
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIDCTL, bin.join("bidctl")).unwrap();
    std::fs::write(homes[0].join("verify.sh"), &script).unwrap();
    let mut c = buyer(0, Path::new("sh"));
    c.args(["-e", "verify.sh"]).env("KEY", &key1).env(
        "PATH",
        format!(
            "{}:{}:{}",
            bin.display(),
            aws.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    let mine = t.ok(
        "Buyer1: the README's fetch and bidctl verify --buyer",
        &mut c,
    );
    assert!(
        mine.contains("is the one counted for `Buyer1`, under your key")
            && mine.contains("your bids    none set aside")
            && mine.contains("names this manifest: it is the one you sealed"),
        "{mine}"
    );

    // A fresh enclave, by the subcommand; the rerun of the same manifest gives the same bytes.
    let old_enclave = stack.info["enclave"]["pid"].as_u64().unwrap();
    t.ok(
        "bidctl dev-stack restart-enclave",
        Command::new(BIDCTL).args([
            "dev-stack",
            "restart-enclave",
            "--dir",
            stack_dir.to_str().unwrap(),
        ]),
    );
    let new_enclave: u64 = std::fs::read_to_string(stack_dir.join("enclave.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(old_enclave, new_enclave);
    assert!(
        stack.stderr().contains("the dev enclave was restarted"),
        "{}",
        stack.stderr()
    );
    // The timer's next run: the verified result is there, nothing to do.
    t.ok(
        "operator: bidding-parent (decided already)",
        operator(BIDCTL).args(["__parent", "--config", config_arg, "--log-format", "human"]),
    );
    assert!(
        String::from_utf8_lossy(&t.0.last().unwrap().1).contains("is decided already"),
        "{}",
        String::from_utf8_lossy(&t.0.last().unwrap().1)
    );
    t.ok(
        "operator: bidding-parent --rerun",
        operator(BIDCTL).args([
            "__parent",
            "--config",
            config_arg,
            "--log-format",
            "human",
            "--rerun",
        ]),
    );
    let again = t.ok(
        "operator: aws s3 cp output.csv - (rerun)",
        operator(aws.to_str().unwrap()).args([
            "s3",
            "cp",
            &format!("s3://auction-results/{AUCTION}/output.csv"),
            "-",
        ]),
    );
    assert_eq!(again, output);

    // Ctrl-C: dev-stack stops everything and exits 0; the kept directory stays.
    stack.signal(libc::SIGINT);
    let status = stack.wait();
    let stderr = stack.stderr();
    assert!(status.success(), "dev-stack exited {status}:\n{stderr}");
    assert!(stderr.contains("dev-stack: stopped"), "{stderr}");
    assert!(stack_dir.join("dev-stack.json").is_file());
    assert!(!stack_dir.join("dev-stack.pid").exists());
    let enclave_gone = !Path::new(&format!("/proc/{new_enclave}")).exists()
        || std::fs::read_to_string(format!("/proc/{new_enclave}/stat"))
            .is_ok_and(|s| s.contains(") Z "));
    assert!(enclave_gone, "the enclave process {new_enclave} still runs");

    // The search itself finds an amount in the shapes it could take.
    for (text, found) in [
        ("bid 000000000000100000.00 set aside", true),
        ("amount=100000\n", true),
        ("Plaintext\":\"MTAwMDAwCg==\"", true),
        ("port 1000001, digest a100000f", false),
    ] {
        assert_eq!(
            find_amount(text.as_bytes(), "100000").is_some(),
            found,
            "{text}"
        );
    }

    // No amount anywhere: not in any command's output, dev-stack's, the enclave's log, S3's
    // objects, the emulator's state, or the files the operator fetched.
    let mut searched = t.0;
    searched.push(("dev-stack stdout".into(), stack.stdout.clone().into_bytes()));
    searched.push(("dev-stack stderr".into(), stderr.into_bytes()));
    let mut files = Vec::new();
    files_under(&stack_dir, &mut files);
    files_under(&operator_home, &mut files);
    assert!(files.iter().any(|f| f.ends_with("enclave.log")));
    assert!(files.iter().any(|f| f.ends_with("enclave.previous.log")));
    for f in files {
        searched.push((f.display().to_string(), std::fs::read(&f).unwrap()));
    }
    for (what, bytes) in &searched {
        for amount in AMOUNTS {
            if let Some(at) = find_amount(bytes, amount) {
                let from = at.saturating_sub(60);
                let to = (at + 60).min(bytes.len());
                panic!(
                    "amount {amount} found in {what}: …{}…",
                    String::from_utf8_lossy(&bytes[from..to])
                );
            }
        }
    }

    // The kept directory: the next run has the same credentials and keys, and Buyer1's own
    // key (with its policy) is still there for Buyer1's AWS CLI.
    let first = stack.info.clone();
    drop(stack);
    let mut again = DevStack::start(&["--dir", stack_dir.to_str().unwrap()]);
    for p in [
        "/buyers/0/key_arn",
        "/buyers/1/key_arn",
        "/buyers/0/access_key_id",
        "/operator/secret_access_key",
        "/enclave/pcr0",
    ] {
        assert_eq!(again.info.pointer(p), first.pointer(p), "{p}");
    }
    assert_ne!(
        again.s("/s3_endpoint"),
        first["s3_endpoint"].as_str().unwrap()
    );
    let mut c = Command::new(&aws);
    shell_env(&mut c, &again.info["buyers"][0]["env"], &aws, &homes[0]);
    let got = c
        .args([
            "kms",
            "describe-key",
            "--key-id",
            &key1,
            "--query",
            "KeyMetadata.Enabled",
        ])
        .output()
        .unwrap();
    assert!(
        got.status.success()
            && String::from_utf8_lossy(&got.stdout)
                .trim()
                .eq_ignore_ascii_case("true"),
        "{got:?}"
    );
    again.signal(libc::SIGTERM);
    assert!(again.wait().success(), "{}", again.stderr());
}

#[test]
fn a_temporary_dev_stack_restarts_its_enclave_on_sigusr1_and_is_removed_at_stop() {
    // Needs no AWS CLI.
    let mut stack = DevStack::start(&[]);
    assert_eq!(stack.info["temporary"], true);
    let dir = PathBuf::from(stack.s("/dir"));
    assert!(dir.join("auction.toml").is_file());
    assert!(Path::new(&stack.s("/ca_bundle")).is_file());
    // SIGUSR1 restarts the enclave (SIGHUP, a closed terminal, stops dev-stack).
    let before = stack.info["enclave"]["pid"].as_u64().unwrap();
    stack.signal(libc::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stack.stderr().contains("the dev enclave was restarted") {
        assert!(Instant::now() < deadline, "no restart: {}", stack.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let after: u64 = std::fs::read_to_string(dir.join("enclave.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(before, after);
    stack.signal(libc::SIGTERM);
    let status = stack.wait();
    assert!(status.success(), "{status}: {}", stack.stderr());
    assert!(!dir.exists(), "{} is left behind", dir.display());
}
