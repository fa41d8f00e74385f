//! Deterministic simulation: the parent's and the enclave's state machines driven against each
//! other in memory, with a scripted KMS and NSM, under random interleavings, byte splits,
//! out-of-order KMS answers, delays, credential refreshes and dropped connections, all chosen
//! by a seeded RNG. A failing seed replays exactly (proptest prints it).
//!
//! The scripted KMS stands in for the network service only; everything under test (framing,
//! both state machines, winner rules, output rendering, attestation checks) is the real code.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use bidding_core::amount::Amount;
use bidding_core::attestation::{DocumentFields, encode_document};
use bidding_core::auction::{Reason, RevealPolicy};
use bidding_core::cms::Plaintext;
use bidding_core::config::{AuctionConfig, BuyerSpec, Mode, sha256};
use bidding_core::credentials::{Credentials, Secret};
use bidding_core::manifest::{self, FileEntry, FileFormat, Manifest, SEAL_MARKER};
use bidding_core::names::{AuctionId, BuyerName, KeyArn, LotId, Region};
use bidding_core::session::enclave::{
    Action, DecryptJob, DecryptOutcome, EnclaveSession, EnclaveSettings, ReplayGuard,
};
use bidding_core::session::parent::{
    BuyerInput, EnclaveInfo, Event, Finished, ParentSession, ParentSettings, SessionError, Terms,
    order_inputs,
};
use bidding_core::wire::{
    ErrorCode, FrameDecoder, FromEnclave, Request, Response, decode_response,
};
use proptest::prelude::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::LazyLock;

const START: u64 = 1_900_000_000_000;
/// Distinctive amounts: the leak check searches every enclave frame for these digits.
const AMOUNTS: [&str; 5] = ["7314159", "7271828", "7161803", "7141421", "7314159.26"];
const SECRET: &str = "SIMSECRETwJalrXUtnFEMIK7MDENG";
const TOKEN: &str = "SIMTOKENFwoGZXIvYXdzEJr";

struct Chain {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    leaf: Vec<u8>,
    leaf_key: EcdsaKeyPair,
}

/// Signs with retries until the DER signature has the length of 48-byte r and s, so that every
/// certificate, and so every frame, has the same length in every run: byte splits chosen by
/// the seed then replay exactly.
struct FixedLength(KeyPair);
impl rcgen::PublicKeyData for FixedLength {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm()
    }
}
impl rcgen::SigningKey for FixedLength {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        loop {
            let sig = self.0.sign(msg)?;
            if sig.len() == 102 {
                return Ok(sig);
            }
        }
    }
}

static CHAIN: LazyLock<Chain> = LazyLock::new(|| {
    let params = |cn: &str, ca: IsCa, serial: u8| {
        let mut p = CertificateParams::new(Vec::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = ca;
        p.serial_number = Some(rcgen::SerialNumber::from(vec![serial]));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2060, 1, 1);
        p
    };
    let key = || FixedLength(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap());
    let root_key = key();
    let root_params = params("sim root", IsCa::Ca(BasicConstraints::Unconstrained), 1);
    let root = root_params.self_signed(&root_key).unwrap().der().to_vec();
    let root_issuer = Issuer::new(root_params, root_key);
    let int_key = key();
    let int_params = params(
        "sim intermediate",
        IsCa::Ca(BasicConstraints::Constrained(0)),
        2,
    );
    let intermediate = int_params
        .signed_by(&int_key, &root_issuer)
        .unwrap()
        .der()
        .to_vec();
    let int_issuer = Issuer::new(int_params, int_key);
    let leaf_key = key();
    let mut leaf_params = params("sim leaf", IsCa::ExplicitNoCa, 3);
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf = leaf_params
        .signed_by(&leaf_key, &int_issuer)
        .unwrap()
        .der()
        .to_vec();
    let leaf_key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P384_SHA384_FIXED_SIGNING,
        &leaf_key.0.serialize_der(),
    )
    .unwrap();
    Chain {
        root,
        intermediate,
        leaf,
        leaf_key,
    }
});

const PCR0: [u8; 48] = [0x5a; 48];

fn attest(now: u64, user_data: Vec<u8>, nonce: Vec<u8>) -> Vec<u8> {
    let fields = DocumentFields {
        module_id: "i-0123456789abcdef0-enc0123456789abcdef".into(),
        timestamp: now,
        pcrs: (0..16u8)
            .map(|i| (i, if i == 0 { PCR0.to_vec() } else { vec![0; 48] }))
            .collect(),
        certificate: CHAIN.leaf.clone(),
        cabundle: vec![CHAIN.root.clone(), CHAIN.intermediate.clone()],
        public_key: Some(vec![0x30; 294]),
        user_data: Some(user_data),
        nonce: Some(nonce),
    };
    encode_document(&fields, |tbs| {
        let sig = CHAIN.leaf_key.sign(&SystemRandom::new(), tbs)?;
        <[u8; 96]>::try_from(sig.as_ref()).map_err(|_| aws_lc_rs::error::Unspecified)
    })
    .unwrap()
}

/// What a scripted ciphertext holds: the key it was made under, its context, its plaintext.
/// (Plaintext as bytes would be as good; a string keeps failing seeds readable.)
#[derive(Serialize, Deserialize)]
struct FakeCiphertext {
    key: String,
    context: Option<BTreeMap<String, String>>,
    plaintext: String,
    /// Makes every ciphertext unique, as real ones are.
    salt: u64,
}

/// The scripted KMS: decides like KMS would from the job's KeyId and context. `denied` is a
/// key the operator's role may not use.
fn kms(job: &DecryptJob, denied: Option<&KeyArn>) -> DecryptOutcome {
    if denied == Some(&job.key_arn) {
        return DecryptOutcome::Fatal {
            code: ErrorCode::KmsAccessDenied,
            message: "scripted AccessDeniedException".into(),
        };
    }
    let Ok(ct) = serde_json::from_slice::<FakeCiphertext>(&job.ciphertext) else {
        return DecryptOutcome::Disqualified(Reason::Undecryptable);
    };
    if ct.key != job.key_arn.as_str() {
        return DecryptOutcome::Disqualified(Reason::WrongKey);
    }
    let opens = match &ct.context {
        Some(c) => *c == job.context,
        None => job.retry_without_context,
    };
    if !opens {
        return DecryptOutcome::Disqualified(Reason::Undecryptable);
    }
    DecryptOutcome::Plaintext(Plaintext::new(ct.plaintext.into_bytes().into()))
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: tiny, deterministic, good enough to pick interleavings.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    seed: u64,
    lots: usize,
    buyers: usize,
    window: usize,
    policy: RevealPolicy,
    /// Drop the connection after this many delivered chunks.
    drop_after: Option<u32>,
    /// KMS answers one bid with a fatal error.
    kms_fatal: bool,
    /// Credentials expire during the auction, so the parent must refresh them.
    short_credentials: bool,
    allow_no_context: bool,
    /// Buyers sealed the manifest (the default mode); otherwise unsealed.
    sealed: bool,
    /// An attack or fault on the sealed flow, chosen by the seed.
    tamper: Tamper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    None,
    /// One buyer's seal was made for another manifest.
    SealForAnotherManifest,
    /// One buyer's seal was made under another buyer's key.
    SealUnderWrongKey,
    /// One buyer's file changed after the manifest was made (the parent sends the new one).
    FileChangedAfterManifest,
    /// KMS denies access to one buyer's key (the operator's role lacks the permission).
    AccessDenied,
    /// The operator registers buyer 0 under a key of its own and makes that buyer's seal
    /// itself (it may Encrypt under its own key); the buyer's genuine file is sent. Finding 2
    /// of the sealed-means-sealed review: the bids must fail the auction, not be set aside.
    ForgedRegistration,
}

/// One buyer's bid as the test meant it: an amount, or the reason it must be set aside.
type Intended = (BuyerName, Result<Amount, Reason>);

struct Expected {
    bids: Vec<(LotId, Vec<Intended>)>,
}

fn arn(i: usize) -> KeyArn {
    KeyArn::new(format!("arn:aws:kms:us-east-1:111122223333:key/k{i}")).unwrap()
}

fn credentials(now: u64, short: bool) -> Credentials {
    Credentials {
        access_key_id: "ASIASIMULATION000001".into(),
        secret_access_key: Secret::new(SECRET),
        session_token: Some(Secret::new(TOKEN)),
        expiration: Some(now / 1000 + if short { 302 } else { 3600 }),
        region: Region::new("us-east-1").unwrap(),
    }
}

fn encode_ct(ct: &FakeCiphertext) -> Vec<u8> {
    serde_json::to_vec(ct).unwrap()
}

/// The buyers' files (the proof of concept's CSV), the manifest or terms, and every seal.
/// The image's limits, small: every open reserves (and writes) what they need.
fn small_limits() -> EnclaveSettings {
    EnclaveSettings {
        max_lots: 4096,
        max_bids: 4096,
        ..EnclaveSettings::default()
    }
}

fn mode(s: &Scenario) -> Mode {
    if s.sealed {
        Mode::Sealed
    } else {
        Mode::Unsealed
    }
}

fn build(s: &Scenario, rng: &mut Rng) -> (Terms, Vec<BuyerInput>, Expected) {
    let auction = AuctionId::new("sim-auction").unwrap();
    let rules = mode(s);
    let buyers: Vec<BuyerName> = (0..s.buyers)
        .map(|i| BuyerName::new(format!("Buyer{}", i + 1)).unwrap())
        .collect();
    let forged = s.tamper == Tamper::ForgedRegistration;
    let registered = |i: usize| if forged && i == 0 { arn(50) } else { arn(i) };
    let config = AuctionConfig::new(
        auction.clone(),
        buyers
            .iter()
            .enumerate()
            .map(|(i, b)| BuyerSpec {
                name: b.clone(),
                key_arn: registered(i),
            })
            .collect(),
        s.policy,
        s.allow_no_context,
    )
    .unwrap();
    let mut files: Vec<String> = vec!["[].contract,[].bid\n".to_owned(); s.buyers];
    let mut expected = Vec::new();
    for l in 0..s.lots {
        let lot = LotId::new(format!("L{}", l + 1)).unwrap();
        let mut exp = Vec::new();
        for (i, buyer) in buyers.iter().enumerate() {
            if rng.chance(15) {
                continue; // this buyer skips the lot
            }
            let mut key = arn(i).to_string();
            let mut context = Some(bidding_core::kms::bid_context(rules, &auction, &lot, buyer));
            let mut plaintext = AMOUNTS[rng.below(AMOUNTS.len() as u64) as usize].to_owned();
            let verdict = match rng.below(20) {
                0 => {
                    plaintext = "1e5".into();
                    Err(Reason::InvalidAmount)
                }
                // A bid under another key fails a sealed auction (the key binding is the
                // operator's word); `sealed_attacks_are_refused` plays that.
                1 if !s.sealed => {
                    key = arn((i + 1) % s.buyers.max(2)).to_string();
                    if key == arn(i).to_string() {
                        key = arn(99).to_string();
                    }
                    Err(Reason::WrongKey)
                }
                2 => {
                    // Made for another lot: KMS refuses the context.
                    context = Some(bidding_core::kms::bid_context(
                        rules,
                        &auction,
                        &LotId::new("elsewhere").unwrap(),
                        buyer,
                    ));
                    Err(Reason::Undecryptable)
                }
                3 => {
                    context = None;
                    if s.allow_no_context {
                        Ok(Amount::parse(plaintext.as_bytes()).unwrap())
                    } else {
                        Err(Reason::Undecryptable)
                    }
                }
                4 => {
                    // Padded, with the newline `echo` leaves: still the same amount.
                    let a = Amount::parse(plaintext.as_bytes()).unwrap();
                    plaintext = format!("{}\n", a.to_padded());
                    Ok(a)
                }
                _ => Ok(Amount::parse(plaintext.as_bytes()).unwrap()),
            };
            let ct = FakeCiphertext {
                key,
                context,
                plaintext,
                salt: rng.next(),
            };
            let b64 = base64::engine::general_purpose::STANDARD.encode(encode_ct(&ct));
            files[i].push_str(&format!("{lot},{b64}\n"));
            exp.push((buyer.clone(), verdict));
        }
        if !exp.is_empty() {
            expected.push((lot, exp));
        }
    }
    let files: Vec<Vec<u8>> = files.into_iter().map(String::into_bytes).collect();
    let terms = if s.sealed {
        let entries = buyers
            .iter()
            .zip(&files)
            .map(|(b, f)| FileEntry {
                buyer: b.clone(),
                bucket: "bids".into(),
                key: format!("{b}/encrypted.csv"),
                size: f.len() as u64,
                sha256: sha256(f),
                format: FileFormat::PerBid,
            })
            .collect();
        let m = Manifest::new(config, entries).unwrap();
        Terms::Sealed {
            bytes: m.canonical_bytes(),
            manifest: m,
        }
    } else {
        Terms::Unsealed(config)
    };
    let h = terms.digest();
    let victim = if forged {
        0
    } else {
        rng.below(s.buyers as u64) as usize
    };
    let inputs = buyers
        .iter()
        .zip(files)
        .enumerate()
        .map(|(i, (b, mut file))| {
            let mut key = registered(i).to_string();
            let mut digest = h;
            if i == victim {
                match s.tamper {
                    Tamper::SealForAnotherManifest => digest[0] ^= 1,
                    Tamper::SealUnderWrongKey => key = arn(i + 50).to_string(),
                    Tamper::FileChangedAfterManifest => file.extend_from_slice(b"L9999,AAAA\n"),
                    Tamper::None | Tamper::AccessDenied | Tamper::ForgedRegistration => {}
                }
            }
            let seal = FakeCiphertext {
                key,
                context: Some(manifest::seal_context(&auction, b, &digest)),
                plaintext: String::from_utf8(SEAL_MARKER.to_vec()).unwrap(),
                salt: rng.next(),
            };
            BuyerInput {
                buyer: b.clone(),
                file,
                seal: s.sealed.then(|| encode_ct(&seal)),
            }
        })
        .collect();
    (terms, inputs, Expected { bids: expected })
}

/// The reference outcome, written independently of `auction::decide`.
fn reference(
    bids: &[(BuyerName, Result<Amount, Reason>)],
    policy: RevealPolicy,
) -> (Vec<String>, Option<String>) {
    let valid: Vec<(&BuyerName, Amount)> = bids
        .iter()
        .filter_map(|(b, v)| v.ok().map(|a| (b, a)))
        .collect();
    let Some(max) = valid.iter().map(|(_, a)| *a).max() else {
        return (vec![], None);
    };
    let mut winners: Vec<String> = valid
        .iter()
        .filter(|(_, a)| *a == max)
        .map(|(b, _)| b.to_string())
        .collect();
    winners.sort();
    let second = {
        let mut amounts: Vec<Amount> = valid.iter().map(|(_, a)| *a).collect();
        amounts.sort_unstable_by(|a, b| b.cmp(a));
        amounts.get(1).copied()
    };
    let price = match policy {
        RevealPolicy::None => None,
        RevealPolicy::WinningBid => Some(max),
        RevealPolicy::SecondPrice => Some(second.unwrap_or(max)),
    };
    (winners, price.map(|p| p.to_string()))
}

enum End {
    Finished(Box<Finished>),
    Failed(SessionError),
}

fn run(s: Scenario) -> (End, Expected, Vec<u8>) {
    let mut rng = Rng(s.seed | 1);
    let (terms, inputs, expected) = build(&s, &mut rng);
    let denied =
        (s.tamper == Tamper::AccessDenied).then(|| arn(rng.below(s.buyers as u64) as usize));
    let mut now = START;
    let mut settings = ParentSettings::new(CHAIN.root.clone());
    settings.window = s.window;
    settings.expected_pcr0 = Some(PCR0.to_vec());
    // Small frames, so files travel in many chunks.
    settings.max_frame = 6144;
    // A hostile parent skips its own checks: the enclave must catch a changed file itself.
    let inputs = if s.tamper == Tamper::FileChangedAfterManifest {
        inputs
    } else {
        order_inputs(&terms, inputs).expect("honest inputs")
    };
    let mut parent = ParentSession::new(
        settings,
        terms,
        inputs,
        credentials(now, s.short_credentials),
        (0..32).map(|_| rng.next() as u8).collect(),
        now,
    );
    let enclave_settings = EnclaveSettings {
        max_frame: 6144,
        max_pending_bids: 8,
        rules: mode(&s),
        ..small_limits()
    };
    let seed = (rng.next() as u128 | (rng.next() as u128) << 64).to_le_bytes();
    let mut enclave = EnclaveSession::new(enclave_settings, ReplayGuard::new(1 << 20), now, seed);
    let mut to_enclave: VecDeque<u8> = VecDeque::new();
    let mut to_parent: VecDeque<u8> = VecDeque::new();
    let mut enclave_sent = Vec::new();
    let mut kms_jobs: Vec<DecryptJob> = Vec::new();
    let mut attest_jobs: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut chunks = 0u32;
    let mut dropped = false;
    let mut fatal_left = s.kms_fatal;
    let trace = std::env::var_os("SIM_TRACE").is_some();
    for _step in 0..200_000 {
        if let Some(b) = parent.poll_transmit() {
            to_enclave.extend(b);
        }
        if let Some(b) = enclave.poll_transmit() {
            enclave_sent.extend_from_slice(&b);
            to_parent.extend(b);
        }
        while let Some(a) = enclave.poll_action() {
            match a {
                Action::Attest {
                    ticket,
                    user_data,
                    nonce,
                } => attest_jobs.push((ticket, user_data, nonce)),
                Action::Decrypt(job) => kms_jobs.push(job),
                Action::UseCredentials(_) => {}
            }
        }
        while let Some(e) = parent.poll_event() {
            if trace {
                eprintln!("t={} parent event {e:?}", now - START);
            }
            match e {
                Event::Finished(f) => return (End::Finished(f), expected, enclave_sent),
                Event::Failed(err) => return (End::Failed(err), expected, enclave_sent),
                Event::NeedCredentials => parent.refresh_credentials(credentials(now, false), now),
                Event::Connected(_) | Event::Sealed | Event::Progress { .. } => {}
            }
        }
        if dropped {
            continue;
        }
        if s.drop_after.is_some_and(|d| chunks >= d) {
            dropped = true;
            enclave.handle_eof();
            parent.handle_eof();
            continue;
        }
        // Pick something that can happen.
        match rng.below(6) {
            0 | 1 if !to_enclave.is_empty() => {
                let n = 1 + rng.below(to_enclave.len() as u64) as usize;
                let bytes: Vec<u8> = to_enclave.drain(..n).collect();
                chunks += 1;
                if trace {
                    eprintln!(
                        "t={} to enclave {}",
                        now - START,
                        String::from_utf8_lossy(&bytes)
                            .chars()
                            .take(120)
                            .collect::<String>()
                    );
                }
                if enclave.wants_input() || rng.chance(10) {
                    enclave.handle_input(&bytes, now);
                } else {
                    // Backpressure: the bytes wait in the socket.
                    for b in bytes.into_iter().rev() {
                        to_enclave.push_front(b);
                    }
                }
            }
            2 if !to_parent.is_empty() => {
                let n = 1 + rng.below(to_parent.len() as u64) as usize;
                let bytes: Vec<u8> = to_parent.drain(..n).collect();
                chunks += 1;
                if trace {
                    eprintln!(
                        "t={} to parent {}",
                        now - START,
                        String::from_utf8_lossy(&bytes)
                            .chars()
                            .take(120)
                            .collect::<String>()
                    );
                }
                parent.handle_input(&bytes, now);
            }
            3 if !kms_jobs.is_empty() => {
                // KMS answers out of order.
                let job = kms_jobs.swap_remove(rng.below(kms_jobs.len() as u64) as usize);
                let outcome = if fatal_left && rng.chance(30) {
                    fatal_left = false;
                    DecryptOutcome::Fatal {
                        code: ErrorCode::KmsUnavailable,
                        message: "scripted outage".into(),
                    }
                } else {
                    kms(&job, denied.as_ref())
                };
                enclave.decrypted(job.ticket, outcome);
            }
            4 if !attest_jobs.is_empty() => {
                let (ticket, user_data, nonce) = attest_jobs.remove(0);
                enclave.attested(ticket, Ok(attest(now, user_data, nonce)));
            }
            _ => {
                now += rng.below(50);
                parent.handle_timeout(now);
                enclave.handle_timeout(now);
            }
        }
    }
    panic!("seed {}: no end after 200,000 steps", s.seed);
}

/// Every enclave frame in order.
fn enclave_frames(bytes: &[u8]) -> Vec<FromEnclave> {
    let mut dec = FrameDecoder::new(1 << 20);
    let mut input = bytes;
    let mut out = Vec::new();
    while let Ok(Some(f)) = dec.decode(&mut input) {
        out.push(decode_response(1, &f).unwrap());
    }
    out
}

/// `output.json`'s lots: (lot, winners, price, set-aside (buyer, reason)).
type JsonLot = (String, Vec<String>, Option<String>, Vec<(String, String)>);

fn json_lots(json: &[u8]) -> Vec<JsonLot> {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    v["lots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let winners = match l["result"].as_str().unwrap() {
                "winner" => vec![l["winner"].as_str().unwrap().to_owned()],
                "tie" => l["tied"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_str().unwrap().to_owned())
                    .collect(),
                _ => vec![],
            };
            let set_aside = l["disqualified"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .map(|x| {
                            (
                                x["buyer"].as_str().unwrap().to_owned(),
                                x["reason"].as_str().unwrap().to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                l["lot"].as_str().unwrap().to_owned(),
                winners,
                l["price"].as_str().map(str::to_owned),
                set_aside,
            )
        })
        .collect()
}

fn check(s: Scenario) -> Result<(), TestCaseError> {
    let (end, expected, enclave_sent) = run(s);
    let text = String::from_utf8_lossy(&enclave_sent);
    // Whatever happened, no amount left the enclave unless the policy reveals prices.
    if s.policy == RevealPolicy::None {
        for a in AMOUNTS {
            prop_assert!(
                !text.contains(a),
                "seed {}: amount {a} in an enclave frame",
                s.seed
            );
        }
    }
    for secret in [SECRET, TOKEN] {
        prop_assert!(!text.contains(secret));
    }
    // Nothing about any lot leaves before close: until the result, only acknowledgements.
    let frames = enclave_frames(&enclave_sent);
    let first_result = frames
        .iter()
        .position(|f| matches!(f.msg, Response::ResultChunk(_) | Response::Closed(_)))
        .unwrap_or(frames.len());
    for f in &frames[..first_result] {
        prop_assert!(
            matches!(
                f.msg,
                Response::Hello(_)
                    | Response::Credentials(_)
                    | Response::AuctionOpened(_)
                    | Response::SealAccepted(_)
                    | Response::ChunkAccepted(_)
                    | Response::Error(_)
            ),
            "seed {}: {:?} before close",
            s.seed,
            f.msg
        );
    }
    let faults = s.drop_after.is_some() || s.kms_fatal;
    match end {
        End::Finished(f) => {
            // A forged registration goes unnoticed only when the buyer bid on nothing, so
            // nothing of theirs could be dropped.
            let buyer0_bid = expected
                .bids
                .iter()
                .any(|(_, bids)| bids.iter().any(|(b, _)| b.as_str() == "Buyer1"));
            prop_assert!(
                s.tamper == Tamper::None || (s.tamper == Tamper::ForgedRegistration && !buyer0_bid),
                "seed {}: finished despite {:?}",
                s.seed,
                s.tamper
            );
            // Only a complete, correct result may finish.
            let lots = json_lots(&f.output_json);
            prop_assert_eq!(lots.len(), expected.bids.len(), "seed {}", s.seed);
            for (lot, got, got_price, set_aside) in &lots {
                let (_, bids) = expected
                    .bids
                    .iter()
                    .find(|(l, _)| l.as_str() == lot)
                    .expect("lot was sent");
                let (winners, price) = reference(bids, s.policy);
                prop_assert_eq!(got, &winners, "seed {} lot {}", s.seed, lot);
                prop_assert_eq!(got_price, &price, "seed {} lot {}", s.seed, lot);
                for (buyer, v) in bids {
                    let reason = set_aside
                        .iter()
                        .find(|(b, _)| b == buyer.as_str())
                        .map(|(_, r)| r.clone());
                    prop_assert_eq!(
                        reason,
                        v.err().map(|r| r.code().to_owned()),
                        "seed {} lot {} buyer {}",
                        s.seed,
                        lot,
                        buyer
                    );
                }
            }
            let csv = String::from_utf8(f.output_csv.clone()).unwrap();
            prop_assert!(csv.starts_with("Property,Result"));
            prop_assert_eq!(csv.lines().count(), expected.bids.len() + 1);
            prop_assert_eq!(
                f.mode,
                if s.sealed {
                    bidding_core::config::Mode::Sealed
                } else {
                    bidding_core::config::Mode::Unsealed
                }
            );
        }
        End::Failed(e) => {
            let refused = match s.tamper {
                Tamper::None => false,
                Tamper::SealForAnotherManifest | Tamper::SealUnderWrongKey => {
                    matches!(
                        &e,
                        SessionError::Enclave {
                            code: ErrorCode::SealRefused,
                            ..
                        }
                    )
                }
                Tamper::FileChangedAfterManifest => {
                    matches!(
                        &e,
                        SessionError::Enclave {
                            code: ErrorCode::FileMismatch,
                            ..
                        }
                    )
                }
                Tamper::AccessDenied => {
                    matches!(
                        &e,
                        SessionError::Enclave {
                            code: ErrorCode::KmsAccessDenied,
                            ..
                        }
                    )
                }
                Tamper::ForgedRegistration => {
                    matches!(
                        &e,
                        SessionError::Enclave {
                            code: ErrorCode::KeyBinding,
                            ..
                        }
                    )
                }
            };
            prop_assert!(
                faults || refused,
                "seed {}: failed without a fault ({:?}): {e}",
                s.seed,
                s.tamper
            );
        }
    }
    Ok(())
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        any::<u64>(),
        1usize..25,
        1usize..6,
        1usize..10,
        prop_oneof![
            Just(RevealPolicy::None),
            Just(RevealPolicy::WinningBid),
            Just(RevealPolicy::SecondPrice)
        ],
        prop_oneof![3 => Just(None), 1 => (0u32..60).prop_map(Some)],
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.2),
        any::<bool>(),
        prop::bool::weighted(0.8),
        prop_oneof![
            6 => Just(Tamper::None),
            1 => Just(Tamper::SealForAnotherManifest),
            1 => Just(Tamper::SealUnderWrongKey),
            1 => Just(Tamper::FileChangedAfterManifest),
            1 => Just(Tamper::AccessDenied),
            1 => Just(Tamper::ForgedRegistration),
        ],
    )
        .prop_map(
            |(
                seed,
                lots,
                buyers,
                window,
                policy,
                drop_after,
                kms_fatal,
                short_credentials,
                allow_no_context,
                sealed,
                tamper,
            )| Scenario {
                seed,
                lots,
                buyers,
                window,
                policy,
                drop_after,
                kms_fatal,
                short_credentials,
                // A sealed auction takes only bids with `rules=sealed` in their context.
                allow_no_context: allow_no_context && !sealed,
                sealed,
                // Seal attacks need seals; the unsealed mode has none to attack.
                tamper: if sealed || tamper == Tamper::AccessDenied {
                    tamper
                } else {
                    Tamper::None
                },
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn random_interactions(s in scenario()) {
        check(s)?;
    }
}

/// Replays one scenario twice and compares every byte the enclave sent: same seed, same run.
#[test]
fn a_seed_replays_exactly() {
    let s = Scenario {
        seed: 77,
        lots: 20,
        buyers: 3,
        window: 4,
        policy: RevealPolicy::WinningBid,
        drop_after: None,
        kms_fatal: false,
        short_credentials: true,
        allow_no_context: false,
        sealed: true,
        tamper: Tamper::None,
    };
    // ECDSA signatures are randomised, so attestation documents are compared by length only;
    // every other byte of every frame must be identical.
    let frames = |bytes: Vec<u8>| -> Vec<FromEnclave> {
        let mut dec = FrameDecoder::new(1 << 20);
        let mut input = &bytes[..];
        let mut out = Vec::new();
        while let Some(f) = dec.decode(&mut input).unwrap() {
            let mut m = decode_response(1, &f).unwrap();
            match &mut m.msg {
                Response::Hello(h) => h.attestation = vec![0; h.attestation.len()],
                Response::Closed(c) => c.attestation = vec![0; c.attestation.len()],
                _ => {}
            }
            out.push(m);
        }
        out
    };
    let first = frames(run(s).2);
    assert!(first.len() > 10, "{} frames", first.len());
    assert_eq!(first, frames(run(s).2));
}

#[test]
fn fault_free_runs_always_finish_correctly() {
    for seed in 1..=12u64 {
        let s = Scenario {
            seed,
            lots: 40,
            buyers: 4,
            window: 7,
            policy: RevealPolicy::None,
            drop_after: None,
            kms_fatal: false,
            short_credentials: seed % 3 == 0,
            sealed: seed % 4 != 0,
            allow_no_context: seed % 2 == 0 && seed % 4 == 0,
            tamper: Tamper::None,
        };
        let (end, _, _) = run(s);
        assert!(
            matches!(end, End::Finished(_)),
            "seed {seed} did not finish"
        );
        check(s).unwrap();
    }
}

#[test]
fn a_dropped_connection_never_finishes() {
    for seed in 1..=12u64 {
        let s = Scenario {
            seed,
            lots: 30,
            buyers: 3,
            window: 5,
            policy: RevealPolicy::None,
            drop_after: Some(seed as u32 * 3),
            kms_fatal: false,
            short_credentials: false,
            allow_no_context: false,
            sealed: true,
            tamper: Tamper::None,
        };
        let (end, _, _) = run(s);
        match end {
            End::Failed(SessionError::Disconnected { .. }) => {}
            End::Failed(e) => panic!("seed {seed}: unexpected failure {e}"),
            End::Finished(_) => panic!("seed {seed}: finished despite the drop"),
        }
    }
}

/// Every attack on the sealed flow is refused, for every seed, and nothing leaves.
#[test]
fn sealed_attacks_are_refused() {
    for tamper in [
        Tamper::SealForAnotherManifest,
        Tamper::SealUnderWrongKey,
        Tamper::FileChangedAfterManifest,
        Tamper::AccessDenied,
        Tamper::ForgedRegistration,
    ] {
        for seed in 1..=6u64 {
            let s = Scenario {
                seed,
                lots: 12,
                buyers: 3,
                window: 3,
                policy: RevealPolicy::WinningBid,
                drop_after: None,
                kms_fatal: false,
                short_credentials: false,
                allow_no_context: false,
                sealed: true,
                tamper,
            };
            let (end, _, sent) = run(s);
            assert!(
                matches!(end, End::Failed(SessionError::Enclave { .. })),
                "seed {seed} {tamper:?}: not refused by the enclave"
            );
            let frames = enclave_frames(&sent);
            assert!(
                !frames
                    .iter()
                    .any(|f| matches!(f.msg, Response::ResultChunk(_) | Response::Closed(_))),
                "seed {seed} {tamper:?}: a result left the enclave"
            );
            check(s).unwrap();
        }
    }
}

/// A rerun of the same manifest gives the same bytes: nothing a parent learns from running it
/// again.
#[test]
fn reruns_of_one_manifest_give_the_same_bytes() {
    let s = Scenario {
        seed: 5,
        lots: 30,
        buyers: 3,
        window: 4,
        policy: RevealPolicy::SecondPrice,
        drop_after: None,
        kms_fatal: false,
        short_credentials: false,
        allow_no_context: false,
        sealed: true,
        tamper: Tamper::None,
    };
    let out = |s: Scenario| match run(s).0 {
        End::Finished(f) => (f.output_csv, f.output_json),
        End::Failed(e) => panic!("{e}"),
    };
    let first = out(s);
    // Another interleaving of the same inputs.
    let mut t = s;
    t.window = 1;
    assert_eq!(first, out(s));
    assert_eq!(first, out(t));
}

/// One hello exchange, the parent stopping after it (`hello_only`): the enclave's attestation
/// documents are made by `attest_with`. Returns the parent's events and checks that nothing
/// followed the hello.
fn hello_exchange(
    settings: ParentSettings,
    attest_with: impl Fn(u64, Vec<u8>, Vec<u8>) -> Vec<u8>,
) -> (Option<EnclaveInfo>, Option<SessionError>) {
    hello_exchange_with(settings, Mode::Sealed, attest_with)
}

/// [`hello_exchange`] with an enclave of rule set `rules` (the parent's terms are sealed).
fn hello_exchange_with(
    mut settings: ParentSettings,
    rules: Mode,
    attest_with: impl Fn(u64, Vec<u8>, Vec<u8>) -> Vec<u8>,
) -> (Option<EnclaveInfo>, Option<SessionError>) {
    let s = Scenario {
        seed: 5,
        lots: 3,
        buyers: 2,
        window: 4,
        policy: RevealPolicy::None,
        drop_after: None,
        kms_fatal: false,
        short_credentials: false,
        allow_no_context: false,
        sealed: true,
        tamper: Tamper::None,
    };
    let mut rng = Rng(s.seed);
    let (terms, _, _) = build(&s, &mut rng);
    let now = START;
    settings.hello_only = true;
    let mut parent = ParentSession::new(
        settings,
        terms,
        Vec::new(),
        credentials(now, false),
        vec![7; 32],
        now,
    );
    let enclave_settings = EnclaveSettings {
        rules,
        ..small_limits()
    };
    let mut enclave = EnclaveSession::new(enclave_settings, ReplayGuard::new(16), now, [5; 16]);
    let mut to_enclave = Vec::new();
    while let Some(b) = parent.poll_transmit() {
        to_enclave.extend(b);
    }
    enclave.handle_input(&to_enclave, now);
    while let Some(a) = enclave.poll_action() {
        match a {
            Action::Attest {
                ticket,
                user_data,
                nonce,
            } => enclave.attested(ticket, Ok(attest_with(now, user_data, nonce))),
            other => panic!("the enclave did more than attest its hello: {other:?}"),
        }
    }
    while let Some(b) = enclave.poll_transmit() {
        parent.handle_input(&b, now);
    }
    let mut connected = None;
    let mut failed = None;
    while let Some(e) = parent.poll_event() {
        match e {
            Event::Connected(info) => connected = Some(info),
            Event::Failed(e) => failed = Some(e),
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert!(!parent.is_running());
    assert_eq!(parent.poll_transmit(), None, "nothing after the hello");
    assert_eq!(parent.poll_timeout(), None);
    enclave.handle_eof();
    assert!(enclave.is_ended());
    assert_eq!(enclave.end_reason(), Some("parent disconnected"));
    assert!(enclave.poll_action().is_none());
    (connected, failed)
}

/// A dry run's check of the enclave: the hello is verified (PCR0 included), then the parent
/// stops. Nothing after the hello is sent, credentials least, and the enclave takes the end
/// of the session as an ordinary disconnect.
#[test]
fn hello_only_sends_nothing_after_the_hello() {
    for (pcr0, connects) in [(PCR0.to_vec(), true), (vec![0x42; 48], false)] {
        let mut settings = ParentSettings::new(CHAIN.root.clone());
        settings.expected_pcr0 = Some(pcr0);
        let (connected, failed) = hello_exchange(settings, attest);
        assert_eq!(
            connected.is_some_and(|info| info.pcr0 == PCR0),
            connects,
            "{failed:?}"
        );
        if !connects {
            assert!(
                matches!(failed, Some(SessionError::Pcr0Mismatch { .. })),
                "{failed:?}"
            );
        }
    }
}

/// The hello states the image's rule set, and the parent refuses an enclave of the other rule
/// set, or one that states none (the first release's `SBH1`), before it sends credentials.
#[test]
fn the_parent_refuses_an_image_of_another_rule_set_before_credentials() {
    let settings = || {
        let mut s = ParentSettings::new(CHAIN.root.clone());
        s.expected_pcr0 = Some(PCR0.to_vec());
        s
    };
    let (connected, failed) = hello_exchange_with(settings(), Mode::Sealed, attest);
    assert!(connected.is_some(), "{failed:?}");
    let (connected, failed) = hello_exchange_with(settings(), Mode::Unsealed, attest);
    assert!(connected.is_none());
    let e = failed.expect("refused");
    assert!(
        matches!(
            e,
            SessionError::RuleSet {
                wanted: Mode::Sealed,
                found: Mode::Unsealed
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "the enclave is the unsealed image (it serves unsealed auctions only), but this auction is sealed: it needs the sealed image (it serves sealed auctions only); nothing was sent to the enclave"
    );
    let (connected, failed) = hello_exchange_with(settings(), Mode::Sealed, |now, _, nonce| {
        attest(now, b"SBH1".to_vec(), nonce)
    });
    assert!(connected.is_none());
    assert!(
        matches!(&failed, Some(SessionError::Attestation { what: "hello", reason }) if reason.contains("states no rule set")),
        "{failed:?}"
    );
}

/// Drives an enclave session through hello and credentials, then sends `open`; returns what
/// came back after the open.
fn open_with(rules: Mode, open: Request) -> Vec<FromEnclave> {
    let now = START;
    let settings = EnclaveSettings {
        rules,
        ..small_limits()
    };
    let mut enclave = EnclaveSession::new(settings, ReplayGuard::new(16), now, [6; 16]);
    let send = |enclave: &mut EnclaveSession, id: u64, msg: Request| {
        let mut frame = Vec::new();
        bidding_core::wire::encode_frame(
            &bidding_core::wire::encode_request(&bidding_core::wire::ToEnclave { id, msg }),
            usize::MAX,
            &mut frame,
        )
        .unwrap();
        enclave.handle_input(&frame, now);
        while let Some(a) = enclave.poll_action() {
            if let Action::Attest {
                ticket,
                user_data,
                nonce,
            } = a
            {
                enclave.attested(ticket, Ok(attest(now, user_data, nonce)));
            }
        }
        enclave_frames(&enclave.poll_transmit().unwrap_or_default())
    };
    send(
        &mut enclave,
        1,
        Request::Hello(bidding_core::wire::Hello {
            protocol: bidding_core::wire::PROTOCOL_VERSION,
            nonce: vec![7; 32],
        }),
    );
    send(
        &mut enclave,
        2,
        Request::Credentials(credentials(now, false)),
    );
    send(&mut enclave, 3, open)
}

/// One image, one rule set: the sealed image refuses `open_unsealed` (so an operator cannot
/// run a sealed auction's bids on terms of its own), and the unsealed image refuses
/// `open_sealed`, each with an error naming the image's rule set.
#[test]
fn each_image_opens_only_its_own_rule_set() {
    let s = Scenario {
        seed: 3,
        lots: 2,
        buyers: 2,
        window: 2,
        policy: RevealPolicy::WinningBid,
        drop_after: None,
        kms_fatal: false,
        short_credentials: false,
        allow_no_context: false,
        sealed: true,
        tamper: Tamper::None,
    };
    let (terms, _, _) = build(&s, &mut Rng(3));
    let Terms::Sealed { bytes, manifest } = terms else {
        unreachable!()
    };
    let sealed = Request::OpenSealed(bidding_core::wire::OpenSealed { manifest: bytes });
    let unsealed = Request::OpenUnsealed(manifest.terms().clone());
    for (rules, open, refused) in [
        (Mode::Sealed, unsealed.clone(), true),
        (Mode::Unsealed, sealed.clone(), true),
        (Mode::Sealed, sealed, false),
        (Mode::Unsealed, unsealed, false),
    ] {
        let replies = open_with(rules, open);
        match &replies[..] {
            [
                FromEnclave {
                    id: Some(3),
                    msg: Response::Error(e),
                },
            ] if refused => {
                assert_eq!((e.code, e.fatal), (ErrorCode::WrongRuleSet, true));
                assert!(e.message.contains(rules.image()), "{}", e.message);
            }
            [
                FromEnclave {
                    id: Some(3),
                    msg: Response::AuctionOpened(o),
                },
            ] if !refused => assert_eq!(o.mode, rules),
            other => panic!("{rules:?}: {other:?}"),
        }
    }
}

/// `attest`'s document as QEMU's emulated NSM would write it: the same payload in QEMU's
/// unsigned envelope (`{1: -1}`, `{}`, 64 zero bytes); `signature` replaces the zeros.
fn qemu_document(now: u64, user_data: Vec<u8>, nonce: Vec<u8>, signature: Vec<u8>) -> Vec<u8> {
    use ciborium::value::Value;
    let signed = attest(now, user_data, nonce);
    let Ok(Value::Array(mut items)) = ciborium::de::from_reader::<Value, _>(signed.as_slice())
    else {
        panic!("encode_document wrote no COSE array")
    };
    items[0] = Value::Bytes(vec![0xa1, 0x01, 0x20]);
    items[1] = Value::Map(Vec::new());
    items[3] = Value::Bytes(signature);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&Value::Array(items), &mut out).unwrap();
    out
}

/// QEMU's unsigned documents pass the parent's checks only when it is told to expect QEMU
/// (`accept_qemu_unsigned`) in a dev run (`allow_dev`); the nonce, user data and PCR0 are still
/// checked, and a real document still verifies as before.
#[test]
fn qemu_unsigned_documents_only_with_the_option_in_a_dev_run() {
    let qemu = |now, user_data, nonce| qemu_document(now, user_data, nonce, vec![0; 64]);
    let settings = |allow_dev, accept_qemu_unsigned, pcr0: &[u8]| {
        let mut s = ParentSettings::new(CHAIN.root.clone());
        s.allow_dev = allow_dev;
        s.accept_qemu_unsigned = accept_qemu_unsigned;
        s.expected_pcr0 = Some(pcr0.to_vec());
        s
    };
    for (allow_dev, accept) in [(false, false), (true, false), (false, true)] {
        let (connected, failed) = hello_exchange(settings(allow_dev, accept, &PCR0), qemu);
        assert!(
            connected.is_none(),
            "allow_dev {allow_dev}, accept {accept}"
        );
        assert!(
            matches!(&failed, Some(SessionError::Attestation { what: "hello", reason })
                if !reason.contains("QEMU")),
            "{failed:?}"
        );
    }
    let (connected, failed) = hello_exchange(settings(true, true, &PCR0), qemu);
    assert_eq!(connected.map(|i| i.pcr0), Some(PCR0.to_vec()), "{failed:?}");

    let (connected, failed) = hello_exchange(settings(true, true, &[0x42; 48]), qemu);
    assert!(connected.is_none());
    assert!(
        matches!(failed, Some(SessionError::Pcr0Mismatch { .. })),
        "{failed:?}"
    );
    // The nonce is still this session's.
    let stale = |now, user_data, _nonce| qemu_document(now, user_data, vec![9; 32], vec![0; 64]);
    let (connected, failed) = hello_exchange(settings(true, true, &PCR0), stale);
    assert!(connected.is_none());
    assert!(
        matches!(&failed, Some(SessionError::Attestation { reason, .. }) if reason.contains("nonce")),
        "{failed:?}"
    );
    // Anything but QEMU's exact envelope is refused, and says why.
    let forged = |now, user_data, nonce| qemu_document(now, user_data, nonce, vec![1; 64]);
    let (connected, failed) = hello_exchange(settings(true, true, &PCR0), forged);
    assert!(connected.is_none());
    assert!(
        matches!(&failed, Some(SessionError::Attestation { reason, .. })
            if reason.contains("nor is it QEMU's unsigned document")),
        "{failed:?}"
    );
    // A real document still verifies with the option on.
    let (connected, failed) = hello_exchange(settings(true, true, &PCR0), attest);
    assert_eq!(connected.map(|i| i.pcr0), Some(PCR0.to_vec()), "{failed:?}");
}
