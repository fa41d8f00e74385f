//! What the operator sees, on real processes (dev enclave, s3s-fs, KMS emulator, the parent):
//! set-aside bids named per buyer and reason with their lot ids (never amounts),
//! `--fail-on-set-aside` (exit 8, nothing written), and `--dry-run`'s checks of the output
//! bucket (exists, writable, nothing left behind) and of the enclave (reachable, attesting to
//! the expected PCR0, given no credentials).

#[path = "../../test-support/support/mod.rs"]
mod support;

use bidding_standins::stack::{OUTPUT_BUCKET, StackOptions};
use support::*;

/// Distinctive plaintexts: every output of a run is searched for them.
const VALID: [&str; 4] = ["6543217", "6543218", "6543219", "6543216"];
const INVALID: [&str; 3] = ["7771.777", "77x72", "-7773"];
/// Buyer2's bids without an encryption context (KMS refuses them: `undecryptable`).
const UNCONTEXTED: &str = "8887771";

/// Buyer1: invalid amounts on lots 1 to 3, a valid bid on lot 4, one malformed row. Buyer2:
/// valid bids on lots 1 to 4, and 25 bids without an encryption context on lots 101 to 125.
fn upload_bids(w: &World, auction: &str) {
    let mut b1: Vec<Bid> = INVALID
        .iter()
        .enumerate()
        .map(|(i, a)| bid(i + 1, a))
        .collect();
    b1.push(bid(4, "5123456"));
    let mut file = csv(&seal(w, "Buyer1", auction, &b1));
    file.extend_from_slice(b"900001,not base64!\n");
    upload(w, "Buyer1", &file);
    let mut b2: Vec<Bid> = VALID
        .iter()
        .enumerate()
        .map(|(i, a)| bid(i + 1, a))
        .collect();
    for lot in 101..=125 {
        let mut b = bid(lot, UNCONTEXTED);
        b.context = false;
        b2.push(b);
    }
    upload(w, "Buyer2", &csv(&seal(w, "Buyer2", auction, &b2)));
}

fn assert_no_amounts(what: &str, text: &[u8]) {
    for a in VALID
        .iter()
        .chain(INVALID.iter())
        .chain([UNCONTEXTED, "5123456"].iter())
    {
        assert!(!contains(text, a), "{what} holds the amount {a}");
    }
}

/// Objects of the output bucket, and anything s3s-fs keeps beside the buckets for uploads.
fn output_objects(w: &World) -> Vec<String> {
    let root = w.stack.s3.object_path(OUTPUT_BUCKET, "x");
    let bucket = root.parent().unwrap();
    let mut names: Vec<String> = all_files(bucket)
        .into_iter()
        .map(|(p, _)| p.strip_prefix(bucket).unwrap().display().to_string())
        .collect();
    for e in std::fs::read_dir(bucket.parent().unwrap())
        .unwrap()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(".upload") || n.contains(".upload-") {
            names.push(n);
        }
    }
    names.sort();
    names
}

#[test]
fn set_asides_are_named_by_lot_and_fail_on_set_aside_writes_nothing() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    upload_bids(&w, "visible");
    let mut a = Auction::new("visible", "none");
    a.extra = vec!["--fail-on-set-aside".into()];
    let out = run(&w, &a);
    let err = &out.run.stderr;
    assert_eq!(out.run.code, Some(8), "{err}");
    assert!(
        err.contains("buyer `Buyer1`: 3 bids set aside (invalid_amount) on lots 1, 2, 3\n"),
        "{err}"
    );
    assert!(
        err.contains("buyer `Buyer1`: 1 bid set aside (malformed_row)\n"),
        "{err}"
    );
    assert!(
        err.contains(
            "buyer `Buyer2`: 25 bids set aside (undecryptable) on lots 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120 and 5 more\n"
        ),
        "{err}"
    );
    assert!(
        err.contains("29 bids set aside and --fail-on-set-aside is given, so nothing was written"),
        "{err}"
    );
    assert!(!output_exists(&w), "{err}");
    assert_eq!(
        output_objects(&w),
        vec![w.stack.output_key("manifest.json")]
    );
    assert_no_amounts("the parent's log", err.as_bytes());

    // Without the flag the same lines, then the result; JSON lines carry the lots too.
    let mut a = Auction::new("visible", "none");
    a.extra = vec!["--log-format".into(), "json".into()];
    let enclave = w
        .stack
        .start_enclave(&exe(), "enclave-visible-2", &[])
        .unwrap();
    let config = write_config(&w, &a, &enclave);
    let out = run_parent(&w, &a, &enclave, config);
    let err = &out.run.stderr;
    assert_eq!(out.run.code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(lines.iter().any(|l| l["level"] == "warn"
        && l["msg"] == "buyer `Buyer1`: 3 bids set aside (invalid_amount) on lots 1, 2, 3"));
    let done = lines.iter().find(|l| l["event"] == "done").unwrap();
    assert_eq!(
        done["set_aside"][0],
        serde_json::json!({"buyer": "Buyer1", "reason": "invalid_amount", "count": 3,
            "lots": {"first": ["1", "2", "3"], "more": 0}})
    );
    let json = output_json(&w);
    assert_eq!(
        json["set_aside"][1],
        serde_json::json!({"buyer": "Buyer1", "reason": "malformed_row", "count": 1})
    );
    assert_eq!(json["set_aside"][2]["lots"]["more"], 5);
    assert_no_amounts("the parent's JSON log", err.as_bytes());
    for key in ["output.csv", "output.json"] {
        assert_no_amounts(key, &fetch(&w, key));
    }
}

#[test]
fn dry_run_checks_bucket_and_enclave_and_leaves_nothing() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    upload_bids(&w, "dry");
    let a = Auction::new("dry", "none");
    let enclave = w.stack.start_enclave(&exe(), "enclave-dry", &[]).unwrap();
    let config = write_config(&w, &a, &enclave);
    seal_round(&w, &config);
    let run = w.stack.run_parent(&exe(), &config, &["--dry-run"]).unwrap();
    let err = &run.stderr;
    assert_eq!(run.code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "dry run: the output bucket `{OUTPUT_BUCKET}` exists and these credentials may write to it"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("dry run: the enclave at {} (", enclave.endpoint)),
        "{err}"
    );
    assert!(err.contains(" as expected; it got no credentials"), "{err}");
    assert!(
        err.contains("dry run: configuration, credentials, the manifest, every seal, 2 bid files (")
            && err.contains(
                "the output bucket and the enclave are fine; nothing was written and the enclave got no credentials"
            ),
        "{err}"
    );
    assert_eq!(
        output_objects(&w),
        vec![w.stack.output_key("manifest.json")]
    );
    assert_no_amounts("the dry run's log", err.as_bytes());
    let log = enclave.log_text();
    assert!(!log.contains("credentials received"), "{log}");
    // The enclave took the session's end after hello in its stride: a real run follows.
    let out = run_parent(&w, &a, &enclave, config);
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    assert!(output_exists(&w));
}

#[test]
fn dry_run_names_a_missing_bucket_and_an_unreachable_enclave() {
    // Unsealed, to need no seal round: on the unsealed image.
    let w = world(&["Buyer1", "Buyer2"], StackOptions::unsealed());
    upload_bids(&w, "dry-missing");
    let a = Auction::unsealed("dry-missing", "none");
    let enclave = w
        .stack
        .start_enclave(&exe(), "enclave-dry-missing", &[])
        .unwrap();
    let config = write_config(&w, &a, &enclave);
    let run = w
        .stack
        .run_parent(
            &exe(),
            &config,
            &["--dry-run", "--output-bucket", "no-such-results"],
        )
        .unwrap();
    let err = &run.stderr;
    assert_eq!(run.code, Some(5), "{err}");
    assert!(
        err.contains(
            "dry run: the output bucket `no-such-results` does not exist (HTTP 404 NoSuchBucket"
        ),
        "{err}"
    );
    // The enclave was still checked.
    assert!(err.contains(" as expected; it got no credentials"), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let to = format!("tcp:127.0.0.1:{port}");
    let run = w
        .stack
        .run_parent(&exe(), &config, &["--dry-run", "--enclave", &to])
        .unwrap();
    let err = &run.stderr;
    assert_eq!(run.code, Some(4), "{err}");
    assert!(
        err.contains(&format!("dry run: cannot reach the enclave at {to} (")),
        "{err}"
    );
    assert!(!output_exists(&w));
    assert_no_amounts("the dry runs' logs", err.as_bytes());
}

#[test]
fn dry_run_names_an_unwritable_bucket_and_a_wrong_pcr0() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    upload_bids(&w, "dry-denied");
    let a = Auction::new("dry-denied", "none");
    let enclave = w
        .stack
        .start_enclave(&exe(), "enclave-dry-denied", &[])
        .unwrap();
    let config = write_config(&w, &a, &enclave);
    seal_round(&w, &config);
    w.stack.s3.deny_writes(OUTPUT_BUCKET);
    let run = w.stack.run_parent(&exe(), &config, &["--dry-run"]).unwrap();
    let err = &run.stderr;
    assert_eq!(run.code, Some(5), "{err}");
    assert!(
        err.contains(&format!(
            "dry run: these credentials may not write to the output bucket `{OUTPUT_BUCKET}`; the role needs s3:PutObject and s3:AbortMultipartUpload on dry-denied/output.csv (HTTP 403 AccessDenied"
        )),
        "{err}"
    );

    let wrong = "11".repeat(48);
    let run = w
        .stack
        .run_parent(&exe(), &config, &["--dry-run", "--expected-pcr0", &wrong])
        .unwrap();
    let err = &run.stderr;
    assert_eq!(run.code, Some(5), "{err}");
    assert!(
        err.contains(&format!(
            "dry run: the enclave at {} attests to PCR0 {}, not the expected {wrong}",
            enclave.endpoint,
            hex::encode(w.stack.pcr0)
        )),
        "{err}"
    );
    let log = enclave.log_text();
    assert!(!log.contains("credentials received"), "{log}");
    assert_eq!(
        output_objects(&w),
        vec![w.stack.output_key("manifest.json")]
    );
}

/// A new image (the QEMU test image, whose PCR0 is known only once it holds the emulator's CA):
/// `Stack::trust_pcr0` does what each buyer would, PutKeyPolicy through KMS, so that every key
/// names the new PCR0 and no longer the old one, and the parent's configuration expects it.
#[test]
fn trust_pcr0_puts_the_new_pcr0_in_every_buyers_key_policy() {
    let mut w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    let old = hex::encode(w.stack.pcr0);
    let new = [0x5b; 48];
    w.stack.trust_pcr0(new).unwrap();
    assert_eq!(w.stack.pcr0, new);
    for b in &w.stack.buyers {
        let got: serde_json::Value = w
            .stack
            .kms_client(&b.credentials)
            .unwrap()
            .call(
                "GetKeyPolicy",
                &serde_json::json!({"KeyId": b.key.as_str(), "PolicyName": "default"}),
            )
            .unwrap();
        let policy = got["Policy"].as_str().unwrap();
        assert!(policy.contains(&hex::encode(new)), "{policy}");
        assert!(!policy.contains(&old), "{policy}");
    }
    let auction = bidding_core::names::AuctionId::new("a-1").unwrap();
    let config = w.stack.parent_config(
        &auction,
        &"unix:/tmp/e.sock".parse().unwrap(),
        "none",
        false,
    );
    assert!(
        config.contains(&format!("expected_pcr0 = \"{}\"", hex::encode(new))),
        "{config}"
    );
}
