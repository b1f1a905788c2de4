//! Leak tests: with Hushwall on, no packet to a blocked host leaves the phone by any path we know of. Each test
//! tries many paths, then proves it with the capture on the internet side of the veth (zero packets to or from a
//! telemetry host or blocked range, zero packets to port 853) and with the servers' own log (no TLS handshake or
//! HTTP request naming a blocked host ever arrived anywhere).
//!
//! Also: fail closed. When the engine dies, the phone's routes into the tun go with it and traffic fails; it never
//! falls through to the real network.
//!
//! What is *not* covered is listed in `RELIABILITY.md` (QUIC to an address shared by allowed and blocked names,
//! telemetry addresses contacted before any DNS lookup without SNI or Host, Android Private DNS).

use hushwall_tests::clients::Fetch;
use hushwall_tests::evidence::finish;
use hushwall_tests::proc::{run, Run};
use hushwall_tests::testbed::TempDir;
use hushwall_tests::topology::*;
use hushwall_tests::{Family, Options, Testbed};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const DOH_NAME: &str = "dns.google";
const DOH_NAME_2: &str = "cloudflare-dns.com";

/// An engine with the test list plus a small DoH list; the DoH names live on the shared server (so only the
/// TLS SNI can tell them from the allowed name there).
fn start_with_doh_list(dir: &TempDir) -> Testbed {
    let doh = dir.path.join("doh.txt");
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/test-doh-list.txt"))
        .expect("read tests/data/test-doh-list.txt");
    std::fs::write(&doh, text).expect("write DoH list");
    let shared = [Family::V4.shared(), Family::V6.shared()];
    Testbed::start(
        Options::engine()
            .engine_arg("--blocklist")
            .engine_arg(doh.as_os_str())
            .host_record(DOH_NAME, &shared)
            .host_record(DOH_NAME_2, &shared),
    )
}

/// A TCP refusal the client observed: an RST to its SYN or to the connection. A timeout (or a quiet close) is no
/// refusal: it would hide a packet that went out and was lost, or a flow still waiting to be judged.
fn refused(result: &str) -> bool {
    matches!(result, "refused" | "reset")
}

/// A curl transfer ended by the engine's RST (or an ICMP error) rather than by curl's timeout: exit code 7
/// (could not connect), 35 (TLS handshake reset) or 56 (connection reset while receiving).
fn curl_refused(f: &Fetch) -> bool {
    f.http_code == 0 && matches!(f.run.status.and_then(|s| s.code()), Some(7 | 35 | 56))
}

/// ping's answer was an ICMP error (the engine's "administratively prohibited"), not silence.
fn ping_refused(ping: &Run) -> bool {
    let out = format!("{}{}", ping.stdout, ping.stderr).to_lowercase();
    !ping.success() && ["filtered", "prohibited", "unreachable"].iter().any(|m| out.contains(m))
}

/// Every blocked name any server was asked for, by TLS SNI or HTTP Host.
fn blocked_names_servers_saw(tb: &Testbed) -> Vec<Value> {
    let blocked = [TELEMETRY_NAME, TELEMETRY_NAME_2, SHARED_BAD_NAME, CIDR_NAME, DOH_NAME, DOH_NAME_2];
    tb.server_log()
        .into_iter()
        .filter(|e| {
            let named = e["sni"].as_str().or(e["host"].as_str()).unwrap_or("");
            let host = named.split(':').next().unwrap_or("");
            blocked.iter().any(|b| host == *b || host.ends_with(&format!(".{b}")))
        })
        .collect()
}

fn leak_sweep(fam: Family) {
    let dir = TempDir::create();
    let mut tb = start_with_doh_list(&dir);
    let mut tried = 0;

    // 1. DNS for blocked names, UDP and TCP, to the configured resolver and to hard-coded ones (including a
    //    "resolver" on the telemetry host itself and one on a blocked range): always NXDOMAIN from the engine.
    let resolvers = [fam.outside_resolver(), fam.telemetry(), fam.cidr(), fam.normal()];
    for r in resolvers {
        for tcp in [false, true] {
            for name in [TELEMETRY_NAME, TELEMETRY_NAME_2, SHARED_BAD_NAME, DOH_NAME, CLOAKED_NAME] {
                let at = format!("@{r}");
                let mut args = vec![at.as_str(), name, fam.rtype()];
                if tcp {
                    args.insert(0, "+tcp");
                }
                let d = tb.dig(&args);
                tried += 1;
                assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "{name} via {r} (tcp {tcp}): {}", d.run);
            }
        }
    }
    // Allowed names resolve through a hard-coded resolver on a blocked host, without touching it.
    let d = tb.dig(&[&format!("@{}", fam.telemetry()), "+tcp", NORMAL_NAME, fam.rtype()]);
    assert_eq!(d.addresses(fam.rtype()), vec![fam.normal().to_string()], "{}", d.run);

    // 2. DNS over TLS (TCP 853) and DNS over QUIC (UDP 853), to allowed and blocked addresses: refused.
    for ip in [fam.normal(), fam.telemetry(), fam.shared()] {
        let t = tb.tcp_banner(ip, 853);
        assert!(refused(&t.result), "DoT to {ip}: {:?}", t.raw);
        let u = tb.udp_echo(ip, 853);
        assert_eq!(u.result, "refused", "DoQ to {ip}: {:?}", u.raw);
        tried += 2;
    }

    // 3. Known DoH endpoints: DNS says NXDOMAIN; connecting by address with the DoH name in the SNI is refused
    //    on the shared address that also serves an allowed name.
    for name in [DOH_NAME, DOH_NAME_2] {
        let f = tb.curl_resolved("https", name, fam.shared(), "/dns-query", fam);
        assert!(curl_refused(&f), "DoH {name}: {}", f.run);
        tried += 1;
    }

    // 4. QUIC (UDP 443) to a blocked name's address, once DNS has mapped it (the app looked it up): refused
    //    with ICMP, never forwarded. Also TCP to the same address: HTTPS and HTTP naming only the address (no
    //    SNI, `Host:` the address) and the banner port; each is reset.
    for name in [TELEMETRY_NAME, TELEMETRY_NAME_2] {
        let d = tb.dig(&[name, fam.rtype()]);
        assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "{name}: {}", d.run);
    }
    let u = tb.udp_echo(fam.telemetry(), 443);
    assert_eq!(u.result, "refused", "QUIC to a blocked name's address: {:?}", u.raw);
    tried += 1;
    for scheme in ["https", "http"] {
        let f = tb.curl(&[fam.flag(), &format!("{scheme}://{}/", fam.bracket(fam.telemetry()))]);
        assert!(curl_refused(&f), "{scheme} by address to telemetry: {}", f.run);
        tried += 1;
    }
    let t = tb.tcp_banner(fam.telemetry(), BANNER_PORT);
    assert!(refused(&t.result), "TCP {BANNER_PORT} to telemetry: {:?}", t.raw);
    tried += 1;

    // 5. A blocked range reached without any DNS: TCP, UDP (incl. 443), ICMP echo.
    for port in [80, 443, BANNER_PORT, 22] {
        let t = tb.tcp_banner(fam.cidr(), port);
        assert!(refused(&t.result), "TCP {port} to the blocked range: {:?}", t.raw);
        tried += 1;
    }
    for port in [ECHO_PORT, 443, 123] {
        let u = tb.udp_echo(fam.cidr(), port);
        assert_eq!(u.result, "refused", "UDP {port} to the blocked range: {:?}", u.raw);
        tried += 1;
    }
    let ping = run(tb.phone_command("ping", &[fam.flag(), "-c", "2", "-W", "1", fam.cidr()]), Duration::from_secs(10));
    assert!(ping_refused(&ping), "ping to the blocked range must be refused with ICMP: {ping}");
    tried += 1;

    // 6. Blocked names by SNI and Host on an allowed address (domain fronting in reverse) and on their own.
    for (scheme, ip) in [("https", fam.normal()), ("http", fam.normal()), ("https", fam.telemetry())] {
        let f = tb.curl_resolved(scheme, TELEMETRY_NAME, ip, "/", fam);
        assert!(curl_refused(&f), "{scheme} {TELEMETRY_NAME} at {ip}: {}", f.run);
        tried += 1;
    }

    // The proof, read once the engine has stopped (so nothing it sends is still to come) and tcpdump has flushed
    // its file and lost nothing: the internet side saw nothing to blocked hosts, nothing on port 853, and no
    // server was ever asked for a blocked name.
    finish(&mut tb); // stops the engine, then the capture: zero packets to or from telemetry hosts and blocked ranges
    tb.assert_capture_complete();
    let dot = tb.captured("port 853");
    assert!(dot.is_empty(), "DNS-over-TLS/QUIC packets left the phone:\n{}", dot.join("\n"));
    let named = blocked_names_servers_saw(&tb);
    assert!(named.is_empty(), "servers were asked for blocked names: {named:?}");
    eprintln!("FIGURES leaks-{}: attempts={tried} leaked=0", fam.name());
}

#[test]
fn leak_sweep_ipv4() {
    leak_sweep(Family::V4);
}

#[test]
fn leak_sweep_ipv6() {
    leak_sweep(Family::V6);
}

/// Fail closed: `kill -9` the engine. The tun device and the phone's routes through it vanish with the process,
/// so apps get "network unreachable" at once; nothing reaches any server, allowed or blocked, and no DNS
/// reaches the resolver. (On Android, what stops a fall-through to the real network is Always-on VPN with
/// "Block connections without VPN": see RELIABILITY.md.)
#[test]
fn engine_killed_fails_closed() {
    let mut tb = Testbed::start(Options::engine());
    let pid = tb.engine_pid().expect("engine");
    let r = run(hushwall_tests::proc::command("kill", &["-9", &pid.to_string()]), Duration::from_secs(5));
    assert!(r.success(), "{r}");
    assert!(
        hushwall_tests::reliability::eventually(Duration::from_secs(5), || !tb.engine_running()),
        "the engine survived kill -9"
    );
    for fam in Family::ALL {
        for ip in [fam.normal(), fam.telemetry(), fam.cidr()] {
            let t = tb.tcp_banner(ip, BANNER_PORT);
            assert_ne!(t.result, "banner", "TCP to {ip} worked with the engine dead: {:?}", t.raw);
            let u = tb.udp_echo(ip, ECHO_PORT);
            assert_ne!(u.result, "echo", "UDP to {ip} worked with the engine dead: {:?}", u.raw);
        }
        let f = tb.curl_resolved("https", NORMAL_NAME, fam.normal(), "/", fam);
        assert_eq!(f.http_code, 0, "HTTPS worked with the engine dead: {}", f.run);
        let d = tb.dig(&[fam.flag(), TELEMETRY_NAME, fam.rtype()]);
        assert!(d.status.is_none(), "DNS answered with the engine dead: {}", d.run);
    }
    let links = run(tb.phone_command("ip", &["-o", "link"]), Duration::from_secs(5));
    assert!(!links.stdout.contains(TUN), "the tun outlived the engine: {links}");
    let mut filter = String::from("port 53");
    for a in server_addresses() {
        filter.push_str(&format!(" or host {a}"));
    }
    let seen = tb.captured(&filter);
    assert!(seen.is_empty(), "packets left the phone with the engine dead:\n{}", seen.join("\n"));
    let server_log = tb.server_log();
    assert!(server_log.iter().all(|e| e["event"] != "accept" && e["event"] != "udp"), "{server_log:?}");
}

/// Not a test: records the seed corpus for the fuzz targets from real traffic on the tun (DNS over UDP and TCP,
/// HTTP, HTTPS with real ClientHellos, UDP, blocked attempts, both families) into `$HUSHWALL_SEED_OUT`
/// (normally `fuzz/corpus`). Run: `HUSHWALL_SEED_OUT=$PWD/fuzz/corpus cargo test --release -p hushwall-tests
/// --test leaks -- --ignored capture_seed_corpus`.
#[test]
#[ignore = "generates fuzz/corpus; run by hand"]
fn capture_seed_corpus() {
    let Ok(out) = std::env::var("HUSHWALL_SEED_OUT") else {
        eprintln!("capture_seed_corpus: HUSHWALL_SEED_OUT is not set; nothing to do");
        return;
    };
    let mut tb = Testbed::start(Options::engine());
    let pcap = tb.dir.join("tun.pcap");
    let mut cap = tb.phone_command("tcpdump", &["-i", TUN, "-nn", "-U", "-s", "0", "-Z", "root", "-w"]);
    cap.arg(&pcap);
    let mut cap = hushwall_tests::proc::Background::spawn("tun-capture", cap, &tb.dir.join("tun-capture.log"));
    cap.wait_for_log("listening on", Duration::from_secs(10));
    for fam in Family::ALL {
        let _ = tb.dig(&[NORMAL_NAME, fam.rtype()]);
        let _ = tb.dig(&["+tcp", CLOAKED_NAME, fam.rtype()]);
        let _ = tb.dig(&[TELEMETRY_NAME, "HTTPS"]);
        let _ = tb.curl_resolved("https", NORMAL_NAME, fam.normal(), "/", fam);
        let _ = tb.curl_resolved("http", SHARED_GOOD_NAME, fam.shared(), "/", fam);
        let _ = tb.curl_resolved("https", TELEMETRY_NAME, fam.telemetry(), "/", fam);
        let _ = tb.udp_echo(fam.normal(), ECHO_PORT);
        let _ = tb.tcp_banner(fam.normal(), BANNER_PORT);
        let _ = tb.tcp_banner(fam.cidr(), 443);
    }
    cap.stop("INT", Duration::from_secs(5));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/pcap2corpus.py");
    let mut c = hushwall_tests::proc::command("python3", &[script.as_os_str(), pcap.as_os_str()]);
    c.arg(&out);
    let r = run(c, Duration::from_secs(60));
    assert!(r.success(), "{r}");
    eprintln!("{}", r.stdout);
    finish(&mut tb);
}
