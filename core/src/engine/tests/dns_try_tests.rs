//! Engine tests of how a DNS try ends without an answer (see `dns::try_state`): each failure reaches the phone as
//! SERVFAIL and the `dns_failed` event names it, over UDP and over TCP.

use super::*;
use crate::verdict::ErrorReason;

/// The resolver of `Pair::new()`'s engine.
const RESOLVER: &str = "resolver 198.18.0.1:53";

/// The details of the `dns_failed` events so far.
fn dns_failures(pair: &mut Pair) -> Vec<String> {
    pair.events()
        .into_iter()
        .filter(|e| e.reason() == Reason::Error(ErrorReason::DnsFailed))
        .filter_map(|e| e.outcome.error().map(str::to_owned))
        .collect()
}

/// Whether the phone got one SERVFAIL over UDP.
pub(super) fn servfailed(pair: &mut Pair) -> bool {
    matches!(pair.take_out().as_slice(), [answer] if udp_payload(answer)[3] & 0x0f == 2)
}

/// Lets `d` pass and runs the timers, leaving the phone's packets to `take_out`.
fn pass(pair: &mut Pair, d: Duration) {
    pair.now += d;
    pair.engine.handle_timeout(pair.now);
    pair.settle();
}

/// A query over UDP whose first try times out and whose second try's answer comes truncated, so it is asked again
/// over TCP as the query's last try: that try's flow.
fn last_try_over_tcp(pair: &mut Pair) -> FlowId {
    pair.udp([198, 18, 53, 53], 53, &dns_query("big.example.org"));
    let timeout = pair.engine.config.dns_timeout;
    pass(pair, timeout / 2);
    let (flow, forwarded) = pair.up.udp_sent.last().expect("a second try").clone();
    let mut truncated = forwarded;
    truncated[2] |= 0x82;
    pair.engine.on_udp_datagram(pair.now, flow, &truncated);
    pair.settle();
    assert!(pair.take_out().is_empty() && dns_failures(pair).is_empty(), "not failed yet");
    pair.up.connects.last().expect("a TCP try").0
}

#[test]
fn unanswered_udp_tries_say_no_answer_came_in_time() {
    let mut pair = Pair::new();
    pair.udp([198, 18, 53, 53], 53, &dns_query("slow.example.org"));
    let timeout = pair.engine.config.dns_timeout;
    pass(&mut pair, timeout);
    assert!(servfailed(&mut pair));
    assert_eq!(dns_failures(&mut pair), [format!("{RESOLVER}: no answer from it in time")]);
}

#[test]
fn an_unanswered_tcp_try_says_so() {
    let mut pair = Pair::new();
    last_try_over_tcp(&mut pair);
    let timeout = pair.engine.config.dns_timeout;
    pass(&mut pair, timeout / 2);
    assert!(servfailed(&mut pair));
    assert_eq!(dns_failures(&mut pair), [format!("{RESOLVER}: no answer from it over TCP in time")]);
}

#[test]
fn a_resolver_closing_before_answering_over_tcp_says_so() {
    let mut pair = Pair::new();
    let flow = last_try_over_tcp(&mut pair);
    pair.up.eof.insert(flow);
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    assert!(pair.up.closed.contains(&(flow, true)), "the failed try's socket is reset");
    assert!(servfailed(&mut pair));
    assert_eq!(dns_failures(&mut pair), [format!("{RESOLVER}: closed before answering")]);
}

#[test]
fn an_answer_over_tcp_to_another_query_says_so() {
    let mut pair = Pair::new();
    let flow = last_try_over_tcp(&mut pair);
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    // The query echoed as an answer (QR set) under another id.
    let mut other = pair.up.written[&flow].clone();
    other[2] ^= 0xff;
    other[4] |= 0x80;
    pair.up.to_read.insert(flow, other);
    pair.upstream_readable(flow);
    pair.engine.poll(pair.now);
    pair.settle();
    assert!(servfailed(&mut pair));
    assert_eq!(dns_failures(&mut pair), [format!("{RESOLVER}: answer over TCP does not match the query")]);
    assert_eq!(pair.engine.stats().malformed, 1, "counted");
}

#[test]
fn a_tcp_try_that_cannot_connect_carries_the_drivers_error() {
    let mut pair = Pair::new();
    let flow = last_try_over_tcp(&mut pair);
    let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused by 198.18.0.1");
    pair.engine.on_tcp_connected(pair.now, flow, Err(refused));
    pair.settle();
    assert!(servfailed(&mut pair));
    assert_eq!(dns_failures(&mut pair), [format!("{RESOLVER}: refused by 198.18.0.1")]);
}

#[test]
fn an_answer_that_does_not_parse_is_answered_servfail_and_counted_malformed() {
    let mut pair = Pair::new();
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    let (flow, forwarded) = pair.up.udp_sent[0].clone();
    // The query's header and question, QR set, and one answer record promised that is not there.
    let mut answer = forwarded;
    answer[2] |= 0x80;
    answer[7] = 1;
    pair.engine.on_udp_datagram(pair.now, flow, &answer);
    pair.settle();
    assert!(servfailed(&mut pair), "SERVFAIL, not the broken answer");
    assert_eq!(pair.engine.stats().malformed, 1, "counted");
}
