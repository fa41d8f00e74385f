//! The certificate chain: trusted root = cabundle[0] → cabundle[1] → … → leaf `certificate`.
//!
//! Only what the NSM's chains use is accepted: P-384 keys and ecdsa-with-SHA384 signatures.
//! There is no path building: the order is the bundle's, and each certificate must be issued by
//! the one before it.

use super::document::DocumentFields;
use super::{AttestationError, CertPosition};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1, UnparsedPublicKey};
use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::oid::db::rfc5912::{ECDSA_WITH_SHA_384, ID_EC_PUBLIC_KEY, SECP_384_R_1};
use x509_cert::der::{Decode, Header, Reader, SliceReader};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};

struct Cert<'a> {
    pos: CertPosition,
    der: &'a [u8],
    cert: Certificate,
}

/// Checks the chain of `fields` from `root` down, every certificate's validity at `at_ms`, and
/// returns the leaf's P-384 public key (uncompressed point) for the COSE signature check.
pub(super) fn verify_chain(
    root: &[u8],
    fields: &DocumentFields,
    at_ms: u64,
) -> Result<Vec<u8>, AttestationError> {
    if fields.cabundle.first().map(Vec::as_slice) != Some(root) {
        return Err(AttestationError::RootMismatch);
    }
    let chain = fields
        .cabundle
        .iter()
        .enumerate()
        .map(|(i, der)| (CertPosition::Bundle(i), der))
        .chain([(CertPosition::Leaf, &fields.certificate)])
        .map(|(pos, der)| parse(pos, der))
        .collect::<Result<Vec<_>, _>>()?;

    for (i, pair) in chain.windows(2).enumerate() {
        let [issuer, child] = pair else { continue };
        // Intermediates below `issuer`: those between it and the leaf.
        let below = chain.len().saturating_sub(i + 2);
        check_link(issuer, child, below)?;
    }
    for c in &chain {
        check_validity(c, at_ms)?;
    }
    let Some(leaf) = chain.last() else {
        return Err(AttestationError::CertificateParse {
            cert: CertPosition::Leaf,
            problem: "missing".into(),
        });
    };
    if key_usage(leaf)?.is_some_and(|ku| !ku.digital_signature()) {
        return Err(unsupported(
            leaf.pos,
            "keyUsage does not allow digitalSignature",
        ));
    }
    p384_key(leaf).map(<[u8]>::to_vec)
}

fn parse(pos: CertPosition, der: &[u8]) -> Result<Cert<'_>, AttestationError> {
    let cert = Certificate::from_der(der).map_err(|e| AttestationError::CertificateParse {
        cert: pos,
        problem: e.to_string(),
    })?;
    Ok(Cert { pos, der, cert })
}

fn check_link(issuer: &Cert, child: &Cert, below: usize) -> Result<(), AttestationError> {
    if child.cert.tbs_certificate.issuer != issuer.cert.tbs_certificate.subject {
        return Err(AttestationError::IssuerMismatch {
            cert: child.pos,
            issuer: issuer.pos,
        });
    }

    let not_ca = |reason: String| AttestationError::NotCa {
        cert: child.pos,
        issuer: issuer.pos,
        reason,
    };
    let bc = extension::<BasicConstraints>(issuer)?
        .ok_or_else(|| not_ca("it has no basicConstraints".into()))?;
    if !bc.ca {
        return Err(not_ca("its basicConstraints say it is not a CA".into()));
    }
    if let Some(limit) = bc.path_len_constraint
        && below > usize::from(limit)
    {
        return Err(not_ca(format!(
            "its path length limit is {limit}, and {below} CAs follow it"
        )));
    }
    if key_usage(issuer)?.is_some_and(|ku| !ku.key_cert_sign()) {
        return Err(not_ca("its keyUsage does not allow keyCertSign".into()));
    }

    let alg = &child.cert.signature_algorithm;
    if alg.oid != ECDSA_WITH_SHA_384
        || alg.parameters.is_some()
        || child.cert.tbs_certificate.signature != *alg
    {
        return Err(unsupported(
            child.pos,
            "it is not signed with ecdsa-with-SHA384",
        ));
    }
    let signature =
        child
            .cert
            .signature
            .as_bytes()
            .ok_or_else(|| AttestationError::CertificateParse {
                cert: child.pos,
                problem: "signature BIT STRING has unused bits".into(),
            })?;
    let key = p384_key(issuer)?;
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, key)
        .verify(tbs_bytes(child)?, signature)
        .map_err(|_| AttestationError::ChainSignature {
            cert: child.pos,
            issuer: issuer.pos,
        })
}

/// The TBSCertificate exactly as signed: the first element of the outer SEQUENCE, taken from
/// the received bytes rather than re-encoded.
fn tbs_bytes<'a>(c: &Cert<'a>) -> Result<&'a [u8], AttestationError> {
    let tbs = || -> x509_cert::der::Result<&'a [u8]> {
        let mut r = SliceReader::new(c.der)?;
        Header::decode(&mut r)?;
        r.tlv_bytes()
    };
    tbs().map_err(|e| AttestationError::CertificateParse {
        cert: c.pos,
        problem: e.to_string(),
    })
}

fn check_validity(c: &Cert, at_ms: u64) -> Result<(), AttestationError> {
    let validity = &c.cert.tbs_certificate.validity;
    let not_before = validity.not_before.to_unix_duration().as_secs();
    let not_after = validity.not_after.to_unix_duration().as_secs();
    // Certificate times have whole seconds and notAfter is inclusive (RFC 5280 §4.1.2.5).
    let at_s = at_ms / 1000;
    if at_s < not_before {
        return Err(AttestationError::NotYetValid {
            cert: c.pos,
            not_before,
            at_ms,
        });
    }
    if at_s > not_after {
        return Err(AttestationError::Expired {
            cert: c.pos,
            not_after,
            at_ms,
        });
    }
    Ok(())
}

fn p384_key<'a>(c: &'a Cert) -> Result<&'a [u8], AttestationError> {
    let spki = &c.cert.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY || curve != Some(SECP_384_R_1) {
        return Err(unsupported(c.pos, "its public key is not on P-384"));
    }
    spki.subject_public_key
        .as_bytes()
        .ok_or_else(|| unsupported(c.pos, "its public key BIT STRING has unused bits"))
}

fn key_usage(c: &Cert) -> Result<Option<KeyUsage>, AttestationError> {
    extension::<KeyUsage>(c)
}

/// The extension of type `T`, if present.
fn extension<T>(c: &Cert) -> Result<Option<T>, AttestationError>
where
    T: AssociatedOid + for<'d> Decode<'d>,
{
    let Some(ext) = c
        .cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == T::OID)
    else {
        return Ok(None);
    };
    T::from_der(ext.extn_value.as_bytes())
        .map(Some)
        .map_err(|e| AttestationError::CertificateParse {
            cert: c.pos,
            problem: format!("extension {}: {e}", T::OID),
        })
}

fn unsupported(cert: CertPosition, problem: &str) -> AttestationError {
    AttestationError::CertificateUnsupported {
        cert,
        problem: problem.into(),
    }
}
