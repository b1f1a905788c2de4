//! Self-test of the test bed without the engine: the phone's routes go straight to the veth, so every client
//! must reach every server, and the server-side evidence (server log, capture, DNS answers) must show it. This
//! proves the topology and the evidence the e2e tests rely on, independently of the engine.

use hushwall_tests::testbed::{cleanup_stale, BIG_SIZE};
use hushwall_tests::topology::*;
use hushwall_tests::{sha256, Options, Testbed};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn netns_exists(name: &str) -> bool {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).lines().any(|l| l.split_whitespace().next() == Some(name))
}

fn server_saw(log: &[Value], event: &str, local: &str) -> Vec<Value> {
    log.iter().filter(|e| e["event"] == event && e["local"] == local).cloned().collect()
}

#[test]
fn dns_answers_every_record_on_both_families_and_tcp() {
    let tb = Testbed::start(Options::no_engine());
    for fam in Family::ALL {
        for (name, addrs) in host_records() {
            let want: Vec<String> =
                addrs.iter().filter(|a| a.contains(':') == (fam == Family::V6)).map(|a| a.to_string()).collect();
            let d = tb.resolve(name, fam);
            assert_eq!(d.status.as_deref(), Some("NOERROR"), "{name}: {}", d.run);
            assert_eq!(d.addresses(fam.rtype()), want, "{name} {}", fam.rtype());
            // The answers must live long enough for the engine's IP→name cache.
            assert!(d.answers.iter().all(|r| r.ttl == 300), "TTL: {}", d.run);
        }
        // CNAME cloaking: the alias answers with the chain.
        let d = tb.dig(&[&format!("@{}", fam.outside_resolver()), CLOAKED_NAME, fam.rtype()]);
        assert_eq!(d.status.as_deref(), Some("NOERROR"), "{}", d.run);
        assert!(
            d.answers.iter().any(|r| r.rtype == "CNAME" && r.name == CLOAKED_NAME && r.data == TELEMETRY_NAME),
            "no CNAME: {}",
            d.run
        );
        assert_eq!(d.addresses(fam.rtype()), vec![fam.telemetry().to_string()]);
        // DNS over TCP to the v6 outside resolver.
        let d = tb.dig(&["+tcp", &format!("@{}", fam.outside_resolver()), NORMAL_NAME, fam.rtype()]);
        assert_eq!(d.addresses(fam.rtype()), vec![fam.normal().to_string()], "{}", d.run);
    }
    // The DNS server itself saw the queries (its log is what a leak check would read).
    assert!(tb.dns_log().contains(&format!("query[A] {CLOAKED_NAME}")), "{}", tb.dns_log());
}

#[test]
fn http_and_https_serve_the_big_body_byte_exact_and_log_sni() {
    let tb = Testbed::start(Options::no_engine());
    let want = sha256(&tb.big);
    for fam in Family::ALL {
        // Through DNS (the phone's resolv.conf), like an app.
        for scheme in ["http", "https"] {
            let f = tb.curl(&[fam.flag(), &format!("{scheme}://{NORMAL_NAME}/big")]);
            assert!(f.run.success() && f.http_code == 200, "{}", f.run);
            assert_eq!(std::fs::metadata(&f.body).unwrap().len(), BIG_SIZE as u64);
            assert_eq!(sha256(&f.body), want, "{scheme} {}", fam.name());
        }
        // With DNS bypassed, to the shared server, with a name the server certificate covers.
        let f = tb.curl_resolved("https", SHARED_BAD_NAME, fam.shared(), "/", fam);
        assert!(f.run.success() && f.http_code == 200, "{}", f.run);
    }
    let log = tb.server_log();
    for fam in Family::ALL {
        let shared = format!("{}:443", fam.bracket(fam.shared()));
        let tls = server_saw(&log, "tls", &shared);
        assert_eq!(tls.len(), 1, "{tls:?}");
        assert_eq!(tls[0]["sni"], SHARED_BAD_NAME, "the server log must record the SNI it saw");
        let normal = format!("{}:443", fam.bracket(fam.normal()));
        assert_eq!(server_saw(&log, "tls", &normal)[0]["sni"], NORMAL_NAME);
        // Clients come from the phone's veth address in this mode.
        assert_eq!(server_saw(&log, "accept", &normal).len(), 1);
    }
}

#[test]
fn udp_echo_banner_and_refusals_work_on_every_address() {
    let tb = Testbed::start(Options::no_engine());
    for fam in Family::ALL {
        for ip in [fam.normal(), fam.telemetry(), fam.shared(), fam.cidr()] {
            let r = tb.udp_echo(ip, ECHO_PORT);
            assert_eq!(r.result, "echo", "udp echo from {ip}: {:?}", r.raw);
            let r = tb.tcp_banner(ip, BANNER_PORT);
            assert_eq!(r.result, "banner", "banner from {ip}: {:?}", r.raw);
        }
        // The refusal paths the e2e tests expect from the engine exist in the clients: a closed UDP port
        // gives ICMP port unreachable → "refused"; a closed TCP port gives RST → "refused".
        let r = tb.udp_echo(fam.normal(), 9);
        assert_eq!(r.result, "refused", "{:?}", r.raw);
        let r = tb.tcp_banner(fam.normal(), 9);
        assert_eq!(r.result, "refused", "{:?}", r.raw);
    }
    let log = tb.server_log();
    assert_eq!(log.iter().filter(|e| e["event"] == "udp").count(), 8, "{log:?}");
}

#[test]
fn capture_sees_traffic_and_the_forbidden_filter_catches_leaks() {
    let mut tb = Testbed::start(Options::no_engine());
    // Without an engine nothing is blocked: these packets must show up in the forbidden filter, which proves
    // the e2e assertion "zero packets to telemetry hosts" can fail.
    assert_eq!(tb.udp_echo(Family::V4.telemetry(), ECHO_PORT).result, "echo");
    assert_eq!(tb.tcp_banner(Family::V6.cidr(), BANNER_PORT).result, "banner");
    assert_eq!(tb.udp_echo(Family::V6.normal(), ECHO_PORT).result, "echo");
    let forbidden = tb.forbidden_packets();
    assert!(forbidden.iter().any(|l| l.contains("198.18.1.2.7")), "{forbidden:#?}");
    assert!(forbidden.iter().any(|l| l.contains("fd00:6877:bad::10.7777")), "{forbidden:#?}");
    assert!(!forbidden.iter().any(|l| l.contains("fd00:6877:1::1")), "{forbidden:#?}");
    let normal = tb.captured("host fd00:6877:1::1");
    assert_eq!(normal.len(), 2, "request and echo: {normal:#?}");
}

#[test]
fn drop_removes_namespaces_and_files_even_on_panic() {
    let (phone, internet, dir) = {
        let tb = Testbed::start(Options::no_engine());
        assert!(netns_exists(&tb.phone) && netns_exists(&tb.internet));
        assert!(Path::new(&format!("/etc/netns/{}/resolv.conf", tb.phone)).is_file());
        (tb.phone.clone(), tb.internet.clone(), tb.dir.clone())
    };
    assert!(!netns_exists(&phone) && !netns_exists(&internet));
    assert!(!Path::new(&format!("/etc/netns/{phone}")).exists());
    assert!(!dir.exists());

    let names = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let tb = Testbed::start(Options::no_engine());
        *names.lock().unwrap() = Some((tb.phone.clone(), tb.internet.clone(), tb.dir.clone()));
        panic!("deliberate panic inside a test bed (the log dump above is expected)");
    }));
    assert!(result.is_err());
    let (phone, internet, dir) = names.lock().unwrap().clone().expect("test bed started");
    assert!(!netns_exists(&phone) && !netns_exists(&internet), "namespaces left after a panic");
    assert!(!dir.exists());
}

#[test]
fn stale_namespaces_of_dead_runs_are_removed() {
    // pid_max is at most 4194304; a pid this high and not running stands for a crashed run.
    let dead = (4_000_000..4_194_304).find(|p| !Path::new(&format!("/proc/{p}")).exists()).unwrap();
    let stale = format!("hwp-{dead}-0");
    assert!(Command::new("ip").args(["netns", "add", &stale]).status().unwrap().success());
    std::fs::create_dir_all(format!("/etc/netns/{stale}")).unwrap();
    // A live run's namespace (ours) must survive.
    let live = format!("hwi-{}-999999", std::process::id());
    assert!(Command::new("ip").args(["netns", "add", &live]).status().unwrap().success());
    cleanup_stale();
    let live_survived = netns_exists(&live);
    let _ = Command::new("ip").args(["netns", "del", &live]).status();
    assert!(!netns_exists(&stale), "stale namespace {stale} not removed");
    assert!(!Path::new(&format!("/etc/netns/{stale}")).exists());
    assert!(live_survived, "a live run's namespace was removed");
}
