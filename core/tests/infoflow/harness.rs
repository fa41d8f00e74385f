//! The information-flow search's pieces (issue 21, DESIGN §2 "Information flow,
//! machine-checked"), shared by `core/tests/infoflow/main.rs` (a property test and the
//! regression cases) and the `infoflow` cargo-fuzz target, which include this file.
//!
//! - **Two worlds** that differ only in one victim's amounts (or, for an envelope file, in
//!   which lots it names), chosen so that the auction every buyer sealed, M, has the same
//!   result in both. Buyers: the victim V, an honest buyer H, and the operator's own sybil S.
//! - **A model KMS** that enforces key policies as real KMS does for this project: the key
//!   named by `KeyId` must be the ciphertext's (IncorrectKeyException), the operator's role may
//!   decrypt a buyer's key only with a Recipient whose PCR0 the key policy names
//!   (AccessDeniedException), and the encryption context must be the ciphertext's
//!   (InvalidCiphertextException). Only a key's owner may Encrypt under it; the operator owns
//!   its sybil's key and a spare one, so it can make any seal under those.
//! - **The operator** runs any number of sessions of three images: the sealed image and the
//!   unsealed image (the real `EnclaveSession`, built here with both rule sets), and a model
//!   of the first release ("legacy": both modes, context `{auction, lot, buyer}`), which the
//!   search treats as a decryption oracle that shows whatever it opens. It chooses the terms
//!   and manifests (its own, for any keys), the seals (genuine ones it was given, forged ones
//!   under keys it holds), the files and their order and chunking (genuine, truncated,
//!   rearranged), the order KMS answers come in, throttling and lost connections (retries, by
//!   the driver's own rules), credentials, restarts, and where to abort.
//! - **The observer** records everything the operator sees: every frame from every session
//!   (decoded and normalized: digests of files and manifests the operator itself holds become
//!   names, since it can compute them), the number, order and sizes of the KMS requests and
//!   answers it relays, the step at which each session ends, and the heap's growth and peak
//!   in every call into the enclave's code (a counting allocator). The search asserts that
//!   this record is identical in both worlds.
//! - **Integrity**: whenever a session closes, each honest buyer's own check
//!   (`bidding_core::verify::check_buyer`, what `bidctl verify --buyer --key-id --bids` runs)
//!   either refuses the result, or the result is M's, with every row of the buyer's file
//!   counted as written.
//!
//! Time is outside the model (DESIGN §2 says what timing still shows).

#![allow(dead_code)]

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use bidding_core::amount::Amount;
use bidding_core::attestation::{DocumentFields, VerifyAt, encode_document};
use bidding_core::auction::{self, RevealPolicy, Verdict};
use bidding_core::bidfile::{self, PlaintextRow};
use bidding_core::cms::Plaintext;
use bidding_core::config::{self, AuctionConfig, BuyerSpec, Mode, ResultCommitment};
use bidding_core::credentials::{Credentials, Secret};
use bidding_core::esdk::{self, Encryptor};
use bidding_core::kms::{self, DecryptRequest, EncodedRecipient};
use bidding_core::manifest::{self, FileEntry, FileFormat, Manifest, SEAL_MARKER};
use bidding_core::names::{AuctionId, BuyerName, KeyArn, LotId, Region};
use bidding_core::output::{self, FileSummary, Report};
use bidding_core::seal_record::{SealEntry, SealRecord};
use bidding_core::session::decrypt::{DecryptAttempts, DecryptJob, DecryptOutcome, Step};
use bidding_core::session::enclave::{Action, EnclaveSession, EnclaveSettings, ReplayGuard};
use bidding_core::verify::{self, BuyerView, Expected};
use bidding_core::wire::{
    self, Close, FileChunk, FrameDecoder, FromEnclave, Hello, OpenSealed, Request, Response, Seal,
    ToEnclave,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

// ---------------------------------------------------------------------------------------
// The counting allocator: live bytes and their peak, per thread, so that parallel tests do
// not mix. Each binary that includes this file installs it as its global allocator.

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

pub struct Counting;

fn add(n: isize) {
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns what it did to this thread's heap: (net bytes, peak growth).
fn measured<T>(f: impl FnOnce() -> T) -> (T, (isize, isize)) {
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let out = f();
    let after = LIVE.with(Cell::get);
    let peak = PEAK.with(Cell::get);
    (out, (after - before, peak - before))
}

// ---------------------------------------------------------------------------------------
// Names and constants.

pub const AUCTION: &str = "flow";
pub const OTHER_AUCTION: &str = "flow-2";
pub const LOTS: [&str; 4] = ["1", "2", "3", "4"];
const NOW: u64 = 1_900_000_000_000;
const ACCOUNT_V: &str = "444455556666";
const ACCOUNT_H: &str = "777788889999";
const ACCOUNT_OP: &str = "111122223333";

/// The images the operator can run. Their PCR0s are what key policies name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Image {
    Sealed,
    Unsealed,
    /// A model of the first release: both modes, context `{auction, lot, buyer}`.
    Legacy,
}

impl Image {
    pub fn pcr0(self) -> [u8; 48] {
        match self {
            Image::Sealed => [0x51; 48],
            Image::Unsealed => [0x55; 48],
            Image::Legacy => [0x1e; 48],
        }
    }
}

/// The buyers' slots: the victim, the honest buyer, the operator's sybil.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Who {
    V,
    H,
    S,
}

impl Who {
    pub fn name(self) -> BuyerName {
        BuyerName::new(match self {
            Who::V => "Victim",
            Who::H => "Honest",
            Who::S => "Sybil",
        })
        .unwrap()
    }
}

/// The keys: each buyer's, and a spare one the operator owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    V,
    H,
    S,
    Spare,
}

impl Key {
    pub fn arn(self) -> KeyArn {
        let (account, id) = match self {
            Key::V => (ACCOUNT_V, "victim"),
            Key::H => (ACCOUNT_H, "honest"),
            Key::S => (ACCOUNT_OP, "sybil"),
            Key::Spare => (ACCOUNT_OP, "spare"),
        };
        KeyArn::new(format!("arn:aws:kms:us-east-1:{account}:key/{id}")).unwrap()
    }
    fn index(self) -> u8 {
        self as u8
    }
    fn from_index(i: u8) -> Option<Key> {
        [Key::V, Key::H, Key::S, Key::Spare]
            .get(usize::from(i))
            .copied()
    }
    /// Keys whose Encrypt the operator may call (its own).
    pub fn operators(self) -> bool {
        matches!(self, Key::S | Key::Spare)
    }
}

// ---------------------------------------------------------------------------------------
// The model KMS.

/// Who calls KMS: the operator's role (the enclave signs with its credentials), or a buyer
/// making bids and seals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Operator,
    Owner,
}

pub struct ModelKms {
    /// The images each key's policy lets the operator's role decrypt for.
    keys: HashMap<Key, Vec<Image>>,
    /// Every ciphertext made: its key, its context (as AAD) and its plaintext. A ciphertext
    /// is an ideal one: bytes that depend on nothing but its length and when it was made, so
    /// that the two worlds' files are the same bytes and everything the operator computes
    /// from a ciphertext is the same in both; what differs is only what KMS would return.
    made: HashMap<Vec<u8>, (Key, Vec<u8>, Vec<u8>)>,
    /// Deterministic nonces: the same in both worlds.
    counter: u64,
    seed: u64,
}

/// What a model KMS Decrypt found.
pub enum KmsError {
    IncorrectKey,
    AccessDenied,
    InvalidCiphertext,
    Credentials,
}

impl KmsError {
    fn kind(&self) -> &'static str {
        match self {
            KmsError::IncorrectKey => "IncorrectKeyException",
            KmsError::AccessDenied => "AccessDeniedException",
            KmsError::InvalidCiphertext => "InvalidCiphertextException",
            KmsError::Credentials => "UnrecognizedClientException",
        }
    }
}

fn context_aad(context: Option<&BTreeMap<String, String>>) -> Vec<u8> {
    serde_json::to_vec(&context.cloned().unwrap_or_default()).unwrap()
}

impl ModelKms {
    fn new(seed: u64, victim_trusts: &[Image]) -> ModelKms {
        let all = vec![Image::Sealed, Image::Unsealed, Image::Legacy];
        ModelKms {
            keys: HashMap::from([
                (Key::V, victim_trusts.to_vec()),
                (Key::H, vec![Image::Sealed]),
                (Key::S, all.clone()),
                (Key::Spare, all),
            ]),
            made: HashMap::new(),
            counter: 0,
            seed,
        }
    }

    fn nonce(&mut self) -> [u8; 12] {
        self.counter += 1;
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.counter.to_le_bytes());
        n[8..].copy_from_slice(&(self.seed as u32).to_le_bytes());
        n
    }

    /// Encrypt under `key` (its owner's call): a blob of `MK ‖ key ‖ nonce ‖ filler`, the
    /// filler as long as the plaintext and a tag.
    pub fn encrypt(
        &mut self,
        key: Key,
        plaintext: &[u8],
        context: Option<&BTreeMap<String, String>>,
    ) -> Vec<u8> {
        let nonce = self.nonce();
        let mut blob = vec![b'M', b'K', key.index()];
        blob.extend_from_slice(&nonce);
        let mut block = 0u32;
        while blob.len() < 15 + plaintext.len() + 16 {
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            ctx.update(&nonce);
            ctx.update(&block.to_le_bytes());
            blob.extend_from_slice(ctx.finish().as_ref());
            block += 1;
        }
        blob.truncate(15 + plaintext.len() + 16);
        self.made.insert(
            blob.clone(),
            (key, context_aad(context), plaintext.to_vec()),
        );
        blob
    }

    /// Decrypt as KMS judges it: the blob's key against `KeyId`, then the caller against the
    /// key policy (the operator's role only with a Recipient for an image the policy names),
    /// then the context.
    fn decrypt(
        &self,
        blob: &[u8],
        key_id: Option<&str>,
        context: Option<&BTreeMap<String, String>>,
        caller: Caller,
        recipient: Option<Image>,
    ) -> Result<(Key, Vec<u8>), KmsError> {
        if blob.len() < 3 + 12 + 16 || &blob[..2] != b"MK" {
            return Err(KmsError::InvalidCiphertext);
        }
        let key = Key::from_index(blob[2]).ok_or(KmsError::InvalidCiphertext)?;
        if key_id.is_some_and(|id| id != key.arn().as_str()) {
            return Err(KmsError::IncorrectKey);
        }
        let allowed = match caller {
            Caller::Owner => true,
            Caller::Operator if key.operators() => true,
            Caller::Operator => recipient.is_some_and(|i| self.keys[&key].contains(&i)),
        };
        if !allowed {
            return Err(KmsError::AccessDenied);
        }
        match self.made.get(blob) {
            Some((made_key, aad, plain)) if *made_key == key && *aad == context_aad(context) => {
                Ok((key, plain.clone()))
            }
            _ => Err(KmsError::InvalidCiphertext),
        }
    }

    /// A Decrypt request as the enclave's driver sends it (JSON body), answered as KMS
    /// would: status and body. `image` is the Recipient's measurement; `creds_ok` whether the
    /// request was signed with the operator's valid credentials.
    fn answer(
        &mut self,
        body: &[u8],
        image: Image,
        creds_ok: bool,
        deny: Option<Key>,
    ) -> (u16, Vec<u8>) {
        let error = |e: KmsError| {
            (
                400,
                format!(r#"{{"__type":"{}","message":"model KMS"}}"#, e.kind()).into_bytes(),
            )
        };
        if !creds_ok {
            return error(KmsError::Credentials);
        }
        let Ok(req) = serde_json::from_slice::<DecryptRequest>(body) else {
            return (400, br#"{"__type":"ValidationException"}"#.to_vec());
        };
        let recipient = req.recipient.as_ref().map(|_| image);
        if let Some(denied) = deny
            && req.ciphertext_blob.get(2) == Some(&denied.index())
        {
            return error(KmsError::AccessDenied);
        }
        match self.decrypt(
            &req.ciphertext_blob,
            req.key_id.as_deref(),
            req.encryption_context.as_ref(),
            Caller::Operator,
            recipient,
        ) {
            Err(e) => error(e),
            Ok((key, plain)) => {
                // CiphertextForRecipient: only the enclave's key opens it. Its length follows
                // the plaintext's, as a CMS envelope's does.
                let nonce = self.nonce();
                let mut sealed = plain;
                boot_cipher()
                    .seal_in_place_append_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        &mut sealed,
                    )
                    .unwrap();
                let mut cfr = nonce.to_vec();
                cfr.extend_from_slice(&sealed);
                let body = serde_json::to_vec(&kms::DecryptResponse {
                    key_id: key.arn().to_string(),
                    plaintext: None,
                    ciphertext_for_recipient: Some(cfr),
                    encryption_algorithm: Some("SYMMETRIC_DEFAULT".into()),
                })
                .unwrap();
                (200, body)
            }
        }
    }
}

/// The enclave's Recipient key, in the model: what only the enclave can open.
fn boot_cipher() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x42; 32]).unwrap())
}

fn open_cfr(cfr: &[u8]) -> Option<Vec<u8>> {
    let nonce: [u8; 12] = cfr.get(..12)?.try_into().ok()?;
    let mut sealed = cfr[12..].to_vec();
    boot_cipher()
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed,
        )
        .ok()
        .map(|p| p.to_vec())
}

// ---------------------------------------------------------------------------------------
// The model NSM: a test chain, documents with fixed-length signatures.

struct Chain {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    leaf: Vec<u8>,
    leaf_key: EcdsaKeyPair,
}

/// Signs until the DER signature has a fixed length: every certificate, so every document of
/// a given payload length, has the same length in every run.
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
    let root_params = params("flow root", IsCa::Ca(BasicConstraints::Unconstrained), 1);
    let root = root_params.self_signed(&root_key).unwrap().der().to_vec();
    let root_issuer = Issuer::new(root_params, root_key);
    let int_key = key();
    let int_params = params("flow int", IsCa::Ca(BasicConstraints::Constrained(0)), 2);
    let intermediate = int_params
        .signed_by(&int_key, &root_issuer)
        .unwrap()
        .der()
        .to_vec();
    let int_issuer = Issuer::new(int_params, int_key);
    let leaf_key = key();
    let mut leaf_params = params("flow leaf", IsCa::ExplicitNoCa, 3);
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

fn attest(image: Image, user_data: Vec<u8>, nonce: Vec<u8>) -> Vec<u8> {
    let pcr0 = image.pcr0();
    let fields = DocumentFields {
        module_id: "i-0f10f10f10f10f10f-enc0f10f10f10f10f1".into(),
        timestamp: NOW,
        pcrs: (0..16u8)
            .map(|i| (i, if i == 0 { pcr0.to_vec() } else { vec![0; 48] }))
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

pub fn root_der() -> Vec<u8> {
    CHAIN.root.clone()
}

// ---------------------------------------------------------------------------------------
// The worlds.

/// How the two worlds differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pair {
    /// In the victim's amounts (every one below both other buyers' on its lots).
    Amounts,
    /// Envelope only: in which lots the victim's file names (1 and 2, or 1 and 3).
    EnvelopeLots,
}

/// What both worlds share.
#[derive(Debug, Clone)]
pub struct WorldSpec {
    pub victim_format: FileFormat,
    /// Images the victim's key policy names, now or ever (the sealed one always).
    pub victim_trusts: Vec<Image>,
    pub reveal: RevealPolicy,
    pub pair: Pair,
    /// The key the published manifest M registers for the victim: its own, or one the
    /// operator holds (finding 2). The victim seals M only when it names the victim's key
    /// (`bidctl seal` refuses otherwise); the honest buyer seals M whatever it says of others.
    pub victim_key: Key,
    pub seed: u64,
}

/// A file the operator can send: one of the world's, or one it made from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileChoice {
    Genuine(Who),
    /// The victim's file without its last bytes.
    VictimTruncated,
    /// The victim's file with one byte changed near its end (a per-bid ciphertext, or an
    /// envelope file's last frame).
    VictimFlipped,
    /// Per-bid: the victim's rows with their ciphertexts moved to other lots.
    VictimMoved,
    /// The sybil's file with the victim's first ciphertext (or file) as an extra row.
    SybilWithVictimsBid,
    Empty,
}

/// One buyer's place in a manifest or unsealed terms the operator writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    pub who: Who,
    pub key: Key,
    pub file: FileChoice,
}

/// Terms the operator writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Terms {
    pub auction: &'static str,
    pub reveal: RevealPolicy,
    pub allow_no_context: bool,
    pub slots: Vec<Slot>,
}

impl Terms {
    /// The manifest the operator publishes for the buyers to seal, with the victim under
    /// `victim_key`.
    pub fn m(reveal: RevealPolicy, victim_key: Key) -> Terms {
        let mut t = Terms::m_honest(reveal);
        t.slots[0].key = victim_key;
        t
    }

    fn m_honest(reveal: RevealPolicy) -> Terms {
        Terms {
            auction: AUCTION,
            reveal,
            allow_no_context: false,
            slots: [(Who::V, Key::V), (Who::H, Key::H), (Who::S, Key::S)]
                .map(|(who, key)| Slot {
                    who,
                    key,
                    file: FileChoice::Genuine(who),
                })
                .to_vec(),
        }
    }
}

/// One world: the files, the manifest M and its seals, and what M's result must be.
pub struct World {
    pub spec: WorldSpec,
    kms: ModelKms,
    files: HashMap<FileChoice, Vec<u8>>,
    /// The bids as meant, per buyer: lot → amount.
    bids: HashMap<Who, BTreeMap<&'static str, Amount>>,
    /// M's canonical bytes, and the genuine seals of M (every buyer's).
    pub m: Vec<u8>,
    seals: HashMap<Who, Vec<u8>>,
    /// Digest (hex) → name: what the operator holds and can hash itself.
    names: HashMap<String, String>,
}

fn amount(s: &str) -> Amount {
    Amount::parse(s.as_bytes()).unwrap()
}

impl World {
    /// World `which` (0 or 1) of `spec`. `envelope_len`: world 0's envelope file length,
    /// which world 1's must match (a signature's DER length varies with its randomness).
    pub fn new(spec: &WorldSpec, which: u8, envelope_len: Option<usize>) -> World {
        let mut kms = ModelKms::new(spec.seed, &spec.victim_trusts);
        let s = spec.seed;
        // H and S bid on every lot, S below H; the victim below both, on lots 1 to 3.
        let mut bids: HashMap<Who, BTreeMap<&'static str, Amount>> = HashMap::new();
        for (i, lot) in LOTS.iter().enumerate() {
            let i = i as u64;
            let h = 80 + (s.rotate_left(i as u32 * 7) % 19);
            let sy = 50 + (s.rotate_left(i as u32 * 11) % 19);
            bids.entry(Who::H)
                .or_default()
                .insert(lot, amount(&h.to_string()));
            bids.entry(Who::S)
                .or_default()
                .insert(lot, amount(&sy.to_string()));
        }
        let victim_lots: &[&'static str] = match (spec.pair, which) {
            (Pair::EnvelopeLots, 0) => &["1", "2"],
            (Pair::EnvelopeLots, _) => &["1", "3"],
            (Pair::Amounts, _) => &["1", "2", "3"],
        };
        for (i, lot) in victim_lots.iter().enumerate() {
            let v = match spec.pair {
                Pair::Amounts => 1 + (s.rotate_left(3 + i as u32 + 13 * u32::from(which)) % 40),
                Pair::EnvelopeLots => 10 + i as u64,
            };
            bids.entry(Who::V)
                .or_default()
                .insert(lot, amount(&format!("{v}.{}", which * 7)));
        }
        let mut files = HashMap::new();
        for who in [Who::H, Who::S] {
            let key = if who == Who::H { Key::H } else { Key::S };
            files.insert(
                FileChoice::Genuine(who),
                per_bid_file(&mut kms, key, who, &bids[&who]),
            );
        }
        let victim = match spec.victim_format {
            FileFormat::PerBid => per_bid_file(&mut kms, Key::V, Who::V, &bids[&Who::V]),
            FileFormat::Envelope => loop {
                let f = envelope_file(&mut kms, s, &bids[&Who::V]);
                if envelope_len.is_none_or(|n| n == f.len()) {
                    break f;
                }
            },
        };
        // What the operator makes from the victim's file.
        let mut truncated = victim.clone();
        truncated.truncate(victim.len().saturating_sub(9));
        let mut flipped = victim.clone();
        let at = victim.len()
            - match spec.victim_format {
                FileFormat::PerBid => 8,
                FileFormat::Envelope => 140,
            };
        flipped[at] ^= 0x04;
        let moved = match spec.victim_format {
            FileFormat::PerBid => {
                let mut rows: Vec<&str> = std::str::from_utf8(&victim).unwrap().lines().collect();
                let n = rows.len();
                let (a, b) = (
                    rows[1].split_once(',').unwrap(),
                    rows[n - 1].split_once(',').unwrap(),
                );
                let (r1, r2) = (format!("{},{}", a.0, b.1), format!("{},{}", b.0, a.1));
                rows[1] = &r1;
                rows[n - 1] = &r2;
                let mut out = rows.join("\n");
                out.push('\n');
                out.into_bytes()
            }
            FileFormat::Envelope => flipped.clone(),
        };
        let mut sybil_plus = files[&FileChoice::Genuine(Who::S)].clone();
        let first = match spec.victim_format {
            FileFormat::PerBid => std::str::from_utf8(&victim)
                .unwrap()
                .lines()
                .nth(1)
                .unwrap()
                .split_once(',')
                .unwrap()
                .1
                .to_owned(),
            FileFormat::Envelope => base64::engine::general_purpose::STANDARD.encode(&victim[..64]),
        };
        sybil_plus.extend_from_slice(format!("9,{first}\n").as_bytes());
        files.insert(FileChoice::Genuine(Who::V), victim);
        files.insert(FileChoice::VictimTruncated, truncated);
        files.insert(FileChoice::VictimFlipped, flipped);
        files.insert(FileChoice::VictimMoved, moved);
        files.insert(FileChoice::SybilWithVictimsBid, sybil_plus);
        files.insert(FileChoice::Empty, Vec::new());

        let mut w = World {
            spec: spec.clone(),
            kms,
            files,
            bids,
            m: Vec::new(),
            seals: HashMap::new(),
            names: HashMap::new(),
        };
        // Files with the same bytes (an envelope file "moved" is the flipped one) get one
        // name, the same in both worlds.
        let mut named: Vec<(String, &Vec<u8>)> =
            w.files.iter().map(|(c, b)| (format!("{c:?}"), b)).collect();
        named.sort();
        for (choice, bytes) in named {
            w.names
                .entry(hex::encode(config::sha256(bytes)))
                .or_insert(format!("sha({choice})"));
        }
        let m = w.manifest(&w.m_terms()).unwrap();
        let h = config::sha256(&m);
        // The sybil is the operator's: it seals M too, as any buyer does. The victim seals
        // only an M that names its key.
        for (who, key) in [(Who::V, Key::V), (Who::H, Key::H), (Who::S, Key::S)] {
            if who == Who::V && spec.victim_key != Key::V {
                continue;
            }
            let ctx = manifest::seal_context(&AuctionId::new(AUCTION).unwrap(), &who.name(), &h);
            let seal = w.kms.encrypt(key, SEAL_MARKER, Some(&ctx));
            w.seals.insert(who, seal);
        }
        w.m = m;
        w
    }

    /// The terms of the published manifest M.
    pub fn m_terms(&self) -> Terms {
        Terms::m(self.spec.reveal, self.spec.victim_key)
    }

    fn file(&self, f: FileChoice) -> &[u8] {
        &self.files[&f]
    }

    fn config(&self, t: &Terms) -> Option<AuctionConfig> {
        AuctionConfig::new(
            AuctionId::new(t.auction).unwrap(),
            t.slots
                .iter()
                .map(|s| BuyerSpec {
                    name: s.who.name(),
                    key_arn: s.key.arn(),
                })
                .collect(),
            t.reveal,
            t.allow_no_context,
        )
        .ok()
    }

    /// The canonical manifest of these terms over the files their slots name, as the
    /// operator would write it (and names its digest, which the operator knows).
    pub fn manifest(&mut self, t: &Terms) -> Option<Vec<u8>> {
        let config = self.config(t)?;
        let entries = t
            .slots
            .iter()
            .map(|s| {
                let f = self.file(s.file);
                FileEntry {
                    buyer: s.who.name(),
                    bucket: "bids".into(),
                    key: format!("{:?}/encrypted.csv", s.who),
                    size: f.len() as u64,
                    sha256: config::sha256(f),
                    format: FileFormat::detect(f),
                }
            })
            .collect();
        let bytes = Manifest::new(config, entries).ok()?.canonical_bytes();
        self.names.insert(
            hex::encode(config::sha256(&bytes)),
            format!("sha(manifest {t:?})"),
        );
        Some(bytes)
    }

    /// A seal the operator can hand over for slot `slot` of manifest `m`: the genuine one it
    /// was given (which opens only for M), or one it makes itself under a key it owns.
    fn seal(&mut self, choice: SealChoice, slot: &Slot, m: &[u8]) -> Vec<u8> {
        match choice {
            SealChoice::Genuine => self
                .seals
                .get(&slot.who)
                .cloned()
                .unwrap_or_else(|| vec![7; 64]),
            SealChoice::Forged if slot.key.operators() => {
                let h = config::sha256(m);
                let parsed = Manifest::parse(m).unwrap();
                let ctx = manifest::seal_context(parsed.terms().auction_id(), &slot.who.name(), &h);
                self.kms.encrypt(slot.key, SEAL_MARKER, Some(&ctx))
            }
            SealChoice::Forged | SealChoice::Garbage => vec![0x5e; 120],
        }
    }

    /// What M's result must be: every valid bid of every buyer, decided; rendered.
    fn reference(&self) -> (Vec<u8>, Vec<u8>) {
        let m = Manifest::parse(&self.m).unwrap();
        let mut results = Vec::new();
        for lot in LOTS {
            let bids: Vec<(BuyerName, Verdict)> = [Who::V, Who::H, Who::S]
                .iter()
                .filter_map(|w| {
                    self.bids[w]
                        .get(lot)
                        .map(|a| (w.name(), Verdict::Valid(*a)))
                })
                .collect();
            if !bids.is_empty() {
                results.push(auction::decide(
                    LotId::new(lot).unwrap(),
                    bids,
                    self.spec.reveal,
                ));
            }
        }
        output::sort_results(&mut results);
        let files: Vec<FileSummary> = m
            .files()
            .iter()
            .map(|f| FileSummary {
                buyer: f.buyer.clone(),
                format: f.format,
                size: f.size,
                sha256: f.sha256,
            })
            .collect();
        let json = output::render_json(&Report {
            config: m.terms(),
            mode: Mode::Sealed,
            terms_sha256: m.digest(),
            files: &files,
            set_aside: &[],
            results: &results,
        });
        (output::render_csv(&results, self.spec.reveal), json)
    }

    /// Replaces every digest the operator holds (of a file or a manifest it has) by its name.
    fn normalize(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (hex, name) in &self.names {
            out = out.replace(hex.as_str(), name);
        }
        out
    }
}

fn per_bid_file(
    kms: &mut ModelKms,
    key: Key,
    who: Who,
    bids: &BTreeMap<&'static str, Amount>,
) -> Vec<u8> {
    let mut out = String::from("[].contract,[].bid\n");
    for (lot, a) in bids {
        let ctx = kms::bid_context(
            Mode::Sealed,
            &AuctionId::new(AUCTION).unwrap(),
            &LotId::new(*lot).unwrap(),
            &who.name(),
        );
        let blob = kms.encrypt(key, a.to_padded().as_bytes(), Some(&ctx));
        out.push_str(&format!(
            "{lot},{}\n",
            base64::engine::general_purpose::STANDARD.encode(blob)
        ));
    }
    out.into_bytes()
}

fn envelope_file(kms: &mut ModelKms, seed: u64, bids: &BTreeMap<&'static str, Amount>) -> Vec<u8> {
    let rows: Vec<PlaintextRow> = bids
        .iter()
        .enumerate()
        .map(|(i, (lot, a))| PlaintextRow {
            line: i as u64 + 2,
            lot: LotId::new(*lot).unwrap(),
            amount: *a,
        })
        .collect();
    let plaintext = bidfile::padded_plaintext(&rows, Some(LOTS.len() as u64));
    let context = BTreeMap::from([
        ("auction".to_owned(), AUCTION.to_owned()),
        ("buyer".to_owned(), Who::V.name().to_string()),
        (
            kms::RULES_CONTEXT_KEY.to_owned(),
            kms::SEALED_RULES.to_owned(),
        ),
    ]);
    let enc = Encryptor::new(context).unwrap();
    // The same data key in both worlds, so the header is the same bytes.
    let data_key: [u8; 32] =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &seed.to_le_bytes())
            .as_ref()
            .try_into()
            .unwrap();
    let edk = kms.encrypt(Key::V, &data_key, Some(enc.context()));
    enc.encrypt(&data_key, &edk, Key::V.arn().as_str(), &plaintext, 4096)
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// The operator's strategies.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealChoice {
    Genuine,
    Forged,
    Garbage,
}

/// How the operator drives KMS traffic while it waits: which pending request goes next, and
/// whether it is throttled or lost on the way (both retried by the driver's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    InOrder,
    Reversed,
    Throttle,
    Lose,
}

/// One session.
#[derive(Debug, Clone)]
pub enum SessionPlan {
    Enclave {
        image: Image,
        /// Restart the enclave before this session (a new boot: the unsealed image's replay
        /// memory starts empty).
        restart: bool,
        /// The operator's valid credentials, or ones KMS refuses.
        good_credentials: bool,
        open: Open,
        /// Per slot of the terms, the seal sent (sealed opens only).
        seals: Vec<SealChoice>,
        /// Which slots' files, in what order (indices into the terms' slots).
        order: Vec<usize>,
        chunk: usize,
        net: Net,
        /// Stop (close the connection) after this many requests.
        abort_after: Option<usize>,
        /// An IAM statement on the operator's own role denying Decrypt on this key.
        deny: Option<Key>,
        /// A file sent in place of the one a slot names: (slot, file).
        swap: Option<(usize, FileChoice)>,
    },
    /// The first release's image as a decryption oracle: the victim's per-bid ciphertexts
    /// with contexts of the operator's choosing, and the victim's envelope file.
    Legacy { queries: Vec<LegacyQuery> },
}

#[derive(Debug, Clone)]
pub enum Open {
    /// The published manifest M, as the buyers sealed it.
    M,
    Sealed(Terms),
    Unsealed(Terms),
}

#[derive(Debug, Clone, Copy)]
pub enum LegacyQuery {
    /// The victim's `row`-th ciphertext with context {auction, lot, buyer} (or none).
    Bid {
        row: usize,
        auction: &'static str,
        lot: &'static str,
        buyer: Who,
        no_context: bool,
    },
    /// The victim's envelope file: opened when its header passes the first release's policy.
    Envelope,
}

// ---------------------------------------------------------------------------------------
// Running a strategy in one world.

/// Everything the operator sees, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Frame(String),
    KmsRequest(usize),
    KmsAnswer(u16, usize),
    Heap(&'static str, isize, isize),
    Ended(usize, String),
    /// A file the operator holds or makes, by its size.
    FileSize(String, usize),
    /// What the first release's image would show: an opened plaintext, or a refusal.
    Legacy(String),
}

/// A broken integrity property: the honest buyer's check accepted a result that is not M's.
#[derive(Debug)]
pub struct Breach(pub String);

pub struct Run<'w> {
    world: &'w mut World,
    pub seen: Vec<Seen>,
    /// How many times an honest buyer's check accepted a result.
    pub accepted: usize,
    guards: HashMap<Image, ReplayGuard>,
}

const SETTINGS_LOTS: usize = 16;

fn settings(image: Image) -> EnclaveSettings {
    EnclaveSettings {
        rules: if image == Image::Unsealed {
            Mode::Unsealed
        } else {
            Mode::Sealed
        },
        max_frame: 4096,
        max_pending_bids: 3,
        max_lots: SETTINGS_LOTS,
        max_bids: 32,
        max_held_bytes: 64 * 1024,
        ..EnclaveSettings::default()
    }
}

fn credentials(good: bool) -> Credentials {
    Credentials {
        access_key_id: if good {
            "ASIAOPERATOR00000001"
        } else {
            "ASIAUNKNOWN000000001"
        }
        .into(),
        secret_access_key: Secret::new("operator-secret-operator-secret-0000"),
        session_token: None,
        expiration: None,
        region: Region::new("us-east-1").unwrap(),
    }
}

impl<'w> Run<'w> {
    pub fn new(world: &'w mut World) -> Run<'w> {
        Run {
            world,
            seen: Vec::new(),
            accepted: 0,
            guards: HashMap::new(),
        }
    }

    /// Plays the sessions; returns a breach of integrity, if any.
    pub fn play(&mut self, plans: &[SessionPlan]) -> Result<(), Breach> {
        // The files are the operator's before any session: their sizes are seen too.
        let mut sizes: Vec<(String, usize)> = self
            .world
            .files
            .iter()
            .map(|(f, b)| (format!("{f:?}"), b.len()))
            .collect();
        sizes.sort();
        self.seen
            .extend(sizes.into_iter().map(|(f, n)| Seen::FileSize(f, n)));
        for plan in plans {
            match plan {
                SessionPlan::Legacy { queries } => self.legacy(queries),
                SessionPlan::Enclave { .. } => self.session(plan)?,
            }
        }
        Ok(())
    }

    fn legacy(&mut self, queries: &[LegacyQuery]) {
        let rows: Vec<Vec<u8>> = match self.world.spec.victim_format {
            FileFormat::PerBid => bidfile::parse_encrypted(
                "v",
                self.world.file(FileChoice::Genuine(Who::V)),
                Default::default(),
            )
            .unwrap()
            .into_iter()
            .map(|r| r.ciphertext)
            .collect(),
            FileFormat::Envelope => Vec::new(),
        };
        for q in queries {
            let shown = match *q {
                LegacyQuery::Bid {
                    row,
                    auction,
                    lot,
                    buyer,
                    no_context,
                } => {
                    let Some(ct) = rows.get(row % rows.len().max(1)) else {
                        continue;
                    };
                    // The first release's context: {auction, lot, buyer}, no rules pair.
                    let ctx = kms::bid_context(
                        Mode::Unsealed,
                        &AuctionId::new(auction).unwrap(),
                        &LotId::new(lot).unwrap(),
                        &buyer.name(),
                    );
                    let context = (!no_context).then_some(&ctx);
                    match self.world.kms.decrypt(
                        ct,
                        Some(Key::V.arn().as_str()),
                        context,
                        Caller::Operator,
                        Some(Image::Legacy),
                    ) {
                        Ok((_, plain)) => format!("opened {}", String::from_utf8_lossy(&plain)),
                        Err(e) => e.kind().to_owned(),
                    }
                }
                LegacyQuery::Envelope => self.legacy_envelope(),
            };
            self.seen.push(Seen::Legacy(shown));
        }
    }

    /// The first release's envelope path: a context of exactly {auction, buyer} and the
    /// signing key, else refused before KMS; then the data key, then the plaintext.
    fn legacy_envelope(&mut self) -> String {
        let file = self.world.file(FileChoice::Genuine(Who::V)).to_vec();
        let Ok(m) = esdk::Message::parse(&file, &esdk::Limits::default()) else {
            return "not a message".into();
        };
        let keys: Vec<&str> = m.context().keys().map(String::as_str).collect();
        if keys != ["auction", "aws-crypto-public-key", "buyer"] {
            return format!("refused before KMS: context keys {keys:?}");
        }
        let edk = &m.data_keys()[0].encrypted_key;
        match self.world.kms.decrypt(
            edk,
            Some(Key::V.arn().as_str()),
            Some(m.context()),
            Caller::Operator,
            Some(Image::Legacy),
        ) {
            Err(e) => e.kind().to_owned(),
            Ok((_, key)) => match m.decrypt(&key) {
                Ok(p) => format!("opened {}", String::from_utf8_lossy(&p)),
                Err(e) => format!("{e}"),
            },
        }
    }

    fn session(&mut self, plan: &SessionPlan) -> Result<(), Breach> {
        let SessionPlan::Enclave {
            image,
            restart,
            good_credentials,
            open,
            seals,
            order,
            chunk,
            net,
            abort_after,
            deny,
            swap,
        } = plan
        else {
            return Ok(());
        };
        let image = *image;
        if *restart {
            self.guards.remove(&image);
        }
        let guard = self
            .guards
            .remove(&image)
            .unwrap_or_else(|| ReplayGuard::new(64));
        let (mut s, heap) = measured(|| EnclaveSession::new(settings(image), guard, NOW, [9; 16]));
        self.seen.push(Seen::Heap("new", heap.0, heap.1));
        let mut d = Driver {
            image,
            decoder: FrameDecoder::new(usize::MAX),
            frames: 0,
            pending: Vec::new(),
            net: *net,
            result: (Vec::new(), Vec::new()),
            closed: None,
            good_credentials: *good_credentials,
            deny: *deny,
            recipient: EncodedRecipient::new(&attest(image, b"recipient".to_vec(), vec![1; 32])),
        };
        let (terms, sealed) = match open {
            Open::M => (self.world.m_terms(), true),
            Open::Sealed(t) => (t.clone(), true),
            Open::Unsealed(t) => (t.clone(), false),
        };
        let mut requests: Vec<Request> = vec![
            Request::Hello(Hello {
                protocol: wire::PROTOCOL_VERSION,
                nonce: vec![3; 32],
            }),
            Request::Credentials(credentials(*good_credentials)),
        ];
        let manifest = if sealed {
            let Some(m) = self.world.manifest(&terms) else {
                return Ok(());
            };
            requests.push(Request::OpenSealed(OpenSealed {
                manifest: m.clone(),
            }));
            for (slot, choice) in terms.slots.iter().zip(seals) {
                requests.push(Request::Seal(Seal {
                    buyer: slot.who.name(),
                    ciphertext: self.world.seal(*choice, slot, &m),
                }));
            }
            Some(m)
        } else {
            let Some(config) = self.world.config(&terms) else {
                return Ok(());
            };
            self.world.names.insert(
                hex::encode(config.digest()),
                format!("sha(terms {terms:?})"),
            );
            requests.push(Request::OpenUnsealed(config));
            None
        };
        for &i in order {
            let Some(slot) = terms.slots.get(i) else {
                continue;
            };
            let sent = match swap {
                Some((j, f)) if *j == i => *f,
                _ => slot.file,
            };
            let data = self.world.file(sent).to_vec();
            let step = (*chunk).max(1);
            let mut parts: Vec<&[u8]> = data.chunks(step).collect();
            if parts.is_empty() {
                parts.push(&[]);
            }
            let n = parts.len();
            for (k, part) in parts.into_iter().enumerate() {
                requests.push(Request::FileChunk(FileChunk {
                    buyer: slot.who.name(),
                    data: part.to_vec(),
                    last: k + 1 == n,
                }));
            }
        }
        requests.push(Request::Close(Close::default()));
        let limit = abort_after.unwrap_or(usize::MAX);
        for (k, msg) in requests.into_iter().enumerate() {
            if k >= limit || s.is_ended() {
                break;
            }
            let mut bytes = Vec::new();
            wire::encode_frame(
                &wire::encode_request(&ToEnclave {
                    id: k as u64 + 1,
                    msg,
                }),
                usize::MAX,
                &mut bytes,
            )
            .unwrap();
            let (_, heap) = measured(|| s.handle_input(&bytes, NOW));
            self.seen.push(Seen::Heap("input", heap.0, heap.1));
            d.settle(&mut s, self.world, &mut self.seen);
        }
        if !s.is_ended() {
            let (_, heap) = measured(|| s.handle_eof());
            self.seen.push(Seen::Heap("eof", heap.0, heap.1));
            d.drain(&mut s, self.world, &mut self.seen);
        }
        self.seen.push(Seen::Ended(
            self.seen.len(),
            self.world.normalize(s.end_reason().unwrap_or("")),
        ));
        self.guards.insert(image, s.into_guard());
        if let (Some((closed, csv, json)), Some(m)) = (d.closed.take(), manifest) {
            self.integrity(image, &m, &closed, &csv, &json)?;
        }
        Ok(())
    }

    /// Each honest buyer's own check of a closed session's result: accepted only for M's
    /// result, with the buyer's rows counted as written.
    fn integrity(
        &mut self,
        image: Image,
        m: &[u8],
        attestation: &[u8],
        csv: &[u8],
        json: &[u8],
    ) -> Result<(), Breach> {
        let Ok(parsed) = Manifest::parse(m) else {
            return Ok(());
        };
        let Ok(checked) = verify::verify_result(
            csv,
            json,
            attestation,
            &root_der(),
            &Image::Sealed.pcr0(),
            VerifyAt::Document,
            &Expected::Sealed {
                manifest: &parsed,
                bytes: m,
            },
        ) else {
            // Not a result the buyers' image made (another image's PCR0, say): refused.
            let _ = image;
            return Ok(());
        };
        let real_m = Manifest::parse(&self.world.m).unwrap();
        for (who, key) in [(Who::V, Key::V), (Who::H, Key::H)] {
            let file = self.world.file(FileChoice::Genuine(who));
            // A buyer who sealed M has its record; one who did not checks without one.
            let sealed = self.world.seals.contains_key(&who);
            let record = sealed.then(|| {
                let mut record = SealRecord::default();
                record.add(SealEntry {
                    auction: real_m.terms().auction_id().clone(),
                    buyer: who.name(),
                    manifest: real_m.digest(),
                    file: config::sha256(file),
                });
                record
            });
            let accepted = verify::check_buyer(
                &checked,
                &parsed,
                &BuyerView {
                    buyer: &who.name(),
                    key: &key.arn(),
                    file,
                    record: record.as_ref(),
                },
            );
            if accepted.is_ok() {
                self.accepted += 1;
                let (ref_csv, ref_json) = self.world.reference();
                if !sealed || m != self.world.m.as_slice() || csv != ref_csv || json != ref_json {
                    return Err(Breach(format!(
                        "{who:?}'s own check accepted a result that is not of an auction it sealed, as it sealed it: manifest {}{}, output.csv\n{}",
                        if m == self.world.m.as_slice() {
                            "M"
                        } else {
                            "another"
                        },
                        if sealed { "" } else { " (it sealed none)" },
                        String::from_utf8_lossy(csv)
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The enclave's driver and the network between it and KMS, as the operator runs them.
struct Driver {
    image: Image,
    decoder: FrameDecoder,
    frames: u64,
    pending: Vec<(DecryptJob, DecryptAttempts)>,
    net: Net,
    result: (Vec<u8>, Vec<u8>),
    closed: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    good_credentials: bool,
    deny: Option<Key>,
    recipient: EncodedRecipient,
}

impl Driver {
    /// Everything the session asks for and sends, and every KMS job to its end.
    fn settle(&mut self, s: &mut EnclaveSession, w: &mut World, seen: &mut Vec<Seen>) {
        loop {
            self.drain(s, w, seen);
            if s.is_ended() || self.pending.is_empty() {
                return;
            }
            let i = match self.net {
                Net::Reversed => self.pending.len() - 1,
                _ => 0,
            };
            let (job, mut attempts) = self.pending.remove(i);
            let outcome = loop {
                let body = attempts.body(&job, &self.recipient);
                seen.push(Seen::KmsRequest(body.len()));
                let jitter = 17;
                let (step, heap) = match self.net {
                    Net::Lose if attempts.attempts() == 0 => {
                        measured(|| attempts.lost(&job, "connection reset".into(), NOW, jitter))
                    }
                    Net::Throttle if attempts.attempts() < 2 => {
                        let answer = br#"{"__type":"ThrottlingException","message":"slow down"}"#;
                        seen.push(Seen::KmsAnswer(400, answer.len()));
                        measured(|| attempts.answered(&job, 400, answer, NOW, jitter))
                    }
                    _ => {
                        let (status, answer) =
                            w.kms
                                .answer(&body, self.image, self.good_credentials, self.deny);
                        seen.push(Seen::KmsAnswer(status, answer.len()));
                        measured(|| attempts.answered(&job, status, &answer, NOW, jitter))
                    }
                };
                seen.push(Seen::Heap("kms rules", heap.0, heap.1));
                match step {
                    Step::Send | Step::Wait(_) => continue,
                    Step::Open(cfr) => {
                        break match open_cfr(&cfr) {
                            Some(p) => DecryptOutcome::Plaintext(Plaintext::new(p.into())),
                            None => DecryptAttempts::unopenable("model".into()),
                        };
                    }
                    Step::Done(o) => break o,
                }
            };
            let ticket = job.ticket;
            let (_, heap) = measured(|| s.decrypted(ticket, outcome));
            seen.push(Seen::Heap("decrypted", heap.0, heap.1));
        }
    }

    /// Actions and bytes until neither yields.
    fn drain(&mut self, s: &mut EnclaveSession, w: &mut World, seen: &mut Vec<Seen>) {
        loop {
            let mut busy = false;
            while let Some(action) = s.poll_action() {
                busy = true;
                match action {
                    Action::Attest {
                        ticket,
                        user_data,
                        nonce,
                    } => {
                        let doc = attest(self.image, user_data, nonce);
                        let (_, heap) = measured(|| s.attested(ticket, Ok(doc)));
                        seen.push(Seen::Heap("attested", heap.0, heap.1));
                    }
                    Action::Decrypt(job) => {
                        let attempts = DecryptAttempts::new(NOW, 60_000);
                        self.pending.push((job, attempts));
                    }
                    Action::UseCredentials(_) => {}
                }
            }
            loop {
                let (bytes, heap) = measured(|| s.poll_transmit());
                seen.push(Seen::Heap("transmit", heap.0, heap.1));
                let Some(bytes) = bytes else { break };
                busy = true;
                self.frames_of(&bytes, w, seen);
            }
            if !busy {
                return;
            }
        }
    }

    /// The operator's view of the enclave's bytes: each frame decoded and normalized.
    fn frames_of(&mut self, bytes: &[u8], w: &World, seen: &mut Vec<Seen>) {
        let mut input = bytes;
        while let Ok(Some(frame)) = self.decoder.decode(&mut input) {
            self.frames += 1;
            let shown = match wire::decode_response(self.frames, &frame) {
                Err(e) => format!("undecodable frame: {e}"),
                Ok(FromEnclave { id, msg }) => {
                    let what = match msg {
                        Response::Hello(h) => format!(
                            "hello protocol {} dev {} {}",
                            h.protocol,
                            h.dev,
                            document(&h.attestation, w)
                        ),
                        Response::ResultChunk(c) => {
                            match c.file {
                                wire::OutputFile::Csv => self.result.0.extend_from_slice(&c.data),
                                wire::OutputFile::Json => self.result.1.extend_from_slice(&c.data),
                            }
                            format!(
                                "result chunk {:?} {} bytes: {}",
                                c.file,
                                c.data.len(),
                                w.normalize(&String::from_utf8_lossy(&c.data))
                            )
                        }
                        Response::Closed(c) => {
                            let (csv, json) = std::mem::take(&mut self.result);
                            assert_eq!(c.csv_sha256, config::sha256(&csv));
                            assert_eq!(c.json_sha256, config::sha256(&json));
                            let shown = format!(
                                "closed {:?} {} lots, terms {}, {}",
                                c.mode,
                                c.lots,
                                w.normalize(&hex::encode(c.terms_sha256)),
                                document(&c.attestation, w)
                            );
                            self.closed = Some((c.attestation, csv, json));
                            shown
                        }
                        other => w.normalize(&hex_arrays(&format!("{other:?}"))),
                    };
                    format!("{id:?} {what}")
                }
            };
            seen.push(Seen::Frame(shown));
        }
    }
}

/// Debug output with every byte array of 16 or more (a digest) written as hex, so that the
/// names of digests the operator can compute replace them.
fn hex_arrays(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let bytes: Option<Vec<u8>> = after.find(']').and_then(|close| {
            after[..close]
                .split(", ")
                .map(|n| n.parse::<u8>().ok())
                .collect()
        });
        match bytes {
            Some(b) if b.len() >= 16 => {
                out.push_str(&hex::encode(&b));
                rest = &after[after.find(']').unwrap() + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// An attestation document as the operator reads it: its fields, its user data normalized
/// (a result commitment's digests named: the terms by the operator's own table, the outputs
/// as "of the result", which the operator holds).
fn document(doc: &[u8], w: &World) -> String {
    let Ok(parsed) = bidding_core::attestation::parse(doc) else {
        return "unparsable document".into();
    };
    let f = parsed.fields();
    let user = match f.user_data.as_deref().and_then(ResultCommitment::parse) {
        Some(c) => format!(
            "result {:?} terms {}",
            c.mode,
            w.normalize(&hex::encode(c.terms_sha256))
        ),
        None => format!("{:?}", f.user_data.as_deref().map(hex::encode)),
    };
    format!(
        "doc pcr0 {} nonce {:?} user {user} len {}",
        hex::encode(f.pcr(0).unwrap_or_default()),
        f.nonce.as_deref().map(hex::encode),
        doc.len()
    )
}

/// Both worlds of `spec` under the same strategy: what the operator saw in each, and any
/// integrity breach.
pub fn both_worlds(
    spec: &WorldSpec,
    plans: &[SessionPlan],
) -> (Vec<Seen>, Vec<Seen>, Result<(), Breach>) {
    let mut w0 = World::new(spec, 0, None);
    let len = (spec.victim_format == FileFormat::Envelope)
        .then(|| w0.file(FileChoice::Genuine(Who::V)).len());
    let mut w1 = World::new(spec, 1, len);
    let mut r0 = Run::new(&mut w0);
    let b0 = r0.play(plans);
    let seen0 = std::mem::take(&mut r0.seen);
    let mut r1 = Run::new(&mut w1);
    let b1 = r1.play(plans);
    let seen1 = std::mem::take(&mut r1.seen);
    (seen0, seen1, b0.and(b1))
}

/// How each session of world 0 ended (the enclave's end reason; empty for a clean close),
/// and what each query of the first release showed.
pub fn endings(spec: &WorldSpec, plans: &[SessionPlan]) -> Vec<String> {
    let mut w0 = World::new(spec, 0, None);
    let mut r0 = Run::new(&mut w0);
    let _ = r0.play(plans);
    r0.seen
        .iter()
        .filter_map(|s| match s {
            Seen::Ended(_, why) => Some(why.clone()),
            Seen::Legacy(shown) => Some(format!("legacy: {shown}")),
            _ => None,
        })
        .collect()
}

/// How many times the honest buyers' checks accept a result in world 0 of `spec`.
pub fn accepted_results(spec: &WorldSpec, plans: &[SessionPlan]) -> usize {
    let mut w0 = World::new(spec, 0, None);
    let mut r0 = Run::new(&mut w0);
    let _ = r0.play(plans);
    r0.accepted
}

/// The first place the two records differ, with a little context.
pub fn first_difference(a: &[Seen], b: &[Seen]) -> Option<String> {
    let i = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))?;
    let from = i.saturating_sub(3);
    Some(format!(
        "at event {i}:\n world 0: {:#?}\n world 1: {:#?}",
        &a[from..(i + 1).min(a.len())],
        &b[from..(i + 1).min(b.len())]
    ))
}
