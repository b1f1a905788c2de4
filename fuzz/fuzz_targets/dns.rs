//! DNS messages from the phone (queries) and from the upstream resolver (responses), and the answers the engine
//! builds from them. Besides "never panics", checks that every query the parser accepts can be answered (blocked,
//! SERVFAIL) and that those answers parse back with the query's id, question and the promised RCODE, and that
//! removing ECH from a response leaves a shorter response that still parses the same (id, RCODE, question,
//! CNAMEs, address hints) and holds no ECH any more.
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
    if let Ok(Some(stripped)) = dns::strip_ech(data) {
        assert!(stripped.len() < data.len(), "removing ECH made the message no shorter");
        assert_eq!(dns::strip_ech(&stripped), Ok(None), "ECH left after removing it");
        let (before, after) = (dns::parse_response(data), dns::parse_response(&stripped));
        if let Ok(before) = before {
            let after = after.expect("a response that parsed still parses without ECH");
            assert_eq!((after.id, after.rcode, &after.question), (before.id, before.rcode, &before.question));
            assert_eq!(after.cnames, before.cnames);
            assert_eq!(after.addrs, before.addrs);
        }
    }
    let mut copy = data.to_vec();
    let _ = dns::set_id(&mut copy, 0x6877);
    let _ = dns::message_id(data);
});
