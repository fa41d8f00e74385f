//! The library behind `bidctl`: local stand-ins for AWS and the tools buyers and operators run.

pub mod initramfs;
pub mod pcr;
