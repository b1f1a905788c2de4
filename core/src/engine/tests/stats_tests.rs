//! The counters the app and the CLI show ([`Stats`]) and the event queue's limits: each counts exactly what
//! happened. Written against mutants that once passed every test (`tests/mutants.sh`, stop 24).

use super::*;

#[test]
fn tun_packets_and_bytes_are_counted_both_ways() {
    let mut pair = Pair::new();
    let ping = udp_packet(BLOCKED_NET, 7, b"ping");
    pair.raw(&ping);
    pair.raw(&ping);
    let out = pair.take_out();
    assert_eq!(out.len(), 2, "an ICMP error for each");
    let stats = pair.engine.stats();
    assert_eq!((stats.packets_in, stats.bytes_in), (2, 2 * ping.len() as u64));
    let out_bytes: usize = out.iter().map(Vec::len).sum();
    assert_eq!((stats.packets_out, stats.bytes_out), (2, out_bytes as u64));
    assert_eq!((stats.malformed, stats.dropped), (0, 0));
}

#[test]
fn malformed_and_unsupported_packets_are_dropped_and_counted() {
    let mut pair = Pair::new();
    // An IPv4 header claiming more bytes than it has.
    let truncated = [0x45, 0, 0, 60, 0, 0, 0, 0, 64, 17, 0, 0, 10, 111, 0, 1, 198, 18, 1, 1];
    pair.raw(&truncated);
    pair.raw(&[0x60]);
    assert_eq!(pair.engine.stats().malformed, 2);
    // GRE (IP protocol 47) is not forwarded.
    let mut gre = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(5353, 7).write(&mut gre, b"tunnel").expect("builds");
    let gre = super::fragment_tests::with_ipv4_header(gre, |header| header.protocol = etherparse::IpNumber(47));
    pair.raw(&gre);
    pair.raw(&gre);
    let stats = pair.engine.stats();
    assert_eq!((stats.malformed, stats.dropped), (2, 2));
    assert!(pair.take_out().is_empty() && pair.up.udp_opened.is_empty(), "nothing answered or forwarded");
}

#[test]
fn datagrams_too_big_for_the_network_are_counted_as_dropped() {
    let mut pair = Pair::new();
    let mut big = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(5353, 7).write(&mut big, &[7; 4000]).expect("builds");
    let big = super::fragment_tests::with_df(big, true);
    pair.raw(&big);
    pair.raw(&big);
    assert_eq!(pair.engine.stats().dropped, 2);
    assert_eq!(pair.take_out().len(), 2, "each answered with ICMP fragmentation needed");
}

#[test]
fn refusals_of_a_blocked_app_are_counted_as_blocks() {
    let mut pair = Pair::new();
    pair.up.owner = Some(10_123);
    pair.engine.set_blocked_uids(HashSet::from([10_123]));
    pair.udp(NORMAL, 7, b"x");
    pair.udp(NORMAL, 8, b"x");
    assert_eq!(pair.engine.stats().blocked, 2);
}

#[test]
fn failed_tun_writes_and_udp_sends_move_to_dropped() {
    let mut pair = Pair::new();
    for port in 1..=3 {
        pair.udp(BLOCKED_NET, port, b"ping");
    }
    assert_eq!(pair.take_out().len(), 3);
    pair.engine.note_tun_write_failures(2);
    let stats = pair.engine.stats();
    assert_eq!((stats.packets_out, stats.dropped), (1, 2), "two of the three were not written");
    pair.engine.note_udp_send_failures(3);
    assert_eq!(pair.engine.stats().dropped, 5);
}

#[test]
fn written_buffers_come_back_for_reuse() {
    let mut pair = Pair::new();
    pair.udp(BLOCKED_NET, 7, b"ping");
    let out = pair.take_out();
    let spare = pair.engine.stack.device.tx_pool.len();
    pair.engine.recycle_tun_buffers(out);
    assert_eq!(pair.engine.stack.device.tx_pool.len(), spare + 1, "the written buffer is pooled");
    pair.udp(BLOCKED_NET, 7, b"ping");
    assert_eq!(pair.engine.stack.device.tx_pool.len(), spare, "and the next packet to the phone takes it");
}

#[test]
fn the_event_queue_keeps_the_newest_and_counts_what_it_dropped() {
    let mut pair = Pair::new();
    let over = 5;
    // From port 1000 up: none of them is DNS.
    for port in 1000..1000 + (EVENT_QUEUE_MAX + over) as u16 {
        pair.raw(&udp_packet(BLOCKED_NET, port, b"ping"));
    }
    assert_eq!(pair.engine.stats().events_dropped, over as u64);
    let events = pair.events();
    assert_eq!(events.len(), EVENT_QUEUE_MAX);
    assert_eq!(events[0].dst.port(), 1000 + over as u16, "the oldest went first");
}

/// Identical blocks a moment apart are folded into one event and a later summary; allowed flows never are; with
/// the payload peek on, TCP blocks are queued one by one (each carries its own peek) and UDP ones still fold.
#[test]
fn only_identical_blocks_are_folded_and_tcp_ones_not_while_peeking() {
    let mut pair = Pair::new();
    pair.engine.config.log_allowed = true;
    for client_port in [5354, 5355] {
        let mut p = Vec::new();
        PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(client_port, 7).write(&mut p, b"x").expect("builds");
        pair.raw(&p);
    }
    let allowed = pair.events().iter().filter(|e| e.reason() == Reason::Allow(AllowReason::NoMatch)).count();
    assert_eq!(allowed, 2, "two UDP flows alike but for the client port, neither folded");

    let hello = include_bytes!("../../inspect/testdata/client_hello_openssl_sni.bin");
    let blocked_tls = |pair: &mut Pair| {
        let h = pair.connect(TELEMETRY, 443);
        pair.phone_tcp(h).send_slice(hello).expect("send");
        pair.drive();
    };
    blocked_tls(&mut pair);
    blocked_tls(&mut pair);
    assert_eq!(pair.events().len(), 1, "the second TLS block is folded");
    pair.udp(BLOCKED_NET, 7, b"x");
    pair.udp(BLOCKED_NET, 7, b"x");
    assert_eq!(pair.events().len(), 1, "the second UDP block is folded");

    pair.engine.config.peek = true;
    pair.wait(Duration::from_secs(120));
    pair.events();
    blocked_tls(&mut pair);
    blocked_tls(&mut pair);
    assert_eq!(pair.events().len(), 2, "peeking, each TCP block is its own event");
    pair.udp(BLOCKED_NET, 9, b"x");
    pair.udp(BLOCKED_NET, 9, b"x");
    assert_eq!(pair.events().len(), 1, "peeking, UDP blocks still fold");
}

#[test]
fn a_reply_that_fills_the_mtu_goes_whole_and_one_byte_more_is_fragmented() {
    let mut pair = Pair::new();
    pair.udp(NORMAL, 7, b"x");
    let flow = pair.up.udp_opened[0].0;
    let fits = pair.engine.config.mtu - 28;
    pair.engine.on_udp_datagram(pair.now, flow, &vec![1; fits]);
    let out = pair.take_out();
    assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [pair.engine.config.mtu]);
    pair.engine.on_udp_datagram(pair.now, flow, &vec![1; fits + 1]);
    assert_eq!(pair.take_out().len(), 2, "cut in two");
    let stats = pair.engine.stats();
    assert_eq!((stats.fragments_sent, stats.dropped), (2, 0));
    // No IPv4 datagram carries more than 65,507 bytes: a bigger one cannot be written to the phone.
    pair.engine.on_udp_datagram(pair.now, flow, &vec![1; 65_508]);
    assert!(pair.take_out().is_empty());
    assert_eq!(pair.engine.stats().dropped, 1);
}

/// IPv6 is never cut below its minimum MTU of 1,280 bytes: on a smaller tun a reply that does not fit is dropped
/// and counted.
#[test]
fn an_ipv6_reply_that_cannot_be_cut_is_dropped_and_counted() {
    let mut pair = Pair::new();
    pair.engine.config.mtu = 1000;
    let mut packet = Vec::new();
    PacketBuilder::ipv6(PHONE6, SERVER6, 64).udp(5353, 7).write(&mut packet, b"x").expect("builds");
    pair.raw(&packet);
    let flow = pair.up.udp_opened[0].0;
    pair.engine.on_udp_datagram(pair.now, flow, &[1; 1200]);
    assert!(pair.take_out().is_empty());
    let stats = pair.engine.stats();
    assert_eq!((stats.fragments_sent, stats.dropped), (0, 1));
}

/// New TCP flows are counted; a SYN smoltcp would not take (bad checksum) is malformed, one to port 0 (no
/// listener can take it) is dropped and reset.
#[test]
fn tcp_flows_and_refused_syns_are_counted() {
    let mut pair = Pair::new();
    pair.connect(NORMAL, 22);
    pair.connect(NORMAL, 23);
    let mut bad = raw_tcp(NORMAL, 24, 1000, true, false);
    bad[36] ^= 0x55; // the TCP checksum (after a 20-byte IPv4 header)
    pair.raw(&bad);
    let stats = pair.engine.stats();
    assert_eq!((stats.tcp_flows, stats.malformed, stats.dropped), (2, 1, 0));
    pair.raw(&raw_tcp(NORMAL, 0, 1000, true, false));
    let stats = pair.engine.stats();
    assert_eq!((stats.tcp_flows, stats.dropped), (2, 1));
    assert_eq!(pair.take_out().len(), 1, "the SYN to port 0 is reset");
}
