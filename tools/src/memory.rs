//! How much memory the enclave's auction state takes at its limits: the real session state
//! machine (the one enclave-init runs) fed a sealed auction of synthetic per-bid files at the
//! configured maximums, every ciphertext "opened" at once to a fixed amount. KMS, TLS and the
//! driver's threads add a few MiB beside it (see `bidctl bench`); the bid files, the lot table,
//! the verdicts and the rendered result are what grow.

use anyhow::{Result, anyhow, bail};
use base64::Engine;
use bidding_core::auction::RevealPolicy;
use bidding_core::cms::Plaintext;
use bidding_core::config::{AuctionConfig, BuyerSpec, sha256};
use bidding_core::credentials::{Credentials, Secret};
use bidding_core::manifest::{FileEntry, FileFormat, Manifest};
use bidding_core::names::{AuctionId, BuyerName, KeyArn, Region};
use bidding_core::session::enclave::{
    Action, DecryptOutcome, EnclaveSession, EnclaveSettings, ReplayGuard, chunk_len_for,
};
use bidding_core::wire::{
    FileChunk, OpenSealed, Request, Seal, ToEnclave, encode_frame, encode_request,
};

/// What one measurement ran and found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryFigures {
    pub lots: u64,
    pub buyers: usize,
    pub bids: u64,
    pub largest_file_bytes: u64,
    pub peak_rss_mib: f64,
    pub baseline_rss_mib: f64,
    pub bytes_per_lot: f64,
}

fn status_kib(field: &str) -> Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("/proc/self/status has no {field}"))
}

/// Runs one sealed auction of `lots` lots among `buyers` buyers, each bidding on
/// `lots × bids_per_lot / buyers` lots (spread evenly), with `ciphertext_len`-byte ciphertexts.
pub fn measure(
    lots: u64,
    buyers: usize,
    bids: u64,
    ciphertext_len: usize,
) -> Result<MemoryFigures> {
    if buyers == 0 || lots == 0 {
        bail!("need at least one lot and one buyer");
    }
    let baseline = status_kib("VmRSS:")?;
    let region = Region::new("us-east-1").expect("valid");
    let specs: Vec<BuyerSpec> = (0..buyers)
        .map(|i| BuyerSpec {
            name: BuyerName::new(format!("B{i}")).expect("valid"),
            key_arn: KeyArn::new(format!("arn:aws:kms:us-east-1:111122223333:key/k{i}"))
                .expect("valid"),
        })
        .collect();
    let config = AuctionConfig::new(
        AuctionId::new("memory").expect("valid"),
        specs.clone(),
        RevealPolicy::SecondPrice,
        false,
    )?;
    // Buyer i bids on `bids / buyers` consecutive lots from lot i × that, wrapping around: no
    // buyer names a lot twice, and every lot gets bids from `bids / lots` buyers.
    let per_buyer = (bids / buyers as u64).min(lots);
    let ct = base64::engine::general_purpose::STANDARD.encode(vec![0x5au8; ciphertext_len]);
    let file = |i: usize| -> Vec<u8> {
        let mut f = String::from("[].contract,[].bid\n");
        for k in 0..per_buyer {
            let lot = (i as u64 * per_buyer + k) % lots;
            f.push_str(&format!("L{lot},{ct}\n"));
        }
        f.into_bytes()
    };
    // Files are made one at a time as the parent would stream them; their digests first.
    let mut entries = Vec::new();
    let mut largest = 0u64;
    for (i, s) in specs.iter().enumerate() {
        let f = file(i);
        largest = largest.max(f.len() as u64);
        entries.push(FileEntry {
            buyer: s.name.clone(),
            bucket: "bids".into(),
            key: format!("{}/encrypted.csv", s.name),
            size: f.len() as u64,
            sha256: sha256(&f),
            format: FileFormat::PerBid,
        });
    }
    let manifest = Manifest::new(config, entries)?.canonical_bytes();
    let settings = EnclaveSettings {
        max_file_bytes: largest.max(EnclaveSettings::default().max_file_bytes),
        ..EnclaveSettings::default()
    };
    let now = 1_900_000_000_000;
    let mut s = EnclaveSession::new(settings.clone(), ReplayGuard::new(0), now, [7; 16]);
    let mut id = 0u64;
    let mut feed = |s: &mut EnclaveSession, msg: Request| {
        id += 1;
        let mut out = Vec::new();
        encode_frame(
            &encode_request(&ToEnclave { id, msg }),
            usize::MAX,
            &mut out,
        )
        .expect("frame");
        s.handle_input(&out, now);
    };
    let marker = bidding_core::manifest::SEAL_MARKER;
    let serve = |s: &mut EnclaveSession, closing: bool| -> Result<()> {
        loop {
            let mut progressed = false;
            while let Some(a) = s.poll_action() {
                progressed = true;
                match a {
                    Action::Decrypt(job) => {
                        let text: &[u8] = if job.context.contains_key("manifest") {
                            marker
                        } else {
                            b"000000000000100000.00"
                        };
                        s.decrypted(
                            job.ticket,
                            DecryptOutcome::Plaintext(Plaintext::new(text.to_vec().into())),
                        );
                    }
                    Action::Attest { ticket, .. } => s.attested(ticket, Ok(vec![0; 4600])),
                    Action::UseCredentials(_) => {}
                }
            }
            while s.poll_transmit().is_some() {
                progressed = true;
            }
            if s.is_ended() {
                if closing && s.end_reason() == Some("auction closed") {
                    return Ok(());
                }
                bail!("the session ended: {}", s.end_reason().unwrap_or("?"));
            }
            if !progressed {
                return Ok(());
            }
        }
    };
    feed(
        &mut s,
        Request::Hello(bidding_core::wire::Hello {
            protocol: bidding_core::wire::PROTOCOL_VERSION,
            nonce: vec![7; 32],
        }),
    );
    serve(&mut s, false)?;
    feed(
        &mut s,
        Request::Credentials(Credentials {
            access_key_id: "ASIAMEMORYBENCH00001".into(),
            secret_access_key: Secret::new("memorybenchmemorybenchmemorybench"),
            session_token: None,
            expiration: None,
            region,
        }),
    );
    feed(&mut s, Request::OpenSealed(OpenSealed { manifest }));
    for spec in &specs {
        feed(
            &mut s,
            Request::Seal(Seal {
                buyer: spec.name.clone(),
                ciphertext: vec![1; 200],
            }),
        );
    }
    serve(&mut s, false)?;
    let chunk = chunk_len_for(settings.max_frame);
    for (i, spec) in specs.iter().enumerate() {
        let f = file(i);
        let mut start = 0;
        loop {
            let end = (start + chunk).min(f.len());
            feed(
                &mut s,
                Request::FileChunk(FileChunk {
                    buyer: spec.name.clone(),
                    data: f[start..end].to_vec(),
                    last: end == f.len(),
                }),
            );
            serve(&mut s, false)?;
            if end == f.len() {
                break;
            }
            start = end;
        }
    }
    feed(&mut s, Request::Close(Default::default()));
    serve(&mut s, true)?;
    if s.end_reason() != Some("auction closed") {
        bail!("the auction did not close");
    }
    let peak = status_kib("VmHWM:")?;
    Ok(MemoryFigures {
        lots,
        buyers,
        bids: per_buyer * buyers as u64,
        largest_file_bytes: largest,
        peak_rss_mib: peak as f64 / 1024.0,
        baseline_rss_mib: baseline as f64 / 1024.0,
        bytes_per_lot: (peak.saturating_sub(baseline) as f64 * 1024.0) / lots as f64,
    })
}
