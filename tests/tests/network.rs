//! Network changes under a running engine, on the netns test bed: what a phone's switch from Wi-Fi to mobile data
//! does to the engine's upstream side (its address goes away, a new one and new routes appear).
//!
//! Needs root and the release binary (`$HUSHWALL_BIN`, default `target/release/hushwall`).

use hushwall_tests::topology::*;
use hushwall_tests::{Dig, Family, Options, Testbed};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// DNS, TCP and UDP must work again this soon after the new address and routes appear.
const RECOVERY: Duration = Duration::from_secs(2);
/// The phone side's addresses after the switch (same links, new addresses: a new network's DHCP/SLAAC lease).
const NEW_PHONE_VETH_V4: &str = "198.18.0.3";
const NEW_PHONE_VETH_V6: &str = "fd00:6877::3";

/// Replaces the engine's upstream addresses and routes, as a network switch does.
fn switch_network(tb: &Testbed) {
    tb.ip_phone(&["addr", "del", &format!("{PHONE_VETH_V4}/24"), "dev", VETH]);
    tb.ip_phone(&["-6", "addr", "del", &format!("{PHONE_VETH_V6}/64"), "dev", VETH]);
    tb.ip_phone(&["addr", "add", &format!("{NEW_PHONE_VETH_V4}/24"), "dev", VETH]);
    tb.ip_phone(&["-6", "addr", "add", &format!("{NEW_PHONE_VETH_V6}/64"), "dev", VETH, "nodad"]);
    tb.ip_phone(&["route", "replace", "default", "via", INTERNET_VETH_V4, "dev", VETH, "table", PROTECT_TABLE]);
    tb.ip_phone(&["-6", "route", "replace", "default", "via", INTERNET_VETH_V6, "dev", VETH, "table", PROTECT_TABLE]);
}

/// Asks for `name`'s address of `fam` (one try, 1 s) until it is answered or `deadline` passes; the last dig.
fn resolve_until(tb: &Testbed, fam: Family, deadline: Instant) -> Dig {
    loop {
        let d = tb.dig(&["+time=1", NORMAL_NAME, fam.rtype()]);
        if d.addresses(fam.rtype()) == vec![fam.normal().to_string()] || Instant::now() >= deadline {
            return d;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wi-Fi → mobile: the address every upstream socket used disappears and a new one comes. DNS through both an
/// IPv4 and an IPv6 resolver, TCP and UDP on both families work again within 2 s, without restarting the engine.
/// (Before, DNS failed for good: its one long-lived upstream socket kept the vanished source address.)
#[test]
fn dns_tcp_and_udp_recover_after_the_upstream_address_changes() {
    let tb = Testbed::start(Options::engine().engine_arg("--dns-upstream").engine_arg("[fd00:6877::1]:53"));
    for fam in Family::ALL {
        let d = tb.resolve(NORMAL_NAME, fam);
        assert_eq!(d.addresses(fam.rtype()), vec![fam.normal().to_string()], "before the switch: {}", d.run);
    }

    switch_network(&tb);
    let switched = Instant::now();
    for fam in Family::ALL {
        let d = resolve_until(&tb, fam, switched + RECOVERY);
        assert_eq!(d.addresses(fam.rtype()), vec![fam.normal().to_string()], "DNS after the switch: {}", d.run);
    }
    let dns_recovered = switched.elapsed();
    assert!(dns_recovered <= RECOVERY + Duration::from_millis(500), "DNS took {dns_recovered:?} to recover");
    for fam in Family::ALL {
        let f = tb.curl_resolved("http", NORMAL_NAME, fam.normal(), "/", fam);
        assert_eq!(f.http_code, 200, "{} TCP after the switch: {}", fam.name(), f.run);
        assert!(f.run.elapsed < RECOVERY, "{} TCP took {:?}", fam.name(), f.run.elapsed);
        let u = tb.udp_echo(fam.normal(), ECHO_PORT);
        assert_eq!(u.result, "echo", "{} UDP after the switch: {:?}", fam.name(), u.raw);
        assert!(u.elapsed < RECOVERY, "{} UDP took {:?}", fam.name(), u.elapsed);
    }
    let log = tb.dns_log();
    assert!(log.contains(&format!("from {NEW_PHONE_VETH_V4}")), "the IPv4 resolver answered the new address:\n{log}");

    // The IPv4 resolver goes silent: the query is retried on the IPv6 resolver within the same budget, and the
    // silent one is skipped for the next queries (answered at once, over IPv6 from the new address).
    tb.ip_internet(&["rule", "add", "ipproto", "udp", "sport", "53", "prohibit", "priority", "10"]);
    let d = tb.dig(&["+time=4", SHARED_GOOD_NAME, "A"]);
    assert_eq!(d.addresses("A"), vec![Family::V4.shared().to_string()], "retried on the IPv6 resolver: {}", d.run);
    let d = tb.dig(&["+time=1", NORMAL_NAME, "AAAA"]);
    assert_eq!(d.addresses("AAAA"), vec![Family::V6.normal().to_string()], "the silent resolver skipped: {}", d.run);
    assert!(d.run.elapsed < Duration::from_secs(1), "skipping took {:?}", d.run.elapsed);
    let log = tb.dns_log();
    assert!(
        log.contains(&format!("query[AAAA] {NORMAL_NAME} from {NEW_PHONE_VETH_V6}")),
        "the IPv6 resolver answered the new address:\n{log}"
    );
}

/// A name with more A records than fit a 1,232-byte UDP answer.
const BIG_NAME: &str = "big.example.org";
const BIG_RECORDS: u8 = 100;

/// A large answer: over UDP the phone gets it truncated (TC set, within its EDNS size) and asks again over TCP,
/// which the engine forwards over TCP and answers whole; the engine itself fetched the truncated upstream UDP
/// answer again over TCP. (Before, DNS over TCP went upstream over UDP, so a big answer stayed truncated.)
#[test]
fn a_large_answer_comes_whole_over_tcp_and_truncated_over_udp() {
    // One record per option: dnsmasq keeps only the last IPv4 address of a multi-address --host-record.
    let options =
        (1..=BIG_RECORDS).fold(Options::engine(), |o, i| o.host_record(BIG_NAME, &[&format!("198.18.2.{i}")]));
    let mut tb = Testbed::start(options);
    // UDP only (+ignore: no retry over TCP): a correctly truncated answer that fits the 1,232 bytes asked for.
    let udp = tb.dig(&["+ignore", "+bufsize=1232", "+stats", BIG_NAME, "A"]);
    assert_eq!(udp.status.as_deref(), Some("NOERROR"), "{}", udp.run);
    let flags = udp.run.stdout.lines().find(|l| l.contains(";; flags:")).unwrap_or_default().to_string();
    assert!(flags.contains(" tc"), "TC set: {}", udp.run);
    let size: usize = udp
        .run
        .stdout
        .lines()
        .find_map(|l| l.split("MSG SIZE  rcvd: ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no size: {}", udp.run));
    assert!(size <= 1232, "the truncated answer is {size} bytes");
    // What a stub resolver does next (dig's default: retry over TCP on TC), and DNS over TCP directly.
    for args in [vec![BIG_NAME, "A"], vec!["+tcp", BIG_NAME, "A"]] {
        let d = tb.dig(&args);
        assert_eq!(d.addresses("A").len(), usize::from(BIG_RECORDS), "the whole answer: {}", d.run);
    }
    let upstream_tcp = tb.captured("tcp dst port 53 and tcp[tcpflags] & tcp-syn != 0");
    assert!(upstream_tcp.len() >= 3, "the engine asked upstream over TCP: {upstream_tcp:?}");
    // Every query the engine sent over UDP left from a source port of its own.
    let udp_queries = tb.captured("udp dst port 53");
    let ports: HashSet<&str> =
        udp_queries.iter().filter_map(|l| l.split_whitespace().nth(2)?.rsplit('.').next()).collect();
    assert!(udp_queries.len() >= 2, "{udp_queries:?}");
    assert_eq!(ports.len(), udp_queries.len(), "a source port reused: {udp_queries:?}");
}
