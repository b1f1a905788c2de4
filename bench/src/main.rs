//! `hushwall-bench`: memory and speed of the blocklist matcher.
//!
//! Builds a policy of the built-in balanced lists plus N synthetic names (default 1,000,000) and synthetic
//! address ranges, then prints build time, heap bytes held by the policy (counted by a global allocator), bytes
//! per name, and single-thread lookup rates for hits and misses, for names and for addresses.
//!
//! Run: `cargo run --release -p hushwall-bench -- [NAMES] [CIDRS]`. Everything is generated from fixed seeds,
//! so runs differ only by the machine's speed.
//!
//! `cargo run --release -p hushwall-bench -- engine [MEGABYTES]` runs the engine-only benchmark instead
//! ([`hushwall_bench::engine`]): user-space cost per byte, upload and download, at each MTU of
//! [`hushwall_bench::ENGINE_BENCH_MTUS`], `MEGABYTES` (default 200) each.

use hushwall_bench::counting::{ALLOCATIONS, CURRENT, PEAK};
use hushwall_core::policy::{ListRole, ListSource, Policy, Profile};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// xorshift64*: a fixed-seed generator, so every run builds the same lists.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A DNS label of 4 to 12 letters and digits.
    fn label(&mut self, out: &mut String) {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        for _ in 0..4 + self.below(9) {
            out.push(char::from(ALPHABET[self.below(ALPHABET.len() as u64) as usize]));
        }
    }

    /// A name of two or three labels under a common top-level domain.
    fn name(&mut self) -> String {
        const TLDS: &[&str] = &["com", "net", "org", "cn", "io", "ru", "in", "sg", "de", "info"];
        let mut name = String::with_capacity(32);
        for _ in 0..2 + self.below(2) {
            self.label(&mut name);
            name.push('.');
        }
        name.push_str(TLDS[self.below(TLDS.len() as u64) as usize]);
        name
    }
}

/// Synthetic name rules, one of three kinds in turn (exact, `||subtree^`, `*.subdomains`), and for each a query
/// that the rule matches.
fn synthetic_names(n: usize) -> (String, Vec<String>) {
    let mut rng = Rng(0x6877_6877_0000_0001);
    let mut text = String::with_capacity(n * 24);
    let mut hits = Vec::with_capacity(n);
    for i in 0..n {
        let name = rng.name();
        match i % 3 {
            0 => {
                text.push_str(&name);
                hits.push(name);
            }
            1 => {
                text.push_str(&format!("||{name}^"));
                hits.push(format!("cdn.{name}"));
            }
            _ => {
                text.push_str(&format!("*.{name}"));
                hits.push(format!("www.{name}"));
            }
        }
        text.push('\n');
    }
    (text, hits)
}

/// Synthetic address ranges (IPv4 /16 to /32, IPv6 /32 to /64, nine IPv4 to one IPv6), all in the lower half of
/// their address space, and a hit for each.
fn synthetic_cidrs(n: usize) -> (String, Vec<IpAddr>) {
    let mut rng = Rng(0x6877_6877_0000_0002);
    let mut text = String::with_capacity(n * 20);
    let mut hits = Vec::with_capacity(n);
    for i in 0..n {
        if i % 10 == 9 {
            let prefix = 32 + rng.below(33) as u8;
            let bits = (u128::from(rng.next()) << 64) & (u128::MAX >> 1);
            let net = bits & (u128::MAX << (128 - u32::from(prefix)));
            text.push_str(&format!("{}/{prefix}\n", Ipv6Addr::from(net)));
            hits.push(IpAddr::V6(Ipv6Addr::from(net | 1)));
        } else {
            let prefix = 16 + rng.below(17) as u8;
            let bits = rng.next() as u32 & (u32::MAX >> 1);
            let net = bits & (u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
            text.push_str(&format!("{}/{prefix}\n", Ipv4Addr::from(net)));
            hits.push(IpAddr::V4(Ipv4Addr::from(net)));
        }
    }
    (text, hits)
}

/// What one set of lookups measured.
struct Timing {
    /// Fastest run's time per lookup.
    per_lookup: Duration,
    /// Queries blocked in a run.
    blocked: usize,
    /// Heap allocations per lookup (for the `RuleRef` of a match).
    allocations: f64,
}

/// Runs `lookup` over every query, five times.
fn time_lookups<Q>(queries: &[Q], mut lookup: impl FnMut(&Q) -> bool) -> Timing {
    let mut best = Duration::MAX;
    let mut blocked = 0;
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..5 {
        let start = Instant::now();
        blocked = queries.iter().filter(|q| black_box(lookup(black_box(q)))).count();
        best = best.min(start.elapsed());
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    Timing {
        per_lookup: best / u32::try_from(queries.len().max(1)).unwrap_or(u32::MAX),
        blocked,
        allocations: allocations as f64 / (5 * queries.len().max(1)) as f64,
    }
}

fn report(what: &str, t: Timing, total: usize) {
    let ns = t.per_lookup.as_secs_f64() * 1e9;
    let rate = if ns > 0.0 { 1e9 / ns } else { f64::INFINITY };
    println!(
        "{what:<16} {ns:>7.1} ns/lookup {rate:>11.0} lookups/s  {:.1} allocations/lookup  ({} of {total} blocked)",
        t.allocations, t.blocked
    );
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("engine") {
        let megabytes = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(200);
        std::process::exit(hushwall_bench::run_engine_bench(megabytes));
    }
    let mut args = std::env::args().skip(1).map(|a| a.replace('_', "").parse::<usize>());
    let n_names = args.next().and_then(Result::ok).unwrap_or(1_000_000);
    let n_cidrs = args.next().and_then(Result::ok).unwrap_or(100_000);
    const QUERIES: usize = 1_000_000;

    let (names_text, name_hits) = synthetic_names(n_names);
    let (cidr_text, cidr_hits) = synthetic_cidrs(n_cidrs);
    let mut sources = Profile::Balanced.sources();
    sources.push(ListSource { name: "synthetic-names".into(), role: ListRole::Block, text: names_text });
    sources.push(ListSource { name: "synthetic-cidrs".into(), role: ListRole::Block, text: cidr_text });

    let heap_before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(heap_before, Ordering::Relaxed);
    let rss_before = rss_kib();
    let start = Instant::now();
    let policy = match Policy::compile(&sources) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("hushwall-bench: {e}");
            std::process::exit(1);
        }
    };
    let build = start.elapsed();
    let held = CURRENT.load(Ordering::Relaxed).saturating_sub(heap_before);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(heap_before);
    let rss_delta = rss_kib().zip(rss_before).map(|(after, before)| after.saturating_sub(before));
    drop(sources);

    let stats = policy.stats();
    let names = stats.block_names + stats.allow_names;
    let cidrs = stats.block_cidrs + stats.allow_cidrs;
    println!("policy: {names} name rules, {cidrs} address ranges ({stats:?})");
    println!("build (parse + compile): {:.2} s", build.as_secs_f64());
    println!(
        "heap held by the policy: {held} bytes ({:.1} MiB), {:.1} bytes per rule; peak extra heap during build: \
         {:.1} MiB; RSS growth: {}",
        held as f64 / 1048576.0,
        held as f64 / (names + cidrs).max(1) as f64,
        peak as f64 / 1048576.0,
        rss_delta.map_or("unknown".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0)),
    );

    let mut rng = Rng(0x6877_6877_0000_0003);
    let hit_queries: Vec<&str> = (0..QUERIES)
        .map(|_| name_hits[rng.below(name_hits.len().max(1) as u64) as usize].as_str())
        .filter(|_| !name_hits.is_empty())
        .collect();
    let miss_queries: Vec<String> = (0..QUERIES).map(|_| format!("x.{}", rng.name())).collect();
    let ip_hits: Vec<IpAddr> = (0..QUERIES)
        .filter_map(|_| cidr_hits.get(rng.below(cidr_hits.len().max(1) as u64) as usize).copied())
        .collect();
    // Misses: the upper half of each address space, which no synthetic range covers.
    let ip_misses: Vec<IpAddr> = (0..QUERIES)
        .map(|i| {
            if i % 10 == 9 {
                IpAddr::V6(Ipv6Addr::from((1u128 << 127) | (u128::from(rng.next()) << 32)))
            } else {
                IpAddr::V4(Ipv4Addr::from(0x8000_0000 | (rng.next() as u32 >> 1)))
            }
        })
        .collect();

    println!("single thread, {QUERIES} queries each, best of 5 runs:");
    report("name hits", time_lookups(&hit_queries, |q| policy.check_name(q).is_blocked()), hit_queries.len());
    report("name misses", time_lookups(&miss_queries, |q| policy.check_name(q).is_blocked()), miss_queries.len());
    report("address hits", time_lookups(&ip_hits, |&ip| policy.check_ip(ip).is_blocked()), ip_hits.len());
    report("address misses", time_lookups(&ip_misses, |&ip| policy.check_ip(ip).is_blocked()), ip_misses.len());
}
