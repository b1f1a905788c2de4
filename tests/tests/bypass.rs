//! End-to-end tests of issue 18 items 1 and 2: client heads sent late, padded past the old 16 KiB sniff limit,
//! or written the odd ways servers still accept, naming a blocked host. Each is refused, with the block event
//! naming host and rule, and the server-side capture holds no packet to the blocked host (`finish`).
//!
//! Needs root and the `hushwall` binary (see `e2e.rs`); the client is `tests/scripts/bypass.py` (Python standard
//! library).

use hushwall_tests::evidence::{finish, pretty, server_saw};
use hushwall_tests::proc::run;
use hushwall_tests::topology::*;
use hushwall_tests::{Family, Options, Testbed};
use serde_json::Value;
use std::time::Duration;

const BYPASS_PY: &str = include_str!("../scripts/bypass.py");

/// Runs one attempt of `tests/scripts/bypass.py` in the phone namespace; its JSON result.
fn attempt(tb: &Testbed, ip: &str, port: u16, kind: &str, name: &str, delay_ms: u32) -> Value {
    let script = tb.dir.join("bypass.py");
    std::fs::write(&script, BYPASS_PY).expect("write bypass.py");
    let mut cmd = tb.phone_command("python3", &[]);
    cmd.arg(&script).args([ip, &port.to_string(), kind, name, &delay_ms.to_string()]);
    let r = run(cmd, Duration::from_secs(20));
    serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("bypass.py output ({e}): {r}"))
}

/// Asserts that the block events are exactly `expected` (reason, host, destination, rule entry), in any order. A
/// summary of folded identical blocks (`"repeats": N`) stands for N attempts.
fn assert_block_events(events: &[Value], expected: &[(&str, &str, String, &str)]) {
    let blocks: Vec<&Value> = events.iter().filter(|e| e["action"] == "block").collect();
    let mut got: Vec<(String, String, String, String)> = blocks
        .iter()
        .flat_map(|e| {
            let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
            let block = (field(&e["reason"]), field(&e["host"]), field(&e["dst"]), field(&e["rule"]["rule"]));
            let attempts = e.get("repeats").map_or(Some(1), Value::as_u64).expect("repeats is a count");
            std::iter::repeat_n(block, usize::try_from(attempts).expect("count"))
        })
        .collect();
    let mut want: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(reason, host, dst, rule)| {
            let rule = rule.trim_start_matches("||").trim_end_matches('^');
            (reason.to_string(), host.to_string(), dst.clone(), rule.to_string())
        })
        .collect();
    for g in &mut got {
        g.3 = g.3.trim_start_matches("||").trim_end_matches('^').to_string();
    }
    got.sort();
    want.sort();
    assert_eq!(got, want, "block events:\n{}", pretty(&blocks));
}

/// Issue 18.1: connect, wait 800 ms (past the 500 ms sniff timeout), then send a real ClientHello naming a blocked
/// host. It used to be dialled by address at 500 ms and the hello spliced to the server unjudged.
#[test]
fn late_client_hello_never_reaches_a_blocked_host() {
    let mut tb = Testbed::start(Options::engine());
    let mut expected = Vec::new();
    for fam in Family::ALL {
        let r = attempt(&tb, fam.telemetry(), 443, "hello", TELEMETRY_NAME, 800);
        assert_eq!(r["result"], "reset", "{}: {r}", fam.name());
        let dst = format!("{}:443", fam.bracket(fam.telemetry()));
        expected.push(("tls_sni", TELEMETRY_NAME, dst, rules::TELEMETRY));
        assert!(server_saw(&tb, "accept", fam.telemetry()).is_empty(), "{}: the server accepted", fam.name());
    }
    let events = finish(&mut tb);
    assert_block_events(&events, &expected);
}

/// Issue 18.2: a ClientHello padded past 16 KiB, HTTP with empty lines before the request line, with 70 headers
/// before Host, and with `Host: user@name:port` were each judged by address and forwarded to the blocked host.
#[test]
fn big_and_odd_heads_never_reach_a_blocked_host() {
    let mut tb = Testbed::start(Options::engine());
    let cases = [
        (443, "padded-hello", TELEMETRY_NAME, "tls_sni", rules::TELEMETRY),
        (80, "http-crlf", TELEMETRY_NAME_2, "http_host", rules::TELEMETRY_2),
        (80, "http-headers", TELEMETRY_NAME_2, "http_host", rules::TELEMETRY_2),
        (80, "http-userinfo", TELEMETRY_NAME_2, "http_host", rules::TELEMETRY_2),
    ];
    let mut expected = Vec::new();
    for fam in Family::ALL {
        for (port, kind, name, reason, rule) in cases {
            let r = attempt(&tb, fam.telemetry(), port, kind, name, 0);
            assert_eq!(r["result"], "reset", "{} {kind}: {r}", fam.name());
            expected.push((reason, name, format!("{}:{port}", fam.bracket(fam.telemetry())), rule));
        }
        assert!(server_saw(&tb, "accept", fam.telemetry()).is_empty(), "{}: the server accepted", fam.name());
    }
    let events = finish(&mut tb);
    assert_block_events(&events, &expected);
}

/// Issue 18.5: on a keep-alive HTTP connection only the first request was judged, so a later one naming a blocked
/// host (after an answered request, or pipelined behind it in one write) reached the server. Now the connection is
/// reset at that request and the server logs only the first requests.
#[test]
fn later_keep_alive_requests_never_reach_a_blocked_host() {
    let mut tb = Testbed::start(Options::engine());
    let mut expected = Vec::new();
    for fam in Family::ALL {
        for kind in ["keepalive", "pipelined"] {
            let r = attempt(&tb, fam.normal(), 80, kind, TELEMETRY_NAME_2, 0);
            assert_eq!(r["result"], "reset", "{} {kind}: {r}", fam.name());
            let dst = format!("{}:80", fam.bracket(fam.normal()));
            expected.push(("http_host", TELEMETRY_NAME_2, dst, rules::TELEMETRY_2));
        }
    }
    let requests: Vec<Value> = tb.server_log().into_iter().filter(|e| e["event"] == "http_request").collect();
    let paths: Vec<&str> = requests.iter().filter_map(|e| e["path"].as_str()).collect();
    assert_eq!(
        paths,
        ["/first"; 4],
        "the server saw only the first requests: {}",
        pretty(&requests.iter().collect::<Vec<_>>())
    );
    let events = finish(&mut tb);
    assert_block_events(&events, &expected);
}
