//! TLS ClientHello / SNI extraction on a stream's first bytes, and the combined TLS-or-HTTP sniffer.
//! Besides "never panics": a scan's answer must not change once it is final (feeding more bytes after a complete
//! ClientHello gives the same answer), because the engine may look again after more data arrives.
#![no_main]

use hushwall_core::inspect::tls::{scan_client_hello, ClientHelloScan};
use hushwall_core::inspect::{sniff_stream, StreamSniff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = scan_client_hello(data);
    if let ClientHelloScan::Sni(name) = &first {
        assert!(!name.is_empty());
        assert!(!name.ends_with('.'));
        assert_eq!(name, &name.to_ascii_lowercase());
    }
    if !matches!(first, ClientHelloScan::NeedMore) {
        let mut longer = data.to_vec();
        longer.extend_from_slice(b"\x17\x03\x03\x00\x01z");
        assert_eq!(scan_client_hello(&longer), first, "a final answer changed with more bytes");
    }
    match sniff_stream(data) {
        StreamSniff::TlsSni(name) => assert_eq!(first, ClientHelloScan::Sni(name)),
        StreamSniff::NeedMore | StreamSniff::HttpHost(_) | StreamSniff::Unknown | StreamSniff::Uninspectable => {}
    }
});
