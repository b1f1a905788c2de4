//! Reliability: floods, a mixed soak and faults, against the real `hushwall` binary in the network-namespace test
//! bed. Every load is bounded in count and time and stays inside the test bed's namespaces.
//!
//! What each test asserts is functional, never a speed: the engine process stays up, every connection attempt is
//! answered (accepted or refused, never left hanging), allowed traffic keeps working during and after the load,
//! flows stay under the engine's caps, and the engine's file descriptors and memory come back down afterwards.
//! The figures each test measures are printed (`cargo test -- --nocapture`) and recorded in `RELIABILITY.md`.
//!
//! Sizes: `HUSHWALL_SOAK_SECS` sets the mixed soak's length (default 20 s; `tests/soak.sh` runs 600 s).

use hushwall_tests::clients::parse_dig;
use hushwall_tests::evidence::{failures, finish, pretty};
use hushwall_tests::proc::{run, Run};
use hushwall_tests::reliability::{eventually, num, usage, Sampler, Usage, HOLD_PORT};
use hushwall_tests::testbed::{EngineConfig, TempDir};
use hushwall_tests::topology::*;
use hushwall_tests::{hushwall_bin, Dig, Family, Netns, Options, Testbed};
use serde_json::Value;
use std::time::{Duration, Instant};

/// The engine's default flow caps (`EngineConfig::max_tcp_flows`, `max_udp_flows`).
const MAX_TCP_FLOWS: u64 = 4096;
const MAX_UDP_FLOWS: u64 = 4096;
/// Memory the engine may keep after a load is over, above its idle baseline (allocator caches, grown tables).
const RSS_SLACK_KIB: u64 = 96 * 1024;
/// File descriptors the engine may hold after a load is over, above its idle baseline.
const FD_SLACK: usize = 8;

fn start() -> Testbed {
    Testbed::start(Options::engine())
}

/// The baseline after a little traffic (so lazily built tables and buffers exist).
fn warm_baseline(tb: &Testbed) -> Usage {
    assert_allowed_traffic_works(tb, "before the load");
    std::thread::sleep(Duration::from_millis(300));
    tb.engine_usage()
}

/// An allowed HTTPS fetch, an allowed DNS answer and a UDP echo all work.
fn assert_allowed_traffic_works(tb: &Testbed, when: &str) {
    let f = tb.curl_resolved("https", NORMAL_NAME, Family::V4.normal(), "/", Family::V4);
    assert_eq!(f.http_code, 200, "allowed HTTPS {when}: {}", f.run);
    let d = tb.dig(&[NORMAL_NAME, "A"]);
    assert_eq!(d.addresses("A"), vec![Family::V4.normal().to_string()], "allowed DNS {when}: {}", d.run);
    let u = tb.udp_echo(Family::V6.normal(), ECHO_PORT);
    assert_eq!(u.result, "echo", "UDP echo {when}: {:?}", u.raw);
}

/// Waits until the engine's file descriptors are back to `baseline` (every flow's upstream socket closed);
/// panics with the figures if not. Returns the usage then. Memory is checked separately: glibc keeps freed TCP
/// buffers in its heap, so RSS after a TCP load says little about leaks (see `RELIABILITY.md`).
fn assert_back_to_baseline(tb: &Testbed, baseline: Usage, what: &str) -> Usage {
    let mut now = tb.engine_usage();
    // 75 s: UDP flows close after 60 s idle.
    let settled = eventually(Duration::from_secs(75), || {
        now = tb.engine_usage();
        now.fds <= baseline.fds + FD_SLACK
    });
    if !settled {
        let ss = run(tb.phone_command("ss", &["-tuanp"]), Duration::from_secs(10));
        panic!("after {what} the engine kept file descriptors open: {now:?}, baseline {baseline:?}\n{}", ss.stdout);
    }
    std::thread::sleep(Duration::from_millis(500));
    tb.engine_usage()
}

/// Memory after a load without TCP buffers (DNS, UDP) must be back near the baseline.
fn assert_rss_near(baseline: Usage, now: Usage, what: &str) {
    assert!(
        now.rss_kib <= baseline.rss_kib + RSS_SLACK_KIB,
        "after {what} the engine kept memory: {now:?}, baseline {baseline:?}"
    );
}

/// The most memory the TCP flow cap allows: every flow's smoltcp buffers full (256 KiB to the phone, 48 segments
/// of 1460 bytes from it: `EngineConfig::tcp_buffer_size`, `tcp_receive_window_segments`), plus 128 MiB.
const RSS_CAP_KIB: u64 = MAX_TCP_FLOWS * (256 + 48 * 1460 / 1024) + 128 * 1024;
/// The peak memory of the 10k-connection flood, whose flows echo one line each (their buffers stay nearly
/// empty): 43.5 and 44.2 MiB measured (`RELIABILITY.md`), about twice that allowed. The flow cap's bound
/// ([`RSS_CAP_KIB`], ~1.4 GiB) would let a per-flow leak of 300 KiB pass.
const TCP_FLOOD_PEAK_RSS_KIB: u64 = 96 * 1024;

fn report(what: &str, fields: &[(&str, String)]) {
    let text: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("FIGURES {what}: {}", text.join(" "));
}

// -------------------------------------------------------------------------------------------------------------
// Floods.

/// 10,000 concurrent TCP connections from one app: up to the flow cap are accepted, echo and stay usable for the
/// whole hold; every one past the cap is refused (RST), none hangs; DNS and UDP keep working meanwhile; after the
/// connections close, fds and memory come back down and new connections work again.
#[test]
fn flood_10k_concurrent_tcp_connections() {
    let mut tb = start();
    let fam = Family::V4;
    let _hold = tb.start_hold_server(&[fam.normal()]);
    let baseline = warm_baseline(&tb);
    let n: u64 = 10_000;
    let mut after_rounds = Vec::new();
    let mut refused_total = 0;
    for round in 1..=2 {
        let sampler = Sampler::start(tb.engine_pid().expect("engine"));
        let mut flood =
            tb.flood_background("tcp-flood", &["tcp", fam.normal(), &HOLD_PORT.to_string(), &n.to_string(), "5"]);
        flood.wait_for_log("\"phase\": \"holding\"", Duration::from_secs(180));
        let holding: Value =
            serde_json::from_str(flood.log_text().lines().find(|l| l.contains("\"holding\"")).expect("holding line"))
                .expect("JSON");
        // While the cap is saturated: DNS (not a TCP flow) and UDP flows still work.
        let d = tb.dig(&[NORMAL_NAME, "A"]);
        assert_eq!(d.status.as_deref(), Some("NOERROR"), "DNS during the TCP flood: {}", d.run);
        let u = tb.udp_echo(fam.normal(), ECHO_PORT);
        assert_eq!(u.result, "echo", "UDP during the TCP flood: {:?}", u.raw);
        let during = tb.engine_usage();
        flood.wait_for_log("\"phase\": \"done\"", Duration::from_secs(120));
        let done: Value =
            serde_json::from_str(flood.log_text().lines().find(|l| l.contains("\"done\"")).expect("done line"))
                .expect("JSON");
        let (peak, samples) = sampler.finish();
        tb.assert_engine_alive("during the TCP flood");
        let after = assert_back_to_baseline(&tb, baseline, "the TCP flood");
        assert_allowed_traffic_works(&tb, "after the TCP flood");
        report(
            &format!("tcp-10k round {round}"),
            &[
                ("attempts", n.to_string()),
                ("holding", holding.to_string()),
                ("done", done.to_string()),
                ("baseline", format!("{baseline:?}")),
                ("during", format!("{during:?}")),
                ("peak", format!("{peak:?}")),
                ("samples", samples.to_string()),
                ("after", format!("{after:?}")),
            ],
        );
        let echoed = num(&holding, "echoed");
        // Refused with RST, or (a few) accepted and closed at once: answered either way, never left hanging.
        let refused = num(&holding, "refused") + num(&holding, "reset") + num(&holding, "eof");
        refused_total += refused;
        assert_eq!(num(&holding, "timeout"), 0, "connections left hanging: {holding}");
        assert_eq!(echoed + refused, n, "every attempt is either served or refused: {holding}");
        assert!(echoed <= MAX_TCP_FLOWS, "more flows than the cap: {holding}");
        assert!(echoed >= MAX_TCP_FLOWS / 2, "the engine should carry thousands of flows: {holding}");
        assert_eq!(num(&done, "alive_after_hold"), echoed, "held connections must keep working: {done}");
        assert!(peak.fds <= baseline.fds + MAX_TCP_FLOWS as usize + 16, "fds beyond the flow cap: {peak:?}");
        assert!(peak.rss_kib <= TCP_FLOOD_PEAK_RSS_KIB, "memory beyond the measured peak (44 MiB) x2: {peak:?}");
        after_rounds.push(after);
    }
    // No leak: a second identical flood leaves no more memory behind than the first (freed buffers are reused).
    assert!(
        after_rounds[1].rss_kib <= after_rounds[0].rss_kib + 64 * 1024,
        "memory grows flood after flood: {after_rounds:?}"
    );
    let events = finish(&mut tb);
    // Identical refusals are folded into summary events standing for `repeats` of them.
    let limited: u64 =
        events.iter().filter(|e| e["reason"] == "flow_limit").map(|e| e["repeats"].as_u64().unwrap_or(1)).sum();
    assert!(limited >= refused_total.min(4000), "refusals past the cap are reported: {limited} of {refused_total}");
}

/// A SYN flood (raw SYNs from random ports, never completing) at an allowed server, at a black-holed address
/// (the upstream connect hangs until the connect timeout) and at a blocked range: the engine stays up, DNS keeps
/// working during the flood, flows stay under the cap, the blocked range sees nothing, and once the connect
/// timeout has passed, new connections work again and fds are back to baseline.
///
/// (Under load this once left ~40 upstream sockets open: a flow dialled before its handshake completed had no
/// deadline once connected. Such flows now end after `HANDSHAKE_TIMEOUT`; engine test
/// `dialled_flow_whose_phone_never_completes_the_handshake_ends`.)
#[test]
fn flood_syn() {
    let mut tb = start();
    let _hold = tb.start_hold_server(&[Family::V4.normal(), Family::V6.normal()]);
    let baseline = warm_baseline(&tb);
    let sampler = Sampler::start(tb.engine_pid().expect("engine"));
    let port = HOLD_PORT.to_string();
    let mut sent = 0;
    for (src, dst, n) in [
        (PHONE_TUN_V4, Family::V4.normal(), 20_000),
        (PHONE_TUN_V6, Family::V6.normal(), 10_000),
        (PHONE_TUN_V4, "198.18.1.99", 10_000),
        (PHONE_TUN_V4, Family::V4.cidr(), 10_000),
    ] {
        let r = tb.flood(&["syn", src, dst, &port, &n.to_string()], Duration::from_secs(120));
        sent += num(&r, "sent");
        // A client retries: under a flood at full speed the tun queue may drop a query, but DNS must not stop.
        let d = tb.dig(&["+tries=3", NORMAL_NAME, "AAAA"]);
        assert_eq!(d.status.as_deref(), Some("NOERROR"), "DNS during the SYN flood: {}", d.run);
    }
    tb.assert_engine_alive("during the SYN flood");
    let during = tb.engine_usage();
    // Flows waiting on the black hole expire after the connect timeout (15 s); then TCP works again.
    let recovered = eventually(Duration::from_secs(60), || {
        tb.curl_resolved("http", NORMAL_NAME, Family::V4.normal(), "/", Family::V4).http_code == 200
    });
    let (peak, _) = sampler.finish();
    assert!(recovered, "new TCP connections never worked again after the SYN flood");
    assert!(peak.rss_kib <= RSS_CAP_KIB, "memory beyond what the flow cap allows: {peak:?}");
    let after = assert_back_to_baseline(&tb, baseline, "the SYN flood");
    report(
        "syn-flood",
        &[
            ("sent", sent.to_string()),
            ("baseline", format!("{baseline:?}")),
            ("during", format!("{during:?}")),
            ("peak", format!("{peak:?}")),
            ("after", format!("{after:?}")),
        ],
    );
    assert!(sent >= 45_000, "the flood did not go out: {sent}");
    assert!(peak.fds <= baseline.fds + MAX_TCP_FLOWS as usize + 16, "fds beyond the flow cap: {peak:?}");
    finish(&mut tb);
}

/// 50,000 DNS queries (allowed, blocked, CNAME-cloaked), 256 outstanding at a time: every one is answered,
/// blocked names always with NXDOMAIN; the engine stays up and comes back to baseline.
#[test]
fn flood_50k_dns_queries() {
    let mut tb = start();
    let baseline = warm_baseline(&tb);
    let sampler = Sampler::start(tb.engine_pid().expect("engine"));
    let n: u64 = 50_000;
    let r = tb.flood(
        &[
            "dns",
            OUTSIDE_RESOLVER_V4,
            &n.to_string(),
            "256",
            NORMAL_NAME,
            TELEMETRY_NAME,
            SHARED_GOOD_NAME,
            CLOAKED_NAME,
            SHARED_BAD_NAME,
            CIDR_NAME,
        ],
        Duration::from_secs(400),
    );
    let (peak, _) = sampler.finish();
    tb.assert_engine_alive("during the DNS flood");
    let after = assert_back_to_baseline(&tb, baseline, "the DNS flood");
    assert_rss_near(baseline, after, "the DNS flood");
    assert_allowed_traffic_works(&tb, "after the DNS flood");
    report(
        "dns-50k",
        &[
            ("result", r.to_string()),
            ("baseline", format!("{baseline:?}")),
            ("peak", format!("{peak:?}")),
            ("after", format!("{after:?}")),
        ],
    );
    assert_eq!(num(&r, "sent"), n, "{r}");
    // UDP may drop a datagram under load, but the engine must not: allow one in a thousand.
    assert!(num(&r, "lost") <= n / 1000, "queries without an answer: {r}");
    for blocked in [TELEMETRY_NAME, SHARED_BAD_NAME] {
        let answers = &r["by_name"][blocked];
        let all: u64 = answers.as_object().map(|o| o.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
        assert!(all > 0 && answers["3"].as_u64() == Some(all), "{blocked} must always get NXDOMAIN: {answers}");
    }
    let normal = &r["by_name"][NORMAL_NAME];
    assert!(normal["0"].as_u64().unwrap_or(0) >= n / 6 * 99 / 100, "allowed name mostly NOERROR: {normal}");
    finish(&mut tb);
}

/// A UDP flood of small packets: 200,000 16-byte datagrams over 64 flows, then 6,000 one-datagram flows (past the
/// UDP flow cap). The engine stays up, refuses flows past the cap with ICMP (never silently), DNS keeps working,
/// and fds come back down once the flows idle out.
///
/// The kernel's tun queue (500 packets) drops part of a burst before the engine sees it, more so on a loaded
/// machine (this once made the test depend on load: 3,669 echoed + 692 refused of 6,000). So the client retries
/// each unanswered flow once, as real clients do, and the bounds are on flows answered, not datagrams.
#[test]
fn flood_udp_small_packets() {
    let mut tb = start();
    let baseline = warm_baseline(&tb);
    let sampler = Sampler::start(tb.engine_pid().expect("engine"));
    let echo = ECHO_PORT.to_string();
    let many = tb.flood(&["udp", Family::V4.normal(), &echo, "200000", "64", "16"], Duration::from_secs(180));
    tb.assert_engine_alive("during the UDP packet flood");
    // Every flow is served (one retry each); most datagrams come back (163,767 of 200,000 measured: the kernel's
    // tun queue drops the rest under a burst). A quarter is the floor.
    assert_eq!(num(&many, "flows_echoed"), 64, "every one of the 64 flows is served: {many}");
    assert!(num(&many, "echoed") >= 200_000 / 4, "too few datagrams echoed: {many}");
    let flows = tb.flood(&["udp", Family::V6.normal(), &echo, "6000", "6000", "16"], Duration::from_secs(180));
    tb.assert_engine_alive("during the UDP flow flood");
    let d = tb.dig(&["+tries=3", NORMAL_NAME, "A"]);
    assert_eq!(d.status.as_deref(), Some("NOERROR"), "DNS during the UDP flow flood: {}", d.run);
    let (peak, _) = sampler.finish();
    // UDP flows close after 60 s idle; then every upstream socket is gone and memory is back.
    std::thread::sleep(Duration::from_secs(62));
    let after = assert_back_to_baseline(&tb, baseline, "the UDP flood");
    assert_rss_near(baseline, after, "the UDP flood");
    let u = tb.udp_echo(Family::V4.normal(), ECHO_PORT);
    assert_eq!(u.result, "echo", "UDP after the flood: {:?}", u.raw);
    report(
        "udp-flood",
        &[
            ("packets", many.to_string()),
            ("flows", flows.to_string()),
            ("baseline", format!("{baseline:?}")),
            ("peak", format!("{peak:?}")),
            ("after", format!("{after:?}")),
        ],
    );
    // Flows past the cap are refused with ICMP, not dropped silently; every flow is answered one way or the
    // other (allowing 2 % lost twice by the kernel's queues under load).
    assert!(num(&flows, "flows_refused") > 0, "flows past the cap must be refused: {flows}");
    assert!(num(&flows, "flows_echoed") <= MAX_UDP_FLOWS, "more flows than the cap: {flows}");
    // Up to the cap, flows are served: the cap minus the 64 flows still fresh from the first flood (4,032
    // measured), less the silent ones allowed below.
    let served_floor = MAX_UDP_FLOWS - 64 - 6000 / 50;
    assert!(num(&flows, "flows_echoed") >= served_floor, "flows under the cap must be served: {flows}");
    assert!(num(&flows, "flows_silent") <= 6000 / 50, "flows neither served nor refused: {flows}");
    assert!(peak.fds <= baseline.fds + MAX_UDP_FLOWS as usize + 16, "fds beyond the flow cap: {peak:?}");
    finish(&mut tb);
}

/// Flow caps with eviction (`--max-tcp-flows 20 --max-udp-flows 20`): one app fills both flow tables and goes
/// quiet. New flows are refused at once (never left hanging) while the quiet ones are fresh; once they have been
/// quiet long enough (15 s UDP, 60 s TCP) the longest-quiet flow is closed to make room, a `flow_evicted` event
/// says so, and the new flow is served. The other held connections are untouched.
#[test]
fn idle_flows_make_room_at_the_caps() {
    let options = Options::engine().engine_arg("--max-tcp-flows").engine_arg("20");
    let mut tb = Testbed::start(options.engine_arg("--max-udp-flows").engine_arg("20"));
    let _hold = tb.start_hold_server(&[Family::V4.normal()]);
    let port = HOLD_PORT.to_string();
    let mut victims = tb.flood_background("victims", &["tcp", Family::V4.normal(), &port, "20", "75"]);
    victims.wait_for_log("\"phase\": \"holding\"", Duration::from_secs(30));
    let held_since = Instant::now();
    let u = tb.flood(&["udp", Family::V4.normal(), &ECHO_PORT.to_string(), "20", "20", "16"], Duration::from_secs(60));
    assert_eq!(num(&u, "flows_echoed"), 20, "{u}");
    // Both tables are full of fresh flows: refused at once.
    let udp = tb.udp_echo(Family::V6.normal(), ECHO_PORT);
    assert_eq!(udp.result, "refused", "UDP past a full table of fresh flows: {:?}", udp.raw);
    let tcp = tb.tcp_banner(Family::V6.normal(), BANNER_PORT);
    assert!(matches!(tcp.result.as_str(), "refused" | "reset"), "TCP past a full table: {:?}", tcp.raw);
    // The UDP flows have been quiet for 15 s: the oldest makes room.
    std::thread::sleep(Duration::from_secs(16));
    let udp = tb.udp_echo(Family::V6.normal(), ECHO_PORT);
    assert_eq!(udp.result, "echo", "UDP once quiet flows can make room: {:?}", udp.raw);
    // The held TCP connections have been quiet for 60 s: the oldest makes room for an HTTPS fetch.
    std::thread::sleep(Duration::from_secs(62).saturating_sub(held_since.elapsed()));
    let f = tb.curl_resolved("https", NORMAL_NAME, Family::V4.normal(), "/", Family::V4);
    assert_eq!(f.http_code, 200, "HTTPS once quiet flows can make room: {}", f.run);
    victims.wait_for_log("\"phase\": \"done\"", Duration::from_secs(60));
    let held = victims.log_text();
    assert!(held.contains("\"alive_after_hold\": 19"), "exactly one held connection made room: {held}");
    let events = finish(&mut tb);
    assert_eq!(failures(&events, "flow_evicted", HOLD_PORT).len(), 1, "{}", pretty(&events.iter().collect::<Vec<_>>()));
    assert_eq!(failures(&events, "flow_evicted", ECHO_PORT).len(), 1, "{}", pretty(&events.iter().collect::<Vec<_>>()));
    let limited: u64 =
        events.iter().filter(|e| e["reason"] == "flow_limit").map(|e| e["repeats"].as_u64().unwrap_or(1)).sum();
    assert_eq!(limited, 2, "the two refusals while the flows were fresh");
}

/// A mixed soak: HTTPS downloads, DNS, UDP, blocked attempts and connection churn in a loop for
/// `HUSHWALL_SOAK_SECS` (default 20 s), sampling the engine. Nothing fails, nothing leaks, memory stays flat.
#[test]
fn soak_mixed() {
    let secs: u64 = std::env::var("HUSHWALL_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut tb = start();
    let _hold = tb.start_hold_server(&[Family::V4.normal(), Family::V6.normal()]);
    let baseline = warm_baseline(&tb);
    let sampler = Sampler::start(tb.engine_pid().expect("engine"));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut rounds = 0u64;
    let mut dns_retries = 0u64;
    let mut samples: Vec<Usage> = Vec::new();
    let port = HOLD_PORT.to_string();
    while Instant::now() < end {
        rounds += 1;
        let fam = if rounds % 2 == 0 { Family::V4 } else { Family::V6 };
        // Churn in the background while the foreground checks correctness.
        let mut churn = tb.flood_background("churn", &["tcp", fam.normal(), &port, "300", "0"]);
        let big = tb.curl_resolved("https", NORMAL_NAME, fam.normal(), "/big", fam);
        assert_eq!(big.http_code, 200, "round {rounds}: {}", big.run);
        // One try, then (counted) a second: while 300 connections churn beside it, the kernel's tun queue may drop
        // the query datagram before the engine sees it, and resolvers retry. Retries must stay rare (below).
        let mut dig_retrying = |args: &[&str], answered: &dyn Fn(&Dig) -> bool| {
            let first = tb.dig(args);
            if answered(&first) {
                return first;
            }
            dns_retries += 1;
            tb.dig(args)
        };
        let normal = [fam.normal().to_string()];
        let d = dig_retrying(&[NORMAL_NAME, fam.rtype()], &|d: &Dig| d.addresses(fam.rtype()) == normal);
        assert_eq!(d.addresses(fam.rtype()), normal, "round {rounds}: {}", d.run);
        let b = dig_retrying(&[TELEMETRY_NAME, fam.rtype()], &|d: &Dig| d.status.as_deref() == Some("NXDOMAIN"));
        assert_eq!(b.status.as_deref(), Some("NXDOMAIN"), "round {rounds}: {}", b.run);
        let blocked = tb.curl_resolved("https", TELEMETRY_NAME, fam.telemetry(), "/", fam);
        assert_eq!(blocked.http_code, 0, "round {rounds}: blocked fetch got an answer: {}", blocked.run);
        let u = tb.udp_echo(fam.normal(), ECHO_PORT);
        assert_eq!(u.result, "echo", "round {rounds}: {:?}", u.raw);
        let burst =
            tb.flood(&["udp", fam.normal(), &ECHO_PORT.to_string(), "2000", "8", "64"], Duration::from_secs(60));
        assert_eq!(num(&burst, "flows_echoed"), 8, "round {rounds}: every burst flow is served: {burst}");
        assert!(num(&burst, "echoed") >= 2000 / 2, "round {rounds}: most of the burst echoed: {burst}");
        // The churn is 300 connections, far under the cap: every one is served and none hangs.
        churn.wait_for_log("\"phase\": \"done\"", Duration::from_secs(60));
        let text = churn.log_text();
        let done: Value =
            serde_json::from_str(text.lines().find(|l| l.contains("\"done\"")).expect("done line")).expect("JSON");
        assert_eq!(num(&done, "echoed"), 300, "round {rounds}: churn connections not served: {done}");
        assert_eq!(num(&done, "timeout") + num(&done, "error"), 0, "round {rounds}: churn: {done}");
        let status = churn.stop("TERM", Duration::from_secs(10));
        assert!(status.is_some_and(|s| s.success()), "round {rounds}: churn exit {status:?}: {text}");
        tb.assert_engine_alive(&format!("in soak round {rounds}"));
        samples.push(tb.engine_usage());
    }
    let (peak, n) = sampler.finish();
    let after = assert_back_to_baseline(&tb, baseline, "the soak");
    report(
        "soak",
        &[
            ("secs", secs.to_string()),
            ("rounds", rounds.to_string()),
            ("dns_retries", dns_retries.to_string()),
            ("baseline", format!("{baseline:?}")),
            ("peak", format!("{peak:?}")),
            ("samples", n.to_string()),
            ("after", format!("{after:?}")),
            ("per-round-rss-kib", format!("{:?}", samples.iter().map(|u| u.rss_kib).collect::<Vec<_>>())),
        ],
    );
    assert!(rounds >= 1);
    assert!(dns_retries <= 1 + rounds * 2 / 20, "{dns_retries} DNS retries in {rounds} rounds (2 queries each)");
    // No growth over the soak: the later half of the rounds uses no more memory than the earlier half (plus
    // slack); with a single round, that round against the warm baseline.
    let (first, second) = samples.split_at(samples.len() / 2);
    let early = first.iter().map(|u| u.rss_kib).max().unwrap_or(baseline.rss_kib);
    let late = second.iter().map(|u| u.rss_kib).max().expect("at least one round");
    assert!(late <= early + 64 * 1024, "memory grows during the soak: early {early} KiB, late {late} KiB");
    assert!(peak.rss_kib <= RSS_CAP_KIB, "{peak:?}");
    finish(&mut tb);
}

// -------------------------------------------------------------------------------------------------------------
// Faults.

/// The upstream resolver goes silent (its answers are black-holed) and then down (nothing listens, ICMP port
/// unreachable): clients get SERVFAIL, not a hang, and blocked names still get NXDOMAIN at once.
#[test]
fn dns_upstream_silent_or_down_gives_servfail() {
    let mut tb = start();
    // Silent: the internet namespace drops every DNS answer it would send.
    tb.ip_internet(&["rule", "add", "ipproto", "udp", "sport", "53", "prohibit", "priority", "10"]);
    let d = tb.dig(&["+time=8", NORMAL_NAME, "A"]);
    assert_eq!(d.status.as_deref(), Some("SERVFAIL"), "silent upstream: {}", d.run);
    let b = tb.dig(&[TELEMETRY_NAME, "A"]);
    assert_eq!(b.status.as_deref(), Some("NXDOMAIN"), "blocked names need no upstream: {}", b.run);
    tb.ip_internet(&["rule", "del", "priority", "10"]);
    // Down: nothing listens on the upstream port (the packets are rejected with ICMP port unreachable).
    let r = run(tb.internet_command("sh", &["-c", "kill $(pidof dnsmasq)"]), Duration::from_secs(10));
    assert!(r.success(), "{r}");
    let start = Instant::now();
    let d = tb.dig(&["+time=8", SHARED_GOOD_NAME, "AAAA"]);
    assert_eq!(d.status.as_deref(), Some("SERVFAIL"), "upstream down: {}", d.run);
    report("dns-down", &[("servfail_after_ms", start.elapsed().as_millis().to_string())]);
    tb.assert_engine_alive("with the DNS upstream down");
    // Each SERVFAIL was reported as an error event naming the query and what went wrong.
    let events = finish(&mut tb);
    let failed = failures(&events, "dns_failed", 53);
    let about = |name: &str| failed.iter().filter(|e| e["host"] == name).map(|e| e["error"].to_string()).collect();
    let silent: Vec<String> = about(NORMAL_NAME);
    assert!(silent.iter().any(|e| e.contains("no answer from")), "silent upstream: {}", pretty(&failed));
    let down: Vec<String> = about(SHARED_GOOD_NAME);
    assert!(!down.is_empty(), "upstream down: {}", pretty(&failed));
}

/// Upstream TCP faults: a port nothing listens on (RST to the connect), a server that resets, an unreachable
/// network. The phone's connection is refused each time (no hang), and the engine keeps working.
#[test]
fn upstream_refuses_resets_or_is_unreachable() {
    let mut tb = start();
    // Refused: nothing listens on port 81 (server speaks first would be dialed at once; port 81 is sniffed).
    let refused = tb.tcp_banner(Family::V4.normal(), 81);
    assert!(matches!(refused.result.as_str(), "refused" | "reset" | "eof"), "port 81: {:?}", refused.raw);
    let banner_closed = tb.tcp_banner(Family::V6.normal(), 7778);
    assert!(matches!(banner_closed.result.as_str(), "refused" | "reset" | "eof"), "{:?}", banner_closed.raw);
    // Reset mid-stream: the hold server dies under an established connection.
    let hold = tb.start_hold_server(&[Family::V4.normal()]);
    let mut flood = tb.flood_background("victims", &["tcp", Family::V4.normal(), &HOLD_PORT.to_string(), "20", "3"]);
    flood.wait_for_log("\"phase\": \"holding\"", Duration::from_secs(30));
    let r = run(tb.internet_command("sh", &["-c", &format!("kill -9 {}", hold.child.id())]), Duration::from_secs(5));
    assert!(r.success(), "{r}");
    flood.wait_for_log("\"phase\": \"done\"", Duration::from_secs(30));
    assert!(flood.log_text().contains("\"alive_after_hold\": 0"), "{}", flood.log_text());
    // Unreachable: the protected route for a range is made unreachable (connect fails with ENETUNREACH).
    tb.ip_phone(&["route", "add", "unreachable", "198.18.1.0/24", "table", PROTECT_TABLE]);
    let t = tb.tcp_banner(Family::V4.normal(), BANNER_PORT);
    assert!(matches!(t.result.as_str(), "refused" | "reset" | "eof"), "unreachable network: {:?}", t.raw);
    let u = tb.udp_echo(Family::V4.normal(), ECHO_PORT);
    assert!(matches!(u.result.as_str(), "refused" | "timeout"), "unreachable UDP: {:?}", u.raw);
    tb.ip_phone(&["route", "del", "unreachable", "198.18.1.0/24", "table", PROTECT_TABLE]);
    tb.assert_engine_alive("after upstream faults");
    assert_allowed_traffic_works(&tb, "after upstream faults");
    // Every failure was reported as an error event saying what happened.
    let events = finish(&mut tb);
    let refused = failures(&events, "connect_failed", 81);
    assert!(refused.iter().any(|e| e["error"].to_string().contains("refused")), "port 81: {}", pretty(&refused));
    let unreachable = failures(&events, "connect_failed", BANNER_PORT);
    assert!(
        unreachable
            .iter()
            .any(|e| ["No route to host", "unreachable"].iter().any(|m| e["error"].to_string().contains(m))),
        "unreachable network: {}",
        pretty(&unreachable)
    );
    assert!(
        !failures(&events, "udp_failed", ECHO_PORT).is_empty(),
        "unreachable UDP: {}",
        pretty(&events.iter().collect::<Vec<_>>())
    );
}

/// The engine runs with `ulimit -n 64`: connections past what its fds allow are refused (and reported), it stays
/// up, and once they close everything works again.
///
/// Recovery is checked once the engine's fds are back to its baseline: the UDP flows that filled the table idle
/// out together, so "one UDP echo works" can come a moment before a TCP connection finds a free descriptor (this
/// race once failed the test under load).
#[test]
fn fd_exhaustion() {
    let dir = TempDir::create();
    let wrapper = dir.path.join("hushwall-ulimit.sh");
    std::fs::write(&wrapper, format!("#!/bin/sh\nulimit -n 64 || exit 99\nexec {} \"$@\"\n", hushwall_bin().display()))
        .expect("write wrapper");
    let r =
        run(hushwall_tests::proc::command("chmod", &["+x", wrapper.to_str().expect("utf-8")]), Duration::from_secs(5));
    assert!(r.success(), "{r}");
    let engine = EngineConfig { bin: wrapper, ..EngineConfig::from_env() };
    let mut tb = Testbed::start(Options { engine: Some(engine), ..Options::default() });
    let _hold = tb.start_hold_server(&[Family::V4.normal()]);
    let baseline = warm_baseline(&tb);
    let r = tb.flood(&["tcp", Family::V4.normal(), &HOLD_PORT.to_string(), "200", "2"], Duration::from_secs(120));
    tb.assert_engine_alive("out of file descriptors");
    let u =
        tb.flood(&["udp", Family::V4.normal(), &ECHO_PORT.to_string(), "200", "200", "16"], Duration::from_secs(60));
    tb.assert_engine_alive("out of file descriptors (UDP)");
    report("fd-exhaustion", &[("tcp", r.to_string()), ("udp", u.to_string())]);
    assert!(num(&r, "echoed") >= 10 && num(&r, "echoed") < 64, "some flows fit, the rest cannot: {r}");
    assert_eq!(num(&r, "timeout"), 0, "connections past the fd limit must be refused, not left hanging: {r}");
    assert_eq!(num(&r, "alive_after_hold"), num(&r, "echoed"), "{r}");
    // At most the limit, plus a descriptor or two the engine may inherit above it from its parent.
    let usage = tb.engine_usage();
    assert!(usage.fds <= 64 + 2, "{usage:?}");
    assert_back_to_baseline(&tb, baseline, "fd exhaustion");
    assert_allowed_traffic_works(&tb, "after fd exhaustion");
    // The refusals were reported: sockets the engine could not open are errors, with the reason.
    let events = finish(&mut tb);
    let tcp = failures(&events, "connect_failed", HOLD_PORT);
    let udp = failures(&events, "udp_failed", ECHO_PORT);
    assert!(!tcp.is_empty() && !udp.is_empty(), "TCP {} / UDP {}", tcp.len(), udp.len());
    assert!(tcp.iter().chain(&udp).all(|e| e["error"].to_string().contains("Too many open files")), "{}", pretty(&udp));
}

/// The tun device is taken down and up under the engine (what a network change can do), then deleted (the fd
/// turns bad): the engine survives the first and exits cleanly with an error message on the second, no panic.
#[test]
fn tun_down_up_then_deleted_under_the_engine() {
    let mut tb = start();
    tb.ip_phone(&["link", "set", TUN, "down"]);
    std::thread::sleep(Duration::from_millis(500));
    tb.assert_engine_alive("with its tun down");
    tb.ip_phone(&["link", "set", TUN, "up"]);
    // Taking a link down flushes its IPv6 addresses and both families' routes: put them back, as the VPN does.
    tb.ip_phone(&["-6", "addr", "replace", &format!("{PHONE_TUN_V6}/128"), "dev", TUN, "nodad"]);
    tb.ip_phone(&["route", "replace", "default", "dev", TUN, "src", PHONE_TUN_V4]);
    tb.ip_phone(&["-6", "route", "replace", "default", "dev", TUN, "src", PHONE_TUN_V6]);
    assert!(
        eventually(Duration::from_secs(10), || tb.dig(&[NORMAL_NAME, "A"]).status.as_deref() == Some("NOERROR")),
        "DNS did not work again after tun down/up"
    );
    assert_allowed_traffic_works(&tb, "after tun down/up");
    tb.ip_phone(&["link", "del", TUN]);
    // The tun is gone from the engine's point of view: it may keep waiting (a deleted tun's fd just never becomes
    // readable) or exit with an error, but it must not crash. Either way SIGTERM then ends it with status 0 or 1.
    std::thread::sleep(Duration::from_millis(500));
    let status = tb.stop_engine("TERM");
    let log = tb.engine_log();
    assert!(!log.contains("panicked"), "the engine panicked:\n{log}");
    assert!(status.code().is_some(), "the engine died of a signal ({status}):\n{log}");
    report("tun-deleted", &[("status", status.to_string()), ("log", log.lines().last().unwrap_or("").to_string())]);
    assert!(tb.forbidden_packets().is_empty());
}

/// The engine process started and stopped 100 times on the same tun name: every start gets ready, every stop
/// exits 0, nothing is left behind (no tun device, no process), and traffic works after the last start.
#[test]
fn engine_stopped_and_started_100_times() {
    let ns = Netns::create();
    let dir = TempDir::create();
    let list = dir.path.join("list.txt");
    std::fs::write(&list, TEST_BLOCKLIST).expect("write list");
    let rounds = 100;
    let tun_addr = format!("{PHONE_TUN_V4}/32");
    let resolver = format!("@{OUTSIDE_RESOLVER_V4}");
    let started = Instant::now();
    for i in 0..rounds {
        let mut c = ns.command(hushwall_bin());
        c.args(["run", "--tun", TUN, "--profile", "none", "--blocklist"]).arg(&list);
        c.args(["--dns-upstream", "127.0.0.1:53"]);
        let log = dir.path.join("engine.log");
        let mut b = hushwall_tests::proc::Background::spawn("engine", c, &log);
        b.wait_for_log(&format!("hushwall: ready on {TUN}"), Duration::from_secs(10));
        // Every few rounds, feed it a packet: bring the tun up, route into it and send a DNS query for a blocked
        // name, which the engine answers itself (NXDOMAIN): proof that this start reads and writes its tun.
        if i % 10 == 0 {
            for args in [
                vec!["link", "set", TUN, "up"],
                vec!["addr", "add", &tun_addr, "dev", TUN],
                vec!["route", "add", "default", "dev", TUN],
            ] {
                let mut ip = ns.command("ip");
                ip.args(&args);
                let r = run(ip, Duration::from_secs(5));
                assert!(r.success(), "round {i}: {r}");
            }
            let mut dig = ns.command("dig");
            dig.args(["+time=2", "+tries=3", "+nocmd", "+noall", "+comments", &resolver, TELEMETRY_NAME, "A"]);
            let d = parse_dig(run(dig, Duration::from_secs(15)));
            assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "round {i}: the engine did not answer: {}", d.run);
        }
        let sig = if i % 2 == 0 { "TERM" } else { "INT" };
        let status = b.stop(sig, Duration::from_secs(5));
        assert!(status.is_some_and(|s| s.success()), "round {i}: exit {status:?} after SIG{sig}:\n{}", b.log_text());
        let mut links = ns.command("ip");
        links.args(["-o", "link"]);
        let links = run(links, Duration::from_secs(5));
        assert!(!links.stdout.contains(TUN), "round {i}: the tun outlived the engine: {links}");
    }
    let pids = run(hushwall_tests::proc::command("ip", &["netns", "pids", &ns.name]), Duration::from_secs(5));
    assert!(pids.stdout.trim().is_empty(), "processes left in the namespace: {pids}");
    report("restart-100", &[("rounds", rounds.to_string()), ("secs", started.elapsed().as_secs().to_string())]);
}

/// Bad input to the command line and to list files: a clear error on stderr, a non-zero exit, never "ready".
#[test]
fn bad_lists_and_arguments_are_refused_clearly() {
    let dir = TempDir::create();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("binary.txt", vec![0xff, 0xfe, 0x00, 0x01, b'\n', 0x80]),
        ("bad-cidr.txt", b"198.18.0.0/99\n".to_vec()),
        ("bad-v6.txt", b"fd00:6877:::/48\n".to_vec()),
        ("junk.txt", b"||\n".to_vec()),
        ("long.txt", [b"a".repeat(300_000), b".example.org\n".to_vec()].concat()),
    ];
    let ns = Netns::create();
    for (name, content) in &cases {
        let path = dir.path.join(name);
        std::fs::write(&path, content).expect("write list");
        let r = expect_failure(&ns, &["run", "--tun", TUN, "--profile", "none", "--blocklist", path.to_str().unwrap()]);
        assert!(r.stderr.contains(name), "{name}: the error must name the file: {r}");
        let c = expect_failure(&ns, &["check", "--profile", "none", "--blocklist", path.to_str().unwrap(), "a.org"]);
        assert!(c.stderr.contains(name), "{name}: check must name the file: {c}");
    }
    let dir_as_list = dir.path.to_str().unwrap().to_string();
    for args in [
        vec!["run", "--tun", TUN, "--blocklist", &dir_as_list],
        vec!["run", "--tun", TUN, "--mtu", "100"],
        vec!["run", "--tun", TUN, "--mtu", "70000"],
        vec!["run", "--tun", TUN, "--fwmark", "0xZZ"],
        vec!["run", "--tun-fd", "999"],
        vec!["run", "--tun-fd", "-1"],
        vec!["run", "--tun", TUN, "--tun-fd", "3"],
        vec!["run", "--tun", "this-name-is-way-too-long-for-linux"],
        vec!["run", "--tun", TUN, "--events", "/nonexistent-dir/events.jsonl"],
        vec!["run", "--tun", TUN, "--dns-upstream", "198.18.0.1"],
        vec!["check"],
    ] {
        expect_failure(&ns, &args);
    }
}

fn expect_failure(ns: &Netns, args: &[&str]) -> Run {
    let mut c = ns.command(hushwall_bin());
    c.args(args);
    let r = run(c, Duration::from_secs(10));
    assert!(!r.timed_out(), "hushwall kept running with bad input {args:?}: {r}");
    assert!(!r.success(), "hushwall accepted bad input {args:?}: {r}");
    assert!(!r.stderr.contains("hushwall: ready"), "{r}");
    assert!(!r.stderr.contains("panicked"), "hushwall panicked on {args:?}: {r}");
    assert!(!r.stderr.trim().is_empty(), "the failure should be explained on stderr ({args:?}): {r}");
    r
}

/// `usage` reads this very process (a check of the helper itself).
#[test]
fn usage_reads_proc() {
    let u = usage(std::process::id()).expect("own /proc entry");
    assert!(u.rss_kib > 0 && u.fds >= 3 && u.threads >= 1, "{u:?}");
}

/// Regression: `run --tun-fd N` with N not open printed "hushwall: ready on fd N" and only then failed with
/// "Bad file descriptor" at the first read. It must fail before announcing readiness, naming the descriptor.
#[test]
fn run_with_a_closed_tun_fd_fails_before_ready() {
    let ns = Netns::create();
    let r = expect_failure(&ns, &["run", "--profile", "none", "--tun-fd", "987"]);
    assert!(r.stderr.contains("--tun-fd 987"), "the error should name the descriptor: {r}");
}
