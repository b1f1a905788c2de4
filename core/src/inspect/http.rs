//! The host an HTTP/1.x request is for (RFC 9112 §3.2), from the start of a client's stream.
//!
//! The request head is parsed with `httparse`. The host comes from the request target when it
//! carries one (CONNECT's authority-form, an `http://` or `https://` absolute-form target, which
//! RFC 9112 §3.2.2 says overrides Host), otherwise from the Host header.
//!
//! Read the way servers read it: empty lines before the request line are skipped (RFC 9112 §2.2),
//! any number of header lines is accepted, and user info before `@` in an authority is dropped. A
//! stream that is recognisably HTTP but whose host cannot be read is [`HttpScan::Unreadable`], so
//! the caller can refuse it rather than let it pass unjudged.

use std::net::Ipv6Addr;

use httparse::{Header, Request, Status, EMPTY_HEADER};

/// Header slots given to `httparse` when the head has few lines (on the stack).
const INLINE_HEADERS: usize = 64;
/// Most header slots ever given to `httparse`: a head with more header lines is
/// [`HttpScan::Unreadable`]. (The caller reads at most 64 KiB, so this is never the limit of a
/// head of real header lines, which take at least 3 bytes each.)
const MAX_HEADERS: usize = 32 * 1024;
/// Longest method token accepted before the first space (e.g. `VERSION-CONTROL` is 15).
const MAX_METHOD_LEN: usize = 24;

/// Result of looking for an HTTP/1.x request head at the start of a client→server byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpScan {
    /// Could be an HTTP request but the head is not complete yet.
    NeedMore,
    /// The request's host: lowercase, port and trailing dot stripped; an IPv6 literal is given
    /// without brackets in its canonical form (`2001:db8::1`).
    Host(String),
    /// A complete HTTP/1.0 request head without any host (no Host header, no authority in the
    /// target): only the destination address can tell where it goes.
    NoHost,
    /// Recognisably HTTP, but the host cannot be read: a malformed, empty or conflicting Host, an
    /// HTTP/1.1 request without one, a malformed head after a request line ending in `HTTP/1.x`,
    /// too many header lines, or the HTTP/2 connection preface (its host is HPACK-coded).
    Unreadable,
    /// Not an HTTP/1.x request.
    NotHttp,
}

/// The HTTP/2 connection preface a prior-knowledge cleartext client starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// How the body of a request is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: neither Content-Length nor Transfer-Encoding (a request body is never delimited by close).
    None,
    /// `Content-Length` bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete request head at the start of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The request's host as [`HttpScan::Host`] gives it; `None` for an HTTP/1.0 request without any.
    pub host: Option<String>,
    /// Bytes from the start of the stream to the end of the head (leading empty lines included).
    pub len: usize,
    /// How the body that follows is delimited.
    pub body: BodyFraming,
    /// CONNECT, or an `Upgrade` header: after this request (and its body) the connection may switch to
    /// another protocol.
    pub switches: bool,
}

/// Result of reading a request head with its framing at the start of a client→server byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadScan {
    /// Could be an HTTP request but the head is not complete yet.
    NeedMore,
    /// A complete head whose host and body framing can be read.
    Head(RequestHead),
    /// As [`HttpScan::Unreadable`], and also a head whose body framing a server could read another way than
    /// we do: Transfer-Encoding other than exactly `chunked`, Transfer-Encoding in HTTP/1.0 or beside
    /// Content-Length, a Content-Length that is not one decimal number (request smuggling, RFC 9112 §6.3).
    Unreadable,
    /// Not an HTTP/1.x request.
    NotHttp,
}

/// Looks for an HTTP/1.x request head in everything the client has sent so far.
///
/// Answers [`NotHttp`](HttpScan::NotHttp) from the first bytes when they cannot start a method
/// (an uppercase letter, then up to 24 token characters before a space).
pub fn scan_http_request(stream_start: &[u8]) -> HttpScan {
    match scan_request_head(stream_start) {
        HeadScan::NeedMore => HttpScan::NeedMore,
        HeadScan::Head(RequestHead { host: Some(host), .. }) => HttpScan::Host(host),
        HeadScan::Head(RequestHead { host: None, .. }) => HttpScan::NoHost,
        HeadScan::Unreadable => HttpScan::Unreadable,
        HeadScan::NotHttp => HttpScan::NotHttp,
    }
}

/// Reads the request head at the start of `stream` with its host and body framing. The work is proportional
/// to the head, not to what follows it (pipelined requests, a body).
pub fn scan_request_head(stream: &[u8]) -> HeadScan {
    // RFC 9112 §2.2: a server should ignore empty lines before the request line, and servers do.
    let Some(start) = stream.iter().position(|&b| !matches!(b, b'\r' | b'\n')) else {
        return HeadScan::NeedMore;
    };
    let head = stream.get(start..).unwrap_or_default();
    if head.starts_with(H2_PREFACE) {
        return HeadScan::Unreadable;
    }
    if !plausible_method(head) {
        return HeadScan::NotHttp;
    }
    // Parse only up to the first empty line when there is one, so that bytes after the head cost nothing.
    let head = match head_end(head) {
        Some(end) => head.get(..end).unwrap_or(head),
        None => head,
    };
    // Every header takes a line: one slot per line feed is always enough (bounded by MAX_HEADERS).
    let lines = head.iter().filter(|&&b| b == b'\n').count();
    let scan = if lines <= INLINE_HEADERS {
        parse_head(head, &mut [EMPTY_HEADER; INLINE_HEADERS])
    } else {
        parse_head(head, &mut vec![EMPTY_HEADER; lines.min(MAX_HEADERS)])
    };
    match scan {
        HeadScan::Head(parsed) => HeadScan::Head(RequestHead { len: start + parsed.len, ..parsed }),
        other => other,
    }
}

/// The length of `head` up to and including its first empty line (`\n\n` or `\n\r\n`), if it has one.
fn head_end(head: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(lf) = head.get(from..)?.iter().position(|&b| b == b'\n') {
        let at = from + lf + 1;
        match head.get(at..) {
            Some([b'\n', ..]) => return Some(at + 1),
            Some([b'\r', b'\n', ..]) => return Some(at + 2),
            _ => from = at,
        }
    }
    None
}

/// Parses a request head (leading empty lines removed) with `headers` as httparse's header slots.
fn parse_head<'h>(head: &'h [u8], headers: &mut [Header<'h>]) -> HeadScan {
    let mut request = Request::new(headers);
    match request.parse(head) {
        Ok(Status::Partial) => HeadScan::NeedMore,
        Ok(Status::Complete(len)) => {
            let host = match request_host(&request) {
                Some(host) => Some(host),
                None if request.version == Some(0) && !has_host_header(request.headers) => None,
                None => return HeadScan::Unreadable,
            };
            let Some(body) = body_framing(&request) else {
                return HeadScan::Unreadable;
            };
            let switches = request.method == Some("CONNECT")
                || request.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade"));
            HeadScan::Head(RequestHead { host, len, body, switches })
        }
        Err(httparse::Error::TooManyHeaders) => HeadScan::Unreadable,
        Err(_) if has_http_request_line(head) => HeadScan::Unreadable,
        Err(_) => HeadScan::NotHttp,
    }
}

/// How a parsed request's body is delimited; `None` when a server could read it another way (see
/// [`HeadScan::Unreadable`]).
fn body_framing(request: &Request<'_, '_>) -> Option<BodyFraming> {
    let mut coding: Option<Vec<u8>> = None;
    let mut length: Option<u64> = None;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            let all = coding.get_or_insert_with(Vec::new);
            if !all.is_empty() {
                all.push(b',');
            }
            all.extend_from_slice(header.value);
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let value = header.value.trim_ascii();
            if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n = std::str::from_utf8(value).ok()?.parse::<u64>().ok()?;
            if length.is_some_and(|other| other != n) {
                return None;
            }
            length = Some(n);
        }
    }
    match (coding, length) {
        (None, None) => Some(BodyFraming::None),
        (None, Some(n)) => Some(BodyFraming::Length(n)),
        (Some(coding), None) if request.version == Some(1) && coding.trim_ascii().eq_ignore_ascii_case(b"chunked") => {
            Some(BodyFraming::Chunked)
        }
        (Some(_), _) => None,
    }
}

/// Whether the first line of `head` ends in ` HTTP/1.x`: an HTTP request line, whatever follows.
fn has_http_request_line(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    matches!(
        line.len().checked_sub(9).and_then(|at| line.get(at..)),
        Some([b' ', b'H', b'T', b'T', b'P', b'/', b'1', b'.', digit]) if digit.is_ascii_digit()
    )
}

/// Whether the head has a Host header at all (even one that cannot be read).
fn has_host_header(headers: &[Header<'_>]) -> bool {
    headers.iter().any(|h| h.name.eq_ignore_ascii_case("host"))
}

/// Whether `bytes` can begin with a method token (RFC 9110 §9.1; every registered method is
/// uppercase).
fn plausible_method(bytes: &[u8]) -> bool {
    let method = bytes.split(|&b| b == b' ').next().unwrap_or_default();
    let is_tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    match method.first() {
        None => true,
        Some(first) => first.is_ascii_uppercase() && method.len() <= MAX_METHOD_LEN && method.iter().all(is_tchar),
    }
}

/// The host a complete request is for.
fn request_host(request: &Request<'_, '_>) -> Option<String> {
    let target = request.path.unwrap_or_default();
    if request.method == Some("CONNECT") {
        return authority_host(target.as_bytes());
    }
    match absolute_form_authority(target) {
        Some(authority) => authority_host(authority.as_bytes()),
        None => authority_host(host_header(request.headers)?),
    }
}

/// The authority of an `http://` or `https://` absolute-form target, without user info.
fn absolute_form_authority(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    Some(authority.rsplit('@').next().unwrap_or_default())
}

/// The Host header's value; `None` when absent or when several Host headers disagree (RFC 9112
/// §3.2 makes that a 400; a server could pick either, so neither is trusted).
fn host_header<'a>(headers: &[Header<'a>]) -> Option<&'a [u8]> {
    let mut hosts = headers.iter().filter(|h| h.name.eq_ignore_ascii_case("host")).map(|h| h.value);
    let first = hosts.next()?;
    hosts.all(|other| other == first).then_some(first)
}

/// The host of `[userinfo@]host[:port]` or `[userinfo@][v6]:port`. User info has no place in a
/// Host header (RFC 9110 §7.2), but lenient servers drop it and route by what follows.
fn authority_host(authority: &[u8]) -> Option<String> {
    let authority = authority.trim_ascii();
    let authority = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => authority.get(at + 1..)?,
        None => authority,
    };
    if let Some(bracketed) = authority.strip_prefix(b"[") {
        let close = bracketed.iter().position(|&b| b == b']')?;
        if !is_port_suffix(bracketed.get(close + 1..)?) {
            return None;
        }
        let literal = std::str::from_utf8(bracketed.get(..close)?).ok()?;
        return literal.parse::<Ipv6Addr>().ok().map(|ip| ip.to_string());
    }
    let (host, port) = match authority.iter().rposition(|&b| b == b':') {
        Some(colon) => (authority.get(..colon)?, authority.get(colon..)?),
        None => (authority, &[][..]),
    };
    if !is_port_suffix(port) {
        return None;
    }
    super::normalise_hostname(host)
}

/// Empty, or `:` followed by at most five digits.
fn is_port_suffix(bytes: &[u8]) -> bool {
    match bytes {
        [] => true,
        [b':', digits @ ..] => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GET: &[u8] =
        b"GET /stat/upload HTTP/1.1\r\nUser-Agent: MiuiAnalytics\r\nHost: Tracking.Intl.MIUI.com\r\nAccept: */*\r\n\r\n";

    fn host(s: &str) -> HttpScan {
        HttpScan::Host(s.to_string())
    }

    fn get_with_host(value: &str) -> HttpScan {
        scan_http_request(format!("GET / HTTP/1.1\r\nHost: {value}\r\n\r\n").as_bytes())
    }

    #[test]
    fn get_with_host_is_lowercased() {
        assert_eq!(scan_http_request(GET), host("tracking.intl.miui.com"));
    }

    #[test]
    fn every_prefix_needs_more_until_the_head_is_complete() {
        for len in 0..GET.len() {
            assert_eq!(scan_http_request(&GET[..len]), HttpScan::NeedMore, "prefix {len}");
        }
        let mut with_body = GET.to_vec();
        with_body.extend_from_slice(b"\x00\x01binary body");
        assert_eq!(scan_http_request(&with_body), host("tracking.intl.miui.com"));
    }

    #[test]
    fn port_trailing_dot_and_whitespace_are_stripped() {
        assert_eq!(get_with_host("data.mistat.xiaomi.com:8080"), host("data.mistat.xiaomi.com"));
        assert_eq!(get_with_host("Example.COM."), host("example.com"));
        assert_eq!(get_with_host("example.com.:80"), host("example.com"));
        assert_eq!(get_with_host("  example.com  "), host("example.com"));
        assert_eq!(get_with_host("192.0.2.7:80"), host("192.0.2.7"));
    }

    #[test]
    fn ipv6_literals() {
        assert_eq!(get_with_host("[2001:DB8:0::1]:8080"), host("2001:db8::1"));
        assert_eq!(get_with_host("[::1]"), host("::1"));
        assert_eq!(get_with_host("[zz::1]"), HttpScan::Unreadable);
        assert_eq!(get_with_host("[::1"), HttpScan::Unreadable);
        assert_eq!(get_with_host("[::1]x"), HttpScan::Unreadable);
        assert_eq!(get_with_host("2001:db8::1"), HttpScan::Unreadable);
    }

    #[test]
    fn invalid_hosts_are_unreadable() {
        for bad in ["", "exa mple.com", "a/b", "a.com:x", "a.com:123456", "é.com", "a.com@", "[::1"] {
            assert_eq!(get_with_host(bad), HttpScan::Unreadable, "{bad:?}");
        }
        let http10 = b"GET / HTTP/1.0\r\nHost: exa mple.com\r\n\r\n";
        assert_eq!(scan_http_request(http10), HttpScan::Unreadable);
    }

    /// Regression (issue 18.2): `Host: user@name` was read as no host, so the flow was judged by address.
    #[test]
    fn user_info_is_dropped() {
        assert_eq!(get_with_host("user@Tracking.Intl.Miui.com"), host("tracking.intl.miui.com"));
        assert_eq!(get_with_host("u:p@a@tracking.intl.miui.com:8080"), host("tracking.intl.miui.com"));
        assert_eq!(get_with_host("user@[2001:db8::1]:80"), host("2001:db8::1"));
    }

    /// Regression (issue 18.2): servers skip empty lines before the request line (RFC 9112 §2.2); the scanner
    /// called such a request "not HTTP" and the flow was judged by address.
    #[test]
    fn leading_empty_lines_are_skipped() {
        let mut req = b"\r\n\n\r\n".to_vec();
        req.extend_from_slice(GET);
        assert_eq!(scan_http_request(&req), host("tracking.intl.miui.com"));
        assert_eq!(scan_http_request(b"\r\n"), HttpScan::NeedMore);
        assert_eq!(scan_http_request(b"\r\n\r\nGET / HT"), HttpScan::NeedMore);
        // The head's length counts them, so the next request is found where it starts.
        let pipelined = [&req[..], b"GET /next HTTP/1.1\r\nHost: b\r\n\r\n"].concat();
        let HeadScan::Head(head) = scan_request_head(&pipelined) else { panic!("a head") };
        assert_eq!(head.len, req.len());
    }

    /// A Content-Length of up to 19 digits is read; a longer one (even zeros in front of a small number) is not,
    /// as it may overflow.
    #[test]
    fn content_length_takes_at_most_19_digits() {
        let framing = |value: &str| match scan_request_head(
            format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {value}\r\n\r\n").as_bytes(),
        ) {
            HeadScan::Head(head) => Some(head.body),
            _ => None,
        };
        assert_eq!(framing("1000000000000000000"), Some(BodyFraming::Length(1_000_000_000_000_000_000)));
        assert_eq!(framing("00000000000000000001"), None);
        assert_eq!(framing(""), None);
    }

    #[test]
    fn missing_or_conflicting_host() {
        assert_eq!(scan_http_request(b"GET / HTTP/1.0\r\n\r\n"), HttpScan::NoHost);
        assert_eq!(scan_http_request(b"GET / HTTP/1.1\r\n\r\n"), HttpScan::Unreadable);
        let conflict = b"GET / HTTP/1.1\r\nHost: allowed.example\r\nhost: tracking.miui.com\r\n\r\n";
        assert_eq!(scan_http_request(conflict), HttpScan::Unreadable);
        let same = b"GET / HTTP/1.1\r\nHost: a.example\r\nHOST: a.example\r\n\r\n";
        assert_eq!(scan_http_request(same), host("a.example"));
    }

    #[test]
    fn absolute_form_target_overrides_host() {
        let abs = b"GET http://user:pw@Abs.Example:81/x?y#z HTTP/1.1\r\nHost: other.example\r\n\r\n";
        assert_eq!(scan_http_request(abs), host("abs.example"));
        let https = b"POST HTTPS://[2001:db8::2]/ HTTP/1.1\r\n\r\n";
        assert_eq!(scan_http_request(https), host("2001:db8::2"));
        // Other schemes are not an authority we know how to read: Host is used.
        let ftp = b"GET ftp://x.example/ HTTP/1.1\r\nHost: h.example\r\n\r\n";
        assert_eq!(scan_http_request(ftp), host("h.example"));
    }

    #[test]
    fn connect_uses_its_authority() {
        let connect = b"CONNECT api.ad.xiaomi.com:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n";
        assert_eq!(scan_http_request(connect), host("api.ad.xiaomi.com"));
    }

    #[test]
    fn not_http() {
        let tls = include_bytes!("testdata/client_hello_openssl_sni.bin");
        assert_eq!(scan_http_request(tls), HttpScan::NotHttp);
        assert_eq!(scan_http_request(&[0x00, 0xff, 0x10]), HttpScan::NotHttp);
        assert_eq!(scan_http_request(b"get / HTTP/1.1\r\n"), HttpScan::NotHttp);
        assert_eq!(scan_http_request(b"SSH-2.0-OpenSSH_9.2\r\n"), HttpScan::NotHttp);
        assert_eq!(scan_http_request(b"AAAAAAAAAAAAAAAAAAAAAAAAA"), HttpScan::NotHttp);
        assert_eq!(scan_http_request(b"EHLO mail.example\r\n"), HttpScan::NotHttp);
        assert_eq!(scan_http_request(b"USER bob\r\n"), HttpScan::NotHttp);
    }

    #[test]
    fn malformed_http_and_h2c_are_unreadable() {
        assert_eq!(scan_http_request(b"GET /\x01 HTTP/1.1\r\n"), HttpScan::Unreadable);
        assert_eq!(scan_http_request(b"GET / HTTP/1.1\r\nHo st: a.example\r\n\r\n"), HttpScan::Unreadable);
        assert_eq!(scan_http_request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), HttpScan::Unreadable);
    }

    #[test]
    fn short_plausible_starts_need_more() {
        assert_eq!(scan_http_request(b""), HttpScan::NeedMore);
        assert_eq!(scan_http_request(b"G"), HttpScan::NeedMore);
        assert_eq!(scan_http_request(b"M-SEARCH"), HttpScan::NeedMore);
    }

    /// Regression (issue 18.2): a head with more than 64 headers was "no host" and judged by address.
    #[test]
    fn many_headers_are_read() {
        for count in [INLINE_HEADERS, 70, 5000] {
            let mut req = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..count {
                req.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            req.extend_from_slice(b"Host: tracking.intl.miui.com\r\n\r\n");
            assert_eq!(scan_http_request(&req), host("tracking.intl.miui.com"), "{count} headers");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = scan_http_request(&bytes);
        }

        #[test]
        fn arbitrary_heads_never_panic(method in "[A-Z]{1,8}", target in "\\PC{0,40}", host in "\\PC{0,40}") {
            let head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
            let _ = scan_http_request(head.as_bytes());
        }
    }
}
