//! Engine tests of what happens when the network fails or the flow tables fill: every failure of an allowed
//! flow reaches the phone (RST, ICMP, SERVFAIL) and is reported as an `error` event, at once but for a server's
//! reset that cut nothing off, which waits `RESET_LINGER` for the phone to close; idle flows make room at the
//! caps; half-open connections end.

use super::*;
use crate::engine::tcp::RESET_LINGER;

/// The events with action `error`, as (reason, host, error text).
pub(super) fn failures(pair: &mut Pair) -> Vec<(Reason, Option<String>, String)> {
    pair.events()
        .into_iter()
        .filter(|e| e.action() == Action::Error)
        .map(|e| (e.reason(), e.host.clone(), e.error().unwrap_or_default().to_owned()))
        .collect()
}

#[test]
fn refused_connect_resets_the_phone_and_is_an_error_event() {
    let mut pair = Pair::new();
    let h = pair.connect(NORMAL, 80);
    pair.phone_tcp(h).send_slice(b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n").expect("send");
    pair.drive();
    let (flow, _) = pair.up.connects[0];
    pair.engine.on_tcp_connected(pair.now, flow, Err(io::ErrorKind::ConnectionRefused.into()));
    pair.settle();
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "phone reset at once");
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    let (reason, host, error) = &failures[0];
    assert_eq!(*reason, Reason::Error(ErrorReason::ConnectFailed));
    assert_eq!(host.as_deref(), Some("www.example.org"));
    assert!(error.contains("refused"), "{error}");
    assert_eq!(pair.engine.stats().upstream_errors, 1);
    assert_eq!(pair.up.closed, vec![(flow, true)]);
}

#[test]
fn connect_timeout_is_an_error_event() {
    let mut pair = Pair::new();
    let h = pair.connect(NORMAL, 22);
    pair.wait(pair.engine.config.connect_timeout);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "phone reset at the deadline");
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::ConnectFailed));
    assert!(failures[0].2.contains("no answer within"), "{failures:?}");
    let (first, _) = pair.up.connects[0];
    assert_eq!(pair.up.closed.first(), Some(&(first, true)), "its upstream socket closed");
}

#[test]
fn server_reset_is_an_error_event_once_the_phone_stayed_open_through_the_linger() {
    let mut pair = Pair::new();
    let (h, flow) = forwarding_flow(&mut pair);
    pair.events();
    pair.server_resets(flow);
    assert!(failures(&mut pair).is_empty(), "not yet: the phone may close first");
    pair.wait(RESET_LINGER - Duration::from_millis(1));
    assert!(failures(&mut pair).is_empty(), "not before the linger ends");
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Established);
    pair.wait(Duration::from_millis(1));
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed);
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::UpstreamReset));
    assert_eq!(failures[0].1.as_deref(), Some("www.example.org"));
    assert!(failures[0].2.contains("reset"), "the stream's error: {failures:?}");
    assert_eq!(pair.engine.stats().upstream_errors, 1);
}

/// The end of an IMAP session through dovecot (seen in the end-to-end tests, about 1 run in 100 under load): the
/// server sends its last bytes and closes; the client's TLS close_notify reaches it after that and draws a reset;
/// the client's FIN, sent right after its close_notify, reaches the engine only after the reset. The phone gets
/// the server's last bytes, then a reset, and nothing is reported: the server had finished, and so had the client.
#[test]
fn a_server_reset_the_phone_answers_by_closing_gets_the_last_bytes_through_and_is_not_an_error() {
    let mut pair = Pair::new();
    let h = pair.connect(NORMAL, 143);
    let (flow, _) = pair.up.connects[0];
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    pair.events();
    pair.phone_tcp(h).send_slice(b"close_notify").expect("send");
    pair.drive();
    assert!(pair.up.written[&flow].ends_with(b"close_notify"), "the client's last bytes went upstream");
    pair.up.to_read.insert(flow, b"A5 OK Logout completed.".to_vec());
    pair.server_resets(flow);
    let mut last = [0u8; 64];
    let n = pair.phone_tcp(h).recv_slice(&mut last).expect("the server's last bytes reached the phone");
    assert_eq!(&last[..n], b"A5 OK Logout completed.");
    pair.phone_tcp(h).close();
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "the phone's side is reset once it closed");
    assert!(pair.up.shutdowns.is_empty(), "no FIN to a reset socket");
    assert_eq!(pair.up.closed, vec![(flow, true)]);
    pair.wait(RESET_LINGER);
    let failures = failures(&mut pair);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(pair.engine.stats().upstream_errors, 0);
}

/// A client still talking after the server's reset was using the connection: it is reset at once, and the reset
/// reported.
#[test]
fn a_client_that_sends_after_a_server_reset_is_reset_at_once_and_it_is_reported() {
    let mut pair = Pair::new();
    let (h, flow) = forwarding_flow(&mut pair);
    pair.events();
    pair.server_resets(flow);
    pair.phone_tcp(h).send_slice(b"GET /next HTTP/1.1\r\nHost: www.example.org\r\n\r\n").expect("send");
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "reset without waiting for the linger");
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::UpstreamReset));
    assert_eq!(pair.up.written[&flow], b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n", "nothing more went up");
}

/// Bytes the client sent that had not gone up when the server reset are lost: reported at once, no linger.
#[test]
fn a_server_reset_with_client_bytes_still_waiting_is_reported_at_once() {
    let mut pair = Pair::new();
    let (h, flow) = forwarding_flow(&mut pair);
    pair.events();
    pair.up.write_budget = Some(0);
    pair.phone_tcp(h).send_slice(b"GET /next HTTP/1.1\r\nHost: www.example.org\r\n\r\n").expect("send");
    pair.drive();
    pair.server_resets(flow);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed);
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::UpstreamReset));
}

#[test]
fn unanswered_dns_is_an_error_event_but_a_blocked_names_learning_query_is_not() {
    let mut pair = Pair::new();
    pair.udp([198, 18, 53, 53], 53, &dns_query("slow.example.org"));
    pair.udp([198, 18, 53, 53], 53, &dns_query("tracking.intl.miui.com"));
    assert_eq!(pair.up.udp_sent.len(), 2, "the query and the learning copy went upstream");
    pair.take_out();
    pair.events();
    pair.now += pair.engine.config.dns_timeout;
    pair.engine.handle_timeout(pair.now);
    pair.settle();
    assert_eq!(pair.take_out().len(), 1, "one SERVFAIL: the blocked name was already answered NXDOMAIN");
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::DnsFailed));
    assert_eq!(failures[0].1.as_deref(), Some("slow.example.org"));
    assert!(failures[0].2.contains("198.18.0.1:53"), "names the resolver: {failures:?}");
}

#[test]
fn dns_socket_error_is_retried_once_on_a_new_socket_then_servfail() {
    let mut pair = Pair::new();
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    pair.events();
    let first = pair.up.udp_sent[0].0;
    pair.engine.on_udp_error(pair.now, first, io::ErrorKind::ConnectionRefused.into());
    pair.settle();
    assert!(pair.take_out().is_empty(), "retried, not failed yet");
    assert_eq!(pair.up.udp_sent.len(), 2, "sent again");
    let second = pair.up.udp_sent[1].0;
    assert_ne!(first, second, "on a socket of its own");
    pair.engine.on_udp_error(pair.now, second, io::ErrorKind::ConnectionRefused.into());
    pair.settle();
    assert_eq!(udp_payload(&pair.take_out()[0])[3] & 0x0f, 2, "SERVFAIL after the second failure");
    assert_eq!(pair.up.udp_sent.len(), 2, "never retried forever");
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::DnsFailed));
    assert!(failures[0].2.contains("refused"), "{failures:?}");
}

#[test]
fn udp_that_cannot_be_opened_is_refused_and_reported() {
    let mut pair = Pair::new();
    pair.up.fail_udp_open = true;
    pair.udp(NORMAL, 7, b"ping");
    let out = pair.take_out();
    assert_eq!(out.len(), 1, "ICMP refusal");
    assert_eq!(pair.engine.stats().udp_active, 0);
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::UdpFailed));
    assert!(!failures[0].2.is_empty());
}

#[test]
fn udp_socket_error_is_reported() {
    let mut pair = Pair::new();
    pair.udp(NORMAL, 7, b"ping");
    let flow = pair.up.udp_opened[0].0;
    pair.engine.on_udp_error(pair.now, flow, io::ErrorKind::ConnectionRefused.into());
    pair.settle();
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::UdpFailed));
}

// Regression (SYN flood, RELIABILITY.md): a dialled flow whose phone never answered the SYN|ACK released after the
// upstream connected kept its upstream connection forever (smoltcp retransmits the SYN|ACK without end).
#[test]
fn dialled_flow_whose_phone_never_completes_the_handshake_ends() {
    let mut pair = Pair::new();
    pair.raw(&raw_tcp(NORMAL, 22, 5000, true, false));
    let (id, _) = *pair.up.connects.first().expect("server-first port dials at once");
    pair.engine.on_tcp_connected(pair.now, id, Ok(()));
    pair.settle();
    assert_eq!(pair.take_out().len(), 1, "SYN|ACK released");
    // Nobody answers (no phone in this test): the engine's SYN|ACK retransmissions go nowhere.
    for _ in 0..5 {
        pair.now += Duration::from_secs(1);
        pair.engine.handle_timeout(pair.now);
        pair.settle();
        pair.take_out();
    }
    assert_eq!(pair.engine.stats().tcp_active, 1, "some patience for a slow phone");
    for _ in 0..6 {
        pair.now += Duration::from_secs(1);
        pair.engine.handle_timeout(pair.now);
        pair.settle();
        pair.take_out();
    }
    assert_eq!(pair.engine.stats().tcp_active, 0, "the half-open flow ended");
    assert_eq!(pair.up.closed, vec![(id, true)], "and its upstream connection");
}

#[test]
fn a_full_tcp_table_evicts_the_longest_idle_flow() {
    let mut pair = Pair::new();
    pair.engine.config.max_tcp_flows = 2;
    let (old, old_flow) = forwarding_flow(&mut pair);
    pair.wait(Duration::from_secs(30));
    let (recent, _) = forwarding_flow(&mut pair);
    pair.wait(Duration::from_secs(31));
    pair.events();
    // `old` has been quiet for 61 s, `recent` for 31 s: `old` makes room.
    let (new, _) = forwarding_flow(&mut pair);
    assert_eq!(pair.phone_tcp(new).state(), tcp::State::Established, "the new connection is served");
    assert_eq!(pair.phone_tcp(old).state(), tcp::State::Closed, "the idle one was reset");
    assert_eq!(pair.phone_tcp(recent).state(), tcp::State::Established, "the recent one is untouched");
    assert!(pair.up.closed.contains(&(old_flow, true)), "its upstream closed: {:?}", pair.up.closed);
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::FlowEvicted));
    assert_eq!(pair.engine.stats().flows_evicted, 1);
    assert_eq!(pair.engine.stats().tcp_active, 2);
    // Nobody has been quiet for a minute now: the next connection is refused, nothing evicted.
    let refused = pair.connect(NORMAL, 80);
    assert_eq!(pair.phone_tcp(refused).state(), tcp::State::Closed, "refused at the cap");
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reason(), Reason::Block(BlockReason::FlowLimit));
    assert_eq!(pair.phone_tcp(recent).state(), tcp::State::Established);
}

#[test]
fn a_full_udp_table_evicts_the_longest_idle_flow() {
    let mut pair = Pair::new();
    pair.engine.config.max_udp_flows = 2;
    pair.udp(NORMAL, 7, b"a");
    pair.udp(NORMAL, 8, b"b");
    pair.now += Duration::from_secs(16);
    pair.udp(NORMAL, 8, b"b again");
    pair.udp(NORMAL, 9, b"c");
    assert_eq!(pair.up.udp_opened.len(), 3, "the new flow was opened");
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::FlowEvicted));
    assert!(pair.take_out().is_empty(), "no refusal");
    // Both remaining flows are busy: the next one is refused with ICMP, nothing evicted.
    pair.udp(NORMAL, 10, b"d");
    assert_eq!(pair.up.udp_opened.len(), 3);
    assert_eq!(pair.take_out().len(), 1, "ICMP refusal");
    let events = pair.events();
    assert_eq!(events.iter().map(|e| e.reason()).collect::<Vec<_>>(), [Reason::Block(BlockReason::FlowLimit)]);
    assert_eq!(pair.engine.stats().udp_active, 2);
}

/// A server that has closed answers the client's last bytes (its TLS close_notify) with a reset: after the client
/// finished sending, that reset ends the flow (the phone is reset too) without an error event. Seen with dovecot
/// and curl's IMAP session in the end-to-end tests.
#[test]
fn server_reset_after_the_clients_fin_went_upstream_is_not_an_error() {
    let mut pair = Pair::new();
    let (h, flow) = forwarding_flow(&mut pair);
    pair.events();
    pair.phone_tcp(h).close();
    pair.drive();
    assert_eq!(pair.up.shutdowns, vec![flow], "the client's FIN went upstream");
    pair.server_resets(flow);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "the phone's side is reset too");
    let failures = failures(&mut pair);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(pair.engine.stats().upstream_errors, 0);
}
