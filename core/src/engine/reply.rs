//! Packets the engine writes to the tun on its own behalf: TCP resets, ICMP errors and UDP datagrams.
//!
//! Every builder writes a complete IP packet into the caller's buffer (cleared first) with valid checksums.

use super::packet::TcpSummary;
use etherparse::{icmpv4, icmpv6, Icmpv4Type, Icmpv6Type, PacketBuilder};
use std::net::{IpAddr, SocketAddr};

/// Hop limit of packets we originate.
const TTL: u8 = 64;
/// How much of the offending packet an ICMPv4 error quotes (RFC 1812 §4.3.2.3: as much as fits in 576 bytes).
const ICMPV4_QUOTE_MAX: usize = 576 - 20 - 8;
/// How much of the offending packet an ICMPv6 error quotes (RFC 4443 §2.4: the error must fit the minimum MTU).
const ICMPV6_QUOTE_MAX: usize = 1280 - 40 - 8;

/// Why an ICMP destination-unreachable error is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unreachable {
    /// The port is closed to this flow (blocked UDP): applications see `ECONNREFUSED`.
    Port,
    /// Administratively prohibited (refused ICMP echo).
    Prohibited,
    /// No route to the destination network (its family has none upstream): applications see `ENETUNREACH`.
    NoRoute,
}

/// A RST answering `seg` (sent by `client` to `server`), as RFC 9293 §3.10.7.1 prescribes for a closed port.
pub(crate) fn tcp_reset(out: &mut Vec<u8>, client: SocketAddr, server: SocketAddr, seg: &TcpSummary) -> bool {
    let base = match ip_pair(server.ip(), client.ip()) {
        Some(b) => b,
        None => return false,
    };
    let builder = if seg.ack {
        base.tcp(server.port(), client.port(), seg.ack_num, 0).rst()
    } else {
        let seg_len = seg.payload_len as u32 + u32::from(seg.syn) + u32::from(seg.fin);
        base.tcp(server.port(), client.port(), 0, 0).rst().ack(seg.seq.wrapping_add(seg_len))
    };
    out.clear();
    builder.write(out, &[]).is_ok()
}

/// A UDP datagram from `from` to `to`.
pub(crate) fn udp_datagram(out: &mut Vec<u8>, from: SocketAddr, to: SocketAddr, payload: &[u8]) -> bool {
    let base = match ip_pair(from.ip(), to.ip()) {
        Some(b) => b,
        None => return false,
    };
    out.clear();
    base.udp(from.port(), to.port()).write(out, payload).is_ok()
}

/// An ICMP/ICMPv6 destination-unreachable error about `offending` (a packet from `client` to `server`),
/// sent from `server` so the client's socket sees it as the destination's answer.
pub(crate) fn icmp_unreachable(
    out: &mut Vec<u8>,
    server: IpAddr,
    client: IpAddr,
    offending: &[u8],
    why: Unreachable,
) -> bool {
    let (v4, v6) = match why {
        Unreachable::Port => (icmpv4::DestUnreachableHeader::Port, icmpv6::DestUnreachableCode::Port),
        Unreachable::Prohibited => {
            (icmpv4::DestUnreachableHeader::HostProhibited, icmpv6::DestUnreachableCode::Prohibited)
        }
        Unreachable::NoRoute => (icmpv4::DestUnreachableHeader::Network, icmpv6::DestUnreachableCode::NoRoute),
    };
    icmp_error(
        out,
        server,
        client,
        offending,
        Icmpv4Type::DestinationUnreachable(v4),
        Icmpv6Type::DestinationUnreachable(v6),
    )
}

/// An ICMP "fragmentation needed" (IPv4) or ICMPv6 "packet too big" error about `offending` (a packet from
/// `client` to `server`) naming `mtu` as the next hop's MTU, sent from `server` as a router on the path would: the
/// client's stack lowers its path MTU to `server` and fragments (or reports `EMSGSIZE` to a socket that forbids it).
pub(crate) fn icmp_too_big(out: &mut Vec<u8>, server: IpAddr, client: IpAddr, offending: &[u8], mtu: u16) -> bool {
    let v4 = icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu };
    let v6 = Icmpv6Type::PacketTooBig { mtu: u32::from(mtu) };
    icmp_error(out, server, client, offending, Icmpv4Type::DestinationUnreachable(v4), v6)
}

/// An ICMP error from `server` to `client` quoting as much of `offending` as its family allows: `v4` or `v6`,
/// whichever family the two addresses are. False if they differ.
fn icmp_error(
    out: &mut Vec<u8>,
    server: IpAddr,
    client: IpAddr,
    offending: &[u8],
    v4: Icmpv4Type,
    v6: Icmpv6Type,
) -> bool {
    out.clear();
    match (server, client) {
        (IpAddr::V4(s), IpAddr::V4(c)) => {
            let quote = &offending[..offending.len().min(ICMPV4_QUOTE_MAX)];
            PacketBuilder::ipv4(s.octets(), c.octets(), TTL).icmpv4(v4).write(out, quote).is_ok()
        }
        (IpAddr::V6(s), IpAddr::V6(c)) => {
            let quote = &offending[..offending.len().min(ICMPV6_QUOTE_MAX)];
            PacketBuilder::ipv6(s.octets(), c.octets(), TTL).icmpv6(v6).write(out, quote).is_ok()
        }
        _ => false,
    }
}

/// The IP layer of a packet from `src` to `dst`, if both are the same family.
fn ip_pair(src: IpAddr, dst: IpAddr) -> Option<etherparse::PacketBuilderStep<etherparse::IpHeaders>> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(PacketBuilder::ipv4(s.octets(), d.octets(), TTL)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(PacketBuilder::ipv6(s.octets(), d.octets(), TTL)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::{parse, Transport};
    use super::*;

    fn syn(seq: u32) -> TcpSummary {
        TcpSummary {
            src_port: 40000,
            dst_port: 443,
            seq,
            ack_num: 0,
            syn: true,
            ack: false,
            rst: false,
            fin: false,
            payload_len: 0,
        }
    }

    #[test]
    fn reset_answers_syn_with_ack_of_seq_plus_one() {
        let client: SocketAddr = "10.111.0.1:40000".parse().expect("addr");
        let server: SocketAddr = "198.18.1.2:443".parse().expect("addr");
        let mut out = Vec::new();
        assert!(tcp_reset(&mut out, client, server, &syn(u32::MAX)));
        let p = parse(&out).expect("valid packet");
        assert_eq!((p.src, p.dst), (server.ip(), client.ip()));
        match p.transport {
            Transport::Tcp(t) => {
                assert!(t.rst && t.ack);
                assert_eq!(t.seq, 0);
                assert_eq!(t.ack_num, 0, "seq wraps");
                assert_eq!((t.src_port, t.dst_port), (443, 40000));
            }
            other => panic!("not tcp: {other:?}"),
        }
    }

    #[test]
    fn reset_answers_ack_with_its_ack_number() {
        let client: SocketAddr = "[fd00::1]:40000".parse().expect("addr");
        let server: SocketAddr = "[fd00::2]:80".parse().expect("addr");
        let seg = TcpSummary { syn: false, ack: true, ack_num: 1234, ..syn(9) };
        let mut out = Vec::new();
        assert!(tcp_reset(&mut out, client, server, &seg));
        match parse(&out).expect("valid").transport {
            Transport::Tcp(t) => assert!(t.rst && !t.ack && t.seq == 1234),
            other => panic!("not tcp: {other:?}"),
        }
    }

    #[test]
    fn udp_and_icmp_round_trip() {
        let a: SocketAddr = "198.18.1.1:7".parse().expect("addr");
        let b: SocketAddr = "10.111.0.1:5555".parse().expect("addr");
        let mut dgram = Vec::new();
        assert!(udp_datagram(&mut dgram, a, b, b"echo"));
        let p = parse(&dgram).expect("valid");
        assert_eq!(p.transport, Transport::Udp { src_port: 7, dst_port: 5555, payload: b"echo" });
        let mut icmp = Vec::new();
        assert!(icmp_unreachable(&mut icmp, b.ip(), a.ip(), &dgram, Unreachable::Port));
        let sliced = etherparse::SlicedPacket::from_ip(&icmp).expect("valid icmp");
        match sliced.transport {
            Some(etherparse::TransportSlice::Icmpv4(i)) => {
                assert_eq!(i.icmp_type(), Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port))
            }
            other => panic!("not icmp: {other:?}"),
        }
        assert!(!udp_datagram(&mut dgram, a, "[::1]:1".parse().expect("addr"), b"x"), "mixed families refused");
    }

    /// A reset to a segment without ACK acknowledges all it occupied: its data, and its FIN.
    #[test]
    fn reset_acknowledges_data_and_fin() {
        let client: SocketAddr = "10.111.0.1:40000".parse().expect("addr");
        let server: SocketAddr = "198.18.1.2:443".parse().expect("addr");
        let seg = TcpSummary { syn: false, fin: true, payload_len: 10, ..syn(100) };
        let mut out = Vec::new();
        assert!(tcp_reset(&mut out, client, server, &seg));
        match parse(&out).expect("valid").transport {
            Transport::Tcp(t) => assert_eq!((t.rst, t.ack, t.ack_num), (true, true, 111)),
            other => panic!("not tcp: {other:?}"),
        }
    }

    /// An ICMP error quotes as much of the offending packet as fits 576 bytes (IPv4) or the 1,280-byte IPv6
    /// minimum MTU, and no more.
    #[test]
    fn icmp_errors_quote_up_to_their_familys_limit() {
        let offending = vec![0x45; 2000];
        let mut out = Vec::new();
        let (s4, c4) = (IpAddr::from([198, 18, 1, 1]), IpAddr::from([10, 111, 0, 1]));
        assert!(icmp_unreachable(&mut out, s4, c4, &offending, Unreachable::Port));
        assert_eq!(out.len(), 576);
        let (s6, c6) = ("fd00::2".parse().expect("addr"), "fd00::1".parse().expect("addr"));
        assert!(icmp_too_big(&mut out, s6, c6, &offending, 1500));
        assert_eq!(out.len(), 1280);
        assert!(icmp_unreachable(&mut out, s4, c4, &offending[..100], Unreachable::Port));
        assert_eq!(out.len(), 20 + 8 + 100, "a short packet is quoted whole");
    }
}
