//! Learning a blocked name's addresses without leaking the client's query.
//!
//! With [`EngineConfig::learn_blocked_addresses`](super::EngineConfig::learn_blocked_addresses) on, a blocked DNS
//! query is answered at once and the engine resolves the blocked name upstream itself, so that an app connecting
//! to its addresses later is refused too (`dns_mapped_ip`). The client's own query is never forwarded: its labels
//! can carry data (`<base64 of an identifier>.tracking.intl.miui.com` reaches the blocked domain's authoritative
//! servers). Instead the engine builds a fresh query for the *rule's* name (rule `||tracking.intl.miui.com^` →
//! `tracking.intl.miui.com`; an exact rule is its own name) and sends it under the forwarder's ids. The answer's
//! addresses enter the IP→names cache under the rule's name, which the rule blocks. Rules for subdomains only
//! (`*.example.com`) name no host of their own and learn nothing.
//!
//! Learning is rate-limited: each (name, type) at most once per [`LEARN_INTERVAL`], in a table of at most
//! [`MAX_LEARNING`] entries; when the table is full of fresh entries, nothing more is learnt until some expire.

use super::{Engine, FlowKey};
use crate::verdict::Verdict;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A rule's name is learnt again at most this often (per query type).
pub(crate) const LEARN_INTERVAL: Duration = Duration::from_secs(60);
/// Most names whose last learning is remembered.
const MAX_LEARNING: usize = 1024;
/// DNS class IN.
const CLASS_IN: u16 = 1;
/// Longest DNS name in wire format (RFC 1035 §3.1).
const MAX_WIRE_NAME: usize = 255;

/// When each rule name was last learnt, bounded.
#[derive(Debug, Default)]
pub(crate) struct LearnLimiter {
    /// (name, query type) → when it may be learnt again.
    next: HashMap<(Box<str>, u16), Instant>,
}

impl LearnLimiter {
    /// Whether `name` may be learnt for `qtype` now; if so, the next learning is pushed [`LEARN_INTERVAL`] out.
    fn take(&mut self, name: &str, qtype: u16, now: Instant) -> bool {
        if let Some(next) = self.next.get_mut(&(Box::from(name), qtype)) {
            if *next > now {
                return false;
            }
            *next = now + LEARN_INTERVAL;
            return true;
        }
        if self.next.len() >= MAX_LEARNING {
            self.next.retain(|_, &mut next| next > now);
            if self.next.len() >= MAX_LEARNING {
                return false;
            }
        }
        self.next.insert((Box::from(name), qtype), now + LEARN_INTERVAL);
        true
    }
}

/// The host name a block rule names, as rendered in [`crate::verdict::RuleRef::rule`]: `||name^` and an exact
/// `name` give `name`; `*.name` (subdomains only) and anything else give `None`.
pub(crate) fn rule_host(rule: &str) -> Option<&str> {
    let name = match rule.strip_prefix("||") {
        Some(rest) => rest.strip_suffix('^')?,
        None => rule,
    };
    let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    plain.then_some(name)
}

/// A recursive query (RD) for `name` and `qtype`, class IN, id 0 (the forwarder sets its own); `None` if the
/// name does not fit the wire format.
pub(crate) fn learning_query(name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut query = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut wire_len = 1;
    for label in name.trim_end_matches('.').split('.') {
        let len = u8::try_from(label.len()).ok().filter(|&l| (1..=63).contains(&l))?;
        wire_len += 1 + label.len();
        query.push(len);
        query.extend_from_slice(label.as_bytes());
    }
    if wire_len > MAX_WIRE_NAME {
        return None;
    }
    query.push(0);
    query.extend_from_slice(&qtype.to_be_bytes());
    query.extend_from_slice(&CLASS_IN.to_be_bytes());
    Some(query)
}

impl Engine {
    /// After a blocked query of type `qtype` (A or AAAA) decided by `verdict`, resolves the blocking rule's own
    /// name upstream, at most once per [`LEARN_INTERVAL`]. `flow` is the blocked query's (client, server).
    pub(super) fn learn_blocked_name(&mut self, now: Instant, verdict: &Verdict, qtype: u16, flow: FlowKey) {
        let Some(name) = verdict.rule().and_then(|rule| rule_host(&rule.rule)) else {
            return;
        };
        if !self.learning.take(name, qtype, now) {
            return;
        }
        let Some(query) = learning_query(name, qtype) else {
            return;
        };
        self.forward_learning_query(now, query, flow);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::dns::parse_query;

    #[test]
    fn rule_hosts() {
        assert_eq!(rule_host("||tracking.intl.miui.com^"), Some("tracking.intl.miui.com"));
        assert_eq!(rule_host("sa.api.intl.miui.com"), Some("sa.api.intl.miui.com"));
        assert_eq!(rule_host("*.ad.xiaomi.com"), None);
        assert_eq!(rule_host("@@||except.example^"), None);
        assert_eq!(rule_host("203.0.113.0/24"), None);
        assert_eq!(rule_host(""), None);
    }

    #[test]
    fn learning_queries_parse_back() {
        let q = learning_query("tracking.intl.miui.com", 28).unwrap();
        let parsed = parse_query(&q).unwrap();
        assert_eq!((parsed.name.as_str(), parsed.qtype), ("tracking.intl.miui.com", 28));
        assert_eq!(learning_query(&"a".repeat(64), 1), None);
        assert_eq!(learning_query("a..b", 1), None);
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(learning_query(&long, 1), None, "256 bytes on the wire");
        let longest = format!("{}.{}", "a".repeat(61), vec!["a".repeat(63); 3].join("."));
        assert!(learning_query(&longest, 1).is_some(), "255 bytes on the wire is the longest name");
    }

    #[test]
    fn limiter_allows_each_name_once_per_interval_and_is_bounded() {
        let mut limiter = LearnLimiter::default();
        let t0 = Instant::now();
        assert!(limiter.take("a.example", 1, t0));
        assert!(!limiter.take("a.example", 1, t0 + Duration::from_secs(59)));
        assert!(limiter.take("a.example", 28, t0), "per query type");
        assert!(limiter.take("a.example", 1, t0 + LEARN_INTERVAL));
        assert!(!limiter.take("a.example", 1, t0 + 2 * LEARN_INTERVAL - Duration::from_secs(1)), "an interval again");
        assert!(limiter.take("a.example", 1, t0 + 2 * LEARN_INTERVAL));
        let mut limiter = LearnLimiter::default();
        for i in 0..MAX_LEARNING {
            assert!(limiter.take(&format!("n{i}.example"), 1, t0));
        }
        assert!(!limiter.take("one.more.example", 1, t0), "full of fresh entries");
        assert!(limiter.take("one.more.example", 1, t0 + LEARN_INTERVAL), "room once they expire");
        assert!(limiter.next.len() <= MAX_LEARNING);
    }
}
