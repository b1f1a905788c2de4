//! Inspection of what flows carry: DNS messages, TLS ClientHello SNI and HTTP Host.
//!
//! Everything here is a pure function of the bytes given: no state, no clock, no I/O, and no
//! panic on any input. Host names come out lowercase without a trailing dot.

pub mod dns;
pub mod http;
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
    /// Neither names a host: another protocol, garbage, TLS without SNI, HTTP without Host.
    Unknown,
}

/// Classifies the start of a client→server stream: tries TLS, then HTTP.
pub fn sniff_stream(stream_start: &[u8]) -> StreamSniff {
    match tls::scan_client_hello(stream_start) {
        tls::ClientHelloScan::NeedMore => StreamSniff::NeedMore,
        tls::ClientHelloScan::Sni(name) => StreamSniff::TlsSni(name),
        tls::ClientHelloScan::NoSni => StreamSniff::Unknown,
        tls::ClientHelloScan::NotTls => match http::scan_http_request(stream_start) {
            http::HttpScan::NeedMore => StreamSniff::NeedMore,
            http::HttpScan::Host(host) => StreamSniff::HttpHost(host),
            http::HttpScan::NoHost | http::HttpScan::NotHttp => StreamSniff::Unknown,
        },
    }
}

/// A host name from SNI or an HTTP authority, lowercased without one trailing dot; `None` unless
/// it is 1 to 253 letters, digits, `-`, `_` and `.` without empty labels. (Internationalised names travel as
/// punycode, so this covers every real host name.)
fn normalise_hostname(raw: &[u8]) -> Option<String> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    // No empty labels: `tracking.example.com..` would otherwise come out with a trailing dot and match no rule.
    let valid = !name.is_empty()
        && name.len() <= MAX_HOSTNAME_LEN
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

    /// Regression (fuzz targets `tls` and `http`, fuzz/regressions/{tls,http}/): a Host or SNI with an empty label
    /// (`name..`, `.name`, `a..b`) came out still ending in a dot, and such a name matched no block rule.
    #[test]
    fn hosts_with_empty_labels_are_not_names() {
        for bad in ["tracking.intl.miui.com..", ".tracking.intl.miui.com", "tracking..miui.com", "..", "."] {
            let get = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_eq!(sniff_stream(get.as_bytes()), StreamSniff::Unknown, "{bad}");
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
        // Only one trailing dot is stripped, and empty labels make it no name: "a.." used to give "a.", which
        // matched no rule for "a" (the policy ignores one trailing dot only), a way around SNI/Host blocking.
        assert_eq!(normalise_hostname(b"a.."), None);
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
