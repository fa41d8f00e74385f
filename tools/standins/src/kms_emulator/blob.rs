//! Key material and ciphertext blobs.
//!
//! A blob is `01 | key id (16 bytes, the key's UUID) | nonce (12) | AES-256-GCM ciphertext and
//! tag`, under the key's 256-bit material, with the version byte, the key id and the encryption
//! context as associated data. So, as with real KMS, a blob names its key (Decrypt needs no
//! KeyId) and any change to the blob or the context makes it fail to open. The layout is the
//! emulator's own: real KMS blobs are opaque to every client, ours included.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

pub const VERSION: u8 = 1;
pub const KEY_ID_LEN: usize = 16;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN;
pub const MATERIAL_LEN: usize = 32;

pub type Material = Zeroizing<[u8; MATERIAL_LEN]>;

pub fn new_material() -> Result<Material, String> {
    let mut m = Zeroizing::new([0u8; MATERIAL_LEN]);
    SystemRandom::new()
        .fill(&mut m[..])
        .map_err(|_| "the random generator failed".to_owned())?;
    Ok(m)
}

/// A new key id: a random (version 4) UUID.
pub fn new_key_id() -> Result<String, String> {
    let mut b = [0u8; KEY_ID_LEN];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "the random generator failed".to_owned())?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(uuid_string(&b))
}

pub fn uuid_string(b: &[u8; KEY_ID_LEN]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The 16 bytes of a UUID in its canonical lowercase 8-4-4-4-12 form.
pub fn uuid_bytes(s: &str) -> Option<[u8; KEY_ID_LEN]> {
    let b = s.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let digits: String = s.chars().filter(|&c| c != '-').collect();
    if !digits
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let mut out = [0u8; KEY_ID_LEN];
    hex::decode_to_slice(digits, &mut out).ok()?;
    Some(out)
}

/// The key id a blob names, if it is long enough to be one of ours.
pub fn key_id(blob: &[u8]) -> Option<[u8; KEY_ID_LEN]> {
    if blob.len() < HEADER_LEN + NONCE_LEN + TAG_LEN || blob[0] != VERSION {
        return None;
    }
    blob[1..HEADER_LEN].try_into().ok()
}

/// Length-prefixed pairs in key order: unambiguous, unlike a plain concatenation.
fn aad(header: &[u8], context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = header.to_vec();
    for (k, v) in context {
        for s in [k, v] {
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
    }
    out
}

fn cipher(material: &[u8; MATERIAL_LEN]) -> Result<LessSafeKey, String> {
    UnboundKey::new(&AES_256_GCM, material)
        .map(LessSafeKey::new)
        .map_err(|_| "AES-256-GCM key setup failed".to_owned())
}

pub fn seal(
    key_id: &[u8; KEY_ID_LEN],
    material: &[u8; MATERIAL_LEN],
    context: &BTreeMap<String, String>,
    plaintext: &[u8],
) -> Result<Vec<u8>, String> {
    let mut header = vec![VERSION];
    header.extend_from_slice(key_id);
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| "the random generator failed".to_owned())?;
    // Encrypt in a buffer that is zeroed if it is dropped before the plaintext is overwritten.
    let mut buf = Zeroizing::new(plaintext.to_vec());
    cipher(material)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(&header, context)),
            &mut *buf,
        )
        .map_err(|_| "AES-256-GCM encryption failed".to_owned())?;
    let mut out = header;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Ok(out)
}

/// Opens a blob; `None` when it is not ours, was altered, or `context` differs.
pub fn open(
    material: &[u8; MATERIAL_LEN],
    blob: &[u8],
    context: &BTreeMap<String, String>,
) -> Option<Zeroizing<Vec<u8>>> {
    key_id(blob)?;
    let (header, rest) = blob.split_at(HEADER_LEN);
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(sealed.to_vec());
    let len = cipher(material)
        .ok()?
        .open_in_place(nonce, Aad::from(aad(header, context)), &mut buf)
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_alteration_fails() {
        let m = new_material().unwrap();
        let id = uuid_bytes(&new_key_id().unwrap()).unwrap();
        let ctx = BTreeMap::from([("auction".to_owned(), "a1".to_owned())]);
        let blob = seal(&id, &m, &ctx, b"100000").unwrap();
        assert_eq!(key_id(&blob), Some(id));
        assert_eq!(open(&m, &blob, &ctx).unwrap().as_slice(), b"100000");
        assert!(open(&m, &blob, &BTreeMap::new()).is_none());
        // Pairs that concatenate alike must still differ.
        let shifted = BTreeMap::from([("auctiona".to_owned(), "1".to_owned())]);
        assert!(open(&m, &blob, &shifted).is_none());
        for i in 0..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 1;
            assert!(open(&m, &b, &ctx).is_none(), "flip at {i}");
        }
        assert!(open(&m, &blob[..blob.len() - 1], &ctx).is_none());
        assert!(open(&new_material().unwrap(), &blob, &ctx).is_none());
        assert!(key_id(&[]).is_none() && key_id(&[1; 44]).is_none());
    }

    #[test]
    fn uuids_are_canonical() {
        let s = new_key_id().unwrap();
        assert_eq!(s.as_bytes()[14], b'4');
        assert_eq!(uuid_string(&uuid_bytes(&s).unwrap()), s);
        for bad in [
            "",
            "1234abcd-12ab-34cd-56ef-1234567890a",
            "1234ABCD-12ab-34cd-56ef-1234567890ab",
            "1234abcd+12ab-34cd-56ef-1234567890ab",
            "é234abcd-12ab-34cd-56ef-1234567890a",
        ] {
            assert!(uuid_bytes(bad).is_none(), "{bad}");
        }
    }
}
