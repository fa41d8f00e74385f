//! What an auction's users run on their own machines, outside the enclave: a KMS client, bid
//! encryption, seals, key policies, image measurement. A buyer encrypts bids under their own
//! KMS key ([`encrypt`]), checks and seals the operator's manifest ([`seal`]), and writes the key
//! policy that lets only the attested enclave decrypt ([`key_policy`]); anyone measures an
//! enclave image ([`initramfs`], [`pcr`]) to know the PCR0 a result must be attested by. It
//! depends only on `bidding-core` (every format and rule) and `bidding-parent` (its AWS HTTP
//! client and credential chain); it starts no servers and no processes, which are
//! `bidding-standins`' (the local stand-ins for AWS), and prints nothing, which is `bidctl`'s.
//! The rules it applies are written in DESIGN §2 (seals, key policies) and in each module.

pub mod encrypt;
pub mod initramfs;
pub mod key_policy;
pub mod kms_client;
pub mod pcr;
pub mod seal;

/// The DER of a certificate given as PEM (or already DER).
pub fn pem_certificate(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(bytes.to_vec());
    }
    let cert = rustls_pki_types::CertificateDer::from_pem_slice(bytes)
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    Ok(cert.as_ref().to_vec())
}
