//! Engine tests of the socket actions (`socket_action`): the engine never opens, sends on or closes a socket
//! itself; what it asks for waits, in order, until the driver performs it, and failures the driver reports later end
//! the flow as a failure at once would have.

use super::dns_try_tests::servfailed;
use super::failure_tests::failures;
use super::*;
use crate::verdict::ErrorReason;

/// The actions queued so far, without performing them.
fn queued(pair: &mut Pair) -> Vec<SocketAction> {
    std::iter::from_fn(|| pair.engine.poll_socket_action()).collect()
}

#[test]
fn socket_work_waits_in_order_until_the_driver_polls_it() {
    let mut pair = Pair::new();
    pair.engine.handle_tun_packet(pair.now, &udp_packet(NORMAL, 7, b"one"), &mut pair.up);
    pair.engine.handle_tun_packet(pair.now, &udp_packet(NORMAL, 7, b"two"), &mut pair.up);
    assert!(pair.up.udp_opened.is_empty() && pair.up.udp_sent.is_empty(), "the engine touched a socket itself");
    let actions = queued(&mut pair);
    let Some(SocketAction::UdpOpen { flow, dst, multicast_client: None }) = actions.first().cloned() else {
        panic!("the flow's socket is opened first: {actions:?}");
    };
    assert_eq!(dst, SocketAddr::from((NORMAL, 7)));
    let sends = [b"one".to_vec(), b"two".to_vec()].map(|datagram| SocketAction::UdpSend { flow, datagram });
    assert_eq!(actions[1..], sends, "then both datagrams, in the order the phone sent them");
    assert_eq!(queued(&mut pair), [], "each action is handed out once");
}

#[test]
fn a_udp_socket_reported_unopenable_later_is_refused_quoting_the_first_packet() {
    let mut pair = Pair::new();
    let first = udp_packet(NORMAL, 7, b"ping");
    pair.engine.handle_tun_packet(pair.now, &first, &mut pair.up);
    let flow = match queued(&mut pair).first() {
        Some(&SocketAction::UdpOpen { flow, .. }) => flow,
        other => panic!("no open: {other:?}"),
    };
    assert!(pair.take_out().is_empty(), "nothing is refused before the driver reports");
    pair.engine.on_udp_opened(pair.now, flow, Err(io::Error::from_raw_os_error(24)));
    let out = pair.take_out();
    assert_eq!(out.len(), 1, "one ICMP refusal: {out:?}");
    let quoted = &out[0][28..];
    assert_eq!(quoted, &first[..quoted.len()], "the refusal quotes the phone's first packet");
    let stats = pair.engine.stats();
    assert_eq!((stats.udp_active, stats.udp_flows), (0, 0), "the flow never opened");
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::UdpFailed));
    assert_eq!(queued(&mut pair), [SocketAction::UdpClose { flow }]);

    // The phone's next datagram opens a new flow.
    pair.engine.handle_tun_packet(pair.now, &udp_packet(NORMAL, 7, b"again"), &mut pair.up);
    assert!(matches!(queued(&mut pair).first(), Some(SocketAction::UdpOpen { flow: next, .. }) if *next != flow));
}

#[test]
fn an_open_reported_for_a_flow_already_gone_changes_nothing() {
    let mut pair = Pair::new();
    pair.udp(NORMAL, 7, b"ping");
    let flow = pair.up.udp_opened[0].0;
    pair.wait(pair.engine.config.udp_idle_timeout + Duration::from_secs(1));
    assert_eq!(pair.engine.stats().udp_active, 0, "idled out");
    pair.engine.on_udp_opened(pair.now, flow, Err(io::ErrorKind::AddrNotAvailable.into()));
    assert!(pair.take_out().is_empty());
    assert!(failures(&mut pair).is_empty());
    assert_eq!(pair.engine.stats().udp_flows, 1);
}

#[test]
fn a_dns_query_whose_sockets_cannot_open_is_answered_servfail() {
    let mut pair = Pair::new();
    pair.up.fail_udp_open = true;
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    assert!(servfailed(&mut pair), "SERVFAIL");
    assert!(pair.up.udp_sent.is_empty(), "no query went anywhere");
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::DnsFailed));
}

#[test]
fn a_failed_send_on_an_open_flow_is_counted_as_dropped() {
    let mut pair = Pair::new();
    pair.udp(NORMAL, 7, b"ping");
    let flow = pair.up.udp_opened[0].0;
    let dropped = pair.engine.stats().dropped;
    pair.engine.on_udp_send_failed(pair.now, flow, io::ErrorKind::WouldBlock.into());
    assert_eq!(pair.engine.stats().dropped, dropped + 1);
    assert_eq!(pair.engine.stats().udp_active, 1, "the flow stays: one lost datagram is UDP's lot");
}

#[test]
fn an_open_udp_flow_lets_the_engine_sleep_until_it_would_idle_out() {
    let mut pair = Pair::new();
    pair.udp(NORMAL, 7, b"ping");
    let idle = pair.engine.config.udp_idle_timeout;
    assert_eq!(pair.engine.poll_timeout(pair.now), Some(pair.now + idle), "one wake-up, when the flow may idle out");
}

#[test]
fn a_udp_flow_in_use_outlives_its_first_idle_check() {
    let mut pair = Pair::new();
    pair.udp(NORMAL, 7, b"ping");
    let idle = pair.engine.config.udp_idle_timeout;
    pair.wait(idle / 2);
    pair.udp(NORMAL, 7, b"still here");
    pair.wait(idle / 2 + Duration::from_secs(1));
    assert_eq!(pair.engine.stats().udp_active, 1, "active half-way through: kept past the first check");
    pair.wait(idle / 2);
    assert_eq!(pair.engine.stats().udp_active, 0, "idle for the whole timeout since: closed");
}

#[test]
fn a_connect_that_fails_at_once_resets_the_phone_and_is_reported() {
    let mut pair = Pair::new();
    pair.up.fail_connect = true;
    let h = pair.connect(NORMAL, 80);
    pair.phone_tcp(h).send_slice(b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n").expect("send");
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "phone reset at once");
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::ConnectFailed));
    assert_eq!(pair.engine.stats().tcp_active, 0);
}

#[test]
fn a_dns_query_whose_sends_fail_at_once_is_answered_servfail_without_waiting() {
    let mut pair = Pair::new();
    pair.up.fail_udp_send = true;
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    assert!(servfailed(&mut pair), "SERVFAIL at once");
    let failures = failures(&mut pair);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, Reason::Error(ErrorReason::DnsFailed));
}

/// Runs the phone's stack and hands what it sent to the engine, running the engine's timers, but performs nothing
/// of what the engine queued (a driver between its calls into the engine and its drain).
fn phone_sends_without_drain(pair: &mut Pair) {
    let t = smoltcp::time::Instant::from_micros((pair.now - pair.start).as_micros() as i64);
    pair.phone.poll(t, &mut pair.wire, &mut pair.sockets);
    let sent: Vec<Vec<u8>> = pair.wire.from_phone.drain(..).collect();
    for packet in &sent {
        pair.engine.handle_tun_packet(pair.now, packet, &mut pair.up);
    }
    pair.engine.handle_timeout(pair.now);
}

#[test]
fn a_flows_bytes_move_when_the_driver_drains_not_during_the_engines_calls() {
    let mut pair = Pair::new();
    let (h, flow) = forwarding_flow(&mut pair);
    let request = pair.up.written[&flow].clone();
    pair.phone_tcp(h).send_slice(b"GET /2 HTTP/1.1\r\nHost: www.example.org\r\n\r\n").expect("send");
    phone_sends_without_drain(&mut pair);
    assert_eq!(pair.up.written[&flow], request, "the engine wrote to the stream itself");
    pair.settle();
    assert!(pair.up.written[&flow].ends_with(b"GET /2 HTTP/1.1\r\nHost: www.example.org\r\n\r\n"), "drained");

    // The server's bytes are read when its socket is reported readable, and reach the phone.
    pair.up.to_read.insert(flow, b"HTTP/1.1 200 OK\r\n\r\n".to_vec());
    pair.engine.handle_timeout(pair.now);
    pair.settle();
    assert_eq!(pair.up.to_read[&flow].len(), 19, "read before its socket was reported readable");
    pair.upstream_readable(flow);
    assert!(pair.up.to_read[&flow].is_empty(), "read once lent");
    pair.drive();
    let mut got = [0u8; 64];
    let n = pair.phone_tcp(h).recv_slice(&mut got).expect("recv");
    assert_eq!(&got[..n], b"HTTP/1.1 200 OK\r\n\r\n");
}

#[test]
fn a_stream_that_takes_nothing_is_written_again_only_when_reported_writable() {
    let mut pair = Pair::new();
    let (h, flow) = forwarding_flow(&mut pair);
    let request = pair.up.written[&flow].clone();
    pair.up.takes_nothing = true;
    pair.phone_tcp(h).send_slice(b"GET /2 HTTP/1.1\r\nHost: www.example.org\r\n\r\n").expect("send");
    // Were the flow still counted writable, the drain would ask again at once, for ever.
    pair.drive();
    pair.wait(Duration::from_millis(300));
    assert_eq!(pair.up.written[&flow], request);
    pair.up.takes_nothing = false;
    pair.wait(Duration::from_millis(300));
    assert_eq!(pair.up.written[&flow], request, "written again before the socket said it takes bytes");
    pair.upstream_writable(flow);
    assert!(pair.up.written[&flow].ends_with(b"GET /2 HTTP/1.1\r\nHost: www.example.org\r\n\r\n"));
}
