//! The result as it leaves: `output.csv`, then `output.json`, each rendered lot by lot into
//! chunks of bounded size and hashed on the way for the attestation, never built whole in
//! memory (the parent takes the files in that order). The
//! bytes are exactly those of [`output::render_csv`] and [`output::render_json`] (the tests
//! compare them), which the parent and `bidctl verify` read.
//!
//! Lots go out in natural order of their ids, sorted once, with a sort that needs no memory
//! of its own (the order array is reserved when the auction opens) and takes linear time on
//! ids that arrive in order, as most files list them.

use super::lots::{ALL_REASONS, LotTable, Tally};
use crate::auction::{Reason, RevealPolicy};
use crate::config::{AuctionConfig, Mode};
use crate::names::{BuyerName, LotId, natural_cmp, natural_cmp_bytes};
use crate::output::{FileSummary, ListedLots, MAX_LISTED_LOTS, SetAside};
use crate::wire::OutputFile;
use aws_lc_rs::digest;
use serde::Serialize;
use std::io::Write;

/// What `output.json` says before its lots (`output::render_json`'s fields, in its order).
#[derive(Serialize)]
struct Head<'a> {
    auction_id: &'a str,
    mode: Mode,
    #[serde(with = "crate::wire::message::hex32")]
    terms_sha256: &'a [u8; 32],
    reveal: RevealPolicy,
    lot_count: u64,
    files: &'a [FileSummary],
    set_aside: &'a [SetAside],
}

/// Everything the result is made of besides the lots.
pub(super) struct Terms<'a> {
    pub(super) config: &'a AuctionConfig,
    pub(super) mode: Mode,
    pub(super) terms_sha256: [u8; 32],
    pub(super) files: &'a [FileSummary],
}

/// The result being rendered and sent.
pub(super) struct Output {
    /// The lots to show, in output order: the first `shown` entries.
    order: Box<[u32]>,
    shown: usize,
    /// The next lot to render, in the file being rendered.
    next: usize,
    /// The file being rendered: the CSV first, then the JSON.
    file: OutputFile,
    csv: Vec<u8>,
    json: Vec<u8>,
    csv_sha: digest::Context,
    json_sha: digest::Context,
    chunk: usize,
    /// Buyers by natural order of their names: ties and set-aside lists are named in it.
    by_name: Vec<usize>,
    reveal: RevealPolicy,
    /// Both files are rendered and every chunk handed out.
    finished: bool,
    /// The last chunks are out; the digests may be taken.
    flushed: bool,
}

/// The result's digests, for the attestation.
pub(super) struct Digests {
    pub(super) csv: [u8; 32],
    pub(super) json: [u8; 32],
    pub(super) lots: u64,
    pub(super) set_aside_on_lots: u64,
}

impl Output {
    /// Orders the lots to show and renders the heads of both files. `order` is the array
    /// reserved at open, one entry per lot of the limit.
    pub(super) fn start(
        tally: &Tally,
        mut order: Box<[u32]>,
        terms: &Terms<'_>,
        chunk: usize,
    ) -> Output {
        let lots = &tally.lots;
        let mut shown = 0;
        for lot in 0..lots.len() {
            if lots.state(lot).shown() {
                order[shown] = lot;
                shown += 1;
            }
        }
        // Unstable: ids are unique, and the unstable sort needs no buffer of its own.
        order[..shown]
            .sort_unstable_by(|&a, &b| natural_cmp_bytes(lots.id_bytes(a), lots.id_bytes(b)));
        let buyers = terms.config.buyers();
        let mut by_name: Vec<usize> = (0..buyers.len()).collect();
        by_name.sort_by(|&a, &b| natural_cmp(buyers[a].name.as_str(), buyers[b].name.as_str()));
        let set_aside = set_aside(tally, &order[..shown], buyers);
        let reveal = terms.config.reveal();
        let mut out = Output {
            order,
            shown,
            next: 0,
            file: OutputFile::Csv,
            csv: Vec::with_capacity(chunk + 512),
            json: Vec::with_capacity(chunk + 8 * 1024),
            csv_sha: digest::Context::new(&digest::SHA256),
            json_sha: digest::Context::new(&digest::SHA256),
            chunk,
            by_name,
            reveal,
            finished: false,
            flushed: false,
        };
        out.csv.extend_from_slice(match reveal.reveals_price() {
            true => b"Property,Result,Price\n",
            false => b"Property,Result\n",
        });
        let head = Head {
            auction_id: terms.config.auction_id().as_str(),
            mode: terms.mode,
            terms_sha256: &terms.terms_sha256,
            reveal,
            lot_count: shown as u64,
            files: terms.files,
            set_aside: &set_aside,
        };
        serde_json::to_writer(&mut out.json, &head).expect("writing into memory cannot fail");
        out.json.pop(); // the closing brace: the lots follow
        out.json.extend_from_slice(b",\"lots\":[");
        out
    }

    /// The next chunk to send, rendering lots until one is full; `None` once everything has
    /// been handed out.
    pub(super) fn next_chunk(
        &mut self,
        tally: &Tally,
        config: &AuctionConfig,
    ) -> Option<(OutputFile, Vec<u8>)> {
        loop {
            let file = self.file;
            let full = self.buf(file).len() >= self.chunk;
            let done = self.next == self.shown;
            if full || (done && !self.buf(file).is_empty() && self.closed(file)) {
                return Some((file, self.take(file)));
            }
            if done {
                match file {
                    OutputFile::Csv => {
                        self.file = OutputFile::Json;
                        self.next = 0;
                    }
                    OutputFile::Json if !self.finished => {
                        self.json.extend_from_slice(b"]}\n");
                        self.finished = true;
                    }
                    OutputFile::Json => {
                        self.flushed = true;
                        return None;
                    }
                }
                continue;
            }
            let lot = self.order[self.next];
            self.next += 1;
            match file {
                OutputFile::Csv => self.csv_row(tally, config, lot),
                OutputFile::Json => {
                    if self.next > 1 {
                        self.json.push(b',');
                    }
                    self.json_lot(tally, config, lot);
                }
            }
        }
    }

    /// Whether `file` is complete (its last bytes may go).
    fn closed(&self, file: OutputFile) -> bool {
        match file {
            OutputFile::Csv => true,
            OutputFile::Json => self.finished,
        }
    }

    fn buf(&self, file: OutputFile) -> &[u8] {
        match file {
            OutputFile::Csv => &self.csv,
            OutputFile::Json => &self.json,
        }
    }

    /// Up to a chunk of `file`'s bytes, hashed as they leave.
    fn take(&mut self, file: OutputFile) -> Vec<u8> {
        let (buf, sha) = match file {
            OutputFile::Csv => (&mut self.csv, &mut self.csv_sha),
            OutputFile::Json => (&mut self.json, &mut self.json_sha),
        };
        let n = buf.len().min(self.chunk);
        // Copied out whole, then dropped: collecting the drain copied byte by byte.
        let part = buf[..n].to_vec();
        buf.drain(..n);
        sha.update(&part);
        part
    }

    /// Both files' digests, once every chunk is out.
    pub(super) fn digests(&self, tally: &Tally) -> Option<Digests> {
        if !self.flushed {
            return None;
        }
        let set_aside_on_lots = self.order[..self.shown]
            .iter()
            .map(|&lot| records(tally, lot).count() as u64)
            .sum();
        Some(Digests {
            csv: self
                .csv_sha
                .clone()
                .finish()
                .as_ref()
                .try_into()
                .expect("32"),
            json: self
                .json_sha
                .clone()
                .finish()
                .as_ref()
                .try_into()
                .expect("32"),
            lots: self.shown as u64,
            set_aside_on_lots,
        })
    }

    /// The price a lot's result shows, under the reveal policy.
    fn price(&self, tally: &Tally, lot: u32) -> Option<crate::amount::Amount> {
        let state = tally.lots.state(lot);
        match self.reveal {
            RevealPolicy::None => None,
            RevealPolicy::WinningBid => state.top().map(|(a, _)| a),
            RevealPolicy::SecondPrice => state.second_price(),
        }
    }

    /// One lot's `output.csv` row.
    fn csv_row(&mut self, tally: &Tally, config: &AuctionConfig, lot: u32) {
        let lots: &LotTable = &tally.lots;
        let state = lots.state(lot);
        let buyers = config.buyers();
        let price = self.price(tally, lot);
        let csv = &mut self.csv;
        csv.extend_from_slice(lots.id_bytes(lot));
        csv.push(b',');
        match state.top() {
            None => csv.extend_from_slice(b"No valid bids"),
            Some((_, holders)) if holders.count_ones() == 1 => {
                let name = buyers[holders.trailing_zeros() as usize].name.as_str();
                csv.extend_from_slice(name.as_bytes());
                csv.extend_from_slice(b" Wins");
            }
            Some((_, holders)) => {
                // "Tie: A, B" holds the delimiter, so the field is quoted (csv-core's rule);
                // names hold no quote to double.
                csv.extend_from_slice(b"\"Tie: ");
                let mut first = true;
                for &b in &self.by_name {
                    if holders & (1 << b) != 0 {
                        if !first {
                            csv.extend_from_slice(b", ");
                        }
                        first = false;
                        csv.extend_from_slice(buyers[b].name.as_str().as_bytes());
                    }
                }
                csv.push(b'"');
            }
        }
        if self.reveal.reveals_price() {
            csv.push(b',');
            if let Some(p) = price {
                write!(csv, "{p}").expect("writing into memory cannot fail");
            }
        }
        csv.push(b'\n');
    }

    /// One lot's object in `output.json`'s `lots`.
    fn json_lot(&mut self, tally: &Tally, config: &AuctionConfig, lot: u32) {
        let lots: &LotTable = &tally.lots;
        let state = lots.state(lot);
        let buyers = config.buyers();
        let price = self.price(tally, lot);
        let json = &mut self.json;
        json.extend_from_slice(b"{\"lot\":\"");
        json.extend_from_slice(lots.id_bytes(lot));
        json.extend_from_slice(b"\",\"result\":");
        match state.top() {
            None => json.extend_from_slice(b"\"no_valid_bid\""),
            Some((_, holders)) if holders.count_ones() == 1 => {
                let name = buyers[holders.trailing_zeros() as usize].name.as_str();
                json.extend_from_slice(b"\"winner\",\"winner\":\"");
                json.extend_from_slice(name.as_bytes());
                json.push(b'"');
            }
            Some((_, holders)) => {
                json.extend_from_slice(b"\"tie\",\"tied\":[");
                let mut first = true;
                for &b in &self.by_name {
                    if holders & (1 << b) != 0 {
                        if !first {
                            json.push(b',');
                        }
                        first = false;
                        json.push(b'"');
                        json.extend_from_slice(buyers[b].name.as_str().as_bytes());
                        json.push(b'"');
                    }
                }
                json.push(b']');
            }
        }
        if let Some(p) = price {
            json.extend_from_slice(b",\"price\":\"");
            write!(json, "{p}").expect("writing into memory cannot fail");
            json.push(b'"');
        }
        // Set-aside bids of per-bid files, by buyer name (at most one per buyer and lot).
        if state.first_record().is_some() {
            let mut on_lot = [None::<Reason>; crate::config::MAX_BUYERS];
            for (buyer, reason) in records(tally, lot) {
                on_lot[buyer] = Some(reason);
            }
            json.extend_from_slice(b",\"disqualified\":[");
            let mut first = true;
            for &b in &self.by_name {
                let Some(reason) = on_lot[b] else { continue };
                if !first {
                    json.push(b',');
                }
                first = false;
                json.extend_from_slice(b"{\"buyer\":\"");
                json.extend_from_slice(buyers[b].name.as_str().as_bytes());
                json.extend_from_slice(b"\",\"reason\":\"");
                json.extend_from_slice(reason.code().as_bytes());
                json.extend_from_slice(b"\"}");
            }
            json.push(b']');
        }
        json.push(b'}');
    }
}

/// A lot's set-aside records as (buyer, reason).
fn records(tally: &Tally, lot: u32) -> impl Iterator<Item = (usize, Reason)> + '_ {
    let mut next = tally.lots.state(lot).first_record();
    std::iter::from_fn(move || {
        let r = tally.record(next?);
        next = (r.next != u32::MAX).then_some(r.next);
        Some((usize::from(r.buyer), r.reason))
    })
}

/// The set-aside counts per buyer and reason, in the buyers' configured order, with the first
/// lots (in output order) of each per-bid buyer's records: one pass over the lots, which stops
/// once every list is complete.
fn set_aside(tally: &Tally, order: &[u32], buyers: &[crate::config::BuyerSpec]) -> Vec<SetAside> {
    // Lots are named only for a per-bid file: its contract column is plain text to the
    // operator anyway. An envelope file's lots are secret, and a malformed row or file names
    // no lot at all.
    let names_lot = |b: usize, reason: Reason| {
        tally.is_per_bid(b) && !matches!(reason, Reason::MalformedRow | Reason::MalformedFile)
    };
    let want = |b: usize, reason: Reason| (tally.counted(b, reason) as usize).min(MAX_LISTED_LOTS);
    let mut lists: Vec<[Vec<LotId>; super::lots::REASONS]> =
        (0..buyers.len()).map(|_| Default::default()).collect();
    let mut missing: usize = (0..buyers.len())
        .flat_map(|b| ALL_REASONS.map(|r| (b, r)))
        .filter(|&(b, r)| names_lot(b, r))
        .map(|(b, r)| want(b, r))
        .sum();
    for &lot in order {
        if missing == 0 {
            break;
        }
        for (b, reason) in records(tally, lot) {
            let list = &mut lists[b][super::lots::reason_index(reason)];
            if list.len() < want(b, reason) {
                list.push(LotId::from_checked(tally.lots.id(lot)));
                missing -= 1;
            }
        }
    }
    let mut out = Vec::new();
    for (b, spec) in buyers.iter().enumerate() {
        for reason in ALL_REASONS {
            let count = tally.counted(b, reason);
            if count == 0 {
                continue;
            }
            let lots = names_lot(b, reason).then(|| {
                let first = std::mem::take(&mut lists[b][super::lots::reason_index(reason)]);
                ListedLots {
                    more: count.saturating_sub(first.len() as u64),
                    first,
                }
            });
            out.push(SetAside {
                buyer: BuyerName::clone(&spec.name),
                reason,
                count,
                lots,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amount::Amount;
    use crate::auction::{self, Verdict};
    use crate::config::BuyerSpec;
    use crate::manifest::FileFormat;
    use crate::names::{AuctionId, KeyArn};
    use crate::output::{self, Report};
    use crate::session::enclave::lots::Pending;
    use proptest::prelude::*;

    /// One buyer's contribution to one lot in a test auction.
    #[derive(Debug, Clone)]
    enum Bid {
        Valid(u8),
        SetAside(Reason),
        Twice,
    }

    fn bid() -> impl Strategy<Value = Bid> {
        prop_oneof![
            6 => (0u8..6).prop_map(Bid::Valid),
            1 => prop_oneof![Just(Reason::InvalidAmount), Just(Reason::Undecryptable)].prop_map(Bid::SetAside),
            1 => Just(Bid::Twice),
        ]
    }

    const NAMES: [&str; 5] = ["B10", "B2", "b1", "Alice", "B1"];
    const LOTS: [&str; 7] = ["10", "2", "1", "a-1", "a-01", "x:9", "007"];

    proptest! {
        /// The one-pass decisions rendered chunk by chunk are, byte for byte, what deciding
        /// each lot with `auction::decide` and rendering the whole result with
        /// `output::render_csv` and `render_json` gives.
        #[test]
        fn streamed_output_is_the_reference_renderers(
            buyers in 1usize..=5,
            per_bid in proptest::collection::vec(any::<bool>(), 5),
            table in proptest::collection::vec(proptest::collection::vec(proptest::option::of(bid()), 5), 1..=7),
            reveal in prop_oneof![Just(RevealPolicy::None), Just(RevealPolicy::WinningBid), Just(RevealPolicy::SecondPrice)],
            chunk in 1usize..300,
        ) {
            let specs: Vec<BuyerSpec> = (0..buyers).map(|i| BuyerSpec {
                name: BuyerName::new(NAMES[i]).unwrap(),
                key_arn: KeyArn::new(format!("arn:aws:kms:us-east-1:111122223333:key/k{i}")).unwrap(),
            }).collect();
            let config = AuctionConfig::new(AuctionId::new("a").unwrap(), specs.clone(), reveal, false).unwrap();
            let mut tally = Tally::reserve(16, 64, (1, 2)).unwrap();
            let mut counts = std::collections::BTreeMap::<(usize, Reason), u64>::new();
            let mut verdicts: Vec<Vec<(BuyerName, Verdict)>> = vec![Vec::new(); table.len()];
            // Files one buyer at a time, as the session reads them.
            for b in 0..buyers {
                if per_bid[b] { tally.per_bid_file(b); }
                for (l, row) in table.iter().enumerate() {
                    let Some(bid) = &row[b] else { continue };
                    let lot = tally.lots.slot(LOTS[l]).unwrap();
                    prop_assert_eq!(tally.pending(lot, b), Pending::None);
                    let shown_reason = match bid {
                        Bid::Valid(v) => {
                            let a = Amount::parse(v.to_string().as_bytes()).unwrap();
                            tally.set_valid(lot, b, a);
                            verdicts[l].push((specs[b].name.clone(), Verdict::Valid(a)));
                            None
                        }
                        Bid::SetAside(r) => {
                            tally.set_pending(lot, b, Pending::SetAside(*r));
                            Some(*r)
                        }
                        Bid::Twice => {
                            tally.set_valid(lot, b, Amount::parse(b"9").unwrap());
                            tally.named_again(lot, b);
                            Some(Reason::DuplicateLot)
                        }
                    };
                    if let Some(r) = shown_reason {
                        *counts.entry((b, r)).or_default() += 1;
                        if per_bid[b] {
                            verdicts[l].push((specs[b].name.clone(), Verdict::Disqualified(r)));
                        }
                    }
                }
            }
            tally.settle_all();
            let files: Vec<FileSummary> = (0..buyers).map(|b| FileSummary {
                buyer: specs[b].name.clone(),
                format: if per_bid[b] { FileFormat::PerBid } else { FileFormat::Envelope },
                size: 100 + b as u64,
                sha256: [b as u8; 32],
            }).collect();
            let terms = Terms { config: &config, mode: Mode::Sealed, terms_sha256: [7; 32], files: &files };
            let mut out = Output::start(&tally, vec![0u32; 16].into_boxed_slice(), &terms, chunk);
            let (mut csv, mut json) = (Vec::new(), Vec::new());
            let mut json_started = false;
            while let Some((file, data)) = out.next_chunk(&tally, &config) {
                prop_assert!(data.len() <= chunk);
                match file {
                    OutputFile::Csv => { prop_assert!(!json_started, "CSV after JSON"); csv.extend(data) }
                    OutputFile::Json => { json_started = true; json.extend(data) }
                }
            }
            // The reference.
            let mut results: Vec<auction::LotResult> = verdicts.iter().enumerate()
                .filter(|(_, v)| !v.is_empty())
                .map(|(l, v)| auction::decide(LotId::new(LOTS[l]).unwrap(), v.clone(), reveal))
                .collect();
            output::sort_results(&mut results);
            let set_aside: Vec<SetAside> = counts.iter().map(|(&(b, reason), &count)| {
                let names_lot = !matches!(reason, Reason::MalformedRow | Reason::MalformedFile);
                SetAside {
                    buyer: specs[b].name.clone(),
                    reason,
                    count,
                    lots: (per_bid[b] && names_lot).then(|| ListedLots::from_results(&results, &specs[b].name, reason, count)),
                }
            }).collect();
            let json_ref = output::render_json(&Report {
                config: &config, mode: Mode::Sealed, terms_sha256: [7; 32], files: &files,
                set_aside: &set_aside, results: &results,
            });
            prop_assert_eq!(String::from_utf8(csv.clone()).unwrap(), String::from_utf8(output::render_csv(&results, reveal)).unwrap());
            prop_assert_eq!(String::from_utf8(json.clone()).unwrap(), String::from_utf8(json_ref).unwrap());
            let d = out.digests(&tally).unwrap();
            prop_assert_eq!(d.csv, crate::config::sha256(&csv));
            prop_assert_eq!(d.json, crate::config::sha256(&json));
            prop_assert_eq!(d.lots, results.len() as u64);
        }
    }
}
