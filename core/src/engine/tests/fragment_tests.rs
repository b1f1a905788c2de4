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
    pair.engine.on_udp_datagram(pair.now, flow, &payload, &mut pair.up);
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
