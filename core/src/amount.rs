//! Bid amounts: exact decimal numbers compared as integers of the minor unit.
//!
//! The rules are deliberately narrow (DESIGN §4): ASCII digits, at most one decimal point with
//! one or two digits after it, at most 18 significant digits before it. Leading zeros and
//! surrounding ASCII whitespace are allowed: `bidctl encrypt` pads every amount to one fixed
//! width (so a ciphertext's length says nothing about the amount), and the proof of concept's
//! buyers made bids with `echo 100000 > bid.txt` (a trailing newline). Everything else is
//! refused rather than guessed at, because a lenient parser is a place where two
//! implementations (the buyer's `bidctl encrypt` and the enclave) could disagree about who bid
//! more.
//!
//! Errors never carry the input: an amount is the one secret of the system, and error messages
//! travel to logs and frames.

use std::fmt;

/// Most significant digits allowed before the decimal point (leading zeros do not count).
pub const MAX_INTEGER_DIGITS: usize = 18;
/// Longest text judged at all, whitespace and leading zeros included: bounds the work on
/// hostile plaintexts.
pub const MAX_TEXT_LEN: usize = 64;
/// Width of [`Amount::to_padded`]: 18 integer digits, the point, 2 fraction digits.
pub const PADDED_WIDTH: usize = MAX_INTEGER_DIGITS + 1 + MAX_FRACTION_DIGITS;
/// Most digits allowed after the decimal point.
pub const MAX_FRACTION_DIGITS: usize = 2;
const MINOR_PER_MAJOR: u128 = 100;

/// A non-negative amount in minor units (hundredths). Ordering is exact integer ordering.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(u128);

/// Why a text is not an amount. Deliberately says nothing about the text itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("empty amount")]
    Empty,
    #[error("a sign is not allowed in an amount")]
    Sign,
    #[error("an amount may contain only the digits 0-9 and one decimal point")]
    InvalidCharacter,
    #[error("an amount needs at least one digit before the decimal point")]
    MissingIntegerDigits,
    #[error("an amount needs one or two digits after the decimal point")]
    MissingFractionDigits,
    #[error("an amount may have at most 2 digits after the decimal point")]
    TooManyFractionDigits,
    #[error("an amount may have at most 18 digits before the decimal point")]
    TooManyIntegerDigits,
    #[error("an amount may contain at most one decimal point")]
    MultipleDecimalPoints,
    #[error("an amount may be at most 64 bytes long, spaces and leading zeros included")]
    TooLong,
}

impl Amount {
    /// The amount as an integer count of minor units (hundredths).
    pub fn minor_units(self) -> u128 {
        self.0
    }

    /// The amount back from [`Amount::minor_units`] (for compact storage inside the crate).
    pub(crate) fn from_minor_units(minor: u128) -> Amount {
        Amount(minor)
    }

    /// Parses an amount. Takes bytes because decrypted plaintext is bytes and must not be
    /// required to be UTF-8 before it is judged.
    pub fn parse(text: &[u8]) -> Result<Amount, AmountError> {
        if let Some(a) = Amount::parse_padded(text) {
            return Ok(a);
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(AmountError::TooLong);
        }
        let text = text.trim_ascii();
        if text.is_empty() {
            return Err(AmountError::Empty);
        }
        if matches!(text[0], b'+' | b'-') {
            return Err(AmountError::Sign);
        }
        let mut integer: u128 = 0;
        let mut integer_digits = 0usize;
        let mut fraction: u128 = 0;
        let mut fraction_digits = 0usize;
        let mut seen_point = false;
        let mut digits_seen = false;
        for &byte in text {
            match byte {
                b'0'..=b'9' => {
                    let digit = u128::from(byte - b'0');
                    if seen_point {
                        fraction_digits += 1;
                        if fraction_digits > MAX_FRACTION_DIGITS {
                            return Err(AmountError::TooManyFractionDigits);
                        }
                        fraction = fraction * 10 + digit;
                    } else {
                        digits_seen = true;
                        // Leading zeros are padding, not digits.
                        if integer_digits > 0 || digit != 0 {
                            integer_digits += 1;
                        }
                        if integer_digits > MAX_INTEGER_DIGITS {
                            return Err(AmountError::TooManyIntegerDigits);
                        }
                        integer = integer * 10 + digit;
                    }
                }
                b'.' if seen_point => return Err(AmountError::MultipleDecimalPoints),
                b'.' => seen_point = true,
                b'+' | b'-' => return Err(AmountError::Sign),
                _ => return Err(AmountError::InvalidCharacter),
            }
        }
        if !digits_seen {
            return Err(AmountError::MissingIntegerDigits);
        }
        if seen_point && fraction_digits == 0 {
            return Err(AmountError::MissingFractionDigits);
        }
        if fraction_digits == 1 {
            fraction *= 10;
        }
        Ok(Amount(integer * MINOR_PER_MAJOR + fraction))
    }
}

impl Amount {
    /// The fixed-width form [`Amount::to_padded`] writes, which is what nearly every bid is,
    /// read without the general rules' per-digit checks (an envelope file's rows are parsed
    /// by the million). `None` for any other text, which the general rules then judge; what
    /// both accept they read alike (a test compares them).
    fn parse_padded(text: &[u8]) -> Option<Amount> {
        let text: &[u8; PADDED_WIDTH] = text.try_into().ok()?;
        let (integer, rest) = text.split_at(MAX_INTEGER_DIGITS);
        let (&point, fraction) = rest.split_first()?;
        if point != b'.' {
            return None;
        }
        // 18 digits fit a u64: two runs of eight, then two; the fraction's two are added after.
        let digits = |part: &[u8]| {
            part.iter().try_fold(0u64, |v, &b| {
                let digit = b.wrapping_sub(b'0');
                (digit <= 9).then(|| v * 10 + u64::from(digit))
            })
        };
        let high = eight_digits(integer[..8].try_into().expect("8 bytes"))?;
        let mid = eight_digits(integer[8..16].try_into().expect("8 bytes"))?;
        let integer = (high * 100_000_000 + mid) * 100 + digits(&integer[16..])?;
        let fraction = digits(fraction)?;
        Some(Amount(
            u128::from(integer) * MINOR_PER_MAJOR + u128::from(fraction),
        ))
    }
}

/// Eight ASCII digits as their value, or `None` if any byte is not a digit: all eight at once
/// in one u64 (simdjson's check and combination), instead of a chain of eight multiplications.
fn eight_digits(bytes: [u8; 8]) -> Option<u64> {
    const LOW: u64 = 0x0F0F_0F0F_0F0F_0F0F;
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    let v = u64::from_le_bytes(bytes);
    // Every byte is 0x30..=0x39: its high nibble is 3, and stays 3 when 6 is added to it (a
    // byte that could carry into the next fails the first half already).
    let high = v & HIGH;
    let plus6 = v.wrapping_add(0x0606_0606_0606_0606) & HIGH;
    if high | (plus6 >> 4) != 0x3333_3333_3333_3333 {
        return None;
    }
    // The first digit is the lowest byte: fold pairs, then fours, then the two halves.
    let v = (v & LOW).wrapping_mul(10 * 256 + 1) >> 8;
    let v = (v & 0x00FF_00FF_00FF_00FF).wrapping_mul(100 * 65_536 + 1) >> 16;
    Some((v & 0x0000_FFFF_0000_FFFF).wrapping_mul(10_000 * (1 << 32) + 1) >> 32)
}

impl Amount {
    /// The fixed-width form buyers seal: `000000000000100000.00`. Every amount has the same
    /// length, so neither a ciphertext's nor a message's size says anything about it.
    pub fn to_padded(self) -> String {
        let (major, minor) = (self.0 / MINOR_PER_MAJOR, self.0 % MINOR_PER_MAJOR);
        format!("{major:018}.{minor:02}")
    }
}

impl std::str::FromStr for Amount {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Amount::parse(s.as_bytes())
    }
}

/// The canonical rendering used for revealed prices: no fraction when it is zero, otherwise
/// exactly two digits (`100000`, `1234.50`).
impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor) = (self.0 / MINOR_PER_MAJOR, self.0 % MINOR_PER_MAJOR);
        if minor == 0 {
            write!(f, "{major}")
        } else {
            write!(f, "{major}.{minor:02}")
        }
    }
}

/// Redacted on purpose: a `{:?}` in a log or an error must not show a bid.
impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Amount(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An independent, obviously-correct statement of the rules, written with string splitting
    /// instead of a byte loop.
    fn reference(s: &str) -> Option<u128> {
        if s.len() > 64 {
            return None;
        }
        let s = s.trim_matches(|c: char| c.is_ascii_whitespace());
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || int.trim_start_matches('0').len() > 18 || !all_digits(int) {
            return None;
        }
        let frac_units = match frac {
            None => 0,
            Some(f) if (1..=2).contains(&f.len()) && all_digits(f) => {
                let v: u128 = f.parse().ok()?;
                if f.len() == 1 { v * 10 } else { v }
            }
            Some(_) => return None,
        };
        Some(int.parse::<u128>().ok()? * 100 + frac_units)
    }

    #[test]
    fn accepts_the_documented_forms() {
        for (text, units) in [
            ("0", 0),
            ("100000", 10_000_000),
            ("1.5", 150),
            ("1.05", 105),
            ("007", 700),
            ("0.01", 1),
            ("999999999999999999.99", 99_999_999_999_999_999_999),
            ("000000000000100000.00", 10_000_000),
            ("0000000000000000000000000000000000001", 100),
            ("100000\n", 10_000_000),
            (" \t100000.5\r\n", 10_000_050),
        ] {
            assert_eq!(
                Amount::parse(text.as_bytes()).map(Amount::minor_units),
                Ok(units),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_the_documented_non_amounts() {
        use AmountError::*;
        for (text, err) in [
            ("", Empty),
            ("1e5", InvalidCharacter),
            ("-1", Sign),
            ("+1", Sign),
            ("1.", MissingFractionDigits),
            (".5", MissingIntegerDigits),
            ("1,000", InvalidCharacter),
            ("0x10", InvalidCharacter),
            ("١٢", InvalidCharacter),
            ("1 000", InvalidCharacter),
            (" ", Empty),
            ("\n", Empty),
            ("1\u{a0}", InvalidCharacter),
            ("1\0", InvalidCharacter),
            ("1.234", TooManyFractionDigits),
            ("1234567890123456789", TooManyIntegerDigits),
            ("1.2.3", MultipleDecimalPoints),
            ("1-", Sign),
            ("NaN", InvalidCharacter),
            (
                "00000000000000000000000000000000000000000000000000000000000000001",
                TooLong,
            ),
        ] {
            assert_eq!(Amount::parse(text.as_bytes()), Err(err), "{text:?}");
        }
    }

    #[test]
    fn display_is_canonical_and_debug_is_redacted() {
        assert_eq!(Amount::parse(b"0100000").unwrap().to_string(), "100000");
        assert_eq!(Amount::parse(b"1234.5").unwrap().to_string(), "1234.50");
        assert_eq!(Amount::parse(b"0.07").unwrap().to_string(), "0.07");
        let dbg = format!("{:?}", Amount::parse(b"987654").unwrap());
        assert!(!dbg.contains("987654"), "{dbg}");
    }

    #[test]
    fn eight_digits_in_order() {
        assert_eq!(eight_digits(*b"12345678"), Some(12_345_678));
        assert_eq!(eight_digits(*b"00000000"), Some(0));
        assert_eq!(eight_digits(*b"99999999"), Some(99_999_999));
        assert_eq!(eight_digits(*b"1234567:"), None);
        assert_eq!(eight_digits(*b"/2345678"), None);
    }

    #[test]
    fn padded_form_has_one_width_and_parses_back() {
        for text in ["0", "0.01", "100000", "100000.50", "999999999999999999.99"] {
            let a = Amount::parse(text.as_bytes()).unwrap();
            let p = a.to_padded();
            assert_eq!(p.len(), PADDED_WIDTH, "{text}");
            assert_eq!(Amount::parse(p.as_bytes()), Ok(a));
        }
    }

    proptest! {
        #[test]
        fn agrees_with_reference_on_arbitrary_text(s in "[0-9.+\\-e ,\n\t]{0,70}") {
            prop_assert_eq!(Amount::parse(s.as_bytes()).ok().map(Amount::minor_units), reference(&s));
        }

        #[test]
        fn agrees_with_reference_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..24)) {
            let ours = Amount::parse(&b).ok().map(Amount::minor_units);
            let theirs = std::str::from_utf8(&b).ok().and_then(reference);
            prop_assert_eq!(ours, theirs);
        }

        /// The fixed-width fast path and the general rules read every 21-byte text alike
        /// (digits and points at every position, and the padded form of any amount).
        #[test]
        fn the_padded_form_reads_as_the_general_rules_do(
            s in "[0-9.]{21}",
            a in 0u128..100_000_000_000_000_000_000,
        ) {
            for text in [s.clone(), Amount(a).to_padded()] {
                let general = reference(&text);
                prop_assert_eq!(Amount::parse(text.as_bytes()).ok().map(Amount::minor_units), general);
                if let Some(fast) = Amount::parse_padded(text.as_bytes()) {
                    prop_assert_eq!(Some(fast.minor_units()), general);
                }
            }
        }

        /// The eight-at-once digit reader against one digit at a time, on bytes at and around
        /// the digits' edges as well as any byte.
        #[test]
        fn eight_digits_reads_as_digit_by_digit(
            near in proptest::collection::vec(proptest::sample::select(vec![
                b'0', b'1', b'5', b'9', b'/', b':', 0x2A, 0x3F, 0x40, 0xF0, 0xF9, 0xFA, 0xFF, 0x00, 0x06,
            ]), 8),
            any_bytes in any::<[u8; 8]>(),
        ) {
            for bytes in [<[u8; 8]>::try_from(near.as_slice()).unwrap(), any_bytes] {
                let slow = bytes.iter().try_fold(0u64, |v, &b| {
                    b.is_ascii_digit().then(|| v * 10 + u64::from(b - b'0'))
                });
                prop_assert_eq!(eight_digits(bytes), slow);
            }
        }

        #[test]
        fn display_round_trips_and_preserves_order(a in 0u128..100_000_000_000_000_000_000, b in 0u128..100_000_000_000_000_000_000) {
            let (x, y) = (Amount(a), Amount(b));
            let (px, py) = (Amount::parse(x.to_string().as_bytes()).unwrap(), Amount::parse(y.to_string().as_bytes()).unwrap());
            prop_assert_eq!(px, x);
            prop_assert_eq!(px.cmp(&py), a.cmp(&b));
        }
    }
}
