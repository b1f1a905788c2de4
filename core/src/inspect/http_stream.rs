//! Following the requests of a keep-alive HTTP/1.x connection, so that every request head is judged.
//!
//! A [`RequestStream`] walks the client→server byte stream of one connection: at each request head it hands
//! the head's host to the caller to judge, then lets the head and its body pass by count (Content-Length), or
//! chunk by chunk (chunked), to the next head. Bodies are never copied or scanned: only heads, chunk-size
//! lines and trailers are read. Whatever a server could read another way than we do (a malformed chunk line,
//! a bare LF where CRLF belongs, ambiguous body framing, anything that is not HTTP where a request must
//! start) is [`Step::Unreadable`]: the caller refuses it.
//!
//! A CONNECT request or one with an `Upgrade` header may switch the connection to another protocol (a
//! tunnel, WebSocket). Whether the server agreed is in its answer, which is not read; so the bytes after such
//! a request are looked at once more: if they are an HTTP request (the server refused the switch, or speaks
//! HTTP through the tunnel), framing goes on; anything else ends framing ([`Step::Tunnel`]) and the rest of
//! the stream passes unread. (An `h2c` upgrade is then refused: its HTTP/2 preface is unreadable.)

use super::http::{scan_request_head, BodyFraming, HeadScan};
use httparse::{Status, EMPTY_HEADER};

/// Longest chunk-size line read (size, extensions, CRLF); a longer one is [`Step::Unreadable`].
pub const MAX_CHUNK_LINE: usize = 4096;
/// Trailer fields read after the last chunk; more is [`Step::Unreadable`].
const MAX_TRAILERS: usize = 64;

/// Where the stream is, between what may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// A request head (or empty lines before one).
    Head,
    /// A chunk-size line.
    ChunkSize,
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// The trailer section after the last chunk.
    Trailers,
    /// After a request that may have switched protocols: a request head, or the switched protocol.
    AfterSwitch,
}

/// What the bytes at the current position are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Framing bytes (chunk line, chunk end, trailers, empty lines): [`RequestStream::allowance`] may pass.
    Pass,
    /// Not enough bytes to tell: look again when more arrive (the caller bounds how many it waits for).
    NeedMore,
    /// A request head for this host (`None`: an HTTP/1.0 request naming none). Judge it; if it is allowed,
    /// the head and its body (or its first part) are [`RequestStream::allowance`].
    Head(Option<String>),
    /// What a server would make of these bytes cannot be told: refuse the connection.
    Unreadable,
    /// The connection switched protocols: the rest of the stream is not HTTP and passes unread.
    Tunnel,
}

/// The request framing state of one client→server stream. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestStream {
    /// Bytes that may pass before the next look.
    allowance: u64,
    /// What the bytes after the allowance are.
    at: At,
    /// The current request may switch protocols once its body has passed.
    switching: bool,
}

impl Default for RequestStream {
    fn default() -> Self {
        RequestStream { allowance: 0, at: At::Head, switching: false }
    }
}

impl RequestStream {
    /// A stream at its first request head.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many bytes may pass now; at 0 the next bytes must be looked at with [`RequestStream::step`].
    pub fn allowance(&self) -> u64 {
        self.allowance
    }

    /// Records that `n` bytes (at most the allowance) were passed on.
    pub fn passed(&mut self, n: usize) {
        self.allowance = self.allowance.saturating_sub(n as u64);
    }

    /// How many bytes [`RequestStream::step`] needs at most to decide: `None` for a head or trailers (the
    /// caller's own limit applies), else [`MAX_CHUNK_LINE`].
    pub fn lookahead(&self) -> Option<usize> {
        match self.at {
            At::ChunkSize | At::ChunkEnd => Some(MAX_CHUNK_LINE),
            At::Head | At::Trailers | At::AfterSwitch => None,
        }
    }

    /// Looks at `bytes`, the start of what follows the allowance (call only when it is 0); `finished`: the
    /// client has closed its side and `bytes` is all it will ever send. On [`Step::NeedMore`] nothing changes.
    pub fn step(&mut self, bytes: &[u8], finished: bool) -> Step {
        if bytes.is_empty() {
            return Step::NeedMore;
        }
        let step = match self.at {
            At::Head | At::AfterSwitch => self.head(bytes),
            At::ChunkSize => self.chunk_size(bytes),
            At::ChunkEnd => match bytes {
                [b'\r', b'\n', ..] => self.pass(2, At::ChunkSize),
                [b'\r'] => Step::NeedMore,
                _ => Step::Unreadable,
            },
            At::Trailers => match httparse::parse_headers(bytes, &mut [EMPTY_HEADER; MAX_TRAILERS]) {
                Ok(Status::Complete((len, _))) => {
                    let next = self.after_body();
                    self.pass(len, next)
                }
                Ok(Status::Partial) => Step::NeedMore,
                Err(_) => Step::Unreadable,
            },
        };
        match step {
            // Empty lines at the end of the stream are harmless; any other unfinished head or frame is not.
            Step::NeedMore if finished && self.at == At::Head && bytes.iter().all(|&b| matches!(b, b'\r' | b'\n')) => {
                self.pass(bytes.len(), At::Head)
            }
            Step::NeedMore if finished => Step::Unreadable,
            step => step,
        }
    }

    /// A request head (or, after a switch, whatever comes).
    fn head(&mut self, bytes: &[u8]) -> Step {
        let head = match scan_request_head(bytes) {
            HeadScan::Head(head) => head,
            HeadScan::NeedMore => return Step::NeedMore,
            HeadScan::NotHttp if self.at == At::AfterSwitch => return Step::Tunnel,
            HeadScan::NotHttp | HeadScan::Unreadable => return Step::Unreadable,
        };
        self.switching = head.switches;
        let len = head.len as u64;
        match head.body {
            BodyFraming::None => {
                let next = self.after_body();
                self.allowance = len;
                self.at = next;
            }
            BodyFraming::Length(body) => {
                let next = self.after_body();
                self.allowance = len.saturating_add(body);
                self.at = next;
            }
            BodyFraming::Chunked => {
                self.allowance = len;
                self.at = At::ChunkSize;
            }
        }
        Step::Head(head.host)
    }

    /// A chunk-size line: `size[;extensions]` ending in CRLF, with no other CR or LF in it.
    fn chunk_size(&mut self, bytes: &[u8]) -> Step {
        let Some(lf) = bytes.iter().position(|&b| b == b'\n') else {
            return Step::NeedMore;
        };
        let Some(line) = bytes.get(..=lf) else {
            return Step::Unreadable;
        };
        let body = line.strip_suffix(b"\r\n").unwrap_or_default();
        if body.is_empty() || body.iter().any(|&b| matches!(b, b'\r' | b'\n')) {
            return Step::Unreadable;
        }
        match httparse::parse_chunk_size(line) {
            Ok(Status::Complete((len, 0))) if len == line.len() => self.pass(len, At::Trailers),
            Ok(Status::Complete((len, size))) if len == line.len() => {
                self.pass(len, At::ChunkEnd);
                self.allowance = self.allowance.saturating_add(size);
                Step::Pass
            }
            _ => Step::Unreadable,
        }
    }

    /// Where the stream is once the current request's body has passed.
    fn after_body(&self) -> At {
        if self.switching {
            At::AfterSwitch
        } else {
            At::Head
        }
    }

    fn pass(&mut self, len: usize, next: At) -> Step {
        self.allowance = len as u64;
        self.at = next;
        Step::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs a whole client stream through the framer the way the engine does (looking only when the
    /// allowance is spent), the stream arriving `window` bytes at a time: the hosts judged, in order, and how
    /// the stream ended (`None`: every byte passed).
    fn walk(stream: &[u8], window: usize) -> (Vec<Option<String>>, Option<Step>) {
        let mut framer = RequestStream::new();
        let mut hosts = Vec::new();
        let (mut at, mut arrived) = (0, window.min(stream.len()));
        while at < stream.len() {
            if framer.allowance() > 0 {
                let n = usize::try_from(framer.allowance()).unwrap_or(usize::MAX).min(stream.len() - at);
                framer.passed(n);
                at += n;
                arrived = arrived.max(at);
                continue;
            }
            let finished = arrived == stream.len();
            match framer.step(&stream[at..arrived], finished) {
                Step::Pass => {}
                Step::Head(host) => hosts.push(host),
                Step::NeedMore if !finished => arrived = (arrived + window).min(stream.len()),
                Step::Tunnel => return (hosts, None),
                other => return (hosts, Some(other)),
            }
        }
        (hosts, None)
    }

    fn hosts(names: &[&str]) -> Vec<Option<String>> {
        names.iter().map(|n| Some(n.to_string())).collect()
    }

    const GET_A: &[u8] = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
    const GET_T: &[u8] = b"GET /x HTTP/1.1\r\nHost: tracking.intl.miui.com\r\n\r\n";

    #[test]
    fn pipelined_requests_are_each_seen() {
        let stream = [GET_A, GET_T, GET_A].concat();
        assert_eq!(walk(&stream, 1 << 16), (hosts(&["a.example", "tracking.intl.miui.com", "a.example"]), None));
    }

    #[test]
    fn content_length_bodies_are_skipped_even_when_they_look_like_requests() {
        let body = GET_T;
        let mut stream =
            format!("POST /up HTTP/1.1\r\nHost: a.example\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(b"GET / HTTP/1.1\r\nHost: b.example\r\n\r\n");
        assert_eq!(walk(&stream, 1 << 16), (hosts(&["a.example", "b.example"]), None));
    }

    #[test]
    fn chunked_bodies_are_followed_to_the_next_head() {
        let mut stream = b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: Chunked\r\n\r\n".to_vec();
        stream.extend_from_slice(b"5;ext=1\r\nGET /\r\n");
        stream.extend_from_slice(format!("{:x}\r\n", GET_T.len()).as_bytes());
        stream.extend_from_slice(GET_T);
        stream.extend_from_slice(b"\r\n0\r\nX-Trailer: 1\r\n\r\n");
        stream.extend_from_slice(GET_T);
        for window in [1 << 16, 7, 3, 2, 1] {
            let (seen, end) = walk(&stream, window);
            assert_eq!(end, None, "window {window}");
            assert_eq!(seen, hosts(&["a.example", "tracking.intl.miui.com"]), "window {window}");
        }
    }

    #[test]
    fn bad_chunk_framing_is_unreadable() {
        let head = b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for bad in [&b"5\nhello\r\n0\r\n\r\n"[..], b"5\r\nhelloXX0\r\n\r\n", b"zz\r\n", b"5;a\nb\r\nhello\r\n", b"\r\n"]
        {
            let stream = [&head[..], bad].concat();
            assert_eq!(walk(&stream, 1 << 16).1, Some(Step::Unreadable), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [&head[..], &[b'1'; MAX_CHUNK_LINE][..]].concat();
        let mut framer = RequestStream::new();
        assert_eq!(framer.step(&long, false), Step::Head(Some("a.example".into())));
        framer.passed(head.len());
        assert_eq!(framer.step(&long[head.len()..], false), Step::NeedMore);
        assert_eq!(framer.lookahead(), Some(MAX_CHUNK_LINE), "the caller refuses at this many bytes");
    }

    #[test]
    fn ambiguous_body_framing_is_unreadable() {
        for head in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(walk(head, 1 << 16), (vec![], Some(Step::Unreadable)), "{}", String::from_utf8_lossy(head));
        }
        let same = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nhi";
        assert_eq!(walk(same, 1 << 16), (hosts(&["a"]), None));
    }

    #[test]
    fn a_later_head_that_is_not_http_or_is_unfinished_is_unreadable() {
        let not_http = [GET_A, b"\x16\x03\x01 tls"].concat();
        assert_eq!(walk(&not_http, 1 << 16), (hosts(&["a.example"]), Some(Step::Unreadable)));
        let unfinished = [GET_A, b"GET / HTTP/1.1\r\nHost: track"].concat();
        assert_eq!(walk(&unfinished, 1 << 16), (hosts(&["a.example"]), Some(Step::Unreadable)));
        let trailing_newlines = [GET_A, b"\r\n\r\n"].concat();
        assert_eq!(walk(&trailing_newlines, 1 << 16), (hosts(&["a.example"]), None));
    }

    #[test]
    fn a_switch_ends_framing_only_when_what_follows_is_not_http() {
        let upgrade = b"GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let websocket = [&upgrade[..], b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58GET / HTTP/1.1\r\n"].concat();
        assert_eq!(walk(&websocket, 1 << 16), (hosts(&["a.example"]), None), "tunnelled");
        // The server refused the upgrade and the client goes on with HTTP: still framed.
        let refused = [&upgrade[..], GET_T].concat();
        assert_eq!(walk(&refused, 1 << 16), (hosts(&["a.example", "tracking.intl.miui.com"]), None));
        let connect = [&b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"[..], GET_T].concat();
        assert_eq!(walk(&connect, 1 << 16), (hosts(&["a.example", "tracking.intl.miui.com"]), None));
        let h2c = [&upgrade[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"].concat();
        assert_eq!(walk(&h2c, 1 << 16), (hosts(&["a.example"]), Some(Step::Unreadable)));
    }

    proptest! {
        #[test]
        fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), window in 1usize..64) {
            let stream = [GET_A, &bytes[..]].concat();
            let _ = walk(&stream, window);
        }
    }
}
