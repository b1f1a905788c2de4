//! A checked, zero-copy summary of one IP packet read from the tun device.
//!
//! Parsing uses `etherparse`'s strict slicer: lengths are validated before any field is read, so nothing here can
//! panic, and anything that does not parse is reported as malformed for the caller to drop and count.

use super::FlowKey;
use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
use std::net::{IpAddr, SocketAddr};

/// The transport part of a packet, reduced to what the engine decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport<'a> {
    /// A TCP segment.
    Tcp(TcpSummary),
    /// A UDP datagram and its payload.
    Udp { src_port: u16, dst_port: u16, payload: &'a [u8] },
    /// An ICMP or ICMPv6 echo request.
    EchoRequest,
    /// A fragment of a larger IP datagram, for reassembly (see `fragment`).
    Fragment,
    /// Anything else (other ICMP types, other IP protocols).
    Other,
}

/// The TCP header fields the engine needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpSummary {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack_num: u32,
    pub syn: bool,
    pub ack: bool,
    pub rst: bool,
    pub fin: bool,
    pub payload_len: usize,
}

impl TcpSummary {
    /// A connection-opening segment: SYN without ACK or RST.
    pub fn is_initial_syn(&self) -> bool {
        self.syn && !self.ack && !self.rst
    }
}

/// One parsed IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpPacket<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport<'a>,
}

/// A TCP segment from the phone, parsed once by `Engine::dispatch_tun_packet`: it borrows the packet, so
/// passing it on copies no bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpInbound<'a> {
    /// The whole IP packet, for smoltcp.
    pub packet: &'a [u8],
    /// The phone's end of the connection.
    pub client: SocketAddr,
    /// The destination the phone asked for.
    pub server: SocketAddr,
    /// The segment's header fields.
    pub seg: TcpSummary,
}

impl TcpInbound<'_> {
    /// The flow this segment belongs to.
    pub fn key(&self) -> FlowKey {
        (self.client, self.server)
    }
}

/// A UDP datagram from the phone, parsed once by `Engine::dispatch_tun_packet`: it borrows the packet, so
/// passing it on copies no bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UdpInbound<'a> {
    /// The whole IP packet, quoted by an ICMP refusal.
    pub packet: &'a [u8],
    /// The phone's end of the flow.
    pub client: SocketAddr,
    /// The destination the phone sent to.
    pub server: SocketAddr,
    /// The datagram's payload (a slice of `packet`).
    pub payload: &'a [u8],
}

impl UdpInbound<'_> {
    /// The flow this datagram belongs to.
    pub fn key(&self) -> FlowKey {
        (self.client, self.server)
    }
}

/// Why a packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Parses one IPv4 or IPv6 packet.
pub(crate) fn parse(packet: &[u8]) -> Result<IpPacket<'_>, Malformed> {
    let sliced = SlicedPacket::from_ip(packet).map_err(|_| Malformed)?;
    let (src, dst, fragmented) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => (
            IpAddr::V4(v4.header().source_addr()),
            IpAddr::V4(v4.header().destination_addr()),
            v4.is_payload_fragmented(),
        ),
        Some(NetSlice::Ipv6(v6)) => (
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
            v6.is_payload_fragmented(),
        ),
        _ => return Err(Malformed),
    };
    let transport = match &sliced.transport {
        _ if fragmented => Transport::Fragment,
        Some(TransportSlice::Tcp(tcp)) => Transport::Tcp(TcpSummary {
            src_port: tcp.source_port(),
            dst_port: tcp.destination_port(),
            seq: tcp.sequence_number(),
            ack_num: tcp.acknowledgment_number(),
            syn: tcp.syn(),
            ack: tcp.ack(),
            rst: tcp.rst(),
            fin: tcp.fin(),
            payload_len: tcp.payload().len(),
        }),
        Some(TransportSlice::Udp(udp)) => {
            Transport::Udp { src_port: udp.source_port(), dst_port: udp.destination_port(), payload: udp.payload() }
        }
        Some(TransportSlice::Icmpv4(icmp)) if matches!(icmp.icmp_type(), Icmpv4Type::EchoRequest(_)) => {
            Transport::EchoRequest
        }
        Some(TransportSlice::Icmpv6(icmp)) if matches!(icmp.icmp_type(), Icmpv6Type::EchoRequest(_)) => {
            Transport::EchoRequest
        }
        _ => Transport::Other,
    };
    Ok(IpPacket { src, dst, transport })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn build(builder: etherparse::PacketBuilderStep<etherparse::UdpHeader>, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        builder.write(&mut out, payload).expect("test packet builds");
        out
    }

    #[test]
    fn parses_udp_v4() {
        let pkt = build(PacketBuilder::ipv4([10, 0, 0, 1], [198, 18, 0, 1], 64).udp(5000, 53), b"hi");
        let p = parse(&pkt).expect("parses");
        assert_eq!(p.src, IpAddr::from([10, 0, 0, 1]));
        assert_eq!(p.transport, Transport::Udp { src_port: 5000, dst_port: 53, payload: b"hi" });
        assert_eq!(p.dst, IpAddr::from([198, 18, 0, 1]));
    }

    #[test]
    fn parses_tcp_syn_v6() {
        let mut pkt = Vec::new();
        PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(40000, 443, 7, 1024)
            .syn()
            .write(&mut pkt, &[])
            .expect("builds");
        let p = parse(&pkt).expect("parses");
        match p.transport {
            Transport::Tcp(t) => {
                assert!(t.is_initial_syn());
                assert_eq!((t.src_port, t.dst_port, t.seq), (40000, 443, 7));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Only a SYN without ACK or RST opens a connection.
    #[test]
    fn only_a_bare_syn_is_initial() {
        let seg = |syn, ack, rst| TcpSummary {
            src_port: 1,
            dst_port: 2,
            seq: 0,
            ack_num: 0,
            syn,
            ack,
            rst,
            fin: false,
            payload_len: 0,
        };
        assert!(seg(true, false, false).is_initial_syn());
        for (syn, ack, rst) in [(true, true, false), (true, false, true), (false, false, false), (false, true, false)] {
            assert!(!seg(syn, ack, rst).is_initial_syn(), "syn {syn} ack {ack} rst {rst}");
        }
    }

    /// Echo requests are told apart from the rest of ICMP (which is dropped), on both families.
    #[test]
    fn only_echo_requests_are_echo_requests() {
        let icmp = |ipv6: bool, request: bool| {
            let (v4, v6) = (
                PacketBuilder::ipv4([10, 0, 0, 1], [198, 18, 0, 1], 64),
                PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64),
            );
            let mut out = Vec::new();
            match (ipv6, request) {
                (false, true) => v4.icmpv4_echo_request(1, 1).write(&mut out, b"ping"),
                (false, false) => v4.icmpv4_echo_reply(1, 1).write(&mut out, b"ping"),
                (true, true) => v6.icmpv6_echo_request(1, 1).write(&mut out, b"ping"),
                (true, false) => v6.icmpv6_echo_reply(1, 1).write(&mut out, b"ping"),
            }
            .expect("builds");
            out
        };
        for v6 in [false, true] {
            assert_eq!(parse(&icmp(v6, true)).expect("parses").transport, Transport::EchoRequest);
            assert_eq!(parse(&icmp(v6, false)).expect("parses").transport, Transport::Other);
        }
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        let pkt = build(PacketBuilder::ipv4([10, 0, 0, 1], [198, 18, 0, 1], 64).udp(5000, 53), b"hello");
        for len in 0..pkt.len() - 5 {
            assert_eq!(parse(&pkt[..len]), Err(Malformed), "prefix of {len} bytes");
        }
        assert_eq!(parse(&[0xff; 40]), Err(Malformed));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1600)) {
            let _ = parse(&bytes);
        }
    }
}
