//! `bidding-core`: every format, protocol and decision of the sealed-bid auction service, with
//! no I/O. Drivers (the parent, the enclave, the tools) own sockets, files, clocks and threads
//! and feed this crate bytes, events and the current time.

pub mod amount;
pub mod attestation;
pub mod auction;
pub mod ber;
pub mod bidfile;
mod cbor;
pub mod cms;
pub mod config;
pub mod credentials;
pub mod endpoint;
pub mod esdk;
pub mod kms;
pub mod manifest;
pub mod names;
pub mod nsm;
pub mod output;
pub mod seal_record;
pub mod session;
pub mod sigv4;
#[cfg(feature = "verify")]
pub mod verify;
pub mod wire;

/// `1 bid`, `2 bids`, `0 bids`: a count with its noun in the right number, for messages.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Constant-time equality for secrets and MACs.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    #[allow(deprecated)]
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}
