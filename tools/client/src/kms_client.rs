//! A small KMS client for what buyers and operators call from outside the enclave (Encrypt,
//! GenerateDataKey, a buyer's own Decrypt, CreateKey, PutKeyPolicy), signed with core's SigV4
//! and sent with the parent's HTTP client.

use bidding_core::credentials::Credentials;
use bidding_core::kms::{self, ErrorBody};
use bidding_core::sigv4::{Payload, Request};
use bidding_parent::aws::http::{HttpClient, Signing};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// A data key from GenerateDataKey. The plaintext is zeroed when dropped.
pub struct DataKey {
    pub plaintext: zeroize::Zeroizing<Vec<u8>>,
    pub ciphertext_blob: Vec<u8>,
    pub key_id: String,
}

pub struct KmsClient {
    http: HttpClient,
    /// `https://kms.<region>.amazonaws.com` or a custom endpoint such as the emulator's.
    endpoint: String,
    credentials: Credentials,
}

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("KMS {op}: {code}: {message}")]
    Service {
        op: &'static str,
        code: String,
        message: String,
    },
    #[error("KMS {op} at {endpoint}: {cause}")]
    Transport {
        op: &'static str,
        endpoint: String,
        cause: String,
    },
    #[error("KMS {op}: unexpected answer: {0}", op = .1)]
    Answer(String, &'static str),
}

impl KmsClient {
    /// `endpoint` overrides the regional one; `ca_bundle` (PEM) replaces the trusted roots.
    pub fn new(
        credentials: Credentials,
        endpoint: Option<String>,
        ca_bundle: Option<&[u8]>,
    ) -> Result<Self, String> {
        let http = match ca_bundle {
            Some(pem) => HttpClient::with_ca_bundle(pem)?,
            None => HttpClient::shared().clone(),
        };
        let endpoint = endpoint
            .map(|e| e.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| {
                format!(
                    "https://{}",
                    kms::endpoint_host(credentials.region.as_str())
                )
            });
        Ok(KmsClient {
            http,
            endpoint,
            credentials,
        })
    }

    pub fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        op: &'static str,
        request: &Q,
    ) -> Result<A, KmsError> {
        let body = serde_json::to_vec(request).expect("KMS bodies serialise");
        let target = format!("{}{op}", kms::TARGET_PREFIX);
        let url = format!("{}/", self.endpoint);
        let headers = [
            ("content-type", kms::CONTENT_TYPE),
            ("x-amz-target", target.as_str()),
        ];
        let req = Request {
            method: "POST",
            url: &url,
            headers: &headers,
            body: &body,
        };
        let signing = Signing {
            service: "kms",
            region: self.credentials.region.as_str(),
            credentials: &self.credentials,
            payload: Payload::Default,
        };
        let resp = self
            .http
            .send_signed(&req, &signing, kms::MAX_RESPONSE_BYTES as u64)
            .map_err(|e| KmsError::Transport {
                op,
                endpoint: self.endpoint.clone(),
                cause: e.to_string(),
            })?;
        if !resp.is_success() {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&resp.body) {
                Ok(e) => (
                    e.kind.rsplit('#').next().unwrap_or_default().to_owned(),
                    e.message.unwrap_or_default(),
                ),
                Err(_) => (format!("HTTP {}", resp.status), String::new()),
            };
            return Err(KmsError::Service { op, code, message });
        }
        // Operations without output (PutKeyPolicy) answer 200 with an empty body.
        let answer: &[u8] = if resp.body.is_empty() {
            b"{}"
        } else {
            &resp.body
        };
        serde_json::from_slice(answer).map_err(|e| KmsError::Answer(e.to_string(), op))
    }

    /// PutKeyPolicy: `policy` (JSON) becomes the key's `default` policy.
    pub fn put_key_policy(&self, key_id: &str, policy: &str) -> Result<(), KmsError> {
        let request = serde_json::json!({
            "KeyId": key_id,
            "PolicyName": "default",
            "Policy": policy,
        });
        self.call::<_, serde::de::IgnoredAny>("PutKeyPolicy", &request)
            .map(|_| ())
    }

    /// GetKeyPolicy: the key's `default` policy (JSON).
    pub fn get_key_policy(&self, key_id: &str) -> Result<String, KmsError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(rename = "Policy")]
            policy: String,
        }
        let request = serde_json::json!({ "KeyId": key_id, "PolicyName": "default" });
        self.call::<_, Answer>("GetKeyPolicy", &request)
            .map(|a| a.policy)
    }

    pub fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: Option<BTreeMap<String, String>>,
    ) -> Result<Vec<u8>, KmsError> {
        let answer: kms::EncryptResponse = self.call(
            "Encrypt",
            &kms::EncryptRequest {
                key_id: key_id.to_owned(),
                plaintext: plaintext.to_vec(),
                encryption_context: context,
                encryption_algorithm: None,
            },
        )?;
        Ok(answer.ciphertext_blob)
    }

    /// Decrypt with the caller's own credentials and no Recipient: what a buyer may do with
    /// their own key to check that a ciphertext opens under a context (`bidctl seal`). Returns
    /// the key KMS used; the plaintext is zeroed before this returns and never shown.
    pub fn decrypt_check(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        context: Option<BTreeMap<String, String>>,
    ) -> Result<String, KmsError> {
        let answer: kms::DecryptResponse = self.call(
            "Decrypt",
            &kms::DecryptRequest {
                ciphertext_blob: ciphertext.to_vec(),
                key_id: Some(key_id.to_owned()),
                encryption_context: context,
                encryption_algorithm: None,
                recipient: None,
            },
        )?;
        drop(answer.plaintext.map(zeroize::Zeroizing::new));
        Ok(answer.key_id)
    }

    /// A fresh 32-byte data key under `key_id`, bound to `context`: the plaintext key and
    /// KMS's `CiphertextBlob` of it, and the key ARN KMS answered with.
    pub fn generate_data_key(
        &self,
        key_id: &str,
        context: &BTreeMap<String, String>,
    ) -> Result<DataKey, KmsError> {
        let answer: kms::GenerateDataKeyResponse = self.call(
            "GenerateDataKey",
            &kms::GenerateDataKeyRequest {
                key_id: key_id.to_owned(),
                key_spec: None,
                number_of_bytes: Some(32),
                encryption_context: Some(context.clone()),
                recipient: None,
            },
        )?;
        let plaintext = answer.plaintext.filter(|p| p.len() == 32).ok_or_else(|| {
            KmsError::Answer("no 32-byte Plaintext".to_owned(), "GenerateDataKey")
        })?;
        Ok(DataKey {
            plaintext: zeroize::Zeroizing::new(plaintext),
            ciphertext_blob: answer.ciphertext_blob,
            key_id: answer.key_id,
        })
    }

    pub fn create_key(
        &self,
        description: &str,
        policy: Option<String>,
    ) -> Result<kms::KeyMetadata, KmsError> {
        let answer: kms::KeyMetadataResponse = self.call(
            "CreateKey",
            &kms::CreateKeyRequest {
                description: Some(description.to_owned()),
                policy,
                ..Default::default()
            },
        )?;
        Ok(answer.key_metadata)
    }
}
