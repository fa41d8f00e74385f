//! Tearing down what bidctl started when the user presses Ctrl-C (or it gets SIGTERM): child
//! processes by PID and the scratch directory, then exit 130.

use std::path::PathBuf;
use std::sync::{Mutex, Once};

static STATE: Mutex<(Vec<u32>, Vec<PathBuf>)> = Mutex::new((Vec::new(), Vec::new()));
static HANDLER: Once = Once::new();

/// Removes `dir` on interrupt (and installs the handler on first use).
pub fn on_interrupt(dir: PathBuf) {
    lock().1.push(dir);
    install();
}

pub fn register_child(pid: u32) {
    lock().0.push(pid);
    install();
}

pub fn unregister_child(pid: u32) {
    lock().0.retain(|p| *p != pid);
}

fn lock() -> std::sync::MutexGuard<'static, (Vec<u32>, Vec<PathBuf>)> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

fn install() {
    HANDLER.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            let (pids, dirs) = std::mem::take(&mut *lock());
            for pid in pids {
                // SAFETY: sends SIGTERM to a child we started and have not reaped.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            for d in dirs {
                let _ = std::fs::remove_dir_all(d);
            }
            eprintln!("bidctl: interrupted; stopped what it had started");
            std::process::exit(130);
        });
    });
}
