//! The information-flow search of `core/tests/infoflow` driven by raw bytes: each input is
//! read as a pair of worlds and an operator strategy (sessions of either image, any terms,
//! seals, file order and substitutions, chunking, KMS faults, credentials, IAM denials,
//! aborts, queries of the first release). The two worlds must look identical to the operator,
//! and no honest buyer's own check may accept a result that is not of an auction it sealed.
#![no_main]

#[path = "../../core/tests/infoflow/harness.rs"]
mod harness;

use bidding_core::auction::RevealPolicy;
use bidding_core::manifest::FileFormat;
use harness::*;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Choices read from the input, zero once it runs out.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len())]
    }
    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| (v << 8) | u64::from(self.byte()))
    }
}

const REVEALS: [RevealPolicy; 3] = [
    RevealPolicy::None,
    RevealPolicy::WinningBid,
    RevealPolicy::SecondPrice,
];
const KEYS: [Key; 4] = [Key::V, Key::H, Key::S, Key::Spare];
const WHOS: [Who; 3] = [Who::V, Who::H, Who::S];
const FILES: [FileChoice; 8] = [
    FileChoice::Genuine(Who::V),
    FileChoice::Genuine(Who::H),
    FileChoice::Genuine(Who::S),
    FileChoice::VictimTruncated,
    FileChoice::VictimFlipped,
    FileChoice::VictimMoved,
    FileChoice::SybilWithVictimsBid,
    FileChoice::Empty,
];

fn spec(c: &mut Choices) -> WorldSpec {
    let envelope = c.flag();
    let mut victim_trusts = vec![Image::Sealed];
    if c.flag() {
        victim_trusts.push(Image::Unsealed);
    }
    if c.flag() {
        victim_trusts.push(Image::Legacy);
    }
    WorldSpec {
        victim_format: if envelope {
            FileFormat::Envelope
        } else {
            FileFormat::PerBid
        },
        victim_trusts,
        reveal: c.pick(&REVEALS),
        pair: if envelope && c.flag() {
            Pair::EnvelopeLots
        } else {
            Pair::Amounts
        },
        victim_key: if c.below(4) == 0 { Key::Spare } else { Key::V },
        seed: c.u64(),
    }
}

fn terms(c: &mut Choices) -> Terms {
    // M, changed where the input says.
    let mut t = Terms::m(c.pick(&REVEALS), Key::V);
    if c.flag() {
        t.auction = OTHER_AUCTION;
    }
    t.allow_no_context = c.below(8) == 0;
    let n = 1 + c.below(3);
    let mut whos = WHOS.to_vec();
    for i in 0..3 {
        whos.swap(i, c.below(3));
    }
    t.slots = whos[..n]
        .iter()
        .map(|&who| {
            let own = t.slots.iter().find(|s| s.who == who).unwrap();
            Slot {
                who,
                key: if c.below(4) == 0 { c.pick(&KEYS) } else { own.key },
                file: if c.below(4) == 0 { c.pick(&FILES) } else { own.file },
            }
        })
        .collect();
    t
}

fn plan(c: &mut Choices) -> SessionPlan {
    if c.below(8) == 0 {
        let queries = (0..1 + c.below(3))
            .map(|_| {
                if c.below(4) == 0 {
                    LegacyQuery::Envelope
                } else {
                    LegacyQuery::Bid {
                        row: c.below(4),
                        auction: if c.flag() { AUCTION } else { OTHER_AUCTION },
                        lot: c.pick(&LOTS),
                        buyer: c.pick(&WHOS),
                        no_context: c.flag(),
                    }
                }
            })
            .collect();
        return SessionPlan::Legacy { queries };
    }
    let (image, open) = match c.below(4) {
        0 => (Image::Sealed, Open::M),
        1 => (Image::Sealed, Open::Sealed(terms(c))),
        _ => (Image::Unsealed, Open::Unsealed(terms(c))),
    };
    let image = if c.below(16) == 0 {
        match image {
            Image::Sealed => Image::Unsealed,
            _ => Image::Sealed,
        }
    } else {
        image
    };
    let n = match &open {
        Open::M => 3,
        Open::Sealed(t) | Open::Unsealed(t) => t.slots.len(),
    };
    let seals = (0..3)
        .map(|_| match c.below(8) {
            0 => SealChoice::Forged,
            1 => SealChoice::Garbage,
            _ => SealChoice::Genuine,
        })
        .collect();
    let order = if c.below(4) == 0 {
        (0..c.below(5)).map(|_| c.below(4)).collect()
    } else {
        (0..n).collect()
    };
    SessionPlan::Enclave {
        image,
        restart: c.below(5) != 0,
        good_credentials: c.below(16) != 0,
        open,
        seals,
        order,
        chunk: c.pick(&[3, 64, 1000, 2048, 2048, 2048, 1 << 16]),
        net: c.pick(&[Net::InOrder, Net::Reversed, Net::Throttle, Net::Lose]),
        abort_after: (c.below(5) == 0).then(|| c.below(40)),
        deny: (c.below(10) == 0).then(|| c.pick(&KEYS)),
        swap: (c.below(7) == 0).then(|| (c.below(3), c.pick(&FILES))),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut c = Choices(data);
    let spec = spec(&mut c);
    let plans: Vec<SessionPlan> = (0..1 + c.below(4)).map(|_| plan(&mut c)).collect();
    let (seen0, seen1, integrity) = both_worlds(&spec, &plans);
    if let Err(Breach(b)) = integrity {
        panic!("integrity: {b}\n{spec:?}\n{plans:#?}");
    }
    if let Some(d) = first_difference(&seen0, &seen1) {
        panic!("the operator tells the worlds apart {d}\n{spec:?}\n{plans:#?}");
    }
});
