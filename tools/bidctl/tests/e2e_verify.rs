//! `bidctl verify` on real results: a sealed result is accepted with its manifest, and refused
//! after any one byte of output.csv, output.json or the attestation changes, with a wrong
//! expected PCR0, or with the manifest of another auction (same buyers and keys, another id or
//! reveal policy: issue 12's attack 4); the terms are required; an unsealed result says so;
//! a buyer checks that the manifest registers their own key, counted their own file, set none of
//! their bids aside for a reason the operator could cause, and is the one they sealed.

#[path = "../../test-support/support/mod.rs"]
mod support;

use bidding_core::attestation::VerifyAt;
use bidding_core::auction::RevealPolicy;
use bidding_core::config::AuctionConfig;
use bidding_core::manifest::Manifest;
use bidding_core::names::AuctionId;
use bidding_core::verify::{Expected, verify_result};
use bidding_standins::stack::StackOptions;
use std::path::Path;
use std::process::Command;
use support::*;

struct Published {
    w: World,
    dir: tempfile::TempDir,
    output: Vec<u8>,
    json: Vec<u8>,
    attestation: Vec<u8>,
    manifest: Vec<u8>,
    root_der: Vec<u8>,
    pcr0: String,
}

/// Copies a run's published files into `dir` under `prefix` (output.csv → `<prefix>.csv`...).
fn keep(w: &World, dir: &Path, prefix: &str, sealed: bool) {
    let mut names = vec![
        ("output.csv", format!("{prefix}.csv")),
        ("output.json", format!("{prefix}.json")),
        ("output.csv.attestation", format!("{prefix}.attestation")),
    ];
    if sealed {
        names.push(("manifest.json", format!("{prefix}.manifest.json")));
    } else {
        names.push(("output.csv.config.json", format!("{prefix}.config.json")));
    }
    for (key, name) in names {
        std::fs::write(dir.join(name), fetch(w, key)).unwrap();
    }
}

fn publish() -> Published {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    let b1 = csv(&seal(
        &w,
        "Buyer1",
        "v1",
        &[bid(1, "100000"), bid(2, "200000")],
    ));
    let b2 = csv(&seal(
        &w,
        "Buyer2",
        "v1",
        &[bid(1, "90000"), bid(2, "200000.00")],
    ));
    upload(&w, "Buyer1", &b1);
    upload(&w, "Buyer2", &b2);
    let out = run(&w, &Auction::new("v1", "winning-bid"));
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keep(&w, d, "output", true);
    std::fs::write(d.join("buyer1-encrypted.csv"), &b1).unwrap();
    std::fs::write(d.join("buyer2-encrypted.csv"), &b2).unwrap();
    let root = std::fs::read(&w.stack.dev_root_pem).unwrap();
    std::fs::write(d.join("root.pem"), &root).unwrap();
    let pcr0 = hex::encode(w.stack.pcr0);
    Published {
        root_der: bidding_client::pem_certificate(&root).unwrap(),
        output: std::fs::read(d.join("output.csv")).unwrap(),
        json: std::fs::read(d.join("output.json")).unwrap(),
        attestation: std::fs::read(d.join("output.attestation")).unwrap(),
        manifest: std::fs::read(d.join("output.manifest.json")).unwrap(),
        w,
        dir,
        pcr0,
    }
}

/// `bidctl verify` with `args` after the common ones (files are names in the published dir).
fn cli(p: &Published, files: [&str; 3], pcr0: &str, args: &[&str]) -> (bool, String) {
    cli_root(p, files, pcr0, "root.pem", args)
}

/// [`cli`] with another trust anchor (a file in the published dir).
fn cli_root(
    p: &Published,
    files: [&str; 3],
    pcr0: &str,
    root: &str,
    args: &[&str],
) -> (bool, String) {
    let d = p.dir.path();
    let mut cmd = Command::new(exe());
    cmd.arg("verify")
        .arg("--output")
        .arg(d.join(files[0]))
        .arg("--json")
        .arg(d.join(files[1]))
        .arg("--attestation")
        .arg(d.join(files[2]))
        .arg("--root")
        .arg(d.join(root))
        .arg("--expect-pcr0")
        .arg(pcr0);
    for a in args {
        // Names of files in the published dir become paths; flags stay as they are.
        if a.starts_with("--") || !d.join(a).exists() {
            cmd.arg(a);
        } else {
            cmd.arg(d.join(a));
        }
    }
    let o = cmd.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

const PUBLISHED: [&str; 3] = ["output.csv", "output.json", "output.attestation"];

#[test]
fn verify_accepts_the_sealed_result_and_refuses_any_change() {
    let p = publish();
    assert_eq!(
        String::from_utf8(p.output.clone()).unwrap(),
        "Property,Result,Price\n1,Buyer1 Wins,100000\n2,\"Tie: Buyer1, Buyer2\",200000\n"
    );

    // As published, with the manifest; it says what it checked.
    let (ok, text) = cli(
        &p,
        PUBLISHED,
        &p.pcr0,
        &["--manifest", "output.manifest.json"],
    );
    assert!(ok, "{text}");
    assert!(text.starts_with("verified:"), "{text}");
    assert!(text.contains("SEALED"), "{text}");
    assert!(!text.contains("UNSEALED"), "{text}");
    assert!(text.contains("auction      v1"), "{text}");
    assert!(text.contains("reveal       winning-bid"), "{text}");
    assert!(
        text.contains(&hex::encode(bidding_core::config::sha256(&p.manifest))),
        "the manifest's digest: {text}"
    );
    for b in &p.w.stack.buyers {
        assert!(text.contains(b.key.as_str()), "{text}");
    }
    // The default output.json is output.csv's stem + .json.
    let d = p.dir.path();
    let o = Command::new(exe())
        .arg("verify")
        .arg("--output")
        .arg(d.join("output.csv"))
        .arg("--attestation")
        .arg(d.join("output.attestation"))
        .arg("--root")
        .arg(d.join("root.pem"))
        .arg("--expect-pcr0")
        .arg(&p.pcr0)
        .arg("--manifest")
        .arg(d.join("output.manifest.json"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A wrong expected PCR0.
    let mut wrong = p.pcr0.clone().into_bytes();
    wrong[0] = if wrong[0] == b'0' { b'1' } else { b'0' };
    let (ok, text) = cli(
        &p,
        PUBLISHED,
        std::str::from_utf8(&wrong).unwrap(),
        &["--manifest", "output.manifest.json"],
    );
    assert!(!ok);
    assert!(text.contains("PCR0"), "{text}");

    let manifest = Manifest::parse(&p.manifest).unwrap();
    let expected_terms = Expected::Sealed {
        manifest: &manifest,
        bytes: &p.manifest,
    };
    let expected = hex::decode(&p.pcr0).unwrap();
    let check = |csv: &[u8], json: &[u8], doc: &[u8]| {
        verify_result(
            csv,
            json,
            doc,
            &p.root_der,
            &expected,
            VerifyAt::Document,
            &expected_terms,
        )
    };
    check(&p.output, &p.json, &p.attestation).unwrap();
    // Any one byte of output.csv.
    for i in 0..p.output.len() {
        let mut o = p.output.clone();
        o[i] ^= 0x01;
        let e = check(&o, &p.json, &p.attestation)
            .expect_err(&format!("output.csv byte {i} changed and still verified"));
        assert!(
            e.to_string().contains("output.csv does not match"),
            "byte {i}: {e}"
        );
    }
    // Any one byte of output.json.
    for i in 0..p.json.len() {
        let mut j = p.json.clone();
        j[i] ^= 0x01;
        let e = check(&p.output, &j, &p.attestation)
            .expect_err(&format!("output.json byte {i} changed and still verified"));
        assert!(
            e.to_string().contains("output.json does not match"),
            "byte {i}: {e}"
        );
    }
    // Any one byte of the attestation.
    for i in 0..p.attestation.len() {
        let mut a = p.attestation.clone();
        a[i] ^= 0x80;
        assert!(
            check(&p.output, &p.json, &a).is_err(),
            "attestation byte {i} changed and still verified"
        );
    }
    // And through the command line, one of each.
    let mut o = p.output.clone();
    let last = o.len() - 2;
    o[last] = b'9';
    std::fs::write(d.join("tampered.csv"), &o).unwrap();
    let (ok, text) = cli(
        &p,
        ["tampered.csv", "output.json", "output.attestation"],
        &p.pcr0,
        &["--manifest", "output.manifest.json"],
    );
    assert!(!ok && text.contains("output.csv does not match"), "{text}");
    let mut j = p.json.clone();
    let at = j.windows(6).position(|w| w == b"winner").unwrap();
    j[at] = b'W';
    std::fs::write(d.join("tampered.json"), &j).unwrap();
    let (ok, text) = cli(
        &p,
        ["output.csv", "tampered.json", "output.attestation"],
        &p.pcr0,
        &["--manifest", "output.manifest.json"],
    );
    assert!(!ok && text.contains("output.json does not match"), "{text}");
    let mut a = p.attestation.clone();
    let mid = a.len() / 2;
    a[mid] ^= 1;
    std::fs::write(d.join("tampered.attestation"), &a).unwrap();
    let (ok, text) = cli(
        &p,
        ["output.csv", "output.json", "tampered.attestation"],
        &p.pcr0,
        &["--manifest", "output.manifest.json"],
    );
    assert!(!ok && text.contains("does not verify"), "{text}");
}

/// The terms are required: without --manifest or --config clap refuses before reading
/// anything, so a result is never "verified" without saying against what.
#[test]
fn verify_requires_the_terms() {
    let p = publish();
    let (ok, text) = cli(&p, PUBLISHED, &p.pcr0, &[]);
    assert!(!ok, "{text}");
    assert!(!text.contains("verified"), "{text}");
    assert!(
        text.contains("--manifest") && text.contains("required"),
        "{text}"
    );
    // Both at once are refused too.
    let (ok, text) = cli(
        &p,
        PUBLISHED,
        &p.pcr0,
        &[
            "--manifest",
            "output.manifest.json",
            "--config",
            "output.manifest.json",
        ],
    );
    assert!(!ok, "{text}");
}

/// Issue 12, attack 4: a sham auction with the same buyer names and keys but another id or
/// another reveal policy. Its result does not verify against the real manifest, and the real
/// result does not verify against its manifest.
#[test]
fn verify_refuses_another_auctions_manifest() {
    let p = publish();
    let d = p.dir.path();
    let w = &p.w;

    // A real sham auction, run by the same operator among the same buyers (who sealed it).
    upload(
        w,
        "Buyer1",
        &csv(&seal(w, "Buyer1", "v1-sham", &[bid(1, "1"), bid(2, "2")])),
    );
    upload(
        w,
        "Buyer2",
        &csv(&seal(w, "Buyer2", "v1-sham", &[bid(1, "3"), bid(2, "4")])),
    );
    let out = run(w, &Auction::new("v1-sham", "winning-bid"));
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    keep(w, d, "sham", true);
    let sham_files = ["sham.csv", "sham.json", "sham.attestation"];
    // Each result verifies only with its own manifest.
    let (ok, text) = cli(
        &p,
        sham_files,
        &p.pcr0,
        &["--manifest", "sham.manifest.json"],
    );
    assert!(ok, "{text}");
    let (ok, text) = cli(
        &p,
        sham_files,
        &p.pcr0,
        &["--manifest", "output.manifest.json"],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("other terms"), "{text}");
    let (ok, text) = cli(
        &p,
        PUBLISHED,
        &p.pcr0,
        &["--manifest", "sham.manifest.json"],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("other terms"), "{text}");

    // Manifests of the same files, buyers and keys with another id or reveal policy.
    let real = Manifest::parse(&p.manifest).unwrap();
    let t = real.terms();
    for (name, id, reveal) in [
        ("other-id", "v2", t.reveal()),
        ("other-reveal", "v1", RevealPolicy::None),
        ("other-reveal2", "v1", RevealPolicy::SecondPrice),
    ] {
        let terms = AuctionConfig::new(
            AuctionId::new(id).unwrap(),
            t.buyers().to_vec(),
            reveal,
            t.allow_no_context(),
        )
        .unwrap();
        let sham = Manifest::new(terms, real.files().to_vec()).unwrap();
        assert_ne!(sham.digest(), real.digest());
        let file = format!("{name}.manifest.json");
        std::fs::write(d.join(&file), sham.canonical_bytes()).unwrap();
        let (ok, text) = cli(&p, PUBLISHED, &p.pcr0, &["--manifest", &file]);
        assert!(!ok, "{name}: {text}");
        assert!(text.contains("other terms"), "{name}: {text}");
    }
}

/// An unsealed run verifies with its configuration (the TOML or the published canonical
/// JSON), and the output says plainly what that does not protect; a sealed result is refused
/// with --config and an unsealed one with --manifest.
#[test]
fn an_unsealed_result_says_unsealed() {
    let p = publish();
    let d = p.dir.path();
    // An unsealed auction runs on the unsealed image: its own dev enclave, PCR0 and keys.
    let w = &world(&["Buyer1", "Buyer2"], StackOptions::unsealed());
    upload(
        w,
        "Buyer1",
        &csv(&seal(w, "Buyer1", "v1-open", &[bid(1, "10"), bid(2, "20")])),
    );
    upload(
        w,
        "Buyer2",
        &csv(&seal(w, "Buyer2", "v1-open", &[bid(1, "30"), bid(2, "5")])),
    );
    let out = run(w, &Auction::unsealed("v1-open", "none"));
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    keep(w, d, "open", false);
    std::fs::copy(&out.config, d.join("open.toml")).unwrap();
    std::fs::write(
        d.join("open-root.pem"),
        std::fs::read(&w.stack.dev_root_pem).unwrap(),
    )
    .unwrap();
    let open_pcr0 = hex::encode(w.stack.pcr0);
    assert_ne!(
        open_pcr0, p.pcr0,
        "the unsealed image has a PCR0 of its own"
    );
    let open = ["open.csv", "open.json", "open.attestation"];
    let verify_open = |args: &[&str]| cli_root(&p, open, &open_pcr0, "open-root.pem", args);
    for config in ["open.config.json", "open.toml"] {
        let (ok, text) = verify_open(&["--config", config]);
        assert!(ok, "{config}: {text}");
        assert!(text.starts_with("verified:"), "{text}");
        assert!(text.contains("UNSEALED"), "{config}: {text}");
        assert!(text.contains("does NOT stop the operator"), "{text}");
    }
    let (ok, text) = verify_open(&["--manifest", "output.manifest.json"]);
    assert!(!ok && text.contains("UNSEALED run"), "{text}");
    // The sealed image's PCR0 is not the unsealed image's.
    let (ok, text) = cli_root(
        &p,
        open,
        &p.pcr0,
        "open-root.pem",
        &["--config", "open.config.json"],
    );
    assert!(!ok && text.contains("PCR0"), "{text}");
    let (ok, text) = cli(&p, PUBLISHED, &p.pcr0, &["--config", "open.config.json"]);
    assert!(!ok && text.contains("sealed run"), "{text}");
    // Another configuration (the reveal policy changed).
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("open.config.json")).unwrap()).unwrap();
    c["reveal"] = "winning-bid".into();
    std::fs::write(d.join("other.json"), serde_json::to_vec(&c).unwrap()).unwrap();
    let (ok, text) = verify_open(&["--config", "other.json"]);
    assert!(!ok && text.contains("other terms"), "{text}");
}

/// `--buyer B --key-id K --bids FILE`: a buyer confirms that the manifest registers their own
/// key and the result counted their own file, sees their own set-aside counts, and checks the
/// manifest against their seal record when there is one; any other file (another buyer's, or
/// theirs with one byte changed), another key or another sealed manifest is refused.
#[test]
fn a_buyer_checks_their_own_file_was_counted() {
    use bidding_core::seal_record::{SealEntry, SealRecord};
    let p = publish();
    let d = p.dir.path();
    let m = ["--manifest", "output.manifest.json"];
    let key = |name: &str| p.w.stack.buyer(name).unwrap().key.to_string();
    let (k1, k2) = (key("Buyer1"), key("Buyer2"));
    // An empty state directory: no seal record (never the tester's own HOME).
    std::fs::create_dir_all(d.join("state")).unwrap();
    let st = ["--state-dir", "state"];
    for (buyer, k, file) in [
        ("Buyer1", &k1, "buyer1-encrypted.csv"),
        ("Buyer2", &k2, "buyer2-encrypted.csv"),
    ] {
        let (ok, text) = cli(
            &p,
            PUBLISHED,
            &p.pcr0,
            &[
                m[0], m[1], "--buyer", buyer, "--key-id", k, "--bids", file, st[0], st[1],
            ],
        );
        assert!(ok, "{buyer}: {text}");
        assert!(text.contains("is the one counted"), "{text}");
        assert!(text.contains("your bids    none set aside"), "{text}");
        assert!(text.contains("no seal record at"), "{text}");
        assert!(
            text.contains("rule set     sealed (SBRS: made by the sealed image"),
            "{text}"
        );
    }
    // The buyer's own key, not the one the manifest registers (finding 2's check).
    let (ok, text) = cli(
        &p,
        PUBLISHED,
        &p.pcr0,
        &[
            m[0],
            m[1],
            "--buyer",
            "Buyer1",
            "--key-id",
            &k2,
            "--bids",
            "buyer1-encrypted.csv",
            st[0],
            st[1],
        ],
    );
    assert!(!ok && text.contains("registers key"), "{text}");
    let (ok, text) = cli(
        &p,
        PUBLISHED,
        &p.pcr0,
        &[
            m[0],
            m[1],
            "--buyer",
            "Buyer1",
            "--key-id",
            &k1,
            "--bids",
            "buyer2-encrypted.csv",
            st[0],
            st[1],
        ],
    );
    assert!(!ok, "{text}");
    assert!(text.contains("names another file"), "{text}");
    let mut mine = std::fs::read(d.join("buyer1-encrypted.csv")).unwrap();
    let last = mine.len() - 1;
    mine[last] ^= 0x20;
    std::fs::write(d.join("changed.csv"), &mine).unwrap();
    let (ok, text) = cli(
        &p,
        PUBLISHED,
        &p.pcr0,
        &[
            m[0],
            m[1],
            "--buyer",
            "Buyer1",
            "--key-id",
            &k1,
            "--bids",
            "changed.csv",
            st[0],
            st[1],
        ],
    );
    assert!(!ok && text.contains("names another file"), "{text}");
    let (ok, text) = cli(
        &p,
        PUBLISHED,
        &p.pcr0,
        &[
            m[0],
            m[1],
            "--buyer",
            "Mallory",
            "--key-id",
            &k1,
            "--bids",
            "changed.csv",
            st[0],
            st[1],
        ],
    );
    assert!(!ok && text.contains("not a buyer"), "{text}");

    // With the buyer's seal record: it must name this manifest.
    let manifest = Manifest::parse(&p.manifest).unwrap();
    let entry = |h: [u8; 32]| SealEntry {
        auction: manifest.terms().auction_id().clone(),
        buyer: bidding_core::names::BuyerName::new("Buyer1").unwrap(),
        manifest: h,
        file: bidding_core::config::sha256(&std::fs::read(d.join("buyer1-encrypted.csv")).unwrap()),
    };
    let write_record = |h: [u8; 32]| {
        let mut r = SealRecord::default();
        r.add(entry(h));
        std::fs::write(d.join("state/seals.json"), serde_json::to_vec(&r).unwrap()).unwrap();
    };
    let mine_args = [
        m[0],
        m[1],
        "--buyer",
        "Buyer1",
        "--key-id",
        &k1,
        "--bids",
        "buyer1-encrypted.csv",
        st[0],
        st[1],
    ];
    write_record(manifest.digest());
    let (ok, text) = cli(&p, PUBLISHED, &p.pcr0, &mine_args);
    assert!(ok, "{text}");
    assert!(text.contains("names this manifest"), "{text}");
    write_record([9; 32]);
    let (ok, text) = cli(&p, PUBLISHED, &p.pcr0, &mine_args);
    assert!(!ok, "{text}");
    assert!(
        text.contains("does not name this manifest") && text.contains(&hex::encode([9u8; 32])),
        "{text}"
    );
    // --buyer without --key-id, or without --bids, is refused by clap.
    let (ok, text) = cli(
        &p,
        PUBLISHED,
        &p.pcr0,
        &[
            m[0],
            m[1],
            "--buyer",
            "Buyer1",
            "--bids",
            "buyer1-encrypted.csv",
        ],
    );
    assert!(!ok && text.contains("--key-id"), "{text}");
    let (ok, _) = cli(&p, PUBLISHED, &p.pcr0, &[m[0], m[1], "--buyer", "Buyer1"]);
    assert!(!ok);
}

/// A file set aside whole is one file, not "1 bid", wherever it is reported: in the parent's
/// log, in `bidctl verify`'s set-aside list, and in the buyer's own check, which refuses it.
#[test]
fn a_file_set_aside_whole_is_called_a_file() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    upload(
        &w,
        "Buyer1",
        &csv(&seal(&w, "Buyer1", "whole", &[bid(1, "100000")])),
    );
    let garbage: &[u8] = b"\x00\x01not a bid file\xff\xfe";
    upload(&w, "Buyer2", garbage);
    let out = run(&w, &Auction::new("whole", "none"));
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    assert!(
        out.run
            .stderr
            .contains("buyer `Buyer2`: the whole file set aside (malformed_file)"),
        "{}",
        out.run.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    keep(&w, d, "output", true);
    std::fs::write(
        d.join("root.pem"),
        std::fs::read(&w.stack.dev_root_pem).unwrap(),
    )
    .unwrap();
    std::fs::write(d.join("buyer2-encrypted.csv"), garbage).unwrap();
    std::fs::create_dir_all(d.join("state")).unwrap();
    let verify = |extra: &[&str]| {
        let o = Command::new(exe())
            .arg("verify")
            .arg("--output")
            .arg(d.join("output.csv"))
            .arg("--attestation")
            .arg(d.join("output.attestation"))
            .arg("--manifest")
            .arg(d.join("output.manifest.json"))
            .arg("--root")
            .arg(d.join("root.pem"))
            .args(["--expect-pcr0", &hex::encode(w.stack.pcr0)])
            .args(extra)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (ok, text) = verify(&[]);
    assert!(ok, "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("(malformed_file)"))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["Buyer2", "the", "whole", "file", "(malformed_file)"]
    );
    assert!(!text.contains("bid (malformed_file)"), "{text}");
    let key = w.stack.buyer("Buyer2").unwrap().key.to_string();
    let bids = d.join("buyer2-encrypted.csv");
    let state = d.join("state");
    let (ok, text) = verify(&[
        "--buyer",
        "Buyer2",
        "--key-id",
        &key,
        "--bids",
        bids.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("`Buyer2`: the whole file set aside as malformed_file"),
        "{text}"
    );
}
