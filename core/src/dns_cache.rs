//! "IP → names" learned from DNS answers, with TTLs, so a flow to an address can be judged by the
//! names that led the app there (telemetry often hides behind a CNAME to a neutral CDN name).
//!
//! Sans-IO: the current [`Instant`] is always a parameter; nothing here reads a clock. Memory is
//! bounded: at most `capacity` addresses with at most [`MAX_NAMES_PER_IP`] names each.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::inspect::dns::DnsAnswer;

/// Shortest time a mapping is kept whatever its TTL: apps connect right after resolving, even
/// when the TTL is 0, and resolvers and apps cache answers a little longer than told.
pub const MIN_TTL: Duration = Duration::from_secs(30);
/// Longest time a mapping is kept: CDN addresses get reassigned, and a stale name on a reused
/// address would misattribute later flows.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Most names kept per address; the most recently recorded win.
pub const MAX_NAMES_PER_IP: usize = 8;

/// "IP → names" learned from DNS answers, each name with its own expiry.
#[derive(Debug, Clone)]
pub struct DnsCache {
    capacity: usize,
    /// Per address, names oldest-recorded first.
    entries: HashMap<IpAddr, Vec<Learned>>,
}

/// One name learned for an address. Names are shared between the addresses of one answer.
#[derive(Debug, Clone)]
struct Learned {
    name: Arc<str>,
    expires: Instant,
}

impl DnsCache {
    /// A cache tracking at most `capacity` addresses (0 records nothing). When full, expired
    /// entries are dropped first, then the soonest-expiring eighth of the entries.
    pub fn new(capacity: usize) -> Self {
        DnsCache { capacity, entries: HashMap::new() }
    }

    /// Learns from a response: each A/AAAA address maps to every name of the CNAME path that led
    /// from the question to the address's owner (question, aliases, owner), expiring at
    /// `now + ttl` with the TTL clamped to [`MIN_TTL`]..=[`MAX_TTL`]. Addresses whose owner is not
    /// on the question's path, and unspecified addresses (`0.0.0.0`, `::`, as blockers answer),
    /// are ignored. Recording a name again keeps the later expiry.
    pub fn record(&mut self, answer: &DnsAnswer, now: Instant) {
        let path: Vec<Arc<str>> = answer.question_path().into_iter().map(Arc::from).collect();
        for (owner, ip, ttl) in &answer.addrs {
            let Some(depth) = path.iter().position(|name| **name == **owner) else {
                continue;
            };
            let ttl = Duration::from_secs(u64::from(*ttl)).clamp(MIN_TTL, MAX_TTL);
            let Some(expires) = now.checked_add(ttl) else {
                continue;
            };
            // Owner first and question last, so the question is the newest name and the last
            // to be pushed out by a long chain.
            let names = path.iter().take(depth + 1).rev();
            self.learn(ip.to_canonical(), names, expires, now);
        }
    }

    /// The unexpired names of `ip` (an IPv4-mapped IPv6 address is looked up as IPv4), most
    /// recently recorded first; within one answer, the question comes first.
    pub fn names_for(&self, ip: IpAddr, now: Instant) -> impl Iterator<Item = &str> + '_ {
        self.entries.get(&ip.to_canonical()).into_iter().flat_map(move |names| {
            names.iter().rev().filter(move |learned| learned.expires > now).map(|learned| &*learned.name)
        })
    }

    /// Number of addresses tracked, counting those whose names expired but were not purged yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops expired names, and addresses left without names.
    pub fn purge_expired(&mut self, now: Instant) {
        self.entries.retain(|_, names| {
            names.retain(|learned| learned.expires > now);
            !names.is_empty()
        });
    }

    fn learn<'a>(&mut self, ip: IpAddr, names: impl Iterator<Item = &'a Arc<str>>, expires: Instant, now: Instant) {
        if ip.is_unspecified() {
            return;
        }
        if !self.entries.contains_key(&ip) {
            self.make_room(now);
            if self.entries.len() >= self.capacity {
                return;
            }
        }
        let learned = self.entries.entry(ip).or_default();
        for name in names {
            let mut entry = Learned { name: Arc::clone(name), expires };
            if let Some(i) = learned.iter().position(|l| l.name == entry.name) {
                let old = learned.remove(i);
                entry.expires = entry.expires.max(old.expires);
            }
            learned.push(entry);
        }
        let excess = learned.len().saturating_sub(MAX_NAMES_PER_IP);
        learned.drain(..excess);
    }

    /// Makes room for one more address when full: purges expired names, then evicts the
    /// soonest-expiring eighth of the addresses (at least one) at once, so a full cache pays
    /// this O(n log n) pass once per `capacity / 8` new addresses rather than on each.
    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.capacity {
            return;
        }
        self.purge_expired(now);
        if self.entries.len() < self.capacity {
            return;
        }
        let mut by_expiry: Vec<(Option<Instant>, IpAddr)> =
            self.entries.iter().map(|(ip, names)| (names.iter().map(|l| l.expires).max(), *ip)).collect();
        by_expiry.sort_unstable();
        let evict = (self.capacity / 8).max(1);
        for (_, ip) in by_expiry.iter().take(evict) {
            self.entries.remove(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// An answer for `question` through the CNAME `chain` (each step TTL 300) to `addrs`,
    /// owned by the last name of the chain.
    fn answer(question: &str, chain: &[&str], addrs: &[(&str, u32)]) -> DnsAnswer {
        let mut names = vec![question];
        names.extend_from_slice(chain);
        let cnames = names.windows(2).map(|w| (w[0].to_string(), w[1].to_string(), 300)).collect();
        let owner = names.last().unwrap().to_string();
        DnsAnswer {
            id: 1,
            rcode: 0,
            question: Some(question.to_string()),
            cnames,
            addrs: addrs.iter().map(|(a, ttl)| (owner.clone(), ip(a), *ttl)).collect(),
        }
    }

    fn names(cache: &DnsCache, addr: &str, now: Instant) -> Vec<String> {
        cache.names_for(ip(addr), now).map(str::to_string).collect()
    }

    #[test]
    fn cname_chain_maps_address_to_every_name() {
        let now = Instant::now();
        let mut cache = DnsCache::new(16);
        cache.record(&answer("a.example", &["b.example"], &[("198.18.1.2", 60), ("2001:db8::1", 60)]), now);
        assert_eq!(names(&cache, "198.18.1.2", now), ["a.example", "b.example"]);
        assert_eq!(names(&cache, "2001:db8::1", now), ["a.example", "b.example"]);
        assert!(names(&cache, "198.18.1.3", now).is_empty());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn works_on_a_parsed_response() {
        // a.example CNAME b.example; b.example A 198.18.1.2 (pointer-compressed names).
        let msg: &[u8] = &[
            0, 1, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0, 1, b'a', 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 1, 0,
            1, 0xc0, 12, 0, 5, 0, 1, 0, 0, 1, 0x2c, 0, 4, 1, b'b', 0xc0, 14, 0xc0, 39, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4,
            198, 18, 1, 2,
        ];
        let parsed = crate::inspect::dns::parse_response(msg).unwrap();
        let now = Instant::now();
        let mut cache = DnsCache::new(4);
        cache.record(&parsed, now);
        assert_eq!(names(&cache, "198.18.1.2", now), ["a.example", "b.example"]);
    }

    #[test]
    fn expiry_follows_ttl_within_bounds() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(16);
        cache.record(&answer("ttl300.example", &[], &[("10.0.0.1", 300)]), t0);
        cache.record(&answer("ttl0.example", &[], &[("10.0.0.2", 0)]), t0);
        cache.record(&answer("ttlday.example", &[], &[("10.0.0.3", 86_400)]), t0);
        assert_eq!(names(&cache, "10.0.0.1", t0 + secs(299)), ["ttl300.example"]);
        assert!(names(&cache, "10.0.0.1", t0 + secs(300)).is_empty());
        assert_eq!(names(&cache, "10.0.0.2", t0 + secs(29)), ["ttl0.example"]);
        assert!(names(&cache, "10.0.0.2", t0 + MIN_TTL).is_empty());
        assert_eq!(names(&cache, "10.0.0.3", t0 + secs(3599)), ["ttlday.example"]);
        assert!(names(&cache, "10.0.0.3", t0 + MAX_TTL).is_empty());
    }

    #[test]
    fn recording_again_extends_and_does_not_duplicate() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(16);
        cache.record(&answer("a.example", &[], &[("10.0.0.1", 600)]), t0);
        // A later, shorter TTL does not shorten the first one.
        cache.record(&answer("a.example", &[], &[("10.0.0.1", 30)]), t0 + secs(10));
        assert_eq!(names(&cache, "10.0.0.1", t0 + secs(599)), ["a.example"]);
        cache.record(&answer("a.example", &[], &[("10.0.0.1", 600)]), t0 + secs(500));
        assert_eq!(names(&cache, "10.0.0.1", t0 + secs(1099)), ["a.example"]);
        assert!(names(&cache, "10.0.0.1", t0 + secs(1100)).is_empty());
    }

    #[test]
    fn purge_drops_expired_names_and_empty_addresses() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(16);
        cache.record(&answer("short.example", &[], &[("10.0.0.1", 30)]), t0);
        cache.record(&answer("long.example", &[], &[("10.0.0.1", 600), ("10.0.0.2", 600)]), t0);
        cache.purge_expired(t0 + secs(60));
        assert_eq!(cache.len(), 2);
        assert_eq!(names(&cache, "10.0.0.1", t0), ["long.example"]);
        cache.purge_expired(t0 + secs(600));
        assert!(cache.is_empty());
    }

    #[test]
    fn capacity_bounds_addresses_and_evicts_soonest_expiring() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(16);
        cache.record(&answer("keep.example", &[], &[("10.1.0.1", 3600)]), t0);
        for i in 0..100u8 {
            let addr = format!("10.0.0.{i}");
            cache.record(&answer("many.example", &[], &[(&addr, 60)]), t0);
            assert!(cache.len() <= 16);
        }
        assert_eq!(names(&cache, "10.1.0.1", t0), ["keep.example"]);
        assert_eq!(names(&cache, "10.0.0.99", t0), ["many.example"]);
        assert!(names(&cache, "10.0.0.0", t0).is_empty());
    }

    #[test]
    fn full_cache_purges_expired_before_evicting_live() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(2);
        cache.record(&answer("old.example", &[], &[("10.0.0.1", 30)]), t0);
        cache.record(&answer("live.example", &[], &[("10.0.0.2", 3600)]), t0);
        let later = t0 + secs(100);
        cache.record(&answer("new.example", &[], &[("10.0.0.3", 3600)]), later);
        assert_eq!(cache.len(), 2);
        assert_eq!(names(&cache, "10.0.0.2", later), ["live.example"]);
        assert_eq!(names(&cache, "10.0.0.3", later), ["new.example"]);
    }

    #[test]
    fn names_per_address_are_bounded_newest_kept() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(4);
        for i in 0..20 {
            let q = format!("n{i}.example");
            cache.record(&answer(&q, &[], &[("10.0.0.1", 300)]), t0);
        }
        let expected: Vec<String> = (12..20).rev().map(|i| format!("n{i}.example")).collect();
        assert_eq!(names(&cache, "10.0.0.1", t0), expected);
    }

    #[test]
    fn long_chain_keeps_the_question() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(4);
        let chain: Vec<String> = (1..=10).map(|i| format!("c{i}.example")).collect();
        let chain: Vec<&str> = chain.iter().map(String::as_str).collect();
        cache.record(&answer("tracking.miui.com", &chain, &[("10.0.0.1", 300)]), t0);
        let got = names(&cache, "10.0.0.1", t0);
        assert_eq!(got.len(), MAX_NAMES_PER_IP);
        assert_eq!(got[0], "tracking.miui.com");
        assert_eq!(got[7], "c7.example");
    }

    #[test]
    fn only_addresses_on_the_question_path_are_recorded() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(16);
        let mut stray = answer("q.example", &["cdn.example"], &[("10.0.0.1", 300)]);
        stray.addrs.push(("unrelated.example".into(), ip("10.0.0.9"), 300));
        // An address owned by the question itself, before the CNAME: maps to the question only.
        stray.addrs.push(("q.example".into(), ip("10.0.0.5"), 300));
        cache.record(&stray, t0);
        assert_eq!(names(&cache, "10.0.0.1", t0), ["q.example", "cdn.example"]);
        assert_eq!(names(&cache, "10.0.0.5", t0), ["q.example"]);
        assert!(names(&cache, "10.0.0.9", t0).is_empty());

        let mut no_question = answer("x.example", &[], &[("10.0.0.7", 300)]);
        no_question.question = None;
        cache.record(&no_question, t0);
        assert!(names(&cache, "10.0.0.7", t0).is_empty());
    }

    #[test]
    fn unspecified_addresses_are_ignored_and_mapped_v4_is_found() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(16);
        cache.record(&answer("blocked.example", &[], &[("0.0.0.0", 60), ("::", 60)]), t0);
        assert!(cache.is_empty());
        cache.record(&answer("v4.example", &[], &[("192.0.2.1", 60)]), t0);
        assert_eq!(names(&cache, "::ffff:192.0.2.1", t0), ["v4.example"]);
        cache.record(&answer("mapped.example", &[], &[("::ffff:192.0.2.2", 60)]), t0);
        assert_eq!(names(&cache, "192.0.2.2", t0), ["mapped.example"]);
    }

    #[test]
    fn zero_capacity_records_nothing() {
        let t0 = Instant::now();
        let mut cache = DnsCache::new(0);
        cache.record(&answer("a.example", &[], &[("10.0.0.1", 60)]), t0);
        assert!(cache.is_empty());
    }

    proptest! {
        #[test]
        fn bounds_hold_for_any_sequence(
            capacity in 0usize..20,
            events in proptest::collection::vec((0u8..40, 0u8..12, 0u32..5000, 0u64..4000), 1..200),
        ) {
            let t0 = Instant::now();
            let mut cache = DnsCache::new(capacity);
            for (host, name, ttl, at) in events {
                let now = t0 + secs(at);
                let addr = format!("10.0.0.{host}");
                let q = format!("n{name}.example");
                cache.record(&answer(&q, &["cdn.example"], &[(&addr, ttl)]), now);
                prop_assert!(cache.len() <= capacity);
                prop_assert!(cache.names_for(ip(&addr), now).count() <= MAX_NAMES_PER_IP);
                if capacity > 0 {
                    // What was just recorded is visible.
                    let got: Vec<&str> = cache.names_for(ip(&addr), now).collect();
                    prop_assert!(got.contains(&q.as_str()));
                }
            }
        }
    }
}
