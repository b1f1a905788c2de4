//! Engine tests of the bypasses issue 18 found (QUIC, DNS learning, NAT64, exhaustion): each one is refused and
//! nothing reaches the blocked server.

use super::inspect_tests::{client_hello, is_icmp_port_unreachable};
use super::*;
use crate::inspect::quic::seal::{client_initial, crypto_frame};
use crate::inspect::quic::VERSION_1;

/// Two coalesced Initials, CRYPTO at offset 0 in both, the first naming a blocked host and the second an allowed
/// one of the same length. Before: the assembler kept the last copy, allowed the flow and forwarded the datagram
/// (blocked hello first) upstream. Now: refused as uninspectable, nothing sent.
#[test]
fn quic_overlapping_crypto_that_differs_is_refused_and_nothing_goes_upstream() {
    let mut pair = Pair::new();
    let blocked = client_hello("tracking.intl.miui.com", 400);
    let allowed = client_hello("www.example-shop.co.uk", 400);
    assert_eq!(blocked.len(), allowed.len());
    let mut datagram = client_initial(VERSION_1, &[3; 8], 0, &crypto_frame(0, &blocked), 600);
    datagram.extend(client_initial(VERSION_1, &[3; 8], 1, &crypto_frame(0, &allowed), 600));
    pair.udp(NORMAL, 443, &datagram);
    assert!(pair.up.udp_opened.is_empty() && pair.up.udp_sent.is_empty(), "zero datagrams upstream");
    let out = pair.take_out();
    assert_eq!(out.len(), 1);
    assert!(is_icmp_port_unreachable(&out[0]));
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].reason(), events[0].host.as_deref()), (Reason::Block(BlockReason::Uninspectable), None));
    // Its retransmission is refused too, still nothing upstream.
    pair.udp(NORMAL, 443, &datagram);
    assert_eq!(pair.take_out().len(), 1);
    pair.wait(Duration::from_secs(2));
    assert!(pair.up.udp_opened.is_empty() && pair.up.udp_sent.is_empty());
}

/// HTTP/3 is not bound to port 443. Before: only UDP 443 was held, so a blocked name on 8443 was forwarded.
#[test]
fn quic_on_other_ports_is_held_and_judged_by_its_server_name() {
    for port in [8443, 4433] {
        let mut pair = Pair::new();
        let hello = client_hello("tracking.intl.miui.com", 400);
        pair.udp(NORMAL, port, &client_initial(VERSION_1, &[4; 8], 0, &crypto_frame(0, &hello), 1200));
        assert!(pair.up.udp_opened.is_empty() && pair.up.udp_sent.is_empty(), "port {port}: nothing upstream");
        let events = pair.events();
        assert_eq!(
            events.iter().map(|e| e.reason()).collect::<Vec<_>>(),
            [Reason::Block(BlockReason::QuicSni)],
            "port {port}"
        );
        // An allowed name on the same port is forwarded.
        let hello = client_hello("www.example.org", 400);
        let initial = client_initial(VERSION_1, &[5; 8], 0, &crypto_frame(0, &hello), 1200);
        let mut p = Vec::new();
        PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(6001, port).write(&mut p, &initial).expect("builds");
        pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
        pair.settle();
        assert_eq!(pair.up.udp_opened.len(), 1, "port {port}: allowed name forwarded");
    }
    // DNS over QUIC (853) is still refused outright when DNS over TLS is.
    let mut pair = Pair::new();
    let hello = client_hello("dns.example.org", 400);
    pair.udp(NORMAL, 853, &client_initial(VERSION_1, &[6; 8], 0, &crypto_frame(0, &hello), 1200));
    assert!(pair.up.udp_sent.is_empty());
    assert_eq!(pair.events().iter().map(|e| e.reason()).collect::<Vec<_>>(), [Reason::Block(BlockReason::DnsOverTls)]);
}

/// Refused QUIC flows hold no socket: before, each stayed in the hold table and counted toward the UDP cap for a
/// minute, so a client refused often enough locked every app out of UDP.
#[test]
fn refused_quic_flows_do_not_count_toward_the_udp_cap() {
    let mut pair = Pair::new();
    pair.engine.config.max_udp_flows = 4;
    let hello = client_hello("tracking.intl.miui.com", 400);
    for port in 0..10u16 {
        let initial = client_initial(VERSION_1, &[7; 8], 0, &crypto_frame(0, &hello), 1200);
        let mut p = Vec::new();
        PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(7000 + port, 443).write(&mut p, &initial).expect("builds");
        pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
        pair.settle();
    }
    assert!(pair.engine.quic.refused() <= 4, "refusals bounded");
    pair.events();
    pair.udp(NORMAL, 7, b"an app's plain UDP");
    assert_eq!(pair.up.udp_opened.len(), 1, "the table still has room");
    assert!(pair.events().iter().all(|e| e.reason() != Reason::Block(BlockReason::FlowLimit)));
}

/// QUIC flows still held (their ClientHello not yet whole) count toward the UDP cap as open flows do: otherwise a
/// client could hold any number of them.
#[test]
fn held_quic_flows_count_toward_the_udp_cap() {
    let mut pair = Pair::new();
    pair.engine.config.max_udp_flows = 2;
    pair.udp(NORMAL, 7, b"an open flow");
    let hello = client_hello("www.example.org", 2500);
    pair.udp(NORMAL, 443, &client_initial(VERSION_1, &[5; 8], 0, &crypto_frame(0, &hello[..1100]), 1200));
    assert_eq!(pair.engine.quic.holding(), 1, "held while the ClientHello is incomplete");
    pair.events();
    pair.udp(NORMAL, 8, b"one too many");
    assert_eq!(pair.up.udp_opened.len(), 1, "the table is full: one open, one held");
    let events = pair.events();
    assert_eq!(events.iter().map(|e| e.reason()).collect::<Vec<_>>(), [Reason::Block(BlockReason::FlowLimit)]);
}

/// A blocked query's labels can carry data to the blocked domain's authoritative servers. Before: the client's
/// query was forwarded as it was (for address learning), 20 queries → 20 upstream, each with the identifier. Now:
/// the upstream sees only the rule's name, once.
#[test]
fn learning_never_forwards_the_clients_name_and_is_rate_limited() {
    let mut pair = Pair::new();
    for i in 0..20 {
        let id = format!("ZGV2aWNlLWlkLTEyMzQ1Njc4OTA{i:02}");
        pair.udp([198, 18, 53, 53], 53, &dns_query(&format!("{id}.tracking.intl.miui.com")));
        assert_eq!(pair.take_out().len(), 1, "answered at once");
    }
    let sent: Vec<String> =
        pair.up.udp_sent.iter().map(|(_, q)| crate::inspect::dns::parse_query(q).expect("a query").name).collect();
    assert_eq!(sent, ["tracking.intl.miui.com"], "only the rule's name, once");
    assert!(pair.up.udp_sent.iter().all(|(_, q)| !q.windows(6).any(|w| w == b"ZGV2aW")));
    // Its answer maps the address to the rule's name: a connection there is refused (dns_mapped_ip).
    let (flow, learn) = pair.up.udp_sent[0].clone();
    pair.engine.on_udp_datagram(pair.now, flow, &answer_with_a(&learn, TELEMETRY));
    pair.settle();
    pair.events();
    let h = pair.connect(TELEMETRY, 22);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed);
    let events = pair.events();
    assert_eq!(events[0].reason(), Reason::Block(BlockReason::DnsMappedIp));
    assert_eq!(events[0].host.as_deref(), Some("tracking.intl.miui.com"));
    // Learnt again after the interval.
    pair.now += learn::LEARN_INTERVAL;
    pair.udp([198, 18, 53, 53], 53, &dns_query("other.tracking.intl.miui.com"));
    assert_eq!(pair.up.udp_sent.len(), 2);
}

/// A NAT64 address (`64:ff9b::a.b.c.d`) reaches `a.b.c.d`. Before: only `::ffff:0:0/96` was mapped, so a flow to
/// the NAT64 form of a blocked range, or of an address learnt for a blocked name, was dialled.
#[test]
fn nat64_destinations_are_judged_as_the_ipv4_address_they_embed() {
    let mut pair = Pair::new();
    let phone6: std::net::Ipv6Addr = "fd00::1".parse().expect("addr");
    let nat64 = |v4: [u8; 4]| {
        std::net::Ipv6Addr::from(0x0064_ff9b_0000_0000_0000_0000_0000_0000u128 | u128::from(u32::from_be_bytes(v4)))
    };
    // A blocked IPv4 range, over UDP.
    let mut p = Vec::new();
    PacketBuilder::ipv6(phone6.octets(), nat64(BLOCKED_NET).octets(), 64)
        .udp(5000, 9999)
        .write(&mut p, b"hello")
        .expect("builds");
    pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
    pair.settle();
    assert!(pair.up.udp_opened.is_empty(), "never opened");
    assert_eq!(pair.events().iter().map(|e| e.reason()).collect::<Vec<_>>(), [Reason::Block(BlockReason::IpCidr)]);
    // An address learnt (over IPv4) for a blocked name, over TCP to a server-first port.
    pair.udp([198, 18, 53, 53], 53, &dns_query("tracking.intl.miui.com"));
    let (flow, learn) = pair.up.udp_sent[0].clone();
    pair.engine.on_udp_datagram(pair.now, flow, &answer_with_a(&learn, TELEMETRY));
    pair.settle();
    pair.events();
    let mut syn = Vec::new();
    PacketBuilder::ipv6(phone6.octets(), nat64(TELEMETRY).octets(), 64)
        .tcp(40000, 22, 1, 65535)
        .syn()
        .write(&mut syn, &[])
        .expect("builds");
    pair.engine.handle_tun_packet(pair.now, &syn, &mut pair.up);
    pair.settle();
    pair.engine.poll(pair.now);
    pair.settle();
    assert!(pair.up.connects.is_empty(), "never dialled: {:?}", pair.up.connects);
    let events = pair.events();
    assert_eq!(events.iter().map(|e| e.reason()).collect::<Vec<_>>(), [Reason::Block(BlockReason::DnsMappedIp)]);
    assert_eq!(events[0].host.as_deref(), Some("tracking.intl.miui.com"));
}

/// An ICMP echo flood. Before: every echo was its own event (1,000 pings, 1,000 events stored for 30 days).
/// Now: the first is reported, the rest of the window is one summary event with `repeats`.
#[test]
fn identical_blocks_in_a_flood_are_folded_into_one_event_with_a_count() {
    let mut pair = Pair::new();
    let mut ping = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).icmpv4_echo_request(1, 1).write(&mut ping, b"ping").expect("builds");
    for _ in 0..1000 {
        pair.engine.handle_tun_packet(pair.now, &ping, &mut pair.up);
        pair.settle();
        pair.now += Duration::from_millis(1);
    }
    assert_eq!(pair.take_out().len(), 1000, "each echo is still refused");
    let events = pair.events();
    assert_eq!(events.len(), 1, "the first at once");
    assert_eq!((events[0].reason(), events[0].repeats), (Reason::Block(BlockReason::IcmpUnsupported), None));
    pair.wait(repeats::FOLD_WINDOW);
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].reason(), events[0].repeats), (Reason::Block(BlockReason::IcmpUnsupported), Some(999)));
    let line = serde_json::to_string(&events[0]).expect("json");
    assert!(line.contains("\"repeats\":999"), "{line}");
    assert_eq!(pair.engine.stats().blocked, 1000, "every block still counted");
    // A fold still open when the engine stops is flushed, not lost.
    pair.engine.handle_tun_packet(pair.now, &ping, &mut pair.up);
    pair.settle();
    pair.engine.handle_tun_packet(pair.now, &ping, &mut pair.up);
    pair.settle();
    pair.engine.handle_tun_packet(pair.now, &ping, &mut pair.up);
    pair.settle();
    assert_eq!(pair.events().len(), 1);
    pair.engine.flush_folded_events(pair.now);
    assert_eq!(pair.events().iter().map(|e| e.repeats).collect::<Vec<_>>(), [Some(2)]);
    pair.now += repeats::FOLD_WINDOW;
    // Another destination is another event; a new window after the summary starts with an event of its own.
    pair.udp(BLOCKED_NET, 9, b"x");
    pair.engine.handle_tun_packet(pair.now, &ping, &mut pair.up);
    pair.settle();
    let reasons: Vec<Reason> = pair.events().iter().map(|e| e.reason()).collect();
    assert_eq!(reasons, [Reason::Block(BlockReason::IpCidr), Reason::Block(BlockReason::IcmpUnsupported)]);
}

/// One client flooding queries to a resolver that does not answer. Before: it took every pending slot and every
/// other client got SERVFAIL at once. Now: it is held to half of them, another client's query goes up.
#[test]
fn pending_dns_is_bounded_per_client_address() {
    let mut pair = Pair::new();
    for i in 0..2000u16 {
        let mut p = Vec::new();
        let query = dns_query(&format!("q{i}.example.org"));
        PacketBuilder::ipv4([10, 111, 0, 9], [198, 18, 53, 53], 64)
            .udp(1024 + i, 53)
            .write(&mut p, &query)
            .expect("builds");
        pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
        pair.settle();
    }
    let share = super::super::dns::MAX_PENDING_PER_CLIENT;
    assert!(share < super::super::dns::MAX_PENDING);
    assert_eq!(pair.up.udp_sent.len(), share, "the flooding client's share");
    assert_eq!(pair.take_out().len(), 2000 - share, "the rest answered SERVFAIL at once");
    pair.events();
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    assert_eq!(pair.up.udp_sent.len(), share + 1, "another client's query still goes upstream");
    assert!(pair.take_out().is_empty());
}

/// Found by the engine fuzz target's new assertion: a flow whose first datagram is not QUIC is relayed by
/// address, and a client Initial naming a blocked host sent on it afterwards reached the server. Now dropped, as
/// is an Initial of a second connection (new DCID) on an allowed QUIC flow; the judged connection's go through.
#[test]
fn quic_initials_on_a_flow_not_judged_for_them_are_dropped() {
    let mut pair = Pair::new();
    pair.udp(NORMAL, 443, b"not quic first");
    assert_eq!(pair.up.udp_sent.len(), 1);
    let blocked = client_hello("tracking.intl.miui.com", 400);
    let dropped = pair.engine.stats().dropped;
    pair.udp(NORMAL, 443, &client_initial(VERSION_1, &[8; 8], 0, &crypto_frame(0, &blocked), 1200));
    assert_eq!(pair.up.udp_sent.len(), 1, "the Initial naming a blocked host never went upstream");
    assert_eq!(pair.engine.stats().dropped, dropped + 1, "and was counted as dropped");
    pair.udp(NORMAL, 443, b"\x40short header");
    assert_eq!(pair.up.udp_sent.len(), 2, "other datagrams still relayed");
    // An allowed QUIC flow: its own Initials pass, another connection's do not.
    let mut pair = Pair::new();
    let allowed = client_hello("www.example.org", 400);
    pair.udp(NORMAL, 443, &client_initial(VERSION_1, &[9; 8], 0, &crypto_frame(0, &allowed), 1200));
    pair.udp(NORMAL, 443, &client_initial(VERSION_1, &[9; 8], 1, &[0x01], 1200));
    assert_eq!(pair.up.udp_sent.len(), 2, "the judged connection's Initials pass");
    pair.udp(NORMAL, 443, &client_initial(VERSION_1, &[7; 8], 0, &crypto_frame(0, &blocked), 1200));
    assert_eq!(pair.up.udp_sent.len(), 2, "a second connection's Initial is dropped");
}
