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

/// Sends 4,000-byte datagrams with "don't fragment" (`IP_PMTUDISC_DO` / `IPV6_PMTUDISC_DO`) to argv[1]:argv[2]
/// until one fails with `EMSGSIZE` (at most 5 s); prints what the first send did, whether one failed, and the
/// socket's path MTU then.
const DONT_FRAGMENT_PROBE: &str = r#"
import errno, json, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
v6 = ":" in host
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
level, discover, mtu_opt = (socket.IPPROTO_IPV6, 23, 24) if v6 else (socket.IPPROTO_IP, 10, 14)
s.setsockopt(level, discover, 2)  # *_PMTUDISC_DO
s.connect((host, port))
out = {"first": None, "emsgsize": False}
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    try:
        s.send(b"x" * 4000)
        out["first"] = out["first"] or "sent"
    except OSError as e:
        if e.errno != errno.EMSGSIZE:
            raise
        out["first"] = out["first"] or "EMSGSIZE"
        out["emsgsize"] = True
        break
    time.sleep(0.05)
out["path_mtu"] = s.getsockopt(level, mtu_opt)
print(json.dumps(out))
"#;

// Issue 16.1: the app's tun MTU (9000) is above the network's (1,500 here). A datagram that must not be
// fragmented and does not fit the network is answered with ICMP "fragmentation needed" / "packet too big" naming
// 1,500: the phone's kernel learns the path MTU and the next send fails with EMSGSIZE, as without the VPN. Before,
// the upstream socket's kernel fragmented it and the phone went on believing the path carried 9,000.
fn dont_fragment_datagram_teaches_the_phone_the_path_mtu(fam: Family) {
    let tb = Testbed::start(Options::engine().engine_arg("--mtu").engine_arg("9000"));
    tb.ip_phone(&["link", "set", TUN, "mtu", "9000"]);
    let port = ECHO_PORT.to_string();
    let r =
        run_ok(tb.phone_command("python3", &["-c", DONT_FRAGMENT_PROBE, fam.normal(), &port]), Duration::from_secs(20));
    let out: Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("no JSON ({e}): {r}"));
    assert_eq!(out["first"], "sent", "the tun carries 9,000: {out}");
    assert_eq!(out["emsgsize"], true, "told the path MTU: {out}\nengine log:\n{}", tb.engine_log());
    assert_eq!(out["path_mtu"], 1500, "{out}");
}

#[test]
fn dont_fragment_datagram_teaches_the_phone_the_path_mtu_v4() {
    dont_fragment_datagram_teaches_the_phone_the_path_mtu(Family::V4);
}

#[test]
fn dont_fragment_datagram_teaches_the_phone_the_path_mtu_v6() {
    dont_fragment_datagram_teaches_the_phone_the_path_mtu(Family::V6);
}
