//! The few CBOR items bidding-core writes by hand (RFC 8949), in their shortest form: heads,
//! byte strings and text strings. Attestation documents (`attestation`) and NSM requests
//! (`nsm`) are built from them. Reading is each format's own business: documents go through
//! ciborium, NSM responses through `nsm`'s small reader, which knows their exact shapes.

pub(crate) const MAJOR_UINT: u8 = 0;
pub(crate) const MAJOR_NEGATIVE: u8 = 1;
pub(crate) const MAJOR_BYTES: u8 = 2;
pub(crate) const MAJOR_TEXT: u8 = 3;
pub(crate) const MAJOR_ARRAY: u8 = 4;
pub(crate) const MAJOR_MAP: u8 = 5;
pub(crate) const MAJOR_TAG: u8 = 6;
pub(crate) const MAJOR_SIMPLE: u8 = 7;
pub(crate) const FALSE: u8 = 0xf4;
pub(crate) const TRUE: u8 = 0xf5;
pub(crate) const NULL: u8 = 0xf6;

/// A CBOR head in its shortest form, as the NSM (and RFC 8949 deterministic encoding) writes.
pub(crate) fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let major = major << 5;
    let be = n.to_be_bytes();
    match n {
        0..=23 => out.push(major | be[7]),
        24..=0xff => out.extend_from_slice(&[major | 24, be[7]]),
        0x100..=0xffff => {
            out.push(major | 25);
            out.extend_from_slice(&be[6..]);
        }
        0x1_0000..=0xffff_ffff => {
            out.push(major | 26);
            out.extend_from_slice(&be[4..]);
        }
        _ => {
            out.push(major | 27);
            out.extend_from_slice(&be);
        }
    }
}

pub(crate) fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    head(out, MAJOR_BYTES, b.len() as u64);
    out.extend_from_slice(b);
}

pub(crate) fn text(out: &mut Vec<u8>, s: &str) {
    head(out, MAJOR_TEXT, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_shortest_form() {
        for (n, want) in [
            (0u64, &[0x40][..]),
            (23, &[0x57]),
            (24, &[0x58, 24]),
            (255, &[0x58, 0xff]),
            (256, &[0x59, 1, 0]),
            (65536, &[0x5a, 0, 1, 0, 0]),
            (1 << 32, &[0x5b, 0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            let mut out = Vec::new();
            head(&mut out, MAJOR_BYTES, n);
            assert_eq!(out, want, "{n}");
        }
    }
}
