//! One auction's life on real processes (dev enclave, s3s-fs, KMS emulator, the parent), as the
//! timer sees it: each auction under its own output prefix, never overwritten by the next; a
//! run whose verified result is already published exits 0 with one line and decrypts nothing
//! (`--rerun` runs it again, same bytes); the manifest step refuses to orphan a result; every
//! missing seal is listed at once, naming both causes, and on a policy-enforcing S3 (where the
//! operator may not list a buyer's bucket) a missing seal is AccessDenied, as on real S3; an
//! interrupted run says in one line that nothing was written.

mod support;

use bidding_tools::stack::{OUTPUT_BUCKET, StackOptions};
use support::*;

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

    // The timer's next run: one line, exit 0, the enclave never contacted.
    let again = run_parent(&w, &a, &enclave, config.clone());
    assert_eq!(again.run.code, Some(0), "{}", again.run.stderr);
    let decided: Vec<&str> = again
        .run
        .stderr
        .lines()
        .filter(|l| l.contains("is decided already"))
        .collect();
    assert_eq!(decided.len(), 1, "{}", again.run.stderr);
    assert!(decided[0].contains("nothing decrypted"), "{}", decided[0]);
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
