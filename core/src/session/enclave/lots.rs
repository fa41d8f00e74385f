//! The auction's lots, reserved whole when the auction opens: a keyed hash index, the lot ids,
//! and per lot only what deciding it needs (the highest amount and who holds it, the second
//! highest, and one file's contribution not yet counted). Nothing here grows while files are
//! read: an operator who picks the enclave's memory and the order of sybil files cannot learn
//! from memory use, or from where a session fails, which lots a buyer's secret envelope file
//! names (DESIGN §2). Memory is [`bytes_per_lot`] per lot of the image's limit.
//!
//! A lot is decided in one pass over its valid bids, without sorting amounts: the work does
//! not follow how the losing bids rank.

use crate::amount::Amount;
use crate::auction::Reason;
use crate::config::MAX_BUYERS;
use crate::names::MAX_LOT_ID_LEN;
use siphasher::sip::SipHasher13;
use std::collections::TryReserveError;

/// An empty index slot.
const EMPTY: u64 = u64::MAX;
/// "No record": the end of a lot's list of set-aside records.
const NONE: u32 = u32::MAX;
/// Index slots per lot of the limit: a load factor of at most 0.8.
const SLOTS_PER_LOT: (usize, usize) = (5, 4);

/// Memory reserved per lot of the limit, all structures together (the index's slots, the
/// lot id bytes at their longest, the id's end, the decision state, and its place in the
/// output order). `bidctl bench --memory` measures the whole enclave against it.
pub const fn bytes_per_lot() -> usize {
    8 * SLOTS_PER_LOT.0 / SLOTS_PER_LOT.1 + MAX_LOT_ID_LEN + 4 + std::mem::size_of::<LotState>() + 4
}

/// A vector of `n` copies of `x`, every page written now (so the memory is really there, not
/// merely promised by the kernel), or the allocator's refusal.
pub(super) fn filled<T: Clone>(n: usize, x: T) -> Result<Box<[T]>, TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)?;
    v.resize(n, x);
    Ok(v.into_boxed_slice())
}

/// One buyer's contribution to a lot from the file being read, until the file is complete:
/// a lot named twice in one file counts for none of its rows, which only the file's end can
/// tell, and a decision cannot take an amount back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pending {
    None,
    /// Named by a row that was not a bid (per-bid: a malformed ciphertext), counted already.
    Seen,
    /// Per-bid: its ciphertext is at KMS.
    Awaiting,
    /// A valid amount, in the state's `pending` fields.
    Valid,
    /// Set aside for this reason.
    SetAside(Reason),
    /// Named more than once.
    Duplicate,
}

/// A lot's decision state: 48 bytes.
#[derive(Clone, Copy)]
pub(super) struct LotState {
    best_lo: u64,
    second_lo: u64,
    /// Buyers holding the highest amount, one bit each (64 buyers at most).
    holders: u64,
    pending_lo: u64,
    /// The first of this lot's set-aside records (per-bid files only), or [`NONE`].
    set_aside: u32,
    best_hi: u8,
    second_hi: u8,
    pending_hi: u8,
    pending_buyer: u8,
    pending: Pending,
    has_second: bool,
}

const _: () = assert!(std::mem::size_of::<LotState>() == 48);
const _: () = assert!(MAX_BUYERS <= 64);
// An amount is below 10^20 minor units < 2^72: its bits above 64 fit a `u8`.
const _: () = assert!(
    10u128.pow((crate::amount::MAX_INTEGER_DIGITS + crate::amount::MAX_FRACTION_DIGITS) as u32)
        <= 1 << 72
);

const FRESH: LotState = LotState {
    best_lo: 0,
    second_lo: 0,
    holders: 0,
    pending_lo: 0,
    set_aside: NONE,
    best_hi: 0,
    second_hi: 0,
    pending_hi: 0,
    pending_buyer: 0,
    pending: Pending::None,
    has_second: false,
};

fn join(lo: u64, hi: u8) -> Amount {
    Amount::from_minor_units(u128::from(hi) << 64 | u128::from(lo))
}

fn split(a: Amount) -> (u64, u8) {
    let m = a.minor_units();
    (m as u64, (m >> 64) as u8)
}

impl LotState {
    fn best(&self) -> Amount {
        join(self.best_lo, self.best_hi)
    }

    fn second(&self) -> Amount {
        join(self.second_lo, self.second_hi)
    }

    /// Counts a valid bid: one comparison with the highest, one with the second.
    fn fold(&mut self, buyer: usize, amount: Amount) {
        let bit = 1u64 << buyer;
        if self.holders == 0 {
            (self.best_lo, self.best_hi) = split(amount);
            self.holders = bit;
            return;
        }
        let best = self.best();
        if amount > best {
            (self.second_lo, self.second_hi) = (self.best_lo, self.best_hi);
            self.has_second = true;
            (self.best_lo, self.best_hi) = split(amount);
            self.holders = bit;
        } else if amount == best {
            self.holders |= bit;
        } else if !self.has_second || amount > self.second() {
            (self.second_lo, self.second_hi) = split(amount);
            self.has_second = true;
        }
    }

    /// Whether the lot has anything to show: a valid bid, or (per-bid files) a bid set aside.
    pub(super) fn shown(&self) -> bool {
        self.holders != 0 || self.set_aside != NONE
    }

    /// The highest valid amount and its holders, if any.
    pub(super) fn top(&self) -> Option<(Amount, u64)> {
        (self.holders != 0).then(|| (self.best(), self.holders))
    }

    /// The second-price rule's price: a tie pays the tied amount, a lone valid bid its own.
    pub(super) fn second_price(&self) -> Option<Amount> {
        let (best, holders) = self.top()?;
        Some(if holders.count_ones() > 1 || !self.has_second {
            best
        } else {
            self.second()
        })
    }

    /// Whose contribution is pending, and what it is.
    pub(super) fn pending(&self) -> (usize, Pending) {
        (usize::from(self.pending_buyer), self.pending)
    }

    pub(super) fn first_record(&self) -> Option<u32> {
        (self.set_aside != NONE).then_some(self.set_aside)
    }
}

/// Why the lot table could not be reserved.
#[derive(Debug)]
pub(super) struct OutOfMemory {
    pub(super) bytes: usize,
}

/// The lots of one auction. See the module documentation.
pub(super) struct LotTable {
    key: (u64, u64),
    slots: Box<[u64]>,
    ids: Box<[u8]>,
    /// Where each lot's id ends in `ids` (it starts where the previous one ends).
    ends: Box<[u32]>,
    states: Box<[LotState]>,
    len: u32,
    /// A new lot came after the table was full; reported at close, once every file has been
    /// read the same way.
    overflowed: bool,
}

impl LotTable {
    /// Reserves (and writes) everything `max_lots` lots need.
    pub(super) fn reserve(max_lots: usize, key: (u64, u64)) -> Result<LotTable, OutOfMemory> {
        let max_lots = max_lots.min(u32::MAX as usize - 1);
        let slots = (max_lots * SLOTS_PER_LOT.0 / SLOTS_PER_LOT.1).max(8);
        let oom = |_| OutOfMemory {
            bytes: bytes_per_lot() * max_lots,
        };
        Ok(LotTable {
            key,
            slots: filled(slots, EMPTY).map_err(oom)?,
            ids: filled(max_lots * MAX_LOT_ID_LEN, 0xFFu8).map_err(oom)?,
            ends: filled(max_lots, u32::MAX).map_err(oom)?,
            states: filled(max_lots, FRESH).map_err(oom)?,
            len: 0,
            overflowed: false,
        })
    }

    pub(super) fn len(&self) -> u32 {
        self.len
    }

    pub(super) fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub(super) fn capacity(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn hash(&self, id: &[u8]) -> u64 {
        // The one-shot form: the same SipHash-1-3 as writing and finishing, without the
        // streaming state's bookkeeping (every envelope row asks for one).
        SipHasher13::new_with_keys(self.key.0, self.key.1).hash(id)
    }

    pub(super) fn id(&self, lot: u32) -> &str {
        // Only checked lot ids (ASCII) are stored.
        std::str::from_utf8(self.id_bytes(lot)).unwrap_or_default()
    }

    pub(super) fn id_bytes(&self, lot: u32) -> &[u8] {
        let i = lot as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.ids[start..self.ends[i] as usize]
    }

    /// The lot's slot, registering it on first sight; `None` once the table is full (and the
    /// overflow is remembered for close). `id` must be a checked lot id.
    pub(super) fn slot(&mut self, id: &str) -> Option<u32> {
        self.slot_hashed(id.as_bytes(), self.hash(id.as_bytes()))
    }

    /// The index slot a lookup of an id with hash `h` starts at.
    fn home(&self, h: u64) -> usize {
        ((u128::from(h) * self.slots.len() as u128) >> 64) as usize
    }

    /// Asks the CPU to start loading the index slot of an id with hash `h`, for a lookup a
    /// little later ([`super::batch`]). Only a hint: nothing changes.
    pub(super) fn prefetch(&self, h: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let p: *const u64 = &self.slots[self.home(h)];
            // SAFETY: a prefetch reads nothing the program sees and cannot fault; `p` points
            // into the slots.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = h;
    }

    /// [`Self::slot`] for an id (checked, as bytes) whose [`Self::hash`] is `h`.
    pub(super) fn slot_hashed(&mut self, id: &[u8], h: u64) -> Option<u32> {
        let n = self.slots.len();
        let tag = h & 0xFFFF_FFFF_0000_0000;
        let mut i = self.home(h);
        loop {
            let s = self.slots[i];
            if s == EMPTY {
                break;
            }
            if s & 0xFFFF_FFFF_0000_0000 == tag {
                let lot = s as u32;
                if self.id_bytes(lot) == id {
                    return Some(lot);
                }
            }
            i += 1;
            if i == n {
                i = 0;
            }
        }
        if self.len as usize == self.ends.len() {
            self.overflowed = true;
            return None;
        }
        let lot = self.len;
        let start = if lot == 0 {
            0
        } else {
            self.ends[lot as usize - 1] as usize
        };
        let end = start + id.len();
        self.ids[start..end].copy_from_slice(id);
        self.ends[lot as usize] = end as u32;
        self.slots[i] = tag | u64::from(lot);
        self.len += 1;
        Some(lot)
    }

    pub(super) fn state(&self, lot: u32) -> &LotState {
        &self.states[lot as usize]
    }

    pub(super) fn state_mut(&mut self, lot: u32) -> &mut LotState {
        &mut self.states[lot as usize]
    }

    /// Index probes the last `slot` calls needed beyond the first, for the flooding test.
    #[cfg(test)]
    fn probes(&self, id: &str) -> usize {
        let h = self.hash(id.as_bytes());
        let n = self.slots.len();
        let mut i = ((u128::from(h) * n as u128) >> 64) as usize;
        let mut probes = 0;
        while self.slots[i] != EMPTY && self.id(self.slots[i] as u32) != id {
            probes += 1;
            i = (i + 1) % n;
        }
        probes
    }
}

/// One bid set aside from a per-bid file, on its lot (an envelope file's are only counted:
/// its lots are secret from the operator).
#[derive(Clone, Copy)]
pub(super) struct Record {
    pub(super) next: u32,
    pub(super) buyer: u8,
    pub(super) reason: Reason,
}

/// Counts and per-lot records of set-aside bids, reserved at open like the lots.
pub(super) struct Tally {
    pub(super) lots: LotTable,
    records: Box<[Record]>,
    used: u32,
    /// Per buyer and reason (in [`Reason`]'s order).
    counts: Box<[[u64; REASONS]; MAX_BUYERS]>,
    /// Buyers whose file is per-bid: their set-aside bids are recorded with their lot.
    per_bid: u64,
}

pub(super) const REASONS: usize = 6;

pub(super) fn reason_index(r: Reason) -> usize {
    match r {
        Reason::InvalidAmount => 0,
        Reason::Undecryptable => 1,
        Reason::WrongKey => 2,
        Reason::DuplicateLot => 3,
        Reason::MalformedRow => 4,
        Reason::MalformedFile => 5,
    }
}

pub(super) const ALL_REASONS: [Reason; REASONS] = [
    Reason::InvalidAmount,
    Reason::Undecryptable,
    Reason::WrongKey,
    Reason::DuplicateLot,
    Reason::MalformedRow,
    Reason::MalformedFile,
];

impl Tally {
    /// Everything `max_lots` lots and `max_records` per-bid rows need, reserved now.
    pub(super) fn reserve(
        max_lots: usize,
        max_records: usize,
        key: (u64, u64),
    ) -> Result<Tally, OutOfMemory> {
        let lots = LotTable::reserve(max_lots, key)?;
        let records = filled(
            max_records.min(u32::MAX as usize - 1),
            Record {
                next: NONE,
                buyer: u8::MAX,
                reason: Reason::MalformedFile,
            },
        )
        .map_err(|_| OutOfMemory {
            bytes: max_records * std::mem::size_of::<Record>(),
        })?;
        Ok(Tally {
            lots,
            records,
            used: 0,
            counts: Box::new([[0; REASONS]; MAX_BUYERS]),
            per_bid: 0,
        })
    }

    /// `buyer`'s file is per-bid: its set-aside bids are recorded with their lots.
    pub(super) fn per_bid_file(&mut self, buyer: usize) {
        self.per_bid |= 1 << buyer;
    }

    pub(super) fn is_per_bid(&self, buyer: usize) -> bool {
        self.per_bid & (1 << buyer) != 0
    }

    pub(super) fn count(&mut self, buyer: usize, reason: Reason, n: u64) {
        self.counts[buyer][reason_index(reason)] += n;
    }

    pub(super) fn counted(&self, buyer: usize, reason: Reason) -> u64 {
        self.counts[buyer][reason_index(reason)]
    }

    pub(super) fn record(&self, i: u32) -> Record {
        self.records[i as usize]
    }

    /// Counts the pending contribution of an earlier file to `lot`, if any. Called before
    /// another buyer's row touches the lot, and for every lot at close, so a contribution is
    /// counted once its file is complete.
    pub(super) fn settle(&mut self, lot: u32) {
        let s = *self.lots.state(lot);
        let buyer = usize::from(s.pending_buyer);
        let outcome = match s.pending {
            Pending::None | Pending::Seen => None,
            Pending::Awaiting => {
                debug_assert!(false, "a file's bids are all opened before the next file");
                None
            }
            Pending::Valid => {
                let amount = join(s.pending_lo, s.pending_hi);
                self.lots.state_mut(lot).fold(buyer, amount);
                None
            }
            Pending::SetAside(reason) => Some(reason),
            Pending::Duplicate => Some(Reason::DuplicateLot),
        };
        if let Some(reason) = outcome {
            self.count(buyer, reason, 1);
            if self.is_per_bid(buyer) {
                let i = self.used;
                if (i as usize) < self.records.len() {
                    self.records[i as usize] = Record {
                        next: s.set_aside,
                        buyer: buyer as u8,
                        reason,
                    };
                    self.used += 1;
                    self.lots.state_mut(lot).set_aside = i;
                }
            }
        }
        let st = self.lots.state_mut(lot);
        st.pending = Pending::None;
    }

    /// What `buyer`'s file has said about `lot` so far (settling an earlier file's first).
    pub(super) fn pending(&mut self, lot: u32, buyer: usize) -> Pending {
        let s = self.lots.state(lot);
        if s.pending != Pending::None && usize::from(s.pending_buyer) != buyer {
            self.settle(lot);
        }
        self.lots.state(lot).pending
    }

    /// Sets `buyer`'s pending contribution to `lot`.
    pub(super) fn set_pending(&mut self, lot: u32, buyer: usize, p: Pending) {
        let s = self.lots.state_mut(lot);
        s.pending = p;
        s.pending_buyer = buyer as u8;
    }

    /// `buyer`'s valid amount for `lot`.
    pub(super) fn set_valid(&mut self, lot: u32, buyer: usize, amount: Amount) {
        let s = self.lots.state_mut(lot);
        (s.pending_lo, s.pending_hi) = split(amount);
        s.pending = Pending::Valid;
        s.pending_buyer = buyer as u8;
    }

    /// A row of `buyer`'s file names `lot` again: none of its rows for the lot count.
    pub(super) fn named_again(&mut self, lot: u32, buyer: usize) {
        self.set_pending(lot, buyer, Pending::Duplicate);
    }

    /// Settles every lot: the last file's contributions are complete.
    pub(super) fn settle_all(&mut self) {
        for lot in 0..self.lots.len() {
            self.settle(lot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hasher;

    fn amount(s: &str) -> Amount {
        Amount::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn one_pass_decides_as_sorting_would() {
        // (bids in arrival order) -> (highest, holders, second-price)
        type Case<'a> = (&'a [(usize, &'a str)], &'a str, u64, &'a str);
        let cases: &[Case] = &[
            (&[(0, "5")], "5", 0b1, "5"),
            (&[(0, "5"), (1, "7")], "7", 0b10, "5"),
            (&[(1, "7"), (0, "5")], "7", 0b10, "5"),
            (&[(0, "7"), (1, "7"), (2, "3")], "7", 0b11, "7"),
            (&[(2, "3"), (0, "7"), (1, "7")], "7", 0b11, "7"),
            (&[(0, "1"), (1, "9"), (2, "4"), (3, "6")], "9", 0b10, "6"),
            (
                &[(0, "999999999999999999.99"), (1, "184467440737095516.16")],
                "999999999999999999.99",
                0b1,
                "184467440737095516.16",
            ),
        ];
        for (bids, best, holders, price) in cases {
            let mut s = FRESH;
            for (b, a) in *bids {
                s.fold(*b, amount(a));
            }
            assert_eq!(s.top(), Some((amount(best), *holders)), "{bids:?}");
            assert_eq!(s.second_price(), Some(amount(price)), "{bids:?}");
        }
        assert_eq!(FRESH.top(), None);
        assert!(!FRESH.shown());
    }

    #[test]
    fn lots_are_found_again_and_the_table_reports_overflow() {
        let mut t = LotTable::reserve(3, (1, 2)).unwrap();
        assert_eq!(t.slot("a"), Some(0));
        assert_eq!(t.slot("bb"), Some(1));
        assert_eq!(t.slot("a"), Some(0));
        assert_eq!(t.slot("ccc"), Some(2));
        assert_eq!(t.slot("d"), None);
        assert!(t.overflowed());
        assert_eq!(t.slot("bb"), Some(1));
        assert_eq!((t.id(0), t.id(1), t.id(2)), ("a", "bb", "ccc"));
        let long = "x".repeat(MAX_LOT_ID_LEN);
        let mut t = LotTable::reserve(2, (1, 2)).unwrap();
        assert_eq!(t.slot(&long), Some(0));
        assert_eq!(t.slot(&long[..63]), Some(1));
        assert_eq!(t.id(0), long);
        // The table's hash is SipHash-1-3 under its key, as the streaming hasher computes it.
        for n in 0..=MAX_LOT_ID_LEN {
            let mut h = SipHasher13::new_with_keys(1, 2);
            h.write(&long.as_bytes()[..n]);
            assert_eq!(t.hash(&long.as_bytes()[..n]), h.finish(), "{n} bytes");
        }
    }

    /// Lot ids crafted to land in one index slot under one key (what a buyer who knew the key
    /// could send) cost linear time under the session's own key: the key is secret, so a
    /// hostile buyer cannot flood a bucket.
    #[test]
    fn ids_colliding_under_another_key_spread_under_the_sessions() {
        let n = 20_000usize;
        let attacker = LotTable::reserve(n, (0xdead, 0xbeef)).unwrap();
        let target = |t: &LotTable, id: &str| {
            let h = t.hash(id.as_bytes());
            ((u128::from(h) * t.slots.len() as u128) >> 64) as usize
        };
        // Search ids that all hash to slot 0 under the attacker's key.
        let mut crafted = Vec::new();
        let mut i = 0u64;
        while crafted.len() < 2_000 {
            let id = format!("lot-{i}");
            if target(&attacker, &id) < 2 {
                crafted.push(id);
            }
            i += 1;
        }
        // Under that key they pile up: inserting them costs quadratic probes.
        let mut flooded = LotTable::reserve(n, (0xdead, 0xbeef)).unwrap();
        let mut probes_flooded = 0;
        for id in &crafted {
            probes_flooded += flooded.probes(id);
            flooded.slot(id).unwrap();
        }
        // Under the session's key they spread.
        let mut t = LotTable::reserve(n, (0x1234_5678, 0x9abc_def0)).unwrap();
        let mut probes = 0;
        for id in &crafted {
            probes += t.probes(id);
            t.slot(id).unwrap();
        }
        assert!(
            probes_flooded > 1_000_000,
            "the crafted ids collide: {probes_flooded}"
        );
        assert!(
            probes < 2 * crafted.len(),
            "{probes} probes for {} ids",
            crafted.len()
        );
    }

    #[test]
    fn a_lot_named_twice_in_a_file_counts_for_none_of_its_rows() {
        let mut t = Tally::reserve(4, 8, (3, 4)).unwrap();
        let lot = t.lots.slot("1").unwrap();
        t.set_valid(lot, 0, amount("10"));
        // Buyer 0 names lot 1 again: a duplicate, decided when its file is complete.
        assert_eq!(t.pending(lot, 0), Pending::Valid);
        t.named_again(lot, 0);
        // Buyer 1's file touches the lot: buyer 0's pending contribution is counted first.
        assert_eq!(t.pending(lot, 1), Pending::None);
        assert_eq!(t.counted(0, Reason::DuplicateLot), 1);
        assert_eq!(t.lots.state(lot).top(), None);
        t.set_valid(lot, 1, amount("5"));
        t.settle_all();
        assert_eq!(t.lots.state(lot).top(), Some((amount("5"), 0b10)));
        // Envelope files' set-aside bids are only counted; per-bid ones are recorded too.
        assert!(!t.lots.state(lot).shown() || t.lots.state(lot).first_record().is_none());
        t.per_bid_file(2);
        let lot2 = t.lots.slot("2").unwrap();
        t.set_pending(lot2, 2, Pending::SetAside(Reason::InvalidAmount));
        t.settle_all();
        let r = t.record(t.lots.state(lot2).first_record().unwrap());
        assert_eq!(
            (r.buyer, r.reason, r.next),
            (2, Reason::InvalidAmount, NONE)
        );
        assert!(t.lots.state(lot2).shown());
    }

    #[test]
    fn the_memory_per_lot_is_what_the_structures_take() {
        assert_eq!(bytes_per_lot(), 10 + 64 + 4 + 48 + 4);
    }
}
