//! The KMS operations: request checks, authorization by key policy, and the answers, in the
//! order and shapes real KMS uses. Nothing here touches the network; `server` feeds it.

use super::blob::{self, KEY_ID_LEN, Material};
use super::error::KmsError;
use super::faults::Faults;
use super::policy::{self, Decision, Policy};
use super::recipient::{self, RecipientVerifier, printable};
use super::state::{self, FileCache, KeyRecord, PrincipalMap};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bidding_core::attestation::DocumentFields;
use bidding_core::kms::{
    CONTENT_TYPE, DecryptRequest, EncryptRequest, GenerateDataKeyRequest, RecipientInfo,
    SYMMETRIC_DEFAULT, TARGET_PREFIX,
};
use bidding_core::sigv4::{self, KnownKey};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// SigV4's clock-skew limit, as AWS enforces it.
pub const MAX_SKEW: Duration = Duration::from_secs(300);
const MAX_PLAINTEXT: usize = 4096;
const MAX_CIPHERTEXT: usize = 6144;
const MAX_KEY_ID: usize = 2048;
const MAX_DATA_KEY_BYTES: u32 = 1024;
const MAX_DESCRIPTION: usize = 8192;

/// Who made a request, once its signature verified.
#[derive(Debug, Clone)]
pub struct Caller {
    pub arn: String,
    pub access_key_id: String,
}

impl Caller {
    /// The 12-digit account of the caller's ARN.
    pub fn account(&self) -> &str {
        self.arn.split(':').nth(4).unwrap_or_default()
    }
}

pub struct Service {
    pub(super) dir: PathBuf,
    pub(super) region: String,
    pub(super) account: String,
    keys: Mutex<BTreeMap<String, KeyRecord>>,
    principals: FileCache<PrincipalMap>,
    identities: FileCache<state::IdentityMap>,
    policies: FileCache<Policy>,
    default_policy: Policy,
    pub(super) recipients: RecipientVerifier,
    pub(super) faults: Faults,
    rng: SystemRandom,
}

impl Service {
    pub fn new(
        dir: PathBuf,
        region: String,
        account: String,
        attestation_root_der: Vec<u8>,
        faults: Faults,
    ) -> Result<Service, String> {
        let keys = state::read_keys(&dir)?
            .into_iter()
            .map(|k| (k.key_id.clone(), k))
            .collect();
        let default_policy = Policy::parse(&policy::default_policy(&account), "*")?;
        Ok(Service {
            dir,
            region,
            account,
            keys: Mutex::new(keys),
            principals: FileCache::default(),
            identities: FileCache::default(),
            policies: FileCache::default(),
            default_policy,
            recipients: RecipientVerifier::new(attestation_root_der),
            faults,
            rng: SystemRandom::new(),
        })
    }

    /// See [`RecipientVerifier::accept_qemu_unsigned`].
    pub fn accept_qemu_unsigned_attestation(&mut self) {
        self.recipients.accept_qemu_unsigned();
    }

    /// A key's ARN in `account` (a key belongs to the account of the caller that made it).
    fn arn(&self, account: &str, key_id: &str) -> String {
        format!("arn:aws:kms:{}:{account}:key/{key_id}", self.region)
    }

    /// Verifies the request's SigV4 signature against the principals file.
    pub fn authenticate(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        now: SystemTime,
    ) -> Result<Caller, KmsError> {
        let principals = self
            .principals
            .get(&self.dir.join(state::PRINCIPALS_FILE), state::principal_map)
            .map_err(|e| {
                KmsError::internal(format!("the emulator's principals file is unusable: {e}"))
            })?
            .unwrap_or_default();
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let expired = Cell::new(false);
        let verified = sigv4::verify(
            method,
            path_and_query,
            headers,
            body,
            "kms",
            &self.region,
            |id| {
                let p = principals.get(id)?;
                if p.expiration.is_some_and(|e| e <= now_secs) {
                    expired.set(true);
                    return None;
                }
                Some(KnownKey {
                    secret: p.secret_access_key.clone(),
                    session_token: p.session_token.clone(),
                })
            },
            now,
            MAX_SKEW,
        );
        match verified {
            Ok(v) => {
                let p = principals
                    .get(&v.access_key_id)
                    .ok_or_else(|| KmsError::internal("verified an unknown access key"))?;
                Ok(Caller {
                    arn: p.arn.clone(),
                    access_key_id: v.access_key_id,
                })
            }
            Err(_) if expired.get() => Err(KmsError::expired_token()),
            Err(e) => Err(e.into()),
        }
    }

    /// The operation named by `x-amz-target`, checked against `content-type`.
    pub fn operation<'a>(
        &self,
        target: Option<&'a str>,
        content_type: Option<&str>,
    ) -> Result<&'a str, KmsError> {
        let target =
            target.ok_or_else(|| KmsError::unknown_operation("Missing X-Amz-Target header"))?;
        let op = target
            .strip_prefix(TARGET_PREFIX)
            .filter(|op| super::faults::OPERATIONS.contains(op))
            .ok_or_else(|| {
                KmsError::unknown_operation(format!("Unknown operation {}", printable(target)))
            })?;
        let ct = content_type.map(|c| c.split(';').next().unwrap_or_default().trim());
        if ct != Some(CONTENT_TYPE) {
            return Err(KmsError::serialization(format!(
                "Content-Type must be {CONTENT_TYPE}, found {}",
                printable(content_type.unwrap_or("nothing"))
            )));
        }
        Ok(op)
    }

    /// Runs `op` for `caller` and returns the JSON answer.
    pub fn call(
        &self,
        op: &str,
        caller: &Caller,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Vec<u8>, KmsError> {
        let answer = match op {
            "CreateKey" => self.create_key(caller, parse(body)?)?,
            "DescribeKey" => self.describe_key(caller, parse(body)?)?,
            "ListKeys" => self.list_keys(),
            "Encrypt" => self.encrypt(caller, parse(body)?)?,
            "Decrypt" => self.decrypt(caller, parse(body)?, now)?,
            "GenerateDataKey" => self.generate_data_key(caller, parse(body)?, now)?,
            "GetKeyPolicy" => self.get_key_policy(caller, parse(body)?)?,
            "PutKeyPolicy" => self.put_key_policy(caller, parse(body)?)?,
            "EnableKey" => self.set_enabled(caller, parse(body)?, true)?,
            "DisableKey" => self.set_enabled(caller, parse(body)?, false)?,
            other => {
                return Err(KmsError::unknown_operation(format!(
                    "Unknown operation {other}"
                )));
            }
        };
        Ok(match answer {
            Value::Null => Vec::new(),
            v => v.to_string().into_bytes(),
        })
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, KeyRecord>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Finds the key a `KeyId` parameter names: a key id or key ARN of this region and
    /// account. Aliases are not supported and, like unknown ones, are not found.
    fn resolve(&self, caller: &Caller, key_id: &str) -> Result<KeyRecord, KmsError> {
        if key_id.is_empty() {
            return Err(KmsError::constraint(
                "''",
                "keyId",
                "Member must have length greater than or equal to 1",
            ));
        }
        if key_id.len() > MAX_KEY_ID {
            return Err(KmsError::constraint(
                "(too long)",
                "keyId",
                "Member must have length less than or equal to 2048",
            ));
        }
        let uuid = if let Some(alias) = key_id.strip_prefix("alias/") {
            return Err(KmsError::not_found(format!(
                "Alias arn:aws:kms:{}:{}:alias/{} is not found.",
                self.region,
                caller.account(),
                printable(alias)
            )));
        } else if key_id.starts_with("arn:") {
            if key_id.contains(":alias/") {
                return Err(KmsError::not_found(format!(
                    "Alias {} is not found.",
                    printable(key_id)
                )));
            }
            // A key ARN names its account: another account's key is found by its ARN.
            let prefix = format!("arn:aws:kms:{}:", self.region);
            match key_id
                .strip_prefix(&prefix)
                .and_then(|r| r.split_once(":key/"))
            {
                Some((account, u))
                    if blob::uuid_bytes(u).is_some()
                        && self.keys().get(u).is_some_and(|k| k.account() == account) =>
                {
                    u
                }
                _ => {
                    return Err(KmsError::not_found(format!(
                        "Key '{}' does not exist",
                        printable(key_id)
                    )));
                }
            }
        } else if blob::uuid_bytes(key_id).is_some() {
            // A bare key id names a key of the caller's own account.
            if self
                .keys()
                .get(key_id)
                .is_some_and(|k| k.account() != caller.account())
            {
                return Err(KmsError::not_found(format!(
                    "Key '{}' does not exist",
                    self.arn(caller.account(), key_id)
                )));
            }
            key_id
        } else {
            return Err(KmsError::not_found(format!(
                "Invalid keyId '{}'",
                printable(key_id)
            )));
        };
        self.keys().get(uuid).cloned().ok_or_else(|| {
            KmsError::not_found(format!(
                "Key '{}' does not exist",
                self.arn(caller.account(), uuid)
            ))
        })
    }

    fn policy_of(&self, key: &KeyRecord) -> Result<Arc<Policy>, KmsError> {
        let path = state::policy_path(&self.dir, &key.key_id);
        match self.policies.get(&path, |b| {
            let text = std::str::from_utf8(b).map_err(|_| "not UTF-8".to_owned())?;
            Policy::parse(text, &key.arn)
        }) {
            Ok(Some(p)) => Ok(p),
            Ok(None) if key.account() == self.account => Ok(Arc::new(self.default_policy.clone())),
            Ok(None) => Policy::parse(&policy::default_policy(key.account()), "*")
                .map(Arc::new)
                .map_err(KmsError::internal),
            Err(e) => Err(KmsError::internal(format!(
                "the key policy file is invalid: {e}"
            ))),
        }
    }

    /// The caller's identity policies, when the state directory names any for it.
    fn identity_of(&self, caller: &Caller) -> Result<Option<Vec<crate::iam::Policy>>, KmsError> {
        let map = self
            .identities
            .get(&self.dir.join(state::IDENTITY_FILE), state::identity_map)
            .map_err(|e| {
                KmsError::internal(format!(
                    "the emulator's identity policies are unusable: {e}"
                ))
            })?;
        Ok(map.and_then(|m| {
            crate::iam::principal_arn_of(&caller.arn).and_then(|arn| m.get(&arn).cloned())
        }))
    }

    fn authorize(
        &self,
        caller: &Caller,
        key: &KeyRecord,
        action: &str,
        recipient: Option<&DocumentFields>,
        encryption_context: Option<&BTreeMap<String, String>>,
    ) -> Result<(), KmsError> {
        let policy = self.policy_of(key)?;
        let identity = self.identity_of(caller)?;
        let req = policy::Request {
            principal_arn: &caller.arn,
            action,
            recipient,
            encryption_context,
        };
        match policy.authorize(&key.arn, key.account(), identity.as_deref(), &req) {
            Decision::Allow => Ok(()),
            Decision::ExplicitDeny(_) => Err(KmsError::access_denied(format!(
                "User: {} is not authorized to perform: {action} on resource: {} with an explicit deny in a resource-based policy",
                caller.arn, key.arn
            ))),
            Decision::NoAllow => Err(KmsError::access_denied(format!(
                "User: {} is not authorized to perform: {action} on resource: {} because no {} policy allows the {action} action",
                caller.arn,
                key.arn,
                // The key policy grants it, so the caller's own IAM policies are what lack it.
                if policy.evaluate(&req) == Decision::Allow {
                    "identity-based"
                } else {
                    "resource-based"
                }
            ))),
        }
    }

    fn material(key: &KeyRecord) -> Result<Material, KmsError> {
        key.material().map_err(KmsError::internal)
    }

    fn key_id_bytes(key: &KeyRecord) -> Result<[u8; KEY_ID_LEN], KmsError> {
        blob::uuid_bytes(&key.key_id)
            .ok_or_else(|| KmsError::internal("stored key id is not a UUID"))
    }

    fn metadata(&self, key: &KeyRecord) -> Value {
        json!({
            "KeyMetadata": {
                "AWSAccountId": key.account(),
                "KeyId": key.key_id,
                "Arn": key.arn,
                "CreationDate": key.creation_date as f64,
                "Enabled": key.enabled,
                "Description": key.description,
                "KeyUsage": "ENCRYPT_DECRYPT",
                "KeyState": if key.enabled { "Enabled" } else { "Disabled" },
                "Origin": "AWS_KMS",
                "KeyManager": "CUSTOMER",
                "CustomerMasterKeySpec": SYMMETRIC_DEFAULT,
                "KeySpec": SYMMETRIC_DEFAULT,
                "EncryptionAlgorithms": [SYMMETRIC_DEFAULT],
                "MultiRegion": false
            }
        })
    }

    fn lockout_check(
        &self,
        caller: &Caller,
        policy: &Policy,
        bypass: bool,
    ) -> Result<(), KmsError> {
        let req = policy::Request {
            principal_arn: &caller.arn,
            action: "kms:PutKeyPolicy",
            recipient: None,
            encryption_context: None,
        };
        if !bypass && policy.evaluate(&req) != Decision::Allow {
            return Err(KmsError::malformed_policy(
                "The new key policy will not allow you to update the key policy in the future.",
            ));
        }
        Ok(())
    }

    fn create_key(&self, caller: &Caller, req: CreateKeyIn) -> Result<Value, KmsError> {
        for (member, value) in [
            ("keySpec", &req.key_spec),
            ("customerMasterKeySpec", &req.customer_master_key_spec),
        ] {
            if let Some(v) = value
                && v != SYMMETRIC_DEFAULT
            {
                return Err(KmsError::unsupported(format!(
                    "The KMS emulator makes only SYMMETRIC_DEFAULT keys, not {} ({member})",
                    printable(v)
                )));
            }
        }
        if let Some(u) = &req.key_usage
            && u != "ENCRYPT_DECRYPT"
        {
            return Err(KmsError::unsupported(format!(
                "The KMS emulator makes only ENCRYPT_DECRYPT keys, not {}",
                printable(u)
            )));
        }
        if let Some(o) = &req.origin
            && o != "AWS_KMS"
        {
            return Err(KmsError::unsupported(format!(
                "The KMS emulator makes only AWS_KMS keys, not origin {}",
                printable(o)
            )));
        }
        if req.multi_region == Some(true) {
            return Err(KmsError::unsupported(
                "The KMS emulator does not make multi-Region keys",
            ));
        }
        let description = req.description.unwrap_or_default();
        if description.len() > MAX_DESCRIPTION {
            return Err(KmsError::constraint(
                "(too long)",
                "description",
                "Member must have length less than or equal to 8192",
            ));
        }
        let key_id = blob::new_key_id().map_err(KmsError::internal)?;
        let arn = self.arn(caller.account(), &key_id);
        if let Some(text) = &req.policy {
            let parsed = Policy::parse(text, &arn).map_err(KmsError::malformed_policy)?;
            self.lockout_check(
                caller,
                &parsed,
                req.bypass_policy_lockout_safety_check.unwrap_or(false),
            )?;
            state::write_policy(&self.dir, &key_id, &arn, text).map_err(KmsError::internal)?;
        }
        let material = blob::new_material().map_err(KmsError::internal)?;
        let record = KeyRecord::new(key_id.clone(), arn, description, &material);
        let mut keys = self.keys();
        keys.insert(key_id, record.clone());
        let all: Vec<KeyRecord> = keys.values().cloned().collect();
        state::write_keys(&self.dir, &all).map_err(KmsError::internal)?;
        Ok(self.metadata(&record))
    }

    fn describe_key(&self, caller: &Caller, req: KeyIdIn) -> Result<Value, KmsError> {
        let key = self.resolve(caller, &req.key_id)?;
        self.authorize(caller, &key, "kms:DescribeKey", None, None)?;
        Ok(self.metadata(&key))
    }

    fn list_keys(&self) -> Value {
        let keys: Vec<Value> = self
            .keys()
            .values()
            .map(|k| json!({ "KeyId": k.key_id, "KeyArn": k.arn }))
            .collect();
        json!({ "Keys": keys, "Truncated": false })
    }

    fn get_key_policy(&self, caller: &Caller, req: PolicyNameIn) -> Result<Value, KmsError> {
        check_policy_name(req.policy_name.as_deref())?;
        let key = self.resolve(caller, &req.key_id)?;
        self.authorize(caller, &key, "kms:GetKeyPolicy", None, None)?;
        let path = state::policy_path(&self.dir, &key.key_id);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                policy::default_policy(key.account())
            }
            Err(e) => return Err(KmsError::internal(format!("reading the key policy: {e}"))),
        };
        Ok(json!({ "Policy": text, "PolicyName": "default" }))
    }

    fn put_key_policy(&self, caller: &Caller, req: PutKeyPolicyIn) -> Result<Value, KmsError> {
        check_policy_name(req.policy_name.as_deref())?;
        let key = self.resolve(caller, &req.key_id)?;
        self.authorize(caller, &key, "kms:PutKeyPolicy", None, None)?;
        let parsed = Policy::parse(&req.policy, &key.arn).map_err(KmsError::malformed_policy)?;
        self.lockout_check(
            caller,
            &parsed,
            req.bypass_policy_lockout_safety_check.unwrap_or(false),
        )?;
        state::write_policy(&self.dir, &key.key_id, &key.arn, &req.policy)
            .map_err(KmsError::internal)?;
        Ok(Value::Null)
    }

    fn set_enabled(&self, caller: &Caller, req: KeyIdIn, enabled: bool) -> Result<Value, KmsError> {
        let key = self.resolve(caller, &req.key_id)?;
        let action = if enabled {
            "kms:EnableKey"
        } else {
            "kms:DisableKey"
        };
        self.authorize(caller, &key, action, None, None)?;
        let mut keys = self.keys();
        if let Some(k) = keys.get_mut(&key.key_id) {
            k.enabled = enabled;
        }
        let all: Vec<KeyRecord> = keys.values().cloned().collect();
        state::write_keys(&self.dir, &all).map_err(KmsError::internal)?;
        Ok(Value::Null)
    }

    fn encrypt(&self, caller: &Caller, mut req: EncryptRequest) -> Result<Value, KmsError> {
        let plaintext = Zeroizing::new(std::mem::take(&mut req.plaintext));
        check_plaintext(&plaintext)?;
        check_algorithm(req.encryption_algorithm.as_deref())?;
        let key = self.resolve(caller, &req.key_id)?;
        let context = req.encryption_context.unwrap_or_default();
        self.authorize(caller, &key, "kms:Encrypt", None, Some(&context))?;
        if !key.enabled {
            return Err(KmsError::disabled(&key.arn));
        }
        let blob = blob::seal(
            &Self::key_id_bytes(&key)?,
            &*Self::material(&key)?,
            &context,
            &plaintext,
        )
        .map_err(KmsError::internal)?;
        Ok(json!({
            "CiphertextBlob": B64.encode(blob),
            "KeyId": key.arn,
            "EncryptionAlgorithm": SYMMETRIC_DEFAULT
        }))
    }

    fn check_recipient(
        &self,
        recipient: Option<&RecipientInfo>,
        now: SystemTime,
    ) -> Result<Option<Arc<DocumentFields>>, KmsError> {
        recipient
            .map(|r| {
                self.recipients
                    .check(&r.key_encryption_algorithm, &r.attestation_document, now)
            })
            .transpose()
    }

    fn decrypt(
        &self,
        caller: &Caller,
        req: DecryptRequest,
        now: SystemTime,
    ) -> Result<Value, KmsError> {
        if req.ciphertext_blob.is_empty() || req.ciphertext_blob.len() > MAX_CIPHERTEXT {
            return Err(KmsError::constraint(
                "(blob)",
                "ciphertextBlob",
                "Member must have length between 1 and 6144",
            ));
        }
        check_algorithm(req.encryption_algorithm.as_deref())?;
        let recipient = self.check_recipient(req.recipient.as_ref(), now)?;
        let blob_key = blob::key_id(&req.ciphertext_blob)
            .map(|b| blob::uuid_string(&b))
            .ok_or_else(|| {
                KmsError::invalid_ciphertext("The ciphertext is not a KMS ciphertext blob")
            })?;
        let key = match &req.key_id {
            Some(k) => {
                let key = self.resolve(caller, k)?;
                if key.key_id != blob_key {
                    return Err(KmsError::incorrect_key());
                }
                key
            }
            // A blob whose key is not in this account and region cannot be opened here.
            None => self.keys().get(&blob_key).cloned().ok_or_else(|| {
                KmsError::invalid_ciphertext(
                    "The ciphertext refers to a key that does not exist in this account and region",
                )
            })?,
        };
        let context = req.encryption_context.unwrap_or_default();
        self.authorize(
            caller,
            &key,
            "kms:Decrypt",
            recipient.as_deref(),
            Some(&context),
        )?;
        if !key.enabled {
            return Err(KmsError::disabled(&key.arn));
        }
        let plaintext = blob::open(&*Self::material(&key)?, &req.ciphertext_blob, &context)
            .ok_or_else(|| {
                KmsError::invalid_ciphertext(
                    "The ciphertext is corrupt or was encrypted under another encryption context",
                )
            })?;
        let mut out = json!({ "KeyId": key.arn, "EncryptionAlgorithm": SYMMETRIC_DEFAULT });
        match recipient {
            Some(doc) => {
                out["CiphertextForRecipient"] =
                    B64.encode(recipient::seal_for(&doc, &plaintext)?).into();
            }
            None => out["Plaintext"] = B64.encode(&plaintext).into(),
        }
        Ok(out)
    }

    fn generate_data_key(
        &self,
        caller: &Caller,
        req: GenerateDataKeyRequest,
        now: SystemTime,
    ) -> Result<Value, KmsError> {
        let len = match (req.key_spec.as_deref(), req.number_of_bytes) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(KmsError::validation(
                    "Please specify either number of bytes or key spec.",
                ));
            }
            (Some("AES_256"), None) => 32,
            (Some("AES_128"), None) => 16,
            (Some(other), None) => {
                return Err(KmsError::constraint(
                    &format!("'{}'", printable(other)),
                    "keySpec",
                    "Member must satisfy enum value set: [AES_256, AES_128]",
                ));
            }
            (None, Some(n)) if (1..=MAX_DATA_KEY_BYTES).contains(&n) => n as usize,
            (None, Some(n)) => {
                return Err(KmsError::constraint(
                    &n.to_string(),
                    "numberOfBytes",
                    "Member must have value between 1 and 1024",
                ));
            }
        };
        let recipient = self.check_recipient(req.recipient.as_ref(), now)?;
        let key = self.resolve(caller, &req.key_id)?;
        let context = req.encryption_context.unwrap_or_default();
        self.authorize(
            caller,
            &key,
            "kms:GenerateDataKey",
            recipient.as_deref(),
            Some(&context),
        )?;
        if !key.enabled {
            return Err(KmsError::disabled(&key.arn));
        }
        let mut data_key = Zeroizing::new(vec![0u8; len]);
        self.rng
            .fill(&mut data_key)
            .map_err(|_| KmsError::internal("the random generator failed"))?;
        let blob = blob::seal(
            &Self::key_id_bytes(&key)?,
            &*Self::material(&key)?,
            &context,
            &data_key,
        )
        .map_err(KmsError::internal)?;
        let mut out = json!({ "CiphertextBlob": B64.encode(blob), "KeyId": key.arn });
        match recipient {
            Some(doc) => {
                out["CiphertextForRecipient"] =
                    B64.encode(recipient::seal_for(&doc, &data_key)?).into();
            }
            None => out["Plaintext"] = B64.encode(&data_key).into(),
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdIn {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PolicyNameIn {
    key_id: String,
    #[serde(default)]
    policy_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutKeyPolicyIn {
    key_id: String,
    policy: String,
    #[serde(default)]
    policy_name: Option<String>,
    #[serde(default)]
    bypass_policy_lockout_safety_check: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyIn {
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    key_usage: Option<String>,
    #[serde(default)]
    key_spec: Option<String>,
    #[serde(default)]
    customer_master_key_spec: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    bypass_policy_lockout_safety_check: Option<bool>,
    #[serde(default)]
    multi_region: Option<bool>,
}

fn check_policy_name(name: Option<&str>) -> Result<(), KmsError> {
    match name {
        None | Some("default") => Ok(()),
        Some(other) => Err(KmsError::not_found(format!(
            "Policy {} does not exist; a key has only the policy named default",
            printable(other)
        ))),
    }
}

fn check_plaintext(p: &[u8]) -> Result<(), KmsError> {
    // The service never echoes a plaintext in an error.
    if p.is_empty() || p.len() > MAX_PLAINTEXT {
        return Err(KmsError::validation(format!(
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length between 1 and {MAX_PLAINTEXT}"
        )));
    }
    Ok(())
}

fn check_algorithm(a: Option<&str>) -> Result<(), KmsError> {
    match a {
        None => Ok(()),
        Some(a) if a == SYMMETRIC_DEFAULT => Ok(()),
        Some(a @ ("RSAES_OAEP_SHA_1" | "RSAES_OAEP_SHA_256" | "SM2PKE")) => Err(KmsError::new(
            400,
            "InvalidKeyUsageException",
            format!("The encryption algorithm {a} is not supported by a SYMMETRIC_DEFAULT key."),
        )),
        Some(a) => Err(KmsError::constraint(
            &format!("'{}'", printable(a)),
            "encryptionAlgorithm",
            "Member must satisfy enum value set: [SYMMETRIC_DEFAULT, RSAES_OAEP_SHA_1, RSAES_OAEP_SHA_256, SM2PKE]",
        )),
    }
}

/// Decodes a request body. A missing required member is a ValidationException in AWS's
/// words; anything else unreadable (bad JSON, a wrong type, bad base64) a SerializationException.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, KmsError> {
    let body = if body.is_empty() { &b"{}"[..] } else { body };
    serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        match text
            .strip_prefix("missing field `")
            .and_then(|r| r.split_once('`'))
        {
            Some((field, _)) => {
                let mut member = field.to_owned();
                if let Some(first) = member.get_mut(..1) {
                    first.make_ascii_lowercase();
                }
                KmsError::constraint("null", &member, "Member must not be null")
            }
            None => KmsError::serialization(text),
        }
    })
}
