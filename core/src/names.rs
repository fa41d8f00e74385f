//! Validated identifiers: lot ids, buyer names, auction ids, KMS key ARNs and AWS regions.
//!
//! Each is a newtype that can only hold a valid value, so the rest of the code never re-checks.
//! The character sets are narrow on purpose: these strings end up in CSV output, KMS encryption
//! contexts, host names and log lines, and a narrow set keeps all of those unambiguous (no CSV
//! formula injection, no host-name tricks, no terminal escapes).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} characters")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} `{shown}` {rule}")]
    Invalid {
        what: &'static str,
        shown: String,
        rule: &'static str,
    },
}

/// Shows a rejected identifier without letting control characters reach a terminal or log.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

fn check(
    what: &'static str,
    s: &str,
    max: usize,
    first: fn(u8) -> bool,
    rest: fn(u8) -> bool,
    rule: &'static str,
) -> Result<(), NameError> {
    let bytes = s.as_bytes();
    if bytes.is_empty() {
        return Err(NameError::Empty { what });
    }
    if bytes.len() > max {
        return Err(NameError::TooLong { what, max });
    }
    if !chars_conform(bytes, first, rest) {
        return Err(NameError::Invalid {
            what,
            shown: shown(s),
            rule,
        });
    }
    Ok(())
}

/// The character rule alone: a first byte `first` allows, then only bytes `rest` allows.
fn chars_conform(bytes: &[u8], first: fn(u8) -> bool, rest: fn(u8) -> bool) -> bool {
    bytes
        .split_first()
        .is_some_and(|(&f, r)| first(f) && r.iter().all(|&b| rest(b)))
}

fn id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/')
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $validate:path) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                $validate(&s)?;
                Ok(Self(s))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

pub const MAX_LOT_ID_LEN: usize = 64;
pub const MAX_BUYER_NAME_LEN: usize = 64;
pub const MAX_AUCTION_ID_LEN: usize = 64;
pub const MAX_KEY_ARN_LEN: usize = 256;

fn validate_lot_id(s: &str) -> Result<(), NameError> {
    check(
        "lot id",
        s,
        MAX_LOT_ID_LEN,
        lot_id_first,
        id_char,
        "must start with a letter or digit and contain only letters, digits and - _ . : /",
    )
}

fn lot_id_first(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn validate_auction_id(s: &str) -> Result<(), NameError> {
    check(
        "auction id",
        s,
        MAX_AUCTION_ID_LEN,
        |b| b.is_ascii_alphanumeric(),
        id_char,
        "must start with a letter or digit and contain only letters, digits and - _ . : /",
    )
}

fn validate_buyer_name(s: &str) -> Result<(), NameError> {
    check(
        "buyer name",
        s,
        MAX_BUYER_NAME_LEN,
        |b| b.is_ascii_alphanumeric(),
        |b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'),
        "must start with a letter or digit and contain only letters, digits and - _ .",
    )
}

fn validate_region(s: &str) -> Result<(), NameError> {
    // Ends up in `kms.<region>.amazonaws.com`: only what real region names use.
    check(
        "region",
        s,
        32,
        |b| b.is_ascii_lowercase(),
        |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
        "must look like an AWS region (lowercase letters, digits and -), e.g. us-east-1",
    )
}

fn validate_key_arn(s: &str) -> Result<(), NameError> {
    const WHAT: &str = "KMS key ARN";
    const RULE: &str = "must be a full key ARN, arn:<partition>:kms:<region>:<12-digit account>:key/<key id> (not an alias or a bare key id)";
    check(
        WHAT,
        s,
        MAX_KEY_ARN_LEN,
        |b| b == b'a',
        |b| b.is_ascii_graphic(),
        RULE,
    )?;
    let invalid = || NameError::Invalid {
        what: WHAT,
        shown: shown(s),
        rule: RULE,
    };
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return Err(invalid());
    };
    let key_id = resource.strip_prefix("key/").ok_or_else(invalid)?;
    let ok = arn == "arn"
        && partition.starts_with("aws")
        && partition
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
        && service == "kms"
        && validate_region(region).is_ok()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !key_id.is_empty()
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok { Ok(()) } else { Err(invalid()) }
}

string_newtype!(
    /// A lot (property, contract) id, as in the bid files' `[].contract` column.
    LotId,
    validate_lot_id
);
string_newtype!(
    /// A buyer's display name, as it appears in `Buyer1 Wins`.
    BuyerName,
    validate_buyer_name
);
string_newtype!(
    /// An auction's id; part of every bid's KMS encryption context.
    AuctionId,
    validate_auction_id
);
string_newtype!(
    /// A full KMS key ARN. Bare key ids and aliases are refused because the enclave compares
    /// the `KeyId` in KMS's answer with it byte for byte.
    KeyArn,
    validate_key_arn
);
string_newtype!(
    /// An AWS region name such as `us-east-1`.
    Region,
    validate_region
);

impl KeyArn {
    /// The region part of the ARN.
    pub fn region(&self) -> &str {
        self.0.split(':').nth(3).unwrap_or_default()
    }
}

// Lets a lot table keyed by `LotId` be searched with a `&str` (no allocation per lookup). The
// derived `Hash` and `Eq` of the newtype are those of the inner `String`, which agree with
// `str`'s, as `Borrow` requires.
impl std::borrow::Borrow<str> for LotId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl LotId {
    /// Checks `s` as a lot id without allocating one.
    pub(crate) fn check(s: &str) -> Result<(), NameError> {
        validate_lot_id(s)
    }

    /// Whether `b` is a lot id: [`LotId::check`]'s rule on bytes, without the error it builds
    /// (the enclave asks this of every envelope row).
    pub(crate) fn is_valid(b: &[u8]) -> bool {
        b.len() <= MAX_LOT_ID_LEN && chars_conform(b, lot_id_first, id_char)
    }

    /// A lot id from text that [`LotId::check`] accepted.
    pub(crate) fn from_checked(s: &str) -> Self {
        debug_assert!(validate_lot_id(s).is_ok());
        Self(s.to_owned())
    }

    /// Numeric-aware order: digit runs compare as numbers (`2` < `10`), other runs as bytes;
    /// fully equal keys fall back to the raw bytes so that the order is total (`01` ≠ `1`).
    pub fn natural_cmp(&self, other: &LotId) -> Ordering {
        natural_cmp(&self.0, &other.0)
    }
}

/// Numeric-aware comparison of ASCII strings, total and deterministic.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    natural_cmp_bytes(a.as_bytes(), b.as_bytes())
}

/// [`natural_cmp`] on the strings' bytes (the enclave sorts its lot ids, kept as bytes, with
/// it: a million lots make some forty million comparisons).
pub fn natural_cmp_bytes(a: &[u8], b: &[u8]) -> Ordering {
    let (mut x, mut y) = (a, b);
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(cx), Some(cy)) if cx.is_ascii_digit() && cy.is_ascii_digit() => {
                let (dx, rx) = split_run(x, true);
                let (dy, ry) = split_run(y, true);
                let (tx, ty) = (trim_zeros(dx), trim_zeros(dy));
                let ord = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty));
                if ord != Ordering::Equal {
                    return ord;
                }
                (x, y) = (rx, ry);
            }
            _ => {
                let (sx, rx) = split_run(x, false);
                let (sy, ry) = split_run(y, false);
                // Compare the shorter common part; a digit run after it decides later.
                let n = sx.len().min(sy.len());
                let ord = sx[..n].cmp(&sy[..n]);
                if ord != Ordering::Equal {
                    return ord;
                }
                if sx.len() != sy.len() {
                    // One text run is a prefix of the other: what follows the shorter one is a
                    // digit or the end, both of which sort before further text.
                    return sx.len().cmp(&sy.len());
                }
                (x, y) = (rx, ry);
            }
        }
    }
}

fn split_run(s: &[u8], digits: bool) -> (&[u8], &[u8]) {
    let n = s
        .iter()
        .position(|b| b.is_ascii_digit() != digits)
        .unwrap_or(s.len());
    s.split_at(n)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let n = s.iter().position(|&b| b != b'0').unwrap_or(s.len());
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lot_ids() {
        for ok in ["1", "LOT-2026/7", "a.b_c:d"] {
            LotId::new(ok).unwrap();
        }
        for bad in [
            "",
            "-1",
            "=SUM(A1)",
            "1 2",
            "lot\u{7}",
            "é",
            &"9".repeat(65),
        ] {
            assert!(LotId::new(bad).is_err(), "{bad:?}");
        }
        let e = LotId::new("=cmd").unwrap_err().to_string();
        assert_eq!(
            e,
            "lot id `=cmd` must start with a letter or digit and contain only letters, digits and - _ . : /"
        );
        let e = LotId::new("a\u{1b}[31m").unwrap_err().to_string();
        assert!(e.contains("a\\u{1b}[31m"), "{e}");
    }

    #[test]
    fn key_arns() {
        let good = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let arn = KeyArn::new(good).unwrap();
        assert_eq!(arn.region(), "us-east-1");
        KeyArn::new("arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/mrk-1234abcd").unwrap();
        for bad in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/buyer1",
            "arn:aws:kms:us-east-1:111122223333:alias/buyer1",
            "arn:aws:s3:us-east-1:111122223333:key/x",
            "arn:aws:kms:us-east-1:1111:key/x",
            "arn:aws:kms:US-EAST-1:111122223333:key/x",
            "arn:aws:kms:us-east-1:111122223333:key/",
        ] {
            assert!(KeyArn::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn natural_order_examples() {
        let mut v = vec![
            "10", "9", "1", "a10", "a9", "a", "010", "b", "1a", "1b", "01",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "01", "1", "1a", "1b", "9", "010", "10", "a", "a9", "a10", "b"
            ]
        );
    }

    proptest! {
        #[test]
        fn lot_id_is_valid_agrees_with_check(b in proptest::collection::vec(proptest::sample::select(vec![b'a', b'Z', b'0', b'-', b'_', b'.', b':', b'/', b' ', b',', 0xC3, 0xA9]), 0..70)) {
            let by_check = std::str::from_utf8(&b).is_ok_and(|s| LotId::check(s).is_ok());
            prop_assert_eq!(LotId::is_valid(&b), by_check);
        }

        #[test]
        fn natural_order_is_a_total_order(a in "[0-9a-c]{0,6}", b in "[0-9a-c]{0,6}", c in "[0-9a-c]{0,6}") {
            let ab = natural_cmp(&a, &b);
            prop_assert_eq!(ab, natural_cmp(&b, &a).reverse());
            prop_assert_eq!(ab == Ordering::Equal, a == b);
            if ab != Ordering::Greater && natural_cmp(&b, &c) != Ordering::Greater {
                prop_assert_ne!(natural_cmp(&a, &c), Ordering::Greater);
            }
        }

        #[test]
        fn pure_numbers_sort_by_value(a in 0u64..1_000_000, b in 0u64..1_000_000) {
            prop_assert_eq!(natural_cmp(&a.to_string(), &b.to_string()), a.cmp(&b));
        }
    }
}
