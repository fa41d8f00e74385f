//! Whole sealed auctions through an enclave image booted under QEMU's `nitro-enclave` machine:
//! the enclave as PID 1 of an EIF by AWS's builder, its NSM through the kernel's driver, the
//! parent (`bidctl __parent`) reaching it through vhost-device-vsock's `CONNECT` handshake
//! (`vsock-uds:` endpoint), and its KMS traffic (TLS end to end) relayed from the parent's port
//! 8000 to the KMS emulator, as the vsock-proxy relays it to KMS. tools/nitro-vm/qemu/auction-test.sh
//! gives it its inputs:
//!
//!   nitro-qemu-auction --qemu P --qemu-data DIR --vhost-device-vsock P --kernel bzImage
//!     --dev-enclave-init P --release-enclave-init P --bidctl P --dir DIR
//!     [--timeout SECONDS] [--memory MIB]
//!
//! Four runs, each on a fresh stack (S3 server, KMS emulator, two buyers' keys whose policies
//! name the image's PCR0) and a fresh boot:
//!
//! 1. the test image (a `dev` enclave-init, the emulator's CA as /kms-ca, `--kms-ca /kms-ca`
//!    at the end of its cmdline) with an emulator started with
//!    `--accept-qemu-unsigned-attestation`: the auction completes, one buyer per-bid and one
//!    with an envelope file, and output.csv is the reference;
//! 2. the same image with an emulator without that option: KMS refuses QEMU's unsigned
//!    document, and the auction fails;
//! 3. the release image, which trusts only the public roots: the auction fails at KMS's TLS
//!    certificate (the emulator's CA is unknown to it);
//! 4. the release image given `--kms-ca`: it refuses the option and stops at boot.
//!
//! No bid amount and no credential may appear in anything the parent side sees (stderr,
//! console, output).

use bidding_core::amount::Amount;
use bidding_core::attestation::parse_qemu_unsigned;
use bidding_core::bidfile::PlaintextRow;
use bidding_core::endpoint::Endpoint;
use bidding_core::names::{AuctionId, BuyerName, LotId};
use bidding_nitro_vm::eif::write_eif;
use bidding_nitro_vm::flags::Flags;
use bidding_nitro_vm::nitro_vm::{
    ENCLAVE_PORT, FATAL, KMS_PROXY_PORT, NITRO_CMDLINE, NitroVm, VmConfig, answer_heartbeat, relay,
};
use bidding_client::initramfs;
use bidding_standins::stack::{Stack, StackOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

struct Args {
    qemu: PathBuf,
    qemu_data: PathBuf,
    vhost: PathBuf,
    kernel: PathBuf,
    dev_init: PathBuf,
    release_init: PathBuf,
    bidctl: PathBuf,
    dir: PathBuf,
    timeout: Duration,
    memory: u32,
}

fn args() -> Result<Args, String> {
    let mut f = Flags::from_env()?;
    let abs = |p: String| std::path::absolute(&p).map_err(|e| format!("{p}: {e}"));
    let a = Args {
        qemu: f.take("--qemu")?.into(),
        qemu_data: f.take("--qemu-data")?.into(),
        vhost: f.take("--vhost-device-vsock")?.into(),
        kernel: f.take("--kernel")?.into(),
        dev_init: f.take("--dev-enclave-init")?.into(),
        release_init: f.take("--release-enclave-init")?.into(),
        bidctl: abs(f.take("--bidctl")?)?,
        dir: abs(f.take("--dir")?)?,
        timeout: Duration::from_secs(f.take_or("--timeout", 300)?),
        memory: f.take_or("--memory", 512)?,
    };
    f.finish()?;
    Ok(a)
}

/// What a run must end in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// The auction completes with the reference output.
    Output,
    /// The parent fails, and the enclave's error (in the parent's stderr) contains this.
    Fails(&'static str),
    /// The enclave stops at boot with a console line containing this.
    RefusesAtBoot(&'static str),
}

struct Case {
    name: &'static str,
    dev_image: bool,
    /// The image holds the emulator's CA and its cmdline says `--kms-ca /kms-ca`.
    kms_ca: bool,
    kms_accepts_qemu: bool,
    expect: Expect,
}

const CASES: [Case; 4] = [
    Case {
        name: "test image, KMS emulator told to expect QEMU",
        dev_image: true,
        kms_ca: true,
        kms_accepts_qemu: true,
        expect: Expect::Output,
    },
    Case {
        name: "test image, KMS emulator not told to expect QEMU",
        dev_image: true,
        kms_ca: true,
        kms_accepts_qemu: false,
        expect: Expect::Fails("ValidationException"),
    },
    Case {
        name: "release image (public roots only)",
        dev_image: false,
        kms_ca: false,
        kms_accepts_qemu: true,
        expect: Expect::Fails("UnknownIssuer"),
    },
    Case {
        name: "release image given --kms-ca",
        dev_image: false,
        kms_ca: true,
        kms_accepts_qemu: true,
        expect: Expect::RefusesAtBoot("--kms-ca exists only in dev builds"),
    },
];

/// Buyer1 bids per bid (one KMS ciphertext per row), Buyer2 with one envelope file.
const BIDS: [(&str, [&str; 3]); 2] = [
    ("Buyer1", ["731415.92", "272818.28", "500000.00"]),
    ("Buyer2", ["693147.18", "314159.26", "500000.00"]),
];
const REFERENCE_CSV: &str =
    "Property,Result\n1,Buyer1 Wins\n2,Buyer2 Wins\n3,\"Tie: Buyer1, Buyer2\"\n";

fn rows(amounts: &[&str; 3]) -> Result<Vec<PlaintextRow>, String> {
    amounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Ok(PlaintextRow {
                line: i as u64 + 2,
                lot: LotId::new((i + 1).to_string()).map_err(|e| e.to_string())?,
                amount: Amount::parse(a.as_bytes()).map_err(|e| e.to_string())?,
            })
        })
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn say(s: &str) {
    eprintln!("nitro-qemu-auction: {s}");
}

/// One case, on its own stack and VM in `dir`. Returns a one-line summary.
fn run_case(a: &Args, case: &Case, dir: &Path) -> Result<String, String> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: anyhow::Error| format!("{what}: {err:#}")
    };
    std::fs::create_dir_all(dir).map_err(|err| format!("{}: {err}", dir.display()))?;
    let started = Instant::now();
    let buyers = BIDS
        .iter()
        .map(|(b, _)| BuyerName::new(*b).map_err(|err| err.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    // The keys' policies first name bidctl's hash; trust_pcr0 below names the image's.
    let mut stack = Stack::start(
        &dir.join("stack"),
        &buyers,
        &a.bidctl,
        StackOptions {
            kms_accept_qemu_unsigned: case.kms_accepts_qemu,
            ..StackOptions::default()
        },
    )
    .map_err(e("starting S3 and the KMS emulator"))?;

    // The image: its ramdisk, cmdline and PCRs, by bidctl's code and by AWS's builder.
    let init_path = if case.dev_image {
        &a.dev_init
    } else {
        &a.release_init
    };
    let init = std::fs::read(init_path).map_err(|err| format!("{}: {err}", init_path.display()))?;
    let ca =
        std::fs::read(stack.kms.ca_pem()).map_err(|err| format!("the emulator's CA: {err}"))?;
    let ramdisk = initramfs::write_newc(&initramfs::entries(
        &init,
        None,
        case.kms_ca.then_some(ca.as_slice()),
    ))
    .map_err(|err| format!("initramfs: {err}"))?;
    let ramdisk_path = dir.join("initramfs.cpio");
    std::fs::write(&ramdisk_path, &ramdisk).map_err(|err| err.to_string())?;
    // Not after ` -- `: QEMU's machine appends its virtio-mmio device words to the cmdline,
    // and after ` -- ` the kernel would hand those to init instead of reading them. Bare words
    // reach init's argv anyway (enclave-init sets aside the kernel's own, like `nomodules`).
    let cmdline = if case.kms_ca {
        format!("{NITRO_CMDLINE} --kms-ca /{}", initramfs::TEST_KMS_CA_PATH)
    } else {
        NITRO_CMDLINE.to_owned()
    };
    let kernel =
        std::fs::read(&a.kernel).map_err(|err| format!("{}: {err}", a.kernel.display()))?;
    let ours = bidding_client::pcr::measure(&kernel, cmdline.as_bytes(), &[&ramdisk]);
    let eif = dir.join("image.eif");
    let built = write_eif(&a.kernel, &cmdline, &[ramdisk_path.as_path()], &eif)?;
    if built.get("PCR0").map(String::as_str) != Some(hex::encode(ours.pcr0).as_str()) {
        return Err(format!(
            "AWS's builder says PCR0 {:?}, bidctl pcr {}",
            built.get("PCR0"),
            hex::encode(ours.pcr0)
        ));
    }
    stack
        .trust_pcr0(ours.pcr0)
        .map_err(e("putting the image's PCR0 in the buyers' key policies"))?;

    // The parent instance's side: the heartbeat, the vsock-proxy to KMS, then the boot.
    let heartbeat = answer_heartbeat(dir).map_err(|err| format!("heartbeat socket: {err}"))?;
    let relayed = relay(dir, KMS_PROXY_PORT, stack.kms.addr())
        .map_err(|err| format!("KMS relay socket: {err}"))?;
    let deadline = Instant::now() + a.timeout;
    let mut vm = NitroVm::start(&VmConfig {
        qemu: a.qemu.clone(),
        qemu_data: a.qemu_data.clone(),
        vhost_device_vsock: a.vhost.clone(),
        eif,
        memory_mib: a.memory,
        dir: dir.to_owned(),
    })?;
    say(&format!(
        "  QEMU pid {} booting PCR0 {}",
        vm.qemu_pid(),
        hex::encode(ours.pcr0)
    ));
    if let Expect::RefusesAtBoot(needle) = case.expect {
        let line = vm.wait_for(needle, &[], deadline)?;
        return Ok(format!(
            "refused at boot after {}: {}",
            secs(line.at),
            line.text.trim()
        ));
    }
    let listening = vm.wait_for(
        &format!("listening on vsock:any:{ENCLAVE_PORT}"),
        FATAL,
        deadline,
    )?;
    match heartbeat.recv_timeout(Duration::from_secs(1)) {
        Ok((_, Ok(()))) => {}
        other => return Err(format!("the boot heartbeat: {other:?}")),
    }

    // The buyers: bids under their own keys, then the seal round on the operator's manifest.
    let auction = AuctionId::new("qemu-auction").map_err(|err| err.to_string())?;
    for (name, amounts) in BIDS {
        let buyer = stack.buyer(name).map_err(e("buyer"))?;
        let rows = rows(&amounts)?;
        if name == "Buyer1" {
            stack.seal_and_upload(buyer, &auction, &rows, true)
        } else {
            stack.envelope_and_upload(buyer, &auction, &rows)
        }
        .map_err(e(&format!("{name}'s bids")))?;
    }
    let endpoint: Endpoint = format!("vsock-uds:{}:{ENCLAVE_PORT}", dir.join("vsock").display())
        .parse()
        .map_err(|err| format!("the endpoint: {err}"))?;
    let config = dir.join("auction.toml");
    std::fs::write(
        &config,
        stack.parent_config(&auction, &endpoint, "none", false),
    )
    .map_err(|err| err.to_string())?;
    stack
        .seal_round(&a.bidctl, &config)
        .map_err(e("the seal round"))?;

    let before_parent = vm.elapsed();
    let run = stack
        .run_parent(&a.bidctl, &config, &["--accept-qemu-unsigned-attestation"])
        .map_err(e("running the parent"))?;
    let parent_took = vm.elapsed() - before_parent;
    let console: String = vm
        .console()
        .iter()
        .map(|l| format!("{}\n", l.text))
        .collect();
    let mut seen = vec![
        ("the parent's stderr", run.stderr.clone().into_bytes()),
        ("the serial console", console.into_bytes()),
    ];
    let summary = match case.expect {
        Expect::Output => {
            if run.code != Some(0) {
                return Err(format!(
                    "the parent failed ({:?}):\n{}",
                    run.code, run.stderr
                ));
            }
            let csv = stack.fetch_output("output.csv").map_err(e("output.csv"))?;
            if csv != REFERENCE_CSV.as_bytes() {
                return Err(format!(
                    "output.csv is {:?}, expected {REFERENCE_CSV:?}",
                    String::from_utf8_lossy(&csv)
                ));
            }
            let attestation = stack
                .fetch_output("output.csv.attestation")
                .map_err(e("output.csv.attestation"))?;
            let doc = parse_qemu_unsigned(&attestation)
                .map_err(|err| format!("output.csv.attestation: {err}"))?;
            if doc.pcr(0) != Some(ours.pcr0.as_slice()) {
                return Err("output.csv.attestation: PCR0 is not the image's".into());
            }
            let json = stack
                .fetch_output("output.json")
                .map_err(e("output.json"))?;
            let kms = relayed.load(Ordering::Relaxed);
            if kms == 0 {
                return Err("no KMS connection came through the relay".into());
            }
            seen.push(("output.csv", csv));
            seen.push(("output.json", json));
            seen.push(("output.csv.attestation", attestation));
            format!(
                "output.csv is the reference; listening {}, parent run {} ({kms} KMS connection(s) relayed)",
                secs(listening.at),
                secs(parent_took)
            )
        }
        Expect::Fails(needle) => {
            if run.code == Some(0) {
                return Err("the parent succeeded; it must not".into());
            }
            if !run.stderr.contains(needle) {
                return Err(format!(
                    "the parent failed ({:?}) but its stderr does not say {needle:?}:\n{}",
                    run.code, run.stderr
                ));
            }
            if stack.fetch_output("output.csv").is_ok() {
                return Err("a failed run left an output.csv".into());
            }
            let why = run
                .stderr
                .lines()
                .find(|l| l.contains(needle))
                .unwrap_or_default()
                .trim();
            format!("the parent failed (exit {:?}): {why}", run.code)
        }
        Expect::RefusesAtBoot(_) => unreachable!("returned above"),
    };
    // Nor may any secret: the operator's credentials went into the enclave, the buyers' to KMS.
    let secrets: Vec<(String, &str)> = std::iter::once(("the operator", &stack.operator))
        .chain(
            stack
                .buyers
                .iter()
                .map(|b| (b.name.as_str(), &b.credentials)),
        )
        .flat_map(|(who, c)| {
            let token = c.session_token.as_ref().map(|t| t.expose());
            std::iter::once((
                format!("{who}'s secret access key"),
                c.secret_access_key.expose(),
            ))
            .chain(token.map(|t| (format!("{who}'s session token"), t)))
        })
        .collect();
    let contains =
        |bytes: &[u8], needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    for (what, bytes) in &seen {
        for (_, amounts) in BIDS {
            for amount in amounts {
                // The amount as a buyer wrote it, and in minor units (digits only, as an
                // integer would be printed).
                let minor = amount.replace('.', "");
                for needle in [amount, minor.as_str()] {
                    if contains(bytes, needle) {
                        return Err(format!("{what} contains the bid amount {needle}"));
                    }
                }
            }
        }
        for (secret, value) in &secrets {
            if contains(bytes, value) {
                return Err(format!("{what} contains {secret}"));
            }
        }
    }
    vm.stop();
    Ok(format!("{summary}; {} in all", secs(started.elapsed())))
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(err) => {
            say(&err);
            return ExitCode::from(2);
        }
    };
    let mut passed = 0;
    for (i, case) in CASES.iter().enumerate() {
        let dir = a.dir.join(format!("case{}", i + 1));
        say(&format!("{}. {}", i + 1, case.name));
        match run_case(&a, case, &dir) {
            Ok(summary) => {
                say(&format!("  ok: {summary}"));
                passed += 1;
            }
            Err(err) => {
                let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
                let lines: Vec<&str> = console.lines().collect();
                eprintln!("--- serial console (last 40 lines) ---");
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{l}");
                }
                say(&format!("FAILED: {}: {err}", case.name));
                return ExitCode::FAILURE;
            }
        }
    }
    println!("nitro-qemu auction: {passed} passed, 0 failed");
    ExitCode::SUCCESS
}
