//! The regression net of issue 15: what mutation testing showed no in-memory test held. IPv6 through the same
//! `Pair`, ClientHellos and requests split over segments (a flow is never decided before its head is whole), a
//! stalled partial head, pipelined DNS over TCP, CNAME cloaking, the DNS-over-TLS and echo-request refusals, a
//! policy swapped while flows forward, and a server that half-closes first.

use super::inspect_tests::{client_hello, tls_record};
use super::*;
use std::net::Ipv6Addr;

const PHONE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6877, 0xf, 0, 0, 0, 0, 1);
const NORMAL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6877, 1, 0, 0, 0, 0, 1);
const TELEMETRY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6877, 1, 0, 0, 0, 0, 2);
const RESOLVER: [u8; 4] = [198, 18, 53, 53];
const ALLOWED: &str = "www.example.org";
const BLOCKED: &str = "tracking.intl.miui.com";

/// A pair whose phone also has an IPv6 address and default route into the engine.
fn dual_stack_pair() -> Pair {
    let mut pair = Pair::new();
    pair.phone.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::Ipv6(PHONE6), 128)).expect("room for an address");
    });
    pair.phone.routes_mut().add_default_ipv6_route(PHONE6).expect("room for a route");
    pair
}

/// Opens a phone TCP connection to any address, without Nagle (each write leaves as a segment at once).
fn connect_to(pair: &mut Pair, dst: IpAddr, port: u16) -> SocketHandle {
    let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 65536]), tcp::SocketBuffer::new(vec![0; 65536]));
    pair.next_port += 1;
    s.set_nagle_enabled(false);
    s.connect(pair.phone.context(), (IpAddress::from(dst), port), pair.next_port).expect("connect starts");
    let h = pair.sockets.add(s);
    pair.drive();
    h
}

/// Opens a phone TCP connection to an IPv4 address without Nagle, so each write leaves as a segment at once.
pub(super) fn connect_eager(pair: &mut Pair, dst: [u8; 4], port: u16) -> SocketHandle {
    let h = pair.connect(dst, port);
    pair.phone_tcp(h).set_nagle_enabled(false);
    h
}

/// Sends `bytes` from the phone as segments of the given sizes, letting each go out alone.
fn send_in_pieces(pair: &mut Pair, h: SocketHandle, bytes: &[u8], cuts: &[usize]) {
    let mut rest = bytes;
    for &cut in cuts {
        let (piece, tail) = rest.split_at(cut);
        pair.phone_tcp(h).send_slice(piece).expect("send");
        pair.drive();
        rest = tail;
    }
    pair.phone_tcp(h).send_slice(rest).expect("send");
    pair.drive();
}

/// Everything the phone's socket has received so far.
pub(super) fn received(pair: &mut Pair, h: SocketHandle) -> Vec<u8> {
    let mut got = Vec::new();
    let s = pair.phone_tcp(h);
    while s.can_recv() {
        s.recv(|b| {
            got.extend_from_slice(b);
            (b.len(), ())
        })
        .expect("recv");
    }
    got
}

/// (reason, host) of the events so far.
fn reasons(pair: &mut Pair) -> Vec<(Reason, Option<String>)> {
    pair.events().into_iter().map(|e| (e.reason(), e.host)).collect()
}

fn dns_query_with_id(name: &str, id: u16) -> Vec<u8> {
    let mut q = dns_query(name);
    q[..2].copy_from_slice(&id.to_be_bytes());
    q
}

pub(super) fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(msg.len()).expect("short message").to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.split('.') {
        out.push(u8::try_from(label.len()).expect("short label"));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// Upstream's answer to `forwarded` (a query for A): the queried name is a CNAME for `target`, which has `addr`.
fn cname_answer(forwarded: &[u8], target: &str, addr: [u8; 4]) -> Vec<u8> {
    let mut answer = forwarded.to_vec();
    answer[2] |= 0x80;
    answer[7] = 2;
    let target_at = answer.len() + 12;
    let rdata = encode_name(target);
    answer.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60]);
    answer.extend_from_slice(&u16::try_from(rdata.len()).expect("short name").to_be_bytes());
    answer.extend_from_slice(&rdata);
    answer.extend_from_slice(&[0xc0 | (target_at >> 8) as u8, target_at as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    answer.extend_from_slice(&addr);
    answer
}

fn rcode(dns: &[u8]) -> u8 {
    dns[3] & 0x0f
}

// ---------------------------------------------------------------------------------------------------------------
// IPv6 through the same harness.

#[test]
fn ipv6_blocked_sni_is_refused_undialled_and_an_allowed_one_is_dialled() {
    let mut pair = dual_stack_pair();
    let h = connect_to(&mut pair, IpAddr::V6(TELEMETRY6), 443);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Established, "handshake completes locally over IPv6");
    pair.phone_tcp(h).send_slice(&tls_record(&client_hello(BLOCKED, 300))).expect("send");
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "RST after the ClientHello");
    assert!(pair.up.connects.is_empty(), "the blocked server was never dialled: {:?}", pair.up.connects);
    assert_eq!(reasons(&mut pair), vec![(Reason::Block(BlockReason::TlsSni), Some(BLOCKED.to_string()))]);

    let hello = tls_record(&client_hello(ALLOWED, 300));
    let h = connect_to(&mut pair, IpAddr::V6(NORMAL6), 443);
    pair.phone_tcp(h).send_slice(&hello).expect("send");
    pair.drive();
    let (flow, dst) = *pair.up.connects.last().expect("dialled");
    assert_eq!(dst, SocketAddr::new(IpAddr::V6(NORMAL6), 443));
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    assert_eq!(pair.up.written[&flow], hello, "the ClientHello forwarded byte-exact");
    pair.up.to_read.insert(flow, b"server hello".to_vec());
    pair.upstream_readable(flow);
    pair.drive();
    assert_eq!(received(&mut pair, h), b"server hello", "the server's bytes reach the phone over IPv6");
}

#[test]
fn ipv6_dns_is_answered_blocked_at_once_and_allowed_forwarded() {
    let mut pair = dual_stack_pair();
    let resolver = Ipv6Addr::new(0xfd00, 0x6877, 0, 0, 0, 0, 0, 0x53);
    for (name, id) in [(BLOCKED, 1u16), (ALLOWED, 2)] {
        let mut p = Vec::new();
        PacketBuilder::ipv6(PHONE6.octets(), resolver.octets(), 64)
            .udp(5353, 53)
            .write(&mut p, &dns_query_with_id(name, id))
            .expect("builds");
        pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
        pair.settle();
        pair.engine.poll(pair.now);
        pair.settle();
    }
    let out = pair.take_out();
    assert_eq!(out.len(), 1, "only the blocked name is answered at once");
    let parsed = packet::parse(&out[0]).expect("valid");
    assert_eq!((parsed.src, parsed.dst), (IpAddr::V6(resolver), IpAddr::V6(PHONE6)), "answered over IPv6");
    let answer = udp_payload(&out[0]);
    assert_eq!((&answer[..2], rcode(&answer)), (&[0, 1][..], 3), "NXDOMAIN under the query's id");
    assert_eq!(pair.up.udp_sent.len(), 2, "the allowed name (and the blocked one, to learn) went upstream");
}

#[test]
fn ipv6_echo_request_is_refused_with_icmpv6() {
    let mut pair = dual_stack_pair();
    let mut p = Vec::new();
    PacketBuilder::ipv6(PHONE6.octets(), NORMAL6.octets(), 64)
        .icmpv6_echo_request(7, 1)
        .write(&mut p, b"ping")
        .expect("builds");
    pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
    pair.settle();
    let out = pair.take_out();
    assert_eq!(out.len(), 1, "one ICMPv6 error: {out:?}");
    assert_eq!(out[0][0] >> 4, 6, "an IPv6 packet");
    assert_eq!(out[0][6], 58, "carrying ICMPv6");
    assert_eq!(out[0][40], 1, "destination unreachable");
    let events = pair.events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].reason(), events[0].protocol), (Reason::Block(BlockReason::IcmpUnsupported), Protocol::Icmp));
}

// ---------------------------------------------------------------------------------------------------------------
// Heads split over segments: nothing is decided before the head is whole.

#[test]
fn allowed_client_hello_in_three_segments_is_dialled_only_once_whole() {
    let mut pair = Pair::new();
    let hello = tls_record(&client_hello(ALLOWED, 600));
    let h = connect_eager(&mut pair, NORMAL, 443);
    let mut sent = 0;
    for end in [5, 200, hello.len()] {
        pair.phone_tcp(h).send_slice(&hello[sent..end]).expect("send");
        pair.drive();
        sent = end;
        if end < hello.len() {
            assert!(pair.up.connects.is_empty(), "dialled on a partial head ({end} bytes)");
            assert!(pair.events().is_empty(), "decided on a partial head ({end} bytes)");
            assert_eq!(pair.phone_tcp(h).state(), tcp::State::Established, "{end} bytes");
        }
    }
    let (flow, dst) = *pair.up.connects.last().expect("dialled once the ClientHello is whole");
    assert_eq!(pair.up.connects.len(), 1);
    assert_eq!(dst, SocketAddr::from((NORMAL, 443)));
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    assert_eq!(pair.up.written[&flow], hello, "all three segments forwarded, in order");
}

#[test]
fn blocked_client_hello_in_two_segments_is_refused_by_its_name() {
    let mut pair = Pair::new();
    let hello = tls_record(&client_hello(BLOCKED, 600));
    let h = connect_eager(&mut pair, NORMAL, 443);
    send_in_pieces(&mut pair, h, &hello, &[100]);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "RST after the whole ClientHello");
    assert!(pair.up.connects.is_empty(), "never dialled: {:?}", pair.up.connects);
    assert_eq!(reasons(&mut pair), vec![(Reason::Block(BlockReason::TlsSni), Some(BLOCKED.to_string()))]);
}

#[test]
fn http_request_split_before_its_host_is_judged_by_the_host() {
    let mut pair = Pair::new();
    let request = format!("GET / HTTP/1.1\r\nUser-Agent: t\r\nHost: {BLOCKED}\r\n\r\n");
    let h = connect_eager(&mut pair, NORMAL, 80);
    send_in_pieces(&mut pair, h, request.as_bytes(), &[16]);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "refused once the Host header arrived");
    assert!(pair.up.connects.is_empty(), "never dialled: {:?}", pair.up.connects);
    assert_eq!(reasons(&mut pair), vec![(Reason::Block(BlockReason::HttpHost), Some(BLOCKED.to_string()))]);
}

#[test]
fn stalled_partial_client_hello_is_refused_undialled() {
    let mut pair = Pair::new();
    let hello = tls_record(&client_hello(ALLOWED, 600));
    let h = connect_eager(&mut pair, NORMAL, 443);
    pair.phone_tcp(h).send_slice(&hello[..120]).expect("send");
    pair.drive();
    pair.wait(crate::engine::tcp::SNIFF_COMPLETE_TIMEOUT - Duration::from_millis(100));
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Established, "time left to complete the head");
    assert!(pair.events().is_empty());
    pair.wait(Duration::from_millis(200));
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "refused once its time is up");
    assert!(pair.up.connects.is_empty(), "an incomplete head is never dialled: {:?}", pair.up.connects);
    assert_eq!(reasons(&mut pair), vec![(Reason::Block(BlockReason::Uninspectable), None)]);
    assert_eq!(pair.engine.stats().tcp_active, 0, "flow freed");
}

// ---------------------------------------------------------------------------------------------------------------
// DNS.

#[test]
fn two_pipelined_dns_over_tcp_queries_are_both_answered_in_order() {
    let mut pair = Pair::new();
    let h = connect_eager(&mut pair, RESOLVER, 53);
    let mut both = framed(&dns_query_with_id(BLOCKED, 0x0101));
    both.extend_from_slice(&framed(&dns_query_with_id("sa.api.intl.miui.com", 0x0202)));
    pair.phone_tcp(h).send_slice(&both).expect("send");
    pair.drive();
    let got = received(&mut pair, h);
    let first_len = usize::from(u16::from_be_bytes([got[0], got[1]]));
    let first = &got[2..2 + first_len];
    let second = &got[4 + first_len..];
    assert_eq!(usize::from(u16::from_be_bytes([got[2 + first_len], got[3 + first_len]])), second.len());
    assert_eq!((&first[..2], rcode(first)), (&[1, 1][..], 3), "first answer: NXDOMAIN under the first id");
    assert_eq!((&second[..2], rcode(second)), (&[2, 2][..], 3), "second answer: NXDOMAIN under the second id");
    let hosts: Vec<Option<String>> = reasons(&mut pair).into_iter().map(|(_, h)| h).collect();
    assert_eq!(hosts, vec![Some(BLOCKED.to_string()), Some("sa.api.intl.miui.com".to_string())]);
}

#[test]
fn an_allowed_name_that_is_a_cname_for_a_blocked_one_gets_nxdomain() {
    let mut pair = Pair::new();
    pair.udp(RESOLVER, 53, &dns_query(ALLOWED));
    let (flow, forwarded) = pair.up.udp_sent[0].clone();
    pair.engine.on_udp_datagram(pair.now, flow, &cname_answer(&forwarded, BLOCKED, TELEMETRY));
    pair.settle();
    let out = pair.take_out();
    assert_eq!(out.len(), 1, "one answer");
    let answer = udp_payload(&out[0]);
    assert_eq!(&answer[..2], &[0x12, 0x34], "the phone's id");
    assert_eq!(rcode(&answer), 3, "NXDOMAIN, not the cloaked address");
    assert!(!answer.windows(4).any(|w| w == TELEMETRY), "the blocked name's address never reaches the phone");
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].reason(), events[0].host.as_deref()), (Reason::Block(BlockReason::DnsCname), Some(BLOCKED)));
    assert_eq!(events[0].rule().map(|r| r.line), Some(1));
}

#[test]
fn an_allowed_cname_chain_is_delivered_whole() {
    let mut pair = Pair::new();
    pair.udp(RESOLVER, 53, &dns_query(ALLOWED));
    let (flow, forwarded) = pair.up.udp_sent[0].clone();
    let upstream = cname_answer(&forwarded, "cdn.example.net", NORMAL);
    pair.engine.on_udp_datagram(pair.now, flow, &upstream);
    pair.settle();
    let answer = udp_payload(&pair.take_out()[0]);
    assert_eq!(&answer[2..], &upstream[2..], "passed on unchanged");
    assert!(pair.events().is_empty());
}

// ---------------------------------------------------------------------------------------------------------------
// Reasons without a list rule.

#[test]
fn dns_over_tls_is_refused_at_the_syn() {
    let mut pair = Pair::new();
    let h = connect_eager(&mut pair, NORMAL, 853);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "RST to the SYN");
    assert!(pair.up.connects.is_empty());
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].reason(), events[0].action()), (Reason::Block(BlockReason::DnsOverTls), Action::Block));
    assert_eq!(events[0].dst, SocketAddr::from((NORMAL, 853)));
}

#[test]
fn echo_request_is_refused_with_icmp_and_reported() {
    let mut pair = Pair::new();
    let mut p = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).icmpv4_echo_request(7, 1).write(&mut p, b"ping").expect("builds");
    pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
    pair.settle();
    let out = pair.take_out();
    assert_eq!(out.len(), 1, "one ICMP error: {out:?}");
    assert_eq!((out[0][9], out[0][20], out[0][21]), (1, 3, 10), "ICMP unreachable, administratively prohibited");
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].reason(), events[0].protocol), (Reason::Block(BlockReason::IcmpUnsupported), Protocol::Icmp));
    assert!(pair.up.connects.is_empty() && pair.up.udp_opened.is_empty());
}

// ---------------------------------------------------------------------------------------------------------------
// Policy changes and closing orders.

#[test]
fn a_new_policy_judges_new_flows_while_open_ones_keep_forwarding() {
    let mut pair = Pair::new();
    // The body comes later: every request head on a connection is judged, bytes inside a framed body are not.
    let request = format!("POST / HTTP/1.1\r\nHost: {ALLOWED}\r\nContent-Length: 4\r\n\r\n");
    let h = connect_eager(&mut pair, NORMAL, 80);
    pair.phone_tcp(h).send_slice(request.as_bytes()).expect("send");
    pair.drive();
    let (flow, _) = pair.up.connects[0];
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    pair.events();
    let list = format!("||{ALLOWED}^\n");
    let source = ListSource { name: "new.txt".into(), role: ListRole::Block, text: list };
    pair.engine.set_policy(Arc::new(Policy::compile(&[source]).expect("compiles")));
    // The open flow keeps forwarding.
    pair.phone_tcp(h).send_slice(b"more").expect("send");
    pair.drive();
    assert!(pair.up.written[&flow].ends_with(b"more"), "the open flow still forwards");
    // A new connection naming the same host is judged by the new policy.
    let h2 = connect_eager(&mut pair, NORMAL, 80);
    pair.phone_tcp(h2).send_slice(request.as_bytes()).expect("send");
    pair.drive();
    assert_eq!(pair.phone_tcp(h2).state(), tcp::State::Closed, "refused by the new policy");
    assert_eq!(pair.up.connects.len(), 1, "not dialled: {:?}", pair.up.connects);
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].reason(), events[0].host.as_deref()), (Reason::Block(BlockReason::HttpHost), Some(ALLOWED)));
    assert_eq!(events[0].rule().map(|r| &*r.list), Some("new.txt"));
    // And so is DNS.
    pair.udp(RESOLVER, 53, &dns_query(ALLOWED));
    assert_eq!(rcode(&udp_payload(&pair.take_out()[0])), 3, "NXDOMAIN under the new policy");
}

#[test]
fn server_half_closing_first_lets_the_phone_finish_sending() {
    let mut pair = Pair::new();
    let request = format!("POST / HTTP/1.1\r\nHost: {ALLOWED}\r\nContent-Length: 7\r\n\r\n");
    let h = connect_eager(&mut pair, NORMAL, 80);
    pair.phone_tcp(h).send_slice(request.as_bytes()).expect("send");
    pair.drive();
    let (flow, _) = pair.up.connects[0];
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    // The server answers and half-closes.
    pair.up.to_read.insert(flow, b"HTTP/1.1 200 OK\r\n\r\nbye".to_vec());
    pair.up.eof.insert(flow);
    pair.upstream_readable(flow);
    pair.drive();
    assert_eq!(received(&mut pair, h), b"HTTP/1.1 200 OK\r\n\r\nbye");
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::CloseWait, "the server's FIN reached the phone");
    assert!(pair.up.closed.is_empty(), "the phone's direction is still open upstream");
    // The phone still sends, then closes its side.
    pair.phone_tcp(h).send_slice(b"trailer").expect("send");
    pair.drive();
    assert!(pair.up.written[&flow].ends_with(b"trailer"), "bytes after the server's FIN still go upstream");
    pair.phone_tcp(h).close();
    // Virtual time runs so that the phone's retransmission timers fire (as in the half-close test beside).
    for _ in 0..20 {
        if pair.engine.stats().tcp_active == 0 {
            break;
        }
        pair.wait(Duration::from_millis(300));
    }
    assert_eq!(
        (&pair.up.shutdowns, &pair.up.closed),
        (&vec![flow], &vec![(flow, false)]),
        "the phone's FIN goes upstream, then the socket closes gracefully"
    );
    assert_eq!(pair.up.closed, vec![(flow, false)], "closed gracefully, not reset");
    assert_eq!(pair.engine.stats().tcp_active, 0, "flow retired");
}

/// Regression (found by the leak sweep once it required a refusal): `Host: 198.18.1.2` at the address DNS had
/// mapped to a blocked name was judged as a name, matched no rule and was dialled. An address where a name should
/// be names nothing: the flow is decided by its address. The same holds for an SNI carrying an address.
#[test]
fn a_blocked_names_address_given_as_host_or_sni_is_refused_by_address() {
    let mut pair = Pair::new();
    pair.udp(RESOLVER, 53, &dns_query(BLOCKED));
    pair.take_out();
    let (flow, learn) = pair.up.udp_sent[0].clone();
    pair.engine.on_udp_datagram(pair.now, flow, &answer_with_a(&learn, TELEMETRY));
    pair.settle();
    pair.events();
    let literal = "198.18.1.2";
    let h = connect_eager(&mut pair, TELEMETRY, 80);
    pair.phone_tcp(h).send_slice(format!("GET / HTTP/1.1\r\nHost: {literal}\r\n\r\n").as_bytes()).expect("send");
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "HTTP with an address for Host is refused");
    let h = connect_eager(&mut pair, TELEMETRY, 443);
    pair.phone_tcp(h).send_slice(&tls_record(&client_hello(literal, 300))).expect("send");
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "TLS with an address for SNI is refused");
    assert!(pair.up.connects.is_empty(), "the blocked name's address was dialled: {:?}", pair.up.connects);
    let events = reasons(&mut pair);
    assert_eq!(events, vec![(Reason::Block(BlockReason::DnsMappedIp), Some(BLOCKED.to_string())); 2]);
}
