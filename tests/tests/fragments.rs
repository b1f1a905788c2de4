//! IP fragments through the engine (issue 12.5): 4,000- and 9,000-byte UDP datagrams, larger than the tun's
//! 1,500-byte MTU, to the test bed's UDP echo server and back, on IPv4 and IPv6. The phone's kernel fragments
//! them into the tun; the engine reassembles them, and fragments the echoes on the way back.
//!
//! Needs root and the release binary (`$HUSHWALL_BIN`).

use hushwall_tests::proc::run_ok;
use hushwall_tests::testbed::workspace_root;
use hushwall_tests::topology::*;
use hushwall_tests::{Family, Options, Testbed};
use serde_json::Value;
use std::time::Duration;

fn large_datagrams_are_echoed(fam: Family) {
    let tb = Testbed::start(Options::engine());
    let script = workspace_root().join("tests/scripts/udp_probe.py").display().to_string();
    let port = ECHO_PORT.to_string();
    let args = [script.as_str(), "echo", fam.normal(), &port, "4000", "9000", "100"];
    let r = run_ok(tb.phone_command("python3", &args), Duration::from_secs(20));
    let out: Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("no JSON ({e}): {r}"));
    assert_eq!(out["result"], "ok", "{out}\nengine log:\n{}", tb.engine_log());
}

#[test]
fn large_udp_datagrams_v4() {
    large_datagrams_are_echoed(Family::V4);
}

#[test]
fn large_udp_datagrams_v6() {
    large_datagrams_are_echoed(Family::V6);
}
