//! Engine tests of the QUIC hold, the payload peek and the capture, on the `Pair` of the parent module.

use super::*;
use crate::inspect::peek::Decoded;
use crate::inspect::quic::seal::{client_initial, crypto_frame};
use crate::inspect::quic::{VERSION_1, VERSION_2};
use crate::pcapng::{Direction, PcapngWriter};

/// A ClientHello handshake message naming `name`, padded to about `size` bytes (at most 64 KiB) with a padding
/// extension.
pub(super) fn client_hello(name: &str, size: usize) -> Vec<u8> {
    let mut sni = Vec::new();
    let n = name.len() as u16;
    sni.extend_from_slice(&(n + 3).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&n.to_be_bytes());
    sni.extend_from_slice(name.as_bytes());
    let mut ext = vec![0x00, 0x00];
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    let pad = size.saturating_sub(ext.len() + 60);
    ext.extend_from_slice(&[0x00, 0x15]);
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.resize(ext.len() + pad, 0);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    msg.extend_from_slice(&body);
    msg
}

/// `handshake` framed into TLS handshake records of at most `record` bytes each.
pub(super) fn tls_records(handshake: &[u8], record: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in handshake.chunks(record) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// `handshake` framed into full-sized (16 KiB) TLS records, as a client sends it.
pub(super) fn tls_record(handshake: &[u8]) -> Vec<u8> {
    tls_records(handshake, 16 * 1024)
}

pub(super) fn is_icmp_port_unreachable(packet: &[u8]) -> bool {
    let sliced = etherparse::SlicedPacket::from_ip(packet).expect("valid");
    matches!(
        sliced.transport,
        Some(etherparse::TransportSlice::Icmpv4(ref i))
            if i.icmp_type() == etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Port)
    )
}

#[test]
fn quic_to_a_blocked_name_is_refused_and_nothing_goes_upstream() {
    for version in [VERSION_1, VERSION_2] {
        let mut pair = Pair::new();
        let hello = client_hello("tracking.intl.miui.com", 400);
        pair.udp(NORMAL, 443, &client_initial(version, &[9; 8], 0, &crypto_frame(0, &hello), 1200));
        let out = pair.take_out();
        assert_eq!(out.len(), 1);
        assert!(is_icmp_port_unreachable(&out[0]));
        assert!(pair.up.udp_opened.is_empty() && pair.up.udp_sent.is_empty(), "nothing sent upstream");
        let events = pair.events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!((events[0].reason(), events[0].protocol), (Reason::Block(BlockReason::QuicSni), Protocol::Udp));
        assert_eq!(events[0].host.as_deref(), Some("tracking.intl.miui.com"));
        assert_eq!(events[0].rule().map(|r| r.line), Some(1));
        assert_eq!(pair.engine.stats().udp_active, 0);
        // The client's retransmission and its CONNECTION_CLOSE (an Initial without a ClientHello) are refused
        // as well, without new events, and never reach the server even after the hold timeout.
        pair.udp(NORMAL, 443, &client_initial(version, &[9; 8], 1, &crypto_frame(0, &hello), 1200));
        pair.udp(NORMAL, 443, &client_initial(version, &[9; 8], 2, &[0x1c, 0x00, 0x00, 0x00], 1200));
        assert_eq!(pair.take_out().len(), 2, "ICMP for each");
        pair.wait(Duration::from_secs(2));
        assert!(pair.up.udp_opened.is_empty() && pair.up.udp_sent.is_empty(), "still nothing upstream");
        assert!(pair.events().is_empty(), "one event per refused flow");
        // Refused flows are kept apart from the flow table: they do not count toward the UDP cap.
        assert!(pair.engine.quic.holding() == 0);
        assert_eq!(pair.engine.quic.refused(), 1);
    }
}

#[test]
fn quic_split_hello_to_an_allowed_name_is_held_then_flushed_in_order() {
    let mut pair = Pair::new();
    let hello = client_hello("www.example.org", 2500);
    let d1 = client_initial(VERSION_1, &[5; 8], 0, &crypto_frame(0, &hello[..1100]), 1200);
    let d2 = client_initial(VERSION_1, &[5; 8], 1, &crypto_frame(1100, &hello[1100..]), 1200);
    let d3 = client_initial(VERSION_1, &[5; 8], 2, &crypto_frame(2200, &hello[2200..]), 1200);
    // Out of order: the last piece first.
    pair.udp(NORMAL, 443, &d3);
    pair.udp(NORMAL, 443, &d1);
    assert!(pair.up.udp_opened.is_empty(), "held while the ClientHello is incomplete");
    pair.udp(NORMAL, 443, &d2);
    assert_eq!(pair.up.udp_opened.len(), 1);
    let sent: Vec<&[u8]> = pair.up.udp_sent.iter().map(|(_, d)| d.as_slice()).collect();
    assert_eq!(sent, [&d3[..], &d1[..], &d2[..]], "held datagrams flushed in arrival order");
    pair.udp(NORMAL, 443, b"\x40later short-header packet");
    assert_eq!(pair.up.udp_sent.len(), 4, "later datagrams relayed at once");
    assert!(pair.take_out().is_empty());
    assert!(pair.events().is_empty(), "allowed flows are not logged by default");
}

/// An incomplete ClientHello may already name a blocked host in the held bytes: after the timeout the flow is
/// refused, not flushed by address (before: flushed, the server received the blocked name).
#[test]
fn quic_hold_times_out_and_is_refused_as_uninspectable() {
    let mut pair = Pair::new();
    let hello = client_hello("tracking.intl.miui.com", 2000);
    pair.udp(NORMAL, 443, &client_initial(VERSION_1, &[6; 8], 0, &crypto_frame(0, &hello[..900]), 1200));
    assert!(pair.up.udp_opened.is_empty());
    pair.wait(pair.engine.config.sniff_timeout);
    assert!(pair.up.udp_opened.is_empty() && pair.up.udp_sent.is_empty(), "nothing sent upstream");
    let events = pair.events();
    assert_eq!(events.iter().map(|e| e.reason()).collect::<Vec<_>>(), [Reason::Block(BlockReason::Uninspectable)]);
    assert_eq!(pair.engine.quic.refused(), 1, "refused, so its later datagrams are refused too");
}

#[test]
fn non_quic_udp_to_443_is_not_held() {
    let mut pair = Pair::new();
    pair.udp(NORMAL, 443, b"not quic at all");
    assert_eq!(pair.up.udp_sent.len(), 1);
    // A long header of an unknown version is not held either.
    pair.udp(NORMAL, 444, b"x");
    let mut odd = vec![0xc0, 0xff, 0x00, 0x00, 0x1d];
    odd.resize(1200, 0);
    let mut p = Vec::new();
    PacketBuilder::ipv4(PHONE, NORMAL, 64).udp(6000, 443).write(&mut p, &odd).expect("builds");
    pair.engine.handle_tun_packet(pair.now, &p, &mut pair.up);
    pair.settle();
    assert_eq!(pair.up.udp_sent.len(), 3);
}

/// A Sensors Analytics upload: base64 of gzip of a JSON array of events.
fn sensors_request(host: &str) -> Vec<u8> {
    use base64::Engine as _;
    use std::io::Write;
    let events = br#"[{"event":"$AppStart","distinct_id":"a1b2c3d4e5f60718","properties":{"$model":"Redmi Note 8"}}]"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(events).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let body = format!("crc=1&gzip=1&data_list={}", b64.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D"));
    format!(
        "POST /sa?project=prod HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn peek_reads_a_blocked_upload_answers_403_and_reports_the_decoded_events() {
    let mut pair = Pair::new();
    pair.engine.config.peek = true;
    let h = pair.connect(NORMAL, 80);
    let request = sensors_request("sa.api.intl.miui.com");
    // Headers first, the body a little later.
    let split = request.len() - 40;
    pair.phone_tcp(h).send_slice(&request[..split]).expect("send");
    pair.drive();
    assert!(pair.events().is_empty(), "no event before the request is complete");
    pair.phone_tcp(h).send_slice(&request[split..]).expect("send");
    // The phone's Nagle waits for the engine's delayed ACK of the first part.
    pair.wait(Duration::from_millis(50));
    let mut answer = vec![0u8; 512];
    let n = pair.phone_tcp(h).recv_slice(&mut answer).expect("recv");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n") && answer.contains("Connection: close"), "{answer}");
    assert!(pair.up.connects.is_empty(), "the blocked server was never dialled");
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reason(), Reason::Block(BlockReason::HttpHost));
    let peek = events[0].peek.as_ref().expect("peek attached");
    assert_eq!((peek.method.as_str(), peek.path.as_str(), peek.truncated), ("POST", "/sa", false));
    assert_eq!(peek.kind.as_deref(), Some("sensors_analytics"));
    let data = peek.form.iter().find(|f| f.name == "data_list").expect("data_list");
    let Some(Decoded::Json(v)) = &data.decoded else { panic!("not decoded: {data:?}") };
    assert_eq!(v[0]["event"], "$AppStart");
    assert_eq!(v[0]["distinct_id"], "a1************18");
    // The phone closes; the flow goes away.
    pair.phone_tcp(h).close();
    pair.drive();
    pair.wait(Duration::from_secs(3));
    assert_eq!(pair.engine.stats().tcp_active, 0);
}

#[test]
fn peek_answers_an_unfinished_request_after_the_timeout() {
    let mut pair = Pair::new();
    pair.engine.config.peek = true;
    let h = pair.connect(NORMAL, 80);
    let head = b"POST /up HTTP/1.1\r\nHost: tracking.intl.miui.com\r\nContent-Length: 1000\r\n\r\nuser=x&pa";
    pair.phone_tcp(h).send_slice(head).expect("send");
    pair.drive();
    pair.wait(Duration::from_secs(3));
    let events = pair.events();
    assert_eq!(events.len(), 1);
    let peek = events[0].peek.as_ref().expect("peek");
    assert!(peek.truncated);
    assert_eq!(peek.form[0].value, "x");
}

/// A flow that ends while its blocked request is being read (here: evicted for a client over its share) still
/// reports its block once, complete with what had arrived.
#[test]
fn peek_reports_the_block_once_when_the_flow_ends_before_the_answer() {
    let mut pair = Pair::new();
    pair.engine.config.peek = true;
    let h = pair.connect(NORMAL, 80);
    let head = b"POST /up HTTP/1.1\r\nHost: tracking.intl.miui.com\r\nContent-Length: 1000\r\n\r\nuser=x&pa";
    pair.phone_tcp(h).send_slice(head).expect("send");
    pair.drive();
    assert!(pair.events().is_empty(), "held until the request is read");
    let now = pair.now;
    assert!(pair.engine.evict_tcp_flow(
        now,
        Some(crate::engine::budget::Client::Address(PHONE.into())),
        Duration::ZERO
    ));
    pair.settle();
    pair.drive();
    pair.wait(Duration::from_secs(5));
    let events = pair.events();
    let blocks: Vec<_> = events.iter().filter(|e| e.action() == Action::Block).collect();
    assert_eq!(blocks.len(), 1, "{events:?}");
    assert_eq!(blocks[0].reason(), Reason::Block(BlockReason::HttpHost));
    let peek = blocks[0].peek.as_ref().expect("what arrived");
    assert!(peek.truncated);
    assert_eq!(peek.form[0].value, "x");
    assert_eq!(pair.engine.stats().tcp_active, 0);
}

#[test]
fn without_peek_a_blocked_request_is_reset_and_carries_no_summary() {
    let mut pair = Pair::new();
    let h = pair.connect(NORMAL, 80);
    pair.phone_tcp(h).send_slice(&sensors_request("sa.api.intl.miui.com")).expect("send");
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "RST");
    let events = pair.events();
    assert_eq!(events.len(), 1);
    assert!(events[0].peek.is_none());
    assert!(!serde_json::to_string(&events[0]).unwrap().contains("peek"));
}

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
