//! The emulator's TLS identity: a CA made once per state directory (`ca.pem` is what clients
//! trust) and a server certificate for `kms.<region>.amazonaws.com`, `localhost`, 127.0.0.1
//! and ::1, issued from it at every start so a change of region needs no manual step.

use super::state::write_atomic;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const SERVER_CERT: &str = "server.pem";
pub const SERVER_KEY: &str = "server-key.pem";

const DAY: Duration = Duration::from_secs(86_400);

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "bidding (dev only)");
    dn.push(DnType::CommonName, "KMS emulator local CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn offset_time(t: SystemTime) -> Result<time::OffsetDateTime, String> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "clock before 1970")?
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64).map_err(|e| e.to_string())
}

/// Loads the CA from `dir`, making it on first use. Callers hold the state directory's lock.
fn load_or_create_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>, String> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    if key_path.exists() {
        let pem = std::fs::read_to_string(&key_path)
            .map_err(|e| format!("reading {}: {e}", key_path.display()))?;
        let key = KeyPair::from_pem(&pem)
            .map_err(|e| format!("{}: not a PEM private key: {e}", key_path.display()))?;
        let cert = std::fs::read(&cert_path)
            .map_err(|e| format!("reading {}: {e}", cert_path.display()))?;
        let der = CertificateDer::from_pem_slice(&cert)
            .map_err(|e| format!("{}: not a PEM certificate: {e}", cert_path.display()))?;
        let point = key.public_key_raw();
        if !der.windows(point.len()).any(|w| w == point) {
            return Err(format!(
                "{} and {} do not belong together",
                cert_path.display(),
                key_path.display()
            ));
        }
        return Ok(Issuer::new(ca_params(), key));
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut p = ca_params();
    let now = SystemTime::now();
    p.not_before = offset_time(now - DAY)?;
    p.not_after = offset_time(now + 3650 * DAY)?;
    let cert = p
        .self_signed(&key)
        .map_err(|e| format!("signing the CA: {e}"))?;
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(Issuer::new(ca_params(), key))
}

/// Makes (or reuses) the CA, issues a fresh server certificate and returns the rustls
/// configuration serving it.
pub fn server_config(dir: &Path, region: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    server_config_as(dir, region, SERVER_CERT, SERVER_KEY)
}

/// The same, writing the server certificate and key under other names in `dir`: for another
/// local stand-in (the S3 server) that clients reach with the same CA bundle.
pub fn server_config_as(
    dir: &Path,
    region: &str,
    cert_name: &str,
    key_name: &str,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let ca = load_or_create_ca(dir)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut p = CertificateParams::default();
    let host = bidding_core::kms::endpoint_host(region);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host.clone());
    p.distinguished_name = dn;
    p.subject_alt_names = vec![
        SanType::DnsName(host.try_into().map_err(|e| format!("server name: {e}"))?),
        SanType::DnsName(
            "localhost"
                .try_into()
                .map_err(|e| format!("server name: {e}"))?,
        ),
        SanType::IpAddress([127, 0, 0, 1].into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    p.not_before = offset_time(now - DAY)?;
    p.not_after = offset_time(now + 365 * DAY)?;
    let cert = p
        .signed_by(&key, &ca)
        .map_err(|e| format!("signing the server certificate: {e}"))?;
    write_atomic(&dir.join(key_name), key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&dir.join(cert_name), cert.pem().as_bytes(), 0o644)?;

    let chain = vec![cert.der().clone()];
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS configuration: {e}"))?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(|e| format!("TLS configuration: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
