//! LAN devices through the engine (issue 12.4): a multicast query (mDNS-style, 224.0.0.251:5353) and a limited
//! broadcast probe (255.255.255.255) from the phone namespace reach a "LAN host" on the other side, and its
//! answers, which come from the host's own address rather than the address the query went to, reach the phone.
//!
//! Needs root and the release binary (`$HUSHWALL_BIN`).

use hushwall_tests::proc::{run_ok, Background};
use hushwall_tests::testbed::workspace_root;
use hushwall_tests::topology::*;
use hushwall_tests::{Options, Testbed};
use serde_json::Value;
use std::time::Duration;

/// A process in the internet namespace, killed when the test ends (also on panic).
struct Server(Background);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.stop("KILL", Duration::from_secs(3));
    }
}

fn probe_script() -> String {
    workspace_root().join("tests/scripts/udp_probe.py").display().to_string()
}

/// The LAN host: answers on `port`, joined to `group` on the internet side of the veth if given.
fn lan_host(tb: &Testbed, port: u16, group: Option<&str>) -> Server {
    let port = port.to_string();
    let mut args = vec![probe_script(), "respond".into(), port.clone()];
    if let Some(g) = group {
        args.extend([g.to_string(), INTERNET_VETH_V4.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = tb.internet_command("python3", &args);
    let mut server = Server(Background::spawn("lan-host", cmd, &tb.dir.join(format!("lan-host-{port}.log"))));
    server.0.wait_for_log("ready", Duration::from_secs(10));
    server
}

/// One query from the phone to `addr:port`; the JSON the probe printed.
fn query(tb: &Testbed, addr: &str, port: u16) -> Value {
    let r = run_ok(
        tb.phone_command("python3", &[&probe_script(), "query", addr, &port.to_string()]),
        Duration::from_secs(15),
    );
    serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("udp_probe.py printed no JSON ({e}): {r}"))
}

#[test]
fn multicast_query_is_answered_by_a_lan_host() {
    let tb = Testbed::start(Options::engine());
    let _host = lan_host(&tb, 5353, Some("224.0.0.251"));
    let answer = query(&tb, "224.0.0.251", 5353);
    assert_eq!(answer["result"], "ok", "{answer}\nengine log:\n{}", tb.engine_log());
    assert_eq!(answer["from"][0], INTERNET_VETH_V4, "the answer comes from the LAN host's own address");
}

#[test]
fn broadcast_probe_is_answered_by_a_lan_host() {
    let tb = Testbed::start(Options::engine());
    let _host = lan_host(&tb, 9999, None);
    let answer = query(&tb, "255.255.255.255", 9999);
    assert_eq!(answer["result"], "ok", "{answer}\nengine log:\n{}", tb.engine_log());
    assert_eq!(answer["from"][0], INTERNET_VETH_V4);
}
