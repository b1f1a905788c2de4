//! End-to-end tests of issue 18.8: a flood from one client leaves another client's DNS and HTTPS working.
//!
//! By source address: client A is the phone's tun address 10.111.0.1; client B is a second address, 10.111.0.2,
//! on the same tun (as a second LAN host behind a gateway would be). With small caps (64 TCP and 64 UDP flows) A
//! holds every TCP flow with fresh, echoing connections and floods raw SYNs, UDP flows and DNS queries; B's
//! lookups and a byte-exact HTTPS download must work within normal time while A's excess is refused
//! (`flow_limit` while A is alone, `client_limit` while B holds flows too). Without per-client budgets B's connection was refused (`flow_limit`) until A's flows had been
//! quiet for 60 s.
//!
//! By app (`run --budget-by-app`, what the Android app does): both users of the phone namespace share its one
//! address, as a phone's apps do. User 4321 (standing in for an app's UID) holds every TCP flow with echoing
//! connections and floods DNS; root's lookup and byte-exact HTTPS download must still work, with the flooder's
//! excess refused `client_limit` with its uid. The owners come from the driver's sock_diag lookups of the phone
//! namespace's sockets. Without the flag root's connection is refused, the table being full of the flood's flows.
//!
//! Needs root and the `hushwall` binary (see `e2e.rs`).

use hushwall_tests::clients::sha256;
use hushwall_tests::proc::Background;
use hushwall_tests::reliability::HOLD_PORT;
use hushwall_tests::topology::*;
use hushwall_tests::{Family, Options, Testbed};
use std::time::{Duration, Instant};

/// The second client's address on the phone's tun.
const CLIENT_B: &str = "10.111.0.2";
/// The flow caps of this test (a client's share is a quarter: 16).
const CAP: &str = "64";

#[test]
fn a_flood_from_one_client_leaves_another_clients_dns_and_https_working() {
    let tb = Testbed::start(
        Options::engine()
            .engine_arg("--max-tcp-flows")
            .engine_arg(CAP)
            .engine_arg("--max-udp-flows")
            .engine_arg(CAP)
            // What `hushwall gateway` sets by default (`run` shares nothing: one device).
            .engine_arg("--client-share")
            .engine_arg("25")
            .engine_arg("--client-buffer-mb")
            .engine_arg("64"),
    );
    tb.ip_phone(&["addr", "add", &format!("{CLIENT_B}/32"), "dev", TUN]);
    let fam = Family::V4;
    let _hold = tb.start_hold_server(&[fam.normal()]);
    // Client A: 300 concurrent connections, each echoing a line and then held open for 60 s (the cap is 64) ...
    let mut tcp = tb.flood_background("tcp-flood", &["tcp", fam.normal(), &HOLD_PORT.to_string(), "300", "60"]);
    tcp.wait_for_log("\"phase\": \"holding\"", Duration::from_secs(120));
    // ... and, beside them, raw SYNs, 300 UDP flows and DNS queries, all from A.
    let hold_port = HOLD_PORT.to_string();
    let _syn = tb.flood_background("syn-flood", &["syn", PHONE_TUN_V4, fam.normal(), &hold_port, "20000"]);
    let _udp = tb.flood_background("udp-flood", &["udp", fam.normal(), &ECHO_PORT.to_string(), "3000", "300", "16"]);
    let _dns =
        tb.flood_background("dns-flood", &["dns", OUTSIDE_RESOLVER_V4, "20000", "256", NORMAL_NAME, TELEMETRY_NAME]);
    // Client B: DNS and a byte-exact HTTPS download while A's flows fill the tables. B's lookups retry as a
    // phone's stub resolver does (3 s, three tries): A's 20,000 SYNs and 256 queries in flight overflow the tun's
    // kernel queue (500 packets, shared by every client) at times, and a datagram dropped there never reaches
    // the engine (1 lookup in 3 runs without the retry).
    let started = Instant::now();
    let d = tb.dig(&["+tries=3", "-b", CLIENT_B, NORMAL_NAME, "A"]);
    assert_eq!(d.addresses("A"), vec![fam.normal().to_string()], "B's DNS during A's flood: {}", d.run);
    let resolve = format!("{NORMAL_NAME}:443:{}", fam.normal());
    let url = format!("https://{NORMAL_NAME}/big");
    let f = tb.curl(&["-4", "--interface", CLIENT_B, "--resolve", &resolve, &url]);
    assert_eq!(f.http_code, 200, "B's HTTPS during A's flood: {}", f.run);
    assert_eq!(sha256(&f.body), sha256(&tb.big), "B's download byte-exact");
    let d = tb.dig(&["+tries=3", "-b", CLIENT_B, NORMAL_NAME, "A"]);
    assert_eq!(d.addresses("A"), vec![fam.normal().to_string()], "B's DNS after its download: {}", d.run);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(30), "B's DNS and download took {elapsed:?}");
    let events = tb.events();
    let refused = |client: &str| {
        events.iter().any(|e| {
            e["src"].as_str().is_some_and(|s| s.starts_with(&format!("{client}:")))
                && (e["reason"] == "flow_limit" || e["reason"] == "client_limit")
        })
    };
    assert!(refused(PHONE_TUN_V4), "A's excess is refused");
    assert!(!refused(CLIENT_B), "B was never refused");
    println!("FIGURES two-client flood: B's DNS + 10 MiB HTTPS in {elapsed:?}");
}

/// The flooding user in the phone namespace (an app's UID on a phone).
const FLOODER_UID: u64 = 4321;

/// Runs `flood.py args…` in the phone namespace as [`FLOODER_UID`] (with a high fd limit, raised while still
/// root; the script is read from stdin, opened by root, so the test bed's directory needs no permissions). The
/// system's Debian `python3` (`flood.py` needs only the standard library): root's may be a pyenv shim under
/// `/root`, which another user cannot run.
fn flood_as_flooder(tb: &Testbed, name: &str, args: &[&str]) -> Background {
    let script = format!(
        "ulimit -n 20000 2>/dev/null; exec setpriv --reuid {FLOODER_UID} --regid {FLOODER_UID} --clear-groups \
         /usr/bin/python3 -u - \"$@\" < {}",
        tb.flood_py().display()
    );
    let mut c = tb.phone_command("sh", &["-c", &script, "flood"]);
    c.args(args);
    Background::spawn(name, c, &tb.dir.join(format!("{name}.log")))
}

/// A test bed with caps of 64 flows and a quarter of each per client (by app if `by_app`), where
/// [`FLOODER_UID`] holds every TCP flow (300 echoing connections, held 60 s) and, with `dns_flood`, floods DNS
/// with 600 queries in flight.
fn flooded_by_one_user(by_app: bool, dns_flood: bool) -> (Testbed, Vec<Background>) {
    let mut options = Options::engine();
    for arg in ["--max-tcp-flows", CAP, "--max-udp-flows", CAP, "--client-share", "25"] {
        options = options.engine_arg(arg);
    }
    if by_app {
        options = options.engine_arg("--budget-by-app");
    }
    let tb = Testbed::start(options);
    let fam = Family::V4;
    let mut floods = vec![tb.start_hold_server(&[fam.normal()])];
    let mut tcp = flood_as_flooder(&tb, "tcp-flood", &["tcp", fam.normal(), &HOLD_PORT.to_string(), "300", "60"]);
    tcp.wait_for_log("\"phase\": \"holding\"", Duration::from_secs(120));
    floods.push(tcp);
    if dns_flood {
        let dns = ["dns", OUTSIDE_RESOLVER_V4, "40000", "600", NORMAL_NAME, TELEMETRY_NAME];
        floods.push(flood_as_flooder(&tb, "dns-flood", &dns));
    }
    (tb, floods)
}

/// Refusals for lack of room in the flow tables.
fn refusals(tb: &Testbed) -> Vec<serde_json::Value> {
    tb.events().into_iter().filter(|e| e["reason"] == "flow_limit" || e["reason"] == "client_limit").collect()
}

#[test]
fn a_flood_from_one_app_leaves_another_apps_dns_and_https_working() {
    let (tb, _floods) = flooded_by_one_user(true, true);
    let fam = Family::V4;
    let started = Instant::now();
    // Root (another app): DNS and a byte-exact HTTPS download from the same address as the flood.
    let d = tb.dig(&["+tries=3", NORMAL_NAME, "A"]);
    assert_eq!(d.addresses("A"), vec![fam.normal().to_string()], "DNS during the other app's flood: {}", d.run);
    let resolve = format!("{NORMAL_NAME}:443:{}", fam.normal());
    let url = format!("https://{NORMAL_NAME}/big");
    let f = tb.curl(&["-4", "--resolve", &resolve, &url]);
    assert_eq!(f.http_code, 200, "HTTPS during the other app's flood: {}", f.run);
    assert_eq!(sha256(&f.body), sha256(&tb.big), "download byte-exact");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(30), "DNS and download took {elapsed:?}");
    let refused = refusals(&tb);
    assert!(
        refused.iter().any(|e| e["reason"] == "client_limit" && e["uid"] == FLOODER_UID),
        "the flooder's excess is refused client_limit with its uid: {refused:?}"
    );
    assert!(refused.iter().all(|e| e["uid"] == FLOODER_UID), "only the flooder was refused: {refused:?}");
    println!("FIGURES one-app flood: the other app's DNS + 10 MiB HTTPS in {elapsed:?}");
}

#[test]
fn without_budgets_by_app_one_apps_flood_refuses_another_apps_connection() {
    let (tb, _floods) = flooded_by_one_user(false, false);
    let resolve = format!("{NORMAL_NAME}:443:{}", Family::V4.normal());
    let f = tb.curl(&["-4", "--resolve", &resolve, &format!("https://{NORMAL_NAME}/big")]);
    assert_eq!(f.http_code, 0, "refused: both users are one client by address: {}", f.run);
    assert!(!refusals(&tb).is_empty(), "the full table refused it");
}
