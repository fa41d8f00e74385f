//! `bidctl initramfs --out FILE [--enclave-init PATH | --unsealed] [--nsm-ko FILE]
//! [--limits FILE] [--test-kms-ca PEM]`: the reproducible initramfs for an enclave image in
//! which enclave-init is PID 1: the sealed release image's by default, the unsealed image's
//! with `--unsealed` (its own PCR0); `--limits` builds the image's limits into it.

use anyhow::{Context, Result, anyhow};
use bidding_client::initramfs;
use clap::Args as ClapArgs;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(ClapArgs)]
pub struct Args {
    /// Where to write the `newc` cpio archive.
    #[arg(long)]
    out: PathBuf,
    /// The static enclave-init binary to install as /init [default: the sealed release image's,
    /// target/x86_64-unknown-linux-musl/release/enclave-init].
    #[arg(long)]
    enclave_init: Option<PathBuf>,
    /// The unsealed image (the proof of concept's flow, its own PCR0): install the binary
    /// `tools/scripts/reproducible-build.sh --unsealed` writes,
    /// .../release/enclave-init-unsealed. A key policy naming that image's PCR0 trusts the
    /// operator with the terms.
    #[arg(long, conflicts_with = "enclave_init")]
    unsealed: bool,
    /// The NSM driver to install as /nsm.ko, which enclave-init loads at boot (nitro-cli's
    /// /usr/share/nitro_enclaves/blobs/nsm.ko). Without it the kernel must have the driver
    /// built in, or the enclave cannot reach /dev/nsm.
    #[arg(long)]
    nsm_ko: Option<PathBuf>,
    /// Test images only: install this PEM as /kms-ca, for a dev enclave-init given
    /// `--kms-ca /kms-ca` at the end of its kernel command line, so it trusts the KMS
    /// emulator's TLS certificate (tools/nitro-vm/qemu/auction-test.sh). A release enclave-init
    /// refuses --kms-ca, so this file gives a release image nothing to trust.
    #[arg(long, value_name = "PEM")]
    test_kms_ca: Option<PathBuf>,
    /// The enclave's limits, installed as /limits (one limit flag a line, e.g.
    /// `--max-lots=500000`; deploy/enclave-limits is the default set). enclave-init as PID 1
    /// applies them, and PCR0 measures them: a new set of limits is a new image and PCR0.
    #[arg(long, value_name = "FILE")]
    limits: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let (path, built_by) = match (&args.enclave_init, args.unsealed) {
        (Some(p), _) => (p.clone(), None),
        (None, false) => (
            PathBuf::from(initramfs::DEFAULT_ENCLAVE_INIT),
            Some("tools/scripts/reproducible-build.sh"),
        ),
        (None, true) => (
            PathBuf::from(initramfs::DEFAULT_UNSEALED_ENCLAVE_INIT),
            Some("tools/scripts/reproducible-build.sh --unsealed"),
        ),
    };
    let init = std::fs::read(&path).with_context(|| match built_by {
        Some(script) => format!(
            "reading {} (build it with {script}, or pass --enclave-init)",
            path.display()
        ),
        None => format!("reading {}", path.display()),
    })?;
    initramfs::check_static_elf(&init)
        .map_err(|e| anyhow!("{} cannot be /init: {e}", path.display()))?;
    let ko = args
        .nsm_ko
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let ca = args
        .test_kms_ca
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .transpose()?;
    let limits = args
        .limits
        .as_ref()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            enclave_init::limits::parse(&text)
                .map_err(|e| anyhow!("--limits {}: {e}", p.display()))?;
            Ok::<_, anyhow::Error>(text.into_bytes())
        })
        .transpose()?;
    let entries =
        initramfs::entries_with_limits(&init, ko.as_deref(), ca.as_deref(), limits.as_deref());
    let archive = initramfs::write_newc(&entries)?;

    // Never leave a half-written archive under the requested name.
    let tmp = args.out.with_extension("partial");
    std::fs::write(&tmp, &archive).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), args.out.display()))?;

    for e in &entries {
        println!("{}", e.describe());
    }
    println!(
        "{}: {} bytes, sha384 {}",
        args.out.display(),
        archive.len(),
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA384,
            &archive
        ))
    );
    Ok(ExitCode::SUCCESS)
}
