//! The server name (SNI, RFC 6066 §3) of a TLS ClientHello at the start of a client's stream.
//!
//! Records are split off with `tls-parser`, the handshake bytes of consecutive handshake records
//! are joined (a ClientHello may span several records, RFC 8446 §5.1), and the complete message is
//! parsed with `tls-parser`. Only the SNI extension is interpreted, so an extension `tls-parser`
//! would parse strictly cannot hide the name.

use std::borrow::Cow;

use tls_parser::{
    parse_tls_extension_sni_content, parse_tls_extension_unknown, parse_tls_handshake_client_hello,
    parse_tls_raw_record, SNIType, TlsExtension, TlsExtensionType, TlsRecordType,
};

/// TLS content type of handshake records.
const CONTENT_TYPE_HANDSHAKE: u8 = 0x16;
/// Handshake message type of ClientHello.
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
/// Largest TLSPlaintext fragment (RFC 8446 §5.1).
const MAX_PLAINTEXT_LEN: usize = 1 << 14;
/// Largest ClientHello we wait for. Real ones are under 2 KiB, or a few KiB with post-quantum
/// key shares and large tickets; a longer announced length is treated as not TLS.
const MAX_CLIENT_HELLO_LEN: usize = 64 * 1024;
/// The stream bytes a ClientHello of the largest accepted length takes in full-sized records: what a
/// caller must be ready to read before it may call a hello too big. (A hello split into smaller
/// records takes more; a caller that stops short of it must refuse, not pass, the stream.)
pub const MAX_CLIENT_HELLO_STREAM_LEN: usize =
    MAX_CLIENT_HELLO_LEN + 4 + 5 * (MAX_CLIENT_HELLO_LEN + 4).div_ceil(MAX_PLAINTEXT_LEN);

/// Result of looking for a TLS ClientHello at the start of a client→server byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHelloScan {
    /// Could be a ClientHello but more bytes are needed.
    NeedMore,
    /// A complete ClientHello naming this host (lowercase, without a trailing dot).
    Sni(String),
    /// A complete ClientHello without a usable host name.
    NoSni,
    /// Not a TLS ClientHello, or a malformed one (including an SNI extension without a usable host
    /// name). [`is_client_hello_start`] tells the two apart.
    NotTls,
}

/// Whether the stream starts like a TLS ClientHello: a plausible handshake record header followed by
/// the ClientHello message type. A stream that does but scans as [`ClientHelloScan::NotTls`] is a
/// malformed (or deliberately odd) ClientHello, not another protocol.
pub fn is_client_hello_start(stream_start: &[u8]) -> bool {
    stream_start.len() > 5
        && plausible_record_start(stream_start)
        && stream_start.get(5) == Some(&HANDSHAKE_CLIENT_HELLO)
}

/// Looks for a ClientHello in everything the client has sent so far.
///
/// Answers [`NotTls`](ClientHelloScan::NotTls) as soon as the first bytes rule TLS out (first byte
/// not 0x16, a record version other than SSLv3–TLS 1.3, an empty or over-long record, another
/// handshake message first), and [`NeedMore`](ClientHelloScan::NeedMore) until the whole
/// ClientHello has arrived.
pub fn scan_client_hello(stream_start: &[u8]) -> ClientHelloScan {
    let mut rest = stream_start;
    let mut handshake: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    loop {
        if !plausible_record_start(rest) {
            return ClientHelloScan::NotTls;
        }
        // The first handshake message must be a ClientHello: say so from its type byte rather
        // than after the whole record has arrived.
        if handshake.is_empty() && rest.get(5).is_some_and(|&t| t != HANDSHAKE_CLIENT_HELLO) {
            return ClientHelloScan::NotTls;
        }
        let record = match parse_tls_raw_record(rest) {
            Ok((tail, record)) => {
                rest = tail;
                record
            }
            Err(tls_parser::Err::Incomplete(_)) => return ClientHelloScan::NeedMore,
            Err(_) => return ClientHelloScan::NotTls,
        };
        if record.hdr.record_type != TlsRecordType::Handshake {
            return ClientHelloScan::NotTls;
        }
        if handshake.is_empty() {
            handshake = Cow::Borrowed(record.data);
        } else {
            handshake.to_mut().extend_from_slice(record.data);
        }
        match client_hello_body(&handshake) {
            Body::Complete(body) => return server_name(body),
            Body::Partial if rest.is_empty() => return ClientHelloScan::NeedMore,
            Body::Partial => {}
            Body::Invalid => return ClientHelloScan::NotTls,
        }
    }
}

/// Whether `bytes` (possibly only a few) can start a handshake record: type 0x16, version
/// 3.0–3.4, length 1..=2^14. `tls-parser` reports a short header as incomplete without looking
/// at it, so these five bytes are checked here to say "not TLS" from the first bytes.
fn plausible_record_start(bytes: &[u8]) -> bool {
    let byte = |i: usize| bytes.get(i).copied();
    let length_ok = match (byte(3), byte(4)) {
        (Some(hi), Some(lo)) => (1..=MAX_PLAINTEXT_LEN).contains(&usize::from(u16::from_be_bytes([hi, lo]))),
        _ => true,
    };
    byte(0).is_none_or(|t| t == CONTENT_TYPE_HANDSHAKE)
        && byte(1).is_none_or(|major| major == 3)
        && byte(2).is_none_or(|minor| minor <= 4)
        && length_ok
}

/// How much of a ClientHello the joined handshake bytes hold.
enum Body<'a> {
    /// The whole message body (after the 4-byte handshake header).
    Complete(&'a [u8]),
    Partial,
    Invalid,
}

/// Reads the 4-byte handshake header (type, 24-bit length, RFC 8446 §4) by hand: the
/// `tls-parser` message parser cannot tell "wait for more" from "malformed".
fn client_hello_body(handshake: &[u8]) -> Body<'_> {
    match *handshake {
        [t, ..] if t != HANDSHAKE_CLIENT_HELLO => Body::Invalid,
        [_, a, b, c, ref body @ ..] => {
            let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            if len > MAX_CLIENT_HELLO_LEN {
                Body::Invalid
            } else {
                body.get(..len).map_or(Body::Partial, Body::Complete)
            }
        }
        _ => Body::Partial,
    }
}

/// The host name in a complete ClientHello body.
fn server_name(body: &[u8]) -> ClientHelloScan {
    let Ok((_, hello)) = parse_tls_handshake_client_hello(body) else {
        return ClientHelloScan::NotTls;
    };
    let mut extensions = hello.ext.unwrap_or_default();
    while !extensions.is_empty() {
        // Every extension is split off as "unknown" (type + raw data) so that only the SNI
        // extension's own content decides the outcome.
        match parse_tls_extension_unknown(extensions) {
            Ok((_, TlsExtension::Unknown(TlsExtensionType::ServerName, data))) => {
                return sni_host(data);
            }
            Ok((tail, _)) => extensions = tail,
            Err(_) => return ClientHelloScan::NotTls,
        }
    }
    ClientHelloScan::NoSni
}

/// The first host_name entry of a server_name extension. An extension present without a usable
/// host name is malformed ([`ClientHelloScan::NotTls`]): a server may still read a name from it.
fn sni_host(data: &[u8]) -> ClientHelloScan {
    match parse_tls_extension_sni_content(data) {
        Ok((_, TlsExtension::SNI(names))) => names
            .iter()
            .find(|(kind, _)| *kind == SNIType::HostName)
            .and_then(|(_, name)| super::normalise_hostname(name))
            .map_or(ClientHelloScan::NotTls, ClientHelloScan::Sni),
        _ => ClientHelloScan::NotTls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `openssl s_client -servername tracking.intl.miui.com` (OpenSSL 3.0), one record.
    const OPENSSL_SNI: &[u8] = include_bytes!("testdata/client_hello_openssl_sni.bin");
    /// `openssl s_client -noservername`.
    const OPENSSL_NO_SNI: &[u8] = include_bytes!("testdata/client_hello_openssl_no_sni.bin");
    /// `curl https://Data.Mistat.Xiaomi.COM:PORT/` (curl 7.88, OpenSSL 3.0), padded to 512 bytes.
    const CURL_SNI: &[u8] = include_bytes!("testdata/client_hello_curl_sni.bin");

    fn sni(name: &str) -> ClientHelloScan {
        ClientHelloScan::Sni(name.to_string())
    }

    /// The handshake bytes of a single-record fixture.
    fn handshake(record: &[u8]) -> &[u8] {
        &record[5..]
    }

    /// Frames `handshake` into handshake records of the given sizes (the last takes the rest).
    fn reframe(handshake: &[u8], sizes: &[usize], version: [u8; 2]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = handshake;
        for (i, &size) in sizes.iter().enumerate() {
            let size = if i + 1 == sizes.len() { rest.len() } else { size.min(rest.len()) };
            let (chunk, tail) = rest.split_at(size);
            out.extend_from_slice(&[0x16, version[0], version[1]]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
            rest = tail;
        }
        out
    }

    fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = haystack.windows(from.len()).position(|w| w == from).unwrap();
        let mut out = haystack.to_vec();
        out[at..at + to.len()].copy_from_slice(to);
        out
    }

    #[test]
    fn real_client_hellos() {
        assert_eq!(scan_client_hello(OPENSSL_SNI), sni("tracking.intl.miui.com"));
        assert_eq!(scan_client_hello(CURL_SNI), sni("data.mistat.xiaomi.com"));
        assert_eq!(scan_client_hello(OPENSSL_NO_SNI), ClientHelloScan::NoSni);
    }

    /// Another handshake message (a ServerHello, type 2) with a ClientHello's body is not read as one.
    #[test]
    fn only_a_client_hello_message_is_read() {
        let mut other = OPENSSL_SNI.to_vec();
        other[5] = 2;
        assert_eq!(scan_client_hello(&other), ClientHelloScan::NotTls);
    }

    #[test]
    fn bytes_after_the_hello_do_not_matter() {
        let mut stream = OPENSSL_SNI.to_vec();
        stream.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01, 0x17, 0x03]);
        assert_eq!(scan_client_hello(&stream), sni("tracking.intl.miui.com"));
    }

    #[test]
    fn every_prefix_needs_more() {
        for fixture in [OPENSSL_SNI, CURL_SNI, OPENSSL_NO_SNI] {
            for len in 0..fixture.len() {
                assert_eq!(scan_client_hello(&fixture[..len]), ClientHelloScan::NeedMore, "{len}");
            }
        }
    }

    #[test]
    fn split_over_two_records_at_every_point() {
        let hs = handshake(OPENSSL_SNI);
        for split in 1..hs.len() {
            let stream = reframe(hs, &[split, 0], [3, 1]);
            assert_eq!(scan_client_hello(&stream), sni("tracking.intl.miui.com"), "split {split}");
        }
    }

    #[test]
    fn split_over_many_records_and_segments() {
        let hs = handshake(CURL_SNI);
        // One handshake byte per record: the header is split too.
        let tiny = reframe(hs, &vec![1; hs.len()], [3, 3]);
        assert_eq!(scan_client_hello(&tiny), sni("data.mistat.xiaomi.com"));
        let three = reframe(hs, &[3, 200, 0], [3, 1]);
        for len in 0..three.len() {
            assert_eq!(scan_client_hello(&three[..len]), ClientHelloScan::NeedMore, "{len}");
        }
        assert_eq!(scan_client_hello(&three), sni("data.mistat.xiaomi.com"));
    }

    #[test]
    fn record_versions() {
        let hs = handshake(OPENSSL_SNI);
        for minor in 0..=4 {
            let stream = reframe(hs, &[0], [3, minor]);
            assert_eq!(scan_client_hello(&stream), sni("tracking.intl.miui.com"), "3.{minor}");
        }
        assert_eq!(scan_client_hello(&reframe(hs, &[0], [3, 5])), ClientHelloScan::NotTls);
        assert_eq!(scan_client_hello(&reframe(hs, &[0], [2, 0])), ClientHelloScan::NotTls);
        // A later record with a bad version.
        let mut bad_second = reframe(hs, &[10, 0], [3, 1]);
        bad_second[10 + 5 + 2] = 9;
        assert_eq!(scan_client_hello(&bad_second), ClientHelloScan::NotTls);
    }

    #[test]
    fn sni_is_lowercased_and_trailing_dot_dropped() {
        let upper = replace(OPENSSL_SNI, b"tracking.intl.miui.com", b"TRACKING.Intl.MIUI.co.");
        assert_eq!(scan_client_hello(&upper), sni("tracking.intl.miui.co"));
    }

    /// Regression (issue 18.2): an SNI extension without a usable name was "no SNI", and the flow was judged
    /// by address. It is malformed now; the caller refuses a malformed hello.
    #[test]
    fn unusable_sni_is_malformed() {
        let space = replace(OPENSSL_SNI, b"tracking.intl", b"tracking intl");
        assert_eq!(scan_client_hello(&space), ClientHelloScan::NotTls);
        assert!(is_client_hello_start(&space));
        // name_type 1 is not host_name: the byte before the 2-byte name length 0x0016.
        let at = OPENSSL_SNI.windows(24).position(|w| w == b"\x00\x16tracking.intl.miui.com");
        let mut other_type = OPENSSL_SNI.to_vec();
        other_type[at.unwrap() - 1] = 1;
        assert_eq!(scan_client_hello(&other_type), ClientHelloScan::NotTls);
    }

    #[test]
    fn client_hello_starts() {
        assert!(is_client_hello_start(&OPENSSL_SNI[..6]));
        assert!(!is_client_hello_start(&OPENSSL_SNI[..5]), "the message type is not known yet");
        assert!(!is_client_hello_start(b"GET / HTTP/1.1\r\n"));
        assert!(!is_client_hello_start(&[0x16, 3, 1, 0, 50, 2]), "a ServerHello");
        assert!(!is_client_hello_start(&[0x16, 3, 1, 0x40, 0x01, 1]), "an over-long record");
    }

    /// A hello of the largest accepted length, in full-sized records, fits the stream length callers are
    /// told to read, and is waited for to its last byte.
    #[test]
    fn the_largest_hello_fits_the_stream_limit() {
        let len = MAX_CLIENT_HELLO_LEN as u32;
        let mut big = vec![HANDSHAKE_CLIENT_HELLO];
        big.extend_from_slice(&len.to_be_bytes()[1..]);
        big.resize(4 + MAX_CLIENT_HELLO_LEN, 0);
        let sizes = vec![MAX_PLAINTEXT_LEN; big.len().div_ceil(MAX_PLAINTEXT_LEN)];
        let stream = reframe(&big, &sizes, [3, 1]);
        assert_eq!(stream.len(), MAX_CLIENT_HELLO_STREAM_LEN);
        assert_eq!(scan_client_hello(&stream[..stream.len() - 1]), ClientHelloScan::NeedMore);
    }

    #[test]
    fn not_tls_from_the_first_bytes() {
        assert_eq!(scan_client_hello(b"GET / HTTP/1.1\r\n"), ClientHelloScan::NotTls);
        assert_eq!(scan_client_hello(b"G"), ClientHelloScan::NotTls);
        assert_eq!(scan_client_hello(&[0x16, 0x02]), ClientHelloScan::NotTls);
        assert_eq!(scan_client_hello(&[0x16, 0x03, 0x07]), ClientHelloScan::NotTls);
        // Empty record, over-long record.
        assert_eq!(scan_client_hello(&[0x16, 3, 1, 0, 0]), ClientHelloScan::NotTls);
        assert_eq!(scan_client_hello(&[0x16, 3, 1, 0x40, 0x01]), ClientHelloScan::NotTls);
        // A ServerHello (type 2) is known from its type byte.
        assert_eq!(scan_client_hello(&[0x16, 3, 1, 0, 50, 2]), ClientHelloScan::NotTls);
        // SSLv2-compatible hello.
        assert_eq!(scan_client_hello(&[0x80, 0x2e, 0x01, 0x03, 0x01]), ClientHelloScan::NotTls);
    }

    #[test]
    fn short_plausible_starts_need_more() {
        for start in [&[][..], &[0x16], &[0x16, 3], &[0x16, 3, 1], &[0x16, 3, 1, 1], &[0x16, 3, 1, 1, 0x43]] {
            assert_eq!(scan_client_hello(start), ClientHelloScan::NeedMore, "{start:?}");
        }
    }

    #[test]
    fn other_record_types_in_the_middle_are_not_tls() {
        let hs = handshake(OPENSSL_SNI);
        let mut stream = reframe(&hs[..50], &[0], [3, 1]);
        stream.extend_from_slice(&[0x15, 3, 1, 0, 2, 2, 40]); // an alert
        assert_eq!(scan_client_hello(&stream), ClientHelloScan::NotTls);
    }

    #[test]
    fn absurd_handshake_length_is_not_tls() {
        let stream = [0x16, 3, 1, 0, 8, 1, 0x01, 0x00, 0x01, 3, 3, 0, 0];
        assert_eq!(scan_client_hello(&stream), ClientHelloScan::NotTls);
    }

    #[test]
    fn malformed_hello_bodies_are_not_tls() {
        // Handshake length 4: too short for a version, random and the rest.
        let short = [0x16, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0];
        assert_eq!(scan_client_hello(&short), ClientHelloScan::NotTls);
        // An extension announcing more bytes than the extension block holds.
        let mut broken = OPENSSL_SNI.to_vec();
        let sni_ext = broken.windows(4).position(|w| w == [0x00, 0x00, 0x00, 0x1b]).unwrap();
        broken[sni_ext + 2] = 0x7f;
        assert_eq!(scan_client_hello(&broken), ClientHelloScan::NotTls);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = scan_client_hello(&bytes);
        }

        #[test]
        fn arbitrary_records_never_panic(
            version in 0u8..6,
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut stream = vec![0x16, 3, version];
            stream.extend_from_slice(&(body.len() as u16).to_be_bytes());
            stream.push(1);
            stream.extend_from_slice(&body);
            let _ = scan_client_hello(&stream);
        }

        #[test]
        fn mutated_hellos_never_panic(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in any::<usize>(),
        ) {
            let mut stream = CURL_SNI.to_vec();
            for (at, byte) in edits {
                let at = at % stream.len();
                stream[at] = byte;
            }
            stream.truncate(cut % (stream.len() + 1));
            let _ = scan_client_hello(&stream);
        }

        #[test]
        fn any_two_record_split_of_a_partial_stream_needs_more_or_finds_the_name(
            split in 1usize..300,
            cut in 0usize..400,
        ) {
            let stream = reframe(handshake(OPENSSL_SNI), &[split, 0], [3, 1]);
            let cut = cut.min(stream.len());
            let expected = if cut == stream.len() { sni("tracking.intl.miui.com") } else { ClientHelloScan::NeedMore };
            prop_assert_eq!(scan_client_hello(&stream[..cut]), expected);
        }
    }
}
