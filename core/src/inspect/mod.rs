//! Inspection of what flows carry: DNS messages, TLS ClientHello SNI (over TCP and in QUIC Initials), HTTP Host,
//! and (for blocked plain-HTTP requests, when enabled) a redacted summary of the request.
//!
//! Everything here is a pure function of the bytes given: no state, no clock, no I/O, and no
//! panic on any input. Host names come out lowercase without a trailing dot.

pub mod dns;
pub mod http;
pub mod http_stream;
pub mod peek;
pub mod quic;
pub mod tls;

/// Longest host name in text form (RFC 1035 §2.3.4: 255 octets on the wire).
const MAX_HOSTNAME_LEN: usize = 253;

/// What the first bytes of a client's TCP stream say about where it is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSniff {
    /// Not decided yet: wait for more bytes (the caller bounds how many and how long).
    NeedMore,
    /// A TLS ClientHello with this server name.
    TlsSni(String),
    /// An HTTP/1.x request for this host.
    HttpHost(String),
    /// Neither names a host: another protocol, garbage, a well-formed ClientHello without SNI (a client
    /// connecting to an IP literal), an HTTP/1.0 request without Host. The destination address decides.
    Unknown,
    /// Recognisably TLS or HTTP, but the host cannot be read: a malformed ClientHello or SNI, a malformed
    /// or conflicting Host, HTTP/1.1 without Host, the HTTP/2 preface. Refused: a server may read a name
    /// from it that the inspector could not.
    Uninspectable,
}

/// Classifies the start of a client→server stream: tries TLS, then HTTP.
pub fn sniff_stream(stream_start: &[u8]) -> StreamSniff {
    match tls::scan_client_hello(stream_start) {
        tls::ClientHelloScan::NeedMore => StreamSniff::NeedMore,
        // An address where a name should be names nothing: the flow is decided by its address, as without one
        // (judged as a name, `Host: <a blocked name's address>` matched no rule and was let through).
        tls::ClientHelloScan::Sni(name) if is_ip_literal(&name) => StreamSniff::Unknown,
        tls::ClientHelloScan::Sni(name) => StreamSniff::TlsSni(name),
        tls::ClientHelloScan::NoSni => StreamSniff::Unknown,
        tls::ClientHelloScan::NotTls if tls::is_client_hello_start(stream_start) => StreamSniff::Uninspectable,
        tls::ClientHelloScan::NotTls => match http::scan_http_request(stream_start) {
            http::HttpScan::NeedMore => StreamSniff::NeedMore,
            http::HttpScan::Host(host) if is_ip_literal(&host) => StreamSniff::Unknown,
            http::HttpScan::Host(host) => StreamSniff::HttpHost(host),
            http::HttpScan::Unreadable => StreamSniff::Uninspectable,
            http::HttpScan::NoHost | http::HttpScan::NotHttp => StreamSniff::Unknown,
        },
    }
}

/// True if a host as read from SNI or HTTP is an IP address literal, not a name.
fn is_ip_literal(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
}

/// A host name from SNI or an HTTP authority, lowercased, without leading or trailing dots; `None` unless it is
/// 1 to 253 letters, digits, `-`, `_` and `.` with no empty label inside. (Internationalised names travel as
/// punycode, so this covers every real host name.) Extra dots at either end are dropped rather than refused so
/// that `tracking.example.com..` is judged as `tracking.example.com`: refusing it as "no name" would let the
/// flow be decided by address alone, i.e. let a blocked name through.
fn normalise_hostname(raw: &[u8]) -> Option<String> {
    let start = raw.iter().position(|&b| b != b'.')?;
    let end = raw.iter().rposition(|&b| b != b'.')?;
    let name = raw.get(start..=end)?;
    let valid = name.len() <= MAX_HOSTNAME_LEN
        && name.split(|&b| b == b'.').all(|label| !label.is_empty())
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    valid.then(|| name.iter().map(|&b| char::from(b.to_ascii_lowercase())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sniffs_tls_http_and_the_rest() {
        let hello = include_bytes!("testdata/client_hello_openssl_sni.bin");
        assert_eq!(sniff_stream(hello), StreamSniff::TlsSni("tracking.intl.miui.com".into()));
        let no_sni = include_bytes!("testdata/client_hello_openssl_no_sni.bin");
        assert_eq!(sniff_stream(no_sni), StreamSniff::Unknown);
        let get = b"GET / HTTP/1.1\r\nHost: Data.Mistat.Xiaomi.com:80\r\n\r\n";
        assert_eq!(sniff_stream(get), StreamSniff::HttpHost("data.mistat.xiaomi.com".into()));
        assert_eq!(sniff_stream(b"GET / HTTP/1.0\r\n\r\n"), StreamSniff::Unknown);
        assert_eq!(sniff_stream(b"SSH-2.0-OpenSSH_9.2\r\n"), StreamSniff::Unknown);
        assert_eq!(sniff_stream(&[0x00, 0x01, 0x02]), StreamSniff::Unknown);
    }

    /// Issue 18.2: TLS or HTTP whose host cannot be read is refused, not judged by address.
    #[test]
    fn recognisable_but_unreadable_heads_are_uninspectable() {
        let hello = include_bytes!("testdata/client_hello_openssl_sni.bin");
        let mut bad_sni = hello.to_vec();
        let at = bad_sni.windows(8).position(|w| w == b"tracking").expect("sni");
        bad_sni[at + 8] = b' ';
        assert_eq!(sniff_stream(&bad_sni), StreamSniff::Uninspectable);
        let mut huge = hello.to_vec();
        huge[6] = 0x02; // a handshake length of 128 KiB
        assert_eq!(sniff_stream(&huge), StreamSniff::Uninspectable);
        assert_eq!(sniff_stream(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), StreamSniff::Uninspectable);
        assert_eq!(sniff_stream(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), StreamSniff::Uninspectable);
    }

    /// Regression (fuzz targets `tls` and `http`, fuzz/regressions/{tls,http}/): a Host or SNI with extra dots at
    /// either end came out still ending in a dot and matched no block rule. Such names are judged without the
    /// dots (so a blocked name stays blocked); an empty label inside is no host name.
    #[test]
    fn extra_dots_at_the_ends_are_dropped_and_inner_empty_labels_are_not_names() {
        for padded in ["tracking.intl.miui.com..", ".tracking.intl.miui.com", "..tracking.intl.miui.com..."] {
            let get = format!("GET / HTTP/1.1\r\nHost: {padded}\r\n\r\n");
            assert_eq!(
                sniff_stream(get.as_bytes()),
                StreamSniff::HttpHost("tracking.intl.miui.com".into()),
                "{padded}"
            );
        }
        for bad in ["tracking..miui.com", "..", "."] {
            let get = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_eq!(sniff_stream(get.as_bytes()), StreamSniff::Uninspectable, "{bad}");
        }
        assert_eq!(normalise_hostname(b"Tracking.Intl.Miui.Com."), Some("tracking.intl.miui.com".into()));
    }

    #[test]
    fn partial_starts_need_more() {
        let hello = include_bytes!("testdata/client_hello_openssl_sni.bin");
        assert_eq!(sniff_stream(b""), StreamSniff::NeedMore);
        assert_eq!(sniff_stream(&hello[..100]), StreamSniff::NeedMore);
        assert_eq!(sniff_stream(b"POST /upload HTTP/1.1\r\nHo"), StreamSniff::NeedMore);
    }

    #[test]
    fn hostname_normalisation() {
        assert_eq!(normalise_hostname(b"A-b_C.example."), Some("a-b_c.example".into()));
        assert_eq!(normalise_hostname(b"xn--bcher-kva.example"), Some("xn--bcher-kva.example".into()));
        for bad in [&b""[..], b".", b"a b", b"a\0", b"a/b", b"a:1", b"\xc3\xa9.example"] {
            assert_eq!(normalise_hostname(bad), None, "{bad:?}");
        }
        // "a.." used to give "a.", which matched no rule for "a" (the policy ignores one trailing dot only): a way
        // around SNI/Host blocking. Dots at the ends are dropped; an empty label inside makes it no name.
        assert_eq!(normalise_hostname(b"a.."), Some("a".into()));
        assert_eq!(normalise_hostname(b"a..b"), None);
        assert!(normalise_hostname(&[b'a'; 253]).is_some());
        assert!(normalise_hostname(&[b'a'; 254]).is_none());
    }

    proptest! {
        #[test]
        fn sniffing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = sniff_stream(&bytes);
        }
    }
}
