//! An enclave image (EIF) booted under QEMU's `nitro-enclave` machine, with vhost-device-vsock
//! as its vsock backend in uds-path mode, so that the host side is Unix sockets only (nothing
//! here opens AF_VSOCK):
//!
//! - the guest's connections to the parent, CID 3 (or the host, CID 2), port P arrive on the
//!   Unix socket `<dir>/vsock_P` that [`NitroVm::listen`] binds: the boot heartbeat on 9000,
//!   and a later test's relay from 8000 (the KMS proxy) to a TCP port, the same way;
//! - [`NitroVm::connect`] reaches a port the guest listens on (5005) through the backend's
//!   socket `<dir>/vsock` with the `CONNECT P\n` → `OK P\n` handshake.
//!
//! The serial console is read line by line into a log and an event channel. QEMU and the
//! backend are ended by their PIDs when the [`NitroVm`] is dropped (the guest reboots on a
//! fatal error even with `-no-reboot`, so the VM never stops by itself).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The guest's CID, which vhost-device-vsock hands the machine (any number above 3 would do).
pub const GUEST_CID: u32 = 4;

/// The parent's port for the enclave's boot heartbeat, and its byte.
pub const HEARTBEAT_PORT: u32 = 9000;
pub const HEARTBEAT_BYTE: u8 = 0xB7;
/// The parent's port where the vsock-proxy to KMS listens (enclave-init's `vsock:3:8000`).
pub const KMS_PROXY_PORT: u32 = 8000;
/// The port enclave-init listens on.
pub const ENCLAVE_PORT: u32 = 5005;
/// nitro-cli's x86-64 cmdline: what an enclave's kernel gets (QEMU's machine appends its
/// virtio-mmio devices at boot; the measured cmdline is the EIF's). boot-test.sh writes the same.
pub const NITRO_CMDLINE: &str = "reboot=k panic=30 pci=off nomodules console=ttyS0 i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd random.trust_cpu=on";
/// Console lines after which a boot cannot succeed.
pub const FATAL: &[&str] = &[
    "Kernel panic",
    "enclave-init: fatal",
    "Attempted to kill init",
    "reboot: Restarting",
];

/// Binds the parent's heartbeat port before the guest boots and answers the one heartbeat as
/// the Nitro parent does (echo the byte, keep the connection until the guest closes it). The
/// receiver gets when the byte was echoed, or why not.
pub fn answer_heartbeat(
    dir: &Path,
) -> std::io::Result<mpsc::Receiver<(Instant, Result<(), String>)>> {
    let heartbeat = NitroVm::listen(dir, HEARTBEAT_PORT)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = (|| -> Result<(), String> {
            let (mut s, _) = heartbeat.accept().map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)
                .map_err(|e| format!("no heartbeat byte: {e}"))?;
            if b[0] != HEARTBEAT_BYTE {
                return Err(format!("heartbeat byte {:#04x}, expected 0xb7", b[0]));
            }
            s.write_all(&b)
                .map_err(|e| format!("echoing the heartbeat: {e}"))?;
            let _ = tx.send((Instant::now(), Ok(())));
            // Keep the connection until the guest closes it, as the Nitro parent does.
            let _ = s.read(&mut b);
            Ok(())
        })();
        if let Err(e) = r {
            let _ = tx.send((Instant::now(), Err(e)));
        }
    });
    Ok(rx)
}

/// The vsock-proxy's part: every connection the guest makes to the parent's port `port`
/// (arriving on `<dir>/vsock_<port>`) is copied both ways to and from `to`, a TCP address on
/// this host. The relay sees only what the guest sends (TLS, for KMS), as the proxy does. The
/// returned counter holds the connections relayed so far.
pub fn relay(
    dir: &Path,
    port: u32,
    to: SocketAddr,
) -> std::io::Result<std::sync::Arc<std::sync::atomic::AtomicUsize>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = NitroVm::listen(dir, port)?;
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for guest in listener.incoming() {
            let Ok(guest) = guest else { return };
            let Ok(host) = TcpStream::connect(to) else {
                // The guest sees its connection closed, as with a proxy whose upstream is down.
                continue;
            };
            counted.fetch_add(1, Ordering::Relaxed);
            let (Ok(mut guest_r), Ok(mut host_r)) = (guest.try_clone(), host.try_clone()) else {
                continue;
            };
            let (mut guest_w, mut host_w) = (guest, host);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut guest_r, &mut host_w);
                let _ = host_w.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut host_r, &mut guest_w);
                let _ = guest_w.shutdown(Shutdown::Write);
            });
        }
    });
    Ok(count)
}

/// What to boot and with which programs.
#[derive(Debug, Clone)]
pub struct VmConfig {
    pub qemu: PathBuf,
    /// `-L` directory holding qboot.rom (Debian: /usr/share/qemu from qemu-system-data).
    pub qemu_data: PathBuf,
    pub vhost_device_vsock: PathBuf,
    pub eif: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Holds the sockets and the logs; must exist and be short enough for socket paths.
    pub dir: PathBuf,
}

/// One line of the guest's serial console, with when it arrived.
#[derive(Debug, Clone)]
pub struct ConsoleLine {
    pub at: Duration,
    pub text: String,
}

pub struct NitroVm {
    dir: PathBuf,
    qemu: Child,
    backend: Child,
    started: Instant,
    console: mpsc::Receiver<ConsoleLine>,
    seen: Vec<ConsoleLine>,
}

fn kill(child: &mut Child) {
    // Child::kill sends SIGKILL to this child's PID, and wait reaps it.
    let _ = child.kill();
    let _ = child.wait();
}

impl NitroVm {
    /// The Unix socket where the guest's connections to vsock port `port` of the parent arrive.
    pub fn port_path(dir: &Path, port: u32) -> PathBuf {
        dir.join(format!("vsock_{port}"))
    }

    /// Binds `<dir>/vsock_<port>`: the guest's connections to the parent's port `port`. Bind
    /// before [`NitroVm::start`] for ports the guest uses while it boots (the heartbeat).
    pub fn listen(dir: &Path, port: u32) -> std::io::Result<UnixListener> {
        let path = Self::port_path(dir, port);
        let _ = std::fs::remove_file(&path);
        UnixListener::bind(path)
    }

    /// Starts vhost-device-vsock, waits for its socket, then starts QEMU on it.
    pub fn start(cfg: &VmConfig) -> Result<NitroVm, String> {
        let vhost_socket = cfg.dir.join("vhost-user.sock");
        let uds = cfg.dir.join("vsock");
        let backend_log = std::fs::File::create(cfg.dir.join("vhost-device-vsock.log"))
            .map_err(|e| format!("creating the backend's log: {e}"))?;
        let mut backend = Command::new(&cfg.vhost_device_vsock)
            .arg("--guest-cid")
            .arg(GUEST_CID.to_string())
            .arg("--socket")
            .arg(&vhost_socket)
            .arg("--uds-path")
            .arg(&uds)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(backend_log.try_clone().map_err(|e| e.to_string())?)
            .stderr(backend_log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", cfg.vhost_device_vsock.display()))?;
        // For a wrapper to end it by PID should this process die without dropping the VM.
        let _ = std::fs::write(
            cfg.dir.join("vhost-device-vsock.pid"),
            backend.id().to_string(),
        );
        let waited = Instant::now();
        while !vhost_socket.exists() {
            if let Ok(Some(status)) = backend.try_wait() {
                return Err(format!("vhost-device-vsock exited at once ({status})"));
            }
            if waited.elapsed() > Duration::from_secs(10) {
                kill(&mut backend);
                return Err("vhost-device-vsock did not create its socket within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }

        let started = Instant::now();
        let qemu = Command::new(&cfg.qemu)
            .arg("-M")
            .arg("nitro-enclave,vsock=vsock0,id=bidding-boot-test")
            .arg("-kernel")
            .arg(&cfg.eif)
            .args(["-nographic", "-no-reboot", "-m"])
            .arg(cfg.memory_mib.to_string())
            .arg("-L")
            .arg(&cfg.qemu_data)
            .arg("-chardev")
            .arg(format!("socket,id=vsock0,path={}", vhost_socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut qemu = match qemu {
            Ok(q) => q,
            Err(e) => {
                kill(&mut backend);
                return Err(format!("starting {}: {e}", cfg.qemu.display()));
            }
        };
        let _ = std::fs::write(cfg.dir.join("qemu.pid"), qemu.id().to_string());
        let (tx, console) = mpsc::channel();
        let log = std::fs::File::create(cfg.dir.join("console.log"))
            .map_err(|e| format!("creating the console log: {e}"))?;
        for (stream, prefix) in [
            (
                qemu.stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                "",
            ),
            (
                qemu.stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn Read + Send>),
                "qemu: ",
            ),
        ] {
            let (Some(stream), tx) = (stream, tx.clone()) else {
                continue;
            };
            let mut log = log.try_clone().map_err(|e| e.to_string())?;
            std::thread::spawn(move || {
                let mut r = BufReader::new(stream);
                let mut line = Vec::new();
                while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    let text = format!("{prefix}{}", String::from_utf8_lossy(&line).trim_end());
                    let _ = writeln!(log, "{text}");
                    let _ = tx.send(ConsoleLine {
                        at: started.elapsed(),
                        text,
                    });
                    line.clear();
                }
            });
        }
        Ok(NitroVm {
            dir: cfg.dir.clone(),
            qemu,
            backend,
            started,
            console,
            seen: Vec::new(),
        })
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every console line received so far.
    pub fn console(&mut self) -> &[ConsoleLine] {
        self.seen.extend(self.console.try_iter());
        &self.seen
    }

    /// Waits until a console line contains `needle`, and returns it. Fails at `deadline`, when
    /// the console ends (QEMU exited), or at once on a line containing any of `fatal`.
    pub fn wait_for(
        &mut self,
        needle: &str,
        fatal: &[&str],
        deadline: Instant,
    ) -> Result<ConsoleLine, String> {
        let check = |l: &ConsoleLine| -> Result<bool, String> {
            if let Some(f) = fatal.iter().find(|f| l.text.contains(*f)) {
                return Err(format!(
                    "the console says {f:?} while waiting for {needle:?}: {}",
                    l.text
                ));
            }
            Ok(l.text.contains(needle))
        };
        for l in &self.seen {
            if check(l)? {
                return Ok(l.clone());
            }
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.console.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if check(&l)? {
                        return Ok(l);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("no console line with {needle:?} in time"));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.qemu.try_wait().ok().flatten();
                    return Err(format!(
                        "QEMU's console ended ({status:?}) before {needle:?}"
                    ));
                }
            }
        }
    }

    /// A connection to the guest's vsock port `port`, through the backend's `CONNECT` handshake.
    pub fn connect(&self, port: u32, timeout: Duration) -> Result<UnixStream, String> {
        let path = self.dir.join("vsock");
        let mut s = UnixStream::connect(&path)
            .map_err(|e| format!("connecting to {}: {e}", path.display()))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.write_all(format!("CONNECT {port}\n").as_bytes())
            .map_err(|e| format!("CONNECT {port}: {e}"))?;
        // The answer is one line; read it byte by byte so nothing after it is consumed.
        let mut answer = Vec::new();
        let mut b = [0u8; 1];
        while answer.len() < 64 {
            match s.read(&mut b) {
                Ok(0) => break,
                Ok(_) if b[0] == b'\n' => {
                    let text = String::from_utf8_lossy(&answer).into_owned();
                    return if text == format!("OK {port}") {
                        Ok(s)
                    } else {
                        Err(format!("CONNECT {port} answered {text:?}"))
                    };
                }
                Ok(_) => answer.push(b[0]),
                Err(e) => return Err(format!("CONNECT {port}: no answer: {e}")),
            }
        }
        Err(format!(
            "CONNECT {port}: connection closed after {:?} (is the guest listening?)",
            String::from_utf8_lossy(&answer)
        ))
    }

    /// Ends QEMU and the backend (by their PIDs). Also done on drop.
    pub fn stop(&mut self) {
        kill(&mut self.qemu);
        kill(&mut self.backend);
    }

    pub fn qemu_pid(&self) -> u32 {
        self.qemu.id()
    }
}

impl Drop for NitroVm {
    fn drop(&mut self) {
        self.stop();
    }
}
