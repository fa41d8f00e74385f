//! enclave-init: the sealed-bid enclave. Drives `bidding-core`'s session state machine over
//! vsock, opens bids with KMS (TLS inside the enclave, Recipient attestation) and the NSM, and
//! can run as the image's PID 1.

pub mod alloc;
pub mod cli;
pub mod http;
pub mod keys;
pub mod kms;
pub mod limits;
pub mod logging;
pub mod nsm;
pub mod pid1;
pub mod server;
#[cfg(feature = "dev")]
pub mod soft_nsm;
pub mod transport;
