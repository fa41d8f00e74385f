//! The state directory: keys, principals and key policies, kept across restarts.
//!
//! ```text
//! DIR/keys.json              keys with their 256-bit material (0600); written by the server
//! DIR/principals.json        who may call: [{access_key_id, secret_access_key, session_token?,
//!                            expiration?, arn}] (0600); written by `add-principal`
//! DIR/policies/<key-id>.json a key's policy, when it is not AWS's default one
//! DIR/identity-policies.json the IAM identity policies of principals, by user or role ARN
//!                            ({ARN: [policy, …]}); a principal it does not name (or every
//!                            principal, without the file) has full IAM permissions
//! DIR/ca.pem, ca-key.pem     the TLS CA clients trust, and its key (0600)
//! DIR/server.pem, server-key.pem   the TLS server certificate, made at each start
//! ```
//!
//! Principals and policies may be changed while the server runs (`bidctl kms-emulator
//! add-principal` / `set-policy`, or PutKeyPolicy): the server rereads a file whenever its
//! identity (inode, size, mtime) changes. Every write goes through a temporary file and a
//! rename, so a reader never sees half a file.

use super::blob::{self, MATERIAL_LEN, Material};
use super::policy::{self, Policy};
use bidding_core::credentials::Secret;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use zeroize::Zeroizing;

pub const KEYS_FILE: &str = "keys.json";
pub const PRINCIPALS_FILE: &str = "principals.json";
pub const POLICIES_DIR: &str = "policies";
pub const IDENTITY_FILE: &str = "identity-policies.json";

/// Identity policies by `aws:PrincipalArn` (a user's ARN, or a role's for its sessions).
pub type IdentityMap = BTreeMap<String, Vec<crate::iam::Policy>>;

/// Parses `DIR/identity-policies.json`: `{ARN: [policy document, …]}`.
pub fn identity_map(text: &[u8]) -> Result<IdentityMap, String> {
    let raw: BTreeMap<String, Vec<serde_json::Value>> =
        serde_json::from_slice(text).map_err(|e| e.to_string())?;
    raw.into_iter()
        .map(|(arn, docs)| {
            if !policy::is_principal_arn(&arn) {
                return Err(format!("{arn:?} is not an IAM user, role or root ARN"));
            }
            let list = docs
                .iter()
                .map(|d| {
                    crate::iam::Policy::parse(&d.to_string(), crate::iam::Kind::Identity)
                        .map_err(|e| format!("{arn}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((arn, list))
        })
        .collect()
}

/// Writes `DIR/identity-policies.json`.
pub fn write_identity_policies(
    dir: &Path,
    map: &BTreeMap<String, Vec<serde_json::Value>>,
) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(map).map_err(|e| e.to_string())?;
    identity_map(&text)?;
    write_atomic(&dir.join(IDENTITY_FILE), &text, 0o600)
}

/// A caller the emulator knows, with its long-term or temporary credentials.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<Secret>,
    /// Unix seconds after which the credentials are refused with ExpiredTokenException.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
    /// `arn:aws:iam::ACCOUNT:user/NAME`, `…:role/NAME`, `…:root` or
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    pub arn: String,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("access_key_id", &self.access_key_id)
            .field("arn", &self.arn)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

impl Principal {
    pub fn validate(&self) -> Result<(), String> {
        let id = &self.access_key_id;
        if !(16..=128).contains(&id.len())
            || !id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        {
            return Err(format!(
                "access key id {id:?} must be 16 to 128 upper-case letters and digits"
            ));
        }
        if self.secret_access_key.expose().is_empty() {
            return Err(format!("{id}: the secret access key is empty"));
        }
        if self
            .session_token
            .as_ref()
            .is_some_and(|t| t.expose().is_empty())
        {
            return Err(format!("{id}: the session token is empty"));
        }
        if !policy::is_principal_arn(&self.arn) {
            return Err(format!(
                "{id}: {:?} is not an IAM user, role or root ARN or an STS assumed-role ARN",
                self.arn
            ));
        }
        Ok(())
    }

    /// The 12-digit account of the ARN.
    pub fn account(&self) -> &str {
        self.arn.split(':').nth(4).unwrap_or_default()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub key_id: String,
    pub arn: String,
    /// Unix seconds.
    pub creation_date: u64,
    #[serde(default)]
    pub description: String,
    pub enabled: bool,
    /// Base64 of the 32-byte AES-256 material.
    material: String,
}

impl KeyRecord {
    pub fn new(key_id: String, arn: String, description: String, material: &Material) -> KeyRecord {
        use base64::Engine;
        KeyRecord {
            key_id,
            arn,
            creation_date: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            description,
            enabled: true,
            material: base64::engine::general_purpose::STANDARD.encode(&material[..]),
        }
    }

    /// The 12-digit account of the key's ARN.
    pub fn account(&self) -> &str {
        self.arn.split(':').nth(4).unwrap_or_default()
    }

    pub fn material(&self) -> Result<Material, String> {
        use base64::Engine;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(&self.material)
                .map_err(|_| format!("key {}: material is not base64", self.key_id))?,
        );
        let arr: [u8; MATERIAL_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("key {}: material is not 32 bytes", self.key_id))?;
        Ok(Zeroizing::new(arr))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
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
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {}: {e}", path.display())
    })
}

pub fn read_principals(dir: &Path) -> Result<Vec<Principal>, String> {
    let path = dir.join(PRINCIPALS_FILE);
    let text = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_principals(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_principals(text: &[u8]) -> Result<Vec<Principal>, String> {
    let list: Vec<Principal> = serde_json::from_slice(text).map_err(|e| e.to_string())?;
    let mut seen = std::collections::HashSet::new();
    for p in &list {
        p.validate()?;
        if !seen.insert(p.access_key_id.as_str()) {
            return Err(format!("access key id {} appears twice", p.access_key_id));
        }
    }
    Ok(list)
}

/// Adds `p` to `DIR/principals.json`, or replaces the entry with its access key id.
pub fn add_principal(dir: &Path, p: Principal) -> Result<(), String> {
    p.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut list = if dir.join(PRINCIPALS_FILE).exists() {
        read_principals(dir)?
    } else {
        Vec::new()
    };
    list.retain(|q| q.access_key_id != p.access_key_id);
    list.push(p);
    write_principals(dir, &list)
}

pub fn write_principals(dir: &Path, list: &[Principal]) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(list).map_err(|e| e.to_string())?;
    write_atomic(&dir.join(PRINCIPALS_FILE), &text, 0o600)
}

pub fn policy_path(dir: &Path, key_id: &str) -> PathBuf {
    dir.join(POLICIES_DIR).join(format!("{key_id}.json"))
}

/// Validates `text` as the policy of `key_arn` and stores it.
pub fn write_policy(dir: &Path, key_id: &str, key_arn: &str, text: &str) -> Result<(), String> {
    Policy::parse(text, key_arn)?;
    let policies = dir.join(POLICIES_DIR);
    std::fs::create_dir_all(&policies)
        .map_err(|e| format!("creating {}: {e}", policies.display()))?;
    write_atomic(&policy_path(dir, key_id), text.as_bytes(), 0o644)
}

pub fn read_keys(dir: &Path) -> Result<Vec<KeyRecord>, String> {
    let path = dir.join(KEYS_FILE);
    match std::fs::read(&path) {
        Ok(text) => {
            let keys: Vec<KeyRecord> =
                serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            for k in &keys {
                k.material()?;
                if blob::uuid_bytes(&k.key_id).is_none() {
                    return Err(format!(
                        "{}: key id {:?} is not a UUID",
                        path.display(),
                        k.key_id
                    ));
                }
            }
            Ok(keys)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

pub fn write_keys(dir: &Path, keys: &[KeyRecord]) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(keys).map_err(|e| e.to_string())?;
    write_atomic(&dir.join(KEYS_FILE), &text, 0o600)
}

/// A file's identity; renames change the inode, so a rewrite is seen even within one mtime
/// tick.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
    })
}

/// Parsed files, reread when they change on disk.
pub struct FileCache<T> {
    entries: Mutex<HashMap<PathBuf, (Stamp, Arc<T>)>>,
}

impl<T> Default for FileCache<T> {
    fn default() -> Self {
        FileCache {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> FileCache<T> {
    /// The parsed content of `path`, `None` if it does not exist.
    pub fn get(
        &self,
        path: &Path,
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<Option<Arc<T>>, String> {
        let st = match stamp(path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.lock().remove(path);
                return Ok(None);
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if let Some((s, v)) = self.lock().get(path)
            && *s == st
        {
            return Ok(Some(v.clone()));
        }
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let value = Arc::new(parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?);
        // The stamp from before the read: a change during the read is seen next time.
        self.lock().insert(path.to_owned(), (st, value.clone()));
        Ok(Some(value))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Stamp, Arc<T>)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Principals by access key id.
pub type PrincipalMap = BTreeMap<String, Principal>;

pub fn principal_map(text: &[u8]) -> Result<PrincipalMap, String> {
    Ok(parse_principals(text)?
        .into_iter()
        .map(|p| (p.access_key_id.clone(), p))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(id: &str) -> Principal {
        Principal {
            access_key_id: id.into(),
            secret_access_key: Secret::new("s"),
            session_token: None,
            expiration: None,
            arn: "arn:aws:iam::111122223333:user/alice".into(),
        }
    }

    #[test]
    fn principals_are_validated_and_replaced_by_key_id() {
        let dir = tempfile::tempdir().unwrap();
        add_principal(dir.path(), principal("AKIAAAAAAAAAAAAAAAAA")).unwrap();
        add_principal(dir.path(), principal("AKIABBBBBBBBBBBBBBBB")).unwrap();
        let mut p = principal("AKIAAAAAAAAAAAAAAAAA");
        p.arn = "arn:aws:iam::111122223333:user/bob".into();
        add_principal(dir.path(), p).unwrap();
        let list = read_principals(dir.path()).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].arn, "arn:aws:iam::111122223333:user/bob");
        assert!(add_principal(dir.path(), principal("lower")).is_err());
        let mut bad = principal("AKIACCCCCCCCCCCCCCCC");
        bad.arn = "alice".into();
        assert!(add_principal(dir.path(), bad).is_err());
        // Never the secret in Debug.
        assert!(!format!("{:?}", list[0]).contains("\"s\""));
    }

    #[test]
    fn cache_rereads_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let cache: FileCache<String> = FileCache::default();
        let parse = |b: &[u8]| Ok(String::from_utf8_lossy(b).into_owned());
        assert!(cache.get(&path, parse).unwrap().is_none());
        write_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(*cache.get(&path, parse).unwrap().unwrap(), "one");
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(*cache.get(&path, parse).unwrap().unwrap(), "two");
        std::fs::remove_file(&path).unwrap();
        assert!(cache.get(&path, parse).unwrap().is_none());
    }
}
