//! The two ends of a parent↔enclave session as sans-IO state machines.
//!
//! Both take bytes, events and the current time (milliseconds since the Unix epoch, passed in)
//! and hand back bytes to send, actions to perform and when to wake up, in the manner of
//! quinn-proto and rustls. Drivers own the sockets, threads, clock, NSM and KMS connections.

pub mod decrypt;
pub mod enclave;
#[cfg(feature = "verify")]
pub mod parent;

/// Milliseconds since the Unix epoch: the only notion of time in the state machines.
pub type Millis = u64;
