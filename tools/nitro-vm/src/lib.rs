//! The VM harness: enclave images written by AWS's own EIF builder, run under QEMU's
//! nitro-enclave machine. [`eif`] writes an EIF with AWS's builder, whose PCRs
//! `tests/eif_builder.rs` checks against `bidctl pcr` (`bidding-client`'s [`bidding_client::pcr`]);
//! [`nitro_vm`] boots one under QEMU with vhost-device-vsock (Unix sockets only, never AF_VSOCK);
//! the `nitro-qemu-boot` binary checks a boot and its NSM's attestation
//! (tools/nitro-vm/qemu/boot-test.sh runs it), `nitro-qemu-auction` runs whole sealed auctions
//! through such a VM on the local stand-ins (tools/nitro-vm/qemu/auction-test.sh). It may depend
//! on `bidding-standins`, `bidding-client` and `bidding-core`, never on `bidctl` (a binary: the
//! scripts pass its path). It is its own workspace with its own lock file (Cargo.toml says why);
//! `qemu/` holds the scripts that build QEMU, the guest kernel and the vsock backend, and run it.

pub mod eif;
pub mod flags;
pub mod nitro_vm;
