//! A parent that breaks the protocol, at the frame level, against a dev enclave over its Unix
//! socket: out-of-order and unknown messages, duplicate and decreasing ids, oversized and empty
//! frames, a session written one byte at a time, a connection dropped mid-frame, a thousand
//! lots in flight at once, a parent that floods frames and never reads the replies, and a
//! second parent while one is connected. The enclave must refuse by name, never panic, never
//! buffer without bound, and keep serving.

mod harness;

use bidding_core::auction::{Disqualified, LotResult, Outcome, Reason, RevealPolicy};
use bidding_core::names::BuyerName;
use bidding_core::wire::{Close, DEFAULT_MAX_FRAME, ErrorCode, FromEnclave, Request, Response};
use bidding_tools::stack::StackOptions;
use harness::*;
use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

const BUYERS: &[&str] = &["Buyer1", "Buyer2", "Buyer3"];

#[test]
fn protocol_violations_are_refused_by_name() {
    let world = World::start(BUYERS, StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let config = world.config("a-abuse", RevealPolicy::None);
    let mut p = world.parent(&enclave);
    let hello = p.hello_request();
    let c = &mut p.client;

    // Before hello: anything else is out of order, and the session goes on.
    c.send(1, Request::Close(Close {}));
    let m = c.expect_error(Some(1), ErrorCode::OutOfOrder, false);
    assert!(m.contains("`close` is not allowed before hello"), "{m}");
    c.send(2, Request::Credentials(world.stack.operator.clone()));
    let m = c.expect_error(Some(2), ErrorCode::OutOfOrder, false);
    assert!(
        m.contains("`credentials` is not allowed before hello"),
        "{m}"
    );
    // An unknown message type, named in the error, with the id salvaged.
    c.send_bytes(&Client::raw_frame(br#"{"id":3,"msg":{"bid":{"lot":"1"}}}"#));
    let m = c.expect_error(Some(3), ErrorCode::MalformedFrame, false);
    assert!(m.contains("unknown variant `bid`"), "{m}");
    // An unknown field, and a frame that is not JSON at all (no id to salvage).
    c.send_bytes(&Client::raw_frame(br#"{"id":4,"msg":{"close":{"now":1}}}"#));
    let m = c.expect_error(Some(4), ErrorCode::MalformedFrame, false);
    assert!(m.contains("unknown field `now`"), "{m}");
    c.send_bytes(&Client::raw_frame(b"\x00\xffnot json"));
    c.expect_error(None, ErrorCode::MalformedFrame, false);
    // A repeated id and a decreasing one.
    c.send(2, hello.clone());
    let m = c.expect_error(Some(2), ErrorCode::DuplicateId, false);
    assert!(
        m.contains("request id 2 is not above the previous id 2"),
        "{m}"
    );
    c.send(1, hello);
    c.expect_error(Some(1), ErrorCode::DuplicateId, false);
    // Now in order (ids need only increase).
    p.next_id = 10;
    p.hello();
    // A second hello, an auction before credentials.
    let id = p.send(p.hello_request());
    let m = p
        .client
        .expect_error(Some(id), ErrorCode::OutOfOrder, false);
    assert!(
        m.contains("`hello` is not allowed before credentials"),
        "{m}"
    );
    let id = p.send(Request::OpenAuction(config.clone()));
    p.client
        .expect_error(Some(id), ErrorCode::OutOfOrder, false);
    p.credentials(&world.stack.operator);
    // Lots and close before an auction is open.
    let id = p.send(lot_bids("1", vec![bid("Buyer1", junk_ciphertext())]));
    let m = p
        .client
        .expect_error(Some(id), ErrorCode::OutOfOrder, false);
    assert!(
        m.contains("`lot` is not allowed before an auction is open"),
        "{m}"
    );
    let id = p.send(Request::Close(Close {}));
    p.client
        .expect_error(Some(id), ErrorCode::OutOfOrder, false);
    p.open(&config);
    // Lot-level refusals: unknown buyer, a buyer twice, no bids, an empty ciphertext.
    let id = p.send(lot_bids("1", vec![bid("Mallory", junk_ciphertext())]));
    let m = p
        .client
        .expect_error(Some(id), ErrorCode::UnknownBuyer, false);
    assert!(m.contains("`Mallory`"), "{m}");
    let id = p.send(lot_bids(
        "1",
        vec![
            bid("Buyer1", junk_ciphertext()),
            bid("Buyer1", junk_ciphertext()),
        ],
    ));
    p.client
        .expect_error(Some(id), ErrorCode::DuplicateBid, false);
    let id = p.send(lot_bids("1", vec![]));
    p.client.expect_error(Some(id), ErrorCode::EmptyLot, false);
    let id = p.send(lot_bids("1", vec![bid("Buyer1", vec![])]));
    p.client
        .expect_error(Some(id), ErrorCode::MalformedFrame, false);
    // A lot of garbage that KMS refuses, then the same lot id again.
    let r = p.lot(lot_bids("1", vec![bid("Buyer2", junk_ciphertext())]));
    let expected = LotResult {
        lot: lot("1"),
        outcome: Outcome::NoValidBid,
        disqualified: vec![Disqualified {
            buyer: BuyerName::new("Buyer2").unwrap(),
            reason: Reason::Undecryptable,
        }],
    };
    assert_eq!(r, expected);
    let id = p.send(lot_bids("1", vec![bid("Buyer3", junk_ciphertext())]));
    p.client
        .expect_error(Some(id), ErrorCode::DuplicateLot, false);
    // A hello in the middle of an auction.
    let id = p.send(p.hello_request());
    let m = p
        .client
        .expect_error(Some(id), ErrorCode::OutOfOrder, false);
    assert!(m.contains("while an auction is open"), "{m}");
    // A close right behind a lot (one write, so one read): the lot is still being opened.
    let (lot_id, mut wire) = p.frame(lot_bids("2", vec![bid("Buyer3", junk_ciphertext())]));
    let (close_id, close) = p.frame(Request::Close(Close {}));
    wire.extend_from_slice(&close);
    p.client.send_bytes(&wire);
    let m = p
        .client
        .expect_error(Some(close_id), ErrorCode::OutOfOrder, false);
    assert!(
        m.contains("close while 1 lot(s) are still being opened"),
        "{m}"
    );
    let second = match p.client.recv() {
        FromEnclave {
            id,
            msg: Response::Lot(r),
        } if id == Some(lot_id) => r,
        other => panic!("expected lot 2's outcome, got {other:?}"),
    };
    assert_eq!(second.lot, lot("2"));
    assert_eq!(second.outcome, Outcome::NoValidBid);
    // None of it disturbed the auction: it closes with its two lots.
    p.close(&config, &[expected, second]);
    enclave.wait_sessions_ended(1);
    assert!(!enclave.log_text().contains("panicked"));
}

#[test]
fn oversized_and_empty_frames_end_the_session_unread() {
    let world = World::start(BUYERS, StackOptions::default());
    let mut enclave = world.enclave("enclave", &[]);
    let rss_before = enclave.peak_rss_kib();
    let virtual_before = enclave.peak_virtual_kib();

    // One byte over the limit, announced after a valid hello: refused by its prefix alone.
    let mut p = world.parent(&enclave);
    p.hello();
    p.client
        .send_bytes(&((DEFAULT_MAX_FRAME as u32 + 1).to_be_bytes()));
    let m = p.client.expect_error(None, ErrorCode::FrameTooLarge, true);
    assert_eq!(
        m,
        format!(
            "frame 2 announces {} bytes, over the limit of {DEFAULT_MAX_FRAME}",
            DEFAULT_MAX_FRAME + 1
        )
    );
    p.client.expect_eof();
    // The enclave no longer reads: the body cannot be delivered.
    let body = vec![b' '; DEFAULT_MAX_FRAME + 1];
    assert!(
        p.client.stream.write_all(&body).is_err(),
        "the enclave accepted the body of a refused frame"
    );
    enclave.wait_sessions_ended(1);

    // 4 GiB announced: if the enclave reserved memory for it, it would show (or die).
    let mut c = Client::connect(&enclave);
    c.send_bytes(&[0xff, 0xff, 0xff, 0xff, b'{']);
    let m = c.expect_error(None, ErrorCode::FrameTooLarge, true);
    assert!(m.contains("announces 4294967295 bytes"), "{m}");
    c.expect_eof();
    enclave.wait_sessions_ended(2);

    // An empty frame: framing is lost, the session ends.
    let mut c = Client::connect(&enclave);
    c.send_bytes(&[0, 0, 0, 0]);
    let m = c.expect_error(None, ErrorCode::MalformedFrame, true);
    assert_eq!(m, "frame 1 is empty");
    c.expect_eof();
    enclave.wait_sessions_ended(3);

    enclave.assert_running();
    let grown = enclave.peak_rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 64 * 1024,
        "peak memory grew by {grown} KiB while refusing frames"
    );
    // Not even reserved: a buffer for the 4 GiB frame would show in the address space.
    let reserved = enclave.peak_virtual_kib().saturating_sub(virtual_before);
    println!("refusing frames: peak RSS +{grown} KiB, peak virtual +{reserved} KiB");
    assert!(
        reserved < 1024 * 1024,
        "peak virtual memory grew by {reserved} KiB while refusing frames"
    );
    // Still serving.
    let mut p = world.parent(&enclave);
    p.hello();
}

#[test]
fn a_whole_session_one_byte_at_a_time() {
    let world = World::start(BUYERS, StackOptions::default());
    // One bid in flight at most: the reader stops and starts for every bid.
    let enclave = world.enclave("enclave", &["--max-pending-bids", "1"]);
    let sealer = world.sealer();
    let a = "a-bytes";
    let config = world.config(a, RevealPolicy::WinningBid);
    let mut p = world.parent(&enclave);

    let step = |p: &mut Parent, msg: Request| -> Response {
        let (id, frame) = p.frame(msg);
        p.client.send_bytewise(&frame);
        let reply = p.client.recv();
        assert_eq!(reply.id, Some(id));
        reply.msg
    };
    let hello = p.hello_request();
    let reply = step(&mut p, hello);
    p.check_hello(reply);
    assert!(matches!(
        step(&mut p, Request::Credentials(world.stack.operator.clone())),
        Response::Credentials(_)
    ));
    assert!(matches!(
        step(&mut p, Request::OpenAuction(config.clone())),
        Response::AuctionOpened(_)
    ));
    let mut results = Vec::new();
    for (l, amounts) in [
        ("1", ["10", "20.5", "20.49"]),
        ("2", ["7", "7.00", "6.99"]),
        ("3", ["x", "1", "0"]),
    ] {
        let bids = BUYERS
            .iter()
            .zip(amounts)
            .map(|(b, amount)| bid(b, sealer.seal(b, amount, a, l)))
            .collect();
        match step(&mut p, lot_bids(l, bids)) {
            Response::Lot(r) => results.push(r),
            other => panic!("lot {l}: {other:?}"),
        }
    }
    let (id, frame) = p.frame(Request::Close(Close {}));
    p.client.send_bytewise(&frame);
    let closed = match p.client.recv() {
        FromEnclave {
            id: got,
            msg: Response::Closed(c),
        } if got == Some(id) => c,
        other => panic!("expected closed: {other:?}"),
    };
    let csv = p.check_closed(&closed, &config, &results);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result,Price\n1,Buyer2 Wins,20.50\n2,\"Tie: Buyer1, Buyer2\",7\n3,Buyer2 Wins,1\n"
    );
    p.client.expect_eof();
}

#[test]
fn a_connection_dropped_mid_frame_then_a_new_session() {
    let world = World::start(BUYERS, StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let a = "a-drop";
    let config = world.config(a, RevealPolicy::None);

    // Dropped inside the length prefix of the first frame.
    let mut c = Client::connect(&enclave);
    c.send_bytes(&[0, 0]);
    drop(c);
    enclave.wait_sessions_ended(1);

    // Dropped inside a lot frame while another lot is being opened.
    let mut p = world.parent(&enclave);
    p.start(&world.stack.operator, &config);
    p.send(lot_bids(
        "1",
        vec![bid("Buyer1", sealer.seal("Buyer1", "5", a, "1"))],
    ));
    let (_, frame) = p.frame(lot_bids(
        "2",
        vec![bid("Buyer1", sealer.seal("Buyer1", "6", a, "2"))],
    ));
    p.client.send_bytes(&frame[..frame.len() / 2]);
    drop(p);
    enclave.wait_sessions_ended(2);
    let log = enclave.log_text();
    assert!(
        log.contains(
            "parent disconnected: connection closed inside frame 1 (2 of 4 bytes received)"
        ),
        "{log}"
    );
    assert!(
        log.contains("parent disconnected: connection closed inside frame 5"),
        "{log}"
    );

    // A new parent runs an auction as if nothing happened (another auction id: the first
    // auction's lot 1 ciphertext is spent).
    let a2 = "a-drop-2";
    let config2 = world.config(a2, RevealPolicy::None);
    let mut p = world.parent(&enclave);
    p.start(&world.stack.operator, &config2);
    let r = p.lot(lot_bids(
        "1",
        vec![
            bid("Buyer1", sealer.seal("Buyer1", "5", a2, "1")),
            bid("Buyer3", sealer.seal("Buyer3", "8", a2, "1")),
        ],
    ));
    assert_eq!(
        r.outcome,
        Outcome::Winner {
            buyer: BuyerName::new("Buyer3").unwrap(),
            price: None
        }
    );
    p.close(&config2, &[r]);
}

#[test]
fn a_thousand_lots_in_flight() {
    const LOTS: usize = 1000;
    let world = World::start(BUYERS, StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let a = "a-thousand";
    let config = world.config(a, RevealPolicy::None);

    // Lot i: one bid by buyer i mod 3 of amount i; every seventh bid is not a number.
    let plan: Vec<(String, String, String)> = (0..LOTS)
        .map(|i| {
            let amount = if i % 7 == 3 {
                format!("{i}x")
            } else {
                i.to_string()
            };
            (BUYERS[i % 3].to_owned(), amount, format!("lot-{i}"))
        })
        .collect();
    let started = Instant::now();
    let ciphertexts = sealer.seal_many(a, &plan, 4);
    let sealed_in = started.elapsed();

    let mut p = world.parent(&enclave);
    p.start(&world.stack.operator, &config);
    let mut wire = Vec::new();
    let mut expected = HashMap::new();
    for ((buyer, amount, l), ct) in plan.iter().zip(ciphertexts) {
        let (id, frame) = p.frame(lot_bids(l, vec![bid(buyer, ct)]));
        wire.extend_from_slice(&frame);
        let name = BuyerName::new(buyer.as_str()).unwrap();
        let r = if amount.ends_with('x') {
            LotResult {
                lot: lot(l),
                outcome: Outcome::NoValidBid,
                disqualified: vec![Disqualified {
                    buyer: name,
                    reason: Reason::InvalidAmount,
                }],
            }
        } else {
            LotResult {
                lot: lot(l),
                outcome: Outcome::Winner {
                    buyer: name,
                    price: None,
                },
                disqualified: vec![],
            }
        };
        expected.insert(id, r);
    }
    // Everything at once, from another thread, while this one reads the answers.
    let started = Instant::now();
    let mut writer = p.client.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&wire));
    let mut results = Vec::new();
    for _ in 0..LOTS {
        let reply = p.client.recv();
        let id = reply.id.expect("lot replies carry their id");
        let want = expected
            .remove(&id)
            .unwrap_or_else(|| panic!("unexpected or repeated reply {id}: {reply:?}"));
        match reply.msg {
            Response::Lot(r) => {
                assert_eq!(r, want, "request {id}");
                results.push(r);
            }
            other => panic!("request {id}: {other:?}"),
        }
    }
    sender.join().unwrap().unwrap();
    let opened_in = started.elapsed();
    assert!(expected.is_empty());
    p.close(&config, &results);
    println!(
        "{LOTS} lots: sealed in {:.1} s, opened and decided in {:.1} s",
        sealed_in.as_secs_f64(),
        opened_in.as_secs_f64()
    );
}

#[test]
fn a_second_parent_is_told_busy() {
    let world = World::start(BUYERS, StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let mut first = world.parent(&enclave);
    first.hello();

    let mut second = Client::connect(&enclave);
    let m = second.expect_error(None, ErrorCode::Busy, true);
    assert!(m.contains("one at a time"), "{m}");
    second.expect_eof();

    // The first session is undisturbed.
    first.credentials(&world.stack.operator);
    drop(first);
    enclave.wait_sessions_ended(1);
    // And the enclave takes the next parent once the first has gone.
    let mut third = world.parent(&enclave);
    third.hello();
}

#[test]
fn a_parent_that_floods_and_never_reads_is_held_back() {
    const FLOOD: usize = 512 * 1024 * 1024;
    let world = World::start(BUYERS, StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let config = world.config("a-flood", RevealPolicy::None);
    let mut p = world.parent(&enclave);
    p.start(&world.stack.operator, &config);
    let rss_before = enclave.peak_rss_kib();
    // Small frames that each earn a longer error reply (id 1 is not above the last id), and
    // the replies are never read: the enclave soon blocks writing them, and must then stop
    // reading too rather than buffer whatever arrives.
    let frame = Client::raw_frame(br#"{"id":1,"msg":{"close":{}}}"#);
    let chunk: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * 32 * 1024)
        .collect();
    let mut writer = p.client.stream.try_clone().unwrap();
    // Writing stalls for a second once the enclave stops reading: that ends the flood.
    writer
        .set_write_timeout(Some(std::time::Duration::from_secs(1)))
        .unwrap();
    let mut sent = 0usize;
    while sent < FLOOD {
        match writer.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "{e}"
                );
                break;
            }
        }
    }
    let grown = enclave.peak_rss_kib().saturating_sub(rss_before);
    println!(
        "flood: the enclave took {} KiB before pushing back; its peak memory grew by {grown} KiB",
        sent >> 10
    );
    assert!(sent < 32 << 20, "the enclave read {} MiB", sent >> 20);
    assert!(
        grown < 32 << 10,
        "the enclave's peak memory grew by {grown} KiB"
    );
    // Hanging up frees it at once, and it serves the next parent.
    drop(writer);
    drop(p);
    enclave.wait_sessions_ended(1);
    let mut next = world.parent(&enclave);
    next.hello();
}
