//! The enclave's session state machine (protocol 3: manifest or unsealed terms, seals, whole
//! files, close) fed arbitrary bytes from a hostile parent, in chunks the input picks, with
//! every KMS job answered: a seal (its context names a manifest) opens to the seal marker, a
//! bid to a secret amount, and every seventh bid is refused as a buyer's fault. It must never
//! panic; no frame it sends may carry the plaintext it opened; and nothing of a result leaves
//! unless the parent asked to close.
#![no_main]
use bidding_core::auction::Reason;
use bidding_core::cms::Plaintext;
use bidding_core::manifest::SEAL_MARKER;
use bidding_core::session::enclave::{
    Action, DecryptOutcome, EnclaveSession, EnclaveSettings, ReplayGuard,
};
use bidding_core::wire::{FrameDecoder, Response, decode_response};
use libfuzzer_sys::fuzz_target;

const SECRET_AMOUNT: &[u8] = b"98765432101";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fuzz_target!(|data: &[u8]| {
    let settings = EnclaveSettings {
        max_frame: 4096,
        max_pending_bids: 8,
        max_lots: 16,
        max_bids: 64,
        max_file_bytes: 16 * 1024,
        ..EnclaveSettings::default()
    };
    let mut s = EnclaveSession::new(settings, ReplayGuard::new(64), 1_900_000_000_000, [3; 16]);
    let mut sent = Vec::new();
    let mut bids = 0u64;
    for (i, chunk) in data.chunks(97).enumerate() {
        s.handle_input(chunk, 1_900_000_000_000 + i as u64);
        while let Some(action) = s.poll_action() {
            match action {
                Action::Attest { ticket, .. } => s.attested(ticket, Ok(vec![0xa0])),
                Action::UseCredentials(_) => {}
                Action::Decrypt(job) if job.context.contains_key("manifest") => s.decrypted(
                    job.ticket,
                    DecryptOutcome::Plaintext(Plaintext::new(SEAL_MARKER.to_vec().into())),
                ),
                Action::Decrypt(job) => {
                    bids += 1;
                    let outcome = if bids.is_multiple_of(7) {
                        DecryptOutcome::Disqualified(Reason::WrongKey)
                    } else {
                        DecryptOutcome::Plaintext(Plaintext::new(SECRET_AMOUNT.to_vec().into()))
                    };
                    s.decrypted(job.ticket, outcome)
                }
            }
        }
        while let Some(out) = s.poll_transmit() {
            sent.extend_from_slice(&out);
        }
    }
    s.handle_eof();
    // Every frame the enclave sent, decoded (it sends nothing it cannot decode).
    let mut frames = FrameDecoder::new(usize::MAX);
    let mut rest = &sent[..];
    let mut replies = Vec::new();
    while let Some(frame) = frames.decode(&mut rest).expect("the enclave's framing") {
        let n = frames.frame_number() - 1;
        replies.push((
            decode_response(n, &frame)
                .expect("the enclave's frames decode")
                .msg,
            frame,
        ));
    }
    // Error replies may quote what the parent sent (an unknown field's name, say); only the
    // plaintext, which the parent never had, must not come out. A result chunk carries the
    // output as raw bytes, where terms the input chose may reveal a price.
    if !contains(data, SECRET_AMOUNT) {
        for (msg, frame) in &replies {
            if !matches!(msg, Response::ResultChunk(_)) {
                assert!(!contains(frame, SECRET_AMOUNT));
            }
        }
    }
    // The result is released at close and only then. (JSON may spell `close` with escapes.)
    if !contains(data, b"close") && !contains(data, b"\\") {
        assert!(
            !replies
                .iter()
                .any(|(m, _)| matches!(m, Response::ResultChunk(_) | Response::Closed(_)))
        );
    }
});
