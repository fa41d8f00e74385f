//! A software Nitro Secure Module for dev builds and tests (cargo feature `dev`; never in the
//! enclave image).
//!
//! It answers the NSM's requests (bidding-core's `nsm` types) the way the real module does, limits and error codes included, and its attestation documents have the real
//! structure byte for byte: untagged COSE_Sign1 signed with ES384, the nine payload fields in
//! the NSM's order, PCRs 0 to 15 of 48 bytes each, a cabundle of four certificates ordered
//! root first, and a short-lived leaf. Only the trust anchor differs: the chain ends at a dev
//! root kept in a directory (`root.pem`), which verifiers must be told to trust explicitly.
//!
//! PCR values:
//! - PCR0: SHA-384 of the running executable (`/proc/self/exe`), so that, as on real hardware,
//!   a code change changes PCR0.
//! - PCR1: SHA-384 of [`PCR1_INPUT`]; PCR2: SHA-384 of [`PCR2_INPUT`] — fixed stand-ins for
//!   the kernel/boot and application measurements, the same in every process.
//! - PCR4: SHA-384 of the module's instance id (as the real PCR4 measures the instance ID).
//! - Every other PCR, PCR3 (no IAM role) and PCR8 (unsigned image) included, is zero.
//!
//! PCRs 0 to 15 are locked, like the boot-time PCRs of a real enclave; 16 to 31 start at zero
//! and can be extended and locked.

use crate::nsm::Nsm;
use aws_lc_rs::digest::{SHA384, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use bidding_core::attestation::{DocumentFields, SIGNATURE_LEN, encode_document};
use bidding_core::nsm::{Digest, ErrorCode, Request, Response};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// PCRs the NSM has; indexes at or above are `InvalidIndex`.
pub const MAX_PCRS: u16 = 32;
/// PCRs in documents and locked from boot, as on a real enclave.
const BOOT_PCRS: u8 = 16;
const PCR_LEN: usize = 48;
/// The NSM's limits on caller data in an attestation document.
const MAX_USER_DATA: usize = 512;
const MAX_NONCE: usize = 512;
const MAX_PUBLIC_KEY: usize = 1024;
/// The driver's request buffer (`NSM_REQUEST_MAX_SIZE`); larger ExtendPCR data cannot be sent.
const MAX_EXTEND_DATA: usize = 0x1000;
/// GetRandom answers this many bytes, as the real module does.
const RANDOM_LEN: usize = 256;
/// Real leaf certificates live about three hours.
const LEAF_LIFETIME: Duration = Duration::from_secs(3 * 3600);
/// A leaf with less left than this is replaced before signing, so a document stays verifiable
/// for far longer than the five minutes a consumer such as KMS accepts it.
const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(3600);

pub const PCR1_INPUT: &[u8] = b"bidding software NSM: PCR1 stand-in (kernel and boot ramfs)";
pub const PCR2_INPUT: &[u8] = b"bidding software NSM: PCR2 stand-in (user application)";

const ROOT_CERT: &str = "root.pem";
const ROOT_KEY: &str = "root-key.pem";
const LOCK: &str = ".lock";
const REGION: &str = "us-east-1";

/// How a [`SoftNsm`] differs from the default, for tests.
#[derive(Debug, Clone, Default)]
pub struct SoftNsmOptions {
    /// Replacement values for boot PCRs (index below 16), e.g. a chosen PCR0.
    pub pcrs: BTreeMap<u8, [u8; PCR_LEN]>,
    /// The module's clock runs this far behind the system clock: its documents' timestamps
    /// and its leaf's validity are shifted back (for tests of stale documents).
    pub clock_behind: Duration,
    /// The dev enclave's rule set, measured into PCR0 with the executable ([`dev_pcr0`]).
    pub rules: bidding_core::config::Mode,
}

/// The software NSM. Cheap to share: every request takes `&self`.
pub struct SoftNsm {
    module_id: String,
    /// The dev root first, then three intermediates.
    cabundle: Vec<Vec<u8>>,
    issuer: Issuer<'static, KeyPair>,
    leaf: Mutex<Leaf>,
    pcrs: Mutex<[Pcr; MAX_PCRS as usize]>,
    clock_behind: Duration,
    rng: SystemRandom,
}

impl std::fmt::Debug for SoftNsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftNsm")
            .field("module_id", &self.module_id)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
struct Pcr {
    value: [u8; PCR_LEN],
    locked: bool,
}

struct Leaf {
    der: Vec<u8>,
    key: EcdsaKeyPair,
    not_after: SystemTime,
}

impl SoftNsm {
    /// Opens the dev chain in `dir` (creating the directory and its root on first use) and
    /// starts a module with fresh intermediates, leaf and module id.
    pub fn open(dir: &Path) -> Result<SoftNsm, String> {
        SoftNsm::open_with(dir, SoftNsmOptions::default())
    }

    /// As [`SoftNsm::open`], measuring `pcr0` instead of the running executable.
    pub fn open_with_pcr0(dir: &Path, pcr0: [u8; PCR_LEN]) -> Result<SoftNsm, String> {
        SoftNsm::open_with(
            dir,
            SoftNsmOptions {
                pcrs: BTreeMap::from([(0, pcr0)]),
                ..SoftNsmOptions::default()
            },
        )
    }

    pub fn open_with(dir: &Path, options: SoftNsmOptions) -> Result<SoftNsm, String> {
        if let Some(&i) = options.pcrs.keys().find(|&&i| i >= BOOT_PCRS) {
            return Err(format!(
                "software NSM: PCR{i} is not a boot PCR (0 to 15) and cannot be preset"
            ));
        }
        let (root_der, root_issuer) = load_or_create_root(dir)?;
        let rng = SystemRandom::new();
        let instance = format!("i-{}", random_hex(&rng, 8)?);
        let module_id = format!("{instance}-enc{}", random_hex(&rng, 8)?);

        let now = SystemTime::now() - options.clock_behind;
        let day = Duration::from_secs(86_400);
        let org = "software NSM (dev, not AWS)";
        let (int1, int1_issuer) = issue_ca(
            &format!("{}.{REGION}.aws.nitro-enclaves", random_hex(&rng, 8)?),
            org,
            2,
            (now - day, now + 30 * day),
            &root_issuer,
        )?;
        let (int2, int2_issuer) = issue_ca(
            &format!("{}.zonal.{REGION}.aws.nitro-enclaves", random_hex(&rng, 8)?),
            org,
            1,
            (now - day, now + 14 * day),
            &int1_issuer,
        )?;
        let (int3, int3_issuer) = issue_ca(
            &format!("{instance}.{REGION}.aws.nitro-enclaves"),
            org,
            0,
            (now - day, now + 3 * day),
            &int2_issuer,
        )?;
        let leaf = issue_leaf(&module_id, now, &int3_issuer)?;

        let mut pcrs = [Pcr {
            value: [0; PCR_LEN],
            locked: false,
        }; MAX_PCRS as usize];
        pcrs[0].value = match options.pcrs.get(&0) {
            Some(v) => *v,
            None if options.rules == bidding_core::config::Mode::Sealed => executable_pcr0()?,
            None => {
                let exe = std::fs::read("/proc/self/exe")
                    .map_err(|e| format!("software NSM: reading /proc/self/exe for PCR0: {e}"))?;
                dev_pcr0(&exe, options.rules)
            }
        };
        pcrs[1].value = sha384(PCR1_INPUT);
        pcrs[2].value = sha384(PCR2_INPUT);
        pcrs[4].value = sha384(instance.as_bytes());
        for (&i, v) in &options.pcrs {
            pcrs[usize::from(i)].value = *v;
        }
        for p in pcrs.iter_mut().take(usize::from(BOOT_PCRS)) {
            p.locked = true;
        }

        Ok(SoftNsm {
            module_id,
            cabundle: vec![root_der, int1, int2, int3],
            issuer: int3_issuer,
            leaf: Mutex::new(leaf),
            pcrs: Mutex::new(pcrs),
            clock_behind: options.clock_behind,
            rng,
        })
    }

    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    /// The current value of PCR `index` (0 to 31).
    pub fn pcr(&self, index: u8) -> Option<[u8; PCR_LEN]> {
        let pcrs = self.pcrs.lock().unwrap_or_else(|e| e.into_inner());
        pcrs.get(usize::from(index)).map(|p| p.value)
    }

    /// DER of the dev root, `cabundle[0]` of every document.
    pub fn root_der(&self) -> &[u8] {
        &self.cabundle[0]
    }

    fn now(&self) -> SystemTime {
        SystemTime::now() - self.clock_behind
    }

    fn attestation(
        &self,
        user_data: Option<Vec<u8>>,
        nonce: Option<Vec<u8>>,
        public_key: Option<Vec<u8>>,
    ) -> Response {
        let too_long = |v: &Option<Vec<u8>>, max: usize| v.as_ref().is_some_and(|v| v.len() > max);
        if too_long(&user_data, MAX_USER_DATA)
            || too_long(&nonce, MAX_NONCE)
            || too_long(&public_key, MAX_PUBLIC_KEY)
        {
            return Response::Error(ErrorCode::InvalidArgument);
        }
        let now = self.now();
        let mut leaf = self.leaf.lock().unwrap_or_else(|e| e.into_inner());
        if leaf
            .not_after
            .duration_since(now)
            .is_ok_and(|left| left < LEAF_RENEW_BEFORE)
            || leaf.not_after <= now
        {
            match issue_leaf(&self.module_id, now, &self.issuer) {
                Ok(l) => *leaf = l,
                Err(_) => return Response::Error(ErrorCode::InternalError),
            }
        }
        let pcrs = {
            let pcrs = self.pcrs.lock().unwrap_or_else(|e| e.into_inner());
            (0..BOOT_PCRS)
                .map(|i| (i, pcrs[usize::from(i)].value.to_vec()))
                .collect()
        };
        let fields = DocumentFields {
            module_id: self.module_id.clone(),
            timestamp: unix_ms(now),
            pcrs,
            certificate: leaf.der.clone(),
            cabundle: self.cabundle.clone(),
            public_key,
            user_data,
            nonce,
        };
        let signed = encode_document(&fields, |tbs| {
            let sig = leaf.key.sign(&self.rng, tbs)?;
            <[u8; SIGNATURE_LEN]>::try_from(sig.as_ref()).map_err(|_| aws_lc_rs::error::Unspecified)
        });
        match signed {
            Ok(document) => Response::Attestation { document },
            Err(_) => Response::Error(ErrorCode::InternalError),
        }
    }

    fn extend(&self, index: u16, data: &[u8]) -> Response {
        if index >= MAX_PCRS {
            return Response::Error(ErrorCode::InvalidIndex);
        }
        if data.len() > MAX_EXTEND_DATA {
            return Response::Error(ErrorCode::InputTooLarge);
        }
        let mut pcrs = self.pcrs.lock().unwrap_or_else(|e| e.into_inner());
        let pcr = &mut pcrs[usize::from(index)];
        if pcr.locked {
            return Response::Error(ErrorCode::ReadOnlyIndex);
        }
        let mut input = pcr.value.to_vec();
        input.extend_from_slice(data);
        pcr.value = sha384(&input);
        Response::ExtendPCR {
            data: pcr.value.to_vec(),
        }
    }

    fn lock(&self, index: u16) -> Response {
        if index >= MAX_PCRS {
            return Response::Error(ErrorCode::InvalidIndex);
        }
        let mut pcrs = self.pcrs.lock().unwrap_or_else(|e| e.into_inner());
        let pcr = &mut pcrs[usize::from(index)];
        if pcr.locked {
            return Response::Error(ErrorCode::ReadOnlyIndex);
        }
        pcr.locked = true;
        Response::LockPCR
    }

    fn lock_range(&self, range: u16) -> Response {
        if range > MAX_PCRS {
            return Response::Error(ErrorCode::InvalidIndex);
        }
        let mut pcrs = self.pcrs.lock().unwrap_or_else(|e| e.into_inner());
        for p in pcrs.iter_mut().take(usize::from(range)) {
            p.locked = true;
        }
        Response::LockPCRs
    }
}

impl Nsm for SoftNsm {
    fn process(&self, request: Request) -> Response {
        match request {
            Request::Attestation {
                user_data,
                nonce,
                public_key,
            } => self.attestation(user_data, nonce, public_key),
            Request::GetRandom => {
                let mut random = vec![0u8; RANDOM_LEN];
                match self.rng.fill(&mut random) {
                    Ok(()) => Response::GetRandom { random },
                    Err(_) => Response::Error(ErrorCode::InternalError),
                }
            }
            Request::DescribePCR { index } => {
                if index >= MAX_PCRS {
                    return Response::Error(ErrorCode::InvalidIndex);
                }
                let pcrs = self.pcrs.lock().unwrap_or_else(|e| e.into_inner());
                let p = pcrs[usize::from(index)];
                Response::DescribePCR {
                    lock: p.locked,
                    data: p.value.to_vec(),
                }
            }
            Request::ExtendPCR { index, data } => self.extend(index, &data),
            Request::LockPCR { index } => self.lock(index),
            Request::LockPCRs { range } => self.lock_range(range),
            Request::DescribeNSM => {
                let pcrs = self.pcrs.lock().unwrap_or_else(|e| e.into_inner());
                let locked_pcrs: BTreeSet<u16> = (0..MAX_PCRS)
                    .filter(|&i| pcrs[usize::from(i)].locked)
                    .collect();
                Response::DescribeNSM {
                    version_major: 1,
                    version_minor: 0,
                    version_patch: 0,
                    module_id: self.module_id.clone(),
                    max_pcrs: MAX_PCRS,
                    locked_pcrs,
                    digest: Digest::Sha384,
                }
            }
        }
    }
}

/// DER of the dev root in `dir`, creating the root on first use. This is what a verifier of
/// software-NSM documents (the KMS emulator, `bidctl attestation verify --root`) trusts.
pub fn dev_root_der(dir: &Path) -> Result<Vec<u8>, String> {
    load_or_create_root(dir).map(|(der, _)| der)
}

/// What a dev enclave's PCR0 measures beyond its executable for the unsealed rule set. A real
/// unsealed image is a separate build with its own PCR0; a dev enclave picks its rule set at
/// start (`--rules`), so the software NSM measures the choice too, and the two dev enclaves of
/// one executable never share a PCR0 (DESIGN §2, "dev enclaves mirror this exactly").
pub const UNSEALED_PCR0_SUFFIX: &[u8] = b"\0bidding-enclave rules=unsealed";

/// The PCR0 a dev enclave running `executable` (its bytes) with `rules` attests to: SHA-384
/// of the executable for the sealed rule set, of the executable then
/// [`UNSEALED_PCR0_SUFFIX`] for the unsealed one.
pub fn dev_pcr0(executable: &[u8], rules: bidding_core::config::Mode) -> [u8; PCR_LEN] {
    let mut ctx = aws_lc_rs::digest::Context::new(&SHA384);
    ctx.update(executable);
    if rules == bidding_core::config::Mode::Unsealed {
        ctx.update(UNSEALED_PCR0_SUFFIX);
    }
    let mut out = [0u8; PCR_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// SHA-384 of the running executable, hashed once per process (test binaries are large).
fn executable_pcr0() -> Result<[u8; PCR_LEN], String> {
    static PCR0: OnceLock<Result<[u8; PCR_LEN], String>> = OnceLock::new();
    PCR0.get_or_init(|| {
        let exe = std::fs::read("/proc/self/exe")
            .map_err(|e| format!("software NSM: reading /proc/self/exe for PCR0: {e}"))?;
        Ok(sha384(&exe))
    })
    .clone()
}

fn sha384(data: &[u8]) -> [u8; PCR_LEN] {
    let mut out = [0u8; PCR_LEN];
    out.copy_from_slice(digest(&SHA384, data).as_ref());
    out
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn random_hex(rng: &SystemRandom, bytes: usize) -> Result<String, String> {
    let mut b = vec![0u8; bytes];
    rng.fill(&mut b)
        .map_err(|_| "software NSM: the random generator failed".to_owned())?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn offset_time(t: SystemTime) -> Result<time::OffsetDateTime, String> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "software NSM: clock before 1970".to_owned())?
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .map_err(|e| format!("software NSM: time out of range: {e}"))
}

fn root_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "software NSM (dev, not AWS)");
    dn.push(DnType::OrganizationalUnitName, "bidding");
    dn.push(DnType::CommonName, "dev.nitro-enclaves");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    p
}

/// The root in `dir`, made once. A lock file serialises processes that open the same
/// directory at once, so none of them can end up with a root that is not the one on disk.
fn load_or_create_root(dir: &Path) -> Result<(Vec<u8>, Issuer<'static, KeyPair>), String> {
    let ctx = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        format!("software NSM: {what} {}: {e}", p.display())
    };
    std::fs::create_dir_all(dir).map_err(|e| ctx("creating", dir, &e))?;
    let lock_path = dir.join(LOCK);
    let lock = File::create(&lock_path).map_err(|e| ctx("creating", &lock_path, &e))?;
    lock.lock().map_err(|e| ctx("locking", &lock_path, &e))?;

    let cert_path = dir.join(ROOT_CERT);
    let key_path = dir.join(ROOT_KEY);
    let result = if cert_path.exists() || key_path.exists() {
        load_root(&cert_path, &key_path)
    } else {
        create_root(&cert_path, &key_path)
    };
    let _ = lock.unlock();
    result
}

fn load_root(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<u8>, Issuer<'static, KeyPair>), String> {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map_err(|e| format!("software NSM: reading {}: {e}", p.display()))
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| {
            format!(
                "software NSM: {} is not a PEM certificate: {e}",
                cert_path.display()
            )
        })?
        .as_ref()
        .to_vec();
    let key = KeyPair::from_pem(&key_pem).map_err(|e| {
        format!(
            "software NSM: {} is not a PEM private key: {e}",
            key_path.display()
        )
    })?;
    if !key.is_compatible(&rcgen::PKCS_ECDSA_P384_SHA384) {
        return Err(format!(
            "software NSM: {} is not a P-384 key",
            key_path.display()
        ));
    }
    // The certificate must hold this key, or every chain would fail to verify far from here.
    let point = key.public_key_raw();
    if !der.windows(point.len()).any(|w| w == point) {
        return Err(format!(
            "software NSM: {} and {} do not belong together",
            cert_path.display(),
            key_path.display()
        ));
    }
    Ok((der, Issuer::new(root_params(), key)))
}

fn create_root(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<u8>, Issuer<'static, KeyPair>), String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .map_err(|e| format!("software NSM: generating the root key: {e}"))?;
    let mut params = root_params();
    let now = SystemTime::now();
    params.not_before = offset_time(now - Duration::from_secs(86_400))?;
    params.not_after = offset_time(now + Duration::from_secs(30 * 365 * 86_400))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("software NSM: signing the root: {e}"))?;
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert.der().to_vec(), Issuer::new(root_params(), key)))
}

/// Writes through a temporary file and a rename, so a crash leaves no half-written file.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let tmp: PathBuf = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("software NSM: writing {}: {e}", path.display()))
}

fn issue_ca(
    cn: &str,
    org: &str,
    path_len: u8,
    (not_before, not_after): (SystemTime, SystemTime),
    issuer: &Issuer<'static, KeyPair>,
) -> Result<(Vec<u8>, Issuer<'static, KeyPair>), String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .map_err(|e| format!("software NSM: key generation: {e}"))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::OrganizationalUnitName, "AWS");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    p.use_authority_key_identifier_extension = true;
    p.not_before = offset_time(not_before)?;
    p.not_after = offset_time(not_after)?;
    let cert = p
        .signed_by(&key, issuer)
        .map_err(|e| format!("software NSM: signing {cn}: {e}"))?;
    Ok((cert.der().to_vec(), Issuer::new(p, key)))
}

/// A leaf like the NSM's: valid from a few seconds before `now` for three hours, not a CA,
/// digitalSignature only, named after the module.
fn issue_leaf(
    module_id: &str,
    now: SystemTime,
    issuer: &Issuer<'static, KeyPair>,
) -> Result<Leaf, String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .map_err(|e| format!("software NSM: key generation: {e}"))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::StateOrProvinceName, "Washington");
    dn.push(DnType::LocalityName, "Seattle");
    dn.push(DnType::OrganizationName, "software NSM (dev, not AWS)");
    dn.push(DnType::OrganizationalUnitName, "AWS");
    dn.push(DnType::CommonName, format!("{module_id}.{REGION}.aws"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.use_authority_key_identifier_extension = true;
    let not_after = now + LEAF_LIFETIME;
    p.not_before = offset_time(now - Duration::from_secs(3))?;
    p.not_after = offset_time(not_after)?;
    let cert = p
        .signed_by(&key, issuer)
        .map_err(|e| format!("software NSM: signing the leaf: {e}"))?;
    let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &key.serialize_der())
        .map_err(|e| format!("software NSM: leaf key: {e}"))?;
    Ok(Leaf {
        der: cert.der().to_vec(),
        key: signer,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bidding_core::attestation::{VerifyAt, VerifyOptions, verify};

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "soft-nsm-{name}-{}-{}",
            std::process::id(),
            random_hex(&SystemRandom::new(), 4).unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn attest(
        nsm: &SoftNsm,
        user_data: Option<Vec<u8>>,
        nonce: Option<Vec<u8>>,
        pk: Option<Vec<u8>>,
    ) -> Response {
        nsm.process(Request::Attestation {
            user_data,
            nonce,
            public_key: pk,
        })
    }

    #[test]
    fn documents_have_the_real_shape_and_verify_against_the_dev_root_only() {
        let dir = tempdir("shape");
        let nsm = SoftNsm::open(&dir).unwrap();
        let Response::Attestation { document } = attest(
            &nsm,
            Some(b"ud".to_vec()),
            Some(vec![7; 512]),
            Some(vec![1; 1024]),
        ) else {
            panic!("no document");
        };
        // Untagged COSE_Sign1 with the ES384 protected header, as the real NSM writes.
        assert_eq!(&document[..6], &[0x84, 0x44, 0xa1, 0x01, 0x38, 0x22]);
        let root = dev_root_der(&dir).unwrap();
        let now = unix_ms(SystemTime::now());
        let doc = verify(
            &document,
            &VerifyOptions {
                root_der: &root,
                at: VerifyAt::UnixMillis(now),
            },
        )
        .unwrap();
        assert_eq!(doc.cabundle.len(), 4);
        assert_eq!(doc.pcrs.len(), 16);
        assert!(doc.pcrs.values().all(|p| p.len() == 48));
        assert_eq!(doc.pcr(0), Some(&executable_pcr0().unwrap()[..]));
        assert_eq!(doc.pcr(1), Some(&sha384(PCR1_INPUT)[..]));
        assert_eq!(doc.pcr(8), Some(&[0u8; 48][..]));
        assert_eq!(doc.user_data(), Some(&b"ud"[..]));
        assert!(now.abs_diff(doc.timestamp) < 10_000);
        assert!(verify(&document, &VerifyOptions::aws(VerifyAt::UnixMillis(now))).is_err());
        // Three hours later the leaf has expired, as a real one does.
        let later = now + 3 * 3600 * 1000 + 60_000;
        assert!(
            verify(
                &document,
                &VerifyOptions {
                    root_der: &root,
                    at: VerifyAt::UnixMillis(later)
                }
            )
            .is_err()
        );

        // A second module in the same directory shares the root, not the rest.
        let other = SoftNsm::open(&dir).unwrap();
        assert_eq!(other.root_der(), nsm.root_der());
        assert_ne!(other.module_id(), nsm.module_id());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn limits_and_errors_follow_the_real_module() {
        let dir = tempdir("limits");
        let nsm = SoftNsm::open_with_pcr0(&dir, [9; 48]).unwrap();
        for (ud, nonce, pk) in [
            (Some(vec![0; 513]), None, None),
            (None, Some(vec![0; 513]), None),
            (None, None, Some(vec![0; 1025])),
        ] {
            assert!(matches!(
                attest(&nsm, ud, nonce, pk),
                Response::Error(ErrorCode::InvalidArgument)
            ));
        }
        assert!(
            matches!(nsm.process(Request::GetRandom), Response::GetRandom { random } if random.len() == 256)
        );
        assert!(matches!(
            nsm.process(Request::DescribePCR { index: 32 }),
            Response::Error(ErrorCode::InvalidIndex)
        ));
        match nsm.process(Request::DescribePCR { index: 0 }) {
            Response::DescribePCR { lock, data } => {
                assert!(lock);
                assert_eq!(data, vec![9; 48]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            nsm.process(Request::ExtendPCR {
                index: 0,
                data: vec![1]
            }),
            Response::Error(ErrorCode::ReadOnlyIndex)
        ));
        assert!(matches!(
            nsm.process(Request::LockPCR { index: 3 }),
            Response::Error(ErrorCode::ReadOnlyIndex)
        ));
        let Response::ExtendPCR { data } = nsm.process(Request::ExtendPCR {
            index: 16,
            data: b"x".to_vec(),
        }) else {
            panic!("extend");
        };
        let mut input = vec![0u8; 48];
        input.push(b'x');
        assert_eq!(data, sha384(&input).to_vec());
        assert!(matches!(
            nsm.process(Request::LockPCR { index: 16 }),
            Response::LockPCR
        ));
        assert!(matches!(
            nsm.process(Request::ExtendPCR {
                index: 16,
                data: vec![]
            }),
            Response::Error(ErrorCode::ReadOnlyIndex)
        ));
        assert!(matches!(
            nsm.process(Request::LockPCRs { range: 33 }),
            Response::Error(ErrorCode::InvalidIndex)
        ));
        match nsm.process(Request::DescribeNSM) {
            Response::DescribeNSM {
                version_major,
                max_pcrs,
                locked_pcrs,
                digest,
                module_id,
                ..
            } => {
                assert_eq!((version_major, max_pcrs), (1, 32));
                assert_eq!(locked_pcrs, (0..=16).collect());
                assert_eq!(digest, Digest::Sha384);
                assert_eq!(module_id, nsm.module_id());
            }
            other => panic!("{other:?}"),
        }
        assert!(
            SoftNsm::open_with(
                &dir,
                SoftNsmOptions {
                    pcrs: BTreeMap::from([(16, [0; 48])]),
                    ..Default::default()
                }
            )
            .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn root_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir("root");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let d = dir.clone();
                std::thread::spawn(move || dev_root_der(&d).unwrap())
            })
            .collect();
        let roots: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(roots.windows(2).all(|w| w[0] == w[1]));
        let mode = std::fs::metadata(dir.join(ROOT_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A key that does not match the certificate is refused, not used.
        let other = tempdir("root-other");
        dev_root_der(&other).unwrap();
        std::fs::copy(other.join(ROOT_KEY), dir.join(ROOT_KEY)).unwrap();
        assert!(
            SoftNsm::open(&dir)
                .unwrap_err()
                .contains("do not belong together")
        );
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }
}
