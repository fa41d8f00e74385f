//! `bidctl dev-stack` as a process, for what a person at a shell runs into: buyers whose names
//! would share a bucket are refused; a restart with `--dir` keeps the auction id, the reveal
//! policy and a `key_arn` the operator edited in; each role's env file clears an assumed role
//! or profile; a closed terminal (SIGHUP) stops it cleanly; SIGKILL leaves no enclave behind;
//! the next steps name the first buyer and end with `bidctl verify --root`.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIDCTL: &str = env!("CARGO_BIN_EXE_bidctl");

struct Running {
    child: Child,
    info: Value,
}

fn start(dir: &Path, args: &[&str]) -> Running {
    let mut child = Command::new(BIDCTL)
        .args(["dev-stack", "--json", "--dir"])
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let info = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    Running { child, info }
}

impl Running {
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a signal to the dev-stack this test started, by its PID.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }
    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "dev-stack did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn alive(pid: u64) -> bool {
    // Not a zombie of ours: the enclave's parent is dev-stack, which is gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split_whitespace().nth(2).is_none_or(|st| st != "Z"))
}

#[test]
fn buyers_that_would_share_a_bucket_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (a, b, says) in [
        ("Acme", "Acme", "--buyer Acme is given twice"),
        ("acme", "ACME", "differ only in case"),
    ] {
        let o = Command::new(BIDCTL)
            .args(["dev-stack", "--dir"])
            .arg(dir.path())
            .args(["--buyer", a, "--buyer", b])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{err}");
    }
    assert!(!dir.path().join("dev-stack.pid").exists());
}

#[test]
fn a_restart_keeps_the_operators_settings_and_sighup_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(
        dir.path(),
        &[
            "--buyer",
            "Alice",
            "--buyer",
            "Bob",
            "--auction",
            "kept-1",
            "--reveal",
            "winning-bid",
        ],
    );
    let env = std::fs::read_to_string(dir.path().join("env/Alice.sh")).unwrap();
    assert!(
        env.starts_with("unset AWS_SESSION_TOKEN AWS_PROFILE\n"),
        "{env}"
    );
    assert!(env.contains("export AWS_CA_BUNDLE="), "{env}");
    assert_eq!(
        first.info["manifest_url"],
        "s3://auction-results/kept-1/manifest.json"
    );
    // Alice and Bob each have an account of their own, not the operator's.
    let alice = first.info["buyers"][0]["arn"].as_str().unwrap().to_owned();
    let operator = first.info["operator"]["role_arn"].as_str().unwrap();
    assert_ne!(alice.split(':').nth(4), operator.split(':').nth(4));
    assert_ne!(
        alice.split(':').nth(4),
        first.info["buyers"][1]["arn"]
            .as_str()
            .unwrap()
            .split(':')
            .nth(4)
    );
    // A closed terminal: SIGHUP stops it, cleanly.
    first.signal(libc::SIGHUP);
    assert!(first.wait().success());
    for f in ["dev-stack.pid", "enclave.pid", "enclave.sock"] {
        assert!(!dir.path().join(f).exists(), "{f} left behind");
    }
    // The operator puts Alice's own key in auction.toml; the next run keeps it, and the terms.
    let toml = dir.path().join("auction.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let stack_key = first.info["buyers"][0]["key_arn"]
        .as_str()
        .unwrap()
        .to_owned();
    let own = "arn:aws:kms:us-east-1:200000000001:key/11111111-2222-4333-8444-555555555555";
    std::fs::write(&toml, text.replace(&stack_key, own)).unwrap();
    let mut second = start(dir.path(), &[]);
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("auction_id = \"kept-1\""), "{text}");
    assert!(text.contains("reveal = \"winning-bid\""), "{text}");
    assert!(text.contains(own), "{text}");
    let notes = second.info["notes"].to_string();
    assert!(notes.contains("Alice's key_arn"), "{notes}");
    second.signal(libc::SIGINT);
    assert!(second.wait().success());
}

#[test]
fn sigkill_leaves_no_enclave_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path(), &[]);
    let enclave = first.info["enclave"]["pid"].as_u64().unwrap();
    assert!(alive(enclave));
    first.signal(libc::SIGKILL);
    first.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(enclave) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(enclave), "the enclave outlived dev-stack");
    // The next dev-stack on the directory starts over the stale pid files.
    let mut second = start(dir.path(), &[]);
    second.signal(libc::SIGTERM);
    assert!(second.wait().success());
}

#[test]
fn the_next_steps_name_the_first_buyer_and_end_with_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIDCTL)
        .args(["dev-stack", "--dir"])
        .arg(dir.path())
        .args(["--buyer", "Alice", "--buyer", "Bob"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    while !text.contains("--root") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        text.push_str(&line);
    }
    // SAFETY: SIGINT to the dev-stack this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    assert!(child.wait().unwrap().success());
    assert!(text.contains("/env/<Alice|operator>.sh"), "{text}");
    assert!(!text.contains("Buyer1"), "{text}");
    assert!(text.contains("kill -USR1 "), "{text}");
    assert!(
        text.contains("s3://auction-results/dev-auction/manifest.json"),
        "{text}"
    );
    assert!(text.contains("bidctl verify --output"), "{text}");
    assert!(text.contains("--root "), "{text}");
}

/// One image, one rule set: dev-stack runs the sealed image's dev enclave unless `--unsealed`
/// asks for the unsealed one, which has a PCR0 of its own; each buyer's key for it is a
/// separate key, trusting that PCR0 alone, and the sealed key keeps trusting only the sealed
/// image. `--allow-no-context` is for the unsealed image only.
#[test]
fn the_unsealed_image_gets_its_own_pcr0_and_separate_keys() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(BIDCTL)
        .args(["dev-stack", "--dir"])
        .arg(dir.path())
        .arg("--allow-no-context")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--unsealed"), "{err}");
    let policy_of = |key: &str| -> String {
        // The emulator keeps each key's policy in policies/<key id>.json.
        let id = key.rsplit('/').next().unwrap();
        std::fs::read_to_string(dir.path().join(format!("kms/policies/{id}.json"))).unwrap()
    };
    let mut sealed = start(dir.path(), &["--buyer", "Alice"]);
    assert_eq!(sealed.info["enclave"]["rules"], "sealed");
    let sealed_pcr0 = sealed.info["enclave"]["pcr0"].as_str().unwrap().to_owned();
    let sealed_key = sealed.info["buyers"][0]["key_arn"]
        .as_str()
        .unwrap()
        .to_owned();
    let toml = std::fs::read_to_string(dir.path().join("auction.toml")).unwrap();
    assert!(toml.contains("sealed = true"), "{toml}");
    sealed.signal(libc::SIGINT);
    assert!(sealed.wait().success());

    let mut unsealed = start(dir.path(), &["--unsealed", "--allow-no-context"]);
    assert_eq!(unsealed.info["enclave"]["rules"], "unsealed");
    let unsealed_pcr0 = unsealed.info["enclave"]["pcr0"]
        .as_str()
        .unwrap()
        .to_owned();
    let unsealed_key = unsealed.info["buyers"][0]["key_arn"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(unsealed_pcr0, sealed_pcr0);
    assert_ne!(
        unsealed_key, sealed_key,
        "a separate key for the unsealed image"
    );
    let toml = std::fs::read_to_string(dir.path().join("auction.toml")).unwrap();
    assert!(toml.contains("sealed = false"), "{toml}");
    assert!(toml.contains("allow_no_context = true"), "{toml}");
    assert!(
        toml.contains(&unsealed_key) && !toml.contains(&sealed_key),
        "{toml}"
    );
    let (sp, up) = (policy_of(&sealed_key), policy_of(&unsealed_key));
    assert!(
        sp.contains(&sealed_pcr0) && !sp.contains(&unsealed_pcr0),
        "{sp}"
    );
    assert!(
        up.contains(&unsealed_pcr0) && !up.contains(&sealed_pcr0),
        "{up}"
    );
    unsealed.signal(libc::SIGINT);
    assert!(unsealed.wait().success());

    // Back to the sealed image: the sealed key again, still trusting only the sealed image.
    let mut again = start(dir.path(), &[]);
    assert_eq!(again.info["buyers"][0]["key_arn"], sealed_key.as_str());
    assert_eq!(again.info["enclave"]["pcr0"], sealed_pcr0.as_str());
    let toml = std::fs::read_to_string(dir.path().join("auction.toml")).unwrap();
    assert!(toml.contains("allow_no_context = false"), "{toml}");
    again.signal(libc::SIGINT);
    assert!(again.wait().success());
}
