//! Engine tests of IP fragments: datagrams from the phone reassembled, datagrams to it cut to the MTU.

use super::*;

// Issue 12.5: a UDP datagram larger than the tun MTU arrives as IP fragments; the engine used to drop every one
// of them (`Transport::Other`), so the datagram never left and its reply never came.
#[test]
fn fragmented_udp_from_the_phone_is_reassembled_and_large_replies_are_fragmented() {
    let mut pair = Pair::new();
    let payload: Vec<u8> = (0..9000).map(|i| (i % 253) as u8).collect();
    let mut whole = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(5353, 7).write(&mut whole, &payload).expect("builds");
    let mut pieces = Vec::new();
    assert!(fragment::split(&whole, 1500, 42, |f| pieces.push(f.to_vec())));
    for piece in pieces.iter().rev() {
        pair.raw(piece);
    }
    assert_eq!(pair.up.udp_sent.len(), 1, "one datagram upstream");
    assert!(pair.up.udp_sent[0].1 == payload, "byte-exact");
    assert_eq!(pair.engine.stats().datagrams_reassembled, 1);
    // The 9,000-byte echo goes back to the phone as fragments of at most the MTU.
    let (flow, _) = pair.up.udp_opened[0];
    pair.engine.on_udp_datagram(pair.now, flow, &payload);
    pair.settle();
    let out = pair.take_out();
    assert!(out.len() > 1 && out.iter().all(|p| p.len() <= 1500), "{} packets", out.len());
    let mut phone_side = fragment::Reassembler::default();
    let whole_reply = out.iter().find_map(|p| match phone_side.add(pair.now, p) {
        fragment::Reassembly::Complete(w) => Some(w),
        _ => None,
    });
    assert!(udp_payload(&whole_reply.expect("reply reassembles")) == payload, "reply byte-exact");
}

#[test]
fn incomplete_fragments_time_out_counted_and_leave_no_timer() {
    let mut pair = Pair::new();
    let mut whole = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(5353, 7).write(&mut whole, &[7; 4000]).expect("builds");
    let mut pieces = Vec::new();
    assert!(fragment::split(&whole, 1500, 43, |f| pieces.push(f.to_vec())));
    pair.raw(&pieces[0]);
    pair.raw(&pieces[1]);
    assert!(pair.up.udp_sent.is_empty());
    pair.wait(fragment::REASSEMBLY_TIMEOUT);
    assert_eq!(pair.engine.stats().fragments_dropped, 2);
    assert_eq!(pair.engine.poll_timeout(pair.now), None, "nothing left to time");
    assert_eq!(pair.engine.stats().dropped, 0);
}

/// `packet` (IPv4) with its DF flag set to `df` and the header checksum made right again.
pub(super) fn with_df(packet: Vec<u8>, df: bool) -> Vec<u8> {
    with_ipv4_header(packet, |header| header.dont_fragment = df)
}

/// `packet` (IPv4) with its header changed by `edit` and the header checksum made right again.
pub(super) fn with_ipv4_header(mut packet: Vec<u8>, edit: impl FnOnce(&mut etherparse::Ipv4Header)) -> Vec<u8> {
    let (mut header, _) = etherparse::Ipv4Header::from_slice(&packet).expect("ipv4");
    edit(&mut header);
    header.header_checksum = header.calc_header_checksum();
    let mut head = Vec::new();
    header.write(&mut head).expect("writes");
    packet[..head.len()].copy_from_slice(&head);
    packet
}

/// The ICMP error in `out` (exactly one packet): its type.
fn only_icmp(out: &[Vec<u8>]) -> etherparse::TransportSlice<'_> {
    assert_eq!(out.len(), 1, "one ICMP error");
    etherparse::SlicedPacket::from_ip(&out[0]).expect("valid").transport.expect("transport")
}

// Issue 16.1: the tun MTU may be larger than the phone's network's (TCP ends in the engine). A UDP datagram that
// must not be fragmented and does not fit the network is answered with "fragmentation needed" / "packet too big"
// naming 1,500, as a router would; before, the upstream socket's kernel fragmented it and the phone went on
// believing the path carried 4,000-byte datagrams.
#[test]
fn udp_datagrams_that_must_not_be_fragmented_and_do_not_fit_upstream_get_icmp_too_big() {
    let mut pair = Pair::new();
    let mut big = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(5353, 7).write(&mut big, &[7; 4000]).expect("builds");
    pair.raw(&with_df(big.clone(), true));
    assert!(pair.up.udp_sent.is_empty(), "nothing upstream");
    let out = pair.take_out();
    match only_icmp(&out) {
        etherparse::TransportSlice::Icmpv4(icmp) => assert_eq!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1500 }
            )
        ),
        other => panic!("not icmp: {other:?}"),
    }
    // Without DF the network may fragment it: sent whole (the upstream socket's kernel cuts it).
    pair.raw(&with_df(big, false));
    assert_eq!(pair.up.udp_sent.len(), 1);
    assert_eq!(pair.up.udp_sent[0].1.len(), 4000);
    // With DF but fitting: sent.
    let mut small = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(5353, 7).write(&mut small, &[7; 1472]).expect("builds");
    pair.raw(&with_df(small, true));
    assert_eq!(pair.up.udp_sent.len(), 2);
    assert!(pair.take_out().is_empty(), "no error for what fits");
    // IPv6 is never fragmented on the way: too big.
    let mut big6 = Vec::new();
    PacketBuilder::ipv6(PHONE6, SERVER6, 64).udp(5353, 7).write(&mut big6, &[7; 4000]).expect("builds");
    pair.raw(&big6);
    let out = pair.take_out();
    match only_icmp(&out) {
        etherparse::TransportSlice::Icmpv6(icmp) => {
            assert_eq!(icmp.icmp_type(), etherparse::Icmpv6Type::PacketTooBig { mtu: 1500 })
        }
        other => panic!("not icmpv6: {other:?}"),
    }
    assert_eq!(pair.up.udp_sent.len(), 2, "nothing more upstream");
    // A network that reports a smaller MTU: that one is named, and a 1,500-byte datagram no longer fits.
    pair.engine.network_changed(NetworkInfo { mtu: Some(1400), ..NetworkInfo::default() });
    let mut full = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(5353, 7).write(&mut full, &[7; 1472]).expect("builds");
    pair.raw(&with_df(full, true));
    let out = pair.take_out();
    match only_icmp(&out) {
        etherparse::TransportSlice::Icmpv4(icmp) => assert_eq!(
            icmp.icmp_type(),
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 }
            )
        ),
        other => panic!("not icmp: {other:?}"),
    }
    assert_eq!(pair.up.udp_sent.len(), 2, "nothing more upstream");
}

/// A fragment that overlaps what is held drops its datagram: every fragment of it is counted.
#[test]
fn an_overlapping_fragment_drops_its_datagram_counted() {
    let mut pair = Pair::new();
    let mut whole = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(5353, 7).write(&mut whole, &[7; 4000]).expect("builds");
    let mut pieces = Vec::new();
    assert!(fragment::split(&whole, 1500, 42, |f| pieces.push(f.to_vec())));
    pair.raw(&pieces[0]);
    pair.raw(&pieces[1]);
    pair.raw(&pieces[1]);
    assert_eq!(pair.engine.stats().fragments_dropped, 3);
    assert!(pair.up.udp_sent.is_empty());
}
