//! Issue 21's attacks, each played by the operator with the stock parent (`bidctl __parent`)
//! against real dev enclaves (`bidctl __enclave`, sealed and unsealed) and the KMS emulator, as
//! separate processes, using only what an operator controls: configurations, manifests, seals
//! under keys it holds, buckets, and which image it runs. Each test asserts the real outcome
//! (exit code, what was written, what the enclave set aside) and searches every output for
//! the amounts it used.
//!
//! - Finding 1: the stock parent configured unsealed stops at the sealed image's hello; the
//!   unsealed image, even where the victim's key policy trusts it too, opens none of a sealed
//!   auction's bids (KMS refuses the context) nor its envelope file (refused before KMS).
//! - Finding 2: a buyer registered under the operator's key with a forged seal fails the
//!   auction (`key_binding`, exit 3, nothing written); where the operator lists a file of its
//!   own for the victim, `bidctl verify --buyer Victim --key-id <victim's key>` fails.
//! - Finding 3: padded and unpadded envelope files decide the same result; padding is never
//!   counted, listed or reported; padded files of different row counts have one size.
//! - Bids made for today's release and bids made with `rules=sealed` are each refused by the
//!   image they were not made for, per-bid and envelope.
//! - Honest runs decide as before, and reruns are byte-identical.
//!
//! Finding 4 (a second seal under a renamed auction) is `bidctl seal`'s, in `cli.rs`.

#[path = "../../test-support/support/mod.rs"]
mod support;

use base64::Engine;
use bidding_client::encrypt::{envelope_file, plaintext_csv};
use bidding_core::bidfile::{PlaintextRow, parse_plaintext};
use bidding_core::config::Mode;
use bidding_core::esdk::{self, Message};
use bidding_core::names::AuctionId;
use bidding_standins::stack::{Buyer, StackOptions, buyer_arn, dev_pcr0};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use support::*;

/// The victim's distinctive amounts, searched for everywhere.
const V_AMOUNTS: [(&str, &str); 3] = [("1", "8314159"), ("2", "8271828"), ("3", "8161803")];

fn rows(bids: &[(&str, &str)]) -> Vec<PlaintextRow> {
    let mut text = String::from("contract,bid\n");
    for (lot, amount) in bids {
        text.push_str(&format!("{lot},{amount}\n"));
    }
    parse_plaintext("bids", text.as_bytes(), Default::default()).unwrap()
}

/// Everything the operator sees after a run: the parent's stderr, the enclave's log, the
/// emulator's log (when it is a process) and every object of every bucket.
fn operator_view(w: &World, out: &Outcome) -> Vec<(String, Vec<u8>)> {
    let mut v = vec![
        (
            "parent stderr".to_owned(),
            out.run.stderr.clone().into_bytes(),
        ),
        (
            "enclave log".to_owned(),
            out.enclave_log.clone().into_bytes(),
        ),
    ];
    if let Some(log) = w.stack.kms.log() {
        v.push(("kms log".to_owned(), std::fs::read(log).unwrap_or_default()));
    }
    for (p, bytes) in all_files(&w.dir.path().join("s3")) {
        v.push((p.display().to_string(), bytes));
    }
    v
}

#[track_caller]
fn assert_no_amounts(view: &[(String, Vec<u8>)], amounts: &[&str]) {
    for a in amounts {
        for (name, bytes) in view {
            assert!(!contains(bytes, a), "amount {a} in {name}");
        }
    }
}

fn v_amounts() -> Vec<&'static str> {
    V_AMOUNTS.iter().map(|(_, a)| *a).collect()
}

/// Bids of `buyer` made for an image of `rules` (`rules=sealed` in the context of the sealed
/// image's bids), as `bidctl encrypt` makes them.
fn per_bid(w: &World, buyer: &str, auction: &str, rules: Mode, bids: &[(&str, &str)]) -> Vec<u8> {
    let b = w.stack.buyer(buyer).unwrap();
    let client = w.stack.kms_client(&b.credentials).unwrap();
    let auction = AuctionId::new(auction).unwrap();
    let sealing = bidding_client::encrypt::Sealing {
        key: &b.key,
        auction: &auction,
        buyer: &b.name,
        rules,
        context: true,
    };
    bidding_client::encrypt::seal_rows(&client, &sealing, &rows(bids), 4).unwrap()
}

/// An envelope file of `buyer` made for an image of `rules`, plaintext as given.
fn envelope(w: &World, buyer: &str, auction: &str, rules: Mode, plaintext: &[u8]) -> Vec<u8> {
    let b = w.stack.buyer(buyer).unwrap();
    let client = w.stack.kms_client(&b.credentials).unwrap();
    envelope_file(
        &client,
        &b.key,
        &AuctionId::new(auction).unwrap(),
        &b.name,
        rules,
        plaintext,
    )
    .unwrap()
}

/// Makes `name`'s key trust both dev images' PCR0s (a buyer talked into it, or an old image
/// left in the policy), through KMS's PutKeyPolicy with the buyer's credentials.
fn trust_both_images(w: &World, name: &str) {
    let b = w.stack.buyer(name).unwrap();
    let sealed = hex::encode(dev_pcr0(&exe(), Mode::Sealed).unwrap());
    let unsealed = hex::encode(dev_pcr0(&exe(), Mode::Unsealed).unwrap());
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": buyer_arn(&b.name)}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": bidding_standins::stack::OPERATOR_ROLE},
             "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation:ImageSha384": [sealed, unsealed]}}}
        ]
    });
    w.stack
        .kms_client(&b.credentials)
        .unwrap()
        .put_key_policy(b.key.as_str(), &policy.to_string())
        .unwrap();
}

/// An unsealed configuration for an enclave of the other rule set than the stack's: the same
/// text with that image's PCR0.
fn config_for(
    w: &World,
    a: &Auction,
    endpoint: &bidding_core::endpoint::Endpoint,
    pcr0: [u8; 48],
) -> std::path::PathBuf {
    let text = w
        .stack
        .parent_config_mode(
            &AuctionId::new(&a.id).unwrap(),
            endpoint,
            a.reveal,
            a.allow_no_context,
            a.sealed,
        )
        .replace(&hex::encode(w.stack.pcr0), &hex::encode(pcr0));
    let path = w.dir.path().join(format!("{}.toml", a.id));
    std::fs::write(&path, text).unwrap();
    path
}

/// Keeps only `keep` among the configuration's buyers (blocks of `[[buyers]]`).
fn only_buyers(text: &str, keep: &[&str]) -> String {
    let mut parts = text.split("\n[[buyers]]\n");
    let mut out = parts.next().unwrap().to_owned();
    for block in parts {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap();
        if keep.contains(&name) {
            out.push_str("\n[[buyers]]\n");
            out.push_str(block);
        }
    }
    out
}

/// Decrypt calls the emulator (a process with its request log) has answered so far.
fn decrypts(w: &World) -> usize {
    std::fs::read_to_string(w.stack.kms.log().expect("emulator as a process"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("kms-emulator: Decrypt by "))
        .count()
}

fn logged() -> StackOptions {
    StackOptions {
        kms_log: true,
        kms_process: Some(exe()),
        ..StackOptions::default()
    }
}

/// Finding 1, with the stock parent. The operator takes the victim's sealed file as soon as
/// it is uploaded and runs it unsealed with `winning-bid`, alone. Against the sealed image the
/// parent stops at the hello, before credentials; against the unsealed image (whose PCR0 the
/// victim's key policy also names) KMS refuses every bid's context and the envelope file's
/// header is refused before KMS: no amount comes out.
#[test]
fn finding1_an_unsealed_run_reads_no_sealed_amount() {
    let w = world(&["V", "W", "P"], logged());
    let id = "f1";
    upload(&w, "V", &per_bid(&w, "V", id, Mode::Sealed, &V_AMOUNTS));
    let w_plain = bidding_client::encrypt::envelope_plaintext(&rows(&V_AMOUNTS), None);
    upload(&w, "W", &envelope(&w, "W", id, Mode::Sealed, &w_plain));
    upload(&w, "P", &per_bid(&w, "P", id, Mode::Sealed, &[("1", "5")]));

    // (a) The sealed image, the stock parent configured unsealed: one sentence naming the
    // image it needs, before any credential; nothing written.
    let sealed = w.stack.start_enclave(&exe(), "sealed", &[]).unwrap();
    let a = Auction::unsealed(id, "winning-bid");
    let config = write_config(&w, &a, &sealed);
    std::fs::write(
        &config,
        only_buyers(&std::fs::read_to_string(&config).unwrap(), &["V"]),
    )
    .unwrap();
    let out = run_parent(&w, &a, &sealed, config);
    assert_ne!(out.run.code, Some(0), "{}", out.run.stderr);
    assert!(
        out.run.stderr.contains("unsealed image") && out.run.stderr.contains("sealed image"),
        "the refusal names the image it needs: {}",
        out.run.stderr
    );
    assert_eq!(decrypts(&w), 0, "no KMS call at all");
    assert!(!output_exists(&w));
    assert_no_amounts(&operator_view(&w, &out), &v_amounts());

    // (b) The unsealed image, the victims' keys trusting it as well as the sealed one.
    trust_both_images(&w, "V");
    trust_both_images(&w, "W");
    let unsealed_pcr0 = dev_pcr0(&exe(), Mode::Unsealed).unwrap();
    assert_ne!(unsealed_pcr0, w.stack.pcr0, "two dev images, two PCR0s");
    let unsealed = w
        .stack
        .start_enclave(&exe(), "unsealed", &["--rules", "unsealed"])
        .unwrap();
    for (victim, reason, count) in [("V", "undecryptable", 3), ("W", "malformed_file", 1)] {
        let a = Auction::unsealed(&format!("{id}-{victim}"), "winning-bid");
        // The same auction id as the victim's bids, which is what their context names.
        let config = config_for(
            &w,
            &Auction::unsealed(id, "winning-bid"),
            &unsealed.endpoint,
            unsealed_pcr0,
        );
        std::fs::write(
            &config,
            only_buyers(&std::fs::read_to_string(&config).unwrap(), &[victim]),
        )
        .unwrap();
        let before = decrypts(&w);
        let out = run_parent(&w, &a, &unsealed, config);
        assert_eq!(
            out.run.code,
            Some(0),
            "{}\n{}",
            out.run.stderr,
            out.enclave_log
        );
        let csv = String::from_utf8(fetch(&w, "output.csv")).unwrap();
        assert_eq!(
            csv,
            "Property,Result,Price\n1,No valid bids,\n2,No valid bids,\n3,No valid bids,\n"
                .lines()
                .take(if victim == "V" { 4 } else { 1 })
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            "{victim}"
        );
        let json = output_json(&w);
        assert_eq!(
            set_aside(&json),
            BTreeMap::from([((victim.to_owned(), reason.to_owned()), count)]),
            "{victim}"
        );
        // The envelope file's header (rules=sealed) is refused before its data key reaches
        // KMS; each per-bid ciphertext costs one refused Decrypt.
        assert_eq!(
            decrypts(&w) - before,
            count as usize * usize::from(victim == "V")
        );
        let mut view = operator_view(&w, &out);
        view.push(("enclave log".into(), unsealed.log_text().into_bytes()));
        assert_no_amounts(&view, &v_amounts());
    }
}

/// Finding 2, with the stock parent. The operator registers the victim V under a key it
/// holds (O's), forges V's seal under it, and lists V's genuine file: KMS says V's bids are not
/// under the registered key, and the auction fails (`key_binding`, exit 3, nothing written).
/// Where the operator lists a file of its own making for V instead, the auction runs and the
/// result verifies, but V's own check, `bidctl verify --buyer V --key-id <V's key>`, fails.
#[test]
fn finding2_a_buyer_registered_under_the_operators_key() {
    let w = world(&["V", "P", "O"], StackOptions::default());
    let id = "f2";
    let v_file = per_bid(&w, "V", id, Mode::Sealed, &V_AMOUNTS);
    upload(&w, "V", &v_file);
    upload(
        &w,
        "P",
        &per_bid(
            &w,
            "P",
            id,
            Mode::Sealed,
            &[("1", "5"), ("2", "5"), ("3", "5")],
        ),
    );
    let (v, o) = (w.stack.buyer("V").unwrap(), w.stack.buyer("O").unwrap());
    let enclave = w.stack.start_enclave(&exe(), "enclave", &[]).unwrap();
    let a = Auction::new(id, "none");

    // The operator's configuration: V under O's key; `bucket` chooses which file it lists.
    let forged_config = |v_bucket: &str| {
        let config = write_config(&w, &a, &enclave);
        let text = only_buyers(&std::fs::read_to_string(&config).unwrap(), &["V", "P"])
            .replace(v.key.as_str(), o.key.as_str())
            .replacen(
                &format!("bucket = \"{}\"", v.bucket),
                &format!("bucket = \"{v_bucket}\""),
                1,
            );
        std::fs::write(&config, text).unwrap();
        config
    };
    // The seal round: P seals honestly; V's seal is the operator's, under O's key.
    let seal_round = |config: &Path, v_bucket: &str| {
        let manifest = w.stack.make_manifest(&exe(), config).unwrap();
        let m = bidding_core::manifest::Manifest::parse(&manifest).unwrap();
        w.stack
            .seal(w.stack.buyer("P").unwrap(), &manifest)
            .unwrap();
        let forged = w
            .stack
            .kms_client(&o.credentials)
            .unwrap()
            .encrypt(
                o.key.as_str(),
                bidding_core::manifest::SEAL_MARKER,
                Some(bidding_core::manifest::seal_context(
                    m.terms().auction_id(),
                    &v.name,
                    &m.digest(),
                )),
            )
            .unwrap();
        let text = format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(forged)
        );
        w.stack
            .s3_client(&o.credentials)
            .put_object(
                v_bucket,
                "encrypted.csv.seal",
                text.as_bytes(),
                "text/plain",
            )
            .unwrap();
        manifest
    };

    // V's genuine file under the forged registration.
    let config = forged_config(&v.bucket);
    seal_round(&config, &v.bucket);
    let out = run_parent(&w, &a, &enclave, config);
    assert_eq!(
        out.run.code,
        Some(3),
        "{}\n{}",
        out.run.stderr,
        out.enclave_log
    );
    assert!(out.run.stderr.contains("key_binding"), "{}", out.run.stderr);
    assert!(
        out.run.stderr.contains("nothing was decided or written"),
        "{}",
        out.run.stderr
    );
    assert!(!output_exists(&w));
    assert_no_amounts(&operator_view(&w, &out), &v_amounts());

    // A file the operator made for V under O's key, in O's bucket: the run succeeds and the
    // result verifies for anyone, but not for V.
    let mine = {
        let client = w.stack.kms_client(&o.credentials).unwrap();
        let auction = AuctionId::new(id).unwrap();
        let sealing = bidding_client::encrypt::Sealing {
            key: &o.key,
            auction: &auction,
            buyer: &v.name,
            rules: Mode::Sealed,
            context: true,
        };
        bidding_client::encrypt::seal_rows(&client, &sealing, &rows(&[("1", "1")]), 1).unwrap()
    };
    upload(&w, "O", &mine);
    let config = forged_config(&o.bucket);
    let manifest = seal_round(&config, &o.bucket);
    let out = run_parent(&w, &a, &enclave, config);
    assert_eq!(
        out.run.code,
        Some(0),
        "{}\n{}",
        out.run.stderr,
        out.enclave_log
    );
    let d = w.dir.path();
    for (name, bytes) in [
        ("output.csv", fetch(&w, "output.csv")),
        ("output.json", fetch(&w, "output.json")),
        (
            "output.csv.attestation",
            fetch(&w, "output.csv.attestation"),
        ),
        ("manifest.json", manifest),
        ("v.csv", v_file.clone()),
    ] {
        std::fs::write(d.join(name), bytes).unwrap();
    }
    std::fs::create_dir_all(d.join("v-state")).unwrap();
    let verify = |extra: &[&str]| {
        let o = Command::new(exe())
            .arg("verify")
            .arg("--output")
            .arg(d.join("output.csv"))
            .arg("--attestation")
            .arg(d.join("output.csv.attestation"))
            .arg("--manifest")
            .arg(d.join("manifest.json"))
            .arg("--root")
            .arg(&w.stack.dev_root_pem)
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
    assert!(ok, "the forged result verifies as a result: {text}");
    let v_state = d.join("v-state");
    let (ok, text) = verify(&[
        "--buyer",
        "V",
        "--key-id",
        v.key.as_str(),
        "--bids",
        d.join("v.csv").to_str().unwrap(),
        "--state-dir",
        v_state.to_str().unwrap(),
    ]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "registers key {} for `V`, not your key {}",
            o.key, v.key
        )),
        "{text}"
    );
}

/// Finding 3, with the stock parent: an envelope file padded by `bidctl encrypt --format
/// envelope` and the same rows unpadded decide the same result, and the padding is never
/// counted, listed or reported; two buyers' padded files of different row counts have one
/// size, with and without `--lots`.
#[test]
fn finding3_padding_changes_no_result_and_hides_row_counts() {
    let w = world(&["V", "W", "P"], StackOptions::default());
    let id = "f3";
    let d = w.dir.path();
    let w_bids: Vec<(String, String)> = (1..=40)
        .map(|l| (l.to_string(), format!("{}", 9000 + l)))
        .collect();
    let w_refs: Vec<(&str, &str)> = w_bids
        .iter()
        .map(|(l, a)| (l.as_str(), a.as_str()))
        .collect();
    // `bidctl encrypt --format envelope`, as a buyer runs it.
    let encrypt = |buyer: &Buyer, bids: &[(&str, &str)], lots: Option<&str>| {
        let plain = d.join(format!("{}.csv", buyer.name));
        let mut text = String::from("contract,bid\n");
        for (l, a) in bids {
            text.push_str(&format!("{l},{a}\n"));
        }
        std::fs::write(&plain, text).unwrap();
        let mut cmd = Command::new(exe());
        cmd.args([
            "encrypt",
            "--format",
            "envelope",
            "--key-id",
            buyer.key.as_str(),
        ])
        .args(["--auction", id, "--buyer", buyer.name.as_str()])
        .args(lots.map(|n| vec!["--lots", n]).unwrap_or_default())
        .arg(&plain)
        .env("AWS_ACCESS_KEY_ID", &buyer.credentials.access_key_id)
        .env(
            "AWS_SECRET_ACCESS_KEY",
            buyer.credentials.secret_access_key.expose(),
        )
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL_KMS", w.stack.kms.endpoint())
        .env("AWS_CA_BUNDLE", w.stack.kms.ca_pem())
        .env("AWS_EC2_METADATA_DISABLED", "true");
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::remove_file(&plain).unwrap();
        o.stdout
    };
    let (v, wb) = (w.stack.buyer("V").unwrap(), w.stack.buyer("W").unwrap());
    let v_padded = encrypt(v, &V_AMOUNTS, None);
    let w_padded = encrypt(wb, &w_refs, None);
    // One size: everything but the footer's ECDSA signature, whose DER encoding is a byte or
    // two longer or shorter at random (nothing to do with the contents).
    let sized = |f: &[u8]| {
        let (header, body, _) = Message::parse(f, &esdk::Limits::default())
            .unwrap()
            .section_lengths();
        (header, body)
    };
    assert_eq!(
        sized(&v_padded),
        sized(&w_padded),
        "3 rows and 40 rows, one size"
    );
    assert!(v_padded.len().abs_diff(w_padded.len()) <= 4);
    let plaintext_len = |f: &[u8]| {
        Message::parse(f, &esdk::Limits::default())
            .unwrap()
            .plaintext_len()
    };
    assert!(bidding_core::bidfile::is_padded_len(plaintext_len(
        &v_padded
    )));
    let (v_lots, w_lots) = (
        encrypt(v, &V_AMOUNTS, Some("1000")),
        encrypt(wb, &w_refs, Some("1000")),
    );
    assert_eq!(sized(&v_lots), sized(&w_lots), "with --lots too");
    assert!(
        v_lots.len() > v_padded.len(),
        "--lots 1000 pads to a row per lot"
    );
    for f in [&v_padded, &w_padded, &v_lots, &w_lots] {
        let m = Message::parse(f, &esdk::Limits::default()).unwrap();
        esdk::check_bid_file(
            &m,
            Mode::Sealed,
            id,
            m.context()["buyer"].as_str(),
            m.data_keys()[0].provider_info_str().unwrap(),
        )
        .unwrap();
    }

    // The same rows unpadded (every amount as written), in a second auction run of the same
    // buyers: the same lots, winners and set-aside counts.
    let v_unpadded = envelope(&w, "V", id, Mode::Sealed, &plaintext_csv(&rows(&V_AMOUNTS)));
    assert!(!bidding_core::bidfile::is_padded_len(plaintext_len(
        &v_unpadded
    )));
    upload(&w, "W", &w_padded);
    upload(
        &w,
        "P",
        &per_bid(
            &w,
            "P",
            id,
            Mode::Sealed,
            &[("1", "8314159"), ("2", "1"), ("41", "1")],
        ),
    );
    let mut results = Vec::new();
    for v_file in [&v_padded, &v_unpadded, &v_lots] {
        clear_output(&w);
        upload(&w, "V", v_file);
        let out = run(&w, &Auction::new(id, "none"));
        assert_eq!(
            out.run.code,
            Some(0),
            "{}\n{}",
            out.run.stderr,
            out.enclave_log
        );
        let json = output_json(&w);
        assert!(
            set_aside(&json).is_empty(),
            "padding is never set aside: {json}"
        );
        let mut view = operator_view(&w, &out);
        view.push(("output.json".into(), json.to_string().into_bytes()));
        assert_no_amounts(&view, &v_amounts());
        results.push((
            String::from_utf8(fetch(&w, "output.csv")).unwrap(),
            json["lots"].clone(),
            json["lot_count"].clone(),
        ));
    }
    assert_eq!(
        results[0], results[1],
        "padded and unpadded decide the same"
    );
    assert_eq!(results[0], results[2], "--lots padding decides the same");
    // Lot 1: V and P tie at 8314159; lots 2 and 3 V; lots 4..=40 W; 41 P (W bids 9001..9040).
    let csv = &results[0].0;
    assert!(
        csv.starts_with("Property,Result\n1,\"Tie: P, V\"\n2,V Wins\n3,V Wins\n4,W Wins\n"),
        "{csv}"
    );
    assert_eq!(results[0].2, 41, "41 lots: padding names none");
}

/// Bids made for today's release (context without `rules`) are refused by the sealed image,
/// and bids made with `rules=sealed` by the unsealed image: per-bid ciphertexts by KMS (the
/// context does not match), envelope files by the enclave before KMS (the header's context).
#[test]
fn each_image_refuses_bids_made_for_another() {
    for (stack_rules, made_for, per_bid_reason) in [
        (Mode::Sealed, Mode::Unsealed, "undecryptable"),
        (Mode::Unsealed, Mode::Sealed, "undecryptable"),
    ] {
        let w = world(
            &["V", "W", "P"],
            StackOptions {
                rules: stack_rules,
                ..logged()
            },
        );
        let id = "rules";
        // Today's release's bids are exactly the unsealed image's: {auction, lot, buyer}.
        upload(&w, "V", &per_bid(&w, "V", id, made_for, &V_AMOUNTS));
        let plain = bidding_client::encrypt::envelope_plaintext(&rows(&V_AMOUNTS), None);
        upload(&w, "W", &envelope(&w, "W", id, made_for, &plain));
        upload(
            &w,
            "P",
            &per_bid(
                &w,
                "P",
                id,
                stack_rules,
                &[("1", "5"), ("2", "5"), ("3", "5")],
            ),
        );
        let a = Auction {
            sealed: stack_rules == Mode::Sealed,
            ..Auction::new(id, "winning-bid")
        };
        let before = decrypts(&w);
        let out = run(&w, &a);
        assert_eq!(
            out.run.code,
            Some(0),
            "{stack_rules}: {}\n{}",
            out.run.stderr,
            out.enclave_log
        );
        assert_eq!(
            String::from_utf8(fetch(&w, "output.csv")).unwrap(),
            "Property,Result,Price\n1,P Wins,5\n2,P Wins,5\n3,P Wins,5\n",
            "{stack_rules}"
        );
        assert_eq!(
            set_aside(&output_json(&w)),
            BTreeMap::from([
                (("V".to_owned(), per_bid_reason.to_owned()), 3),
                (("W".to_owned(), "malformed_file".to_owned()), 1),
            ]),
            "{stack_rules}"
        );
        // Per-bid: one Decrypt per bid (3 of V's refused, 3 of P's); the envelope file none;
        // the seals one each in a sealed auction.
        let seals = if a.sealed { 3 } else { 0 };
        assert_eq!(decrypts(&w) - before, 6 + seals, "{stack_rules}");
        assert_no_amounts(&operator_view(&w, &out), &v_amounts());
    }
}

/// Honest runs decide as before (the proof of concept's scenario: a tie reported as one), and
/// a rerun of the same manifest, in the same boot or a new one, gives byte-identical outputs.
#[test]
fn honest_runs_decide_as_before_and_reruns_are_byte_identical() {
    let w = world(&["Buyer1", "Buyer2"], StackOptions::default());
    let id = "honest";
    upload(
        &w,
        "Buyer1",
        &per_bid(
            &w,
            "Buyer1",
            id,
            Mode::Sealed,
            &[("1", "100000"), ("2", "90000"), ("3", "150000")],
        ),
    );
    let plain = bidding_client::encrypt::envelope_plaintext(
        &rows(&[("1", "95000"), ("2", "120000"), ("3", "150000")]),
        Some(3),
    );
    upload(
        &w,
        "Buyer2",
        &envelope(&w, "Buyer2", id, Mode::Sealed, &plain),
    );
    let a = Auction::new(id, "none");
    let keys = ["output.csv", "output.json"];
    let mut outputs = Vec::new();
    let boot1 = w.stack.start_enclave(&exe(), "boot1", &[]).unwrap();
    let config = write_config(&w, &a, &boot1);
    seal_round(&w, &config);
    for _ in 0..2 {
        let out = run_parent(&w, &a, &boot1, config.clone());
        assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
        outputs.push(keys.map(|k| fetch(&w, k)));
    }
    drop(boot1);
    let boot2 = w.stack.start_enclave(&exe(), "boot2", &[]).unwrap();
    let config = write_config(&w, &a, &boot2);
    let out = run_parent(&w, &a, &boot2, config);
    assert_eq!(out.run.code, Some(0), "{}", out.run.stderr);
    outputs.push(keys.map(|k| fetch(&w, k)));
    let csv = String::from_utf8(outputs[0][0].clone()).unwrap();
    assert_eq!(
        csv,
        "Property,Result\n1,Buyer1 Wins\n2,Buyer2 Wins\n3,\"Tie: Buyer1, Buyer2\"\n"
    );
    for o in &outputs[1..] {
        assert_eq!(o[0], outputs[0][0], "output.csv byte-identical");
        assert_eq!(o[1], outputs[0][1], "output.json byte-identical");
    }
}
