//! Faults across process boundaries, on the sealed flow (the operator makes the manifest and
//! every buyer seals it before the parent runs). Each must end in the right result or a clear
//! error with nothing written — never a wrong winner, never a partial output presented as
//! complete. The seal round's own faults: a file changed after the manifest, a missing seal, a
//! seal of another manifest, a seal under another key; and an expected PCR0 that is missing or
//! all zero.

#[path = "../../test-support/support/mod.rs"]
mod support;

use bidding_core::credentials::Secret;
use bidding_standins::kms_emulator::{self, Principal};
use bidding_standins::stack::{EnclaveProcess, StackOptions};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use support::*;

type Fates = BTreeMap<u64, Vec<(String, Fate)>>;

/// Two buyers on `lots` lots with distinct amounts; Buyer2 wins odd lots.
fn two_buyers(w: &World, auction: &str, lots: u64) -> Fates {
    let mut fates = Fates::new();
    let mut b1 = Vec::new();
    let mut b2 = Vec::new();
    for lot in 1..=lots {
        let (x, y) = (
            5000 + lot * 3,
            if lot % 2 == 1 {
                5000 + lot * 3 + 1
            } else {
                4000 + lot
            },
        );
        b1.push(bid(lot, x));
        b2.push(bid(lot, y));
        fates.insert(
            lot,
            vec![
                ("Buyer1".into(), Fate::Valid(u128::from(x) * 100)),
                ("Buyer2".into(), Fate::Valid(u128::from(y) * 100)),
            ],
        );
    }
    upload(w, "Buyer1", &csv(&seal(w, "Buyer1", auction, &b1)));
    upload(w, "Buyer2", &csv(&seal(w, "Buyer2", auction, &b2)));
    fates
}

fn slow_kms(latency_ms: u64) -> StackOptions {
    StackOptions {
        kms_faults: vec![format!("Decrypt:latency={latency_ms}ms").parse().unwrap()],
        ..StackOptions::default()
    }
}

fn decrypts(w: &World) -> usize {
    std::fs::read_to_string(w.stack.kms.log().expect("emulator as a process"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("kms-emulator: Decrypt by "))
        .count()
}

fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn enclave_killed_mid_auction_leaves_no_output() {
    // The emulator as a logging process, so the test sees when bids are being opened.
    let opts = StackOptions {
        kms_log: true,
        kms_process: Some(exe()),
        ..slow_kms(40)
    };
    let w = world(&["Buyer1", "Buyer2"], opts);
    two_buyers(&w, "kill", 300);
    let mut enclave = w.stack.start_enclave(&exe(), "enclave-kill", &[]).unwrap();
    let config = write_config(&w, &Auction::new("kill", "none"), &enclave);
    seal_round(&w, &config);
    let mut parent = w
        .stack
        .parent_command(&exe(), &config, &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Two seals come first; more Decrypt calls than that mean the auction is open
    // and its bids are being opened.
    let before = decrypts(&w);
    wait_for("the enclave to open bids", Duration::from_secs(60), || {
        decrypts(&w) > before + 4
    });
    enclave.kill();
    let mut stderr = String::new();
    parent
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = parent.wait().unwrap();
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("closed the connection mid-auction"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(!output_exists(&w));
}

#[test]
fn kms_throttling_storm_still_decides_correctly() {
    let opts = StackOptions {
        kms_faults: vec![
            "Decrypt:throttle=0.6".parse().unwrap(),
            "Decrypt:error500=0.1".parse().unwrap(),
            "Decrypt:reset=0.05".parse().unwrap(),
        ],
        kms_fault_seed: Some(11),
        ..StackOptions::default()
    };
    let w = world(&["Buyer1", "Buyer2"], opts);
    let fates = two_buyers(&w, "storm", 60);
    let out = run(&w, &Auction::new("storm", "none"));
    assert_eq!(
        out.run.code,
        Some(0),
        "{}\n{}",
        out.run.stderr,
        out.enclave_log
    );
    assert_eq!(
        String::from_utf8(w.stack.fetch_output("output.csv").unwrap()).unwrap(),
        expected_csv(&fates, "none")
    );
}

#[test]
fn s3_500s_are_retried() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    let fates = two_buyers(&w, "s3faults", 20);
    let a = Auction::new("s3faults", "winning-bid");
    let enclave = w.stack.start_enclave(&exe(), "enclave-s3", &[]).unwrap();
    let config = write_config(&w, &a, &enclave);
    seal_round(&w, &config);
    // The parent's first three requests (the manifest, a bid file) fail.
    w.stack.s3.fail_next(3);
    let out = run_parent(&w, &a, &enclave, config);
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    assert_eq!(
        String::from_utf8(w.stack.fetch_output("output.csv").unwrap()).unwrap(),
        expected_csv(&fates, "winning-bid")
    );
    // S3 failing for good: a clear S3 error and no output.
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    two_buyers(&w, "s3down", 5);
    let a = Auction::new("s3down", "none");
    let enclave = w.stack.start_enclave(&exe(), "enclave-s3", &[]).unwrap();
    let config = write_config(&w, &a, &enclave);
    seal_round(&w, &config);
    w.stack.s3.fail_next(1000);
    let out = run_parent(&w, &a, &enclave, config);
    assert_eq!(out.run.code, Some(5), "{}", out.run.stderr);
    assert!(
        out.run.stderr.contains("InternalError"),
        "{}",
        out.run.stderr
    );
    w.stack.s3.fail_next(0);
    assert!(!output_exists(&w));
}

/// A buyer's file that is partly or wholly garbage. In protocol 1 the parent parsed the files
/// and refused the run (exit 3); now the enclave parses them, and a file the buyer sealed is
/// the buyer's own doing: bad rows are set aside one by one (`malformed_row`), a file that is
/// not a bid file at all is set aside whole (`malformed_file`), counted in the attested
/// output.json, and the other buyer's bids decide. The parent's log says so beforehand.
#[test]
fn a_garbage_buyer_file_is_set_aside_not_guessed_at() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    let mut fates = two_buyers(&w, "garbage", 5);
    // Buyer2: lot 1 holds three bytes that are not a KMS ciphertext; lot 2's bid is not base64.
    upload(&w, "Buyer2", b"[].contract,[].bid\n1,AQID\n2,not base64!\n");
    for (lot, bids) in fates.iter_mut() {
        bids.retain(|(b, _)| b == "Buyer1");
        if *lot == 1 {
            bids.push(("Buyer2".into(), Fate::SetAside("undecryptable")));
        }
    }
    let out = run(&w, &Auction::new("garbage", "none"));
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    assert!(
        out.run.stderr.contains("s3://buyer2-bids/encrypted.csv")
            && out
                .run
                .stderr
                .contains("1 malformed row and 0 lots named twice"),
        "{}",
        out.run.stderr
    );
    assert_eq!(
        String::from_utf8(fetch(&w, "output.csv")).unwrap(),
        expected_csv(&fates, "none")
    );
    let json = output_json(&w);
    assert_eq!(
        set_aside(&json),
        BTreeMap::from([
            (("Buyer2".into(), "malformed_row".into()), 1),
            (("Buyer2".into(), "undecryptable".into()), 1),
        ])
    );

    // Not a bid file at all: set aside whole, nothing of it guessed at. The same auction id
    // again: its published result goes first (the manifest step never orphans one).
    for key in ["output.csv", "output.json", "output.csv.attestation"] {
        std::fs::remove_file(w.stack.s3.object_path(
            bidding_standins::stack::OUTPUT_BUCKET,
            &w.stack.output_key(key),
        ))
        .unwrap();
    }
    upload(&w, "Buyer2", b"\x00\x01binary garbage\xff\xfe");
    for bids in fates.values_mut() {
        bids.retain(|(b, _)| b == "Buyer1");
    }
    let out = run(&w, &Auction::new("garbage", "none"));
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    assert!(
        out.run.stderr.contains("s3://buyer2-bids/encrypted.csv")
            && out.run.stderr.contains("NOT A BID FILE"),
        "{}",
        out.run.stderr
    );
    assert_eq!(
        String::from_utf8(fetch(&w, "output.csv")).unwrap(),
        expected_csv(&fates, "none")
    );
    let json = output_json(&w);
    assert_eq!(
        set_aside(&json),
        BTreeMap::from([(("Buyer2".into(), "malformed_file".into()), 1)])
    );
    let files = json["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "the garbage file is counted as received");
}

/// A bid moved to another lot or into another buyer's file: KMS refuses it (wrong context,
/// wrong key); the bid is set aside and nothing else changes. In the sealed flow the buyers
/// would refuse to seal a manifest of files they did not make (`bidctl seal` compares their
/// own file); the seal round here does not check, so this is the enclave's own defence: the
/// files as sealed hold moved bids.
#[test]
fn moved_bids_are_set_aside_not_counted() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    let b1 = seal(
        &w,
        "Buyer1",
        "moved",
        &[bid(1, 900), bid(2, 100), bid(3, 500)],
    );
    let b2 = seal(
        &w,
        "Buyer2",
        "moved",
        &[bid(1, 200), bid(2, 300), bid(3, 400)],
    );
    // Buyer1's bids for lots 1 and 2 swapped: each now sits under the other lot, where KMS
    // refuses its context. Buyer1's lot-3 bid is left out.
    let mut moved1 = b1.clone();
    let (x, y) = (moved1[0].1.clone(), moved1[1].1.clone());
    moved1[0].1 = y;
    moved1[1].1 = x;
    moved1.remove(2);
    upload(&w, "Buyer1", &csv(&moved1));
    upload(&w, "Buyer2", &csv(&b2));
    let out = run(&w, &Auction::new("moved", "winning-bid"));
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    assert_eq!(
        String::from_utf8(w.stack.fetch_output("output.csv").unwrap()).unwrap(),
        "Property,Result,Price\n1,Buyer2 Wins,200\n2,Buyer2 Wins,300\n3,Buyer2 Wins,400\n"
    );
    let json = output_json(&w);
    let reasons: Vec<(String, String)> = json["lots"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| {
            let lot = l["lot"].as_str().unwrap().to_owned();
            let d = l["disqualified"].as_array().cloned().unwrap_or_default();
            d.into_iter().map(move |d| {
                (
                    lot.clone(),
                    format!(
                        "{} {}",
                        d["buyer"].as_str().unwrap(),
                        d["reason"].as_str().unwrap()
                    ),
                )
            })
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("1".to_owned(), "Buyer1 undecryptable".to_owned()),
            ("2".to_owned(), "Buyer1 undecryptable".to_owned()),
        ]
    );
}

/// A bid under another buyer's key in a sealed auction is what a buyer registered under a key
/// not theirs looks like (the manifest's binding is the operator's word): the auction fails,
/// nothing is written, instead of the bid being set aside as `wrong_key`.
#[test]
fn a_bid_under_another_buyers_key_fails_a_sealed_auction() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    let b1 = seal(&w, "Buyer1", "foreign", &[bid(3, 500)]);
    let mut b2 = seal(
        &w,
        "Buyer2",
        "foreign",
        &[bid(1, 200), bid(2, 300), bid(3, 400)],
    );
    // Buyer1's lot-3 bid moved into Buyer2's file.
    b2[2].1 = b1[0].1.clone();
    upload(&w, "Buyer1", &csv(&b1[..0]));
    upload(&w, "Buyer2", &csv(&b2));
    let out = run(&w, &Auction::new("foreign", "winning-bid"));
    assert_eq!(out.run.code, Some(3), "{}", out.run.stderr);
    assert!(
        out.run.stderr.contains("key_binding") && out.run.stderr.contains("IncorrectKeyException"),
        "{}",
        out.run.stderr
    );
    assert!(!output_exists(&w), "nothing is written");
}

#[test]
fn two_concurrent_runs_never_both_write() {
    let w = world(&["Buyer1", "Buyer2"], slow_kms(30));
    two_buyers(&w, "overlap", 120);
    let enclave = w
        .stack
        .start_enclave(&exe(), "enclave-overlap", &[])
        .unwrap();
    let config = write_config(&w, &Auction::new("overlap", "none"), &enclave);
    seal_round(&w, &config);
    let spawn = || {
        w.stack
            .parent_command(&exe(), &config, &[])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn();
    std::thread::sleep(Duration::from_millis(200));
    let second = spawn();
    let (a, b) = (
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    );
    let mut codes = [a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(7)],
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    let locked = if a.status.code() == Some(7) {
        &a.stderr
    } else {
        &b.stderr
    };
    assert!(String::from_utf8_lossy(locked).contains("another bidding-parent run holds"));
}

/// A fake EC2 instance metadata service (IMDSv2) that hands out short-lived credentials, a
/// new set on every fetch, each registered with the KMS emulator (which refuses it once it
/// expires) and the S3 server.
struct Imds {
    endpoint: String,
    issued: Arc<Mutex<u32>>,
}

/// `lifetime` is how long KMS honours each set; `advertised` is the expiry IMDS tells the
/// parent (the same, unless a test wants the parent to be wrong about it).
fn imds(w: &World, lifetime: Duration, advertised: Duration) -> Imds {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let issued = Arc::new(Mutex::new(0u32));
    let kms_dir = w.dir.path().join("kms");
    let count = issued.clone();
    let s3_keys = w.stack.s3.keys();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut token = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if h.to_ascii_lowercase()
                    .starts_with("x-aws-ec2-metadata-token:")
                {
                    token = Some(h.split_once(':').unwrap().1.trim().to_owned());
                }
            }
            let answer = |status: &str, body: &str| {
                format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let reply = if line.starts_with("PUT /latest/api/token") {
                answer("200 OK", "imds-token")
            } else if token.as_deref() != Some("imds-token") {
                answer("401 Unauthorized", "")
            } else if path == "/latest/meta-data/iam/security-credentials/" {
                answer("200 OK", "bidding-parent")
            } else if path == "/latest/meta-data/iam/security-credentials/bidding-parent" {
                let mut n = count.lock().unwrap();
                *n += 1;
                let id = format!("ASIAIMDSROTATING{:04}", *n);
                let secret = format!("imds-secret-{:04}-xxxxxxxxxxxxxxxxxxxxxxxxxx", *n);
                let token = format!("imds-session-token-{:04}", *n);
                let now = SystemTime::now();
                let unix =
                    |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
                let (exp_secs, told) = (unix(now + lifetime), unix(now + advertised));
                kms_emulator::state::add_principal(
                    &kms_dir,
                    Principal {
                        access_key_id: id.clone(),
                        secret_access_key: Secret::new(secret.clone()),
                        session_token: Some(Secret::new(token.clone())),
                        expiration: Some(exp_secs),
                        arn: "arn:aws:sts::111122223333:assumed-role/bidding-parent/i-0imds".into(),
                    },
                )
                .unwrap();
                s3_keys.add(&id, &secret);
                let body = serde_json::json!({
                    "Code": "Success",
                    "LastUpdated": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
                    "Type": "AWS-HMAC",
                    "AccessKeyId": id,
                    "SecretAccessKey": secret,
                    "Token": token,
                    "Expiration": humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(told)).to_string(),
                })
                .to_string();
                answer("200 OK", &body)
            } else {
                answer("404 Not Found", "")
            };
            let _ = s.write_all(reply.as_bytes());
        }
    });
    Imds { endpoint, issued }
}

fn run_with_imds(
    w: &World,
    enclave: &EnclaveProcess,
    auction: &str,
    imds: &Imds,
    refresh_secs: u64,
) -> (Option<i32>, String) {
    let config = write_config(w, &Auction::new(auction, "none"), enclave);
    // The operator's own credentials make the manifest; the run uses the instance role's.
    seal_round(w, &config);
    let home = w.dir.path().join("empty-home");
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(exe())
        .arg("__parent")
        .arg("--config")
        .arg(&config)
        .arg("--credentials-refresh-secs")
        .arg(refresh_secs.to_string())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.endpoint)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Instance-role credentials that live 6 s, in an auction that takes longer: the parent
/// fetches new ones before they expire and the enclave signs with them from then on. When the
/// parent is told a later expiry than KMS enforces, it does not refresh, and the same auction
/// fails with a clear credentials error and no output (the emulator refuses expired
/// credentials mid-auction like KMS does), which shows the first run was not luck.
#[test]
fn credentials_expiring_mid_auction_are_refreshed() {
    let w = world(&["Buyer1", "Buyer2"], slow_kms(60));
    let fates = two_buyers(&w, "expiring", 500);
    let issuer = imds(&w, Duration::from_secs(6), Duration::from_secs(6));
    let enclave = w
        .stack
        .start_enclave(&exe(), "enclave-expiring", &[])
        .unwrap();
    let started = Instant::now();
    let (code, stderr) = run_with_imds(&w, &enclave, "expiring", &issuer, 3);
    assert_eq!(code, Some(0), "{stderr}\n{}", enclave.log_text());
    assert!(
        started.elapsed() > Duration::from_secs(7),
        "the auction must outlive the first credentials"
    );
    assert!(*issuer.issued.lock().unwrap() >= 3, "{stderr}");
    assert!(stderr.contains("credentials refreshed"), "{stderr}");
    assert_eq!(
        String::from_utf8(w.stack.fetch_output("output.csv").unwrap()).unwrap(),
        expected_csv(&fates, "none")
    );
    drop(enclave);

    // The control: same auction (new ciphertexts, fresh enclave), but the parent believes the
    // credentials last an hour, so it never refreshes them.
    let w = world(&["Buyer1", "Buyer2"], slow_kms(60));
    two_buyers(&w, "expired", 500);
    let issuer = imds(&w, Duration::from_secs(6), Duration::from_secs(3600));
    let enclave = w
        .stack
        .start_enclave(&exe(), "enclave-expired", &[])
        .unwrap();
    let (code, stderr) = run_with_imds(&w, &enclave, "expired", &issuer, 3);
    assert_eq!(code, Some(6), "{stderr}");
    assert!(stderr.contains("ExpiredToken"), "{stderr}");
    assert!(!output_exists(&w));
}

/// `--dry-run` reads configuration, credentials, the manifest, every seal and every bid file,
/// checks the output bucket, and says plainly when the enclave cannot be reached; a missing bid
/// file is an S3 error naming bucket and key. (tools/bidctl/tests/e2e_operator.rs has the rest.)
#[test]
fn dry_run_and_missing_inputs() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    two_buyers(&w, "dry", 4);
    let config = w.dir.path().join("dry.toml");
    let nowhere = bidding_core::endpoint::Endpoint::Unix(
        w.dir.path().join("no-enclave.sock").display().to_string(),
    );
    std::fs::write(
        &config,
        w.stack.parent_config(
            &bidding_core::names::AuctionId::new("dry").unwrap(),
            &nowhere,
            "none",
            false,
        ),
    )
    .unwrap();
    seal_round(&w, &config);
    let run = w.stack.run_parent(&exe(), &config, &["--dry-run"]).unwrap();
    assert_eq!(run.code, Some(4), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("dry run: the output bucket `auction-results` exists")
            && run
                .stderr
                .contains(&format!("dry run: cannot reach the enclave at {nowhere} (")),
        "{}",
        run.stderr
    );
    assert!(!output_exists(&w));

    // A buyer's input that is not there is an input error (3), not an S3 failure (5).
    std::fs::remove_file(w.stack.s3.object_path("buyer2-bids", "encrypted.csv")).unwrap();
    let run = w.stack.run_parent(&exe(), &config, &["--dry-run"]).unwrap();
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "buyer `Buyer2`'s bid file s3://buyer2-bids/encrypted.csv cannot be read (NoSuchKey)"
        ),
        "{}",
        run.stderr
    );
}

/// S3 refusing the operator's credentials is an S3 error, exit 5 (as `--help` and the README
/// say), whichever step meets it first: the manifest step, the run, the dry run. Nothing is
/// written and the enclave gets nothing.
#[test]
fn s3_refusing_the_credentials_exits_5() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    two_buyers(&w, "refused", 2);
    let (_, enclave, config) = sealed(&w, "refused", "none");
    let wrong = |words: &[&str], extra: &[&str]| {
        let out = w
            .stack
            .parent_command_with(&exe(), words, &config, extra)
            .env(
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            )
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (words, extra) in [
        (&["manifest"][..], &[][..]),
        (&[][..], &[][..]),
        (&[][..], &["--dry-run"][..]),
    ] {
        let (code, err) = wrong(words, extra);
        assert_eq!(code, Some(5), "{words:?} {extra:?}: {err}");
        assert!(err.contains("credentials refused"), "{err}");
        assert!(!err.contains("bidding-parent manifest`"), "{err}");
    }
    assert!(!enclave.log_text().contains("parent connected"));
    assert!(!output_exists(&w));
}

/// S3 not answering at all is exit 5 too, and the error says only that: no advice to make a
/// manifest, which may well be there.
#[test]
fn s3_unreachable_exits_5_without_manifest_advice() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    two_buyers(&w, "nos3", 2);
    let (_, enclave, config) = sealed(&w, "nos3", "none");
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["--s3-endpoint", endpoint.as_str()];
        args.extend_from_slice(extra);
        let run = w.stack.run_parent(&exe(), &config, &args).unwrap();
        assert_eq!(run.code, Some(5), "{extra:?}: {}", run.stderr);
        let err = run.stderr.to_lowercase();
        assert!(
            err.contains("reading the manifest") && err.contains("no answer"),
            "{err}"
        );
        assert!(
            !err.contains("bidding-parent manifest") && !err.contains("make it"),
            "{err}"
        );
    }
    assert!(!enclave.log_text().contains("parent connected"));
}

/// A sealed auction ready to run: bids uploaded, enclave started, configuration written, the
/// manifest made and sealed by every buyer.
fn sealed(
    w: &World,
    id: &str,
    reveal: &'static str,
) -> (Auction, EnclaveProcess, std::path::PathBuf) {
    let a = Auction::new(id, reveal);
    let enclave = w
        .stack
        .start_enclave(&exe(), &format!("enclave-{id}"), &[])
        .unwrap();
    let config = write_config(w, &a, &enclave);
    seal_round(w, &config);
    (a, enclave, config)
}

fn refused(out: &Outcome, code: i32, words: &[&str]) {
    assert_eq!(
        out.run.code,
        Some(code),
        "{}\nenclave:\n{}",
        out.run.stderr,
        out.enclave_log
    );
    for word in words {
        assert!(
            out.run.stderr.contains(word),
            "{word:?} missing from:\n{}",
            out.run.stderr
        );
    }
}

/// A buyer's file replaced after the manifest was made and sealed (by the operator, or by
/// anyone with write access to the bucket): the parent refuses to start (exit 3), naming the
/// buyer, and writes nothing. The enclave would refuse it too (FileMismatch), as the enclave
/// tests show with a hostile parent.
#[test]
fn a_file_changed_after_the_manifest_is_refused() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    two_buyers(&w, "changed", 6);
    let (a, enclave, config) = sealed(&w, "changed", "winning-bid");
    // Buyer2's file, re-encrypted: the same plaintexts, other bytes.
    let again: Vec<Bid> = (1..=6).map(|lot| bid(lot, 1)).collect();
    upload(&w, "Buyer2", &csv(&seal(&w, "Buyer2", "changed", &again)));
    let out = run_parent(&w, &a, &enclave, config);
    refused(&out, 3, &["changed since the manifest was made"]);
    let error = out
        .run
        .stderr
        .lines()
        .find(|l| l.contains("error:"))
        .unwrap();
    assert!(
        error.contains("`Buyer2`") && !error.contains("Buyer1"),
        "{error}"
    );
    assert!(!output_exists(&w));
    assert!(
        !out.enclave_log.contains("parent connected"),
        "the enclave was not contacted"
    );
}

/// A buyer who never sealed: no run (exit 3), nothing written.
#[test]
fn a_missing_seal_is_refused() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    two_buyers(&w, "noseal", 4);
    let (a, enclave, config) = sealed(&w, "noseal", "none");
    std::fs::remove_file(w.stack.s3.object_path("buyer1-bids", "encrypted.csv.seal")).unwrap();
    let out = run_parent(&w, &a, &enclave, config);
    refused(&out, 3, &["Buyer1", "not sealed"]);
    assert!(!output_exists(&w));
}

/// A buyer's seal of another manifest of the same auction (the operator changed the reveal
/// policy after Buyer2 sealed; only Buyer1 sealed the new manifest). As `bidctl seal --upload`
/// left it, its object metadata names the other manifest: the parent names it and stops
/// before the enclave gets anything. Uploaded without that metadata (`aws s3 cp`), it goes to
/// the enclave, which refuses it. Exit 3 both times, nothing written.
#[test]
fn a_seal_of_another_manifest_is_refused_by_the_enclave() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    two_buyers(&w, "other", 4);
    let (_, enclave, _) = sealed(&w, "other", "none");
    let a = Auction::new("other", "winning-bid");
    let config = write_config(&w, &a, &enclave);
    let manifest = w.stack.make_manifest(&exe(), &config).unwrap();
    w.stack
        .seal(w.stack.buyer("Buyer1").unwrap(), &manifest)
        .unwrap();
    let out = run_parent(&w, &a, &enclave, config.clone());
    refused(
        &out,
        3,
        &[
            "buyer `Buyer2`'s seal s3://buyer2-bids/encrypted.csv.seal seals another manifest of auction other",
            "nothing was sent to the enclave",
        ],
    );
    assert!(!out.enclave_log.contains("parent connected"));
    let b2 = w.stack.buyer("Buyer2").unwrap();
    let client = w.stack.s3_client(&b2.credentials);
    let seal = client
        .get_object(&b2.bucket, "encrypted.csv.seal", 1 << 16)
        .unwrap();
    client
        .put_object(&b2.bucket, "encrypted.csv.seal", &seal, "text/plain")
        .unwrap();
    let out = run_parent(&w, &a, &enclave, config);
    // Refused by the enclave, whose KMS Decrypt with this manifest's context fails.
    refused(
        &out,
        3,
        &["enclave refused", "seal_refused", "`Buyer2`'s seal"],
    );
    assert!(!output_exists(&w));
}

/// A seal of the right manifest under another key of the buyer's (not the one the terms
/// register): KMS will not open it with the registered key, exit 3, nothing written.
#[test]
fn a_seal_under_the_wrong_key_is_refused() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    two_buyers(&w, "wrongkey", 4);
    let (a, enclave, config) = sealed(&w, "wrongkey", "none");
    let b = w.stack.buyer("Buyer2").unwrap();
    let client = w.stack.kms_client(&b.credentials).unwrap();
    let other = client
        .create_key(
            "Buyer2's other key",
            Some(bidding_standins::stack::buyer_key_policy(
                &bidding_standins::stack::buyer_arn(&b.name),
                &w.stack.pcr0,
            )),
        )
        .unwrap();
    let manifest = bidding_core::manifest::Manifest::parse(&fetch(&w, "manifest.json")).unwrap();
    let context = bidding_core::manifest::seal_context(
        manifest.terms().auction_id(),
        &b.name,
        &manifest.digest(),
    );
    let blob = client
        .encrypt(
            &other.arn,
            bidding_core::manifest::SEAL_MARKER,
            Some(context),
        )
        .unwrap();
    w.stack
        .s3_client(&b.credentials)
        .put_object(
            &b.bucket,
            "encrypted.csv.seal",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, blob).as_bytes(),
            "text/plain",
        )
        .unwrap();
    let out = run_parent(&w, &a, &enclave, config);
    refused(
        &out,
        3,
        &["enclave refused", "seal_refused", "`Buyer2`'s seal"],
    );
    assert!(!output_exists(&w));
}

/// The parent will not run without the enclave measurement the buyers trust (outside a dev
/// run), nor with an all-zero one (a debug-mode enclave, even in a dev run): exit 2 before
/// anything is read or sent.
#[test]
fn expected_pcr0_missing_or_all_zero_is_a_configuration_error() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    two_buyers(&w, "pcr", 2);
    let (a, enclave, config) = sealed(&w, "pcr", "none");
    let text = std::fs::read_to_string(&config).unwrap();
    let pcr_line = format!("expected_pcr0 = \"{}\"\n", hex::encode(w.stack.pcr0));
    assert!(text.contains(&pcr_line) && text.contains("allow_dev_enclave = true\n"));

    let missing = text
        .replace(&pcr_line, "")
        .replace("allow_dev_enclave = true\n", "");
    std::fs::write(&config, missing).unwrap();
    let out = run_parent(&w, &a, &enclave, config.clone());
    refused(&out, 2, &["expected_pcr0", "missing"]);
    assert!(!output_exists(&w));

    let zero = text.replace(
        &pcr_line,
        &format!("expected_pcr0 = \"{}\"\n", "0".repeat(96)),
    );
    std::fs::write(&config, zero).unwrap();
    let out = run_parent(&w, &a, &enclave, config.clone());
    refused(&out, 2, &["expected_pcr0", "all zero"]);
    assert!(!output_exists(&w));
    assert!(
        !enclave.log_text().contains("credentials received"),
        "the enclave was never given credentials"
    );

    // The control: the same configuration with its real PCR0 runs.
    std::fs::write(&config, text).unwrap();
    let out = run_parent(&w, &a, &enclave, config);
    refused(&out, 0, &[]);
}
