//! An envelope file's rows on their way to the lot table, a few dozen at a time. The table is
//! hundreds of MiB at the default limits, so each lookup is a cache miss; collecting rows
//! first, and asking for each one's index slot as it is collected, lets those misses overlap
//! instead of each waiting for the last (the profile said the lookups were a third of the
//! enclave's time per envelope bid). The rows still reach the table one by one, in file
//! order, exactly as they would without the batch.
//!
//! Its memory is fixed when the file's reader starts, whatever the rows hold: a lot id is
//! kept only when it is a valid one (at most [`MAX_LOT_ID_LEN`] bytes), and an amount is read
//! as the row is held (what the row's text holds is gone once the next row is read), so only
//! its value, or that it is not one, is kept.

use super::lots::{Pending, Tally};
use crate::amount::Amount;
use crate::auction::Reason;
use crate::names::MAX_LOT_ID_LEN;

/// Rows held before they are applied.
const ROWS: usize = 64;
const STRIDE: usize = MAX_LOT_ID_LEN;

/// One well-formed row: its lot id's hash and length (the id is at its index × [`STRIDE`]),
/// and its amount.
#[derive(Clone, Copy)]
struct Held {
    hash: u64,
    lot_len: u8,
    /// `None`: not an amount.
    amount: Option<Amount>,
}

pub(super) struct RowBatch {
    text: Box<[u8]>,
    rows: Vec<Held>,
}

impl RowBatch {
    pub(super) fn new() -> RowBatch {
        RowBatch {
            text: vec![0; ROWS * STRIDE].into_boxed_slice(),
            rows: Vec::with_capacity(ROWS),
        }
    }

    /// Holds a row whose lot id is valid (the caller checked it) and warms its index slot;
    /// applies the batch once it is full.
    pub(super) fn push(
        &mut self,
        tally: &mut Tally,
        buyer: usize,
        lot: &[u8],
        bid: &[u8],
        counted: &mut bool,
    ) {
        let k = self.rows.len();
        let at = k * STRIDE;
        self.text[at..at + lot.len()].copy_from_slice(lot);
        let hash = tally.lots.hash(lot);
        tally.lots.prefetch(hash);
        self.rows.push(Held {
            hash,
            lot_len: lot.len() as u8,
            amount: Amount::parse(bid).ok(),
        });
        if self.rows.len() == ROWS {
            self.apply(tally, buyer, counted);
        }
    }

    /// Every held row to the lots, in order.
    pub(super) fn apply(&mut self, tally: &mut Tally, buyer: usize, counted: &mut bool) {
        for (k, row) in self.rows.drain(..).enumerate() {
            let at = k * STRIDE;
            let lot = &self.text[at..at + usize::from(row.lot_len)];
            let Some(slot) = tally.lots.slot_hashed(lot, row.hash) else {
                continue;
            };
            *counted = true;
            if tally.pending(slot, buyer) != Pending::None {
                tally.named_again(slot, buyer);
                continue;
            }
            match row.amount {
                Some(amount) => tally.set_valid(slot, buyer, amount),
                None => tally.set_pending(slot, buyer, Pending::SetAside(Reason::InvalidAmount)),
            }
        }
    }
}
