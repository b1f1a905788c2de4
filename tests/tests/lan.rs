//! LAN devices through the engine (issue 12.4): multicast queries (mDNS-style, 224.0.0.251:5353 and the
//! link-scoped ff02::fb:5353) and a limited broadcast probe (255.255.255.255) from the phone namespace reach a
//! "LAN host" on the internet side of the veth, and its answers reach the phone: unicast answers, which come
//! from the host's own address rather than the address the query went to, and the answers an mDNS responder
//! multicasts to the group when the querier's port is 5353 (RFC 6762 §6), which reach a phone socket joined to
//! the group on the tun addressed to the group. A LAN host in a blocked range is not heard.
//!
//! Needs root and the release binary (`$HUSHWALL_BIN`).

use hushwall_tests::proc::{run_ok, Background};
use hushwall_tests::testbed::workspace_root;
use hushwall_tests::topology::*;
use hushwall_tests::{Options, Testbed};
use serde_json::Value;
use std::time::Duration;

const MDNS_V4: &str = "224.0.0.251";
const MDNS_V6: &str = "ff02::fb";
const MDNS_PORT: u16 = 5353;

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

/// The LAN host: answers on `port`; joined to `group` on the internet side of the veth if given, it answers
/// queries from `port` itself to the group (as mDNS responders do), others unicast. With `also_from`, every
/// answer is first also sent from that address of the internet namespace.
fn lan_host(tb: &Testbed, port: u16, group: Option<&str>, also_from: Option<&str>) -> Server {
    let mut args = vec![probe_script(), "respond".into(), port.to_string()];
    if let Some(g) = group {
        args.extend([g.to_string(), VETH.to_string()]);
        args.extend(also_from.map(str::to_string));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = tb.internet_command("python3", &args);
    let log = tb.dir.join(format!("lan-host-{port}-{}.log", group.unwrap_or("none").replace(':', "_")));
    let mut server = Server(Background::spawn("lan-host", cmd, &log));
    server.0.wait_for_log("ready", Duration::from_secs(10));
    server
}

/// Runs udp_probe.py `args` in the phone namespace; the JSON it printed.
fn probe(tb: &Testbed, args: &[&str]) -> Value {
    let script = probe_script();
    let mut all = vec![script.as_str()];
    all.extend_from_slice(args);
    let r = run_ok(tb.phone_command("python3", &all), Duration::from_secs(15));
    serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("udp_probe.py printed no JSON ({e}): {r}"))
}

/// Asserts the probe got an answer from `from`, sent to `to`, arriving on the tun.
fn assert_answer(tb: &Testbed, answer: &Value, from: &str, to: &str) {
    assert_answer_among(tb, answer, &[from], &[to]);
}

/// Asserts the probe got an answer from one of `from`, sent to one of `to`, arriving on the tun.
fn assert_answer_among(tb: &Testbed, answer: &Value, from: &[&str], to: &[&str]) {
    let context = format!("{answer}\nengine log:\n{}", tb.engine_log());
    assert_eq!(answer["result"], "ok", "{context}");
    let is_one_of = |value: &Value, of: &[&str]| value.as_str().is_some_and(|v| of.contains(&v));
    assert!(is_one_of(&answer["from"][0], from), "the answer must come from the LAN host ({from:?}): {context}");
    assert!(is_one_of(&answer["to"], to), "the answer must be sent to one of {to:?}: {context}");
    assert_eq!(answer["iface"], TUN, "{context}");
}

/// The LAN host's IPv6 addresses: which one a datagram to or from a link-scoped group uses depends on whether
/// the link-local addresses finished duplicate address detection.
fn lan_host_v6(tb: &Testbed) -> [String; 2] {
    [link_local(tb.internet_command("ip", &[]), VETH), INTERNET_VETH_V6.to_string()]
}

/// The phone's IPv6 addresses on the tun (link-local and the VPN's address).
fn phone_tun_v6(tb: &Testbed) -> [String; 2] {
    [link_local(tb.phone_command("ip", &[]), TUN), PHONE_TUN_V6.to_string()]
}

/// The IPv6 link-local address of `dev` in the namespace `ip` runs in (the source of link-scoped multicast).
fn link_local(ip: std::process::Command, dev: &str) -> String {
    let mut ip = ip;
    ip.args(["-6", "-o", "addr", "show", "dev", dev, "scope", "link"]);
    let r = run_ok(ip, STEP);
    let address = r.stdout.split_whitespace().skip_while(|w| *w != "inet6").nth(1);
    address.and_then(|a| a.split('/').next()).unwrap_or_else(|| panic!("no link-local address: {r}")).to_string()
}

const STEP: Duration = Duration::from_secs(10);

#[test]
fn multicast_query_is_answered_by_a_lan_host() {
    let tb = Testbed::start(Options::engine());
    let _host = lan_host(&tb, MDNS_PORT, Some(MDNS_V4), None);
    let answer = probe(&tb, &["query", MDNS_V4, "5353"]);
    assert_answer(&tb, &answer, INTERNET_VETH_V4, PHONE_TUN_V4);
}

#[test]
fn broadcast_probe_is_answered_by_a_lan_host() {
    let tb = Testbed::start(Options::engine());
    let _host = lan_host(&tb, 9999, None, None);
    let answer = probe(&tb, &["query", "255.255.255.255", "9999"]);
    assert_answer(&tb, &answer, INTERNET_VETH_V4, PHONE_TUN_V4);
}

// A querier on port 5353 is answered by multicast to the group (RFC 6762 §6): the upstream socket must bind
// 5353, join 224.0.0.251 on the veth, and the phone must get the answer addressed to the group on the tun.
#[test]
fn mdns_querier_on_5353_hears_the_answer_sent_to_the_group() {
    let tb = Testbed::start(Options::engine());
    let flags = run_ok(tb.phone_command("ip", &["link", "show", "dev", TUN]), STEP);
    assert!(flags.stdout.contains("MULTICAST"), "the tun must take multicast: {flags}");
    let _host = lan_host(&tb, MDNS_PORT, Some(MDNS_V4), None);
    let answer = probe(&tb, &["group-query", MDNS_V4, "5353", TUN]);
    assert_answer(&tb, &answer, INTERNET_VETH_V4, MDNS_V4);
}

// A querier that holds 5353 alone (no SO_REUSEADDR) keeps the engine from binding it: the engine then queries
// from another port, and the legacy unicast answer (RFC 6762 §6.7) still reaches the querier.
#[test]
fn mdns_querier_holding_5353_alone_still_gets_unicast_answers() {
    let tb = Testbed::start(Options::engine());
    let _host = lan_host(&tb, MDNS_PORT, Some(MDNS_V4), None);
    let answer = probe(&tb, &["group-query", MDNS_V4, "5353", TUN, "exclusive"]);
    assert_answer(&tb, &answer, INTERNET_VETH_V4, PHONE_TUN_V4);
}

// Link-scoped IPv6 multicast has no route to choose an interface: the engine sends it out of the upstream
// interface. A one-shot query from another port gets a unicast answer (RFC 6762 §6.7), a querier on 5353 the
// answer sent to ff02::fb.
#[test]
fn ipv6_link_local_mdns_is_answered_unicast_and_to_the_group() {
    let tb = Testbed::start(Options::engine());
    let _host = lan_host(&tb, MDNS_PORT, Some(MDNS_V6), None);
    let (host_v6, phone_v6) = (lan_host_v6(&tb), phone_tun_v6(&tb));
    let host_v6 = [host_v6[0].as_str(), &host_v6[1]];
    let unicast = probe(&tb, &["query", MDNS_V6, "5353", TUN]);
    assert_answer_among(&tb, &unicast, &host_v6, &[&phone_v6[0], &phone_v6[1]]);
    let to_group = probe(&tb, &["group-query", MDNS_V6, "5353", TUN]);
    assert_answer_among(&tb, &to_group, &host_v6, &[MDNS_V6]);
}

// LAN addresses stay subject to the IP rules: a host in a blocked range answers first (to the group and
// unicast), and the phone hears only the allowed host, on both families.
#[test]
fn a_lan_host_in_a_blocked_range_is_not_heard() {
    let tb = Testbed::start(Options::engine());
    let (host_v6, phone_v6) = (lan_host_v6(&tb), phone_tun_v6(&tb));
    let v4 = ([INTERNET_VETH_V4], [PHONE_TUN_V4]);
    let v6 = ([host_v6[0].as_str(), &host_v6[1]], [phone_v6[0].as_str(), &phone_v6[1]]);
    for (group, blocked, (allowed, tun_address)) in
        [(MDNS_V4, Family::V4.cidr(), (&v4.0[..], &v4.1[..])), (MDNS_V6, Family::V6.cidr(), (&v6.0[..], &v6.1[..]))]
    {
        let _host = lan_host(&tb, MDNS_PORT, Some(group), Some(blocked));
        let to_group = probe(&tb, &["group-query", group, "5353", TUN]);
        assert_answer_among(&tb, &to_group, allowed, &[group]);
        let unicast = probe(&tb, &["query", group, "5353", TUN]);
        assert_answer_among(&tb, &unicast, allowed, tun_address);
    }
}
