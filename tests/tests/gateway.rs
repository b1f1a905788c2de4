//! `hushwall gateway` end to end, and the Debian package.
//!
//! ```text
//!  LAN host netns                 gateway netns (the test bed's "phone")          internet netns
//!  eth0 198.18.77.2               lan0 198.18.77.1, fd00:6877:77::1                servers, dnsmasq,
//!       fd00:6877:77::2           hushwall gateway --lan lan0 (tun hw0)            tcpdump on veth0
//!  default via the gateway ─────▶ forwarding on; veth0 default routes ──────────▶
//!  resolv.conf: 198.18.53.53
//! ```
//!
//! The gateway namespace forwards both families and has default routes to the internet namespace, which has
//! no route back to the LAN: whatever the gateway does not route into the engine (IPv6 in the old manual recipe)
//! reaches the servers with the LAN host's address and shows up in the server-side capture, which must hold no
//! packet to a telemetry address.

use hushwall_tests::clients::parse_dig;
use hushwall_tests::proc::{command, run, run_ok, signal, Background};
use hushwall_tests::testbed::{read_json_lines, TempDir};
use hushwall_tests::topology::*;
use hushwall_tests::{hushwall_bin, Dig, Netns, Options, Testbed};
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LAN_IFACE: &str = "lan0";
const GATEWAY_LAN_V4: &str = "198.18.77.1";
const GATEWAY_LAN_V6: &str = "fd00:6877:77::1";
const HOST_V4: &str = "198.18.77.2";
const HOST_V6: &str = "fd00:6877:77::2";
const STEP: Duration = Duration::from_secs(30);
const READY: &str = "hushwall: ready on hw0";

/// The test bed in no-engine mode (its phone namespace is the gateway) plus a LAN host namespace.
struct Bed {
    tb: Testbed,
    lan: Netns,
    resolv_dir: PathBuf,
    dir: TempDir,
}

impl Bed {
    fn start() -> Bed {
        let tb = Testbed::start(Options::no_engine());
        let lan = Netns::create();
        let resolv_dir = PathBuf::from("/etc/netns").join(&lan.name);
        let dir = TempDir::create();
        let bed = Bed { tb, lan, resolv_dir, dir };
        let (gw, host) = (bed.tb.phone.as_str(), bed.lan.name.as_str());
        run_ok(
            command(
                "ip",
                &["link", "add", LAN_IFACE, "netns", gw, "type", "veth", "peer", "name", "eth0", "netns", host],
            ),
            STEP,
        );
        for args in [
            vec!["addr", "add", "198.18.77.1/24", "dev", LAN_IFACE],
            vec!["-6", "addr", "add", "fd00:6877:77::1/64", "dev", LAN_IFACE, "nodad"],
            vec!["link", "set", LAN_IFACE, "up"],
        ] {
            run_ok(bed.gw("ip", &args), STEP);
        }
        run_ok(
            bed.gw(
                "sh",
                &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"],
            ),
            STEP,
        );
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", "198.18.77.2/24", "dev", "eth0"],
            vec!["-6", "addr", "add", "fd00:6877:77::2/64", "dev", "eth0", "nodad"],
            vec!["link", "set", "eth0", "up"],
            vec!["route", "add", "default", "via", GATEWAY_LAN_V4],
            vec!["-6", "route", "add", "default", "via", GATEWAY_LAN_V6],
        ] {
            run_ok(bed.host("ip", &args), STEP);
        }
        // Snapshots of the routing compare the local table, where the kernel adds each link's fe80:: address once
        // its duplicate address detection is over: wait for that first.
        let deadline = std::time::Instant::now() + STEP;
        loop {
            let link_local = run_ok(bed.gw("ip", &["-6", "-o", "addr", "show", "scope", "link"]), STEP).stdout;
            let tentative = run_ok(bed.gw("ip", &["-6", "-o", "addr", "show", "tentative"]), STEP).stdout;
            if link_local.lines().count() >= 2 && tentative.trim().is_empty() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "link-local addresses not ready:\n{link_local}{tentative}");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::create_dir_all(&bed.resolv_dir).expect("create /etc/netns/<lan>");
        std::fs::write(bed.resolv_dir.join("resolv.conf"), format!("nameserver {OUTSIDE_RESOLVER_V4}\n"))
            .expect("write resolv.conf");
        bed
    }

    /// A command in the gateway namespace.
    fn gw(&self, program: &str, args: &[&str]) -> Command {
        self.tb.phone_command(program, args)
    }

    /// A command on the LAN host.
    fn host(&self, program: &str, args: &[&str]) -> Command {
        let mut c = self.lan.command(program);
        c.args(args);
        c
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path.join("run")
    }

    /// The gateway's rules, routes (every table) and links, both families.
    fn routing(&self) -> String {
        let mut out = String::new();
        for args in [
            &["-4", "rule"][..],
            &["-6", "rule"],
            &["-4", "route", "show", "table", "all"],
            &["-6", "route", "show", "table", "all"],
            &["-o", "link", "show"],
        ] {
            let r = run_ok(self.gw("ip", args), STEP);
            let text = if args[1] == "link" {
                r.stdout.lines().filter_map(|l| l.split(':').nth(1)).map(|n| n.trim().to_owned() + "\n").collect()
            } else {
                r.stdout
            };
            out.push_str(&format!("== ip {}\n{text}", args.join(" ")));
        }
        out
    }

    /// `hushwall gateway --lan lan0` with the test list, run under umask 022 (as a shell would), in the
    /// gateway namespace: the command, ready to spawn.
    fn gateway_command(&self, program: &Path, args: &[&str], notify: Option<&Path>) -> Command {
        let mut c = self.gw("sh", &["-c", "umask 022; exec \"$0\" \"$@\""]);
        c.arg(program).args(args);
        if let Some(socket) = notify {
            c.env("NOTIFY_SOCKET", socket);
        }
        c
    }

    fn gateway_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["gateway", "--lan", LAN_IFACE, "--profile", "none", "--no-store", "--blocklist"]
            .map(String::from)
            .to_vec();
        args.push(self.tb.test_list.display().to_string());
        args.extend(["--dns-upstream", DNS_UPSTREAM, "--run-dir"].map(String::from));
        args.push(self.run_dir().display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn start_gateway(&self, name: &str, extra: &[&str], notify: Option<&Path>) -> Background {
        let args = self.gateway_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cmd = self.gateway_command(&hushwall_bin(), &args, notify);
        Background::spawn(name, cmd, &self.dir.path.join(format!("{name}.log")))
    }

    fn dig(&self, args: &[&str]) -> Dig {
        let mut all = vec!["+time=3", "+tries=1", "+nocmd", "+noall", "+comments", "+answer"];
        all.extend_from_slice(args);
        parse_dig(run(self.host("dig", &all), STEP))
    }

    /// curl on the LAN host: the HTTP status (0 when the connection failed).
    fn curl(&self, family: Family, url: &str, resolve: Option<&str>) -> u32 {
        let mut c = self.host(
            "curl",
            &[
                "-sS",
                family.flag(),
                "--connect-timeout",
                "5",
                "--max-time",
                "20",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ],
        );
        c.arg("--cacert").arg(&self.tb.pki.ca_cert);
        if let Some(resolve) = resolve {
            c.args(["--resolve", resolve]);
        }
        c.arg(url);
        run(c, STEP).stdout.trim().parse().unwrap_or(0)
    }

    /// Telemetry refused by DNS and by SNI, normal HTTPS served, on IPv4 and on IPv6.
    fn check_lan_host(&self) {
        for family in Family::ALL {
            let d = self.dig(&[TELEMETRY_NAME, family.rtype()]);
            assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "{family:?} DNS for telemetry: {}", d.run);
            let url = format!("https://{NORMAL_NAME}/");
            assert_eq!(self.curl(family, &url, None), 200, "{family:?} HTTPS to {NORMAL_NAME} through the gateway");
            let resolve = format!("{TELEMETRY_NAME}:443:{}", family.bracket(family.telemetry()));
            let url = format!("https://{TELEMETRY_NAME}/");
            assert_eq!(self.curl(family, &url, Some(&resolve)), 0, "{family:?} HTTPS to telemetry must be refused");
        }
        // DNS carried over IPv6 through the gateway is judged too.
        let d = self.dig(&[&format!("@{OUTSIDE_RESOLVER_V6}"), TELEMETRY_NAME, "AAAA"]);
        assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "DNS over IPv6: {}", d.run);
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.resolv_dir);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display())).mode() & 0o777
}

fn notify_socket(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket.set_read_timeout(Some(STEP)).expect("timeout");
    (socket, path)
}

/// Waits for the service manager notification; panics with the log if none comes.
fn wait_ready(socket: &UnixDatagram, gateway: &Background) {
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no sd_notify message ({e}):\n{}", gateway.log_text()));
    assert_eq!(&buf[..n], b"READY=1");
}

/// Stops with SIGTERM and checks the exit status.
fn stop(gateway: &mut Background) {
    let status = gateway.stop("TERM", STEP);
    assert!(status.is_some_and(|s| s.success()), "gateway exit {status:?}:\n{}", gateway.log_text());
}

fn block_sources(events_path: &Path, reason: &str) -> Vec<String> {
    read_json_lines(events_path)
        .iter()
        .filter(|e| e["action"] == "block" && e["reason"] == reason && e["host"] == TELEMETRY_NAME)
        .filter_map(|e| e["src"].as_str().map(String::from))
        .collect()
}

#[test]
fn gateway_routes_both_families_blocks_and_serves_then_removes_exactly_what_it_added() {
    let mut bed = Bed::start();
    let before = bed.routing();
    let (notify, notify_path) = notify_socket(&bed.dir.path);
    let events = bed.dir.path.join("events.jsonl");
    let pcap = bed.dir.path.join("capture.pcapng");
    let (events_s, pcap_s) = (events.display().to_string(), pcap.display().to_string());
    let extra = ["--events", &events_s, "--pcap", &pcap_s, "--metrics", "127.0.0.1:9877"];
    let mut gateway = bed.start_gateway("gateway", &extra, Some(&notify_path));
    wait_ready(&notify, &gateway);

    // READY=1 comes once the routing is in place, for both families.
    let during = bed.routing();
    for family in ["-4", "-6"] {
        let rules = run_ok(bed.gw("ip", &[family, "rule"]), STEP).stdout;
        assert!(rules.contains("100:\tfrom all fwmark 0x6877 lookup main"), "{family} rules:\n{rules}");
        assert!(rules.contains("101:\tfrom all iif lan0 lookup 6877"), "{family} rules:\n{rules}");
        let routes = run_ok(bed.gw("ip", &[family, "route", "show", "table", "6877"]), STEP).stdout;
        assert!(routes.contains("default dev hw0"), "{family} table 6877:\n{routes}");
    }

    // A second instance refuses to start and changes nothing.
    let second_args = bed.gateway_args(&["--tun", "hw1"]);
    let second_args: Vec<&str> = second_args.iter().map(String::as_str).collect();
    let second = run(bed.gateway_command(&hushwall_bin(), &second_args, None), STEP);
    assert!(!second.success() && second.stderr.contains("another hushwall gateway is running"), "{second}");
    assert_eq!(bed.routing(), during, "the refused second instance changed the routing");

    bed.check_lan_host();

    // The engine judged the LAN host's flows of both families (not merely failed to route them).
    let sni = block_sources(&events, "tls_sni");
    assert!(sni.iter().any(|s| s.starts_with(HOST_V4)), "no IPv4 SNI block from the LAN host: {sni:?}");
    assert!(sni.iter().any(|s| s.starts_with(&format!("[{HOST_V6}]"))), "no IPv6 SNI block from the LAN host: {sni:?}");

    // Private files: 0600 under umask 022.
    assert_eq!(mode(&events), 0o600, "events file mode");
    assert_eq!(mode(&pcap), 0o600, "capture file mode");

    // `hushwall status` over the root-only control socket.
    let socket = bed.run_dir().join("control.sock");
    assert_eq!(mode(&bed.run_dir()), 0o700, "run directory mode");
    assert_eq!(mode(&socket), 0o600, "control socket mode");
    let status_json = || {
        let mut status = command(hushwall_bin().to_str().expect("utf-8 path"), &["status", "--json", "--socket"]);
        status.arg(&socket);
        let status = run_ok(status, STEP);
        serde_json::from_str::<Value>(status.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {status}"))
    };
    // Identical blocks within 10 s are folded: their summary (`repeats`) arrives when the window ends.
    let mut json = status_json();
    let deadline = Instant::now() + Duration::from_secs(15);
    while json["blocks_by_reason"]["dns_query"].as_u64() < Some(3) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        json = status_json();
    }
    assert!(json["blocks_by_reason"]["dns_query"].as_u64() >= Some(3), "{json}");
    assert!(json["blocks_by_reason"]["tls_sni"].as_u64() >= Some(2), "{json}");
    assert_eq!(json["top_blocked_hosts"][0]["host"], TELEMETRY_NAME, "{json}");
    assert!(json["engine"]["tcp_flows"].as_u64() >= Some(2), "{json}");
    assert!(json["engine"]["dns_queries"].as_u64() >= Some(5), "{json}");
    assert!(json["uptime_secs"].is_u64() && json["version"].is_string(), "{json}");
    let mut human = command(hushwall_bin().to_str().expect("utf-8 path"), &["status", "--socket"]);
    human.arg(&socket);
    let human = run_ok(human, STEP);
    assert!(human.stdout.contains("top blocked hosts:") && human.stdout.contains(TELEMETRY_NAME), "{human}");
    let metrics = run_ok(bed.gw("curl", &["-sS", "--max-time", "10", "http://127.0.0.1:9877/metrics"]), STEP);
    assert!(metrics.stdout.contains("hushwall_blocks_total{reason=\"tls_sni\"}"), "{metrics}");

    stop(&mut gateway);
    assert_eq!(bed.routing(), before, "SIGTERM must leave the routing exactly as before");
    assert!(!socket.exists(), "the control socket is removed on exit");
    assert!(!bed.run_dir().join("gateway.state").exists(), "the state file is removed on exit");
    let forbidden = bed.tb.forbidden_packets();
    assert!(forbidden.is_empty(), "packets reached telemetry addresses:\n{}", forbidden.join("\n"));
}

#[test]
fn gateway_failed_start_and_killed_instance_leave_nothing_behind() {
    let bed = Bed::start();
    let before = bed.routing();

    // A rule that is already there (the user's own) makes the start fail half way: what the gateway added is
    // removed, the user's rule stays.
    let users_rule = ["-6", "rule", "add", "iif", LAN_IFACE, "lookup", "6877", "priority", "101"];
    run_ok(bed.gw("ip", &users_rule), STEP);
    let with_users_rule = bed.routing();
    let args = bed.gateway_args(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let failed = run(bed.gateway_command(&hushwall_bin(), &args, None), STEP);
    assert!(!failed.success() && failed.stderr.contains("File exists"), "{failed}");
    assert_eq!(bed.routing(), with_users_rule, "a failed start must remove exactly what it added");
    run_ok(bed.gw("ip", &["-6", "rule", "del", "iif", LAN_IFACE, "lookup", "6877", "priority", "101"]), STEP);
    assert_eq!(bed.routing(), before);

    // A planted symlink at the capture path is refused before anything is changed.
    let target = bed.dir.path.join("precious");
    std::fs::write(&target, "precious").expect("write");
    let link = bed.dir.path.join("capture.pcapng");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let args = bed.gateway_args(&["--pcap", link.to_str().expect("utf-8")]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = run(bed.gateway_command(&hushwall_bin(), &args, None), STEP);
    assert!(!refused.success(), "{refused}");
    assert!(refused.stderr.contains("is a symbolic link; refusing to follow it"), "{refused}");
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "precious");
    assert_eq!(bed.routing(), before);

    // An instance killed outright leaves its rules; the next start removes them first, and its stop leaves
    // the routing as it was before either ran.
    let mut killed = bed.start_gateway("killed", &[], None);
    killed.wait_for_log(READY, STEP);
    killed.stop("KILL", STEP);
    let left = bed.routing();
    assert!(left.contains("iif lan0 lookup 6877"), "SIGKILL cannot clean up; the rules stay:\n{left}");
    let mut next = bed.start_gateway("next", &[], None);
    next.wait_for_log(READY, STEP);
    assert!(next.log_text().contains("removing the routing a previous gateway left"), "{}", next.log_text());
    bed.check_lan_host();
    stop(&mut next);
    assert_eq!(bed.routing(), before, "after the recovery and a clean stop, nothing is left");
}

#[test]
fn pcap_and_events_files_are_private_whatever_the_umask() {
    // `hushwall run` (not only the gateway): an existing world-readable events file is made private too.
    let ns = Netns::create();
    let dir = TempDir::create();
    let events = dir.path.join("events.jsonl");
    let pcap = dir.path.join("capture.pcapng");
    std::fs::write(&events, "").expect("write");
    std::fs::set_permissions(&events, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut cmd = ns.command("sh");
    cmd.args(["-c", "umask 022; exec \"$0\" \"$@\""]).arg(hushwall_bin());
    cmd.args(["run", "--tun", "hw0", "--profile", "none", "--no-store", "--events"]).arg(&events);
    cmd.arg("--pcap").arg(&pcap);
    let mut engine = Background::spawn("engine", cmd, &dir.path.join("engine.log"));
    engine.wait_for_log(READY, STEP);
    assert_eq!(mode(&events), 0o600, "events file mode");
    assert_eq!(mode(&pcap), 0o600, "capture file mode");
    assert!(engine.stop("TERM", STEP).is_some_and(|s| s.success()), "{}", engine.log_text());
    // Not a terminal: plain log lines, no live status line.
    assert!(!engine.log_text().contains(LIVE_LINE), "{}", engine.log_text());
    // A planted (dangling) symlink at the events path is refused, and nothing is created where it points.
    let link = dir.path.join("events-link.jsonl");
    let target = dir.path.join("created-through-link");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let mut cmd = ns.command(hushwall_bin());
    cmd.args(["run", "--tun", "hw0", "--profile", "none", "--no-store", "--events"]).arg(&link);
    let r = run(cmd, STEP);
    assert!(!r.success() && r.stderr.contains("is a symbolic link; refusing to follow it"), "{r}");
    assert!(!target.exists());
}

#[test]
fn deb_installs_and_its_unit_command_line_runs_the_gateway() {
    let mut bed = Bed::start();
    let before = bed.routing();
    let root_dir = workspace_root();
    let out = bed.dir.path.join("deb");
    let mut build = command("bash", &[root_dir.join("packaging/build-deb.sh").to_str().expect("utf-8")]);
    build.arg("--binary").arg(hushwall_bin()).arg("--out").arg(&out);
    let build = run_ok(build, Duration::from_secs(300));
    let deb = PathBuf::from(build.stdout.lines().last().expect("the .deb path"));

    // Contents and modes.
    let mut contents = command("dpkg-deb", &["-c"]);
    contents.arg(&deb);
    let contents = run_ok(contents, STEP).stdout;
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/hushwall"),
        ("-rw-r--r-- root/root", "./lib/systemd/system/hushwall.service"),
        ("-rw-r--r-- root/root", "./etc/hushwall/hushwall.toml"),
        ("drwx------ root/root", "./var/lib/hushwall/"),
    ] {
        assert!(
            contents.lines().any(|l| l.starts_with(mode) && l.ends_with(&format!(" {path}"))),
            "{mode} {path} not in the package:\n{contents}"
        );
    }
    let mut info = command("dpkg-deb", &["-I"]);
    info.arg(&deb);
    let info = run_ok(info, STEP).stdout;
    for field in ["Package: hushwall", "Depends: libc6 (>= ", "iproute2", "Architecture: "] {
        assert!(info.contains(field), "{field} missing:\n{info}");
    }
    let mut conffiles = command("dpkg-deb", &["-I"]);
    conffiles.arg(&deb).arg("conffiles");
    assert_eq!(run_ok(conffiles, STEP).stdout.trim(), "/etc/hushwall/hushwall.toml");

    // Installed into a temporary root.
    let root = bed.dir.path.join("root");
    let mut extract = command("dpkg", &["-x"]);
    extract.arg(&deb).arg(&root);
    run_ok(extract, STEP);
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/hushwall.service")).expect("unit");
    for directive in [
        "Type=notify",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
        "StateDirectory=hushwall",
        "RuntimeDirectory=hushwall",
        "RuntimeDirectoryPreserve=restart",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == directive), "{directive} missing from the unit:\n{unit}");
    }
    let exec_start = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    // systemd itself accepts the unit (with ExecStart pointing at the installed root's binary).
    let units = bed.dir.path.join("units");
    std::fs::create_dir_all(&units).expect("mkdir");
    let installed = root.join("usr/bin/hushwall");
    std::fs::write(
        units.join("hushwall.service"),
        unit.replace("/usr/bin/hushwall", installed.to_str().expect("utf-8")),
    )
    .expect("write unit copy");
    let mut verify = command("systemd-analyze", &["verify"]);
    verify.arg(units.join("hushwall.service"));
    let verify = run(verify, STEP);
    assert!(verify.success() && verify.stderr.trim().is_empty(), "systemd-analyze verify: {verify}");

    // The shipped configuration, edited as a user would (their LAN interface, their lists) plus the test
    // bed's paths.
    let config_path = root.join("etc/hushwall/hushwall.toml");
    let shipped = std::fs::read_to_string(&config_path).expect("config");
    let events = bed.dir.path.join("events.jsonl");
    let edited = shipped
        .replace("lan = [\"eth1\"]", &format!("lan = [\"{LAN_IFACE}\"]"))
        .replace("profile = \"balanced\"", "profile = \"none\"")
        .replace("dns-upstream = \"9.9.9.9:53\"", &format!("dns-upstream = \"{DNS_UPSTREAM}\""))
        .replace("/var/log/hushwall/events.jsonl", events.to_str().expect("utf-8"));
    assert_ne!(edited, shipped);
    let edited = format!(
        "{edited}\nblocklist = [\"{}\"]\nrun-dir = \"{}\"\nstore = \"{}\"\n",
        bed.tb.test_list.display(),
        bed.run_dir().display(),
        root.join("var/lib/hushwall/lists").display()
    );
    std::fs::write(&config_path, edited).expect("write config");

    // The unit's command line, with the installed root's paths.
    let argv: Vec<String> = exec_start
        .split_whitespace()
        .map(|a| match a {
            "/usr/bin/hushwall" => root.join("usr/bin/hushwall").display().to_string(),
            "/etc/hushwall/hushwall.toml" => config_path.display().to_string(),
            other => other.to_owned(),
        })
        .collect();
    let (program, args) = argv.split_first().expect("a program");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (notify, notify_path) = notify_socket(&bed.dir.path);
    let cmd = bed.gateway_command(Path::new(program), &args, Some(&notify_path));
    let mut gateway = Background::spawn("unit", cmd, &bed.dir.path.join("unit.log"));
    wait_ready(&notify, &gateway);
    bed.check_lan_host();
    assert_eq!(mode(&events), 0o600, "events file mode");

    // ExecReload: SIGHUP re-reads the lists.
    signal(gateway.child.id(), "HUP");
    gateway.wait_for_log("hushwall: lists reloaded", STEP);

    stop(&mut gateway);
    assert_eq!(bed.routing(), before, "stopping the unit's command must leave no rule or route behind");
    let forbidden = bed.tb.forbidden_packets();
    assert!(forbidden.is_empty(), "packets reached telemetry addresses:\n{}", forbidden.join("\n"));
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf()
}

/// How the live status line starts (carriage return, erase line).
const LIVE_LINE: &str = "\r\x1b[2Khushwall: 0 blocked, 0 flows open";

#[test]
fn live_status_line_on_a_terminal_unless_quiet() {
    for quiet in [false, true] {
        let ns = Netns::create();
        let dir = TempDir::create();
        // script(1) gives the engine a pseudo-terminal and copies what it draws to its own output (the log).
        let engine = format!(
            "exec {} run --tun hw0 --profile none --no-store{}",
            hushwall_bin().display(),
            if quiet { " --quiet" } else { "" }
        );
        let mut cmd = ns.command("script");
        cmd.args(["-qfec", &engine, "/dev/null"]);
        let mut script = Background::spawn("script", cmd, &dir.path.join("pty.log"));
        script.wait_for_log(READY, STEP);
        if !quiet {
            script.wait_for_log(LIVE_LINE, STEP);
        }
        // Stop the engine itself (script would turn a SIGTERM into a SIGHUP, which reloads the lists).
        let pids = run_ok(command("ip", &["netns", "pids", &ns.name]), STEP).stdout;
        let engine_pid = pids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "hushwall"))
            .expect("the engine's pid");
        signal(engine_pid, "TERM");
        let status = hushwall_tests::proc::wait_deadline(&mut script.child, STEP);
        assert!(status.is_some(), "script did not end:\n{}", script.log_text());
        let log = script.log_text();
        assert!(log.contains("hushwall: stopped;"), "{log}");
        assert_eq!(log.contains(LIVE_LINE), !quiet, "quiet={quiet}: {log:?}");
    }
}
