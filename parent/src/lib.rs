//! The host-side half of the sealed-bid auction service. The binary drives the enclave; this
//! library holds what it needs from the outside world, starting with AWS (S3, credentials).

pub mod aws;
