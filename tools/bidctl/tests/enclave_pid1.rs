//! The enclave as PID 1, inside fresh PID and mount namespaces (`unshare --pid --mount --fork`,
//! never on the machine itself): it mounts /dev and /proc, reaps an orphan that a child left
//! behind, serves a parent, and on SIGTERM ends by rebooting, which in a PID namespace ends the
//! namespace (unshare then reports its child killed by SIGHUP). Without an NSM it logs a fatal
//! error and reboots the same way rather than hanging or returning.
//!
//! Needs root (or user namespaces); where `unshare` cannot run, each test says it skips.

#[path = "../../test-support/harness/mod.rs"]
mod harness;

use harness::*;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `Err(why)` when this machine cannot make PID and mount namespaces.
fn unshare_available() -> Result<(), String> {
    match Command::new("unshare")
        .args(["--pid", "--mount", "--fork", "true"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`unshare --pid --mount --fork true` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run unshare: {e}")),
    }
}

macro_rules! require_unshare {
    ($test:literal) => {
        if let Err(why) = unshare_available() {
            // tools/test.sh (and so CI) requires every peer, namespaces included.
            assert!(
                std::env::var_os("BIDDING_REQUIRE_PEERS").is_none(),
                "{}: BIDDING_REQUIRE_PEERS is set but {why}",
                $test
            );
            println!("{}: skipped: {why}", $test);
            return;
        }
    };
}

/// `unshare --pid --mount --fork --kill-child bidctl __enclave ARGS`: the enclave is PID 1 of
/// the new namespace, and dies with unshare. Killed (by PID) on drop.
struct Namespaced {
    unshare: Child,
    log: PathBuf,
}

impl Namespaced {
    fn start(log: &Path, args: &[&str]) -> Namespaced {
        let unshare = Command::new("unshare")
            .args(["--pid", "--mount", "--fork", "--kill-child"])
            .arg(EXE)
            .arg("__enclave")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("starting unshare");
        Namespaced {
            unshare,
            log: log.to_owned(),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log_text();
            if cond(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "waited 20 s for {what}; the log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The enclave's PID on this machine: unshare's only child.
    fn enclave_pid(&self) -> u32 {
        let path = format!("/proc/{0}/task/{0}/children", self.unshare.id());
        let mut pid = None;
        wait_until(Duration::from_secs(10), "unshare's child", || {
            pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()));
            pid.is_some()
        });
        pid.unwrap()
    }

    /// Waits (by polling) for unshare to end.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.unshare.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the namespace did not end within {within:?}; the log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Namespaced {
    fn drop(&mut self) {
        // --kill-child takes the enclave, and with it the whole namespace, along.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// PIDs of the running children of every thread of `pid` (zombies included until reaped).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path().join("children");
        if let Ok(s) = std::fs::read_to_string(path) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    out
}

/// The number after `prefix` on the first log line that has it.
fn number_after(log: &str, prefix: &str) -> Option<u32> {
    let rest = &log[log.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn pid1_mounts_reaps_serves_and_stops_on_sigterm() {
    require_unshare!("pid1_mounts_reaps_serves_and_stops_on_sigterm");
    let tmp = tempfile::tempdir().unwrap();
    let nsm_dir = tmp.path().join("nsm");
    let root_der = enclave_init::soft_nsm::dev_root_der(&nsm_dir).unwrap();
    let pcr0 = bidding_standins::stack::sha384_file(&exe()).unwrap();
    let socket = tmp.path().join("enclave.sock");
    let listen = format!("unix:{}", socket.display());
    let proxy = format!("tcp:127.0.0.1:{}", closed_port());
    let mut ns = Namespaced::start(
        &tmp.path().join("enclave.log"),
        &[
            "--no-heartbeat",
            "--soft-nsm",
            nsm_dir.to_str().unwrap(),
            "--listen",
            &listen,
            "--kms-proxy",
            &proxy,
            // A child that leaves an orphan behind: the sleep is reparented to PID 1 and
            // becomes a zombie when it ends, unless PID 1 reaps it.
            "--spawn",
            "sh",
            "-c",
            "sleep 0.3 & echo \"orphan $!\" >&2; exit 0",
        ],
    );
    let enclave = ns.enclave_pid();
    let log = ns.wait_log("the start and the orphan", |l| {
        l.contains("listening on") && l.contains("orphan ")
    });
    assert!(log.contains("starting (pid 1,"), "{log}");
    // /dev may already be a devtmpfs where the namespace started (containers); either way it
    // is one now.
    assert!(
        log.contains("mounted devtmpfs on /dev") || log.contains("/dev already mounted"),
        "{log}"
    );
    assert!(log.contains("mounted proc on /proc"), "{log}");
    assert!(log.contains("heartbeat skipped (--no-heartbeat)"), "{log}");
    let mountinfo = std::fs::read_to_string(format!("/proc/{enclave}/mountinfo")).unwrap();
    let mounted = |point: &str, fstype: &str| {
        mountinfo.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-");
            f.get(4) == Some(&point) && sep.and_then(|s| f.get(s + 1)) == Some(&fstype)
        })
    };
    assert!(mounted("/proc", "proc"), "{mountinfo}");
    assert!(mounted("/dev", "devtmpfs"), "{mountinfo}");
    // The enclave's /proc is its namespace's: PID 1 there is the enclave itself.
    let ns_init = std::fs::read_to_string(format!("/proc/{enclave}/root/proc/1/comm")).unwrap();
    assert_eq!(ns_init.trim(), "bidctl");

    let sh = number_after(&log, "spawned pid ").expect("spawned pid N");
    let orphan = number_after(&log, "orphan ").expect("the orphan's pid");
    let log = ns.wait_log("both children reaped", |l| {
        l.contains(&format!("reaped pid {sh} (exit 0)"))
            && l.contains(&format!("reaped pid {orphan} (exit 0)"))
    });
    assert_ne!(sh, orphan, "{log}");
    assert_eq!(children(enclave), Vec::<u32>::new(), "no zombie left");

    // PID 1 serves a parent like any enclave.
    let mut parent = Parent::new(Client::connect_path(&socket), root_der, pcr0);
    parent.hello();

    // SIGTERM: an orderly end, with a session open.
    // SAFETY: a signal to the enclave process this test started (found as unshare's child).
    assert_eq!(
        unsafe { libc::kill(enclave as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = ns.wait_exit(Duration::from_secs(10));
    let log = ns.log_text();
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(!log.contains("reboot failed"), "{log}");
    // reboot(RB_AUTOBOOT) by a namespace's init ends the namespace as if init died of SIGHUP,
    // and unshare passes that on: an exit would show as a code instead.
    assert_eq!(status.signal(), Some(libc::SIGHUP), "{status}; log:\n{log}");
    parent.client.expect_eof();
}

#[test]
fn pid1_without_an_nsm_reboots_instead_of_hanging() {
    require_unshare!("pid1_without_an_nsm_reboots_instead_of_hanging");
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("enclave.sock");
    let listen = format!("unix:{}", socket.display());
    let proxy = format!("tcp:127.0.0.1:{}", closed_port());
    let mut ns = Namespaced::start(
        &tmp.path().join("enclave.log"),
        &["--no-heartbeat", "--listen", &listen, "--kms-proxy", &proxy],
    );
    let status = ns.wait_exit(Duration::from_secs(10));
    let log = ns.log_text();
    assert!(log.contains("mounted proc on /proc"), "{log}");
    assert!(log.contains("fatal: cannot open /dev/nsm"), "{log}");
    assert!(!log.contains("listening on"), "{log}");
    assert!(!log.contains("reboot failed"), "{log}");
    assert_eq!(status.signal(), Some(libc::SIGHUP), "{status}; log:\n{log}");
    assert!(!socket.exists());
}
