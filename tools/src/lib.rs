//! The library behind `bidctl`: local stand-ins for AWS and the tools buyers and operators run.

pub mod encrypt;
pub mod kms_client;
pub mod kms_emulator;
pub mod s3_server;
pub mod verify;
