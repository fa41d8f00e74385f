//! Key derivation of the committing suites (0x0478, 0x0578):
//!
//! ```text
//! PRK        = HKDF-Extract(SHA-512, salt = message id, IKM = data key)
//! content    = HKDF-Expand(PRK, suite id (big-endian) ‖ "DERIVEKEY", 32)
//! commitment = HKDF-Expand(PRK, "COMMITKEY", 32)
//! ```

use super::error::EsdkError;
use super::{KEY_LEN, MESSAGE_ID_LEN, Suite};
use aws_lc_rs::hkdf::{HKDF_SHA512, KeyType, Salt};
use zeroize::Zeroizing;

struct Len32;

impl KeyType for Len32 {
    fn len(&self) -> usize {
        KEY_LEN
    }
}

/// The derived content key (secret) and key commitment (public, in the header).
pub(crate) struct Derived {
    pub(crate) content_key: Zeroizing<[u8; KEY_LEN]>,
    pub(crate) commitment: [u8; KEY_LEN],
}

pub(crate) fn derive(
    suite: Suite,
    message_id: &[u8; MESSAGE_ID_LEN],
    data_key: &[u8],
) -> Result<Derived, EsdkError> {
    if data_key.len() != KEY_LEN {
        return Err(EsdkError::DataKeyLength {
            len: data_key.len(),
        });
    }
    let prk = Salt::new(HKDF_SHA512, message_id).extract(data_key);
    let mut content_key = Zeroizing::new([0u8; KEY_LEN]);
    let suite_id = suite.id().to_be_bytes();
    let info = [&suite_id[..], b"DERIVEKEY"];
    prk.expand(&info, Len32)
        .and_then(|okm| okm.fill(&mut content_key[..]))
        .map_err(|_| EsdkError::Crypto("HKDF-Expand of the content key"))?;
    let mut commitment = [0u8; KEY_LEN];
    prk.expand(&[b"COMMITKEY"], Len32)
        .and_then(|okm| okm.fill(&mut commitment))
        .map_err(|_| EsdkError::Crypto("HKDF-Expand of the key commitment"))?;
    Ok(Derived {
        content_key,
        commitment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5869 has no SHA-512 case; this is the first official ESDK vector's own
    /// content key and commitment (commitment-test-vectors.json, "1. Non-KMS key provider").
    #[test]
    fn first_official_vector_derives_its_keys() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        let id: [u8; 32] = b64("TfvRMU2dVZJbgXIyxeNtbj5eIw8BiTDiwsHyQ/Z9wXk=")
            .try_into()
            .unwrap();
        let dek = b64("+p6+whPVw9kOrYLZFMRBJ2n6Vli6T/7TkjDouS+25s0=");
        let d = derive(Suite::AesGcmHkdfSha512CommitKey, &id, &dek).unwrap();
        assert_eq!(
            &d.content_key[..],
            b64("V67301yMJtk0jxOc3QJeBac6uKxO3XylWtkKTYmUU+M=")
        );
        assert_eq!(
            &d.commitment[..],
            b64("F88I9zPbUQSfOlzLXv+uIY2+m/E6j2PMsbgeHVH/L0w=")
        );
    }

    #[test]
    fn data_keys_of_other_lengths_are_refused() {
        for len in [0, 16, 31, 33, 64] {
            assert_eq!(
                derive(Suite::AesGcmHkdfSha512CommitKey, &[0; 32], &vec![7; len]).err(),
                Some(EsdkError::DataKeyLength { len })
            );
        }
    }
}
