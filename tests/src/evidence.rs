//! Evidence checks shared by the e2e tests and the demo: the engine's block events (one per blocked attempt,
//! naming host, reason and rule), their schema, the server log, and the server-side capture.

use crate::testbed::Testbed;
use crate::topology::{test_list_line, PHONE_TUN_V4, PHONE_TUN_V6};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Parses an IP address literal.
///
/// # Panics
/// If `s` is not one.
pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s:?} is not an IP address: {e}"))
}

/// One expected block event.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// `dns`, `tcp`, `udp` or `icmp`.
    pub protocol: &'a str,
    /// The reason code.
    pub reason: &'a str,
    /// Acceptable values of `host` (`None`: not checked).
    pub hosts: Option<&'a [&'a str]>,
    /// Destination address the client asked for.
    pub dst_ip: &'a str,
    /// Destination port.
    pub dst_port: u16,
    /// The test-list entry that must be named as the rule.
    pub rule: &'a str,
}

/// One line describing an expectation.
pub fn describe(e: &Expect) -> String {
    format!("{} {} → {}:{} host {:?} rule {}", e.protocol, e.reason, e.dst_ip, e.dst_port, e.hosts, e.rule)
}

/// True if event `ev` is the one `e` expects (rule not checked).
pub fn matches(ev: &Value, e: &Expect) -> bool {
    let dst: Option<SocketAddr> = ev["dst"].as_str().and_then(|d| d.parse().ok());
    ev["protocol"] == e.protocol
        && ev["reason"] == e.reason
        && dst.is_some_and(|d| d.ip() == ip(e.dst_ip) && d.port() == e.dst_port)
        && e.hosts.is_none_or(|hosts| hosts.iter().any(|h| ev["host"] == *h))
}

/// Asserts that the block events are exactly `expected`, one each (one event per blocked attempt), and that
/// each names its rule: the test list's file, the entry's line, and the entry.
pub fn assert_blocks(events: &[Value], expected: &[Expect]) {
    let blocks: Vec<&Value> = events.iter().filter(|e| e["action"] == "block").collect();
    for e in expected {
        let hits: Vec<&&Value> = blocks.iter().filter(|ev| matches(ev, e)).collect();
        assert_eq!(
            hits.len(),
            1,
            "expected exactly one block event {}; all block events:\n{}",
            describe(e),
            pretty(&blocks)
        );
        let rule = &hits[0]["rule"];
        let list = rule["list"].as_str().unwrap_or_else(|| panic!("event without rule.list: {}", hits[0]));
        assert_eq!(
            Path::new(list).file_name().and_then(|n| n.to_str()),
            Some("test-blocklist.txt"),
            "rule.list of {}",
            hits[0]
        );
        assert_eq!(rule["line"], test_list_line(e.rule), "rule.line of {}", hits[0]);
        let core = e.rule.trim_start_matches("||").trim_end_matches('^');
        assert!(
            rule["rule"].as_str().is_some_and(|r| r.contains(core)),
            "rule.rule of {} should show {}",
            hits[0],
            e.rule
        );
    }
    assert_eq!(
        blocks.len(),
        expected.len(),
        "unexpected extra block events (expected {}):\n{}",
        expected.iter().map(describe).collect::<Vec<_>>().join("\n"),
        pretty(&blocks)
    );
}

/// The error events (an allowed flow that failed upstream or was evicted) with `reason` to port `dst_port`.
pub fn failures<'a>(events: &'a [Value], reason: &str, dst_port: u16) -> Vec<&'a Value> {
    let port = |ev: &Value| ev["dst"].as_str().and_then(|d| d.parse::<SocketAddr>().ok()).map(|d| d.port());
    events.iter().filter(|ev| ev["action"] == "error" && ev["reason"] == reason && port(ev) == Some(dst_port)).collect()
}

/// Events, one per line.
pub fn pretty(events: &[&Value]) -> String {
    events.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

/// Checks the shape of every event line (the CLI contract).
pub fn assert_event_schema(events: &[Value]) {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for ev in events {
        let t = ev["time_ms"].as_u64().unwrap_or_else(|| panic!("time_ms: {ev}"));
        // Wall-clock time of this run (a soak lasts up to hours), not a monotonic clock's.
        assert!(t <= now_ms && t + 86_400_000 > now_ms, "time_ms not today: {ev}");
        assert!(["block", "allow", "error"].iter().any(|a| ev["action"] == *a), "action: {ev}");
        assert_eq!(ev["action"] == "error", ev["error"].is_string(), "an error event says what failed: {ev}");
        assert!(["dns", "tcp", "udp", "icmp"].iter().any(|p| ev["protocol"] == *p), "protocol: {ev}");
        let src: SocketAddr = ev["src"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("src: {ev}"));
        let phone = [ip(PHONE_TUN_V4), ip(PHONE_TUN_V6)];
        assert!(phone.contains(&src.ip()), "src should be the phone's tun address: {ev}");
        let _: SocketAddr = ev["dst"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("dst: {ev}"));
        assert!(ev["host"].is_null() || ev["host"].is_string(), "host: {ev}");
        assert!(ev["reason"].is_string(), "reason: {ev}");
        assert!(ev["uid"].is_null() || ev["uid"].is_u64(), "uid: {ev}");
        assert!(ev["repeats"].is_null() || ev["repeats"].as_u64().is_some_and(|n| n > 0), "repeats: {ev}");
        let rule = &ev["rule"];
        assert!(
            rule.is_null() || (rule["list"].is_string() && rule["line"].is_u64() && rule["rule"].is_string()),
            "rule: {ev}"
        );
    }
}

/// Stops the engine with SIGTERM (it must exit 0), checks that the capture holds no packet to or from a
/// telemetry host or blocked range, and returns the engine's events.
pub fn finish(tb: &mut Testbed) -> Vec<Value> {
    let status = tb.stop_engine("TERM");
    assert!(status.success(), "engine exit after SIGTERM: {status}\n{}", tb.engine_log());
    let leaks = tb.forbidden_packets();
    assert!(
        leaks.is_empty(),
        "the server-side capture saw {} packets to/from telemetry hosts or blocked ranges:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    let events = tb.events();
    assert_event_schema(&events);
    events
}

/// Server-log entries of `event` ("accept", "tls", "udp", …) whose local address is `ip` (any port).
pub fn server_saw(tb: &Testbed, event: &str, ip_: &str) -> Vec<Value> {
    tb.server_log()
        .into_iter()
        .filter(|e| {
            e["event"] == event
                && e["local"].as_str().and_then(|l| l.parse::<SocketAddr>().ok()).is_some_and(|l| l.ip() == ip(ip_))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{rules, OUTSIDE_RESOLVER_V4, TELEMETRY_NAME};
    use serde_json::json;

    fn event(host: &str, line: u32) -> Value {
        json!({
            "time_ms": 1_764_000_000_000u64, "action": "block", "protocol": "dns",
            "src": "10.111.0.1:40000", "dst": "198.18.53.53:53", "host": host, "reason": "dns_query",
            "rule": {"list": "/tmp/x/test-blocklist.txt", "line": line, "rule": "||tracking.intl.miui.com^"},
            "uid": null
        })
    }

    const EXPECT: Expect<'static> = Expect {
        protocol: "dns",
        reason: "dns_query",
        hosts: Some(&[TELEMETRY_NAME]),
        dst_ip: OUTSIDE_RESOLVER_V4,
        dst_port: 53,
        rule: rules::TELEMETRY,
    };

    #[test]
    fn exact_events_pass() {
        let line = test_list_line(rules::TELEMETRY);
        let allowed = json!({"action": "allow", "protocol": "tcp", "dst": "198.18.1.1:443"});
        assert_blocks(&[event(TELEMETRY_NAME, line), allowed], &[EXPECT]);
    }

    #[test]
    fn ipv6_destinations_compare_as_addresses() {
        let mut ev = event(TELEMETRY_NAME, test_list_line(rules::TELEMETRY));
        ev["dst"] = json!("[fd00:6877:53:0::53]:53");
        let e = Expect { dst_ip: "fd00:6877:53::53", ..EXPECT };
        assert_blocks(&[ev], &[e]);
    }

    #[test]
    #[should_panic(expected = "exactly one block event")]
    fn a_duplicate_event_fails() {
        let ev = event(TELEMETRY_NAME, test_list_line(rules::TELEMETRY));
        assert_blocks(&[ev.clone(), ev], &[EXPECT]);
    }

    #[test]
    #[should_panic(expected = "unexpected extra block events")]
    fn an_unexpected_block_fails() {
        let ev = event(TELEMETRY_NAME, test_list_line(rules::TELEMETRY));
        assert_blocks(&[ev.clone(), event("other.example", 1)], &[EXPECT]);
    }

    #[test]
    #[should_panic(expected = "rule.line")]
    fn a_wrong_rule_line_fails() {
        assert_blocks(&[event(TELEMETRY_NAME, 1)], &[EXPECT]);
    }

    #[test]
    #[should_panic(expected = "src should be the phone")]
    fn schema_rejects_a_foreign_source() {
        let mut ev = event(TELEMETRY_NAME, 1);
        ev["time_ms"] =
            json!(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64);
        ev["src"] = json!("198.18.0.2:40000");
        assert_event_schema(&[ev]);
    }
}
