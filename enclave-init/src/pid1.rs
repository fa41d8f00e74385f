//! Init's duties, for when enclave-init is the image's `/init` (PID 1) rather than a command
//! started by AWS's init: mounts, the NSM driver, the boot heartbeat, reaping, and ending
//! with a reboot instead of returning (PID 1 returning panics the kernel).

use crate::log;
use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

pub const HEARTBEAT_CID: u32 = 3;
pub const HEARTBEAT_PORT: u32 = 9000;
pub const HEARTBEAT_BYTE: u8 = 0xB7;

pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Mounts devtmpfs on /dev and proc on /proc. Already-mounted is fine.
pub fn mount_filesystems() -> Result<(), String> {
    for (source, target, fstype, flags, data) in [
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=0755"),
        ),
        (
            "proc",
            "/proc",
            "proc",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        ),
    ] {
        if !Path::new(target).exists() {
            std::fs::create_dir_all(target).map_err(|e| format!("mkdir {target}: {e}"))?;
        }
        match mount(Some(source), target, Some(fstype), flags, data) {
            Ok(()) => log!("mounted {fstype} on {target}"),
            Err(Errno::EBUSY) => log!("{target} already mounted"),
            Err(e) => return Err(format!("mounting {fstype} on {target}: {e}")),
        }
    }
    Ok(())
}

/// Loads the NSM driver from `path` when the file exists.
pub fn load_nsm_driver(path: &Path) -> Result<(), String> {
    if !path.exists() {
        log!(
            "{} not present; assuming the NSM driver is built in",
            path.display()
        );
        return Ok(());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) => {
            log!("loaded {}", path.display());
            Ok(())
        }
        Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(format!("finit_module {}: {e}", path.display())),
    }
}

/// Tells the Nitro hypervisor the enclave booted: 0xB7 to CID 3 port 9000, echoed back.
pub fn heartbeat() -> Result<(), String> {
    let mut s = vsock::VsockStream::connect_with_cid_port(HEARTBEAT_CID, HEARTBEAT_PORT)
        .map_err(|e| {
            format!("heartbeat: cannot connect to vsock {HEARTBEAT_CID}:{HEARTBEAT_PORT}: {e} (no vsock device, or not in an enclave)")
        })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| format!("heartbeat: {e}"))?;
    s.write_all(&[HEARTBEAT_BYTE])
        .map_err(|e| format!("heartbeat: send: {e}"))?;
    let mut echo = [0u8; 1];
    s.read_exact(&mut echo)
        .map_err(|e| format!("heartbeat: no echo: {e}"))?;
    if echo[0] != HEARTBEAT_BYTE {
        return Err(format!(
            "heartbeat: echo was {:#04x}, expected 0xb7",
            echo[0]
        ));
    }
    log!("heartbeat acknowledged");
    Ok(())
}

/// Blocks the signals the signal thread handles. Call before starting any other thread, so
/// every thread inherits the mask and the signals queue for `sigwait`.
pub fn block_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGCHLD);
    let _ = set.thread_block();
    set
}

/// Handles signals on a thread of its own: reaps every child on SIGCHLD (as PID 1, orphans
/// anywhere in the enclave become ours), and ends the process in order on SIGTERM/SIGINT.
pub fn spawn_signal_thread(set: SigSet, pid1: bool) {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                match set.wait() {
                    Ok(Signal::SIGCHLD) => reap(),
                    Ok(sig) => finish(&format!("{sig}: shutting down"), 0, pid1),
                    Err(e) => log!("sigwait: {e}"),
                }
            }
        })
        .expect("starting the signal thread");
}

fn reap() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(WaitStatus::Exited(pid, code)) => log!("reaped pid {pid} (exit {code})"),
            Ok(WaitStatus::Signaled(pid, sig, _)) => log!("reaped pid {pid} ({sig})"),
            Ok(_) => {}
        }
    }
}

/// Ends the process: as PID 1 by logging, syncing and rebooting (the enclave stops); otherwise
/// by exiting with `code`.
pub fn finish(reason: &str, code: i32, pid1: bool) -> ! {
    log!("{reason}");
    if pid1 {
        nix::unistd::sync();
        let e = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        log!("reboot failed: {e:?}");
        // A PID 1 that returns panics the kernel; wait to be killed instead.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    std::process::exit(code)
}

/// Splits PID 1's argv into the arguments meant for us and the kernel's leftovers. The kernel
/// hands init every word of its command line that it does not recognise and that has no `=`
/// (nitro-cli's cmdline has `nomodules`), followed by whatever comes after ` -- `. Ours all
/// start with `-`, so the bare words before the first one are the kernel's: they are returned
/// second, to be logged and ignored, instead of making the argument parser refuse to boot.
pub fn split_kernel_words(mut argv: Vec<OsString>) -> (Vec<OsString>, Vec<OsString>) {
    let first_flag = argv
        .iter()
        .skip(1)
        .position(|a| a.as_encoded_bytes().starts_with(b"-"))
        .map_or(argv.len(), |i| i + 1);
    let leftovers = argv.drain(1.min(argv.len())..first_flag).collect();
    (argv, leftovers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn kernel_words_before_our_flags_are_set_aside() {
        assert_eq!(
            split_kernel_words(os(&["/init", "nomodules"])),
            (os(&["/init"]), os(&["nomodules"]))
        );
        assert_eq!(
            split_kernel_words(os(&["/init", "nomodules", "quiet2", "--no-heartbeat"])),
            (
                os(&["/init", "--no-heartbeat"]),
                os(&["nomodules", "quiet2"])
            )
        );
        assert_eq!(
            split_kernel_words(os(&["/init", "--listen", "vsock:any:5005", "x"])),
            (os(&["/init", "--listen", "vsock:any:5005", "x"]), os(&[]))
        );
        assert_eq!(
            split_kernel_words(os(&["/init"])),
            (os(&["/init"]), os(&[]))
        );
        assert_eq!(split_kernel_words(os(&[])), (os(&[]), os(&[])));
    }
}
