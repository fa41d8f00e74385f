//! A parent that breaks the protocol (version 2: manifest, seals, whole files, result at
//! close), at the frame level, against a dev enclave over its Unix socket: out-of-order and
//! unknown messages in every phase, duplicate and decreasing ids, oversized and empty frames,
//! a session written one byte at a time, a connection dropped mid-frame, a thousand lots in
//! flight at once, a parent that floods frames and never reads the replies, parents that
//! connect while one is connected, and every way a hostile parent can bend the sealed flow
//! (seals it did not get from KMS, files that are not the manifest's, files left out, a second
//! manifest, replays). The enclave must refuse by name, never panic, never buffer without
//! bound, keep serving — and send nothing about any lot before close.

#[path = "../../test-support/harness/mod.rs"]
mod harness;

use bidding_core::auction::RevealPolicy;
use bidding_core::config::{AuctionConfig, Mode};
use bidding_core::names::BuyerName;
use bidding_core::wire::{
    Close, DEFAULT_MAX_FRAME, ErrorCode, FrameDecoder, FromEnclave, Hello, OpenSealed, OutputFile,
    Request, Response, Seal, decode_response,
};
use bidding_standins::stack::StackOptions;
use harness::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

const BUYERS: &[&str] = &["Buyer1", "Buyer2", "Buyer3"];

fn name(n: &str) -> BuyerName {
    BuyerName::new(n).unwrap()
}

fn seal_request(buyer: &str, ciphertext: Vec<u8>) -> Request {
    Request::Seal(Seal {
        buyer: name(buyer),
        ciphertext,
    })
}

fn open_sealed_request(manifest: &[u8]) -> Request {
    Request::OpenSealed(OpenSealed {
        manifest: manifest.to_vec(),
    })
}

/// A per-bid file of `buyer`'s correct bids (lot, amount) in `auction`.
fn bids(sealer: &Sealer, auction: &str, buyer: &str, rows: &[(&str, &str)]) -> Vec<u8> {
    let rows: Vec<(&str, Vec<u8>)> = rows
        .iter()
        .map(|(lot, amount)| (*lot, sealer.seal(buyer, amount, auction, lot)))
        .collect();
    bid_file(&rows)
}

/// A sealed auction ready to run: its terms, every buyer's file, the manifest over them and
/// every buyer's seal of it.
struct Sealed {
    config: AuctionConfig,
    files: Vec<Vec<u8>>,
    manifest: Vec<u8>,
    seals: Vec<Vec<u8>>,
}

impl Sealed {
    /// `files` in the buyers' order.
    fn new(world: &World, sealer: &Sealer, config: AuctionConfig, files: Vec<Vec<u8>>) -> Sealed {
        let manifest = world.manifest(&config, &files);
        let seals = BUYERS
            .iter()
            .map(|b| sealer.seal_manifest(b, &manifest))
            .collect();
        Sealed {
            config,
            files,
            manifest,
            seals,
        }
    }

    /// Every buyer bids on lot 1 (Buyer3 highest) and lot 2.
    fn simple(world: &World, sealer: &Sealer, auction: &str) -> Sealed {
        let config = world.config(auction, RevealPolicy::None);
        let files = BUYERS
            .iter()
            .enumerate()
            .map(|(i, b)| {
                bids(
                    sealer,
                    auction,
                    b,
                    &[("1", &format!("{}", 10 + i)), ("2", &format!("{}", 30 - i))],
                )
            })
            .collect();
        Sealed::new(world, sealer, config, files)
    }

    fn seals(&self) -> Vec<(&str, Vec<u8>)> {
        BUYERS.iter().copied().zip(self.seals.clone()).collect()
    }

    fn file(&self, buyer: usize) -> &[u8] {
        &self.files[buyer]
    }

    /// hello, credentials, the manifest and every seal, each accepted.
    fn start(&self, world: &World, p: &mut Parent) {
        p.start_sealed(&world.stack.operator, &self.manifest, &self.seals());
    }

    /// Every file, then close; returns (output.csv, output.json).
    fn finish(&self, p: &mut Parent) -> (Vec<u8>, Vec<u8>) {
        for (b, f) in BUYERS.iter().zip(&self.files) {
            p.send_file(b, f);
        }
        p.close(Mode::Sealed, &self.manifest)
    }
}

/// Every frame the enclave sent on a connection, decoded, in order.
fn sent_frames(received: &[u8]) -> Vec<FromEnclave> {
    let mut decoder = FrameDecoder::new(64 << 20);
    let mut input = received;
    let mut frames = Vec::new();
    while let Some(frame) = decoder.decode(&mut input).expect("the enclave's framing") {
        frames.push(decode_response(frames.len() as u64 + 1, &frame).unwrap());
    }
    assert!(input.is_empty() && decoder.is_idle(), "a partial frame");
    frames
}

/// Nothing about any lot leaves before close: every frame before the result is a hello,
/// credentials, auction_opened, seal_accepted, chunk_accepted or error reply; then (if the
/// auction closed) only result chunks, one `closed`, and nothing after it. Returns whether
/// the result came.
#[track_caller]
fn assert_nothing_before_close(received: &[u8]) -> bool {
    let frames = sent_frames(received);
    let before = frames
        .iter()
        .position(|f| matches!(f.msg, Response::ResultChunk(_) | Response::Closed(_)))
        .unwrap_or(frames.len());
    for f in &frames[..before] {
        assert!(
            matches!(
                f.msg,
                Response::Hello(_)
                    | Response::Credentials(_)
                    | Response::AuctionOpened(_)
                    | Response::SealAccepted(_)
                    | Response::ChunkAccepted(_)
                    | Response::Error(_)
            ),
            "sent before the result: {f:?}"
        );
    }
    let result = &frames[before..];
    if result.is_empty() {
        return false;
    }
    let (closed, chunks) = result.split_last().unwrap();
    assert!(
        matches!(closed.msg, Response::Closed(_)),
        "the result ends with `closed`, and nothing follows it: {closed:?}"
    );
    for c in chunks {
        assert!(
            matches!(c.msg, Response::ResultChunk(_)),
            "inside the result: {c:?}"
        );
        assert_eq!(c.id, closed.id, "result chunks answer the close");
    }
    true
}

/// The next frame is this fatal error; then the enclave hangs up, having sent nothing about
/// any lot. Returns the error's message.
#[track_caller]
fn expect_fatal(p: &mut Parent, id: u64, code: ErrorCode) -> String {
    let m = p.client.expect_error(Some(id), code, true);
    p.client.expect_eof();
    assert!(
        !assert_nothing_before_close(&p.client.received),
        "a result after a fatal error"
    );
    m
}

/// The next frame is this non-fatal error; returns its message.
#[track_caller]
fn expect_refused(p: &mut Parent, id: u64, code: ErrorCode, says: &str) {
    let m = p.client.expect_error(Some(id), code, false);
    assert!(m.contains(says), "{m:?} does not say {says:?}");
}

/// Sends `msg`; it must be refused as out of order, the session going on.
#[track_caller]
fn out_of_order(p: &mut Parent, msg: Request, says: &str) {
    let kind = msg.kind();
    let id = p.send(msg);
    expect_refused(
        p,
        id,
        ErrorCode::OutOfOrder,
        &format!("`{kind}` is not allowed {says}"),
    );
}

/// Resets the enclave's peak resident memory (VmHWM) to what it holds now, and returns that:
/// a peak read afterwards shows what happened since. Without it every peak is the start-up's:
/// the dev enclave's software NSM reads its whole (debug, about 160 MiB) binary to measure
/// PCR0, which hides any later growth below that.
fn reset_peak_rss(enclave: &Enclave) -> u64 {
    std::fs::write(format!("/proc/{}/clear_refs", enclave.pid()), "5")
        .expect("resetting the enclave's peak RSS (/proc/PID/clear_refs)");
    enclave.peak_rss_kib()
}

fn parse_json(json: &[u8]) -> Value {
    serde_json::from_slice(json).unwrap()
}

#[test]
fn protocol_violations_are_refused_by_name() {
    let world = World::start(BUYERS, StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let a = "a-abuse";
    // Row-level faults inside sealed files (the premise of the old per-lot refusals — a buyer
    // twice in a lot, an empty lot, an empty ciphertext, a lot id sent twice — is gone with
    // per-lot messages; their equivalents are per-row set-asides, counted in the result):
    // Buyer1 names lot 1 twice (duplicate_lot: neither row counts) and has two malformed rows;
    // Buyer2's lot 1 is junk KMS refuses (undecryptable).
    let mut f1 = bids(
        &sealer,
        a,
        "Buyer1",
        &[("1", "10"), ("1", "11"), ("2", "5")],
    );
    f1.extend_from_slice(b"3,\n4,not base64!\n");
    let f2 = bid_file(&[
        ("1", junk_ciphertext()),
        ("2", sealer.seal("Buyer2", "7", a, "2")),
    ]);
    let f3 = bids(&sealer, a, "Buyer3", &[("2", "7.00")]);
    let auction = Sealed::new(
        &world,
        &sealer,
        world.config(a, RevealPolicy::None),
        vec![f1, f2, f3],
    );
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
    // Unknown message types (protocol 1's `open_auction` and `lot`), named in the error, with
    // the id salvaged.
    c.send_bytes(&Client::raw_frame(
        br#"{"id":3,"msg":{"lot":{"lot":"1","bids":[]}}}"#,
    ));
    let m = c.expect_error(Some(3), ErrorCode::MalformedFrame, false);
    assert!(m.contains("unknown variant `lot`"), "{m}");
    c.send_bytes(&Client::raw_frame(br#"{"id":4,"msg":{"open_auction":{}}}"#));
    let m = c.expect_error(Some(4), ErrorCode::MalformedFrame, false);
    assert!(m.contains("unknown variant `open_auction`"), "{m}");
    // Unknown fields (a lot smuggled into a seal; a field in close), a chunk spelt as JSON (it
    // is a bulk frame only), a bulk frame with a flag nobody defined, and a frame that is
    // neither (no id to salvage).
    c.send_bytes(&Client::raw_frame(
        br#"{"id":5,"msg":{"seal":{"buyer":"Buyer1","ciphertext":"AAAA","lot":"1"}}}"#,
    ));
    let m = c.expect_error(Some(5), ErrorCode::MalformedFrame, false);
    assert!(m.contains("unknown field `lot`"), "{m}");
    c.send_bytes(&Client::raw_frame(br#"{"id":6,"msg":{"close":{"now":1}}}"#));
    let m = c.expect_error(Some(6), ErrorCode::MalformedFrame, false);
    assert!(m.contains("unknown field `now`"), "{m}");
    c.send_bytes(&Client::raw_frame(
        br#"{"id":7,"msg":{"file_chunk":{"buyer":"Buyer1","data":"AAAA","last":true}}}"#,
    ));
    let m = c.expect_error(Some(7), ErrorCode::MalformedFrame, false);
    assert!(m.contains("unknown variant `file_chunk`"), "{m}");
    c.send_bytes(&Client::raw_frame(
        b"\x01\x80\0\0\0\0\0\0\0\x08\x06Buyer1AAAA",
    ));
    let m = c.expect_error(Some(8), ErrorCode::MalformedFrame, false);
    assert!(m.contains("file chunk: unknown flags 0x80"), "{m}");
    c.send_bytes(&Client::raw_frame(b"\x00\xffnot json"));
    c.expect_error(None, ErrorCode::MalformedFrame, false);
    // A repeated id and a decreasing one (frames that could not be read do not count: the
    // last id is 2).
    c.send(2, hello.clone());
    let m = c.expect_error(Some(2), ErrorCode::DuplicateId, false);
    assert!(
        m.contains("request id 2 is not above the previous id 2"),
        "{m}"
    );
    c.send(1, hello);
    c.expect_error(Some(1), ErrorCode::DuplicateId, false);
    // Every other request before hello.
    p.next_id = 10;
    out_of_order(
        &mut p,
        open_sealed_request(&auction.manifest),
        "before hello",
    );
    out_of_order(
        &mut p,
        Request::OpenUnsealed(auction.config.clone()),
        "before hello",
    );
    out_of_order(
        &mut p,
        seal_request("Buyer1", auction.seals[0].clone()),
        "before hello",
    );
    out_of_order(
        &mut p,
        file_chunk("Buyer1", auction.file(0).to_vec(), true),
        "before hello",
    );
    // Now in order (ids need only increase).
    p.next_id = 20;
    p.hello();
    // Before credentials: a second hello, an open of either kind, a seal, a file, close.
    let hello = p.hello_request();
    out_of_order(&mut p, hello.clone(), "before credentials");
    out_of_order(
        &mut p,
        open_sealed_request(&auction.manifest),
        "before credentials",
    );
    out_of_order(
        &mut p,
        Request::OpenUnsealed(auction.config.clone()),
        "before credentials",
    );
    out_of_order(
        &mut p,
        seal_request("Buyer1", auction.seals[0].clone()),
        "before credentials",
    );
    out_of_order(
        &mut p,
        file_chunk("Buyer1", auction.file(0).to_vec(), true),
        "before credentials",
    );
    out_of_order(&mut p, Request::Close(Close {}), "before credentials");
    p.credentials(&world.stack.operator);
    // Before an auction is open: seals, files, close, hello.
    let ready = "before an auction is open";
    out_of_order(
        &mut p,
        seal_request("Buyer1", auction.seals[0].clone()),
        ready,
    );
    out_of_order(
        &mut p,
        file_chunk("Buyer1", auction.file(0).to_vec(), true),
        ready,
    );
    out_of_order(&mut p, Request::Close(Close {}), ready);
    out_of_order(&mut p, hello.clone(), ready);
    // Credentials may be refreshed in any phase up to the files.
    p.credentials(&world.stack.operator);
    p.open_sealed(&auction.manifest);
    // While seals are awaited: a second open (of either kind), a file chunk before the seals
    // are accepted, close before any file, a hello — each before the first seal and again
    // with two of three seals in.
    let sealing = "before every buyer's seal is accepted";
    for round in 0..2 {
        out_of_order(&mut p, open_sealed_request(&auction.manifest), sealing);
        out_of_order(
            &mut p,
            Request::OpenUnsealed(auction.config.clone()),
            sealing,
        );
        out_of_order(
            &mut p,
            file_chunk("Buyer1", auction.file(0).to_vec(), true),
            sealing,
        );
        out_of_order(&mut p, Request::Close(Close {}), sealing);
        out_of_order(&mut p, hello.clone(), sealing);
        if round == 0 {
            for (b, seal) in BUYERS.iter().zip(&auction.seals).take(2) {
                match p.call(seal_request(b, seal.clone())) {
                    Response::SealAccepted(s) => assert_eq!(s.buyer.as_str(), *b),
                    other => panic!("expected seal_accepted, got {other:?}"),
                }
            }
        }
    }
    p.credentials(&world.stack.operator);
    match p.call(seal_request("Buyer3", auction.seals[2].clone())) {
        Response::SealAccepted(s) => assert_eq!(s.buyer.as_str(), "Buyer3"),
        other => panic!("expected seal_accepted, got {other:?}"),
    }
    // While files are received: a second open, another seal, a hello; close while a file is
    // half sent.
    let files = "while bid files are being received";
    out_of_order(&mut p, open_sealed_request(&auction.manifest), files);
    out_of_order(&mut p, Request::OpenUnsealed(auction.config.clone()), files);
    out_of_order(
        &mut p,
        seal_request("Buyer1", auction.seals[0].clone()),
        files,
    );
    out_of_order(&mut p, hello.clone(), files);
    let f1 = auction.file(0);
    let half = f1.len() / 2;
    match p.call(file_chunk("Buyer1", f1[..half].to_vec(), false)) {
        Response::ChunkAccepted(a) => assert_eq!(a.received, half as u64),
        other => panic!("expected chunk_accepted, got {other:?}"),
    }
    let id = p.send(Request::Close(Close {}));
    expect_refused(
        &mut p,
        id,
        ErrorCode::OutOfOrder,
        "close while a file is being received",
    );
    match p.call(file_chunk("Buyer1", f1[half..].to_vec(), true)) {
        Response::ChunkAccepted(a) => assert_eq!(a.received, f1.len() as u64),
        other => panic!("expected chunk_accepted, got {other:?}"),
    }
    p.send_file("Buyer2", auction.file(1));
    p.credentials(&world.stack.operator);
    // A close right behind the last file (one write, so one read): its bids are still being
    // opened, so the close is refused and the file is answered after it.
    let (chunk_id, mut wire) = p.frame(file_chunk("Buyer3", auction.file(2).to_vec(), true));
    let (close_id, close) = p.frame(Request::Close(Close {}));
    wire.extend_from_slice(&close);
    p.client.send_bytes(&wire);
    expect_refused(
        &mut p,
        close_id,
        ErrorCode::OutOfOrder,
        "close while a file is being received or bids are being opened",
    );
    match p.client.recv() {
        FromEnclave {
            id,
            msg: Response::ChunkAccepted(a),
        } if id == Some(chunk_id) => assert_eq!(a.buyer.as_str(), "Buyer3"),
        other => panic!("expected Buyer3's last chunk accepted, got {other:?}"),
    }
    // A close and a hello in one write: the hello arrives after close and is refused; the
    // result follows, whole.
    let (close_id, mut wire) = p.frame(Request::Close(Close {}));
    let (hello_id, hello) = p.frame(hello);
    wire.extend_from_slice(&hello);
    p.client.send_bytes(&wire);
    expect_refused(
        &mut p,
        hello_id,
        ErrorCode::OutOfOrder,
        "`hello` is not allowed after close",
    );
    let (mut csv, mut json) = (Vec::new(), Vec::new());
    let closed = loop {
        let reply = p.client.recv();
        assert_eq!(reply.id, Some(close_id), "{reply:?}");
        match reply.msg {
            Response::ResultChunk(c) if c.file == OutputFile::Csv => csv.extend(c.data),
            Response::ResultChunk(c) => json.extend(c.data),
            Response::Closed(c) => break c,
            other => panic!("expected the result, got {other:?}"),
        }
    };
    p.check_closed(&closed, Mode::Sealed, &auction.manifest, &csv, &json);
    p.client.expect_eof();
    assert!(assert_nothing_before_close(&p.client.received));
    // None of it disturbed the auction, and the row-level faults are set aside and counted.
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result\n1,No valid bids\n2,\"Tie: Buyer2, Buyer3\"\n"
    );
    let json = parse_json(&json);
    assert_eq!(
        json["set_aside"],
        json!([
            {"buyer": "Buyer1", "reason": "duplicate_lot", "count": 1,
                "lots": {"first": ["1"], "more": 0}},
            {"buyer": "Buyer1", "reason": "malformed_row", "count": 2},
            {"buyer": "Buyer2", "reason": "undecryptable", "count": 1,
                "lots": {"first": ["1"], "more": 0}},
        ])
    );
    assert_eq!(
        json["lots"],
        json!([
            {"lot": "1", "result": "no_valid_bid", "disqualified": [
                {"buyer": "Buyer1", "reason": "duplicate_lot"},
                {"buyer": "Buyer2", "reason": "undecryptable"},
            ]},
            {"lot": "2", "result": "tie", "tied": ["Buyer2", "Buyer3"]},
        ])
    );
    enclave.wait_sessions_ended(1);
    assert!(!enclave.log_text().contains("panicked"));
}

/// A hostile parent bending the sealed flow: each attempt ends the session with a named error
/// and nothing about any lot; the enclave then serves the next parent.
#[test]
fn sealed_flow_abuse_ends_the_session_and_releases_nothing() {
    let world = World::start(BUYERS, StackOptions::default());
    let mut enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let auction = Sealed::simple(&world, &sealer, "a-sealed-abuse");
    let operator = &world.stack.operator;
    let mut sessions = 0;
    let mut session = |enclave: &Enclave, what: &str, run: &mut dyn FnMut(&mut Parent)| {
        let mut p = world.parent(enclave);
        run(&mut p);
        sessions += 1;
        enclave.wait_sessions_ended(sessions);
        println!("session {sessions}, {what}: done");
    };

    session(&enclave, "protocol 1", &mut |p: &mut Parent| {
        let id = p.send(Request::Hello(Hello {
            protocol: 1,
            nonce: p.nonce.clone(),
        }));
        let m = expect_fatal(p, id, ErrorCode::UnsupportedProtocol);
        assert!(m.contains("protocol version 1 is not supported"), "{m}");
    });
    session(
        &enclave,
        "a manifest that is not canonical",
        &mut |p: &mut Parent| {
            p.hello();
            p.credentials(operator);
            // The same manifest, pretty-printed: its digest would name another document.
            let pretty = serde_json::to_vec_pretty(&parse_json(&auction.manifest)).unwrap();
            let id = p.send(open_sealed_request(&pretty));
            let m = expect_fatal(p, id, ErrorCode::InvalidManifest);
            assert!(m.contains("not in canonical form"), "{m}");
        },
    );
    session(
        &enclave,
        "a manifest with a byte appended",
        &mut |p: &mut Parent| {
            p.hello();
            p.credentials(operator);
            let mut m = auction.manifest.clone();
            m.push(b' ');
            let id = p.send(open_sealed_request(&m));
            expect_fatal(p, id, ErrorCode::InvalidManifest);
        },
    );
    session(&enclave, "a seal from a stranger", &mut |p: &mut Parent| {
        p.hello();
        p.credentials(operator);
        p.open_sealed(&auction.manifest);
        let id = p.send(seal_request("Mallory", auction.seals[0].clone()));
        let m = expect_fatal(p, id, ErrorCode::UnknownBuyer);
        assert!(m.contains("`Mallory`"), "{m}");
    });
    session(
        &enclave,
        "a seal KMS never made (junk)",
        &mut |p: &mut Parent| {
            p.hello();
            p.credentials(operator);
            p.open_sealed(&auction.manifest);
            let id = p.send(seal_request("Buyer1", junk_ciphertext()));
            let m = expect_fatal(p, id, ErrorCode::SealRefused);
            assert!(m.contains("`Buyer1`'s seal does not decrypt"), "{m}");
        },
    );
    session(&enclave, "an empty seal", &mut |p: &mut Parent| {
        p.hello();
        p.credentials(operator);
        p.open_sealed(&auction.manifest);
        let id = p.send(seal_request("Buyer1", vec![]));
        expect_fatal(p, id, ErrorCode::SealRefused);
    });
    session(
        &enclave,
        "Buyer2's seal passed off as Buyer1's",
        &mut |p: &mut Parent| {
            p.hello();
            p.credentials(operator);
            p.open_sealed(&auction.manifest);
            let id = p.send(seal_request("Buyer1", auction.seals[1].clone()));
            expect_fatal(p, id, ErrorCode::SealRefused);
        },
    );
    session(
        &enclave,
        "a seal made with another buyer's key",
        &mut |p: &mut Parent| {
            p.hello();
            p.credentials(operator);
            p.open_sealed(&auction.manifest);
            let forged = sealer.seal_manifest_as("Buyer2", "Buyer1", &auction.manifest);
            let id = p.send(seal_request("Buyer1", forged));
            expect_fatal(p, id, ErrorCode::SealRefused);
        },
    );
    session(
        &enclave,
        "a seal of another manifest",
        &mut |p: &mut Parent| {
            // Buyer1 sealed a manifest of the same auction with another reveal policy.
            let other = world.manifest(
                &world.config("a-sealed-abuse", RevealPolicy::WinningBid),
                &auction.files,
            );
            assert_ne!(other, auction.manifest);
            let seal = sealer.seal_manifest("Buyer1", &other);
            p.hello();
            p.credentials(operator);
            p.open_sealed(&auction.manifest);
            let id = p.send(seal_request("Buyer1", seal));
            expect_fatal(p, id, ErrorCode::SealRefused);
        },
    );
    session(&enclave, "a duplicate seal", &mut |p: &mut Parent| {
        p.hello();
        p.credentials(operator);
        p.open_sealed(&auction.manifest);
        match p.call(seal_request("Buyer1", auction.seals[0].clone())) {
            Response::SealAccepted(_) => {}
            other => panic!("{other:?}"),
        }
        let id = p.send(seal_request("Buyer1", auction.seals[0].clone()));
        let m = expect_fatal(p, id, ErrorCode::DuplicateSeal);
        assert!(m.contains("`Buyer1` sent a second seal"), "{m}");
    });
    session(&enclave, "a file from a stranger", &mut |p: &mut Parent| {
        auction.start(&world, p);
        let id = p.send(file_chunk("Mallory", auction.file(0).to_vec(), true));
        expect_fatal(p, id, ErrorCode::UnknownBuyer);
    });
    session(
        &enclave,
        "a chunk of a second file while the first is unfinished",
        &mut |p: &mut Parent| {
            auction.start(&world, p);
            let f1 = auction.file(0);
            match p.call(file_chunk("Buyer1", f1[..10].to_vec(), false)) {
                Response::ChunkAccepted(a) => assert_eq!(a.received, 10),
                other => panic!("{other:?}"),
            }
            let id = p.send(file_chunk("Buyer2", auction.file(1).to_vec(), true));
            let m = expect_fatal(p, id, ErrorCode::OutOfOrder);
            assert!(
                m.contains("files are taken in the terms' buyer order"),
                "{m}"
            );
        },
    );
    session(
        &enclave,
        "a file sent before the one the terms list first",
        &mut |p: &mut Parent| {
            auction.start(&world, p);
            let id = p.send(file_chunk("Buyer2", auction.file(1).to_vec(), true));
            let m = expect_fatal(p, id, ErrorCode::OutOfOrder);
            assert!(m.contains("`Buyer1`'s comes first"), "{m}");
        },
    );
    session(
        &enclave,
        "a file longer than the manifest says",
        &mut |p: &mut Parent| {
            auction.start(&world, p);
            let mut longer = auction.file(0).to_vec();
            longer.extend_from_slice(b"9,AAAA\n");
            let id = p.send(file_chunk("Buyer1", longer, true));
            let m = expect_fatal(p, id, ErrorCode::FileMismatch);
            assert!(m.contains("longer than the"), "{m}");
        },
    );
    session(
        &enclave,
        "a file that grows past the manifest a chunk later",
        &mut |p: &mut Parent| {
            auction.start(&world, p);
            match p.call(file_chunk("Buyer1", auction.file(0).to_vec(), false)) {
                Response::ChunkAccepted(_) => {}
                other => panic!("{other:?}"),
            }
            let id = p.send(file_chunk("Buyer1", b"\n".to_vec(), true));
            expect_fatal(p, id, ErrorCode::FileMismatch);
        },
    );
    session(
        &enclave,
        "a file shorter than the manifest says",
        &mut |p: &mut Parent| {
            auction.start(&world, p);
            let f1 = auction.file(0);
            let id = p.send(file_chunk("Buyer1", f1[..f1.len() - 1].to_vec(), true));
            expect_fatal(p, id, ErrorCode::FileMismatch);
        },
    );
    session(
        &enclave,
        "a file whose digest differs",
        &mut |p: &mut Parent| {
            auction.start(&world, p);
            // Same length, Buyer1's two rows swapped: still Buyer1's own bids, but not the file
            // Buyer1 sealed.
            let text = String::from_utf8(auction.file(0).to_vec()).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let swapped = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[1]).into_bytes();
            assert_eq!(swapped.len(), auction.file(0).len());
            let id = p.send(file_chunk("Buyer1", swapped, true));
            let m = expect_fatal(p, id, ErrorCode::FileMismatch);
            assert!(m.contains("is not the one the manifest names"), "{m}");
        },
    );
    session(&enclave, "a file sent twice", &mut |p: &mut Parent| {
        auction.start(&world, p);
        p.send_file("Buyer1", auction.file(0));
        let id = p.send(file_chunk("Buyer1", auction.file(0).to_vec(), true));
        let m = expect_fatal(p, id, ErrorCode::DuplicateFile);
        assert!(m.contains("already received"), "{m}");
    });
    session(
        &enclave,
        "close with a buyer's file missing",
        &mut |p: &mut Parent| {
            auction.start(&world, p);
            p.send_file("Buyer1", auction.file(0));
            p.send_file("Buyer2", auction.file(1));
            let id = p.send(Request::Close(Close {}));
            let m = expect_fatal(p, id, ErrorCode::MissingFile);
            assert!(m.contains("`Buyer3`'s file was never sent"), "{m}");
        },
    );
    session(
        &enclave,
        "close with every file missing",
        &mut |p: &mut Parent| {
            auction.start(&world, p);
            let id = p.send(Request::Close(Close {}));
            expect_fatal(p, id, ErrorCode::MissingFile);
        },
    );

    // One image, one rule set: the sealed image runs no auction on terms of the operator's.
    session(
        &enclave,
        "an unsealed open on the sealed image",
        &mut |p: &mut Parent| {
            p.hello();
            p.credentials(operator);
            let id = p.send(Request::OpenUnsealed(
                world.config("a-unsealed-on-sealed", RevealPolicy::WinningBid),
            ));
            let m = expect_fatal(p, id, ErrorCode::WrongRuleSet);
            assert!(
                m.contains("the sealed image (it serves sealed auctions only)"),
                "{m}"
            );
        },
    );

    // After all of it the enclave serves an honest sealed auction.
    enclave.assert_running();
    let mut p = world.parent(&enclave);
    auction.start(&world, &mut p);
    let (csv, _) = auction.finish(&mut p);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result\n1,Buyer3 Wins\n2,Buyer1 Wins\n"
    );
    assert!(assert_nothing_before_close(&p.client.received));
    let log = enclave.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

/// The unsealed image: a ciphertext counts once per boot. A first auction runs; then the same
/// file again, in a new session of the same terms, is a replay, and so is a file holding one
/// ciphertext twice. (The sealed image has no such guard: a sealed rerun gives the same bytes.)
#[test]
fn unsealed_replays_end_the_session_and_release_nothing() {
    let world = World::start(BUYERS, StackOptions::unsealed());
    let mut enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let operator = &world.stack.operator;
    let mut sessions = 0;
    let mut session = |enclave: &Enclave, what: &str, run: &mut dyn FnMut(&mut Parent)| {
        let mut p = world.parent(enclave);
        run(&mut p);
        sessions += 1;
        enclave.wait_sessions_ended(sessions);
        println!("session {sessions}, {what}: done");
    };
    let a = "a-unsealed-replay";
    let config = world.config(a, RevealPolicy::None);
    let files: Vec<Vec<u8>> = BUYERS
        .iter()
        .map(|b| bids(&sealer, a, b, &[("1", "3")]))
        .collect();
    session(
        &enclave,
        "an honest unsealed auction",
        &mut |p: &mut Parent| {
            let (csv, _) = p.run_unsealed(operator, &config, &files);
            assert_eq!(
                String::from_utf8(csv).unwrap(),
                "Property,Result\n1,\"Tie: Buyer1, Buyer2, Buyer3\"\n"
            );
        },
    );
    session(
        &enclave,
        "an unsealed file replayed in the same boot",
        &mut |p: &mut Parent| {
            p.start(operator, &config);
            let id = p.send(file_chunk("Buyer1", files[0].clone(), true));
            let m = expect_fatal(p, id, ErrorCode::ReplayedCiphertext);
            assert!(m.contains("already used since this enclave started"), "{m}");
        },
    );
    session(
        &enclave,
        "one ciphertext twice in an unsealed file",
        &mut |p: &mut Parent| {
            let a2 = "a-unsealed-twice";
            let config2 = world.config(a2, RevealPolicy::None);
            let ct = sealer.seal("Buyer1", "4", a2, "1");
            p.start(operator, &config2);
            let id = p.send(file_chunk(
                "Buyer1",
                bid_file(&[("1", ct.clone()), ("2", ct)]),
                true,
            ));
            expect_fatal(p, id, ErrorCode::ReplayedCiphertext);
        },
    );

    enclave.assert_running();
    let log = enclave.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn oversized_and_empty_frames_end_the_session_unread() {
    let world = World::start(BUYERS, StackOptions::default());
    let mut enclave = world.enclave("enclave", &[]);
    let rss_before = reset_peak_rss(&enclave);
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

    let grown_refusing = enclave.peak_rss_kib().saturating_sub(rss_before);

    // An oversized file chunk in the middle of a sealed auction: refused the same way, and
    // nothing about the auction leaves. (Opening the auction reserves what the image's limits
    // need, by design; the refusal after it adds nothing.)
    let sealer = world.sealer();
    let auction = Sealed::simple(&world, &sealer, "a-oversized");
    let mut p = world.parent(&enclave);
    auction.start(&world, &mut p);
    p.send_file("Buyer1", auction.file(0));
    let rss_in_auction = reset_peak_rss(&enclave);
    p.client
        .send_bytes(&((DEFAULT_MAX_FRAME as u32 + 1).to_be_bytes()));
    let m = p.client.expect_error(None, ErrorCode::FrameTooLarge, true);
    assert!(m.contains("over the limit"), "{m}");
    p.client.expect_eof();
    assert!(!assert_nothing_before_close(&p.client.received));
    enclave.wait_sessions_ended(4);

    enclave.assert_running();
    let grown = grown_refusing.max(enclave.peak_rss_kib().saturating_sub(rss_in_auction));
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
    // Lot 1: 10, 20.5, 20.49 (with leading zeros and surrounding whitespace, as plain
    // `aws kms encrypt` of `echo` output makes); lot 2: 7, 7.00, 6.99; lot 3: x, 1, 0.
    let amounts = [
        ["10", "20.5", " 020.49\n"],
        ["7", "7.00", "6.99"],
        ["x", "1", "0"],
    ];
    let files = BUYERS
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let rows: Vec<(&str, &str)> = ["1", "2", "3"]
                .into_iter()
                .zip(amounts.iter().map(|lot| lot[i]))
                .collect();
            bids(&sealer, a, b, &rows)
        })
        .collect();
    let auction = Sealed::new(
        &world,
        &sealer,
        world.config(a, RevealPolicy::WinningBid),
        files,
    );
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
        step(&mut p, open_sealed_request(&auction.manifest)),
        Response::AuctionOpened(_)
    ));
    for (b, seal) in BUYERS.iter().zip(&auction.seals) {
        match step(&mut p, seal_request(b, seal.clone())) {
            Response::SealAccepted(s) => assert_eq!(s.buyer.as_str(), *b),
            other => panic!("seal of {b}: {other:?}"),
        }
    }
    // Each file in two chunks.
    for (b, f) in BUYERS.iter().zip(&auction.files) {
        let half = f.len() / 2;
        for (part, last) in [(&f[..half], false), (&f[half..], true)] {
            match step(&mut p, file_chunk(b, part.to_vec(), last)) {
                Response::ChunkAccepted(c) => {
                    assert_eq!(c.buyer.as_str(), *b);
                    assert_eq!(c.received, if last { f.len() } else { half } as u64);
                }
                other => panic!("file of {b}: {other:?}"),
            }
        }
    }
    let (id, frame) = p.frame(Request::Close(Close {}));
    p.client.send_bytewise(&frame);
    let (mut csv, mut json) = (Vec::new(), Vec::new());
    let closed = loop {
        let reply = p.client.recv();
        assert_eq!(reply.id, Some(id), "{reply:?}");
        match reply.msg {
            Response::ResultChunk(c) if c.file == OutputFile::Csv => csv.extend(c.data),
            Response::ResultChunk(c) => json.extend(c.data),
            Response::Closed(c) => break c,
            other => panic!("expected the result: {other:?}"),
        }
    };
    p.check_closed(&closed, Mode::Sealed, &auction.manifest, &csv, &json);
    p.client.expect_eof();
    assert!(assert_nothing_before_close(&p.client.received));
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result,Price\n1,Buyer2 Wins,20.50\n2,\"Tie: Buyer1, Buyer2\",7\n3,Buyer2 Wins,1\n"
    );
    assert_eq!(
        parse_json(&json)["set_aside"],
        json!([{"buyer": "Buyer1", "reason": "invalid_amount", "count": 1,
            "lots": {"first": ["3"], "more": 0}}])
    );
}

#[test]
fn a_connection_dropped_mid_frame_then_a_new_session() {
    let world = World::start(BUYERS, StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let auction = Sealed::simple(&world, &sealer, "a-drop");

    // Dropped inside the length prefix of the first frame.
    let mut c = Client::connect(&enclave);
    c.send_bytes(&[0, 0]);
    drop(c);
    enclave.wait_sessions_ended(1);

    // Dropped inside Buyer2's file while Buyer1's bids are being opened: Buyer1's last chunk
    // and half of Buyer2's frame in one write (frames 1 to 6 are hello, credentials, open and
    // three seals).
    let mut p = world.parent(&enclave);
    auction.start(&world, &mut p);
    let (_, mut wire) = p.frame(file_chunk("Buyer1", auction.file(0).to_vec(), true));
    let (_, frame) = p.frame(file_chunk("Buyer2", auction.file(1).to_vec(), true));
    wire.extend_from_slice(&frame[..frame.len() / 2]);
    p.client.send_bytes(&wire);
    let received = p.client.received.clone();
    drop(p);
    enclave.wait_sessions_ended(2);
    assert!(!assert_nothing_before_close(&received));
    let log = enclave.log_text();
    assert!(
        log.contains(
            "parent disconnected: connection closed inside frame 1 (2 of 4 bytes received)"
        ),
        "{log}"
    );
    assert!(
        log.contains("parent disconnected: connection closed inside frame 8"),
        "{log}"
    );

    // A new parent runs the same sealed auction as if nothing happened. (Protocol 1 needed
    // another auction id here, the first one's ciphertexts being spent; a sealed manifest
    // may run again in any boot, and gives the same result.)
    let mut p = world.parent(&enclave);
    auction.start(&world, &mut p);
    let (csv, _) = auction.finish(&mut p);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result\n1,Buyer3 Wins\n2,Buyer1 Wins\n"
    );
}

#[test]
fn a_thousand_lots_in_flight() {
    const LOTS: usize = 1000;
    let world = World::start(BUYERS, StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let sealer = world.sealer();
    let a = "a-thousand";
    let config = world.config(a, RevealPolicy::None);

    // Lot i: one bid by buyer i mod 3 of amount i; every seventh bid is not a number. (Each
    // lot was a request of its own in protocol 1; now each buyer's bids are one file, and
    // all of a file's bids are opened at once.)
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
    let files: Vec<Vec<u8>> = BUYERS
        .iter()
        .map(|b| {
            let rows: Vec<(&str, Vec<u8>)> = plan
                .iter()
                .zip(&ciphertexts)
                .filter(|((buyer, _, _), _)| buyer == b)
                .map(|((_, _, l), ct)| (l.as_str(), ct.clone()))
                .collect();
            bid_file(&rows)
        })
        .collect();
    let auction = Sealed::new(&world, &sealer, config, files);

    let mut p = world.parent(&enclave);
    auction.start(&world, &mut p);
    let chunk = 16 * 1024;
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for (b, f) in BUYERS.iter().zip(&auction.files) {
        for (n, part) in f.chunks(chunk).enumerate() {
            let last = (n + 1) * chunk >= f.len();
            let (id, frame) = p.frame(file_chunk(b, part.to_vec(), last));
            wire.extend_from_slice(&frame);
            expected.push((id, *b, (n * chunk + part.len()) as u64));
        }
    }
    assert!(expected.len() > BUYERS.len(), "files in several chunks");
    // Every file at once, from another thread, while this one reads the answers.
    let started = Instant::now();
    let mut writer = p.client.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || writer.write_all(&wire));
    // A file's last chunk is answered once its bids are opened; chunks the enclave read
    // meanwhile may be answered first.
    let mut expected: HashMap<u64, (&str, u64)> = expected
        .into_iter()
        .map(|(id, b, received)| (id, (b, received)))
        .collect();
    while !expected.is_empty() {
        match p.client.recv() {
            FromEnclave {
                id: Some(id),
                msg: Response::ChunkAccepted(c),
            } => {
                let want = expected
                    .remove(&id)
                    .unwrap_or_else(|| panic!("unexpected or repeated answer to {id}"));
                assert_eq!((c.buyer.as_str(), c.received), want, "request {id}");
            }
            other => panic!("expected a chunk accepted, got {other:?}"),
        }
    }
    sender.join().unwrap().unwrap();
    let opened_in = started.elapsed();
    let (csv, json) = p.close(Mode::Sealed, &auction.manifest);
    assert!(assert_nothing_before_close(&p.client.received));
    // Every lot decided: the winner is its one bidder, unless the bid was not a number.
    let mut lots = json_lots(&json);
    lots.sort_by_key(|l| l.0[4..].parse::<usize>().unwrap());
    assert_eq!(lots.len(), LOTS);
    for (i, (l, result, names, price, set_aside)) in lots.into_iter().enumerate() {
        assert_eq!(l, format!("lot-{i}"));
        assert_eq!(price, None);
        let buyer = BUYERS[i % 3].to_owned();
        if i % 7 == 3 {
            assert_eq!(result, "no_valid_bid", "lot {i}");
            assert_eq!(set_aside, vec![(buyer, "invalid_amount".to_owned())]);
        } else {
            assert_eq!((result.as_str(), names), ("winner", vec![buyer]), "lot {i}");
            assert!(set_aside.is_empty());
        }
    }
    // Each record names its first 20 lots in output order (numeric-aware), then counts.
    let invalid: Vec<Vec<String>> = (0..3)
        .map(|b| {
            (0..LOTS)
                .filter(|i| i % 7 == 3 && i % 3 == b)
                .map(|i| format!("lot-{i}"))
                .collect()
        })
        .collect();
    assert_eq!(
        parse_json(&json)["set_aside"],
        json!(
            (0..3)
                .map(|b| json!({"buyer": BUYERS[b], "reason": "invalid_amount",
                    "count": invalid[b].len(),
                    "lots": {"first": invalid[b][..20], "more": invalid[b].len() - 20}}))
                .collect::<Vec<_>>()
        )
    );
    assert_eq!(csv.iter().filter(|&&c| c == b'\n').count(), LOTS + 1);
    println!(
        "{LOTS} lots: sealed in {:.1} s, opened in {:.1} s",
        sealed_in.as_secs_f64(),
        opened_in.as_secs_f64()
    );
}

#[test]
fn parents_that_connect_while_one_is_connected_are_told_busy() {
    let world = World::start(BUYERS, StackOptions::default());
    let enclave = world.enclave("enclave", &[]);
    let mut first = world.parent(&enclave);
    first.hello();

    // Many at once, each refused and hung up on; none disturbs the first session.
    let others: Vec<Client> = (0..16).map(|_| Client::connect(&enclave)).collect();
    for mut other in others {
        let m = other.expect_error(None, ErrorCode::Busy, true);
        assert!(m.contains("one at a time"), "{m}");
        other.expect_eof();
    }
    // One that starts talking first is refused the same way, unread.
    let mut eager = Client::connect(&enclave);
    // (The enclave may already have hung up: then the write fails, which is fine.)
    let _ = eager
        .stream
        .write_all(&Client::frame(&bidding_core::wire::ToEnclave {
            id: 1,
            msg: first.hello_request(),
        }));
    let m = eager.expect_error(None, ErrorCode::Busy, true);
    assert!(m.contains("one at a time"), "{m}");
    eager.expect_eof();

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
    let sealer = world.sealer();
    let auction = Sealed::simple(&world, &sealer, "a-flood");
    let mut p = world.parent(&enclave);
    // In the middle of a sealed auction: seals in, one file received.
    auction.start(&world, &mut p);
    p.send_file("Buyer1", auction.file(0));
    let rss_before = reset_peak_rss(&enclave);
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
    auction.start(&world, &mut next);
    let (csv, _) = auction.finish(&mut next);
    assert_eq!(
        String::from_utf8(csv).unwrap(),
        "Property,Result\n1,Buyer3 Wins\n2,Buyer1 Wins\n"
    );
}
