//! AWS's image-format crate against our tools: `tests/eif_builder.rs` checks `bidctl pcr`
//! against its EIF builder, and the `nitro-qemu-boot` binary boots an EIF it writes under QEMU's
//! `nitro-enclave` machine (tools/nitro-qemu/boot-test.sh runs it), and `nitro-qemu-auction`
//! runs whole sealed auctions through such a VM (tools/nitro-qemu/auction-test.sh).

pub mod eif;
pub mod flags;
pub mod nitro_vm;
