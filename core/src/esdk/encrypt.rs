//! Writing a message: suite 0x0578, framed, one data key, as `aws-encryption-cli` does.
//!
//! The signing key must be in the encryption context before KMS is asked for the data key
//! (the whole context, `aws-crypto-public-key` included, is bound to the encrypted data key),
//! so this takes two steps:
//!
//! ```text
//! let enc = Encryptor::new(context)?;            // fresh P-384 key, context completed
//! kms.generate_data_key(key_arn, enc.context()); // plaintext + encrypted data key
//! let message = enc.encrypt(&plaintext_key, &encrypted_key, key_arn, bids, 4096)?;
//! ```

use super::derive::derive;
use super::error::{EsdkError, shown};
use super::frames::FrameKind;
use super::header::{DataKey, frame_iv, serialize_body};
use super::{
    BID_FILE_PROVIDER_ID, ContentType, FINAL_FRAME_MARKER, IV_LEN, MESSAGE_ID_LEN,
    PUBLIC_KEY_CONTEXT_KEY, RESERVED_CONTEXT_PREFIX, Suite, TAG_LEN,
};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use std::collections::BTreeMap;
use zeroize::Zeroize;

/// One message's signing key and encryption context. Consumed by [`Encryptor::encrypt`], so
/// a signing key signs one message only.
pub struct Encryptor {
    signing_key: EcdsaKeyPair,
    context: BTreeMap<String, String>,
}

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encryptor")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    /// Makes a fresh P-384 signing key and adds its public half to `context` as
    /// `aws-crypto-public-key`. Keys starting with `aws-crypto-` are the SDK's and refused.
    pub fn new(mut context: BTreeMap<String, String>) -> Result<Encryptor, EsdkError> {
        if let Some(key) = context
            .keys()
            .find(|k| k.starts_with(RESERVED_CONTEXT_PREFIX))
        {
            return Err(EsdkError::EncodeReservedContextKey { key: shown(key) });
        }
        let signing_key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING)
            .map_err(|_| EsdkError::Crypto("P-384 key generation"))?;
        let point: EcPublicKeyCompressedBin<'_> = signing_key
            .public_key()
            .as_be_bytes()
            .map_err(|_| EsdkError::Crypto("compressing the P-384 public key"))?;
        context.insert(
            PUBLIC_KEY_CONTEXT_KEY.to_owned(),
            base64::engine::general_purpose::STANDARD.encode(point.as_ref()),
        );
        Ok(Encryptor {
            signing_key,
            context,
        })
    }

    /// The whole encryption context: give exactly this to KMS GenerateDataKey.
    pub fn context(&self) -> &BTreeMap<String, String> {
        &self.context
    }

    /// Writes the message: a random message id, the key commitment, the header tag,
    /// `plaintext` in frames of `frame_length` bytes (the final frame holds the rest, 0 to
    /// `frame_length - 1` bytes: a plaintext of whole frames ends with an empty final frame, as
    /// AWS's own SDKs write it; the Python SDK refuses a final frame of `frame_length` bytes),
    /// and the footer signature.
    /// `data_key` is the 32-byte plaintext data key, `encrypted_data_key` KMS's
    /// `CiphertextBlob` of it, and `key_arn` the `KeyId` KMS answered with.
    pub fn encrypt(
        self,
        data_key: &[u8],
        encrypted_data_key: &[u8],
        key_arn: &str,
        plaintext: &[u8],
        frame_length: u32,
    ) -> Result<Vec<u8>, EsdkError> {
        if frame_length == 0 {
            return Err(EsdkError::EncodeFrameLength);
        }
        let fl = frame_length as usize;
        // Regular frames, then the final frame with what is left (shorter than a frame).
        let regular = plaintext.len() / fl;
        if regular > (u32::MAX - 1) as usize {
            return Err(EsdkError::EncodeTooManyFrames {
                len: plaintext.len(),
                frame_length,
            });
        }
        let suite = Suite::AesGcmHkdfSha512CommitKeyEcdsaP384;
        let rng = SystemRandom::new();
        let mut message_id = [0u8; MESSAGE_ID_LEN];
        rng.fill(&mut message_id)
            .map_err(|_| EsdkError::Crypto("random message id"))?;
        let derived = derive(suite, &message_id, data_key)?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &derived.content_key[..])
                .map_err(|_| EsdkError::Crypto("AES-256-GCM key"))?,
        );
        let data_key_entry = DataKey {
            provider_id: BID_FILE_PROVIDER_ID.to_owned(),
            provider_info: key_arn.as_bytes().to_vec(),
            encrypted_key: encrypted_data_key.to_vec(),
        };
        let mut out = serialize_body(
            suite,
            &message_id,
            &self.context,
            std::slice::from_ref(&data_key_entry),
            ContentType::Framed,
            frame_length,
            &derived.commitment,
        )?;
        let frames = regular + 1;
        out.reserve(TAG_LEN + plaintext.len() + frames * (4 + IV_LEN + TAG_LEN) + 8 + 2 + 104);
        let header_tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; IV_LEN]),
                Aad::from(&out[..]),
                &mut [],
            )
            .map_err(|_| EsdkError::Crypto("AES-256-GCM header tag"))?;
        out.extend_from_slice(header_tag.as_ref());

        let mut aad = Vec::with_capacity(MESSAGE_ID_LEN + 64);
        for index in 0..frames {
            let seq = u32::try_from(index + 1).expect("frame count checked above");
            let is_final = index == regular;
            let start = index * fl;
            let chunk = &plaintext[start..(start + fl).min(plaintext.len())];
            let kind = if is_final {
                FrameKind::Final
            } else {
                FrameKind::Regular
            };
            if is_final {
                out.extend_from_slice(&FINAL_FRAME_MARKER.to_be_bytes());
            }
            out.extend_from_slice(&seq.to_be_bytes());
            let iv = frame_iv(seq);
            out.extend_from_slice(&iv);
            if is_final {
                out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            }
            aad.clear();
            aad.extend_from_slice(&message_id);
            aad.extend_from_slice(kind.content_string());
            aad.extend_from_slice(&seq.to_be_bytes());
            aad.extend_from_slice(&(chunk.len() as u64).to_be_bytes());
            let at = out.len();
            out.extend_from_slice(chunk);
            let sealed = key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(&aad[..]),
                &mut out[at..],
            );
            match sealed {
                Ok(tag) => out.extend_from_slice(tag.as_ref()),
                Err(_) => {
                    // The chunk may still be in the clear there.
                    out.zeroize();
                    return Err(EsdkError::Crypto("AES-256-GCM frame"));
                }
            }
        }

        let signature = self
            .signing_key
            .sign(&rng, &out)
            .map_err(|_| EsdkError::Crypto("ECDSA P-384 signature"))?;
        let sig = signature.as_ref();
        out.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        out.extend_from_slice(sig);
        Ok(out)
    }
}
