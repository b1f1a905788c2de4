//! DNS messages from the phone (queries) and from the upstream resolver (responses), and the answers the engine
//! builds from them. Besides "never panics", checks that every query the parser accepts can be answered (blocked,
//! SERVFAIL) and that those answers parse back with the query's id, question and the promised RCODE.
#![no_main]

use hushwall_core::dns_cache::DnsCache;
use hushwall_core::inspect::dns::{self, BlockAnswer};
use libfuzzer_sys::fuzz_target;
use std::time::Instant;

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = dns::parse_query(data) {
        for (style, rcode) in [(BlockAnswer::NxDomain, 3), (BlockAnswer::Unspecified, 0)] {
            let answer = dns::blocked_response(data, style).expect("an accepted query can be answered");
            let parsed = dns::parse_response(&answer).expect("our own answer parses");
            assert_eq!(parsed.id, query.id);
            assert_eq!(parsed.rcode, rcode);
            assert_eq!(parsed.question.as_deref(), Some(query.name.as_str()));
        }
        let servfail = dns::servfail_response(data).expect("an accepted query gets SERVFAIL");
        let parsed = dns::parse_response(&servfail).expect("our own SERVFAIL parses");
        assert_eq!((parsed.id, parsed.rcode), (query.id, 2));
    }
    if let Ok(answer) = dns::parse_response(data) {
        let _ = answer.chain_names();
        let _ = answer.question_path();
        let now = Instant::now();
        let mut cache = DnsCache::new(64);
        cache.record(&answer, now);
        for (_, ip, _) in &answer.addrs {
            let _ = cache.names_for(*ip, now).count();
        }
        cache.purge_expired(now);
    }
    let mut copy = data.to_vec();
    let _ = dns::set_id(&mut copy, 0x6877);
    let _ = dns::message_id(data);
});
