//! Network changes under a running engine, on the netns test bed: what a phone's switch from Wi-Fi to mobile data
//! does to the engine's upstream side (its address goes away, a new one and new routes appear).
//!
//! Needs root and the release binary (`$HUSHWALL_BIN`, default `target/release/hushwall`).

use hushwall_tests::topology::*;
use hushwall_tests::{Dig, Family, Options, Testbed};
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
