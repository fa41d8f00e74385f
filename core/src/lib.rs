//! `bidding-core`: every format, protocol and decision of the sealed-bid auction service, with
//! no I/O. Drivers (the parent, the enclave, the tools) own sockets, files, clocks and threads
//! and feed this crate bytes, events and the current time.

pub mod amount;
pub mod attestation;
pub mod auction;
pub mod bidfile;
pub mod config;
pub mod credentials;
pub mod names;
pub mod output;
pub mod wire;
