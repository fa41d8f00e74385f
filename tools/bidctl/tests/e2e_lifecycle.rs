//! One auction's life on real processes (dev enclave, s3s-fs, KMS emulator, the parent), as the
//! timer sees it: before the bid deadline (no manifest yet) a run exits 0 with one line, and a
//! dry run checks what it can and says what it could not; each auction under its own output
//! prefix, never overwritten by the next; a run whose verified result is already published
//! exits 0 with one line and decrypts nothing (`--rerun` runs it again, same bytes), sealed or
//! unsealed; the manifest step refuses to orphan a result; every missing seal or bid file is
//! listed at once, naming both causes, and on a policy-enforcing S3 (where the operator may not
//! list a buyer's bucket) it is AccessDenied, as on real S3; two auctions back to back with the
//! same buyers, each with its own bid and seal keys, both decide correctly; a seal of an
//! earlier auction left at a reused key is named before the enclave gets anything; an
//! interrupted run says in one line that nothing was written.

#[path = "../../test-support/support/mod.rs"]
mod support;

use bidding_standins::stack::{OUTPUT_BUCKET, StackOptions};
use support::*;

/// Puts a buyer's bid file at `key` of their bucket, as `bidctl encrypt --upload` would.
fn upload_at(w: &World, buyer: &str, key: &str, body: &[u8]) {
    let b = w.stack.buyer(buyer).unwrap();
    w.stack
        .s3_client(&b.credentials)
        .put_object(&b.bucket, key, body, "text/csv")
        .unwrap();
}

/// The configuration of `a`, with every buyer's bid file (and so its seal) at `key`.
fn config_with_key(
    w: &World,
    a: &Auction,
    enclave: &bidding_standins::stack::EnclaveProcess,
    key: &str,
) -> std::path::PathBuf {
    let path = write_config(w, a, enclave);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("key = \"encrypted.csv\"\n"), "{text}");
    std::fs::write(
        &path,
        text.replace("key = \"encrypted.csv\"\n", &format!("key = \"{key}\"\n")),
    )
    .unwrap();
    path
}

/// The log lines of a run (stderr), for counting.
fn lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.trim().is_empty()).collect()
}

fn bids(w: &World, auction: &str) {
    upload(
        w,
        "Buyer1",
        &csv(&seal(w, "Buyer1", auction, &[bid(1, "300"), bid(2, "100")])),
    );
    upload(
        w,
        "Buyer2",
        &csv(&seal(w, "Buyer2", auction, &[bid(1, "200"), bid(2, "400")])),
    );
}

/// KMS Decrypt calls the enclave made, from its log's count of opened seals and bids.
fn enclave_sessions(log: &str) -> usize {
    log.matches("credentials received").count()
}

#[test]
fn the_timer_can_stay_on_and_auctions_never_overwrite_each_other() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    bids(&w, "life-1");
    let a = Auction::new("life-1", "none");
    let enclave = w.stack.start_enclave(&exe(), "enclave-life", &[]).unwrap();
    let config = write_config(&w, &a, &enclave);
    seal_round(&w, &config);
    let first = run_parent(&w, &a, &enclave, config.clone());
    assert_eq!(first.run.code, Some(0), "{}", first.run.stderr);
    let csv1 = fetch(&w, "output.csv");
    assert_eq!(
        String::from_utf8_lossy(&csv1),
        "Property,Result\n1,Buyer1 Wins\n2,Buyer2 Wins\n"
    );
    assert!(
        w.stack
            .s3
            .object_path(OUTPUT_BUCKET, "life-1/output.csv")
            .is_file()
    );
    let sessions = enclave_sessions(&enclave.log_text());
    assert_eq!(sessions, 1, "{}", enclave.log_text());

    // The timer's next run: one line and nothing else, exit 0, the enclave never contacted.
    let again = run_parent(&w, &a, &enclave, config.clone());
    assert_eq!(again.run.code, Some(0), "{}", again.run.stderr);
    let decided = lines(&again.run.stderr);
    assert_eq!(decided.len(), 1, "{}", again.run.stderr);
    assert!(
        decided[0].contains("auction life-1 is decided already")
            && decided[0].contains("nothing decrypted"),
        "{}",
        decided[0]
    );
    assert!(!again.run.stderr.contains("connecting to the enclave"));
    assert_eq!(enclave_sessions(&enclave.log_text()), sessions);

    // Told to, it runs again: the same bytes.
    let mut rerun = Auction::new("life-1", "none");
    rerun.extra = vec!["--rerun".into()];
    let r = run_parent(&w, &rerun, &enclave, config.clone());
    assert_eq!(r.run.code, Some(0), "{}", r.run.stderr);
    assert_eq!(enclave_sessions(&enclave.log_text()), sessions + 1);
    assert_eq!(fetch(&w, "output.csv"), csv1);

    // The same manifest again is harmless (same bytes); a new one for the decided auction,
    // say after a buyer changed a file, would orphan its result: refused.
    let m = w
        .stack
        .parent_command_with(&exe(), &["manifest"], &config, &[])
        .output()
        .unwrap();
    assert_eq!(
        m.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&m.stderr)
    );
    bids(&w, "life-1");
    let m = w
        .stack
        .parent_command_with(&exe(), &["manifest"], &config, &[])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&m.stderr);
    assert_eq!(m.status.code(), Some(3), "{err}");
    assert!(err.contains("already has a result"), "{err}");

    // The next auction, same output bucket: its own prefix; the first one's bytes stay.
    bids(&w, "life-2");
    let b = Auction::new("life-2", "winning-bid");
    let enclave2 = w
        .stack
        .start_enclave(&exe(), "enclave-life-2", &[])
        .unwrap();
    let config2 = write_config(&w, &b, &enclave2);
    seal_round(&w, &config2);
    let second = run_parent(&w, &b, &enclave2, config2);
    assert_eq!(second.run.code, Some(0), "{}", second.run.stderr);
    assert_eq!(
        std::fs::read(w.stack.s3.object_path(OUTPUT_BUCKET, "life-1/output.csv")).unwrap(),
        csv1
    );
    assert!(
        String::from_utf8_lossy(&fetch(&w, "output.csv")).starts_with("Property,Result,Price\n")
    );

    // A configuration that points life-2 at life-1's prefix cannot replace its manifest.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[output]\n", "[output]\nprefix = \"life-2/\"\n");
    let clash = w.dir.path().join("clash.toml");
    std::fs::write(&clash, text).unwrap();
    let m = w
        .stack
        .parent_command_with(&exe(), &["manifest"], &clash, &[])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&m.stderr);
    assert_eq!(m.status.code(), Some(3), "{err}");
    assert!(
        err.contains("holds the manifest of auction life-2, not life-1"),
        "{err}"
    );
}

#[test]
fn every_missing_seal_is_named_with_both_causes() {
    // Buckets as deployed: the operator's role may read the buyers' objects but not list
    // their buckets, so S3 answers AccessDenied for a seal that is not there.
    let w = world(
        &["Buyer1", "Buyer2"],
        StackOptions {
            enforce_policies: true,
            ..StackOptions::default()
        },
    );
    bids(&w, "unsealed-yet");
    let a = Auction::new("unsealed-yet", "none");
    let enclave = w.stack.start_enclave(&exe(), "enclave-seals", &[]).unwrap();
    let config = write_config(&w, &a, &enclave);
    w.stack.make_manifest(&exe(), &config).unwrap();
    for extra in [&[][..], &["--dry-run"][..]] {
        let run = w.stack.run_parent(&exe(), &config, extra).unwrap();
        let err = &run.stderr;
        assert_eq!(run.code, Some(3), "{extra:?}: {err}");
        for buyer in ["Buyer1", "Buyer2"] {
            let line = err
                .lines()
                .find(|l| l.contains(&format!("buyer `{buyer}`'s seal")))
                .unwrap_or_else(|| panic!("{buyer}: {err}"));
            assert!(line.contains("(AccessDenied)"), "{line}");
            assert!(line.contains("has not sealed the manifest yet"), "{line}");
            assert!(line.contains("may not read"), "{line}");
        }
        assert!(err.contains("2 seals cannot be read"), "{err}");
    }
    assert!(!enclave.log_text().contains("credentials received"));
    // Sealed now, the same run goes through.
    let manifest = w.stack.make_manifest(&exe(), &config).unwrap();
    for b in &w.stack.buyers {
        w.stack.seal(b, &manifest).unwrap();
    }
    let run = w.stack.run_parent(&exe(), &config, &[]).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

#[test]
fn an_interrupted_run_says_nothing_was_written() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    bids(&w, "stopped");
    let a = Auction::new("stopped", "none");
    let enclave = w.stack.start_enclave(&exe(), "enclave-stop", &[]).unwrap();
    let config = write_config(&w, &a, &enclave);
    seal_round(&w, &config);
    // An "enclave" that accepts and never answers: the parent waits for its hello.
    let silent = w.dir.path().join("silent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&silent).unwrap();
    let child = w
        .stack
        .parent_command(
            &exe(),
            &config,
            &["--enclave", &format!("unix:{}", silent.display())],
        )
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (_conn, _) = listener.accept().unwrap();
    // SAFETY: SIGINT to the child this test started, by its PID.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.lines().last().is_some_and(|l| l.contains(&format!(
            "interrupted; nothing was written to s3://{OUTPUT_BUCKET}/stopped/"
        ))),
        "{err}"
    );
}

/// The limits file (what `bidctl initramfs --limits` puts in the image as /limits) reaches the
/// enclave's session: with `--max-lots=1` a two-lot auction is refused.
#[test]
fn the_limits_file_bounds_the_auction() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    bids(&w, "limited");
    let limits = w.dir.path().join("limits");
    std::fs::write(&limits, "# one lot\n--max-lots=1\n").unwrap();
    let a = Auction::new("limited", "none");
    let enclave = w
        .stack
        .start_enclave(
            &exe(),
            "enclave-limited",
            &["--limits-file", limits.to_str().unwrap()],
        )
        .unwrap();
    let config = write_config(&w, &a, &enclave);
    seal_round(&w, &config);
    let out = run_parent(&w, &a, &enclave, config);
    assert_ne!(out.run.code, Some(0), "{}", out.run.stderr);
    assert!(
        out.enclave_log
            .contains("limits from the limits file: --max-lots=1"),
        "{}",
        out.enclave_log
    );
    assert!(
        out.run.stderr.to_lowercase().contains("lots"),
        "{}",
        out.run.stderr
    );
    assert!(!output_exists(&w));
}

/// Before the bid deadline the timer's run has nothing to do: no manifest yet, so one line,
/// exit 0, and nothing sent to the enclave. A dry run then checks what it can (configuration,
/// credentials, the bid files already there, the output bucket, the enclave's attestation),
/// names a bid file not uploaded yet with both causes (on a policy-enforcing S3, where it is
/// AccessDenied) without failing, and says what it could not check yet.
#[test]
fn before_the_manifest_the_timer_waits_and_a_dry_run_says_what_it_checked() {
    let w = world(
        &["Buyer1", "Buyer2"],
        StackOptions {
            enforce_policies: true,
            ..StackOptions::default()
        },
    );
    // Only Buyer1 has uploaded so far.
    upload(
        &w,
        "Buyer1",
        &csv(&seal(
            &w,
            "Buyer1",
            "early",
            &[bid(1, "300"), bid(2, "100")],
        )),
    );
    let a = Auction::new("early", "none");
    let enclave = w.stack.start_enclave(&exe(), "enclave-early", &[]).unwrap();
    let config = write_config(&w, &a, &enclave);

    let run = w.stack.run_parent(&exe(), &config, &[]).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let l = lines(&run.stderr);
    assert_eq!(l.len(), 1, "{}", run.stderr);
    assert!(
        l[0].contains(&format!(
            "auction early has no manifest at s3://{OUTPUT_BUCKET}/early/manifest.json yet"
        )) && l[0].contains("nothing decrypted"),
        "{}",
        l[0]
    );

    let dry = w.stack.run_parent(&exe(), &config, &["--dry-run"]).unwrap();
    let err = &dry.stderr;
    assert_eq!(dry.code, Some(0), "{err}");
    let buyer2 = err
        .lines()
        .find(|l| l.contains("buyer `Buyer2`'s bid file s3://buyer2-bids/encrypted.csv"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        buyer2.contains("(AccessDenied)")
            && buyer2.contains("not there yet")
            && buyer2.contains("may not read it"),
        "{buyer2}"
    );
    assert!(
        err.contains("buyer `Buyer1`: s3://buyer1-bids/encrypted.csv: "),
        "{err}"
    );
    assert!(
        err.contains(" as expected; it got no credentials"),
        "the enclave was checked: {err}"
    );
    let last = err.lines().last().unwrap();
    assert!(
        last.contains(
            "not checked yet: the manifest (none at s3://auction-results/early/manifest.json"
        ) && last.contains("1 bid file not there yet or not readable")
            && last.contains("the enclave got no credentials"),
        "{last}"
    );
    assert!(!enclave.log_text().contains("credentials received"));
    assert!(!output_exists(&w));
    assert!(
        !w.stack
            .s3
            .object_path(OUTPUT_BUCKET, "early/manifest.json")
            .exists()
    );
}

/// The manifest step and the run name every bid file that cannot be read, with both causes
/// (not uploaded yet, or not readable by the operator's role: on a policy-enforcing S3 both
/// are AccessDenied), exit 3, and write or send nothing.
#[test]
fn a_missing_bid_file_is_named_with_both_causes() {
    let w = world(
        &["Buyer1", "Buyer2"],
        StackOptions {
            enforce_policies: true,
            ..StackOptions::default()
        },
    );
    upload(
        &w,
        "Buyer1",
        &csv(&seal(&w, "Buyer1", "nofile", &[bid(1, "300")])),
    );
    let a = Auction::new("nofile", "none");
    let enclave = w
        .stack
        .start_enclave(&exe(), "enclave-nofile", &[])
        .unwrap();
    let config = write_config(&w, &a, &enclave);
    let check = |err: &str| {
        let line = err
            .lines()
            .find(|l| l.contains("buyer `Buyer2`'s bid file s3://buyer2-bids/encrypted.csv"))
            .unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains("(AccessDenied)"), "{line}");
        assert!(
            line.contains(
                "it is not there yet (buyer `Buyer2` uploads it before the bid deadline)"
            ),
            "{line}"
        );
        assert!(
            line.contains("or the operator's role may not read it"),
            "{line}"
        );
    };
    let m = w
        .stack
        .parent_command_with(&exe(), &["manifest"], &config, &[])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&m.stderr);
    assert_eq!(m.status.code(), Some(3), "{err}");
    check(&err);
    assert!(err.contains("no manifest was written"), "{err}");
    assert!(
        !w.stack
            .s3
            .object_path(OUTPUT_BUCKET, "nofile/manifest.json")
            .exists()
    );

    // Uploaded, sealed; then the file goes away before the run.
    upload(
        &w,
        "Buyer2",
        &csv(&seal(&w, "Buyer2", "nofile", &[bid(1, "200")])),
    );
    seal_round(&w, &config);
    std::fs::remove_file(w.stack.s3.object_path("buyer2-bids", "encrypted.csv")).unwrap();
    let run = w.stack.run_parent(&exe(), &config, &[]).unwrap();
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    check(&run.stderr);
    assert!(
        run.stderr.contains("nothing was sent to the enclave"),
        "{}",
        run.stderr
    );
    assert!(!enclave.log_text().contains("credentials received"));
    assert!(!output_exists(&w));
}

/// Two auctions back to back with the same buyers, in the layout the README gives: each
/// auction's bid file and seal under its own key (`bids/<auction id>/encrypted.csv`, `.seal`),
/// so the buyers can upload the next auction's bids before this one is decided without
/// changing its file, and no seal of one auction is ever found at the other's key. Both decide
/// correctly, each under its own output prefix.
#[test]
fn two_auctions_back_to_back_with_the_same_buyers() {
    let w = world(
        &["Buyer1", "Buyer2"],
        StackOptions {
            enforce_policies: true,
            ..StackOptions::default()
        },
    );
    let enclave = w.stack.start_enclave(&exe(), "enclave-twice", &[]).unwrap();
    let first = Auction::new("spring", "none");
    let second = Auction::new("autumn", "winning-bid");
    let key = |a: &Auction| format!("bids/{}/encrypted.csv", a.id);
    upload_at(
        &w,
        "Buyer1",
        &key(&first),
        &csv(&seal(
            &w,
            "Buyer1",
            "spring",
            &[bid(1, "300"), bid(2, "100")],
        )),
    );
    upload_at(
        &w,
        "Buyer2",
        &key(&first),
        &csv(&seal(
            &w,
            "Buyer2",
            "spring",
            &[bid(1, "200"), bid(2, "400")],
        )),
    );
    w.stack
        .share_auction(&bidding_core::names::AuctionId::new("spring").unwrap())
        .unwrap();
    let config1 = config_with_key(&w, &first, &enclave, &key(&first));
    seal_round(&w, &config1);
    assert!(
        w.stack
            .s3
            .object_path("buyer1-bids", "bids/spring/encrypted.csv.seal")
            .is_file()
    );

    // The next auction's bids arrive before the first is decided: other keys, nothing of the
    // first changes.
    upload_at(
        &w,
        "Buyer1",
        &key(&second),
        &csv(&seal(&w, "Buyer1", "autumn", &[bid(1, "50"), bid(2, "70")])),
    );
    upload_at(
        &w,
        "Buyer2",
        &key(&second),
        &csv(&seal(&w, "Buyer2", "autumn", &[bid(1, "60"), bid(2, "65")])),
    );

    let run = w.stack.run_parent(&exe(), &config1, &[]).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let csv1 = std::fs::read(w.stack.s3.object_path(OUTPUT_BUCKET, "spring/output.csv")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&csv1),
        "Property,Result\n1,Buyer1 Wins\n2,Buyer2 Wins\n"
    );

    // The second auction: its own manifest and seals; the first one's seals stay where they
    // are and are never read.
    w.stack
        .share_auction(&bidding_core::names::AuctionId::new("autumn").unwrap())
        .unwrap();
    let config2 = config_with_key(&w, &second, &enclave, &key(&second));
    let before = lines(&w.stack.run_parent(&exe(), &config2, &[]).unwrap().stderr).len();
    assert_eq!(before, 1, "no manifest yet: one line");
    seal_round(&w, &config2);
    let run = w.stack.run_parent(&exe(), &config2, &[]).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("bids/autumn/encrypted.csv"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("bids/spring/"), "{}", run.stderr);
    assert_eq!(
        String::from_utf8_lossy(&fetch(&w, "output.csv")),
        "Property,Result,Price\n1,Buyer2 Wins,60\n2,Buyer1 Wins,70\n"
    );
    assert_eq!(
        std::fs::read(w.stack.s3.object_path(OUTPUT_BUCKET, "spring/output.csv")).unwrap(),
        csv1
    );
    // And each is decided: both configurations' runs now have nothing to do.
    for config in [&config1, &config2] {
        let again = w.stack.run_parent(&exe(), config, &[]).unwrap();
        assert_eq!(again.code, Some(0), "{}", again.stderr);
        assert!(
            again.stderr.contains("is decided already"),
            "{}",
            again.stderr
        );
    }
}

/// The same keys for two auctions (the proof of concept's `encrypted.csv`): the first
/// auction's seals are still there when the second's manifest is made. A buyer who has not
/// sealed the second one yet is named, as a seal of another manifest (its object's metadata,
/// which `bidctl seal --upload` writes, says which), by the dry run and by the run, before the
/// enclave gets any credentials.
#[test]
fn a_seal_of_an_earlier_auction_is_named_before_anything_is_sent() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    let enclave = w.stack.start_enclave(&exe(), "enclave-stale", &[]).unwrap();
    bids(&w, "stale-1");
    let a = Auction::new("stale-1", "none");
    let config1 = write_config(&w, &a, &enclave);
    let m1 = seal_round(&w, &config1);
    let run = w.stack.run_parent(&exe(), &config1, &[]).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let sessions = enclave_sessions(&enclave.log_text());

    bids(&w, "stale-2");
    let b = Auction::new("stale-2", "none");
    let config2 = write_config(&w, &b, &enclave);
    let m2 = w.stack.make_manifest(&exe(), &config2).unwrap();
    // Only Buyer1 seals the new manifest.
    w.stack.seal(w.stack.buyer("Buyer1").unwrap(), &m2).unwrap();
    let h1 = hex::encode(bidding_core::config::sha256(&m1));
    for extra in [&["--dry-run"][..], &[][..]] {
        let run = w.stack.run_parent(&exe(), &config2, extra).unwrap();
        let err = &run.stderr;
        assert_eq!(run.code, Some(3), "{extra:?}: {err}");
        let line = err
            .lines()
            .find(|l| l.contains("buyer `Buyer2`'s seal"))
            .unwrap_or_else(|| panic!("{err}"));
        assert!(
            line.contains(&format!(
                "seals another manifest of auction stale-1 (SHA-256 {h1}"
            )) && line.contains("buyer `Buyer2` has not sealed this manifest yet"),
            "{line}"
        );
        assert!(!err.contains("buyer `Buyer1`'s seal"), "{err}");
    }
    assert_eq!(enclave_sessions(&enclave.log_text()), sessions);
    // Sealed, it runs.
    w.stack.seal(w.stack.buyer("Buyer2").unwrap(), &m2).unwrap();
    let run = w.stack.run_parent(&exe(), &config2, &[]).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
}

/// An unsealed auction is decided once too: the timer's next run finds its verified result
/// (the attestation commits to the configuration's canonical bytes), says so in one line and
/// exits 0, where running it again on the same enclave would fail on replayed ciphertexts.
#[test]
fn an_unsealed_auction_is_decided_once() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::unsealed());
    bids(&w, "open-1");
    let a = Auction::unsealed("open-1", "none");
    let enclave = w.stack.start_enclave(&exe(), "enclave-open", &[]).unwrap();
    let config = write_config(&w, &a, &enclave);
    let first = run_parent(&w, &a, &enclave, config.clone());
    assert_eq!(first.run.code, Some(0), "{}", first.run.stderr);
    let sessions = enclave_sessions(&enclave.log_text());
    let again = run_parent(&w, &a, &enclave, config.clone());
    assert_eq!(again.run.code, Some(0), "{}", again.run.stderr);
    let l = lines(&again.run.stderr);
    assert_eq!(l.len(), 1, "{}", again.run.stderr);
    assert!(
        l[0].contains("auction open-1 is decided already")
            && l[0].contains("freshly started enclave"),
        "{}",
        l[0]
    );
    assert_eq!(enclave_sessions(&enclave.log_text()), sessions);
    // Told to, it runs again, and the enclave refuses what it opened already (exit 4).
    let mut rerun = Auction::unsealed("open-1", "none");
    rerun.extra = vec!["--rerun".into()];
    let r = run_parent(&w, &rerun, &enclave, config.clone());
    assert_eq!(r.run.code, Some(4), "{}", r.run.stderr);
    // Other terms (another reveal policy) are another auction's: not decided by this result.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("reveal = \"none\"", "reveal = \"winning-bid\"");
    let other = w.dir.path().join("other-terms.toml");
    std::fs::write(&other, text).unwrap();
    let fresh = w
        .stack
        .start_enclave(&exe(), "enclave-open-2", &[])
        .unwrap();
    let text = std::fs::read_to_string(&other)
        .unwrap()
        .replace(&enclave.endpoint.to_string(), &fresh.endpoint.to_string());
    std::fs::write(&other, text).unwrap();
    let run = w.stack.run_parent(&exe(), &other, &[]).unwrap();
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("is there but is not the verified result of these terms"),
        "{}",
        run.stderr
    );
}
