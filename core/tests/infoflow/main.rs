//! Non-interference and integrity under every operator strategy the search can draw
//! (issue 21; DESIGN §2 "Information flow, machine-checked"). `harness.rs` says what the
//! worlds, the model KMS and the observer are.
//!
//! The property test runs `INFOFLOW_CASES` strategies (default 10,000, about two minutes in a debug build on CI);
//! a longer search is
//! `INFOFLOW_CASES=20000 cargo test -p bidding-core --release --test infoflow`, and the
//! `infoflow` cargo-fuzz target drives the same harness from raw bytes.

mod harness;

use bidding_core::auction::RevealPolicy;
use bidding_core::manifest::FileFormat;
use harness::*;
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

#[global_allocator]
static ALLOC: Counting = Counting;

/// Both worlds under `plans`: the same observations, and no honest buyer fooled.
fn check(spec: &WorldSpec, plans: &[SessionPlan]) -> Result<(), String> {
    if std::env::var_os("INFOFLOW_SHOW").is_some() {
        eprintln!("{:#?}", endings(spec, plans));
    }
    let (seen0, seen1, integrity) = both_worlds(spec, plans);
    if let Err(Breach(b)) = integrity {
        return Err(format!("integrity: {b}\nspec {spec:?}\nplans {plans:#?}"));
    }
    if let Some(d) = first_difference(&seen0, &seen1) {
        return Err(format!(
            "the operator tells the worlds apart {d}\nspec {spec:?}\nplans {plans:#?}"
        ));
    }
    Ok(())
}

fn spec(format: FileFormat, trusts: &[Image], reveal: RevealPolicy, pair: Pair) -> WorldSpec {
    spec_with(format, trusts, reveal, pair, Key::V)
}

fn spec_with(
    format: FileFormat,
    trusts: &[Image],
    reveal: RevealPolicy,
    pair: Pair,
    victim_key: Key,
) -> WorldSpec {
    let mut victim_trusts = vec![Image::Sealed];
    victim_trusts.extend_from_slice(trusts);
    WorldSpec {
        victim_format: format,
        victim_trusts,
        reveal,
        pair,
        victim_key,
        seed: 0x5eed,
    }
}

/// A session of `image` opening `open`, every file of the terms in order, whole.
fn session(image: Image, open: Open, seals: Vec<SealChoice>) -> SessionPlan {
    let n = match &open {
        Open::M => 3,
        Open::Sealed(t) | Open::Unsealed(t) => t.slots.len(),
    };
    SessionPlan::Enclave {
        image,
        restart: true,
        good_credentials: true,
        open,
        seals,
        order: (0..n).collect(),
        chunk: 2048,
        net: Net::InOrder,
        abort_after: None,
        deny: None,
        swap: None,
    }
}

fn slot(who: Who, key: Key, file: FileChoice) -> Slot {
    Slot { who, key, file }
}

fn terms(reveal: RevealPolicy, slots: Vec<Slot>) -> Terms {
    Terms {
        auction: AUCTION,
        reveal,
        allow_no_context: false,
        slots,
    }
}

const GENUINE: [SealChoice; 3] = [SealChoice::Genuine; 3];

// ---------------------------------------------------------------------------------------
// Regression cases: the attacks found so far, each a strategy the property must survive.

/// Finding 1: the victim's sealed file alone in an unsealed run with `winning-bid` (and with
/// a sybil outbidding it under `second-price`), on an unsealed image the victim's key trusts
/// and on the sealed image; then on a model of the first release, which served both modes.
#[test]
fn finding1_an_unsealed_run_reads_nothing() {
    for format in [FileFormat::PerBid, FileFormat::Envelope] {
        let spec = spec(
            format,
            &[Image::Unsealed, Image::Legacy],
            RevealPolicy::None,
            Pair::Amounts,
        );
        let alone = terms(
            RevealPolicy::WinningBid,
            vec![slot(Who::V, Key::V, FileChoice::Genuine(Who::V))],
        );
        let mut with_sybil = terms(
            RevealPolicy::SecondPrice,
            vec![
                slot(Who::V, Key::V, FileChoice::Genuine(Who::V)),
                slot(Who::S, Key::S, FileChoice::Genuine(Who::S)),
            ],
        );
        let mut no_context = alone.clone();
        no_context.allow_no_context = true;
        no_context.auction = OTHER_AUCTION;
        with_sybil.auction = AUCTION;
        let mut plans = Vec::new();
        for image in [Image::Unsealed, Image::Sealed] {
            for t in [&alone, &with_sybil, &no_context] {
                plans.push(session(image, Open::Unsealed(t.clone()), vec![]));
            }
        }
        plans.push(SessionPlan::Legacy {
            queries: vec![
                LegacyQuery::Bid {
                    row: 0,
                    auction: AUCTION,
                    lot: "1",
                    buyer: Who::V,
                    no_context: false,
                },
                LegacyQuery::Bid {
                    row: 1,
                    auction: OTHER_AUCTION,
                    lot: "2",
                    buyer: Who::S,
                    no_context: true,
                },
                LegacyQuery::Envelope,
            ],
        });
        check(&spec, &plans).unwrap();
    }
}

/// Finding 2: the operator publishes a manifest that registers the victim under a key it
/// holds, makes the victim's seal itself there, and lists the victim's genuine file; the
/// honest buyer seals it. Also the same registration in a manifest nobody sealed. The
/// victim's own check must accept nothing that comes out.
#[test]
fn finding2_a_buyer_registered_under_the_operators_key() {
    for format in [FileFormat::PerBid, FileFormat::Envelope] {
        let spec = spec_with(format, &[], RevealPolicy::None, Pair::Amounts, Key::Spare);
        let forged_m = session(
            Image::Sealed,
            Open::M,
            vec![SealChoice::Forged, SealChoice::Genuine, SealChoice::Genuine],
        );
        let after = terms(
            RevealPolicy::None,
            vec![
                slot(Who::V, Key::Spare, FileChoice::Genuine(Who::V)),
                slot(Who::S, Key::S, FileChoice::Genuine(Who::S)),
            ],
        );
        let forged_later = session(
            Image::Sealed,
            Open::Sealed(after),
            vec![SealChoice::Forged, SealChoice::Forged],
        );
        check(&spec, &[forged_m.clone(), forged_later]).unwrap();
        let ends = endings(&spec, &[forged_m]);
        assert!(ends[0].starts_with("key_binding:"), "{ends:?}");
    }
}

/// The seven attacks of the adversarial review (README, Tests), as strategies.
#[test]
fn the_first_reviews_attacks() {
    let m = || Terms::m(RevealPolicy::None, Key::V);
    let spec = spec(FileFormat::PerBid, &[], RevealPolicy::None, Pair::Amounts);
    let with = |f: &dyn Fn(&mut Terms)| {
        let mut t = m();
        f(&mut t);
        t
    };
    let mut plans = vec![
        // The reveal policy swapped after sealing.
        session(
            Image::Sealed,
            Open::Sealed(with(&|t| t.reveal = RevealPolicy::WinningBid)),
            GENUINE.to_vec(),
        ),
        // Single-bid lots by leaving a file out.
        session(
            Image::Sealed,
            Open::Sealed(with(&|t| t.slots.retain(|s| s.who != Who::H))),
            GENUINE.to_vec(),
        ),
        // A comparison oracle: the operator's own bids changed, rerun after a restart.
        session(
            Image::Sealed,
            Open::Sealed(with(&|t| t.slots[2].file = FileChoice::SybilWithVictimsBid)),
            vec![SealChoice::Genuine, SealChoice::Genuine, SealChoice::Forged],
        ),
        // Rows dropped from a file: the manifest names the file as cut.
        session(
            Image::Sealed,
            Open::Sealed(with(&|t| t.slots[0].file = FileChoice::VictimTruncated)),
            GENUINE.to_vec(),
        ),
        // Ciphertexts moved to other lots.
        session(
            Image::Sealed,
            Open::Sealed(with(&|t| t.slots[0].file = FileChoice::VictimMoved)),
            GENUINE.to_vec(),
        ),
        // A seal forged under another key (one the operator holds; the victim's it cannot use).
        session(
            Image::Sealed,
            Open::Sealed(with(&|t| t.slots[0].key = Key::Spare)),
            vec![SealChoice::Forged, SealChoice::Genuine, SealChoice::Forged],
        ),
    ];
    // An IAM deny on the victim's key, on the operator's own role.
    let mut denied = session(Image::Sealed, Open::Sealed(m()), GENUINE.to_vec());
    if let SessionPlan::Enclave { deny, .. } = &mut denied {
        *deny = Some(Key::V);
    }
    plans.push(denied);
    // Ciphertext lengths that told digit counts: the file sizes are in every record, and the
    // worlds' amounts have one to four digits.
    plans.push(session(Image::Sealed, Open::Sealed(m()), GENUINE.to_vec()));
    check(&spec, &plans).unwrap();
}

/// The auction everyone sealed, run honestly, decides M's reference result in both worlds
/// (so a test that found nothing would still fail if the harness could not close a session).
#[test]
fn the_sealed_auction_runs_and_is_accepted() {
    for format in [FileFormat::PerBid, FileFormat::Envelope] {
        for reveal in [
            RevealPolicy::None,
            RevealPolicy::WinningBid,
            RevealPolicy::SecondPrice,
        ] {
            let spec = spec(format, &[], reveal, Pair::Amounts);
            let plan = session(Image::Sealed, Open::M, GENUINE.to_vec());
            let (seen0, seen1, integrity) = both_worlds(&spec, std::slice::from_ref(&plan));
            integrity.unwrap();
            assert_eq!(first_difference(&seen0, &seen1), None);
            assert_eq!(
                accepted_results(&spec, &[plan]),
                2,
                "both buyers accept: {format} {reveal:?}: {seen0:#?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The search.
//
// Most strategies are near the auction the buyers sealed (M with its genuine seals, or M with
// one or two changes), because anything farther from it is refused at the first seal; the
// rest open unsealed terms of any shape on the unsealed image, or query the first release.
// Every choice is also drawn against the grain now and then (the other image, a forged seal,
// files out of order, twice or swapped, frames too large, KMS throttled or lost, credentials
// refused, IAM denials, aborts, no restart).

fn reveal() -> impl Strategy<Value = RevealPolicy> {
    select(vec![
        RevealPolicy::None,
        RevealPolicy::WinningBid,
        RevealPolicy::SecondPrice,
    ])
}

fn key() -> impl Strategy<Value = Key> {
    select(vec![Key::V, Key::H, Key::S, Key::Spare])
}

fn any_file() -> impl Strategy<Value = FileChoice> {
    select(vec![
        FileChoice::Genuine(Who::V),
        FileChoice::Genuine(Who::H),
        FileChoice::Genuine(Who::S),
        FileChoice::VictimTruncated,
        FileChoice::VictimFlipped,
        FileChoice::VictimMoved,
        FileChoice::SybilWithVictimsBid,
        FileChoice::Empty,
    ])
}

fn who_key(who: Who) -> Key {
    match who {
        Who::V => Key::V,
        Who::H => Key::H,
        Who::S => Key::S,
    }
}

/// Terms of any shape: any auction id, reveal, buyers in any order under any keys, any files.
fn any_terms() -> impl Strategy<Value = Terms> {
    (
        select(vec![AUCTION, OTHER_AUCTION]),
        reveal(),
        any::<bool>(),
        subsequence(vec![Who::V, Who::H, Who::S], 1..=3).prop_shuffle(),
        proptest::collection::vec(
            (
                prop::bool::weighted(0.7),
                key(),
                prop::option::weighted(0.3, any_file()),
            ),
            3,
        ),
    )
        .prop_map(|(auction, reveal, allow_no_context, whos, picks)| Terms {
            auction,
            reveal,
            allow_no_context,
            slots: whos
                .into_iter()
                .zip(picks)
                .map(|(who, (own_key, key, file))| Slot {
                    who,
                    key: if own_key { who_key(who) } else { key },
                    file: file.unwrap_or(FileChoice::Genuine(who)),
                })
                .collect(),
        })
}

/// One change to M's terms.
#[derive(Debug, Clone)]
enum Change {
    Reveal(RevealPolicy),
    Auction,
    Drop(usize),
    Swap(usize, usize),
    Key(usize, Key),
    File(usize, FileChoice),
    NoContext,
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        reveal().prop_map(Change::Reveal),
        Just(Change::Auction),
        (0usize..3).prop_map(Change::Drop),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Change::Swap(a, b)),
        (0usize..3, key()).prop_map(|(i, k)| Change::Key(i, k)),
        (0usize..3, any_file()).prop_map(|(i, f)| Change::File(i, f)),
        Just(Change::NoContext),
    ]
}

/// M with one or two changes.
fn changed_m() -> impl Strategy<Value = Terms> {
    (reveal(), proptest::collection::vec(change(), 1..=2)).prop_map(|(reveal, changes)| {
        let mut t = Terms::m(reveal, Key::V);
        for c in changes {
            match c {
                Change::Reveal(r) => t.reveal = r,
                Change::Auction => t.auction = OTHER_AUCTION,
                Change::Drop(i) if t.slots.len() > 1 => {
                    t.slots.remove(i % t.slots.len());
                }
                Change::Drop(_) => {}
                Change::Swap(a, b) => {
                    let n = t.slots.len();
                    t.slots.swap(a % n, b % n);
                }
                Change::Key(i, k) => {
                    let n = t.slots.len();
                    t.slots[i % n].key = k;
                }
                Change::File(i, f) => {
                    let n = t.slots.len();
                    t.slots[i % n].file = f;
                }
                Change::NoContext => t.allow_no_context = true,
            }
        }
        t
    })
}

/// How the operator drives one enclave session, whatever it opens.
#[derive(Debug, Clone)]
struct Drive {
    restart: bool,
    good_credentials: bool,
    seals: Vec<SealChoice>,
    order: Option<Vec<usize>>,
    chunk: usize,
    net: Net,
    abort_after: Option<usize>,
    deny: Option<Key>,
    swap: Option<(usize, FileChoice)>,
}

fn drive() -> impl Strategy<Value = Drive> {
    let seal = prop_oneof![
        8 => Just(SealChoice::Genuine),
        1 => Just(SealChoice::Forged),
        1 => Just(SealChoice::Garbage),
    ];
    (
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.95),
        proptest::collection::vec(seal, 3),
        prop::option::weighted(0.25, proptest::collection::vec(0usize..4, 0..5)),
        prop_oneof![
            1 => Just(3usize),
            2 => Just(64),
            2 => Just(1000),
            6 => Just(2048),
            1 => Just(1 << 16),
        ],
        select(vec![Net::InOrder, Net::Reversed, Net::Throttle, Net::Lose]),
        prop::option::weighted(0.2, 0usize..40),
        prop::option::weighted(0.1, key()),
        prop::option::weighted(0.15, (0usize..3, any_file())),
    )
        .prop_map(
            |(restart, good_credentials, seals, order, chunk, net, abort_after, deny, swap)| {
                Drive {
                    restart,
                    good_credentials,
                    seals,
                    order,
                    chunk,
                    net,
                    abort_after,
                    deny,
                    swap,
                }
            },
        )
}

fn enclave_plan() -> impl Strategy<Value = SessionPlan> {
    let sealed = prop_oneof![
        3 => Just(Open::M),
        2 => changed_m().prop_map(Open::Sealed),
        1 => any_terms().prop_map(Open::Sealed),
    ];
    let opened = prop_oneof![
        3 => sealed.prop_map(|o| (Image::Sealed, o)),
        2 => any_terms().prop_map(|t| (Image::Unsealed, Open::Unsealed(t))),
        2 => changed_m().prop_map(|t| (Image::Unsealed, Open::Unsealed(t))),
    ];
    // Now and then the other image than the one the request is for.
    (opened, prop::bool::weighted(0.05), drive()).prop_map(|((image, open), flip, d)| {
        let image = match (flip, image) {
            (false, i) => i,
            (true, Image::Sealed) => Image::Unsealed,
            (true, _) => Image::Sealed,
        };
        let n = match &open {
            Open::M => 3,
            Open::Sealed(t) | Open::Unsealed(t) => t.slots.len(),
        };
        SessionPlan::Enclave {
            image,
            restart: d.restart,
            good_credentials: d.good_credentials,
            open,
            seals: d.seals,
            order: d.order.unwrap_or_else(|| (0..n).collect()),
            chunk: d.chunk,
            net: d.net,
            abort_after: d.abort_after,
            deny: d.deny,
            swap: d.swap,
        }
    })
}

fn legacy_plan() -> impl Strategy<Value = SessionPlan> {
    let query = prop_oneof![
        1 => Just(LegacyQuery::Envelope),
        4 => (
            0usize..4,
            select(vec![AUCTION, OTHER_AUCTION]),
            select(LOTS.to_vec()),
            select(vec![Who::V, Who::H, Who::S]),
            any::<bool>(),
        )
            .prop_map(|(row, auction, lot, buyer, no_context)| LegacyQuery::Bid {
                row,
                auction,
                lot,
                buyer,
                no_context,
            }),
    ];
    proptest::collection::vec(query, 1..4).prop_map(|queries| SessionPlan::Legacy { queries })
}

fn spec_strategy() -> impl Strategy<Value = WorldSpec> {
    (
        any::<bool>(),
        subsequence(vec![Image::Unsealed, Image::Legacy], 0..=2),
        reveal(),
        any::<bool>(),
        prop_oneof![4 => Just(Key::V), 1 => Just(Key::Spare)],
        any::<u64>(),
    )
        .prop_map(|(envelope, trusts, reveal, lots, victim_key, seed)| {
            let format = if envelope {
                FileFormat::Envelope
            } else {
                FileFormat::PerBid
            };
            let pair = if envelope && lots {
                Pair::EnvelopeLots
            } else {
                Pair::Amounts
            };
            let mut s = spec_with(format, &trusts, reveal, pair, victim_key);
            s.seed = seed;
            s
        })
}

fn cases() -> u32 {
    std::env::var("INFOFLOW_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    /// No strategy tells the worlds apart, and no honest buyer's check accepts a result that
    /// is not the sealed auction's.
    #[test]
    fn no_operator_strategy_tells_the_worlds_apart(
        spec in spec_strategy(),
        plans in proptest::collection::vec(
            prop_oneof![8 => enclave_plan(), 1 => legacy_plan()],
            1..5,
        ),
    ) {
        if let Err(e) = check(&spec, &plans) {
            return Err(TestCaseError::fail(e));
        }
    }
}
