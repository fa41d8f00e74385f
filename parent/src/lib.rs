//! The host-side half of the sealed-bid auction service: configuration, AWS (S3, credentials),
//! the enclave session and the run itself. The binary is a thin shell over [`run::run`].

pub mod aws;
pub mod cli;
pub mod config;
pub mod enclave;
pub mod log;
pub mod published;
pub mod run;
