//! The unsealed image's per-boot memory of opened ciphertexts (DESIGN §2): in an auction the
//! buyers did not seal, a ciphertext counts once per boot. The sealed image has none: a rerun
//! of a sealed manifest gives the same bytes, so there is nothing to remember.

use std::collections::HashSet;

/// SHA-256 digests of every ciphertext accepted since boot in **unsealed** auctions. Kept by
/// the driver across sessions, because a parent can reconnect and try again.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashSet<[u8; 32]>,
    #[cfg_attr(not(feature = "unsealed"), allow(dead_code))]
    capacity: usize,
}

impl ReplayGuard {
    /// At most `capacity` ciphertexts per boot (32 bytes each plus table overhead).
    pub fn new(capacity: usize) -> Self {
        ReplayGuard {
            seen: HashSet::new(),
            capacity,
        }
    }
    pub fn len(&self) -> usize {
        self.seen.len()
    }
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Admits one ciphertext: it must be new since boot, and fit.
    #[cfg(feature = "unsealed")]
    pub(super) fn admit(&mut self, digest: [u8; 32]) -> Result<(), Refused> {
        if self.seen.contains(&digest) {
            return Err(Refused::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(Refused::Full(self.capacity));
        }
        self.seen.insert(digest);
        Ok(())
    }
}

/// Why [`ReplayGuard::admit`] refused a ciphertext.
#[cfg(feature = "unsealed")]
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    Replayed,
    /// At capacity: this many ciphertexts per boot.
    Full(usize),
}

#[cfg(feature = "unsealed")]
impl Refused {
    /// The session's error for a refused ciphertext; `what` names its file.
    pub(super) fn error(self, what: &str, holds: &str) -> (crate::wire::ErrorCode, String) {
        use crate::wire::ErrorCode;
        match self {
            Refused::Replayed => (
                ErrorCode::ReplayedCiphertext,
                format!(
                    "{what} holds {holds} already used since this enclave started; in an unsealed auction a ciphertext counts once per boot (restart the enclave to rerun, or seal the auction)"
                ),
            ),
            Refused::Full(capacity) => (
                ErrorCode::TooManyBids,
                format!("this enclave opens at most {capacity} unsealed ciphertexts per boot"),
            ),
        }
    }
}

#[cfg(all(test, feature = "unsealed"))]
mod tests {
    use super::*;

    #[test]
    fn a_ciphertext_counts_once_per_boot_within_capacity() {
        let mut g = ReplayGuard::new(2);
        assert_eq!(g.admit([1; 32]), Ok(()));
        assert_eq!(g.admit([1; 32]), Err(Refused::Replayed));
        assert_eq!(g.admit([2; 32]), Ok(()));
        assert_eq!(g.admit([3; 32]), Err(Refused::Full(2)));
        assert_eq!(g.len(), 2);
        let (code, message) = Refused::Full(2).error("buyer `B`'s file", "a ciphertext");
        assert_eq!(code, crate::wire::ErrorCode::TooManyBids);
        assert_eq!(
            message,
            "this enclave opens at most 2 unsealed ciphertexts per boot"
        );
    }
}
