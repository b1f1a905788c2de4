//! DNS over TCP from the phone (`tcp::dns_stream`): queries framed across segments, a client that half-closes
//! before its answer, and answers that do not fit the flow's send buffer.

use super::regression_tests::{connect_eager, framed, received};
use super::*;

const RESOLVER: [u8; 4] = [198, 18, 53, 53];
const BLOCKED: &str = "tracking.intl.miui.com";

/// The whole framed messages in `stream`, and whatever is left that is not one.
fn frames(stream: &[u8]) -> (Vec<Vec<u8>>, usize) {
    let mut out = Vec::new();
    let mut rest = stream;
    while let [a, b, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if tail.len() < len {
            break;
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    (out, rest.len())
}

/// The query for the blocked name under id `id`.
fn blocked_query(id: u16) -> Vec<u8> {
    let mut query = dns_query(BLOCKED);
    query[..2].copy_from_slice(&id.to_be_bytes());
    query
}

#[test]
fn a_query_split_across_segments_is_answered_once_it_is_whole() {
    let mut pair = Pair::new();
    let h = connect_eager(&mut pair, RESOLVER, 53);
    let query = framed(&blocked_query(0x0a0b));
    for piece in [&query[..1], &query[1..5], &query[5..]] {
        assert!(frames(&received(&mut pair, h)).0.is_empty(), "answered before the query was whole");
        pair.phone_tcp(h).send_slice(piece).expect("send");
        pair.drive();
    }
    let (answers, left) = frames(&received(&mut pair, h));
    assert_eq!((answers.len(), left), (1, 0), "one whole answer");
    assert_eq!((&answers[0][..2], answers[0][3] & 0x0f), (&[0x0a, 0x0b][..], 3), "NXDOMAIN under the query's id");
}

#[test]
fn a_client_that_half_closes_first_still_gets_its_answer_then_the_close() {
    let mut pair = Pair::new();
    let h = connect_eager(&mut pair, RESOLVER, 53);
    pair.phone_tcp(h).send_slice(&framed(&dns_query("www.example.org"))).expect("send");
    pair.drive();
    pair.phone_tcp(h).close();
    pair.drive();
    let state = pair.phone_tcp(h).state();
    assert!(
        matches!(state, tcp::State::FinWait1 | tcp::State::FinWait2),
        "the engine closed before answering: {state}"
    );
    // Asked upstream over TCP, as the phone asked.
    let &(flow, _) = pair.up.connects.last().expect("a TCP connection to the resolver");
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    let forwarded = pair.up.written[&flow][2..].to_vec();
    pair.up.to_read.insert(flow, framed(&answer_with_a(&forwarded, NORMAL)));
    pair.upstream_readable(flow);
    pair.drive();
    let (answers, left) = frames(&received(&mut pair, h));
    assert_eq!((answers.len(), left), (1, 0), "the answer arrived whole");
    assert_eq!(&answers[0][..2], &[0x12, 0x34], "under the phone's id");
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::TimeWait, "then the engine closed its side");
}

/// A pair whose TCP flows get `tx` bytes of send buffer; a phone that takes one byte at a time (so what the engine
/// sends waits in that buffer) sends `n` pipelined queries for the blocked name. What the phone received in the
/// end, and the engine's dropped count.
fn pipelined_answers(tx: usize, n: u16) -> (Vec<u8>, u64) {
    let mut pair = Pair::new();
    let config = EngineConfig { tcp_buffer_size: tx, ..EngineConfig::default() };
    pair.engine = Engine::new(config, Arc::clone(pair.engine.policy()), pair.now, 1_700_000_000_000);
    let mut socket = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 1]), tcp::SocketBuffer::new(vec![0; 65536]));
    socket.set_nagle_enabled(false);
    socket.connect(pair.phone.context(), (IpAddress::from(Ipv4Address::from(RESOLVER)), 53), 40999).expect("connect");
    let h = pair.sockets.add(socket);
    pair.drive();
    let queries: Vec<u8> = (1..=n).flat_map(|id| framed(&blocked_query(id))).collect();
    pair.phone_tcp(h).send_slice(&queries).expect("send");
    pair.drive();
    assert_eq!(pair.phone_tcp(h).send_queue(), 0, "every query was taken");
    let dropped = pair.engine.stats().dropped;
    let mut got = Vec::new();
    for _ in 0..usize::from(n) * 64 {
        got.extend(received(&mut pair, h));
        pair.drive();
    }
    (got, dropped)
}

#[test]
fn answers_that_do_not_fit_the_send_buffer_are_dropped_whole_and_counted() {
    // The size of one framed answer, as a flow with room to spare sends it.
    let (one, _) = pipelined_answers(64 * 1024, 1);
    let framed_len = one.len();
    // Room for 12 answers and 2 bytes short of a 13th, counting the byte the phone takes (its length prefix
    // miscounted would send part of it), then room for 13 and 8 bytes over (a 13th counted at twice its size
    // would be dropped).
    for (tx, fit) in [(framed_len * 13 - 3, 12), (framed_len * 13 + 8, 13)] {
        let (got, dropped) = pipelined_answers(tx, 20);
        let (answers, left) = frames(&got);
        assert_eq!(left, 0, "only whole answers reach the phone (send buffer {tx})");
        let ids: Vec<u16> = answers.iter().map(|a| u16::from_be_bytes([a[0], a[1]])).collect();
        assert_eq!(ids, (1..=fit).collect::<Vec<u16>>(), "the first {fit} answers, in order (send buffer {tx})");
        assert_eq!(dropped, u64::from(20 - fit), "each answer that did not fit is counted (send buffer {tx})");
    }
}
