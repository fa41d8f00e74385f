//! `bidctl bench`: the whole local pipeline under load, measured per process, against the
//! floor every bid must pay — one RSA-2048 OAEP private decryption inside the enclave.
//!
//! Each process is its own: the KMS emulator (`bidctl kms-emulator`), the dev enclave
//! (`bidctl __enclave`) and the parent (`bidctl __parent`), so CPU time and peak memory are
//! read per process from the kernel (`/proc/<pid>/stat` and `status`, and `wait4`'s rusage for
//! the parent, which exits). The S3 server runs in this process, outside the figures.

use crate::stack::{Stack, StackOptions};
use anyhow::{Context, Result, anyhow, bail};
use bidding_core::bidfile::PlaintextRow;
use bidding_core::manifest::FileFormat;
use bidding_core::names::{AuctionId, BuyerName, LotId};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub lots: u64,
    pub buyers: usize,
    pub kms_latency_ms: u64,
    pub window: usize,
    pub connections: usize,
    /// How the buyers' files are encrypted.
    pub format: FileFormat,
    /// Extra arguments for the enclave (limits).
    pub enclave_args: Vec<String>,
}

/// One run's figures, under the keys the JSON line uses.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub format: String,
    pub lots: u64,
    pub bids: u64,
    pub kms_latency_ms: u64,
    pub window: usize,
    pub connections: usize,
    pub seconds: f64,
    pub lots_per_s: f64,
    pub bids_per_s: f64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub enclave_cpu_ms_per_bid: f64,
    pub parent_cpu_ms_per_bid: f64,
    pub kms_cpu_ms_per_bid: f64,
    pub enclave_peak_rss_kib: u64,
    pub parent_peak_rss_kib: u64,
    pub kms_peak_rss_kib: u64,
    pub rsa_decrypt_ms: f64,
    /// KMS Decrypt calls the emulator answered during the auction (seals included), counted
    /// from its request log; logged for envelope runs only (a per-bid run makes one per bid).
    pub kms_decrypts: Option<u64>,
}

/// The floor: mean time of one RSA-2048 OAEP (SHA-256) private decryption with the enclave's
/// crypto library (aws-lc-rs), on this thread.
pub fn rsa_floor_ms() -> Result<f64> {
    use aws_lc_rs::rsa::{
        KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
        PrivateDecryptingKey,
    };
    let private =
        PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|_| anyhow!("RSA keygen"))?;
    let public = OaepPublicEncryptingKey::new(private.public_key())
        .map_err(|_| anyhow!("RSA public key"))?;
    let private = OaepPrivateDecryptingKey::new(private).map_err(|_| anyhow!("RSA private key"))?;
    let mut ciphertext = vec![0u8; public.ciphertext_size()];
    let ciphertext = public
        .encrypt(&OAEP_SHA256_MGF1SHA256, &[7u8; 32], &mut ciphertext, None)
        .map_err(|_| anyhow!("RSA encrypt"))?
        .to_vec();
    let mut out = vec![0u8; private.min_output_size()];
    // Warm up, then measure long enough for a stable mean.
    for _ in 0..50 {
        private
            .decrypt(&OAEP_SHA256_MGF1SHA256, &ciphertext, &mut out, None)
            .map_err(|_| anyhow!("RSA decrypt"))?;
    }
    let n = 1000;
    let started = Instant::now();
    for _ in 0..n {
        private
            .decrypt(&OAEP_SHA256_MGF1SHA256, &ciphertext, &mut out, None)
            .map_err(|_| anyhow!("RSA decrypt"))?;
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0 / f64::from(n))
}

/// The envelope floor, per bid: what every byte of an envelope bid file must pass through in
/// the enclave whatever the code around it, for `lots` rows as this benchmark writes them
/// (padded as `bidctl encrypt` pads): AES-256-GCM opening every frame, SHA-256 over the file
/// (its digest in the manifest) and SHA-384 over the message (its signature's hash). aws-lc-rs,
/// on this thread; the best of five passes of each, divided by the rows.
pub fn envelope_floor_us_per_bid(lots: u64) -> Result<EnvelopeFloor> {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    use aws_lc_rs::digest::{SHA256, SHA384, digest};
    let plaintext = bidding_client::encrypt::envelope_plaintext(&plaintext_rows(lots, 0), None);
    let frame = bidding_client::encrypt::ENVELOPE_FRAME_LENGTH as usize;
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &[0x42; 32]).map_err(|_| anyhow!("AES key"))?,
    );
    let nonce = |i: usize| {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&(i as u64).to_be_bytes());
        Nonce::assume_unique_for_key(n)
    };
    // The frames as sealed (untimed): each its plaintext and tag, as the message carries them.
    let mut sealed = Vec::with_capacity(plaintext.len() + plaintext.len() / frame * 16 + 16);
    for (i, chunk) in plaintext.chunks(frame).enumerate() {
        let start = sealed.len();
        sealed.extend_from_slice(chunk);
        let tag = key
            .seal_in_place_separate_tag(nonce(i), Aad::empty(), &mut sealed[start..])
            .map_err(|_| anyhow!("AES-GCM seal"))?;
        sealed.extend_from_slice(tag.as_ref());
    }
    let best = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let started = Instant::now();
            f()?;
            best = best.min(started.elapsed().as_secs_f64());
        }
        Ok(best)
    };
    let mut work = sealed.clone();
    let aes = best(&mut || {
        work.copy_from_slice(&sealed);
        for (i, chunk) in work.chunks_mut(frame + 16).enumerate() {
            key.open_in_place(nonce(i), Aad::empty(), chunk)
                .map_err(|_| anyhow!("AES-GCM open"))?;
        }
        Ok(())
    })?;
    // The copy back is not the floor's: measured alone and taken off.
    let copy = best(&mut || {
        work.copy_from_slice(&sealed);
        std::hint::black_box(&work);
        Ok(())
    })?;
    let sha256 = best(&mut || {
        std::hint::black_box(digest(&SHA256, &sealed));
        Ok(())
    })?;
    let sha384 = best(&mut || {
        std::hint::black_box(digest(&SHA384, &sealed));
        Ok(())
    })?;
    let per_bid = |s: f64| s * 1e6 / lots.max(1) as f64;
    Ok(EnvelopeFloor {
        file_bytes: sealed.len() as u64,
        aes_gcm_us: per_bid((aes - copy).max(0.0)),
        sha256_us: per_bid(sha256),
        sha384_us: per_bid(sha384),
        us_per_bid: per_bid((aes - copy).max(0.0) + sha256 + sha384),
    })
}

/// [`envelope_floor_us_per_bid`]'s figures, per bid.
#[derive(Debug, Clone, Serialize)]
pub struct EnvelopeFloor {
    pub file_bytes: u64,
    pub aes_gcm_us: f64,
    pub sha256_us: f64,
    pub sha384_us: f64,
    pub us_per_bid: f64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// CPU seconds (user + system, all threads) of a running process.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad /proc stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    Ok(ticks / clock_ticks())
}

/// Peak resident set size in KiB (VmHWM) of a running process.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM for pid {pid}"))
}

/// Bids: every buyer bids on every lot, amounts spread so that winners vary.
fn plaintext_rows(lots: u64, buyer: usize) -> Vec<PlaintextRow> {
    (1..=lots)
        .map(|lot| {
            let v = (lot
                .wrapping_mul(2_654_435_761)
                .wrapping_add(buyer as u64 * 40_503))
                % 1_000_000
                + 1000;
            PlaintextRow {
                line: lot + 1,
                lot: LotId::new(lot.to_string()).expect("numeric lot id"),
                amount: bidding_core::amount::Amount::parse(
                    format!("{v}.{:02}", lot % 100).as_bytes(),
                )
                .expect("valid amount"),
            }
        })
        .collect()
}

/// Runs one auction of `cfg` in `dir` with the executable `exe` (a release `bidctl`).
pub fn run_once(
    cfg: &BenchConfig,
    dir: &Path,
    exe: &Path,
    rsa_decrypt_ms: f64,
    say: &mut dyn FnMut(&str),
) -> Result<Figures> {
    let names: Vec<BuyerName> = (1..=cfg.buyers)
        .map(|i| BuyerName::new(format!("Buyer{i}")).expect("valid"))
        .collect();
    let mut opts = StackOptions {
        kms_process: Some(exe.to_owned()),
        // Envelope runs make a handful of KMS calls: log them to count them.
        kms_log: cfg.format == FileFormat::Envelope,
        ..StackOptions::default()
    };
    if cfg.kms_latency_ms > 0 {
        opts.kms_faults = vec![
            format!("Decrypt:latency={}ms", cfg.kms_latency_ms)
                .parse()
                .map_err(|e: String| anyhow!(e))?,
        ];
    }
    let stack = Stack::start(dir, &names, exe, opts)?;
    let auction = AuctionId::new("bench").expect("valid");
    say(&format!(
        "  sealing {} bids with the buyers' keys ({} files)…",
        cfg.lots * cfg.buyers as u64,
        cfg.format
    ));
    for (i, name) in names.iter().enumerate() {
        let buyer = stack.buyer(name.as_str())?;
        let rows = plaintext_rows(cfg.lots, i);
        match cfg.format {
            FileFormat::PerBid => {
                stack.seal_and_upload(buyer, &auction, &rows, true)?;
            }
            FileFormat::Envelope => {
                stack.envelope_and_upload(buyer, &auction, &rows)?;
            }
        }
    }
    let connections = cfg.connections.to_string();
    let mut enclave_args = vec!["--kms-connections", connections.as_str()];
    enclave_args.extend(cfg.enclave_args.iter().map(String::as_str));
    let enclave = stack.start_enclave(exe, "bench-enclave", &enclave_args)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !enclave.log_text().contains("recipient key ready") {
        if Instant::now() > deadline {
            bail!(
                "the enclave's key was not ready in 30 s:\n{}",
                enclave.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let enclave_pid = enclave.child.id();
    let kms_pid = stack
        .kms
        .pid()
        .ok_or_else(|| anyhow!("the emulator must run as a process"))?;
    let (enclave_cpu0, kms_cpu0) = (cpu_seconds(enclave_pid)?, cpu_seconds(kms_pid)?);

    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        stack.parent_config(&auction, &enclave.endpoint, "none", false),
    )?;
    say("  the seal round: manifest, then every buyer's seal…");
    stack.seal_round(exe, &config)?;
    let decrypts_before = count_decrypts(stack.kms.log());
    say(&format!(
        "  running the auction: {} lots × {} buyers, KMS latency {} ms, window {}, {} KMS connections…",
        cfg.lots, cfg.buyers, cfg.kms_latency_ms, cfg.window, cfg.connections
    ));
    let mut child = stack
        .parent_command(
            exe,
            &config,
            &[
                "--window",
                &cfg.window.to_string(),
                "--log-format",
                "json",
                "--enclave-timeout-secs",
                "600",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the parent")?;
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (status, usage) = wait4(child.id())?;
    let log = reader
        .join()
        .map_err(|_| anyhow!("stderr reader panicked"))?;
    if status != 0 {
        bail!(
            "the parent failed (status {status}):\n{log}\nenclave log:\n{}",
            enclave.log_text()
        );
    }
    let kms_decrypts = match cfg.format {
        FileFormat::Envelope => {
            count_decrypts(stack.kms.log()).map(|n| n - decrypts_before.unwrap_or(0))
        }
        FileFormat::PerBid => None,
    };
    let enclave_cpu = cpu_seconds(enclave_pid)? - enclave_cpu0;
    let kms_cpu = cpu_seconds(kms_pid)? - kms_cpu0;
    let enclave_rss = peak_rss_kib(enclave_pid)?;
    let kms_rss = peak_rss_kib(kms_pid)?;
    let done: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "done")
        .ok_or_else(|| anyhow!("the parent's log has no summary:\n{log}"))?;
    let seconds = done["session_secs"].as_f64().unwrap_or(0.0).max(1e-9);
    // The parent counts the rows of per-bid files; an envelope file's rows are known only to
    // the enclave (and to this benchmark, which made them: every buyer bids on every lot).
    let bids = match cfg.format {
        FileFormat::PerBid => done["bids"].as_u64().unwrap_or(0),
        FileFormat::Envelope => cfg.lots * cfg.buyers as u64,
    };
    let lots = done["lots"].as_u64().unwrap_or(0);
    let per_bid = |cpu: f64| cpu * 1000.0 / bids.max(1) as f64;
    Ok(Figures {
        format: cfg.format.to_string(),
        lots,
        bids,
        kms_latency_ms: cfg.kms_latency_ms,
        window: cfg.window,
        connections: cfg.connections,
        seconds,
        lots_per_s: lots as f64 / seconds,
        bids_per_s: bids as f64 / seconds,
        p50_ms: done["p50_ms"].as_u64().unwrap_or(0),
        p99_ms: done["p99_ms"].as_u64().unwrap_or(0),
        enclave_cpu_ms_per_bid: per_bid(enclave_cpu),
        parent_cpu_ms_per_bid: per_bid(usage.cpu_seconds),
        kms_cpu_ms_per_bid: per_bid(kms_cpu),
        enclave_peak_rss_kib: enclave_rss,
        parent_peak_rss_kib: usage.max_rss_kib,
        kms_peak_rss_kib: kms_rss,
        rsa_decrypt_ms,
        kms_decrypts,
    })
}

/// Decrypt calls answered so far, from the emulator's request log.
fn count_decrypts(log: Option<&Path>) -> Option<u64> {
    let text = std::fs::read_to_string(log?).ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("kms-emulator: Decrypt by "))
            .count() as u64,
    )
}

struct Usage {
    cpu_seconds: f64,
    max_rss_kib: u64,
}

/// Waits for a child and returns its exit status and resource usage.
fn wait4(pid: u32) -> Result<(i32, Usage)> {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child; status and ru point to live locals.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut ru) };
        if r == pid as libc::pid_t {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(anyhow!("wait4: {e}"));
        }
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((
        code,
        Usage {
            cpu_seconds: tv(ru.ru_utime) + tv(ru.ru_stime),
            max_rss_kib: ru.ru_maxrss as u64,
        },
    ))
}

pub fn print_table(rows: &[(&str, &Figures)], out: &mut dyn std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<22} {:>8} {:>6} {:>5} {:>9} {:>9} {:>7} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "run",
        "lots",
        "L ms",
        "conn",
        "lots/s",
        "bids/s",
        "p50 ms",
        "p99 ms",
        "encl ms/b",
        "parent ms/b",
        "kms ms/b",
        "encl RSS",
        "parent RSS"
    )?;
    for (name, f) in rows {
        writeln!(
            out,
            "{:<22} {:>8} {:>6} {:>5} {:>9.0} {:>9.0} {:>7} {:>7} {:>10.3} {:>10.3} {:>10.3} {:>7} KiB {:>7} KiB",
            name,
            f.lots,
            f.kms_latency_ms,
            f.connections,
            f.lots_per_s,
            f.bids_per_s,
            f.p50_ms,
            f.p99_ms,
            f.enclave_cpu_ms_per_bid,
            f.parent_cpu_ms_per_bid,
            f.kms_cpu_ms_per_bid,
            f.enclave_peak_rss_kib,
            f.parent_peak_rss_kib
        )?;
    }
    Ok(())
}

/// A scratch directory per run, removed afterwards.
pub fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("bidctl-bench-{}-{tag}", std::process::id()))
}
