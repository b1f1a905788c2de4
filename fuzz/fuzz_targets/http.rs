//! HTTP/1.x request Host extraction on a stream's first bytes.
#![no_main]

use hushwall_core::inspect::http::{scan_http_request, HttpScan};
use hushwall_core::inspect::{sniff_stream, StreamSniff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let scan = scan_http_request(data);
    if let HttpScan::Host(host) = &scan {
        assert!(!host.is_empty());
        assert!(!host.ends_with('.'));
        assert_eq!(host, &host.to_ascii_lowercase());
    }
    match sniff_stream(data) {
        StreamSniff::HttpHost(host) => assert_eq!(scan, HttpScan::Host(host)),
        StreamSniff::NeedMore | StreamSniff::TlsSni(_) | StreamSniff::Unknown | StreamSniff::Uninspectable => {}
    }
});
