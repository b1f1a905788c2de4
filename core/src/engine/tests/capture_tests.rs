//! Engine tests of the capture at the tun edge: every packet both ways, in order, each verdict on the packet
//! that decided it, the queue bounded.

use super::*;
use crate::pcapng::{Direction, PcapngWriter};

/// Turns capture on, as a driver given a capture file does.
fn capture_on(pair: &mut Pair) {
    pair.engine.capture = Some(capture::CaptureState::default());
}

/// The capture records taken from the engine, written as a pcapng file the way the driver writes them.
fn captured_pcapng(pair: &mut Pair) -> Vec<u8> {
    let mut records = Vec::new();
    assert_eq!(pair.engine.take_capture_records(&mut records), 0, "nothing dropped");
    let mut w = PcapngWriter::new(Vec::new(), "hushwall-tun").unwrap();
    for r in &records {
        w.write_packet(r.time_us, r.direction, &r.packet, r.comment.as_deref()).unwrap();
    }
    w.into_inner()
}

/// (block type, body) of every pcapng block.
fn pcapng_blocks(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32_at(at + 4) as usize;
        out.push((u32_at(at), bytes[at + 8..at + len - 4].to_vec()));
        at += len;
    }
    out
}

#[test]
fn capture_records_both_directions_with_the_verdict_on_the_deciding_packet() {
    let mut pair = Pair::new();
    capture_on(&mut pair);
    let h = pair.connect(TELEMETRY, 443);
    let hello = include_bytes!("../../inspect/testdata/client_hello_openssl_sni.bin");
    pair.phone_tcp(h).send_slice(hello).expect("send");
    pair.drive();
    pair.udp(BLOCKED_NET, 7, b"ping");
    pair.take_out();
    let stats = pair.engine.stats();
    let bytes = captured_pcapng(&mut pair);
    let blocks = pcapng_blocks(&bytes);
    let packets: Vec<&Vec<u8>> = blocks.iter().filter(|b| b.0 == 6).map(|b| &b.1).collect();
    assert_eq!(packets.len() as u64, stats.packets_in + stats.packets_out, "every tun packet, both directions");
    let with = |text: &str| packets.iter().filter(|p| p.windows(text.len()).any(|w| w == text.as_bytes())).count();
    assert_eq!(with("hushwall: block tls_sni host=tracking.intl.miui.com rule=test.txt:1"), 1);
    assert_eq!(with("hushwall: block ip_cidr"), 1);
    // The SNI comment sits on the phone's segment carrying the ClientHello.
    let sni = packets.iter().find(|p| p.windows(7).any(|w| w == b"tls_sni")).unwrap();
    let captured_len = u32::from_le_bytes(sni[12..16].try_into().unwrap()) as usize;
    assert!(captured_len > hello.len(), "the deciding packet is the ClientHello segment");
}

/// Regression: a driver that writes the tun from another thread takes packets with `take_tun_packets`, which
/// once skipped the capture (the pcapng stayed empty with `--pcap`).
#[test]
fn capture_also_records_packets_taken_for_a_writer_thread() {
    let mut pair = Pair::new();
    capture_on(&mut pair);
    pair.udp(BLOCKED_NET, 7, b"ping");
    let mut taken = Vec::new();
    pair.engine.take_tun_packets(&mut taken);
    assert_eq!(taken.len(), 1, "the ICMP refusal");
    pair.engine.recycle_tun_buffers(taken);
    let bytes = captured_pcapng(&mut pair);
    let packets = pcapng_blocks(&bytes).iter().filter(|b| b.0 == 6).count();
    assert_eq!(packets, 2, "the datagram in and the ICMP refusal out, flushed");
}

/// The records come out in the order the packets crossed the tun, stamped with the engine's clock, each verdict
/// on the phone's packet that decided it; a packet taken once is not taken again.
#[test]
fn capture_records_come_out_in_order_with_their_comments() {
    let mut pair = Pair::new();
    capture_on(&mut pair);
    let ping = |dst: [u8; 4], port: u16, payload: &[u8]| {
        let mut p = Vec::new();
        PacketBuilder::ipv4(PHONE, dst, 64).udp(5353, port).write(&mut p, payload).expect("builds");
        p
    };
    let mut crossed = Vec::new();
    pair.udp(BLOCKED_NET, 7, b"ping");
    crossed.push((Direction::Inbound, ping(BLOCKED_NET, 7, b"ping")));
    crossed.extend(pair.take_out().into_iter().map(|p| (Direction::Outbound, p)));
    pair.now += Duration::from_millis(5);
    pair.udp([198, 18, 53, 53], 53, &dns_query("tracking.intl.miui.com"));
    crossed.push((Direction::Inbound, ping([198, 18, 53, 53], 53, &dns_query("tracking.intl.miui.com"))));
    crossed.extend(pair.take_out().into_iter().map(|p| (Direction::Outbound, p)));
    pair.udp(NORMAL, 9, b"hello");
    crossed.push((Direction::Inbound, ping(NORMAL, 9, b"hello")));
    assert_eq!(crossed.len(), 5, "three datagrams in, the ICMP refusal and the NXDOMAIN answer out");

    let mut records = Vec::new();
    assert_eq!(pair.engine.take_capture_records(&mut records), 0);
    let got: Vec<(Direction, Vec<u8>)> = records.iter().map(|r| (r.direction, r.packet.clone())).collect();
    assert_eq!(got, crossed, "every packet, in order");
    let comments: Vec<Option<&str>> = records.iter().map(|r| r.comment.as_deref()).collect();
    assert_eq!(comments[0], Some("hushwall: block ip_cidr rule=test.txt:3: 198.19.0.0/24"));
    assert_eq!(comments[1], None);
    let dns = comments[2].expect("the query carries the DNS verdict");
    assert!(dns.starts_with("hushwall: block ") && dns.contains("host=tracking.intl.miui.com"), "{dns}");
    assert_eq!(comments[3], None);
    assert!(comments[4].is_some_and(|c| c.starts_with("hushwall: allow ")), "{comments:?}");
    let start_us = 1_700_000_000_000_000;
    let times: Vec<u64> = records.iter().map(|r| r.time_us - start_us).collect();
    let elapsed = (pair.now - pair.start).as_micros() as u64;
    assert_eq!(times, [elapsed - 5000, elapsed - 5000, elapsed, elapsed, elapsed]);

    records.clear();
    assert_eq!(pair.engine.take_capture_records(&mut records), 0);
    assert!(records.is_empty(), "taken once");
}

/// A driver that does not take the records in time loses the newest ones, counted: the queue never grows past
/// its bound.
#[test]
fn the_capture_queue_is_bounded_and_counts_what_it_dropped() {
    let mut pair = Pair::new();
    capture_on(&mut pair);
    let garbage = [0u8; 20];
    for _ in 0..capture::MAX_QUEUED + 7 {
        pair.engine.handle_tun_packet(pair.now, &garbage, &mut pair.up);
        pair.settle();
    }
    let mut records = Vec::new();
    assert_eq!(pair.engine.take_capture_records(&mut records), 7);
    assert_eq!(records.len(), capture::MAX_QUEUED);
    pair.engine.handle_tun_packet(pair.now, &garbage, &mut pair.up);
    pair.settle();
    records.clear();
    assert_eq!(pair.engine.take_capture_records(&mut records), 0, "the count restarts");
    assert_eq!(records.len(), 1);
}

/// With capture off nothing is queued.
#[test]
fn capture_off_queues_nothing() {
    let mut pair = Pair::new();
    pair.udp(BLOCKED_NET, 7, b"ping");
    pair.take_out();
    let mut records = Vec::new();
    assert_eq!(pair.engine.take_capture_records(&mut records), 0);
    assert!(records.is_empty());
}

/// A UDP packet from `src` to `dst`.
fn datagram(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else { panic!("IPv4 only") };
    let mut p = Vec::new();
    PacketBuilder::ipv4(s.octets(), d.octets(), 64).udp(src.port(), dst.port()).write(&mut p, b"x").expect("builds");
    p
}

/// Queues `packet` as read from the tun, keyed as the engine keys it.
fn capture_in(pair: &mut Pair, packet: &[u8]) {
    pair.engine.capture_inbound(pair.now, packet);
    pair.engine.capture_inbound_key(|| capture::key_of(packet));
}

fn taken_comments(pair: &mut Pair) -> Vec<Option<String>> {
    let mut records = Vec::new();
    assert_eq!(pair.engine.take_capture_records(&mut records), 0);
    records.into_iter().map(|r| r.comment).collect()
}

const CLIENT_A: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(10, 111, 0, 1)), 5000);
const CLIENT_B: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(10, 111, 0, 1)), 5001);
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 1, 1)), 9);

/// The comment a block by `ip_cidr` on `host` gets.
fn cidr_block(pair: &mut Pair, client: SocketAddr, host: &str) -> String {
    pair.engine.capture_verdict(client, SERVER, Some(host), &Verdict::block(BlockReason::IpCidr));
    format!("hushwall: block ip_cidr host={host}")
}

/// A verdict is written on the newest open packet the phone sent on that flow: not on another flow's, not on
/// one to the phone, and not twice on one packet.
#[test]
fn a_verdict_marks_its_own_flows_phone_packet() {
    let mut pair = Pair::new();
    capture_on(&mut pair);
    capture_in(&mut pair, &datagram(CLIENT_A, SERVER));
    capture_in(&mut pair, &datagram(CLIENT_B, SERVER));
    pair.engine.capture_outbound(&datagram(SERVER, CLIENT_A));
    let first = cidr_block(&mut pair, CLIENT_A, "a.example");
    let second = cidr_block(&mut pair, CLIENT_A, "again.example");
    pair.engine.capture_outbound(&datagram(SERVER, CLIENT_A));
    assert_eq!(taken_comments(&mut pair), [Some(first), None, None, Some(second)]);
}

/// A verdict with no open packet of its flow (a timer decided it, or the iteration was sealed) waits for the flow's
/// next packet in either direction; several flows can wait at once.
#[test]
fn a_verdict_without_an_open_packet_waits_for_the_flows_next_one() {
    let mut pair = Pair::new();
    capture_on(&mut pair);
    capture_in(&mut pair, &datagram(CLIENT_A, SERVER));
    pair.take_out(); // seals the iteration
    let a = cidr_block(&mut pair, CLIENT_A, "a.example");
    let b = cidr_block(&mut pair, CLIENT_B, "b.example");
    pair.engine.capture_outbound(&datagram(SERVER, CLIENT_A));
    capture_in(&mut pair, &datagram(CLIENT_B, SERVER));
    assert_eq!(taken_comments(&mut pair), [None, Some(a), Some(b)]);
}

/// Packets to the phone are stamped with the engine's latest clock (they are written after the call that made
/// them).
#[test]
fn packets_to_the_phone_carry_the_engines_clock() {
    let mut pair = Pair::new();
    capture_on(&mut pair);
    pair.engine.capture_clock(pair.start + Duration::from_secs(7));
    pair.engine.capture_outbound(&datagram(SERVER, CLIENT_A));
    let mut records = Vec::new();
    pair.engine.take_capture_records(&mut records);
    assert_eq!(records[0].time_us, 1_700_000_000_000_000 + 7_000_000);
}

/// A driver that cannot write the capture stops it: what was queued is discarded and nothing more is queued.
#[test]
fn a_stopped_capture_queues_nothing() {
    let mut pair = Pair::new();
    capture_on(&mut pair);
    pair.udp(BLOCKED_NET, 7, b"ping");
    pair.engine.stop_capture();
    pair.udp(BLOCKED_NET, 7, b"ping");
    pair.take_out();
    let mut records = Vec::new();
    assert_eq!(pair.engine.take_capture_records(&mut records), 0);
    assert!(records.is_empty());
}
