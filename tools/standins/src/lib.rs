//! Local stand-ins for the AWS services an auction uses, with the stack built on them: a KMS
//! emulator, an S3 server, the IAM policy language both enforce, the local stack. The
//! [`stack::Stack`] is what the demo, the dev stack ([`dev_stack`]), the benchmarks ([`bench`],
//! [`memory`]) and the end-to-end tests stand on; [`cleanup`] is the registry of the child
//! processes it starts, stopped on Ctrl-C. It depends on `bidding-client` (buyers seal
//! their bids with the same code `bidctl` runs), `bidding-parent`, `bidding-core` and
//! `enclave-init` (the software NSM's dev root and PCR0); nothing here is linked into the
//! enclave image or the parent, and only `bidctl` and the VM harness (`bidding-nitro-vm`) use it.
//!
//! # The KMS emulator
//!
//! [`kms_emulator`] is the one emulator anywhere that speaks KMS's `Recipient` (a Nitro
//! attestation document in a `Decrypt` or `GenerateDataKey`, answered only to that enclave):
//! the peers the tests also run (moto) do not, so the enclave's KMS path has no other local
//! counterpart. What of KMS it models, as a client would see it:
//!
//! - the KMS JSON protocol over HTTPS (its own CA) or plain HTTP, SigV4 checked as AWS checks it,
//!   with KMS's error names (`__type`) and HTTP status codes ([`kms_emulator::error`]);
//! - the operations `CreateKey`, `DescribeKey`, `ListKeys`, `EnableKey`, `DisableKey`,
//!   `GetKeyPolicy`, `PutKeyPolicy`, `Encrypt`, `Decrypt` and `GenerateDataKey`, on
//!   `SYMMETRIC_DEFAULT` keys that persist in a state directory ([`kms_emulator::state`]);
//! - ciphertext blobs bound to their key and encryption context ([`kms_emulator::blob`]);
//! - key policies and identity policies in AWS's JSON, across accounts, with the Nitro
//!   condition keys `kms:RecipientAttestation:ImageSha384` and `:PCR<n>` and
//!   `kms:EncryptionContext…` ([`kms_emulator::policy`], [`iam`]);
//! - `Recipient`: an attestation document verified against AWS's root (or the software NSM's
//!   dev root), the answer as `CiphertextForRecipient`, CMS EnvelopedData to the document's RSA
//!   key, as KMS shapes it ([`kms_emulator::recipient`]);
//! - injected faults: latency, throttling, 500s, reset connections ([`kms_emulator::faults`]).
//!
//! What it does not model: asymmetric and HMAC keys, aliases (an alias is not found), grants,
//! key rotation, multi-Region keys, imported key material, custom key stores, tags, CloudTrail,
//! and request quotas beyond the faults it is told to inject. A request for any of these is
//! refused, never half-served: whatever real KMS refuses, the emulator must refuse too, because
//! a stand-in that accepts more hides bugs only production would find.

pub mod bench;
pub mod cleanup;
pub mod demo;
pub mod dev_stack;
pub mod iam;
pub mod kms_emulator;
pub mod memory;
pub mod s3_server;
pub mod stack;
