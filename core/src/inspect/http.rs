//! The host an HTTP/1.x request is for (RFC 9112 §3.2), from the start of a client's stream.
//!
//! The request head is parsed with `httparse`. The host comes from the request target when it
//! carries one (CONNECT's authority-form, an `http://` or `https://` absolute-form target, which
//! RFC 9112 §3.2.2 says overrides Host), otherwise from the Host header.

use std::net::Ipv6Addr;

use httparse::{Header, Request, Status, EMPTY_HEADER};

/// Header slots given to `httparse`; a request with more headers is reported as
/// [`HttpScan::NoHost`].
const MAX_HEADERS: usize = 64;
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
    /// A complete request head without a usable host (HTTP/1.0 without Host, conflicting Host
    /// headers, an invalid host, more than 64 headers).
    NoHost,
    /// Not an HTTP/1.x request.
    NotHttp,
}

/// Looks for an HTTP/1.x request head in everything the client has sent so far.
///
/// Answers [`NotHttp`](HttpScan::NotHttp) from the first bytes when they cannot start a method
/// (an uppercase letter, then up to 24 token characters before a space).
pub fn scan_http_request(stream_start: &[u8]) -> HttpScan {
    if !plausible_method(stream_start) {
        return HttpScan::NotHttp;
    }
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let mut request = Request::new(&mut headers);
    match request.parse(stream_start) {
        Ok(Status::Partial) => HttpScan::NeedMore,
        Ok(Status::Complete(_)) => request_host(&request).map_or(HttpScan::NoHost, HttpScan::Host),
        Err(httparse::Error::TooManyHeaders) => HttpScan::NoHost,
        Err(_) => HttpScan::NotHttp,
    }
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

/// The host of `host[:port]` or `[v6]:port`.
fn authority_host(authority: &[u8]) -> Option<String> {
    let authority = authority.trim_ascii();
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
        assert_eq!(get_with_host("[zz::1]"), HttpScan::NoHost);
        assert_eq!(get_with_host("[::1"), HttpScan::NoHost);
        assert_eq!(get_with_host("[::1]x"), HttpScan::NoHost);
        assert_eq!(get_with_host("2001:db8::1"), HttpScan::NoHost);
    }

    #[test]
    fn invalid_hosts() {
        for bad in ["", "exa mple.com", "a/b", "a.com:x", "a.com:123456", "user@a.com", "é.com"] {
            assert_eq!(get_with_host(bad), HttpScan::NoHost, "{bad:?}");
        }
    }

    #[test]
    fn missing_or_conflicting_host() {
        assert_eq!(scan_http_request(b"GET / HTTP/1.0\r\n\r\n"), HttpScan::NoHost);
        let conflict = b"GET / HTTP/1.1\r\nHost: allowed.example\r\nhost: tracking.miui.com\r\n\r\n";
        assert_eq!(scan_http_request(conflict), HttpScan::NoHost);
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
        assert_eq!(scan_http_request(b"GET /\x01 HTTP/1.1\r\n"), HttpScan::NotHttp);
        assert_eq!(scan_http_request(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), HttpScan::NotHttp);
    }

    #[test]
    fn short_plausible_starts_need_more() {
        assert_eq!(scan_http_request(b""), HttpScan::NeedMore);
        assert_eq!(scan_http_request(b"G"), HttpScan::NeedMore);
        assert_eq!(scan_http_request(b"M-SEARCH"), HttpScan::NeedMore);
    }

    #[test]
    fn too_many_headers_is_no_host() {
        let mut req = b"GET / HTTP/1.1\r\nHost: a.example\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            req.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        assert_eq!(scan_http_request(&req), HttpScan::NoHost);
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
