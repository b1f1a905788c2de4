//! The Hushwall demo: builds the phone/internet test bed, runs the engine with the built-in `balanced`
//! profile plus the test list, and narrates what happens to normal traffic and to real Xiaomi telemetry names,
//! printing the engine's block events live. Exits non-zero if anything did not behave as claimed.
//!
//! `hushwall-demo --cleanup` only removes what an interrupted earlier run left behind.

use hushwall_tests::evidence::server_saw;
use hushwall_tests::proc::run;
use hushwall_tests::testbed::{cleanup_stale, read_json_lines, BIG_SIZE};
use hushwall_tests::topology::*;
use hushwall_tests::{hushwall_bin, sha256, Options, Testbed};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Real telemetry and ad endpoints of MIUI / HyperOS. The demo resolves them to the test bed's "telemetry"
/// server and shows those the built-in balanced profile blocks.
const CANDIDATES: &[&str] = &[
    // Diverse first: the demo shows the first four the profile blocks.
    "tracking.miui.com",
    "data.mistat.xiaomi.com",
    "sdkconfig.ad.xiaomi.com",
    "adv.sec.miui.com",
    "tracking.intl.miui.com",
    "data.mistat.intl.xiaomi.com",
    "sa.api.intl.miui.com",
    "tracking.india.miui.com",
    "tracking.rus.miui.com",
    "data.mistat.india.xiaomi.com",
    "data.mistat.rus.xiaomi.com",
    "sdkconfig.ad.intl.xiaomi.com",
    "api.ad.xiaomi.com",
    "globalapi.ad.xiaomi.com",
];

struct Demo {
    failures: Vec<String>,
}

impl Demo {
    fn step(&self, title: &str) {
        println!("\n\x1b[1m▶ {title}\x1b[0m");
    }

    fn claim(&mut self, ok: bool, text: &str) {
        if ok {
            println!("  \x1b[32m✔\x1b[0m {text}");
        } else {
            println!("  \x1b[31m✘ {text}\x1b[0m");
            self.failures.push(text.to_string());
        }
    }
}

/// Names among `CANDIDATES` that `hushwall check --profile balanced` blocks with a built-in rule.
fn builtin_blocked(bin: &PathBuf) -> Vec<(String, String)> {
    let mut c = std::process::Command::new(bin);
    c.args(["check", "--profile", "balanced"]).args(CANDIDATES);
    let r = run(c, Duration::from_secs(30));
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["verdict"] == "block")
        .map(|v| {
            let rule = &v["rule"];
            let why = format!(
                "{}:{}: {}",
                rule["list"].as_str().unwrap_or("?"),
                rule["line"],
                rule["rule"].as_str().unwrap_or("?")
            );
            (v["input"].as_str().unwrap_or("").to_string(), why)
        })
        .collect()
}

fn format_event(e: &Value) -> String {
    let rule = &e["rule"];
    let rule = if rule.is_null() {
        "-".to_string()
    } else {
        format!("{}:{} {}", rule["list"].as_str().unwrap_or("?"), rule["line"], rule["rule"].as_str().unwrap_or("?"))
    };
    format!(
        "    \x1b[33m⛔ {:<4} {:<30} {:<14} rule {}\x1b[0m  ({} → {})",
        e["protocol"].as_str().unwrap_or("?"),
        e["host"].as_str().unwrap_or("-"),
        e["reason"].as_str().unwrap_or("?"),
        rule,
        e["src"].as_str().unwrap_or("?"),
        e["dst"].as_str().unwrap_or("?"),
    )
}

/// Prints new events of the file as they appear, until `stop`.
fn tail_events(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seen = 0;
        loop {
            let done = stop.load(Ordering::SeqCst);
            let events = read_json_lines(&path);
            for e in events.iter().skip(seen) {
                println!("{}", format_event(e));
            }
            seen = seen.max(events.len());
            if done {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Lets the live printer catch up before the next narration line.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

fn main() {
    if std::env::args().any(|a| a == "--cleanup") {
        cleanup_stale();
        return;
    }
    let bin = hushwall_bin();
    let mut demo = Demo { failures: Vec::new() };

    println!("\x1b[1mHushwall demo\x1b[0m — an on-device firewall against Xiaomi/MIUI telemetry");
    let blocked = builtin_blocked(&bin);
    let names: Vec<String> = if blocked.is_empty() {
        println!("(the built-in balanced lists block none of the demo's telemetry names; using the test list)");
        vec![TELEMETRY_NAME.to_string(), TELEMETRY_NAME_2.to_string()]
    } else {
        println!("Real telemetry names the built-in `balanced` profile blocks:");
        for (name, why) in &blocked {
            println!("  {name:<32} {why}");
        }
        blocked.iter().map(|(n, _)| n.clone()).take(4).collect()
    };

    let mut options = Options::engine().profile("balanced");
    let known: Vec<&str> = host_records().into_iter().map(|(n, _)| n).collect();
    for name in CANDIDATES.iter().filter(|n| !known.contains(n)) {
        options = options.host_record(name, &[Family::V4.telemetry(), Family::V6.telemetry()]);
    }
    println!("\nBuilding the test bed: a `phone` and an `internet` network namespace joined by a veth pair…");
    let mut tb = Testbed::start(options);
    println!(
        "  phone netns {} (engine on tun {TUN}: 10.111.0.1, fd00:6877:f::1; resolver {OUTSIDE_RESOLVER_V4})",
        tb.phone
    );
    println!(
        "  internet netns {}: DNS, HTTP/HTTPS, UDP echo, tcpdump on the veth; telemetry server {} / {}",
        tb.internet,
        Family::V4.telemetry(),
        Family::V6.telemetry()
    );
    println!(
        "  engine: hushwall run --tun {TUN} --profile balanced --blocklist {} (pid {})",
        tb.test_list.display(),
        tb.engine_pid().unwrap_or(0)
    );
    println!("  live block events from the engine are printed in yellow as they happen.");
    let stop = Arc::new(AtomicBool::new(false));
    let printer = tail_events(tb.events_path.clone(), stop.clone());

    demo.step("Normal traffic works: 10 MiB over HTTPS through the engine (DNS, TLS, TCP), both IP versions");
    let want = sha256(&tb.big);
    for fam in Family::ALL {
        let t = Instant::now();
        let f = tb.curl(&[fam.flag(), &format!("https://{NORMAL_NAME}/big")]);
        let secs = t.elapsed().as_secs_f64();
        let ok = f.run.success() && sha256(&f.body) == want;
        let text = if ok {
            format!(
                "{}: https://{NORMAL_NAME}/big — {:.1} MiB in {secs:.2} s ({:.0} Mbit/s), sha256 OK",
                fam.name(),
                BIG_SIZE as f64 / 1048576.0,
                BIG_SIZE as f64 * 8.0 / secs / 1e6,
            )
        } else {
            format!(
                "{}: https://{NORMAL_NAME}/big failed or differs: HTTP {} {}",
                fam.name(),
                f.http_code,
                f.run.stderr.trim()
            )
        };
        demo.claim(ok, &text);
    }
    let u = tb.udp_echo(Family::V6.normal(), ECHO_PORT);
    demo.claim(u.result == "echo", &format!("UDP echo over IPv6: {}", u.result));
    settle();

    demo.step("Telemetry names are blocked in DNS: instant NXDOMAIN, the query never leaves the phone");
    for name in &names {
        let d = tb.resolve(name, Family::V4);
        let ms = d.run.elapsed.as_millis();
        demo.claim(
            d.status.as_deref() == Some("NXDOMAIN"),
            &format!("dig {name} → {} in {ms} ms", d.status.as_deref().unwrap_or("no answer")),
        );
        settle();
    }
    let d = tb.resolve(CLOAKED_NAME, Family::V6);
    demo.claim(
        d.status.as_deref() == Some("NXDOMAIN"),
        &format!(
            "CNAME cloaking: {CLOAKED_NAME} (CNAME → {TELEMETRY_NAME}) → {}",
            d.status.as_deref().unwrap_or("no answer")
        ),
    );
    settle();

    demo.step("With DNS bypassed (hard-coded IP), TLS SNI still blocks: the server never sees a packet");
    for (name, fam) in names.iter().zip([Family::V4, Family::V6].iter().cycle()) {
        let f = tb.curl_resolved("https", name, fam.telemetry(), "/", *fam);
        let ms = f.run.elapsed.as_millis();
        demo.claim(
            !f.run.success() && ms < 2000,
            &format!(
                "curl --resolve {name}:443:{} → {} after {ms} ms",
                fam.telemetry(),
                f.run.stderr.trim().trim_start_matches("curl: ")
            ),
        );
        settle();
    }

    demo.step("One IP, two names: the allowed one works, the telemetry one is refused (by SNI)");
    let good = tb.curl_resolved("https", SHARED_GOOD_NAME, Family::V4.shared(), "/", Family::V4);
    demo.claim(good.run.success(), &format!("https://{SHARED_GOOD_NAME}/ → HTTP {}", good.http_code));
    let bad = tb.curl_resolved("https", SHARED_BAD_NAME, Family::V4.shared(), "/", Family::V4);
    demo.claim(!bad.run.success(), &format!("https://{SHARED_BAD_NAME}/ → refused ({})", bad.run.stderr.trim()));
    settle();

    demo.step("Blocked address ranges: TCP gets a reset, UDP gets ICMP port unreachable");
    let t = tb.tcp_banner(Family::V4.cidr(), BANNER_PORT);
    demo.claim(t.result == "refused", &format!("TCP {}:{BANNER_PORT} → {}", Family::V4.cidr(), t.result));
    let u = tb.udp_echo(Family::V6.cidr(), ECHO_PORT);
    demo.claim(u.result == "refused", &format!("UDP [{}]:{ECHO_PORT} → {}", Family::V6.cidr(), u.result));
    settle();

    demo.step("Summary");
    let telemetry_conns = server_saw(&tb, "accept", Family::V4.telemetry()).len()
        + server_saw(&tb, "accept", Family::V6.telemetry()).len();
    let status = tb.stop_engine("TERM");
    stop.store(true, Ordering::SeqCst);
    let _ = printer.join();
    demo.claim(status.success(), &format!("engine stopped on SIGTERM: {status}"));
    let events = tb.events();
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e["action"] == "block") {
        *by_reason.entry(e["reason"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    let total: usize = by_reason.values().sum();
    let breakdown: Vec<String> = by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
    println!("  block events: {total} ({})", breakdown.join(", "));
    demo.claim(telemetry_conns == 0, &format!("telemetry servers accepted {telemetry_conns} connections"));
    let leaks = tb.forbidden_packets();
    demo.claim(
        leaks.is_empty(),
        &format!("server capture: {} packets reached telemetry hosts or blocked ranges", leaks.len()),
    );
    drop(tb);
    if demo.failures.is_empty() {
        println!("\n\x1b[1;32mAll claims held.\x1b[0m Test bed removed.");
    } else {
        println!("\n\x1b[1;31m{} claims failed.\x1b[0m Test bed removed.", demo.failures.len());
        std::process::exit(1);
    }
}
