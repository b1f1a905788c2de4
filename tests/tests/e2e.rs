//! End-to-end tests of the `hushwall` binary: the engine on a tun device in a phone namespace, real clients,
//! real servers and a capture in an internet namespace (see `hushwall_tests::testbed`).
//!
//! Every test asserts on three things: what the client got (fast refusal, NXDOMAIN, byte-exact bodies), what
//! the engine reported (one block event per blocked attempt, with host, reason and rule), and what the server
//! side saw (server log, and a capture that must hold zero packets to telemetry hosts and blocked ranges).
//!
//! Needs root and the release binary (`$HUSHWALL_BIN`, default `target/release/hushwall`); `tests/run.sh`
//! provides both.

use hushwall_tests::evidence::{assert_blocks, finish, ip, server_saw, Expect};
use hushwall_tests::proc::{run, Run};
use hushwall_tests::testbed::TempDir;
use hushwall_tests::topology::*;
use hushwall_tests::{hushwall_bin, sha256, Family, Netns, Options, Testbed};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// A refusal must come this fast: clients use 5 s connect timeouts, so a silent drop cannot pass.
const FAST: Duration = Duration::from_millis(2000);
/// A blocked DNS answer must come this fast (dig waits 3 s).
const FAST_DNS: Duration = Duration::from_millis(1000);

fn start() -> Testbed {
    Testbed::start(Options::engine())
}

fn assert_refused_fast(run: &Run, what: &str) {
    assert!(!run.success() && !run.timed_out(), "{what} should be refused: {run}");
    assert!(run.elapsed < FAST, "{what} should be refused fast, took {:?}: {run}", run.elapsed);
}

fn assert_nxdomain_fast(d: &hushwall_tests::Dig, what: &str) {
    assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "{what}: {}", d.run);
    assert!(d.answers.is_empty(), "{what}: NXDOMAIN with answers: {}", d.run);
    assert!(d.run.elapsed < FAST_DNS, "{what}: answer took {:?}", d.run.elapsed);
}

fn resolver_arg(fam: Family) -> String {
    format!("@{}", fam.outside_resolver())
}

// ---------------------------------------------------------------------------------------------------------
// Per-family tests.

/// Blocked names get NXDOMAIN at once; subdomains of an `||name^` rule too. The phone's query itself is never
/// forwarded: the resolver sees a blocked name only as the engine's own A/AAAA lookup that learns its addresses
/// (never a TXT query, which the engine does not learn), and the telemetry host sees nothing (checked by `finish`).
fn blocked_name_via_dns(fam: Family) {
    let mut tb = start();
    let sub = format!("x1.{TELEMETRY_NAME}");
    for name in [TELEMETRY_NAME, TELEMETRY_NAME_2, &sub] {
        let d = tb.dig(&[&resolver_arg(fam), name, fam.rtype()]);
        assert_nxdomain_fast(&d, name);
    }
    let sub_txt = format!("x2.{TELEMETRY_NAME}");
    let txt = tb.dig(&[&resolver_arg(fam), &sub_txt, "TXT"]);
    assert_nxdomain_fast(&txt, "TXT query for a blocked name");
    let dns_log = tb.dns_log();
    assert!(
        !dns_log.contains(&format!("query[TXT] {sub_txt} from")),
        "the phone's blocked query was forwarded upstream:\n{dns_log}"
    );
    // Address learning asks for the rule's own name, never the client's (whose labels could carry data).
    assert!(!dns_log.contains(&format!("] {sub} from")), "the phone's blocked name reached the resolver:\n{dns_log}");
    let events = finish(&mut tb);
    assert!(events.iter().all(|e| e["uid"] == 0), "dig runs as root: attributed to uid 0: {events:?}");
    let r = fam.outside_resolver();
    assert_blocks(
        &events,
        &[
            Expect {
                protocol: "dns",
                reason: "dns_query",
                hosts: Some(&[TELEMETRY_NAME]),
                dst_ip: r,
                dst_port: 53,
                rule: rules::TELEMETRY,
            },
            Expect {
                protocol: "dns",
                reason: "dns_query",
                hosts: Some(&[TELEMETRY_NAME_2]),
                dst_ip: r,
                dst_port: 53,
                rule: rules::TELEMETRY_2,
            },
            Expect {
                protocol: "dns",
                reason: "dns_query",
                hosts: Some(&[&sub]),
                dst_ip: r,
                dst_port: 53,
                rule: rules::TELEMETRY,
            },
            Expect {
                protocol: "dns",
                reason: "dns_query",
                hosts: Some(&[&sub_txt]),
                dst_ip: r,
                dst_port: 53,
                rule: rules::TELEMETRY,
            },
        ],
    );
}

/// With DNS bypassed, the TLS ClientHello's SNI blocks: fast failure, and the server never sees a connection.
fn blocked_name_via_sni(fam: Family) {
    let mut tb = start();
    let f = tb.curl_resolved("https", TELEMETRY_NAME, fam.telemetry(), "/", fam);
    assert_refused_fast(&f.run, "HTTPS to a blocked SNI");
    assert_eq!(f.http_code, 0);
    let seen = server_saw(&tb, "accept", fam.telemetry());
    assert!(seen.is_empty(), "the telemetry server saw connections: {seen:?}");
    let events = finish(&mut tb);
    assert!(
        events.iter().all(|e| e["uid"] == 0),
        "curl runs as root on this machine: the block is attributed to uid 0 via /proc/net: {events:?}"
    );
    assert_blocks(
        &events,
        &[Expect {
            protocol: "tcp",
            reason: "tls_sni",
            hosts: Some(&[TELEMETRY_NAME]),
            dst_ip: fam.telemetry(),
            dst_port: 443,
            rule: rules::TELEMETRY,
        }],
    );
}

/// With DNS bypassed, the HTTP Host header blocks.
fn blocked_name_via_http_host(fam: Family) {
    let mut tb = start();
    let f = tb.curl_resolved("http", TELEMETRY_NAME_2, fam.telemetry(), "/", fam);
    assert_refused_fast(&f.run, "HTTP with a blocked Host");
    assert_eq!(f.http_code, 0, "{}", f.run);
    let seen = server_saw(&tb, "accept", fam.telemetry());
    assert!(seen.is_empty(), "the telemetry server saw connections: {seen:?}");
    let events = finish(&mut tb);
    assert_blocks(
        &events,
        &[Expect {
            protocol: "tcp",
            reason: "http_host",
            hosts: Some(&[TELEMETRY_NAME_2]),
            dst_ip: fam.telemetry(),
            dst_port: 80,
            rule: rules::TELEMETRY_2,
        }],
    );
}

/// One IP, an allowed and a blocked name: SNI / Host decide per connection.
fn shared_ip_decided_by_sni_and_host(fam: Family) {
    let mut tb = start();
    let want = sha256(&tb.big);
    let good = tb.curl_resolved("https", SHARED_GOOD_NAME, fam.shared(), "/big", fam);
    assert!(good.run.success() && good.http_code == 200, "allowed name on the shared IP: {}", good.run);
    assert_eq!(sha256(&good.body), want, "HTTPS body on the shared IP");
    let bad = tb.curl_resolved("https", SHARED_BAD_NAME, fam.shared(), "/", fam);
    assert_refused_fast(&bad.run, "HTTPS to the blocked name on the shared IP");
    let good = tb.curl_resolved("http", SHARED_GOOD_NAME, fam.shared(), "/", fam);
    assert!(good.run.success() && good.http_code == 200, "{}", good.run);
    let bad = tb.curl_resolved("http", SHARED_BAD_NAME, fam.shared(), "/", fam);
    assert_refused_fast(&bad.run, "HTTP to the blocked name on the shared IP");

    let tls = server_saw(&tb, "tls", fam.shared());
    let snis: Vec<&Value> = tls.iter().map(|e| &e["sni"]).collect();
    assert_eq!(snis, vec![SHARED_GOOD_NAME], "SNIs the shared server saw");
    assert_eq!(server_saw(&tb, "accept", fam.shared()).len(), 2, "one HTTPS and one HTTP connection");
    let hosts: Vec<Value> =
        server_saw(&tb, "http_request", fam.shared()).into_iter().map(|e| e["host"].clone()).collect();
    assert!(hosts.iter().all(|h| h == SHARED_GOOD_NAME), "Hosts the shared server saw: {hosts:?}");

    let events = finish(&mut tb);
    assert_blocks(
        &events,
        &[
            Expect {
                protocol: "tcp",
                reason: "tls_sni",
                hosts: Some(&[SHARED_BAD_NAME]),
                dst_ip: fam.shared(),
                dst_port: 443,
                rule: rules::SHARED_BAD,
            },
            Expect {
                protocol: "tcp",
                reason: "http_host",
                hosts: Some(&[SHARED_BAD_NAME]),
                dst_ip: fam.shared(),
                dst_port: 80,
                rule: rules::SHARED_BAD,
            },
        ],
    );
}

/// Addresses in a blocked range: TCP gets RST, UDP gets ICMP port unreachable; the name itself resolves.
fn blocked_cidr(fam: Family) {
    let mut tb = start();
    let d = tb.dig(&[&resolver_arg(fam), CIDR_NAME, fam.rtype()]);
    assert_eq!(d.addresses(fam.rtype()), vec![fam.cidr().to_string()], "{}", d.run);
    let t = tb.tcp_banner(fam.cidr(), BANNER_PORT);
    assert!(t.result == "refused" || t.result == "reset", "TCP into a blocked range: {:?}", t.raw);
    assert!(t.elapsed < FAST, "TCP refusal took {:?}", t.elapsed);
    let f = tb.curl(&[fam.flag(), &format!("http://{CIDR_NAME}/")]);
    assert_refused_fast(&f.run, "HTTP into a blocked range");
    let u = tb.udp_echo(fam.cidr(), ECHO_PORT);
    assert_eq!(u.result, "refused", "UDP into a blocked range must get ICMP unreachable: {:?}", u.raw);
    assert!(u.elapsed < FAST, "UDP refusal took {:?}", u.elapsed);
    assert!(tb.server_log().iter().all(|e| e["local"].as_str().is_none_or(|l| !l.contains(fam.cidr()))));
    let events = finish(&mut tb);
    let (c, rule) = (fam.cidr(), fam.cidr_rule());
    assert_blocks(
        &events,
        &[
            Expect { protocol: "tcp", reason: "ip_cidr", hosts: None, dst_ip: c, dst_port: BANNER_PORT, rule },
            Expect { protocol: "tcp", reason: "ip_cidr", hosts: None, dst_ip: c, dst_port: 80, rule },
            Expect { protocol: "udp", reason: "ip_cidr", hosts: None, dst_ip: c, dst_port: ECHO_PORT, rule },
        ],
    );
}

/// An address learnt from DNS answers for a blocked name is blocked for any protocol (here a raw TCP service
/// without SNI or Host), while the same kind of connection to an allowed server works.
fn dns_mapped_ip(fam: Family) {
    let mut tb = start();
    // The engine learns telemetry's address either from the blocked query or from the CNAME-cloaked answer.
    let r = resolver_arg(fam);
    assert_nxdomain_fast(&tb.dig(&[&r, TELEMETRY_NAME, fam.rtype()]), TELEMETRY_NAME);
    assert_nxdomain_fast(&tb.dig(&[&r, CLOAKED_NAME, fam.rtype()]), CLOAKED_NAME);
    let t = tb.tcp_banner(fam.telemetry(), BANNER_PORT);
    assert!(t.result == "refused" || t.result == "reset", "TCP to a DNS-mapped blocked address: {:?}", t.raw);
    assert!(t.elapsed < FAST, "refusal took {:?}", t.elapsed);
    // Control: a raw TCP service on an allowed server passes (server speaks first).
    assert_eq!(tb.resolve(NORMAL_NAME, fam).addresses(fam.rtype()), vec![fam.normal().to_string()]);
    let ok = tb.tcp_banner(fam.normal(), BANNER_PORT);
    assert_eq!(ok.result, "banner", "{:?}", ok.raw);
    assert!(server_saw(&tb, "accept", fam.telemetry()).is_empty());
    let events = finish(&mut tb);
    let tel = fam.telemetry();
    let res = fam.outside_resolver();
    assert_blocks(
        &events,
        &[
            Expect {
                protocol: "dns",
                reason: "dns_query",
                hosts: Some(&[TELEMETRY_NAME]),
                dst_ip: res,
                dst_port: 53,
                rule: rules::TELEMETRY,
            },
            Expect {
                protocol: "dns",
                reason: "dns_cname",
                hosts: Some(&[CLOAKED_NAME, TELEMETRY_NAME]),
                dst_ip: res,
                dst_port: 53,
                rule: rules::TELEMETRY,
            },
            Expect {
                protocol: "tcp",
                reason: "dns_mapped_ip",
                hosts: Some(&[TELEMETRY_NAME]),
                dst_ip: tel,
                dst_port: BANNER_PORT,
                rule: rules::TELEMETRY,
            },
        ],
    );
}

/// An allowed name that is a CNAME for a blocked one is blocked.
fn cname_cloaking(fam: Family) {
    let mut tb = start();
    let d = tb.resolve(CLOAKED_NAME, fam);
    assert_nxdomain_fast(&d, CLOAKED_NAME);
    let events = finish(&mut tb);
    assert_blocks(
        &events,
        &[Expect {
            protocol: "dns",
            reason: "dns_cname",
            hosts: Some(&[CLOAKED_NAME, TELEMETRY_NAME]),
            dst_ip: OUTSIDE_RESOLVER_V4,
            dst_port: 53,
            rule: rules::TELEMETRY,
        }],
    );
}

/// Allowed names resolve through the engine and 10 MiB arrive byte-exact over HTTP and HTTPS.
fn allowed_http_and_https_byte_exact(fam: Family) {
    let mut tb = start();
    let want = sha256(&tb.big);
    for scheme in ["http", "https"] {
        let f = tb.curl(&[fam.flag(), &format!("{scheme}://{NORMAL_NAME}/big")]);
        assert!(f.run.success() && f.http_code == 200, "{scheme}: {}", f.run);
        assert_eq!(sha256(&f.body), want, "{scheme} body over {}", fam.name());
    }
    let tls = server_saw(&tb, "tls", fam.normal());
    assert_eq!(tls.len(), 1, "{tls:?}");
    assert_eq!(tls[0]["sni"], NORMAL_NAME);
    // The allowed connections came through the engine's protected sockets.
    let peer = tls[0]["peer"].as_str().and_then(|p| p.parse::<SocketAddr>().ok()).expect("peer");
    assert_eq!(peer.ip(), ip(if fam == Family::V4 { PHONE_VETH_V4 } else { PHONE_VETH_V6 }));
    let seen = tb.captured(&format!("host {}", fam.normal()));
    assert!(seen.len() > 100, "the capture should hold the transfers ({} packets)", seen.len());
    let events = finish(&mut tb);
    assert_blocks(&events, &[]);
}

/// UDP (non-DNS) flows are forwarded both ways, repeatedly.
fn udp_echo_works(fam: Family) {
    let mut tb = start();
    for ip_ in [fam.normal(), fam.shared(), fam.normal()] {
        let r = tb.udp_echo(ip_, ECHO_PORT);
        assert_eq!(r.result, "echo", "UDP echo from {ip_}: {:?}", r.raw);
    }
    assert_eq!(server_saw(&tb, "udp", fam.normal()).len(), 2);
    assert_eq!(server_saw(&tb, "udp", fam.shared()).len(), 1);
    let events = finish(&mut tb);
    assert_blocks(&events, &[]);
}

/// DNS to a hard-coded outside resolver (not the upstream) is intercepted: filtered, and allowed names resolve.
fn outside_resolver_is_intercepted(fam: Family) {
    let mut tb = start();
    let r = resolver_arg(fam);
    for other in Family::ALL {
        let d = tb.dig(&[&r, NORMAL_NAME, other.rtype()]);
        assert_eq!(d.status.as_deref(), Some("NOERROR"), "{}", d.run);
        assert_eq!(d.addresses(other.rtype()), vec![other.normal().to_string()], "{}", d.run);
    }
    assert_nxdomain_fast(&tb.dig(&[&r, SHARED_BAD_NAME, fam.rtype()]), SHARED_BAD_NAME);
    // The answers came from the upstream the engine forwards to.
    assert!(tb.dns_log().contains(&format!("query[AAAA] {NORMAL_NAME}")), "{}", tb.dns_log());
    let events = finish(&mut tb);
    assert_blocks(
        &events,
        &[Expect {
            protocol: "dns",
            reason: "dns_query",
            hosts: Some(&[SHARED_BAD_NAME]),
            dst_ip: fam.outside_resolver(),
            dst_port: 53,
            rule: rules::SHARED_BAD,
        }],
    );
}

/// DNS over TCP is filtered and forwarded too.
fn dns_over_tcp(fam: Family) {
    let mut tb = start();
    let r = resolver_arg(fam);
    let d = tb.dig(&["+tcp", &r, NORMAL_NAME, fam.rtype()]);
    assert_eq!(d.addresses(fam.rtype()), vec![fam.normal().to_string()], "{}", d.run);
    assert_nxdomain_fast(&tb.dig(&["+tcp", &r, TELEMETRY_NAME, fam.rtype()]), TELEMETRY_NAME);
    let events = finish(&mut tb);
    assert_blocks(
        &events,
        &[Expect {
            protocol: "dns",
            reason: "dns_query",
            hosts: Some(&[TELEMETRY_NAME]),
            dst_ip: fam.outside_resolver(),
            dst_port: 53,
            rule: rules::TELEMETRY,
        }],
    );
}

macro_rules! per_family {
    ($($name:ident),* $(,)?) => {
        mod ipv4 {
            $( #[test] fn $name() { super::$name(super::Family::V4) } )*
        }
        mod ipv6 {
            $( #[test] fn $name() { super::$name(super::Family::V6) } )*
        }
    };
}

per_family!(
    blocked_name_via_dns,
    blocked_name_via_sni,
    blocked_name_via_http_host,
    shared_ip_decided_by_sni_and_host,
    blocked_cidr,
    dns_mapped_ip,
    cname_cloaking,
    allowed_http_and_https_byte_exact,
    udp_echo_works,
    outside_resolver_is_intercepted,
    dns_over_tcp,
);

// ---------------------------------------------------------------------------------------------------------
// The command line.

#[test]
fn sigint_stops_the_engine_with_status_zero() {
    let mut tb = start();
    assert!(tb.engine_running());
    let status = tb.stop_engine("INT");
    assert!(status.success(), "exit after SIGINT: {status}\n{}", tb.engine_log());
}

#[test]
fn check_reports_verdicts_with_rules() {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/test-blocklist.txt");
    let inputs = [TELEMETRY_NAME, NORMAL_NAME, "198.19.0.77", "fd00:6877:bad::1", "198.18.1.1"];
    let mut c = std::process::Command::new(hushwall_bin());
    c.args(["check", "--profile", "none", "--blocklist"]).arg(&list).args(inputs);
    let r = run(c, Duration::from_secs(20));
    assert!(r.success(), "{r}");
    let lines: Vec<Value> =
        r.stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert_eq!(lines.len(), inputs.len(), "one line per input: {r}");
    for (line, input) in lines.iter().zip(inputs) {
        assert_eq!(line["input"], input, "{line}");
    }
    let blocked = [(0, rules::TELEMETRY), (2, rules::CIDR_V4), (3, rules::CIDR_V6)];
    for (i, rule) in blocked {
        assert_eq!(lines[i]["verdict"], "block", "{}", lines[i]);
        assert_eq!(lines[i]["rule"]["line"], test_list_line(rule), "{}", lines[i]);
        assert!(lines[i]["reason"].is_string(), "{}", lines[i]);
    }
    assert_eq!(lines[2]["reason"], "ip_cidr");
    for i in [1, 4] {
        assert_eq!(lines[i]["verdict"], "allow", "{}", lines[i]);
        assert!(lines[i]["rule"].is_null(), "{}", lines[i]);
    }
}

/// Runs `hushwall args…` in a bare namespace; it must exit non-zero within 10 s (never reach "ready").
fn expect_startup_failure(args: &[&str]) -> Run {
    let ns = Netns::create();
    let mut c = ns.command(hushwall_bin());
    c.args(args);
    let r = run(c, Duration::from_secs(10));
    assert!(!r.timed_out(), "hushwall kept running with bad input: {r}");
    assert!(!r.success(), "hushwall accepted bad input: {r}");
    assert!(!r.stderr.contains("hushwall: ready"), "{r}");
    assert!(!r.stderr.trim().is_empty(), "the failure should be explained on stderr: {r}");
    r
}

#[test]
fn run_with_a_malformed_list_names_file_and_line() {
    let dir = TempDir::create();
    let list = dir.path.join("broken-list.txt");
    std::fs::write(&list, "# a list with one bad entry\n||fine.example.org^\n198.19.0.0/33\n").unwrap();
    let r = expect_startup_failure(&["run", "--tun", TUN, "--profile", "none", "--blocklist", list.to_str().unwrap()]);
    assert!(r.stderr.contains("broken-list.txt:3"), "the error should name file:line (broken-list.txt:3): {r}");
}

#[test]
fn run_with_bad_arguments_fails() {
    expect_startup_failure(&["run"]);
    expect_startup_failure(&["run", "--tun", TUN, "--profile", "nonexistent-profile"]);
    expect_startup_failure(&["run", "--tun", TUN, "--block-answer", "maybe"]);
    expect_startup_failure(&["run", "--tun", TUN, "--dns-upstream", "not-an-address"]);
    expect_startup_failure(&["run", "--tun", TUN, "--blocklist", "/nonexistent/hushwall-list.txt"]);
    expect_startup_failure(&["no-such-subcommand"]);
}

/// Waits up to 5 s for the engine's output to contain `text`.
fn wait_for_log(tb: &Testbed, text: &str) {
    for _ in 0..50 {
        if tb.engine_log().contains(text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("engine never logged {text:?}:\n{}", tb.engine_log());
}

/// SIGHUP re-reads the lists and swaps the new policy in while traffic flows; a malformed list is reported with
/// file and line, and the policy in force stays.
#[test]
fn sighup_reloads_lists_and_keeps_the_last_good_policy_on_error() {
    let dir = TempDir::create();
    let list = dir.path.join("extra-list.txt");
    std::fs::write(&list, "# empty for now\n").expect("write list");
    let tb = Testbed::start(Options::engine().engine_arg("--blocklist").engine_arg(list.as_os_str()));
    let resolver = resolver_arg(Family::V4);
    let hup = || {
        let pid = tb.engine_pid().expect("engine runs").to_string();
        assert!(run(hushwall_tests::proc::command("kill", &["-HUP", &pid]), Duration::from_secs(5)).success());
    };
    let before = tb.dig(&[&resolver, NORMAL_NAME, "A"]);
    assert_eq!(before.status.as_deref(), Some("NOERROR"), "{}", before.run);

    std::fs::write(&list, format!("# now blocked\n{NORMAL_NAME}\n")).expect("write list");
    hup();
    wait_for_log(&tb, "lists reloaded");
    assert_nxdomain_fast(&tb.dig(&[&resolver, NORMAL_NAME, "A"]), "after reload");

    std::fs::write(&list, format!("# now broken\n{NORMAL_NAME}\nnot a domain!\n")).expect("write list");
    hup();
    wait_for_log(&tb, "extra-list.txt:3");
    assert!(tb.engine_log().contains("keeping the lists in force"), "{}", tb.engine_log());
    assert_nxdomain_fast(&tb.dig(&[&resolver, NORMAL_NAME, "A"]), "the last good policy stays after a bad reload");
}

/// `run --tun-fd` adopts a descriptor opened by someone else (what Android's VpnService hands over): the engine
/// answers a blocked name through it, and exits 0 on SIGTERM.
#[test]
fn tun_fd_is_adopted() {
    let ns = Netns::create();
    let dir = TempDir::create();
    let list = dir.path.join("list.txt");
    std::fs::write(&list, format!("||{TELEMETRY_NAME}^\n")).expect("write list");
    let launcher = hushwall_tests::testbed::workspace_root().join("tests/scripts/tun_fd_launcher.py");
    let mut engine = ns.command("python3");
    engine.arg(&launcher).arg("hwfd0").arg(hushwall_bin());
    engine.args(["--profile", "none", "--dns-upstream", "198.18.0.1:53", "--blocklist"]).arg(&list);
    engine.stderr(std::process::Stdio::piped());
    let mut child = engine.spawn().expect("start the launcher");
    let ip = |args: &[&str]| {
        let mut c = ns.command("ip");
        c.args(args);
        run(c, Duration::from_secs(5))
    };
    let mut up = false;
    for _ in 0..50 {
        if ip(&["link", "set", "hwfd0", "up"]).success() {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(up, "the launcher never created hwfd0");
    assert!(ip(&["addr", "add", "10.111.0.1/32", "dev", "hwfd0"]).success());
    assert!(ip(&["route", "add", "default", "dev", "hwfd0"]).success());
    let mut dig = ns.command("dig");
    dig.args(["+time=2", "+tries=1", "@198.18.53.53", TELEMETRY_NAME, "A"]);
    let d = hushwall_tests::clients::parse_dig(run(dig, Duration::from_secs(10)));
    assert_nxdomain_fast(&d, "blocked name through an adopted tun fd");
    let pid = child.id().to_string();
    assert!(run(hushwall_tests::proc::command("kill", &["-TERM", &pid]), Duration::from_secs(5)).success());
    let status = child.wait().expect("engine exits");
    assert!(status.success(), "exit status {status}");
}

/// `--block-uid`: every connection of processes running as that user is refused (reason `app_blocked`,
/// attributed to the uid), while other users' traffic to the same server still works.
#[test]
fn blocked_uid_is_refused_and_other_users_pass() {
    let mut tb = Testbed::start(Options::engine().engine_arg("--block-uid").engine_arg("4321"));
    let url = format!("http://{}/", Family::V4.normal());
    let mut app_curl = tb
        .phone_command("setpriv", &["--reuid", "4321", "--regid", "4321", "--clear-groups", "curl", "-sS", "-m", "5"]);
    app_curl.arg(&url);
    let as_app = run(app_curl, Duration::from_secs(10));
    assert_refused_fast(&as_app, "the blocked app's connection");
    let as_root = tb.curl(&[&url]);
    assert_eq!(as_root.http_code, 200, "other users still pass: {}", as_root.run);
    let events = finish(&mut tb);
    let app: Vec<&Value> = events.iter().filter(|e| e["reason"] == "app_blocked").collect();
    assert_eq!(app.len(), 1, "one refusal for the blocked app: {events:?}");
    assert_eq!(app[0]["uid"], 4321);
    assert_eq!(app[0]["protocol"], "tcp");
}
