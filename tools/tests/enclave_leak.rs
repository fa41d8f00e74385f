//! No amount, secret access key or session token leaves the enclave: an auction with
//! distinctive amounts (winner, tie, invalid amount, wrong context, wrong key, a replay, a
//! malformed credentials frame carrying the secrets, credentials KMS refuses) through a dev enclave and a KMS emulator
//! run as its own process, then every byte the enclave sent, its whole log and the emulator's
//! whole log are searched for each amount (as written, its integer digits — which also covers
//! the digits-only and minor-unit forms — in hex and in base64) and for both secrets.

mod harness;

use base64::Engine;
use bidding_core::auction::{Disqualified, LotResult, Outcome, Reason, RevealPolicy};
use bidding_core::config::{AuctionConfig, BuyerSpec};
use bidding_core::credentials::{Credentials, Secret};
use bidding_core::names::{AuctionId, BuyerName, KeyArn, Region};
use bidding_core::wire::ErrorCode;
use bidding_tools::kms_client::KmsClient;
use bidding_tools::kms_emulator::{Principal, state};
use bidding_tools::stack::{OPERATOR_ROLE, buyer_key_policy, sha384_file};
use harness::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ACCOUNT: &str = "111122223333";
const SECRET: &str = "LeakCheck/Secret/Key/q8Zr2Vw5Tn1Xy4Kp7Hs0";
const TOKEN: &str = "FwoGZXIvYXdzELEAKCHECK//session+token/Uq3Jd8Mv6Rb9Wc2Ye5Gt";
const WRONG_SECRET: &str = "LeakCheck/Wrong/Secret/m3Nb6Vc9Xz2Lk5Jh8Gf1";

/// `bidctl kms-emulator` as a child process, its log (stderr) in a file; killed on drop.
struct EmulatorProcess {
    child: Child,
    log: PathBuf,
    addr: String,
}

impl EmulatorProcess {
    fn start(state_dir: &Path, root_pem: &Path, log: &Path) -> EmulatorProcess {
        let child = Command::new(EXE)
            .args(["kms-emulator", "--listen", "127.0.0.1:0", "--state"])
            .arg(state_dir)
            .arg("--attestation-root")
            .arg(root_pem)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("starting bidctl kms-emulator");
        let mut emu = EmulatorProcess {
            child,
            log: log.to_owned(),
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(rest) = text.split(" on https://").nth(1) {
                emu.addr = rest.split_whitespace().next().unwrap().to_owned();
                return emu;
            }
            if let Some(status) = emu.child.try_wait().unwrap() {
                panic!("the KMS emulator exited ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "the KMS emulator did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn credentials(id: &str, secret: &str, token: Option<&str>) -> Credentials {
    Credentials {
        access_key_id: id.into(),
        secret_access_key: Secret::new(secret),
        session_token: token.map(Secret::new),
        expiration: None,
        region: Region::new("us-east-1").unwrap(),
    }
}

fn add_principal(dir: &Path, c: &Credentials, arn: String) {
    state::add_principal(
        dir,
        Principal {
            access_key_id: c.access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            session_token: c.session_token.clone(),
            expiration: None,
            arn,
        },
    )
    .unwrap();
}

/// Every way an amount could show up in text we control.
fn forms(amount: &str) -> Vec<String> {
    let integer = amount
        .split('.')
        .next()
        .unwrap()
        .trim_start_matches(['-', ' ']);
    assert!(integer.len() >= 7, "{amount} is not distinctive enough");
    vec![
        amount.to_owned(),
        integer.to_owned(),
        amount.replace('.', ""),
        hex::encode(amount),
        base64::engine::general_purpose::STANDARD.encode(amount),
    ]
}

#[test]
fn nothing_secret_leaves_the_enclave() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let nsm_dir = dir.join("nsm");
    let root_der = enclave_init::soft_nsm::dev_root_der(&nsm_dir).unwrap();
    let root_pem = nsm_dir.join("root.pem");
    let pcr0 = sha384_file(&exe()).unwrap();

    // The operator's temporary credentials (with a session token) and three buyers.
    let kms_dir = dir.join("kms");
    let operator = credentials("ASIALEAKCHECK0000001", SECRET, Some(TOKEN));
    add_principal(
        &kms_dir,
        &operator,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/bidding-parent/i-0leakcheck"),
    );
    assert!(OPERATOR_ROLE.ends_with(":role/bidding-parent"));
    let buyers = ["Buyer1", "Buyer2", "Buyer3"];
    let buyer_creds: Vec<Credentials> = (0..buyers.len())
        .map(|i| {
            credentials(
                &format!("AKIALEAKCHECKBUYER0{i}"),
                &format!("buyer-{i}-secret-0000000000000000000000000"),
                None,
            )
        })
        .collect();
    for (name, c) in buyers.iter().zip(&buyer_creds) {
        add_principal(&kms_dir, c, format!("arn:aws:iam::{ACCOUNT}:user/{name}"));
    }
    let emu = EmulatorProcess::start(&kms_dir, &root_pem, &dir.join("kms.log"));
    let endpoint = format!("https://{}", emu.addr);
    let ca = std::fs::read(kms_dir.join("ca.pem")).unwrap();
    let mut specs = Vec::new();
    let mut clients = Vec::new();
    for (name, c) in buyers.iter().zip(&buyer_creds) {
        let client = KmsClient::new(c.clone(), Some(endpoint.clone()), Some(&ca)).unwrap();
        let arn = format!("arn:aws:iam::{ACCOUNT}:user/{name}");
        let key = client
            .create_key("bids", Some(buyer_key_policy(&arn, &pcr0)))
            .unwrap()
            .arn;
        let name = BuyerName::new(*name).unwrap();
        specs.push(BuyerSpec {
            name: name.clone(),
            key_arn: KeyArn::new(key.clone()).unwrap(),
        });
        clients.push((name, key, client));
    }
    let sealer = Sealer::new(clients);
    let a = "leak-check";
    let config =
        AuctionConfig::new(AuctionId::new(a).unwrap(), specs, RevealPolicy::None, false).unwrap();

    let enclave = Enclave::start(
        dir,
        "enclave",
        &nsm_dir,
        &format!("tcp:{}", emu.addr),
        Some(&kms_dir.join("ca.pem")),
        &[],
    );
    let mut parent = Parent::new(Client::connect(&enclave), root_der.clone(), pcr0);
    parent.hello();
    // A malformed credentials frame with both secrets as values: refused, and its error
    // message must not quote them.
    let id = parent.next_id;
    parent.next_id += 1;
    let bad = format!(
        r#"{{"id":{id},"msg":{{"credentials":{{"access_key_id":"{}","secret_access_key":"{SECRET}","session_token":"{TOKEN}","region":"us-east-1","expiration":"{TOKEN}","note":"{SECRET}"}}}}}}"#,
        operator.access_key_id
    );
    parent.client.send_bytes(&Client::raw_frame(bad.as_bytes()));
    parent
        .client
        .expect_error(Some(id), ErrorCode::MalformedFrame, false);
    parent.credentials(&operator);
    parent.open(&config);

    let won = sealer.seal("Buyer2", "8271828", a, "1");
    let lots = vec![
        (
            "1",
            vec![
                bid("Buyer1", sealer.seal("Buyer1", "7314159.26", a, "1")),
                bid("Buyer2", won.clone()),
                bid("Buyer3", sealer.seal("Buyer3", "6626070.15", a, "1")),
            ],
        ),
        (
            "2",
            vec![
                bid("Buyer1", sealer.seal("Buyer1", "5772156.64", a, "2")),
                bid("Buyer2", sealer.seal("Buyer2", "5772156.64", a, "2")),
            ],
        ),
        (
            "3",
            vec![
                bid("Buyer1", sealer.seal("Buyer1", "9988776.655", a, "3")),
                bid("Buyer2", sealer.seal("Buyer2", "5551212.34", a, "4")),
                bid(
                    "Buyer3",
                    sealer.seal_as("Buyer1", "4242424.24", a, "3", "Buyer3"),
                ),
            ],
        ),
    ];
    let mut results = Vec::new();
    for (l, bids) in lots {
        results.push(parent.lot(lot_bids(l, bids)));
    }
    // A replay of the winning bid.
    let id = parent.send(lot_bids("9", vec![bid("Buyer2", won)]));
    parent
        .client
        .expect_error(Some(id), ErrorCode::ReplayedCiphertext, false);
    let name = |n: &str| BuyerName::new(n).unwrap();
    let dq = |b: &str, reason| Disqualified {
        buyer: name(b),
        reason,
    };
    assert_eq!(
        results,
        vec![
            LotResult {
                lot: lot("1"),
                outcome: Outcome::Winner {
                    buyer: name("Buyer2"),
                    price: None
                },
                disqualified: vec![],
            },
            LotResult {
                lot: lot("2"),
                outcome: Outcome::Tie {
                    buyers: vec![name("Buyer1"), name("Buyer2")],
                    price: None
                },
                disqualified: vec![],
            },
            LotResult {
                lot: lot("3"),
                outcome: Outcome::NoValidBid,
                disqualified: vec![
                    dq("Buyer1", Reason::InvalidAmount),
                    dq("Buyer2", Reason::Undecryptable),
                    dq("Buyer3", Reason::WrongKey),
                ],
            },
        ]
    );
    parent.close(&config, &results);
    enclave.wait_sessions_ended(1);
    let mut sent = String::from_utf8_lossy(&parent.client.received).into_owned();

    // A second session whose credentials KMS refuses (the right key id and token, a wrong
    // secret): the error that ends it passes on KMS's words, which must not carry a secret.
    let wrong = credentials(&operator.access_key_id, WRONG_SECRET, Some(TOKEN));
    let mut parent = Parent::new(Client::connect(&enclave), root_der, pcr0);
    parent.hello();
    parent.credentials(&wrong);
    parent.open(&config);
    let id = parent.send(lot_bids(
        "5",
        vec![bid("Buyer3", sealer.seal("Buyer3", "3141592.65", a, "5"))],
    ));
    let m = parent
        .client
        .expect_error(Some(id), ErrorCode::KmsCredentials, true);
    assert!(m.contains("InvalidSignatureException"), "{m}");
    parent.client.expect_eof();
    enclave.wait_sessions_ended(2);
    sent.push_str(&String::from_utf8_lossy(&parent.client.received));

    let enclave_log = enclave.log_text();
    let kms_log = std::fs::read_to_string(&emu.log).unwrap();
    // The captures are real: the frames, the session and the enclave's Decrypt calls are in
    // them.
    assert!(sent.contains(r#""closed""#), "{sent}");
    assert!(enclave_log.contains("session ended"), "{enclave_log}");
    assert!(
        kms_log.contains(
            "Decrypt by arn:aws:sts::111122223333:assumed-role/bidding-parent/i-0leakcheck -> 200"
        ),
        "{kms_log}"
    );
    let mut needles: HashMap<String, &str> = HashMap::new();
    for amount in [
        "7314159.26",
        "8271828",
        "6626070.15",
        "5772156.64",
        "9988776.655",
        "5551212.34",
        "4242424.24",
        "3141592.65",
    ] {
        for f in forms(amount) {
            needles.insert(f, "an amount");
        }
    }
    needles.insert(SECRET.to_owned(), "the secret access key");
    needles.insert(TOKEN.to_owned(), "the session token");
    needles.insert(WRONG_SECRET.to_owned(), "a (wrong) secret access key");
    for (what, text) in [
        ("the frames the enclave sent", &sent),
        ("the enclave's log", &enclave_log),
        ("the KMS emulator's log", &kms_log),
    ] {
        for (needle, kind) in &needles {
            assert!(
                !text.contains(needle.as_str()),
                "{what} contains {kind} ({needle}):\n{text}"
            );
        }
    }
}
