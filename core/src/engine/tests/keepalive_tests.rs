//! Issue 18.5 (keep-alive): every request of a plain-HTTP connection is judged before any of its bytes is
//! forwarded, wherever it starts (pipelined in one segment, split across segments, after a Content-Length or
//! chunked body); a later request naming a blocked host, or one whose framing cannot be followed, resets the
//! client and nothing of it reaches the server.

use super::*;

const ALLOWED: &[u8] = b"GET / HTTP/1.1\r\nHost: www.example.org\r\n\r\n";
const BLOCKED: &[u8] = b"GET /x HTTP/1.1\r\nHost: tracking.intl.miui.com\r\nUser-Agent: MiuiAnalytics\r\n\r\n";

/// A connection to 198.18.1.1:80 whose first request `first` was judged, dialled and forwarded.
fn http_flow(pair: &mut Pair, first: &[u8]) -> (SocketHandle, FlowId) {
    let h = pair.connect(NORMAL, 80);
    send(pair, h, first);
    let (flow, _) = *pair.up.connects.last().expect("dialled");
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    (h, flow)
}

/// Sends `data` from the phone and lets delayed ACKs pass (the phone's Nagle holds small segments until then).
fn send(pair: &mut Pair, h: SocketHandle, data: &[u8]) {
    assert_eq!(pair.phone_tcp(h).send_slice(data).expect("send"), data.len());
    pair.wait(Duration::from_millis(50));
}

fn written(pair: &Pair, flow: FlowId) -> Vec<u8> {
    pair.up.written.get(&flow).cloned().unwrap_or_default()
}

/// The client was reset, the upstream closed with a RST, and one block event says why.
fn assert_refused(pair: &mut Pair, h: SocketHandle, flow: FlowId, reason: Reason, host: Option<&str>) {
    pair.drive();
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Closed, "the client is reset");
    assert!(pair.up.closed.contains(&(flow, true)), "upstream reset: {:?}", pair.up.closed);
    let blocks: Vec<_> = pair.events().into_iter().filter(|e| e.action() == Action::Block).collect();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].reason(), reason);
    assert_eq!(blocks[0].host.as_deref(), host);
}

#[test]
fn pipelined_request_to_a_blocked_host_is_refused_and_never_forwarded() {
    let mut pair = Pair::new();
    // Both requests in one segment, before the connection was even judged.
    let h = pair.connect(NORMAL, 80);
    send(&mut pair, h, &[ALLOWED, BLOCKED].concat());
    let (flow, _) = pair.up.connects[0];
    pair.engine.on_tcp_connected(pair.now, flow, Ok(()));
    pair.settle();
    pair.drive();
    assert_eq!(written(&pair, flow), ALLOWED, "only the allowed request went upstream");
    assert_refused(&mut pair, h, flow, Reason::Block(BlockReason::HttpHost), Some("tracking.intl.miui.com"));
}

#[test]
fn later_request_to_a_blocked_host_is_refused_on_a_keep_alive_connection() {
    let mut pair = Pair::new();
    let (h, flow) = http_flow(&mut pair, ALLOWED);
    pair.up.to_read.insert(flow, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec());
    pair.upstream_readable(flow);
    pair.drive();
    send(&mut pair, h, ALLOWED);
    assert_eq!(written(&pair, flow), [ALLOWED, ALLOWED].concat(), "a second allowed request passes");
    pair.events();
    send(&mut pair, h, BLOCKED);
    assert_eq!(written(&pair, flow), [ALLOWED, ALLOWED].concat(), "nothing of the blocked request");
    assert_refused(&mut pair, h, flow, Reason::Block(BlockReason::HttpHost), Some("tracking.intl.miui.com"));
}

#[test]
fn request_head_split_across_segments_is_judged_when_complete() {
    let mut pair = Pair::new();
    let (h, flow) = http_flow(&mut pair, ALLOWED);
    let (start, rest) = BLOCKED.split_at(30);
    send(&mut pair, h, start);
    assert_eq!(written(&pair, flow), ALLOWED, "an unfinished head waits");
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Established);
    send(&mut pair, h, rest);
    assert_eq!(written(&pair, flow), ALLOWED);
    assert_refused(&mut pair, h, flow, Reason::Block(BlockReason::HttpHost), Some("tracking.intl.miui.com"));
}

#[test]
fn content_length_body_passes_whole_and_the_request_after_it_is_judged() {
    let mut pair = Pair::new();
    // The body itself looks like a request to the blocked host: it is body, and passes.
    let post = [
        format!("POST /up HTTP/1.1\r\nHost: www.example.org\r\nContent-Length: {}\r\n\r\n", BLOCKED.len()).as_bytes(),
        BLOCKED,
    ]
    .concat();
    let (h, flow) = http_flow(&mut pair, &post);
    assert_eq!(written(&pair, flow), post, "head and body forwarded byte-exact");
    send(&mut pair, h, ALLOWED);
    assert_eq!(written(&pair, flow), [&post[..], ALLOWED].concat());
    send(&mut pair, h, BLOCKED);
    assert_eq!(written(&pair, flow), [&post[..], ALLOWED].concat());
    assert_refused(&mut pair, h, flow, Reason::Block(BlockReason::HttpHost), Some("tracking.intl.miui.com"));
}

#[test]
fn large_content_length_body_streams_through() {
    let mut pair = Pair::new();
    let body: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let head = format!("PUT /big HTTP/1.1\r\nHost: www.example.org\r\nContent-Length: {}\r\n\r\n", body.len());
    let (h, flow) = http_flow(&mut pair, head.as_bytes());
    let mut sent = 0;
    for _ in 0..2000 {
        if sent == body.len() {
            break;
        }
        sent += pair.phone_tcp(h).send_slice(&body[sent..]).expect("send");
        pair.wait(Duration::from_millis(10));
    }
    pair.wait(Duration::from_millis(100));
    send(&mut pair, h, BLOCKED);
    assert_eq!(written(&pair, flow), [head.as_bytes(), &body[..]].concat(), "body forwarded byte-exact");
    assert_refused(&mut pair, h, flow, Reason::Block(BlockReason::HttpHost), Some("tracking.intl.miui.com"));
}

#[test]
fn chunked_body_is_followed_to_the_next_request() {
    let mut pair = Pair::new();
    let head = b"POST /up HTTP/1.1\r\nHost: www.example.org\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let (h, flow) = http_flow(&mut pair, &head);
    // Chunk data that looks like a request passes as data; the chunks arrive in odd pieces.
    let mut chunks = format!("{:x};name=v\r\n", BLOCKED.len()).into_bytes();
    chunks.extend_from_slice(BLOCKED);
    chunks.extend_from_slice(b"\r\n3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n");
    for piece in chunks.chunks(7) {
        send(&mut pair, h, piece);
    }
    assert_eq!(written(&pair, flow), [&head[..], &chunks[..]].concat(), "chunked body forwarded byte-exact");
    send(&mut pair, h, ALLOWED);
    assert_eq!(written(&pair, flow), [&head[..], &chunks[..], ALLOWED].concat());
    send(&mut pair, h, BLOCKED);
    assert_eq!(written(&pair, flow), [&head[..], &chunks[..], ALLOWED].concat());
    assert_refused(&mut pair, h, flow, Reason::Block(BlockReason::HttpHost), Some("tracking.intl.miui.com"));
}

#[test]
fn framing_that_cannot_be_followed_is_refused_as_uninspectable() {
    for (first, next) in [
        // A bare LF ends the chunk-size line: servers disagree on that.
        (&b"POST / HTTP/1.1\r\nHost: www.example.org\r\nTransfer-Encoding: chunked\r\n\r\n"[..], &b"5\nhello\r\n"[..]),
        // Not HTTP where the next request must start.
        (ALLOWED, b"\x16\x03\x01\x00\x10garbage"),
        // A head that cannot be read.
        (ALLOWED, b"GET / HTTP/1.1\r\nHost: a\r\nHost: tracking.intl.miui.com\r\n\r\n"),
        // Content-Length beside Transfer-Encoding (request smuggling).
        (
            ALLOWED,
            b"POST / HTTP/1.1\r\nHost: www.example.org\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
    ] {
        let mut pair = Pair::new();
        let (h, flow) = http_flow(&mut pair, first);
        let before = written(&pair, flow);
        send(&mut pair, h, next);
        assert_eq!(written(&pair, flow), before, "nothing of {:?}", String::from_utf8_lossy(next));
        let host = Some("www.example.org");
        assert_refused(&mut pair, h, flow, Reason::Block(BlockReason::Uninspectable), host);
    }
}

#[test]
fn unfinished_head_at_the_clients_close_is_refused_but_trailing_newlines_pass() {
    let mut pair = Pair::new();
    let (h, flow) = http_flow(&mut pair, ALLOWED);
    send(&mut pair, h, b"GET /x HTTP/1.1\r\nHost: tracking.intl");
    pair.phone_tcp(h).close();
    pair.drive();
    assert_eq!(written(&pair, flow), ALLOWED);
    assert!(pair.up.shutdowns.is_empty(), "no FIN after an unjudged head");
    assert!(pair.up.closed.contains(&(flow, true)), "upstream reset: {:?}", pair.up.closed);

    let mut pair = Pair::new();
    let (h, flow) = http_flow(&mut pair, ALLOWED);
    send(&mut pair, h, b"\r\n");
    pair.phone_tcp(h).close();
    pair.drive();
    assert_eq!(written(&pair, flow), [ALLOWED, b"\r\n"].concat());
    assert_eq!(pair.up.shutdowns, vec![flow], "FIN passed");
}

#[test]
fn switched_protocols_pass_unread_after_the_upgrade() {
    let mut pair = Pair::new();
    let upgrade = b"GET /ws HTTP/1.1\r\nHost: www.example.org\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let (h, flow) = http_flow(&mut pair, upgrade);
    // A masked WebSocket frame, then bytes that would read as a request: the tunnel is not HTTP any more.
    let frames = [&b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"[..], BLOCKED].concat();
    send(&mut pair, h, &frames);
    assert_eq!(written(&pair, flow), [&upgrade[..], &frames[..]].concat());
    assert_eq!(pair.phone_tcp(h).state(), tcp::State::Established);
}

/// A later request whose head is longer than the first short look (2 KiB) is read further and judged: allowed
/// here, and forwarded whole.
#[test]
fn a_long_later_head_is_read_past_the_first_look() {
    let mut pair = Pair::new();
    let (h, flow) = http_flow(&mut pair, ALLOWED);
    let cookie = "c".repeat(3000);
    let long = format!("GET /2 HTTP/1.1\r\nHost: www.example.org\r\nCookie: {cookie}\r\n\r\n").into_bytes();
    send(&mut pair, h, &long);
    for _ in 0..10 {
        pair.wait(Duration::from_millis(50));
    }
    let passed = written(&pair, flow);
    assert!(passed == [ALLOWED, &long[..]].concat(), "{} bytes of {} passed", passed.len(), ALLOWED.len() + long.len());
    assert_ne!(pair.phone_tcp(h).state(), tcp::State::Closed);
    // Past what a head may take, with more bytes waiting: refused, not waited on.
    let endless = format!("GET /3 HTTP/1.1\r\nHost: www.example.org\r\nCookie: {}", "c".repeat(70_000)).into_bytes();
    let mut sent = 0;
    while sent < endless.len() && pair.phone_tcp(h).state() != tcp::State::Closed {
        sent += pair.phone_tcp(h).send_slice(&endless[sent..]).expect("send");
        pair.wait(Duration::from_millis(50));
    }
    let host = Some("www.example.org");
    assert_refused(&mut pair, h, flow, Reason::Block(BlockReason::Uninspectable), host);
    assert!(written(&pair, flow) == [ALLOWED, &long[..]].concat(), "nothing of it passed");
}
