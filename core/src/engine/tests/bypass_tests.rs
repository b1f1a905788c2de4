//! Issue 18 (items 1, 2, 6) and issue 14.2 on the `Pair` of the parent module: the TCP inspector judges a client's
//! first bytes before any of them is forwarded, however late, big or odd they are; destinations that would reach
//! the device itself are refused at the SYN; only an allow rule lifts an address-range block.

use super::inspect_tests::{client_hello, tls_record, tls_records};
use super::*;
use crate::engine::tcp::{CLIENT_FIRST_WAIT, SNIFF_COMPLETE_TIMEOUT};

const BLOCKED_NAME: &str = "tracking.intl.miui.com";

/// A ClientHello naming `name`, about `size` bytes, in full-sized records.
fn hello(name: &str, size: usize) -> Vec<u8> {
    tls_record(&client_hello(name, size))
}

/// The TCP flags of a packet the engine sent, if it is TCP.
fn tcp_flags(packet: &[u8]) -> Option<(bool, bool)> {
    let sliced = etherparse::SlicedPacket::from_ip(packet).ok()?;
    match sliced.transport {
        Some(etherparse::TransportSlice::Tcp(t)) => Some((t.syn(), t.rst())),
        _ => None,
    }
}

/// A bare SYN from the phone to `dst`.
fn raw_syn(dst: SocketAddr) -> Vec<u8> {
    let mut p = Vec::new();
    let builder = match dst.ip() {
        IpAddr::V4(v4) => PacketBuilder::ipv4(PHONE, v4.octets(), 64),
        IpAddr::V6(v6) => {
            PacketBuilder::ipv6("fd00:6877:f::1".parse::<std::net::Ipv6Addr>().expect("v6").octets(), v6.octets(), 64)
        }
    };
    builder.tcp(40000, dst.port(), 1000, 64240).syn().write(&mut p, &[]).expect("builds");
    p
}

/// Sends `data` from the phone, as its send buffer allows, until all of it left or the connection closed (at
/// most 20 s of virtual time).
fn send_all(pair: &mut Pair, h: SocketHandle, data: &[u8]) {
    let mut sent = 0;
    for _ in 0..400 {
        let socket = pair.phone_tcp(h);
        if !socket.may_send() || (sent == data.len() && socket.send_queue() == 0) {
            return;
        }
        sent += socket.send_slice(&data[sent..]).expect("send");
        pair.wait(Duration::from_millis(50));
    }
}

fn block_reasons(pair: &mut Pair) -> Vec<(Reason, Option<String>)> {
    pair.events().into_iter().filter(|e| e.action() == Action::Block).map(|e| (e.reason(), e.host)).collect()
}

/// Issue 18.1: a ClientHello sent 800 ms after the handshake used to find the flow already dialled by address
/// (sniff timeout 500 ms) and was spliced unjudged to the blocked server. On a web port nothing is dialled
/// before the client's bytes are judged.
#[test]
fn late_client_hello_on_a_web_port_is_judged_before_any_dial() {
    for port in [80, 443, 8080, 8443] {
        let mut pair = Pair::new();
        let h = pair.connect(NORMAL, port);
        pair.wait(Duration::from_millis(800));
        assert!(pair.up.connects.is_empty(), "port {port}: dialled before the client spoke: {:?}", pair.up.connects);
        pair.phone_tcp(h).send_slice(&hello(BLOCKED_NAME, 500)).expect("send");
        pair.drive();
        assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "port {port}: RST after the late hello");
        assert!(pair.up.connects.is_empty(), "port {port}: the blocked server was dialled");
        assert_eq!(
            block_reasons(&mut pair),
            vec![(Reason::Block(BlockReason::TlsSni), Some(BLOCKED_NAME.into()))],
            "port {port}"
        );
        // An allowed late hello is dialled and forwarded.
        let h = pair.connect(NORMAL, port);
        pair.wait(Duration::from_millis(800));
        let allowed = hello("www.example.org", 500);
        pair.phone_tcp(h).send_slice(&allowed).expect("send");
        pair.drive();
        let (flow, _) = *pair.up.connects.first().expect("allowed name dialled");
        pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
        pair.settle();
        pair.drive();
        assert_eq!(pair.up.written[&flow], allowed);
    }
}

/// A client that never speaks on a web port is reset after CLIENT_FIRST_WAIT, never dialled, with an event.
#[test]
fn silent_client_on_a_web_port_is_reset_and_never_dialled() {
    let mut pair = Pair::new();
    let h = pair.connect(NORMAL, 443);
    pair.wait(CLIENT_FIRST_WAIT - Duration::from_millis(10));
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Established, "still waiting for the client");
    pair.wait(Duration::from_millis(20));
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "reset once the wait is over");
    assert!(pair.up.connects.is_empty(), "dialled: {:?}", pair.up.connects);
    assert_eq!(block_reasons(&mut pair), vec![(Reason::Block(BlockReason::Uninspectable), None)]);
    assert_eq!(pair.engine.stats().tcp_active, 0);
}

/// Issue 18.1 on ports where the server may speak first: a silent client is dialled by address (the banner
/// reaches it), but its own bytes wait until judged; a late hello naming a blocked host resets both sides and
/// the server never receives a byte of it. Other protocols' bytes pass once judged.
#[test]
fn late_client_hello_on_another_port_resets_the_dialled_flow_before_any_byte_passes() {
    let mut pair = Pair::new();
    let h = pair.connect(NORMAL, 7777);
    pair.wait(pair.engine.config.sniff_timeout);
    let (flow, _) = *pair.up.connects.first().expect("dialled by address after the sniff timeout");
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.up.to_read.insert(flow, b"220 banner\r\n".to_vec());
    pair.upstream_readable(flow);
    pair.wait(Duration::from_millis(300));
    let mut banner = [0; 64];
    let n = pair.phone_tcp(h).recv_slice(&mut banner).expect("recv");
    assert_eq!(&banner[..n], b"220 banner\r\n", "the server's bytes pass while the client's are judged");
    pair.events();
    // The hello comes in two parts: nothing passes while it is incomplete.
    let late = hello(BLOCKED_NAME, 3000);
    pair.phone_tcp(h).send_slice(&late[..1000]).expect("send");
    pair.wait(Duration::from_millis(100));
    assert!(pair.up.written.get(&flow).is_none_or(Vec::is_empty), "part of a hello was forwarded");
    send_all(&mut pair, h, &late[1000..]);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "phone reset");
    assert!(pair.up.written.get(&flow).is_none_or(Vec::is_empty), "the blocked hello reached the server");
    assert_eq!(pair.up.closed, vec![(flow, true)], "upstream reset");
    assert_eq!(block_reasons(&mut pair), vec![(Reason::Block(BlockReason::TlsSni), Some(BLOCKED_NAME.into()))]);
    // The gate opens for anything else: a server-first protocol works, on a server-first port too.
    for port in [22, 7777] {
        let h = pair.connect(NORMAL, port);
        pair.wait(pair.engine.config.sniff_timeout);
        let (flow, _) = *pair.up.connects.last().expect("dialled");
        pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
        pair.settle();
        pair.drive();
        pair.phone_tcp(h).send_slice(b"SSH-2.0-OpenSSH_9.2\r\n").expect("send");
        pair.drive();
        assert_eq!(pair.up.written[&flow], b"SSH-2.0-OpenSSH_9.2\r\n", "port {port}");
        pair.phone_tcp(h).send_slice(b"more").expect("send");
        pair.wait(Duration::from_millis(300));
        assert_eq!(pair.up.written[&flow], b"SSH-2.0-OpenSSH_9.2\r\nmore", "port {port}");
    }
    assert!(block_reasons(&mut pair).is_empty());
}

/// A server-first port is dialled at the SYN (SYN|ACK held until the upstream connects): the client's first bytes
/// are judged all the same. (Regression: the gate opened when the upstream connected, because a socket still in
/// SYN-RECEIVED "cannot receive" and was taken for a client that had closed.)
#[test]
fn client_hello_on_a_server_first_port_is_judged_too() {
    let mut pair = Pair::new();
    let h = pair.connect(NORMAL, 22);
    let (flow, _) = *pair.up.connects.first().expect("dialled at the SYN");
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    pair.phone_tcp(h).send_slice(&hello(BLOCKED_NAME, 500)).expect("send");
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "phone reset");
    assert!(pair.up.written.get(&flow).is_none_or(Vec::is_empty), "the blocked hello reached the server");
    assert_eq!(block_reasons(&mut pair), vec![(Reason::Block(BlockReason::TlsSni), Some(BLOCKED_NAME.into()))]);
}

/// Issue 18.2: a ClientHello padded past 16 KiB (the old sniff limit; the TLS reader takes 64 KiB) was
/// forwarded by address.
#[test]
fn client_hello_padded_past_16_kib_is_judged() {
    for size in [17 * 1024, 40 * 1024, 60 * 1024] {
        let mut pair = Pair::new();
        let h = pair.connect(NORMAL, 443);
        send_all(&mut pair, h, &hello(BLOCKED_NAME, size));
        assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "{size}: reset");
        assert!(pair.up.connects.is_empty(), "{size}: dialled");
        assert_eq!(
            block_reasons(&mut pair),
            vec![(Reason::Block(BlockReason::TlsSni), Some(BLOCKED_NAME.into()))],
            "{size}"
        );
    }
}

/// A head still incomplete at the size limit (a hello in tiny records) or the time limit is refused, not
/// dialled by address.
#[test]
fn head_unfinished_at_the_size_or_time_limit_is_refused() {
    let mut pair = Pair::new();
    let h = pair.connect(NORMAL, 443);
    let start = pair.now;
    send_all(&mut pair, h, &tls_records(&client_hello(BLOCKED_NAME, 44 * 1024), 8));
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "reset at the size limit");
    // At once (0.16 s of the harness's clock), not at the 5-s completion deadline nor the 15-s one.
    assert!(pair.now - start < Duration::from_secs(1), "as soon as the limit is reached: {:?}", pair.now - start);
    let h = pair.connect(NORMAL, 7777);
    pair.phone_tcp(h).send_slice(&hello(BLOCKED_NAME, 500)[..100]).expect("send");
    pair.drive();
    pair.wait(SNIFF_COMPLETE_TIMEOUT + Duration::from_millis(10));
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "reset at the time limit");
    let h = pair.connect(NORMAL, 80);
    pair.phone_tcp(h).send_slice(b"POST /upload HTTP/1.1\r\nX: y\r\n").expect("send");
    pair.drive();
    pair.wait(SNIFF_COMPLETE_TIMEOUT + Duration::from_millis(10));
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "reset at the time limit");
    assert!(pair.up.connects.is_empty(), "dialled: {:?}", pair.up.connects);
    let reasons = block_reasons(&mut pair);
    assert_eq!(reasons, vec![(Reason::Block(BlockReason::Uninspectable), None); 3]);
}

/// Issue 18.2: HTTP with leading empty lines (RFC 9112 §2.2), more than 64 headers, `Host: user@name` was judged
/// by address and forwarded to the blocked host.
#[test]
fn odd_http_heads_are_read_as_servers_read_them() {
    let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
    let heads = [
        format!("\r\n\r\nGET / HTTP/1.1\r\nHost: {BLOCKED_NAME}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\n{many}Host: {BLOCKED_NAME}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: user@{BLOCKED_NAME}:80\r\n\r\n"),
    ];
    for head in heads {
        let mut pair = Pair::new();
        let h = pair.connect(NORMAL, 80);
        pair.phone_tcp(h).send_slice(head.as_bytes()).expect("send");
        pair.drive();
        assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "{head:?}");
        assert!(pair.up.connects.is_empty(), "{head:?}: dialled");
        assert_eq!(
            block_reasons(&mut pair),
            vec![(Reason::Block(BlockReason::HttpHost), Some(BLOCKED_NAME.into()))],
            "{head:?}"
        );
    }
}

/// TLS or HTTP whose host cannot be read is refused as `uninspectable`; a well-formed hello without SNI and an
/// HTTP/1.0 request without Host are still decided by address.
#[test]
fn unreadable_heads_are_refused_but_nameless_ones_fall_back_to_the_address() {
    let mut bad_sni = hello(BLOCKED_NAME, 500);
    let at = bad_sni.windows(8).position(|w| w == b"tracking").expect("sni");
    bad_sni[at + 8] = b' ';
    let unreadable: [&[u8]; 3] = [
        &bad_sni,
        b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: tracking.intl.miui.com\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ];
    let mut pair = Pair::new();
    for head in unreadable {
        let h = pair.connect(NORMAL, 80);
        pair.phone_tcp(h).send_slice(head).expect("send");
        pair.drive();
        assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "{head:?}");
    }
    assert!(pair.up.connects.is_empty(), "dialled: {:?}", pair.up.connects);
    // Identical refusals fold into one event and a summary (`repeats`): count the attempts they stand for.
    pair.engine.flush_folded_events(pair.now);
    let events = pair.events();
    assert!(
        events.iter().all(|e| (e.reason(), e.host.as_deref()) == (Reason::Block(BlockReason::Uninspectable), None)),
        "{events:?}"
    );
    assert_eq!(events.iter().map(|e| e.repeats.unwrap_or(1)).sum::<u64>(), 3, "{events:?}");
    let no_sni = include_bytes!("../../inspect/testdata/client_hello_openssl_no_sni.bin");
    for head in [&no_sni[..], b"GET / HTTP/1.0\r\n\r\n"] {
        let h = pair.connect(NORMAL, 443);
        pair.phone_tcp(h).send_slice(head).expect("send");
        pair.drive();
    }
    assert_eq!(pair.up.connects.len(), 2, "nameless heads are dialled by address");
}

/// Issue 18.6: a SYN to the device's loopback (also as `::ffff:127.0.0.1`), unspecified, link-local or multicast
/// addresses is answered RST and never dialled, on any port.
#[test]
fn local_destinations_are_refused_at_the_syn() {
    let mut pair = Pair::new();
    let targets = [
        "[::ffff:127.0.0.1]:8000",
        "[::1]:22",
        "127.0.0.1:443",
        "127.1.2.3:22",
        "0.0.0.0:80",
        "169.254.169.254:80",
        "[fe80::1]:22",
        "224.0.0.1:7777",
        "[ff02::1]:443",
        "[::]:22",
        "[::ffff:169.254.1.1]:22",
    ];
    for target in targets {
        let dst: SocketAddr = target.parse().expect("addr");
        pair.raw(&raw_syn(dst));
        let out = pair.take_out();
        assert_eq!(out.len(), 1, "{target}: one answer");
        assert_eq!(tcp_flags(&out[0]), Some((false, true)), "{target}: answered RST");
        let events = pair.events();
        assert_eq!(events.len(), 1, "{target}");
        assert_eq!(
            (events[0].action(), events[0].reason()),
            (Action::Block, Reason::Block(BlockReason::LocalDestination)),
            "{target}"
        );
    }
    pair.wait(Duration::from_secs(20));
    assert!(pair.up.connects.is_empty(), "dialled: {:?}", pair.up.connects);
    assert_eq!(pair.engine.stats().tcp_active, 0);
}

/// Issue 18.6: `::ffff:a.b.c.d` is judged and dialled as `a.b.c.d`, never through a dual-stack socket.
#[test]
fn ipv4_mapped_destinations_are_dialled_as_ipv4() {
    let mut pair = Pair::new();
    pair.raw(&raw_syn("[::ffff:198.18.1.1]:22".parse().expect("addr")));
    assert_eq!(pair.up.connects.len(), 1);
    assert_eq!(pair.up.connects[0].1, SocketAddr::from((NORMAL, 22)));
}

/// Issue 14.2: a DNS answer mapping an allow-listed name to a blocked range lets flows to that address through
/// at once; a name that is merely not blocked keeps the fast refusal at the SYN.
#[test]
fn allow_rule_for_a_dns_name_lifts_a_range_block() {
    let mut pair = Pair::with_allow_list("ota.example.org\n");
    for (name, addr) in [("ota.example.org", BLOCKED_NET), ("other.example.org", [198, 19, 0, 11])] {
        pair.udp([198, 18, 53, 53], 53, &dns_query(name));
        let (flow, forwarded) = pair.up.udp_sent.last().expect("forwarded").clone();
        pair.engine.on_udp_datagram(pair.now, flow, &answer_with_a(&forwarded, addr));
        pair.settle();
        pair.take_out();
    }
    pair.events();
    let h = pair.connect(BLOCKED_NET, 443);
    assert_eq!(pair.up.connects.len(), 1, "dialled at once: DNS says this is an allow-listed service");
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::SynSent, "SYN|ACK held until upstream connects");
    let (flow, _) = pair.up.connects[0];
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    let allowed = hello("ota.example.org", 500);
    pair.phone_tcp(h).send_slice(&allowed).expect("send");
    pair.drive();
    assert_eq!(pair.up.written[&flow], allowed, "the allow-listed name's hello is forwarded");
    // The same address, but the hello names a host that is merely not blocked (fronting): refused.
    let h = pair.connect(BLOCKED_NET, 443);
    let (flow, _) = *pair.up.connects.last().expect("dialled");
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    pair.phone_tcp(h).send_slice(&hello("www.example.org", 500)).expect("send");
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "fronting through an allow-listed address refused");
    assert!(pair.up.written.get(&flow).is_none_or(Vec::is_empty), "its hello reached the server");
    let h = pair.connect([198, 19, 0, 11], 443);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "refused at the SYN");
    assert_eq!(pair.up.connects.len(), 2);
    let events = pair.events();
    assert_eq!(events.len(), 2, "{events:?}");
    for event in &events {
        assert_eq!((event.action(), event.reason()), (Action::Block, Reason::Block(BlockReason::IpCidr)));
        assert_eq!(event.rule().map(|r| &*r.rule), Some("198.19.0.0/24"));
    }
    assert_eq!(events[0].host.as_deref(), Some("www.example.org"));
}

/// Issue 14.2: with no name known for a blocked-range address, the SNI or Host decides, but only an allow rule
/// lifts the range block (a blocked name keeps its own reason).
#[test]
fn allow_rule_for_the_sni_or_host_lifts_a_range_block_and_nothing_else_does() {
    let mut pair = Pair::with_allow_list("ota.example.org\n");
    let allowed = hello("ota.example.org", 500);
    let h = pair.connect(BLOCKED_NET, 443);
    pair.phone_tcp(h).send_slice(&allowed).expect("send");
    pair.drive();
    assert_eq!(pair.up.connects.len(), 1, "allow-listed SNI dialled");
    let h = pair.connect(BLOCKED_NET, 80);
    pair.phone_tcp(h).send_slice(b"GET / HTTP/1.1\r\nHost: ota.example.org\r\n\r\n").expect("send");
    pair.drive();
    assert_eq!(pair.up.connects.len(), 2, "allow-listed Host dialled");
    pair.events();
    for (name, reason) in
        [("www.example.org", Reason::Block(BlockReason::IpCidr)), (BLOCKED_NAME, Reason::Block(BlockReason::TlsSni))]
    {
        let h = pair.connect(BLOCKED_NET, 443);
        pair.phone_tcp(h).send_slice(&hello(name, 500)).expect("send");
        pair.drive();
        assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "{name}");
        assert_eq!(block_reasons(&mut pair), vec![(reason, Some(name.into()))]);
    }
    // Silent, or without a name: the range decides.
    let h = pair.connect(BLOCKED_NET, 7777);
    pair.wait(pair.engine.config.sniff_timeout);
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed);
    assert_eq!(block_reasons(&mut pair), vec![(Reason::Block(BlockReason::IpCidr), None)]);
    assert_eq!(pair.up.connects.len(), 2, "no other dial");
}

/// "This network" (0.0.0.0/8) reaches the local host on Linux: local, also written as an IPv4-mapped address.
#[test]
fn this_network_is_a_local_destination() {
    for ip in ["0.1.2.3", "::ffff:0.1.2.3", "127.0.0.1", "169.254.1.1", "::1", "fe80::1"] {
        assert!(super::super::tcp::is_local_destination(ip.parse().unwrap()), "{ip}");
    }
    assert!(!super::super::tcp::is_local_destination("1.1.1.1".parse().unwrap()));
}
