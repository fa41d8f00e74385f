//! `bidctl bench`: see [`crate::bench`].

use crate::bench::{self, BenchConfig, Figures};
use anyhow::{Result, bail};
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct BenchArgs {
    /// Lots in the auction.
    #[arg(long, default_value_t = 1000)]
    pub lots: u64,
    /// Buyers, each bidding on every lot.
    #[arg(long, default_value_t = 2)]
    pub buyers: usize,
    /// Latency the KMS emulator adds to every Decrypt, in ms.
    #[arg(long, default_value_t = 0)]
    pub kms_latency_ms: u64,
    /// Lots the parent keeps in flight.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// The enclave's parallel KMS connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Print one JSON object with the figures as the last line.
    #[arg(long)]
    pub json: bool,
    /// Instead of one run, measure every target of the benchmark issue in one invocation
    /// (about 10 minutes): CPU per bid against the RSA floor, throughput at 10 ms KMS
    /// latency, memory at 10,000 lots, and linear cost from 1,000 to 100,000 lots.
    #[arg(long)]
    pub targets: bool,
    /// Instead: the enclave's auction state at its limits (the real session state machine,
    /// ciphertexts opened instantly): peak memory for --lots lots, --buyers buyers and
    /// --bids bids of per-bid files.
    #[arg(long)]
    pub memory: bool,
    /// With --memory: bids in all [default: 2 × lots].
    #[arg(long)]
    pub bids: Option<u64>,
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    if cfg!(debug_assertions) {
        bail!(
            "benchmarks need a release build: cargo run --release --locked -p bidding-tools --bin bidctl -- bench ..."
        );
    }
    if a.memory {
        let bids = a.bids.unwrap_or(a.lots * 2);
        eprintln!(
            "enclave state at its limits: {} lots, {} buyers, {bids} bids of ~400-byte KMS ciphertexts…",
            a.lots, a.buyers
        );
        let f = bidding_tools::memory::measure(a.lots, a.buyers, bids, 300)?;
        println!(
            "{} lots, {} bids from {} buyers (largest file {:.1} MiB): peak RSS {:.1} MiB ({:.1} MiB before), {:.0} bytes per lot",
            f.lots,
            f.bids,
            f.buyers,
            f.largest_file_bytes as f64 / 1048576.0,
            f.peak_rss_mib,
            f.baseline_rss_mib,
            f.bytes_per_lot
        );
        if a.json {
            println!("{}", serde_json::to_string(&f)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe()?;
    let mut say = |s: &str| eprintln!("{s}");
    let floor = bench::rsa_floor_ms()?;
    eprintln!("RSA-2048 OAEP private decryption (aws-lc-rs, one core): {floor:.3} ms");
    if !a.targets {
        let cfg = BenchConfig {
            lots: a.lots,
            buyers: a.buyers,
            kms_latency_ms: a.kms_latency_ms,
            window: a.window,
            connections: a.connections,
        };
        let f = measured(&cfg, "run", &exe, floor, &mut say)?;
        bench::print_table(&[("run", &f)], &mut std::io::stdout())?;
        if a.json {
            println!("{}", serde_json::to_string(&f)?);
        }
        return Ok(ExitCode::SUCCESS);
    }

    let cpu = BenchConfig {
        lots: 10_000,
        buyers: 2,
        kms_latency_ms: 0,
        window: 64,
        connections: 8,
    };
    let latency = BenchConfig {
        lots: 4_000,
        buyers: 2,
        kms_latency_ms: 10,
        window: 64,
        connections: 16,
    };
    let small = BenchConfig {
        lots: 1_000,
        buyers: 2,
        kms_latency_ms: 0,
        window: 64,
        connections: 8,
    };
    let large = BenchConfig {
        lots: 100_000,
        buyers: 2,
        kms_latency_ms: 0,
        window: 64,
        connections: 8,
    };
    let fa = measured(&cpu, "cpu-10k", &exe, floor, &mut say)?;
    let fb = measured(&latency, "latency-10ms", &exe, floor, &mut say)?;
    let fc = measured(&small, "linear-1k", &exe, floor, &mut say)?;
    let fd = measured(&large, "linear-100k", &exe, floor, &mut say)?;
    bench::print_table(
        &[
            ("10k lots, L=0", &fa),
            ("4k lots, L=10 ms", &fb),
            ("1k lots, L=0", &fc),
            ("100k lots, L=0", &fd),
        ],
        &mut std::io::stdout(),
    )?;
    let mut all_hold = true;
    let mut check = |name: &str, holds: bool, detail: String| {
        all_hold &= holds;
        println!(
            "{} {name}: {detail}",
            if holds { "HOLDS " } else { "MISSED" }
        );
    };
    let ratio = fa.enclave_cpu_ms_per_bid / floor;
    check(
        "enclave CPU per bid <= 1.5 x RSA floor",
        ratio <= 1.5,
        format!(
            "{:.3} ms / {floor:.3} ms = {ratio:.2} x",
            fa.enclave_cpu_ms_per_bid
        ),
    );
    let bound =
        (latency.connections as f64 / (latency.kms_latency_ms as f64 / 1000.0)).min(fa.bids_per_s);
    check(
        "bids/s at L=10 ms >= 0.8 x min(connections / L, CPU-bound rate)",
        fb.bids_per_s >= 0.8 * bound,
        format!(
            "{:.0} bids/s vs 0.8 x min({:.0}, {:.0}) = {:.0} ({:.2} of the bound)",
            fb.bids_per_s,
            latency.connections as f64 / 0.010,
            fa.bids_per_s,
            0.8 * bound,
            fb.bids_per_s / bound
        ),
    );
    check(
        "10,000 lots x 2 buyers: enclave peak RSS <= 32 MiB, parent <= 64 MiB",
        fa.enclave_peak_rss_kib <= 32 * 1024 && fa.parent_peak_rss_kib <= 64 * 1024,
        format!(
            "enclave {} KiB, parent {} KiB",
            fa.enclave_peak_rss_kib, fa.parent_peak_rss_kib
        ),
    );
    let drift = fd.bids_per_s / fc.bids_per_s - 1.0;
    check(
        "bids/s at 100,000 lots within 10 % of 1,000 lots",
        drift.abs() <= 0.10,
        format!(
            "{:.0} vs {:.0} bids/s ({:+.1} %)",
            fd.bids_per_s,
            fc.bids_per_s,
            drift * 100.0
        ),
    );
    if a.json {
        println!(
            "{}",
            serde_json::json!({"rsa_decrypt_ms": floor, "runs": {"cpu_10k": fa, "latency_10ms": fb, "linear_1k": fc, "linear_100k": fd}, "all_targets_hold": all_hold})
        );
    }
    Ok(if all_hold {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn measured(
    cfg: &BenchConfig,
    tag: &str,
    exe: &std::path::Path,
    floor: f64,
    say: &mut dyn FnMut(&str),
) -> Result<Figures> {
    say(&format!("{tag}:"));
    let dir = bench::scratch(tag);
    crate::cleanup::on_interrupt(dir.clone());
    let result = bench::run_once(cfg, &dir, exe, floor, say);
    let _ = std::fs::remove_dir_all(&dir);
    result
}
