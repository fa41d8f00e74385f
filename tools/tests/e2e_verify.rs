//! `bidctl verify` on a real result: accepted as published, refused after any one byte of the
//! output or of the attestation changes, and refused with a wrong expected PCR0.

mod support;

use bidding_core::attestation::VerifyAt;
use bidding_tools::stack::StackOptions;
use bidding_tools::verify::verify_result;
use std::process::Command;
use support::*;

struct Published {
    _w: World,
    dir: tempfile::TempDir,
    output: Vec<u8>,
    attestation: Vec<u8>,
    config: Vec<u8>,
    root_der: Vec<u8>,
    pcr0: String,
}

fn publish() -> Published {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    upload(
        &w,
        "Buyer1",
        &csv(&seal(
            &w,
            "Buyer1",
            "v1",
            &[bid(1, "100000"), bid(2, "200000")],
        )),
    );
    upload(
        &w,
        "Buyer2",
        &csv(&seal(
            &w,
            "Buyer2",
            "v1",
            &[bid(1, "90000"), bid(2, "200000.00")],
        )),
    );
    let out = run(&w, &Auction::new("v1", "winning-bid"));
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    let dir = tempfile::tempdir().unwrap();
    let output = w.stack.fetch_output("output.csv").unwrap();
    let attestation = w.stack.fetch_output("output.csv.attestation").unwrap();
    let config = w.stack.fetch_output("output.csv.config.json").unwrap();
    std::fs::write(dir.path().join("output.csv"), &output).unwrap();
    std::fs::write(dir.path().join("output.csv.attestation"), &attestation).unwrap();
    std::fs::write(dir.path().join("config.json"), &config).unwrap();
    let root = std::fs::read(&w.stack.dev_root_pem).unwrap();
    std::fs::write(dir.path().join("root.pem"), &root).unwrap();
    // The parent's own TOML, as `--config auction.toml`.
    std::fs::copy(&out.config, dir.path().join("auction.toml")).unwrap();
    let pcr0 = hex::encode(w.stack.pcr0);
    Published {
        root_der: bidding_tools::pem_certificate(&root).unwrap(),
        _w: w,
        dir,
        output,
        attestation,
        config,
        pcr0,
    }
}

fn cli(
    p: &Published,
    output: &str,
    attestation: &str,
    pcr0: &str,
    config: Option<&str>,
) -> (bool, String) {
    let d = p.dir.path();
    let mut cmd = Command::new(exe());
    cmd.arg("verify")
        .arg("--output")
        .arg(d.join(output))
        .arg("--attestation")
        .arg(d.join(attestation))
        .arg("--root")
        .arg(d.join("root.pem"))
        .arg("--expect-pcr0")
        .arg(pcr0);
    if let Some(c) = config {
        cmd.arg("--config").arg(d.join(c));
    }
    let o = cmd.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

#[test]
fn verify_accepts_the_result_and_refuses_any_change() {
    let p = publish();
    assert_eq!(
        String::from_utf8(p.output.clone()).unwrap(),
        "Property,Result,Price\n1,Buyer1 Wins,100000\n2,\"Tie: Buyer1, Buyer2\",200000\n"
    );

    // As published, with either form of the configuration.
    for config in [None, Some("config.json"), Some("auction.toml")] {
        let (ok, text) = cli(&p, "output.csv", "output.csv.attestation", &p.pcr0, config);
        assert!(ok, "{config:?}: {text}");
        assert!(text.starts_with("verified:"), "{text}");
    }

    // A wrong expected PCR0.
    let mut wrong = p.pcr0.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let (ok, text) = cli(
        &p,
        "output.csv",
        "output.csv.attestation",
        std::str::from_utf8(&wrong).unwrap(),
        None,
    );
    assert!(!ok);
    assert!(text.contains("PCR0"), "{text}");

    // Any one byte of the output.
    let expected = hex::decode(&p.pcr0).unwrap();
    for i in 0..p.output.len() {
        let mut o = p.output.clone();
        o[i] ^= 0x01;
        let e = verify_result(
            &o,
            &p.attestation,
            &p.root_der,
            &expected,
            VerifyAt::Document,
            None,
        )
        .expect_err(&format!("output byte {i} changed and still verified"));
        assert!(e.contains("output does not match"), "byte {i}: {e}");
    }
    // Any one byte of the attestation.
    for i in 0..p.attestation.len() {
        let mut a = p.attestation.clone();
        a[i] ^= 0x80;
        assert!(
            verify_result(
                &p.output,
                &a,
                &p.root_der,
                &expected,
                VerifyAt::Document,
                None
            )
            .is_err(),
            "attestation byte {i} changed and still verified"
        );
    }
    // And through the command line, one of each.
    let d = p.dir.path();
    let mut o = p.output.clone();
    let last = o.len() - 2;
    o[last] = b'9';
    std::fs::write(d.join("tampered.csv"), &o).unwrap();
    let (ok, text) = cli(&p, "tampered.csv", "output.csv.attestation", &p.pcr0, None);
    assert!(!ok && text.contains("output does not match"), "{text}");
    let mut a = p.attestation.clone();
    let mid = a.len() / 2;
    a[mid] ^= 1;
    std::fs::write(d.join("tampered.attestation"), &a).unwrap();
    let (ok, text) = cli(&p, "output.csv", "tampered.attestation", &p.pcr0, None);
    assert!(!ok && text.contains("does not verify"), "{text}");
    // Another configuration.
    let mut c: serde_json::Value = serde_json::from_slice(&p.config).unwrap();
    c["reveal"] = "none".into();
    std::fs::write(d.join("other.json"), serde_json::to_vec(&c).unwrap()).unwrap();
    let (ok, text) = cli(
        &p,
        "output.csv",
        "output.csv.attestation",
        &p.pcr0,
        Some("other.json"),
    );
    assert!(
        !ok && text.contains("configuration does not match"),
        "{text}"
    );
}
