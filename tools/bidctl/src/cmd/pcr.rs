//! `bidctl pcr --kernel F --cmdline F --ramdisk F...`: the PCR0, PCR1 and PCR2 that an enclave
//! image made of these parts will have, without building it (and without nitro-cli).

use anyhow::{Context, Result};
use bidding_client::pcr;
use clap::Args as ClapArgs;
use std::fs::File;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(ClapArgs)]
pub struct Args {
    /// The kernel image (nitro-cli's blobs/bzImage).
    #[arg(long)]
    kernel: PathBuf,
    /// A file holding the kernel command line (nitro-cli's blobs/cmdline). Whitespace around
    /// it is trimmed, as nitro-cli does.
    #[arg(long)]
    cmdline: PathBuf,
    /// The ramdisks in image order; the first is the one PCR1 covers, the rest make PCR2.
    #[arg(long = "ramdisk", required = true, num_args = 1..)]
    ramdisks: Vec<PathBuf>,
    /// Print JSON like `nitro-cli build-enclave`'s "Measurements" instead of one PCR a line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let open = |p: &PathBuf| {
        File::open(p)
            .map(BufReader::new)
            .with_context(|| format!("opening {}", p.display()))
    };
    let cmdline = std::fs::read(&args.cmdline)
        .with_context(|| format!("reading {}", args.cmdline.display()))?;
    let mut m = pcr::Measurer::new(open(&args.kernel)?, pcr::trim_cmdline(&cmdline))
        .with_context(|| format!("reading {}", args.kernel.display()))?;
    for r in &args.ramdisks {
        m.ramdisk(open(r)?)
            .with_context(|| format!("reading {}", r.display()))?;
    }
    let m = m.finish();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "Measurements": m.to_json() }))?
        );
    } else {
        print!("{}", m.to_text());
    }
    Ok(ExitCode::SUCCESS)
}
