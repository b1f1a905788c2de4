//! Engine tests of the QUIC hold and the payload peek, on the `Pair` of the parent module.

use super::*;
use crate::inspect::peek::Decoded;
use crate::inspect::quic::seal::{client_initial, crypto_frame};
use crate::inspect::quic::{VERSION_1, VERSION_2};

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
    pair.wait(pair.engine.config.sniff_timeout - Duration::from_millis(1));
    assert!(pair.events().is_empty() && pair.engine.quic.holding() == 1, "held for the whole sniff timeout");
    pair.wait(Duration::from_millis(1));
    assert!(pair.up.udp_opened.is_empty() && pair.up.udp_sent.is_empty(), "nothing sent upstream");
    let events = pair.events();
    assert_eq!(events.iter().map(|e| e.reason()).collect::<Vec<_>>(), [Reason::Block(BlockReason::Uninspectable)]);
    assert_eq!(pair.engine.quic.refused(), 1, "refused, so its later datagrams are refused too");
}

/// Only a long header with the fixed bit, a known version and the Initial type starts a hold.
#[test]
fn only_a_long_header_initial_looks_like_quic() {
    let with_first = |first: u8, version: u32| {
        let mut d = vec![first];
        d.extend_from_slice(&version.to_be_bytes());
        d.resize(1200, 0);
        quic_hold::looks_like_quic_initial(&d)
    };
    assert!(with_first(0xc0, VERSION_1) && with_first(0xd0, VERSION_2));
    assert!(!with_first(0x40, VERSION_1), "a short header");
    assert!(!with_first(0x80, VERSION_1), "no fixed bit");
    assert!(!with_first(0xd0, VERSION_1) && !with_first(0xc0, VERSION_2), "not an Initial of that version");
    assert!(!with_first(0xc0, 0xff00_001d), "an unknown version");
    assert!(!quic_hold::looks_like_quic_initial(&[0xc0, 0, 0, 0]), "too short");
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
fn peek_tells_a_client_that_expects_100_continue_to_send_its_body_once() {
    let mut pair = Pair::new();
    pair.engine.config.peek = true;
    let h = pair.connect(NORMAL, 80);
    let head =
        b"POST /up HTTP/1.1\r\nHost: tracking.intl.miui.com\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n";
    pair.phone_tcp(h).send_slice(head).expect("send");
    pair.drive();
    let mut got = vec![0u8; 512];
    let n = pair.phone_tcp(h).recv_slice(&mut got).expect("recv");
    assert_eq!(&got[..n], b"HTTP/1.1 100 Continue\r\n\r\n", "asked for the body, once");
    assert!(pair.events().is_empty(), "the request is not read yet");
    pair.phone_tcp(h).send_slice(b"user=x&").expect("send");
    pair.wait(Duration::from_millis(50));
    let n = pair.phone_tcp(h).recv_slice(&mut got).expect("recv");
    assert!(got[..n].starts_with(b"HTTP/1.1 403 Forbidden\r\n"), "{}", String::from_utf8_lossy(&got[..n]));
    let events = pair.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].peek.as_ref().expect("peek").form[0].value, "x");
}

#[test]
fn after_its_403_a_peeked_flow_lingers_for_the_client_to_read_it_then_ends() {
    let mut pair = Pair::new();
    pair.engine.config.peek = true;
    let h = pair.connect(NORMAL, 80);
    let request = b"POST /up HTTP/1.1\r\nHost: tracking.intl.miui.com\r\nContent-Length: 3\r\n\r\na=b";
    pair.phone_tcp(h).send_slice(request).expect("send");
    pair.drive();
    pair.wait(Duration::from_millis(500));
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::CloseWait, "the 403 and the engine's FIN, no reset");
    assert_eq!(pair.engine.stats().tcp_active, 1, "lingering while the client reads");
    pair.wait(Duration::from_secs(2));
    assert_eq!(pair.engine.stats().tcp_active, 0, "gone after the linger");
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

/// A ClientHello without a server name (no extensions at all).
fn client_hello_without_sni() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01, 0x01, 0x00, 0x00, 0x00]);
    let mut msg = vec![0x01, 0, 0, body.len() as u8];
    msg.extend_from_slice(&body);
    msg
}

/// A ClientHello that names no server goes by address on QUIC (as on TLS), also while a Private DNS server is
/// set; DNS over QUIC (port 853) that does not name the Private DNS server is refused.
#[test]
fn quic_without_a_name_goes_by_address_but_unnamed_dns_over_quic_is_refused() {
    let mut pair = Pair::new();
    pair.engine.set_private_dns_server(Some("dns.example".into()));
    let initial = client_initial(VERSION_1, &[8; 8], 0, &crypto_frame(0, &client_hello_without_sni()), 1200);
    pair.udp(NORMAL, 443, &initial);
    assert_eq!(pair.up.udp_opened.len(), 1, "HTTP/3 without a name: by address");
    assert!(pair.events().is_empty());
    pair.udp(NORMAL, 853, &initial);
    assert_eq!(pair.up.udp_opened.len(), 1, "not forwarded");
    let reasons: Vec<Reason> = pair.events().iter().map(|e| e.reason()).collect();
    assert_eq!(reasons, [Reason::Block(BlockReason::DnsOverTls)]);
}

/// A hold keeps at most 16 KiB or 8 datagrams of an unfinished ClientHello; past either, the flow is refused as
/// uninspectable and nothing reaches the server.
#[test]
fn a_hold_past_its_bounds_is_refused() {
    let hello = client_hello("www.example.org", 60_000);
    // Two 9,000-byte datagrams (the network may fragment them) of 100 CRYPTO bytes each, the rest padding: past
    // 16 KiB held while the QUIC reader still waits for more of the ClientHello.
    let mut pair = Pair::new();
    for (pn, range) in [(0, 0..100), (1, 100..200)] {
        let initial = client_initial(VERSION_1, &[9; 8], pn, &crypto_frame(range.start as u64, &hello[range]), 9000);
        pair.raw(&super::fragment_tests::with_df(udp_packet(NORMAL, 443, &initial), false));
    }
    let reasons: Vec<Reason> = pair.events().iter().map(|e| e.reason()).collect();
    assert_eq!(reasons, [Reason::Block(BlockReason::Uninspectable)], "by bytes");
    assert!(pair.up.udp_sent.is_empty());
    // Eight small ones.
    let mut pair = Pair::new();
    for pn in 0..8u32 {
        let at = pn as usize * 1000;
        pair.udp(
            NORMAL,
            443,
            &client_initial(VERSION_1, &[10; 8], pn, &crypto_frame(at as u64, &hello[at..at + 1000]), 1200),
        );
    }
    let reasons: Vec<Reason> = pair.events().iter().map(|e| e.reason()).collect();
    assert_eq!(reasons, [Reason::Block(BlockReason::Uninspectable)], "by datagrams");
    assert!(pair.up.udp_sent.is_empty());
}
