//! The enclave's session state machine fed arbitrary bytes from a hostile parent, in chunks
//! the input picks, with every bid answered: it must never panic, and no frame it sends may
//! carry the plaintext it opened.
#![no_main]
use bidding_core::cms::Plaintext;
use bidding_core::session::enclave::{
    Action, DecryptOutcome, EnclaveSession, EnclaveSettings, ReplayGuard,
};
use libfuzzer_sys::fuzz_target;

const SECRET_AMOUNT: &[u8] = b"98765432101";

fuzz_target!(|data: &[u8]| {
    let settings = EnclaveSettings {
        max_frame: 4096,
        max_pending_bids: 8,
        max_lots: 16,
        ..EnclaveSettings::default()
    };
    let mut s = EnclaveSession::new(settings, ReplayGuard::new(64), 1_900_000_000_000);
    let mut sent = Vec::new();
    for (i, chunk) in data.chunks(97).enumerate() {
        s.handle_input(chunk, 1_900_000_000_000 + i as u64);
        while let Some(action) = s.poll_action() {
            match action {
                Action::Attest { ticket, .. } => s.attested(ticket, Ok(vec![0xa0])),
                Action::UseCredentials(_) => {}
                Action::Decrypt(job) => s.decrypted(
                    job.ticket,
                    DecryptOutcome::Plaintext(Plaintext::new(SECRET_AMOUNT.to_vec().into())),
                ),
            }
        }
        if let Some(out) = s.poll_transmit() {
            sent.extend_from_slice(&out);
        }
    }
    s.handle_eof();
    // Error replies may quote what the parent sent (an unknown field's name, say); only the
    // plaintext, which the parent never had, must not come out.
    let contains = |hay: &[u8]| hay.windows(SECRET_AMOUNT.len()).any(|w| w == SECRET_AMOUNT);
    if !contains(data) {
        assert!(!contains(&sent));
    }
});
