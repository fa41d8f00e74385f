//! CMS EnvelopedData as KMS returns it in `CiphertextForRecipient` (DESIGN §5).
//!
//! Exactly one shape is accepted: ContentInfo/EnvelopedData v2 holding one
//! KeyTransRecipientInfo v2 whose rid is a `[0]` subjectKeyIdentifier (SHA-256 of our DER
//! SubjectPublicKeyInfo), RSAES-OAEP with SHA-256/MGF1-SHA-256 and the empty label, content
//! type data, AES-256-CBC with a 16-byte IV and PKCS#7 padding. KMS writes BER with
//! indefinite lengths; OpenSSL writes the same or DER. Anything else is refused with its own
//! error, since a silently accepted variant is a second cipher suite nobody reviewed.
//!
//! The plaintext is a bid amount: it and the content key live only in zeroizing buffers and
//! appear in no error or `Debug` output.
//!
//! `open` reports key-transport and padding failures apart, which would be a padding oracle if
//! an attacker could submit envelopes and read the error. The enclave only opens envelopes that
//! arrive from KMS over TLS it terminates itself, so the parent cannot.

use crate::ber::{BerError, Reader, Tag, Tlv};
use aws_lc_rs::cipher::{
    AES_256, AES_256_KEY_LEN, DecryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::digest;
use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use zeroize::Zeroizing;

const ENVELOPED_DATA: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
const DATA: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const RSA_ENCRYPTION: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const RSAES_OAEP: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07];
const MGF1: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08];
const P_SPECIFIED: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x09];
const SHA1: [u8; 5] = [0x2b, 0x0e, 0x03, 0x02, 0x1a];
const SHA256: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const SHA384: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const SHA512: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
const AES_128_CBC: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
const AES_192_CBC: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16];
const AES_256_CBC: [u8; 9] = [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];

/// Names for the OIDs someone is likely to send us by mistake, so errors say more than digits.
const KNOWN_OIDS: &[(&[u8], &str)] = &[
    (&ENVELOPED_DATA, "envelopedData"),
    (&DATA, "data"),
    (&RSA_ENCRYPTION, "rsaEncryption, PKCS#1 v1.5"),
    (&RSAES_OAEP, "RSAES-OAEP"),
    (&MGF1, "MGF1"),
    (&P_SPECIFIED, "pSpecified"),
    (&SHA1, "SHA-1"),
    (&SHA256, "SHA-256"),
    (&SHA384, "SHA-384"),
    (&SHA512, "SHA-512"),
    (&AES_128_CBC, "AES-128-CBC"),
    (&AES_192_CBC, "AES-192-CBC"),
    (&AES_256_CBC, "AES-256-CBC"),
];

/// keyEncryptionAlgorithm byte for byte as KMS writes it: RSAES-OAEP, hash SHA-256 and MGF1
/// with SHA-256, both hash AlgorithmIdentifiers with NULL parameters, the default (empty)
/// label left out.
#[rustfmt::skip]
const KMS_OAEP_ALGORITHM: [u8; 62] = [
    0x30, 0x3c,
      0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07,
      0x30, 0x2f,
        0xa0, 0x0f,
          0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
        0xa1, 0x1c,
          0x30, 0x1a,
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08,
            0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00,
];

const AES_BLOCK: usize = 16;
/// Hex shown of an attacker-chosen value in an error, so a huge field cannot flood a log.
const MAX_HEX_BYTES: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmsError {
    #[error("malformed CMS envelope: {0}")]
    Malformed(#[from] BerError),
    #[error("CMS contentType is {found}; expected envelopedData (1.2.840.113549.1.7.3)")]
    NotEnvelopedData { found: String },
    #[error("{structure} version is {found}; expected 2")]
    UnsupportedVersion {
        structure: &'static str,
        found: String,
    },
    #[error("the envelope has {found} recipients; expected exactly one")]
    RecipientCount { found: usize },
    #[error("the recipient is a {found}; only KeyTransRecipientInfo is supported")]
    UnsupportedRecipientInfo { found: &'static str },
    #[error(
        "the recipient is identified by issuerAndSerialNumber; expected a [0] \
         subjectKeyIdentifier"
    )]
    RidNotSubjectKeyIdentifier,
    #[error("key transport algorithm is {found}; expected RSAES-OAEP (1.2.840.113549.1.1.7)")]
    UnsupportedKeyTransport { found: String },
    #[error("RSAES-OAEP hash is {found}; expected SHA-256 (2.16.840.1.101.3.4.2.1)")]
    UnsupportedOaepHash { found: String },
    #[error("RSAES-OAEP mask generation is {found}; expected MGF1 with SHA-256")]
    UnsupportedOaepMgf { found: String },
    #[error("RSAES-OAEP label source is {found}; only the empty label is supported")]
    UnsupportedOaepLabel { found: String },
    #[error("the {algorithm} AlgorithmIdentifier has parameters other than none or NULL")]
    UnexpectedParameters { algorithm: &'static str },
    #[error("encrypted content type is {found}; expected data (1.2.840.113549.1.7.1)")]
    UnsupportedContentType { found: String },
    #[error("content cipher is {found}; expected AES-256-CBC (2.16.840.1.101.3.4.1.42)")]
    UnsupportedContentCipher { found: String },
    #[error("the AES-256-CBC IV is {len} bytes; expected 16")]
    IvLength { len: usize },
    #[error("the envelope has no encryptedContent (detached content is not supported)")]
    MissingEncryptedContent,
    #[error(
        "encryptedContent is {len} bytes; expected a positive multiple of the 16-byte AES block"
    )]
    ContentLength { len: usize },
    #[error("the envelope is for recipient key id {found}, not ours ({expected})")]
    RidMismatch { expected: String, found: String },
    #[error("encryptedKey is {found} bytes; our RSA key needs exactly {expected}")]
    EncryptedKeyLength { found: usize, expected: usize },
    #[error(
        "RSA-OAEP decryption of the content-encryption key failed (wrong private key or \
         corrupted encryptedKey)"
    )]
    KeyDecryptFailed,
    #[error("the decrypted content-encryption key is {len} bytes; AES-256 needs 32")]
    ContentKeyLength { len: usize },
    #[error(
        "AES-256-CBC decryption failed: invalid PKCS#7 padding (wrong content key or corrupted \
         encryptedContent)"
    )]
    ContentDecryptFailed,
    #[error("the recipient public key is not a DER SubjectPublicKeyInfo of a usable RSA key")]
    InvalidRecipientKey,
    #[error("a plaintext of {len} bytes is too large to seal")]
    PlaintextTooLarge { len: usize },
    #[error("sealing failed: {0}")]
    SealFailed(&'static str),
}

/// The fields of a checked envelope. All of them are public on the wire (ciphertext and ids),
/// so `Debug` may show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The recipient's subjectKeyIdentifier; KMS uses SHA-256 of the DER SPKI, see
    /// [`recipient_key_id`].
    pub rid: Vec<u8>,
    /// The AES-256 content key, RSA-OAEP encrypted to the recipient.
    pub encrypted_key: Vec<u8>,
    pub iv: [u8; AES_BLOCK],
    /// AES-256-CBC ciphertext, segments of a constructed encoding already joined.
    pub encrypted_content: Vec<u8>,
}

/// Opened content, a bid amount: zeroed on drop, and redacted in `Debug`, length included,
/// because `Zeroizing<Vec<u8>>` would print the bytes from any `{:?}` of a `Result`.
pub struct Plaintext(Zeroizing<Vec<u8>>);

impl Plaintext {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Plaintext(bytes)
    }
    pub fn into_inner(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl std::ops::Deref for Plaintext {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plaintext(<redacted>)")
    }
}

/// The subjectKeyIdentifier KMS puts in the rid for a recipient key: SHA-256 of its DER
/// SubjectPublicKeyInfo.
pub fn recipient_key_id(spki_der: &[u8]) -> [u8; 32] {
    let mut id = [0u8; 32];
    id.copy_from_slice(digest::digest(&digest::SHA256, spki_der).as_ref());
    id
}

/// Parses and checks an envelope without decrypting anything.
pub fn parse(ber: &[u8]) -> Result<Envelope, CmsError> {
    let mut top = Reader::new(ber);
    let content_info = top.read_tag(Tag::SEQUENCE, "the ContentInfo SEQUENCE")?;
    top.finish("the ContentInfo")?;

    let mut ci = content_info.children()?;
    let content_type = ci.read_tag(Tag::OID, "the ContentInfo contentType OBJECT IDENTIFIER")?;
    if content_type.content != ENVELOPED_DATA {
        return Err(CmsError::NotEnvelopedData {
            found: oid_text(content_type.content),
        });
    }
    let explicit = ci.read_tag(
        Tag::context(0, true),
        "the ContentInfo [0] EXPLICIT content",
    )?;
    ci.finish("the ContentInfo content")?;

    let mut wrapper = explicit.children()?;
    let enveloped = wrapper.read_tag(Tag::SEQUENCE, "the EnvelopedData SEQUENCE")?;
    wrapper.finish("the EnvelopedData")?;

    let mut ed = enveloped.children()?;
    let version = ed.read_tag(Tag::INTEGER, "the EnvelopedData version INTEGER")?;
    check_version(&version, "EnvelopedData")?;
    let recipient_infos = ed.read_tag(
        Tag::SET,
        "the recipientInfos SET (originatorInfo is not supported)",
    )?;
    let encrypted_content_info = ed.read_tag(Tag::SEQUENCE, "the EncryptedContentInfo SEQUENCE")?;
    ed.finish("the EncryptedContentInfo (unprotectedAttrs are not supported)")?;

    let (rid, encrypted_key) = recipient(recipient_infos)?;
    let (iv, encrypted_content) = content(encrypted_content_info)?;
    Ok(Envelope {
        rid,
        encrypted_key,
        iv,
        encrypted_content,
    })
}

/// Opens an envelope addressed to `key`, whose subjectKeyIdentifier is `expected_rid`.
/// The rid is compared before any private-key operation, so a misaddressed envelope costs
/// nothing and is reported as such rather than as a decryption failure.
pub fn open(
    ber: &[u8],
    key: &PrivateDecryptingKey,
    expected_rid: &[u8],
) -> Result<Plaintext, CmsError> {
    let envelope = parse(ber)?;
    if envelope.rid != expected_rid {
        return Err(CmsError::RidMismatch {
            expected: hex_capped(expected_rid),
            found: hex_capped(&envelope.rid),
        });
    }
    // A clone is a reference-count increment on the same EVP_PKEY.
    let oaep =
        OaepPrivateDecryptingKey::new(key.clone()).map_err(|_| CmsError::KeyDecryptFailed)?;
    if envelope.encrypted_key.len() != oaep.key_size_bytes() {
        return Err(CmsError::EncryptedKeyLength {
            found: envelope.encrypted_key.len(),
            expected: oaep.key_size_bytes(),
        });
    }
    let mut key_buf = Zeroizing::new(vec![0u8; oaep.min_output_size()]);
    let content_key = oaep
        .decrypt(
            &OAEP_SHA256_MGF1SHA256,
            &envelope.encrypted_key,
            &mut key_buf,
            None,
        )
        .map_err(|_| CmsError::KeyDecryptFailed)?;
    if content_key.len() != AES_256_KEY_LEN {
        return Err(CmsError::ContentKeyLength {
            len: content_key.len(),
        });
    }
    let cipher = UnboundCipherKey::new(&AES_256, content_key)
        .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
        .map_err(|_| CmsError::ContentDecryptFailed)?;
    let mut plaintext = Zeroizing::new(envelope.encrypted_content);
    let len = cipher
        .decrypt(&mut plaintext, DecryptionContext::Iv128(envelope.iv.into()))
        .map_err(|_| CmsError::ContentDecryptFailed)?
        .len();
    plaintext.truncate(len);
    Ok(Plaintext(plaintext))
}

/// Encrypts `plaintext` to the RSA key in `recipient_spki_der` in exactly the shape KMS uses
/// for `CiphertextForRecipient` (indefinite lengths, NULL hash parameters, constructed
/// encryptedContent with one segment), with a fresh AES-256 key and IV.
pub fn seal(recipient_spki_der: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CmsError> {
    // The padded content must fit a four-octet length, the most `ber` reads.
    if u32::try_from(plaintext.len() + AES_BLOCK).is_err() {
        return Err(CmsError::PlaintextTooLarge {
            len: plaintext.len(),
        });
    }
    let public = PublicEncryptingKey::from_der(recipient_spki_der)
        .map_err(|_| CmsError::InvalidRecipientKey)?;
    let oaep = OaepPublicEncryptingKey::new(public).map_err(|_| CmsError::InvalidRecipientKey)?;

    let mut content_key = Zeroizing::new([0u8; AES_256_KEY_LEN]);
    aws_lc_rs::rand::fill(&mut content_key[..])
        .map_err(|_| CmsError::SealFailed("the random generator failed"))?;
    let mut encrypted_key = vec![0u8; oaep.ciphertext_size()];
    let wrapped_len = oaep
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            &content_key[..],
            &mut encrypted_key,
            None,
        )
        .map_err(|_| CmsError::SealFailed("RSA-OAEP encryption of the content key failed"))?
        .len();
    encrypted_key.truncate(wrapped_len);

    let cipher = UnboundCipherKey::new(&AES_256, &content_key[..])
        .and_then(PaddedBlockEncryptingKey::cbc_pkcs7)
        .map_err(|_| CmsError::SealFailed("AES-256-CBC key setup failed"))?;
    // Room for the padding up front: growing the buffer would free a copy of the plaintext
    // without zeroing it.
    let mut content = Zeroizing::new(Vec::with_capacity(plaintext.len() + AES_BLOCK));
    content.extend_from_slice(plaintext);
    // aws-lc draws the IV from its own RNG.
    let context = cipher
        .encrypt(&mut *content)
        .map_err(|_| CmsError::SealFailed("AES-256-CBC encryption failed"))?;
    let iv: &[u8] = (&context)
        .try_into()
        .map_err(|_| CmsError::SealFailed("AES-256-CBC returned no IV"))?;

    let rid = recipient_key_id(recipient_spki_der);
    let key_trans = definite(
        0x30,
        &[
            &[0x02, 0x01, 0x02],
            &definite(0x80, &[&rid]),
            &KMS_OAEP_ALGORITHM,
            &definite(0x04, &[&encrypted_key]),
        ],
    );
    let content_algorithm = definite(
        0x30,
        &[&definite(0x06, &[&AES_256_CBC]), &definite(0x04, &[iv])],
    );
    let encrypted_content_info = indefinite(
        0x30,
        &[
            &definite(0x06, &[&DATA]),
            &content_algorithm,
            &indefinite(0xa0, &[&definite(0x04, &[&content])]),
        ],
    );
    let enveloped_data = indefinite(
        0x30,
        &[
            &[0x02, 0x01, 0x02],
            &definite(0x31, &[&key_trans]),
            &encrypted_content_info,
        ],
    );
    Ok(indefinite(
        0x30,
        &[
            &definite(0x06, &[&ENVELOPED_DATA]),
            &indefinite(0xa0, &[&enveloped_data]),
        ],
    ))
}

/// The one RecipientInfo: its subjectKeyIdentifier and encryptedKey.
fn recipient(recipient_infos: Tlv<'_>) -> Result<(Vec<u8>, Vec<u8>), CmsError> {
    let mut infos = recipient_infos.children()?;
    let mut all = Vec::with_capacity(1);
    while !infos.is_empty() {
        all.push(infos.read("a RecipientInfo")?);
    }
    let [info] = all[..] else {
        return Err(CmsError::RecipientCount { found: all.len() });
    };
    let other = |found| Err(CmsError::UnsupportedRecipientInfo { found });
    match info.tag {
        Tag::SEQUENCE => {}
        t if t == Tag::context(1, true) => return other("KeyAgreeRecipientInfo"),
        t if t == Tag::context(2, true) => return other("KEKRecipientInfo"),
        t if t == Tag::context(3, true) => return other("PasswordRecipientInfo"),
        t if t == Tag::context(4, true) => return other("OtherRecipientInfo"),
        found => {
            return Err(BerError::UnexpectedTag {
                offset: info.offset,
                expected: "a KeyTransRecipientInfo SEQUENCE",
                found,
            }
            .into());
        }
    }

    let mut ktri = info.children()?;
    let version = ktri.read_tag(Tag::INTEGER, "the KeyTransRecipientInfo version INTEGER")?;
    // Looked at before the version, which follows from it, because it is the clearer message.
    if ktri.peek_tag()? == Some(Tag::SEQUENCE) {
        return Err(CmsError::RidNotSubjectKeyIdentifier);
    }
    check_version(&version, "KeyTransRecipientInfo")?;
    let rid = ktri.read_octets(Tag::context(0, false), "the rid [0] subjectKeyIdentifier")?;
    let algorithm = ktri.read_tag(
        Tag::SEQUENCE,
        "the keyEncryptionAlgorithm AlgorithmIdentifier SEQUENCE",
    )?;
    key_transport(algorithm)?;
    let encrypted_key = ktri.read_octets(Tag::OCTET_STRING, "the encryptedKey OCTET STRING")?;
    ktri.finish("the encryptedKey")?;
    Ok((rid.into_owned(), encrypted_key.into_owned()))
}

/// RSAES-OAEP with SHA-256, MGF1-SHA-256 and the empty label, and nothing else. Each absent
/// field means its default (SHA-1, MGF1-SHA-1, empty label), per RFC 4055.
fn key_transport(algorithm: Tlv<'_>) -> Result<(), CmsError> {
    let mut alg = algorithm.children()?;
    let oid = alg.read_tag(Tag::OID, "the keyEncryptionAlgorithm OBJECT IDENTIFIER")?;
    if oid.content != RSAES_OAEP {
        return Err(CmsError::UnsupportedKeyTransport {
            found: oid_text(oid.content),
        });
    }
    let sha1_default = || CmsError::UnsupportedOaepHash {
        found: "SHA-1 (1.3.14.3.2.26, the default when hashAlgorithm is absent)".into(),
    };
    let Some(params) = alg.read_optional(Tag::SEQUENCE)? else {
        alg.finish("the RSAES-OAEP OBJECT IDENTIFIER")?;
        return Err(sha1_default());
    };
    alg.finish("the RSAES-OAEP-params")?;

    let mut p = params.children()?;
    let hash = p
        .read_optional(Tag::context(0, true))?
        .ok_or_else(sha1_default)?;
    let mut hash = hash.children()?;
    let hash_alg = hash.read_tag(
        Tag::SEQUENCE,
        "the hashAlgorithm AlgorithmIdentifier SEQUENCE",
    )?;
    hash.finish("the hashAlgorithm")?;
    expect_sha256(hash_alg, "the hashAlgorithm OBJECT IDENTIFIER", |found| {
        CmsError::UnsupportedOaepHash { found }
    })?;

    let mgf =
        p.read_optional(Tag::context(1, true))?
            .ok_or_else(|| CmsError::UnsupportedOaepMgf {
                found: "MGF1 with SHA-1 (the default when maskGenAlgorithm is absent)".into(),
            })?;
    let mut mgf = mgf.children()?;
    let mgf_alg = mgf.read_tag(
        Tag::SEQUENCE,
        "the maskGenAlgorithm AlgorithmIdentifier SEQUENCE",
    )?;
    mgf.finish("the maskGenAlgorithm")?;
    let mut mgf_alg = mgf_alg.children()?;
    let mgf_oid = mgf_alg.read_tag(Tag::OID, "the maskGenAlgorithm OBJECT IDENTIFIER")?;
    if mgf_oid.content != MGF1 {
        return Err(CmsError::UnsupportedOaepMgf {
            found: oid_text(mgf_oid.content),
        });
    }
    let mgf_hash = mgf_alg.read_tag(Tag::SEQUENCE, "the MGF1 hash AlgorithmIdentifier SEQUENCE")?;
    mgf_alg.finish("the MGF1 hash AlgorithmIdentifier")?;
    expect_sha256(mgf_hash, "the MGF1 hash OBJECT IDENTIFIER", |found| {
        CmsError::UnsupportedOaepMgf {
            found: format!("MGF1 with {found}"),
        }
    })?;

    if let Some(source) = p.read_optional(Tag::context(2, true))? {
        let mut source = source.children()?;
        let source_alg = source.read_tag(
            Tag::SEQUENCE,
            "the pSourceAlgorithm AlgorithmIdentifier SEQUENCE",
        )?;
        source.finish("the pSourceAlgorithm")?;
        let mut source_alg = source_alg.children()?;
        let oid = source_alg.read_tag(Tag::OID, "the pSourceAlgorithm OBJECT IDENTIFIER")?;
        if oid.content != P_SPECIFIED {
            return Err(CmsError::UnsupportedOaepLabel {
                found: oid_text(oid.content),
            });
        }
        let label =
            source_alg.read_octets(Tag::OCTET_STRING, "the pSpecified label OCTET STRING")?;
        source_alg.finish("the pSpecified label")?;
        if !label.is_empty() {
            return Err(CmsError::UnsupportedOaepLabel {
                found: format!("a {}-byte label", label.len()),
            });
        }
    }
    p.finish("the RSAES-OAEP-params")?;
    Ok(())
}

/// SHA-256 with absent or NULL parameters: KMS writes NULL, OpenSSL leaves them out.
fn expect_sha256(
    algorithm: Tlv<'_>,
    expected: &'static str,
    unsupported: fn(String) -> CmsError,
) -> Result<(), CmsError> {
    let mut alg = algorithm.children()?;
    let oid = alg.read_tag(Tag::OID, expected)?;
    if oid.content != SHA256 {
        return Err(unsupported(oid_text(oid.content)));
    }
    let null_ok = match alg.read_optional(Tag::NULL)? {
        Some(null) => null.content.is_empty(),
        None => true,
    };
    if !null_ok || !alg.is_empty() {
        return Err(CmsError::UnexpectedParameters {
            algorithm: "SHA-256",
        });
    }
    Ok(())
}

/// The EncryptedContentInfo: IV and joined ciphertext.
fn content(info: Tlv<'_>) -> Result<([u8; AES_BLOCK], Vec<u8>), CmsError> {
    let mut eci = info.children()?;
    let content_type = eci.read_tag(
        Tag::OID,
        "the EncryptedContentInfo contentType OBJECT IDENTIFIER",
    )?;
    if content_type.content != DATA {
        return Err(CmsError::UnsupportedContentType {
            found: oid_text(content_type.content),
        });
    }
    let algorithm = eci.read_tag(
        Tag::SEQUENCE,
        "the contentEncryptionAlgorithm AlgorithmIdentifier SEQUENCE",
    )?;
    let mut alg = algorithm.children()?;
    let oid = alg.read_tag(Tag::OID, "the contentEncryptionAlgorithm OBJECT IDENTIFIER")?;
    if oid.content != AES_256_CBC {
        return Err(CmsError::UnsupportedContentCipher {
            found: oid_text(oid.content),
        });
    }
    let iv = alg.read_octets(Tag::OCTET_STRING, "the AES-256-CBC IV OCTET STRING")?;
    alg.finish("the AES-256-CBC IV")?;
    let iv: [u8; AES_BLOCK] = iv[..]
        .try_into()
        .map_err(|_| CmsError::IvLength { len: iv.len() })?;

    if eci.is_empty() {
        return Err(CmsError::MissingEncryptedContent);
    }
    let encrypted = eci.read_octets(Tag::context(0, false), "the [0] IMPLICIT encryptedContent")?;
    eci.finish("the encryptedContent")?;
    if encrypted.is_empty() || encrypted.len() % AES_BLOCK != 0 {
        return Err(CmsError::ContentLength {
            len: encrypted.len(),
        });
    }
    Ok((iv, encrypted.into_owned()))
}

fn check_version(version: &Tlv<'_>, structure: &'static str) -> Result<(), CmsError> {
    if version.content == [2] {
        return Ok(());
    }
    Err(CmsError::UnsupportedVersion {
        structure,
        found: integer_text(version.content),
    })
}

fn integer_text(content: &[u8]) -> String {
    match content.first() {
        None => "an empty INTEGER".into(),
        Some(&first) if content.len() <= 8 => {
            let sign = if first & 0x80 != 0 { -1i64 } else { 0 };
            let value = content.iter().fold(sign, |v, &b| (v << 8) | i64::from(b));
            value.to_string()
        }
        Some(_) => format!("a {}-byte INTEGER", content.len()),
    }
}

/// Dotted form of an OBJECT IDENTIFIER's content, with its name when we know it.
fn oid_text(content: &[u8]) -> String {
    let dotted = dotted_oid(content)
        .unwrap_or_else(|| format!("a malformed OBJECT IDENTIFIER ({})", hex_capped(content)));
    match KNOWN_OIDS.iter().find(|(oid, _)| *oid == content) {
        Some((_, name)) => format!("{dotted} ({name})"),
        None => dotted,
    }
}

fn dotted_oid(content: &[u8]) -> Option<String> {
    if content.len() > MAX_HEX_BYTES {
        return None;
    }
    let mut arcs = Vec::new();
    let mut arc: u64 = 0;
    let mut at_start = true;
    for &b in content {
        // A leading 0x80 pads an arc; X.690 forbids it.
        if (at_start && b == 0x80) || arc >> 57 != 0 {
            return None;
        }
        arc = (arc << 7) | u64::from(b & 0x7f);
        at_start = b & 0x80 == 0;
        if at_start {
            arcs.push(arc);
            arc = 0;
        }
    }
    let (&first, rest) = arcs.split_first()?;
    if !at_start {
        return None;
    }
    let (a, b) = match first {
        0..40 => (0, first),
        40..80 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut text = format!("{a}.{b}");
    for arc in rest {
        text.push('.');
        text.push_str(&arc.to_string());
    }
    Some(text)
}

fn hex_capped(bytes: &[u8]) -> String {
    match bytes.get(..MAX_HEX_BYTES) {
        Some(head) if bytes.len() > MAX_HEX_BYTES => {
            format!("{}... ({} bytes)", hex::encode(head), bytes.len())
        }
        _ => hex::encode(bytes),
    }
}

/// A definite-length value with minimal length octets.
fn definite(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 10);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let significant: Vec<u8> = bytes.iter().copied().skip_while(|&b| b == 0).collect();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(&significant);
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// An indefinite-length constructed value, closed by an end-of-contents marker.
fn indefinite(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 4);
    out.extend_from_slice(&[tag, 0x80]);
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(&[0x00, 0x00]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_rendering() {
        assert_eq!(
            oid_text(&RSA_ENCRYPTION),
            "1.2.840.113549.1.1.1 (rsaEncryption, PKCS#1 v1.5)"
        );
        assert_eq!(
            oid_text(&AES_128_CBC),
            "2.16.840.1.101.3.4.1.2 (AES-128-CBC)"
        );
        assert_eq!(oid_text(&[0x2a, 0x03]), "1.2.3");
        assert_eq!(oid_text(&[0x00]), "0.0");
        assert_eq!(
            oid_text(&[0x2a, 0x83]),
            "a malformed OBJECT IDENTIFIER (2a83)"
        );
        assert_eq!(oid_text(&[]), "a malformed OBJECT IDENTIFIER ()");
        assert_eq!(
            oid_text(&[0x80, 0x01]),
            "a malformed OBJECT IDENTIFIER (8001)"
        );
        assert!(oid_text(&[0xff; 20]).starts_with("a malformed"));
    }

    #[test]
    fn integer_rendering() {
        assert_eq!(integer_text(&[0]), "0");
        assert_eq!(integer_text(&[0xff]), "-1");
        assert_eq!(integer_text(&[0x01, 0x00]), "256");
        assert_eq!(integer_text(&[]), "an empty INTEGER");
        assert_eq!(integer_text(&[1; 9]), "a 9-byte INTEGER");
    }

    #[test]
    fn definite_lengths_are_minimal() {
        assert_eq!(definite(0x04, &[&[7; 3]])[..2], [0x04, 0x03]);
        assert_eq!(definite(0x04, &[&[7; 0x80]])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(definite(0x04, &[&[7; 256]])[..4], [0x04, 0x82, 0x01, 0x00]);
    }

    #[test]
    fn hex_is_capped() {
        assert_eq!(hex_capped(&[0xab; 2]), "abab");
        let long = hex_capped(&[0; 100]);
        assert!(
            long.ends_with("... (100 bytes)") && long.len() < 150,
            "{long}"
        );
    }
}
