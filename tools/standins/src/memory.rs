//! How much memory the enclave's auction state takes at a set of limits: the real session
//! state machine (the one enclave-init runs), with `--max-lots` and `--max-bids` set to the
//! auction's lots and bids, fed a sealed auction of synthetic per-bid files that fills them,
//! every ciphertext "opened" at once to a fixed amount. What the limits reserve at open (the
//! lot table, the per-bid records) is most of it; the file being read is streamed, never held.
//! KMS, TLS and the driver's threads add a few MiB beside it (see `bidctl bench`).

use anyhow::{Result, anyhow, bail};
use base64::Engine;
use bidding_core::auction::RevealPolicy;
use bidding_core::cms::Plaintext;
use bidding_core::config::{AuctionConfig, BuyerSpec};
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
    // A file is made a piece at a time, each piece handed to `each` and dropped, so that the
    // figures are the session's and not a copy of the file held here.
    let file = |i: usize, each: &mut dyn FnMut(&[u8])| {
        let mut piece = String::from("[].contract,[].bid\n");
        for k in 0..per_buyer {
            let lot = (i as u64 * per_buyer + k) % lots;
            piece.push_str(&format!("L{lot},{ct}\n"));
            if piece.len() >= 64 * 1024 {
                each(piece.as_bytes());
                piece.clear();
            }
        }
        each(piece.as_bytes());
    };
    // The files' digests first, as the manifest needs them.
    let mut entries = Vec::new();
    let mut largest = 0u64;
    for (i, s) in specs.iter().enumerate() {
        let (mut size, mut digest) = (
            0u64,
            aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
        );
        file(i, &mut |piece| {
            size += piece.len() as u64;
            digest.update(piece);
        });
        largest = largest.max(size);
        entries.push(FileEntry {
            buyer: s.name.clone(),
            bucket: "bids".into(),
            key: format!("{}/encrypted.csv", s.name),
            size,
            sha256: digest.finish().as_ref().try_into().expect("32 bytes"),
            format: FileFormat::PerBid,
        });
    }
    let manifest = Manifest::new(config, entries)?.canonical_bytes();
    // Limits of exactly this auction's size: what an image built with these limits reserves.
    let settings = EnclaveSettings {
        max_lots: lots as usize,
        max_bids: (per_buyer * buyers as u64) as usize,
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
        // Chunks as the parent sends them; one is held back until the next shows it is not
        // the last.
        let mut held: Vec<u8> = Vec::with_capacity(2 * chunk);
        let mut result = Ok(());
        let mut send = |s: &mut EnclaveSession, data: Vec<u8>, last: bool| {
            feed(
                s,
                Request::FileChunk(FileChunk {
                    buyer: spec.name.clone(),
                    data,
                    last,
                }),
            );
            serve(s, false)
        };
        file(i, &mut |piece| {
            held.extend_from_slice(piece);
            while held.len() > chunk && result.is_ok() {
                let rest = held.split_off(chunk);
                let data = std::mem::replace(&mut held, rest);
                result = send(&mut s, data, false);
            }
        });
        result?;
        send(&mut s, held, true)?;
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
