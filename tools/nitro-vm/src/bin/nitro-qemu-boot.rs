//! Boots an enclave image under QEMU's `nitro-enclave` machine and checks it the way a parent
//! instance would see it. tools/nitro-vm/qemu/boot-test.sh gives it its inputs:
//!
//!   nitro-qemu-boot --qemu P --qemu-data DIR --vhost-device-vsock P --kernel bzImage
//!     --cmdline-file F --ramdisk initramfs.cpio --expect-pcrs F (`bidctl pcr` output)
//!     --dir DIR [--timeout SECONDS] [--memory MIB]
//!
//! It writes the EIF with AWS's builder (whose PCRs must equal `bidctl pcr`'s), boots it,
//! answers the boot heartbeat on the parent's port 9000, waits for enclave-init to listen on
//! vsock 5005, sends a hello through the `CONNECT` handshake and checks the reply: a release
//! build, and an attestation document from QEMU's emulated NSM (through the guest kernel's
//! driver and /dev/nsm) with our nonce, `SBHS` (the sealed rule set), an RSA-2048 public key and PCR0/1/2 equal to
//! `bidctl pcr`'s. QEMU's NSM does not sign, so the document is decoded with
//! `parse_qemu_unsigned`, never verified. QEMU is killed at the end and on any failure.

use bidding_core::attestation::parse_qemu_unsigned;
use bidding_core::config::SEALED_HELLO_TAG;
use bidding_core::wire::{
    DEFAULT_MAX_FRAME, FrameDecoder, Hello, PROTOCOL_VERSION, Request, Response, ToEnclave,
    decode_response, encode_frame, encode_request,
};
use bidding_nitro_vm::eif::write_eif;
use bidding_nitro_vm::flags::Flags;
use bidding_nitro_vm::nitro_vm::{ENCLAVE_PORT, FATAL, NitroVm, VmConfig, answer_heartbeat};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Args {
    qemu: PathBuf,
    qemu_data: PathBuf,
    vhost: PathBuf,
    kernel: PathBuf,
    cmdline_file: PathBuf,
    ramdisk: PathBuf,
    expect_pcrs: PathBuf,
    dir: PathBuf,
    timeout: Duration,
    memory: u32,
}

fn args() -> Result<Args, String> {
    let mut f = Flags::from_env()?;
    let a = Args {
        qemu: f.take("--qemu")?.into(),
        qemu_data: f.take("--qemu-data")?.into(),
        vhost: f.take("--vhost-device-vsock")?.into(),
        kernel: f.take("--kernel")?.into(),
        cmdline_file: f.take("--cmdline-file")?.into(),
        ramdisk: f.take("--ramdisk")?.into(),
        expect_pcrs: f.take("--expect-pcrs")?.into(),
        dir: f.take("--dir")?.into(),
        timeout: Duration::from_secs(f.take_or("--timeout", 240)?),
        memory: f.take_or("--memory", 512)?,
    };
    f.finish()?;
    Ok(a)
}

/// `PCR0 <hex>` lines, as `bidctl pcr` prints them.
fn read_pcrs(text: &str) -> Result<BTreeMap<u8, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let (name, value) = line
            .split_once(' ')
            .ok_or_else(|| format!("bad PCR line {line:?}"))?;
        let i: u8 = name
            .strip_prefix("PCR")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("bad PCR line {line:?}"))?;
        out.insert(
            i,
            hex::decode(value.trim()).map_err(|e| format!("{line:?}: {e}"))?,
        );
    }
    if out.keys().copied().collect::<Vec<_>>() != [0, 1, 2] {
        return Err(format!(
            "expected PCR0, PCR1 and PCR2, got {:?}",
            out.keys()
        ));
    }
    Ok(out)
}

fn random_nonce() -> Result<Vec<u8>, String> {
    let mut nonce = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut nonce))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(nonce)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn check(
    passed: &mut u32,
    what: &str,
    ok: bool,
    detail: impl FnOnce() -> String,
) -> Result<(), String> {
    if ok {
        eprintln!("nitro-qemu-boot: ok: {what}");
        *passed += 1;
        Ok(())
    } else {
        Err(format!("{what}: {}", detail()))
    }
}

fn run(a: &Args) -> Result<u32, String> {
    let mut passed = 0;
    let expected = read_pcrs(
        &std::fs::read_to_string(&a.expect_pcrs)
            .map_err(|e| format!("{}: {e}", a.expect_pcrs.display()))?,
    )?;
    let cmdline_bytes =
        std::fs::read(&a.cmdline_file).map_err(|e| format!("{}: {e}", a.cmdline_file.display()))?;
    let cmdline =
        std::str::from_utf8(cmdline_bytes.trim_ascii()).map_err(|e| format!("cmdline: {e}"))?;

    // The image, by AWS's builder; its own PCRs must already be bidctl's.
    let eif = a.dir.join("image.eif");
    let built = write_eif(&a.kernel, cmdline, &[a.ramdisk.as_path()], &eif)?;
    for (i, value) in &expected {
        let name = format!("PCR{i}");
        check(
            &mut passed,
            &format!("EifBuilder's {name} = bidctl pcr's"),
            built.get(&name).map(String::as_str) == Some(hex::encode(value).as_str()),
            || {
                format!(
                    "builder {:?}, bidctl {}",
                    built.get(&name),
                    hex::encode(value)
                )
            },
        )?;
    }
    eprintln!(
        "nitro-qemu-boot: EIF {} ({} bytes)",
        eif.display(),
        std::fs::metadata(&eif).map(|m| m.len()).unwrap_or(0)
    );

    // The parent's heartbeat port, bound before the guest can connect to it.
    let hb_rx =
        answer_heartbeat(&a.dir).map_err(|e| format!("binding the heartbeat socket: {e}"))?;

    let deadline = Instant::now() + a.timeout;
    let mut vm = NitroVm::start(&VmConfig {
        qemu: a.qemu.clone(),
        qemu_data: a.qemu_data.clone(),
        vhost_device_vsock: a.vhost.clone(),
        eif: eif.clone(),
        memory_mib: a.memory,
        dir: a.dir.clone(),
    })?;
    eprintln!("nitro-qemu-boot: QEMU pid {} started", vm.qemu_pid());
    let booted = Instant::now();

    let pid1 = vm.wait_for("starting (pid 1, release build)", FATAL, deadline)?;
    check(
        &mut passed,
        "the release enclave-init started as PID 1",
        true,
        String::new,
    )?;
    vm.wait_for(
        "/nsm.ko not present; assuming the NSM driver is built in",
        FATAL,
        deadline,
    )?;
    let acknowledged = vm.wait_for("enclave-init: heartbeat acknowledged", FATAL, deadline)?;
    let (hb_at, hb) = hb_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .map_err(|_| "the heartbeat listener never finished".to_string())?;
    check(
        &mut passed,
        "heartbeat 0xB7 received on the parent's port 9000 and echoed",
        hb.is_ok(),
        || format!("{hb:?}"),
    )?;
    let listening = vm.wait_for(
        &format!("listening on vsock:any:{ENCLAVE_PORT}"),
        FATAL,
        deadline,
    )?;
    check(
        &mut passed,
        "enclave-init listens on vsock 5005",
        true,
        String::new,
    )?;

    // hello through the backend's CONNECT handshake.
    let left = deadline.saturating_duration_since(Instant::now());
    let mut s = vm.connect(ENCLAVE_PORT, left)?;
    check(
        &mut passed,
        "CONNECT 5005 answered OK 5005",
        true,
        String::new,
    )?;
    let nonce = random_nonce()?;
    let request = ToEnclave {
        id: 1,
        msg: Request::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            nonce: nonce.clone(),
        }),
    };
    let mut frame = Vec::new();
    encode_frame(&encode_request(&request), DEFAULT_MAX_FRAME, &mut frame)
        .map_err(|e| e.to_string())?;
    let sent = Instant::now();
    s.write_all(&frame)
        .map_err(|e| format!("sending hello: {e}"))?;
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
    let mut buf = vec![0u8; 16 * 1024];
    let payload = loop {
        s.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .map_err(|e| e.to_string())?;
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("waiting for the hello reply: {e}"))?;
        if n == 0 {
            return Err("the enclave closed the connection without a reply".into());
        }
        let mut input = &buf[..n];
        if let Some(p) = decoder.decode(&mut input).map_err(|e| e.to_string())? {
            break p;
        }
    };
    let answered = Instant::now();
    let reply = decode_response(1, &payload).map_err(|e| format!("the hello reply: {e}"))?;
    check(
        &mut passed,
        "the reply answers request 1",
        reply.id == Some(1),
        || format!("id {:?}", reply.id),
    )?;
    let Response::Hello(h) = reply.msg else {
        return Err(format!("expected a hello reply, got {:?}", reply.msg));
    };
    check(
        &mut passed,
        "protocol version",
        h.protocol == PROTOCOL_VERSION,
        || h.protocol.to_string(),
    )?;
    check(&mut passed, "a release build (dev: false)", !h.dev, || {
        format!("build {:?} says dev", h.build)
    })?;

    let doc = parse_qemu_unsigned(&h.attestation)
        .map_err(|e| format!("the attestation document: {e}"))?;
    check(
        &mut passed,
        "the attestation document is QEMU's NSM's (unsigned, strictly decoded)",
        true,
        String::new,
    )?;
    check(
        &mut passed,
        "its nonce is ours",
        doc.nonce() == Some(nonce.as_slice()),
        || format!("{:?}", doc.nonce().map(hex::encode)),
    )?;
    check(
        &mut passed,
        "its user_data is SBHS (the release image's rule set: sealed)",
        doc.user_data() == Some(SEALED_HELLO_TAG.as_slice()),
        || format!("{:?}", doc.user_data().map(hex::encode)),
    )?;
    let key = doc.public_key().ok_or("the document has no public_key")?;
    let rsa = aws_lc_rs::rsa::PublicEncryptingKey::from_der(key)
        .map_err(|e| format!("public_key is not a DER RSA SubjectPublicKeyInfo: {e}"))?;
    check(
        &mut passed,
        "its public_key is an RSA-2048 SubjectPublicKeyInfo",
        rsa.key_size_bits() == 2048,
        || format!("{} bits", rsa.key_size_bits()),
    )?;
    check(
        &mut passed,
        "PCRs 0 to 15 are present",
        (0..16).all(|i| doc.pcr(i).is_some()),
        || format!("{:?}", doc.pcrs.keys()),
    )?;
    for (i, value) in &expected {
        check(
            &mut passed,
            &format!("its PCR{i} = bidctl pcr's"),
            doc.pcr(*i) == Some(value.as_slice()),
            || {
                format!(
                    "NSM {}, bidctl {}",
                    doc.pcr(*i).map(hex::encode).unwrap_or_default(),
                    hex::encode(value)
                )
            },
        )?;
    }
    check(
        &mut passed,
        "not a debug-mode PCR0",
        !doc.debug_mode(),
        String::new,
    )?;
    eprintln!(
        "nitro-qemu-boot: module_id {}, build {}, PCR0 {}",
        doc.module_id(),
        h.build,
        hex::encode(&expected[&0])
    );

    vm.stop();
    eprintln!(
        "nitro-qemu-boot: timings from QEMU's start: PID 1 {}, heartbeat echoed {}, acknowledged {}, listening {}, hello answered {} (round trip {})",
        secs(pid1.at),
        secs(hb_at.duration_since(booted)),
        secs(acknowledged.at),
        secs(listening.at),
        secs(answered.duration_since(booted)),
        secs(answered.duration_since(sent))
    );
    Ok(passed)
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nitro-qemu-boot: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(passed) => {
            println!("nitro-qemu boot: {passed} passed, 0 failed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The VM (if any) was dropped, which killed QEMU; show the end of its console.
            let console = std::fs::read_to_string(a.dir.join("console.log")).unwrap_or_default();
            let lines: Vec<&str> = console.lines().collect();
            eprintln!("--- serial console (last 40 lines) ---");
            for l in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{l}");
            }
            eprintln!("nitro-qemu-boot: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
