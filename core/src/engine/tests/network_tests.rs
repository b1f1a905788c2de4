//! Engine tests of network changes: a family without a route upstream is refused at once (RST, ICMP no route)
//! and comes back when the network does; flows whose upstream socket failed end with an error event.

use super::*;
use etherparse::{Icmpv4Type, Icmpv6Type, SlicedPacket, TransportSlice};

/// A SYN from the phone's IPv6 address to `SERVER6` port `port`.
fn syn6(port: u16) -> Vec<u8> {
    let mut p = Vec::new();
    PacketBuilder::ipv6(PHONE6, SERVER6, 64).tcp(40001, port, 1000, 64240).syn().write(&mut p, &[]).expect("builds");
    p
}

/// A UDP datagram from the phone's IPv6 address to `SERVER6` port `port`.
fn udp6(port: u16) -> Vec<u8> {
    let mut p = Vec::new();
    PacketBuilder::ipv6(PHONE6, SERVER6, 64).udp(5353, port).write(&mut p, b"ping").expect("builds");
    p
}

/// An IPv4-only network, as an IPv4-only Wi-Fi reports it.
fn ipv4_only() -> NetworkInfo {
    NetworkInfo { ipv6: false, ..NetworkInfo::default() }
}

/// The TCP flags (syn, ack, rst) of the only packet in `out`.
fn tcp_flags(out: &[Vec<u8>]) -> (bool, bool, bool) {
    assert_eq!(out.len(), 1, "one answer: {out:?}");
    match SlicedPacket::from_ip(&out[0]).expect("valid").transport {
        Some(TransportSlice::Tcp(t)) => (t.syn(), t.ack(), t.rst()),
        other => panic!("not tcp: {other:?}"),
    }
}

#[test]
fn syn_of_a_family_without_route_is_reset_at_once_and_never_dialled() {
    let mut pair = Pair::new();
    pair.engine.network_changed(ipv4_only());
    pair.raw(&syn6(443));
    assert_eq!(tcp_flags(&pair.take_out()), (false, true, true), "RST|ACK to the SYN, at once");
    pair.raw(&syn6(22));
    assert_eq!(tcp_flags(&pair.take_out()), (false, true, true), "server-first ports too");
    assert!(pair.up.connects.is_empty(), "never dialled: {:?}", pair.up.connects);
    assert_eq!(pair.engine.stats().tcp_active, 0);
    let events = pair.events();
    assert_eq!(events.len(), 2, "{events:?}");
    for event in &events {
        assert_eq!((event.action(), event.reason()), (Action::Error, Reason::Error(ErrorReason::NoRoute)));
        assert!(event.error().unwrap_or_default().contains("IPv6"), "{event:?}");
    }
    // IPv4 still works.
    let h = pair.connect(NORMAL, 22);
    assert_eq!(pair.up.connects.len(), 1, "IPv4 dialled");
    assert_ne!(pair.phone_tcp(h).state(), tcp::State::Closed);
}

#[test]
fn the_family_comes_back_with_the_network() {
    let mut pair = Pair::new();
    pair.engine.network_changed(ipv4_only());
    pair.raw(&syn6(443));
    assert_eq!(tcp_flags(&pair.take_out()), (false, true, true));
    pair.engine.network_changed(NetworkInfo::default());
    pair.raw(&syn6(443));
    assert_eq!(tcp_flags(&pair.take_out()), (true, true, false), "SYN|ACK: accepted for sniffing again");
    assert_eq!(pair.engine.stats().tcp_active, 1);
}

#[test]
fn udp_of_a_family_without_route_gets_icmp_no_route_and_dns_is_unaffected() {
    let mut pair = Pair::new();
    pair.engine.network_changed(NetworkInfo { ipv4: false, ..NetworkInfo::default() });
    pair.raw(&udp6(7777));
    pair.udp(NORMAL, 7777, b"ping");
    let out = pair.take_out();
    assert_eq!(out.len(), 1, "only the IPv4 datagram is refused: {out:?}");
    match SlicedPacket::from_ip(&out[0]).expect("valid").transport {
        Some(TransportSlice::Icmpv4(i)) => assert_eq!(
            i.icmp_type(),
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Network)
        ),
        other => panic!("not icmp: {other:?}"),
    }
    assert_eq!(pair.up.udp_opened.len(), 1, "the IPv6 flow went upstream, the IPv4 one did not");
    pair.engine.network_changed(ipv4_only());
    pair.raw(&udp6(7778));
    match SlicedPacket::from_ip(&pair.take_out()[0]).expect("valid").transport {
        Some(TransportSlice::Icmpv6(i)) => assert_eq!(
            i.icmp_type(),
            Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::NoRoute)
        ),
        other => panic!("not icmpv6: {other:?}"),
    }
    // DNS to an address of the missing family is still answered by the engine.
    pair.engine.network_changed(NetworkInfo { ipv4: false, ..NetworkInfo::default() });
    pair.events();
    pair.udp([198, 18, 53, 53], 53, &dns_query("tracking.intl.miui.com"));
    assert_eq!(pair.take_out().len(), 1, "NXDOMAIN");
    assert_eq!(pair.events()[0].reason(), Reason::Block(BlockReason::DnsQuery));
}

#[test]
fn upstream_error_ends_a_forwarding_tcp_flow_and_a_udp_flow() {
    let mut pair = Pair::new();
    let (h, flow) = forwarding_flow(&mut pair);
    pair.events();
    let vanished = || io::Error::from_raw_os_error(99);
    pair.engine.on_upstream_error(pair.now, flow, vanished());
    pair.settle();
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "phone reset at once");
    assert_eq!(pair.up.closed, vec![(flow, true)], "upstream socket closed");
    pair.udp(NORMAL, 7777, b"ping");
    let (udp_flow, _) = pair.up.udp_opened[0];
    pair.engine.on_upstream_error(pair.now, udp_flow, vanished());
    pair.settle();
    assert_eq!(pair.engine.stats().udp_active, 0, "UDP flow closed");
    let events = pair.events();
    let reasons: Vec<_> = events.iter().map(|e| (e.action(), e.reason())).collect();
    assert_eq!(
        reasons,
        vec![
            (Action::Error, Reason::Error(ErrorReason::UpstreamReset)),
            (Action::Error, Reason::Error(ErrorReason::UdpFailed))
        ]
    );
    pair.udp(NORMAL, 7777, b"again");
    assert_eq!(pair.up.udp_opened.len(), 2, "the next datagram opens a new socket");
}

/// An IPv4-mapped IPv6 destination leaves as IPv4: an IPv4-only network forwards it, one without IPv4 refuses it.
#[test]
fn a_mapped_destination_follows_the_ipv4_route() {
    let mapped = std::net::Ipv4Addr::from(NORMAL).to_ipv6_mapped().octets();
    let datagram = || {
        let mut p = Vec::new();
        PacketBuilder::ipv6(PHONE6, mapped, 64).udp(5353, 7).write(&mut p, b"ping").expect("builds");
        p
    };
    let mut pair = Pair::new();
    pair.engine.network_changed(ipv4_only());
    pair.raw(&datagram());
    assert_eq!(pair.up.udp_opened.len(), 1, "forwarded over IPv4");
    let mut pair = Pair::new();
    pair.engine.network_changed(NetworkInfo { ipv4: false, ..NetworkInfo::default() });
    pair.raw(&datagram());
    assert!(pair.up.udp_opened.is_empty(), "no IPv4 route: refused");
}

/// The resolvers and Private DNS server a network reports replace the configured ones; a report without
/// resolvers (the Linux driver's) leaves them.
#[test]
fn a_networks_resolvers_and_private_dns_take_over() {
    let mut pair = Pair::new();
    pair.engine.network_changed(ipv4_only());
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    assert_eq!(pair.up.udp_opened[0].1, "198.18.0.1:53".parse().unwrap(), "the configured resolver stays");
    pair.engine.network_changed(NetworkInfo {
        dns_servers: vec![IpAddr::from([198, 18, 0, 9])],
        private_dns: Some("dns.example".into()),
        ..ipv4_only()
    });
    pair.udp([198, 18, 53, 53], 53, &dns_query("www.example.org"));
    assert_eq!(pair.up.udp_opened[1].1, "198.18.0.9:53".parse().unwrap(), "the network's resolver");
    assert_eq!(pair.engine.config.private_dns_server.as_deref(), Some("dns.example"));
}

/// A flow whose socket fails while it is still dialling failed to connect; once connected, it was reset.
#[test]
fn an_upstream_error_while_dialling_is_a_connect_failure() {
    for connected in [false, true] {
        let mut pair = Pair::new();
        let h = pair.connect(NORMAL, 7777);
        pair.wait(pair.engine.config.sniff_timeout);
        let (flow, _) = pair.up.connects[0];
        if connected {
            pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
            pair.settle();
        }
        pair.events();
        pair.engine.on_upstream_error(pair.now, flow, io::Error::from_raw_os_error(101));
        pair.settle();
        pair.drive();
        assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed);
        let want = if connected { ErrorReason::UpstreamReset } else { ErrorReason::ConnectFailed };
        let reasons: Vec<Reason> = super::failure_tests::failures(&mut pair).into_iter().map(|f| f.0).collect();
        assert_eq!(reasons, [Reason::Error(want)], "connected: {connected}");
    }
}
