//! Engine tests of LAN discovery: broadcast and multicast flows, whose answers come from the hosts that reply.

use super::*;

const MDNS: [u8; 4] = [224, 0, 0, 251];

/// The (source, UDP payload) of a packet to the phone.
fn source_and_payload(packet: &[u8]) -> (IpAddr, u16, Vec<u8>) {
    let (src, _) = addresses(packet);
    let p = packet::parse(packet).expect("valid");
    match p.transport {
        Transport::Udp { payload, .. } => (src.ip(), src.port(), payload.to_vec()),
        other => panic!("not udp: {other:?}"),
    }
}

/// The (source, destination) of a UDP packet to the phone.
fn addresses(packet: &[u8]) -> (SocketAddr, SocketAddr) {
    let p = packet::parse(packet).expect("valid");
    match p.transport {
        Transport::Udp { src_port, dst_port, .. } => {
            (SocketAddr::new(p.src, src_port), SocketAddr::new(p.dst, dst_port))
        }
        other => panic!("not udp: {other:?}"),
    }
}

// Issue 12.4: an mDNS query's answer comes from the replying host, not from 224.0.0.251; the phone must get it
// from that host (a LAN host in a blocked range stays blocked).
#[test]
fn answers_to_a_multicast_query_come_from_the_hosts_that_reply() {
    let mut pair = Pair::new();
    pair.udp(MDNS, 5353, b"query");
    let (flow, dst) = pair.up.udp_opened[0];
    assert_eq!(dst, SocketAddr::from((MDNS, 5353)));
    let lamp = SocketAddr::from(([198, 18, 0, 40], 5353));
    pair.engine.on_udp_datagram_from(pair.now, flow, lamp, b"lamp here");
    pair.settle();
    let out = pair.take_out();
    assert_eq!(out.len(), 1);
    assert_eq!(source_and_payload(&out[0]), (lamp.ip(), 5353, b"lamp here".to_vec()));
    // A host in a blocked range answers too: dropped, counted.
    let blocked = SocketAddr::from((BLOCKED_NET, 5353));
    let before = pair.engine.stats().blocked;
    pair.engine.on_udp_datagram_from(pair.now, flow, blocked, b"blocked host");
    pair.settle();
    assert!(pair.take_out().is_empty(), "a blocked host's answer must not reach the phone");
    assert_eq!(pair.engine.stats().blocked, before + 1);
}

#[test]
fn a_connected_flow_answers_from_its_server() {
    let mut pair = Pair::new();
    pair.udp(NORMAL, 7, b"ping");
    let (flow, _) = pair.up.udp_opened[0];
    pair.engine.on_udp_datagram_from(pair.now, flow, SocketAddr::from((NORMAL, 7)), b"pong");
    pair.settle();
    assert_eq!(source_and_payload(&pair.take_out()[0]), (IpAddr::from(NORMAL), 7, b"pong".to_vec()));
}

// Issue 12.4: an mDNS responder answers a querier on port 5353 by multicasting to the group (RFC 6762 §6); the
// phone's querier joined the group on the tun and only hears the answer if it is addressed to the group.
#[test]
fn answers_sent_to_the_group_reach_the_phone_addressed_to_the_group() {
    let mut pair = Pair::new();
    pair.udp(MDNS, 5353, b"query");
    let (flow, _) = pair.up.udp_opened[0];
    let lamp = SocketAddr::from(([198, 18, 0, 40], 5353));
    pair.engine.on_udp_group_datagram(pair.now, flow, lamp, b"lamp here");
    let out = pair.take_out();
    assert_eq!(out.len(), 1);
    assert_eq!(addresses(&out[0]), (lamp, SocketAddr::from((MDNS, 5353))));
    assert_eq!(source_and_payload(&out[0]).2, b"lamp here");
    // A unicast answer on the same flow still goes to the phone's own address.
    pair.engine.on_udp_datagram_from(pair.now, flow, lamp, b"unicast");
    pair.settle();
    assert_eq!(addresses(&pair.take_out()[0]).1, SocketAddr::from((PHONE, 5353)));
    // A blocked host's announcement to the group is not heard either.
    let before = pair.engine.stats().blocked;
    pair.engine.on_udp_group_datagram(pair.now, flow, SocketAddr::from((BLOCKED_NET, 5353)), b"blocked host");
    assert!(pair.take_out().is_empty());
    assert_eq!(pair.engine.stats().blocked, before + 1);
}
