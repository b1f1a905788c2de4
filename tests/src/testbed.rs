//! [`Testbed`]: a `phone` and an `internet` network namespace joined by a veth pair, real servers and a
//! packet capture on the internet side, and (optionally) the Hushwall engine on a tun device in the phone.
//!
//! ```text
//!  phone netns (hwp-<pid>-<n>)                         internet netns (hwi-<pid>-<n>)
//!  apps: curl, dig, client.py                          lo: 198.18.1.1-3, 198.19.0.10, fd00:6877:1::1-3, …
//!   │ default routes (v4, v6)                          dnsmasq :53 on 198.18.0.1 / fd00:6877::1
//!   ▼                                                  servers.py: http :80, https :443, banner :7777,
//!  hw0 (tun) 10.111.0.1 fd00:6877:f::1                             udp echo :7
//!   │  hushwall run --tun hw0                          tcpdump -i veth0 -w cap.pcap
//!   ▼ upstream sockets with SO_MARK 0x6877                  ▲
//!  ip rule fwmark 0x6877 → table 100 → veth0 ──────────────┘ veth0 198.18.0.1 fd00:6877::1
//!  veth0 198.18.0.2 fd00:6877::2
//! ```
//!
//! In no-engine mode the phone's default routes go straight to the veth and the internet namespace also answers
//! DNS on the "outside" resolver addresses, so the topology can be checked without the engine.
//!
//! `Drop` stops every process, deletes both namespaces, the netns resolv.conf and the temporary directory, also
//! when a test panics (then it first prints the logs). Namespaces left by a crashed earlier run (their creator's
//! pid is gone) are removed when the first test bed of a process starts.

use crate::pki::{self, Pki};
use crate::proc::{command, require_program, require_root, run, run_ok, signal, Background};
use crate::topology::*;
use serde_json::Value;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Prefix of phone namespace names.
pub const PHONE_PREFIX: &str = "hwp-";
/// Prefix of internet namespace names.
pub const INTERNET_PREFIX: &str = "hwi-";
/// Prefix of test bed directories under the temporary directory.
pub const DIR_PREFIX: &str = "hushwall-e2e-";
/// Size of the deterministic large body served at `/big` (10 MiB and an odd tail).
pub const BIG_SIZE: usize = 10 * 1024 * 1024 + 12_345;

const SERVERS_PY: &str = include_str!("../scripts/servers.py");
const CLIENT_PY: &str = include_str!("../scripts/client.py");
const STEP: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);
static STALE: Once = Once::new();

/// How to run the engine in the phone namespace.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The `hushwall` binary.
    pub bin: PathBuf,
    /// `--profile`.
    pub profile: String,
    /// Pass the test list (`tests/data/test-blocklist.txt`) as a `--blocklist`.
    pub test_list: bool,
    /// More arguments after the standard ones (`--blocklist X`, `--log-allowed`, …).
    pub extra_args: Vec<OsString>,
}

impl EngineConfig {
    /// Profile `none`, the test list, the binary from [`hushwall_bin`].
    pub fn from_env() -> EngineConfig {
        EngineConfig { bin: hushwall_bin(), profile: "none".into(), test_list: true, extra_args: Vec::new() }
    }
}

/// The `hushwall` binary: `$HUSHWALL_BIN`, else `<target dir>/release/hushwall` of this workspace.
///
/// # Panics
/// If the file does not exist, or if it is older than a source file of this checkout it is built from (see
/// [`stale_source`]): a test run against a stale binary tests old code. Either way the message says how to build.
pub fn hushwall_bin() -> PathBuf {
    let path = match std::env::var_os("HUSHWALL_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"));
            target.join("release/hushwall")
        }
    };
    assert!(
        path.is_file(),
        "the hushwall binary is missing at {}: build it with `cargo build --release -p hushwall` \
         or point HUSHWALL_BIN at it",
        path.display()
    );
    if let Some(source) = stale_source(&path) {
        panic!(
            "the hushwall binary at {} is older than {}, one of the sources it is built from: rebuild it with \
             `cargo build --release -p hushwall` (or point HUSHWALL_BIN at a current build)",
            path.display(),
            source.display()
        );
    }
    path
}

/// The CLI's entry point, relative to the workspace root: how the build's root is found in a dep-info file.
const BIN_MAIN: &str = "cli/src/main.rs";

/// A source file of this checkout modified after the binary `bin` was written, if any.
///
/// The sources are those cargo's dep-info (`<bin>.d`) lists, moved onto this checkout (a target directory copied
/// from another checkout lists that checkout's paths); without a dep-info, every file of the crates the binary is
/// built from (`cli`, `core`, `driver`) and `Cargo.lock`.
///
/// # Panics
/// If a modification time cannot be read.
pub fn stale_source(bin: &Path) -> Option<PathBuf> {
    stale_source_in(bin, &workspace_root())
}

/// [`stale_source`] for the checkout at `root`.
fn stale_source_in(bin: &Path, root: &Path) -> Option<PathBuf> {
    let mtime = |p: &Path| {
        std::fs::metadata(p).and_then(|m| m.modified()).unwrap_or_else(|e| panic!("mtime of {}: {e}", p.display()))
    };
    let built = mtime(bin);
    let mut sources = match std::fs::read_to_string(bin.with_extension("d")) {
        Ok(dep_info) => dep_info_sources(&dep_info, root),
        Err(_) => ["cli", "core", "driver"].iter().flat_map(|c| files_under(&root.join(c))).collect(),
    };
    sources.push(root.join("Cargo.lock"));
    sources.into_iter().filter(|s| s.exists()).find(|s| mtime(s) > built)
}

/// The sources a cargo dep-info file lists that lie in the checkout it was built in, as paths under `root`.
fn dep_info_sources(dep_info: &str, root: &Path) -> Vec<PathBuf> {
    let first = dep_info.lines().next().unwrap_or("");
    let deps = first.split_once(": ").map_or("", |(_, d)| d);
    // Spaces inside paths are escaped as `\ `.
    let paths: Vec<String> = deps.replace("\\ ", "\0").split_whitespace().map(|p| p.replace('\0', " ")).collect();
    let Some(build_root) = paths.iter().find_map(|p| p.strip_suffix(BIN_MAIN)) else {
        panic!("the dep-info of the hushwall binary does not list {BIN_MAIN}: {first}");
    };
    paths.iter().filter_map(|p| p.strip_prefix(build_root)).map(|rel| root.join(rel)).collect()
}

/// Every file under `dir`, recursively, skipping `target` directories.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            if e.file_name() != "target" {
                out.extend(files_under(&path));
            }
        } else {
            out.push(path);
        }
    }
    out
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run the engine (`None`: no-engine mode, phone routes go straight to the veth).
    pub engine: Option<EngineConfig>,
    /// Extra DNS host records (name, addresses) besides [`host_records`]; the server certificate covers them.
    pub extra_hosts: Vec<(String, Vec<String>)>,
}

impl Options {
    /// No engine: checks the topology alone.
    pub fn no_engine() -> Options {
        Options::default()
    }

    /// The engine with profile `none` and the test list.
    pub fn engine() -> Options {
        Options { engine: Some(EngineConfig::from_env()), ..Options::default() }
    }

    /// Sets the engine's `--profile`.
    pub fn profile(mut self, profile: &str) -> Options {
        if let Some(e) = self.engine.as_mut() {
            e.profile = profile.into();
        }
        self
    }

    /// Appends an argument to the engine's command line.
    pub fn engine_arg(mut self, arg: impl Into<OsString>) -> Options {
        if let Some(e) = self.engine.as_mut() {
            e.extra_args.push(arg.into());
        }
        self
    }

    /// Adds a DNS host record.
    pub fn host_record(mut self, name: &str, addrs: &[&str]) -> Options {
        self.extra_hosts.push((name.into(), addrs.iter().map(|a| a.to_string()).collect()));
        self
    }
}

/// One test bed. See the module documentation.
#[derive(Debug)]
pub struct Testbed {
    /// `<pid>-<n>`, unique among live test beds on this machine.
    pub id: String,
    /// The phone namespace.
    pub phone: String,
    /// The internet namespace.
    pub internet: String,
    /// Temporary directory with every file of this test bed.
    pub dir: PathBuf,
    /// CA and server certificate.
    pub pki: Pki,
    /// The large body served at `/big`.
    pub big: PathBuf,
    /// This test bed's copy of the test list (the path the engine reports in events).
    pub test_list: PathBuf,
    /// The engine's `--events` file.
    pub events_path: PathBuf,
    /// The servers' JSON-lines log.
    pub server_log_path: PathBuf,
    /// The capture on the internet side of the veth.
    pub capture_path: PathBuf,
    /// The client script.
    pub client_py: PathBuf,
    engine_config: Option<EngineConfig>,
    namespaces: Vec<String>,
    resolv_dir: Option<PathBuf>,
    engine: Option<Background>,
    capture: Option<Background>,
    others: Vec<Background>,
    extra_hosts: Vec<(String, Vec<String>)>,
}

impl Testbed {
    /// Builds the whole test bed and waits until every part is ready.
    ///
    /// # Panics
    /// If not root, a tool is missing, or any step fails (whatever was built is torn down again).
    pub fn start(options: Options) -> Testbed {
        require_root();
        for (program, package) in [
            ("ip", "iproute2"),
            ("dig", "bind9-dnsutils"),
            ("dnsmasq", "dnsmasq-base"),
            ("tcpdump", "tcpdump"),
            ("python3", "python3"),
            ("openssl", "openssl"),
            ("curl", "curl"),
            ("sha256sum", "coreutils"),
        ] {
            require_program(program, package);
        }
        STALE.call_once(cleanup_stale);

        let pid = std::process::id();
        let id = format!("{pid}-{}", COUNTER.fetch_add(1, Ordering::SeqCst));
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test bed directory");
        let mut tb = Testbed {
            phone: format!("{PHONE_PREFIX}{id}"),
            internet: format!("{INTERNET_PREFIX}{id}"),
            pki: Pki { ca_cert: PathBuf::new(), server_cert: PathBuf::new(), server_key: PathBuf::new() },
            big: dir.join("big.bin"),
            test_list: dir.join("test-blocklist.txt"),
            events_path: dir.join("events.jsonl"),
            server_log_path: dir.join("servers.jsonl"),
            capture_path: dir.join("cap.pcap"),
            client_py: dir.join("client.py"),
            dir,
            id,
            engine_config: options.engine,
            namespaces: Vec::new(),
            resolv_dir: None,
            engine: None,
            capture: None,
            others: Vec::new(),
            extra_hosts: options.extra_hosts,
        };
        // From here on a panic drops `tb`, which removes whatever exists so far.
        tb.write_files();
        tb.build_namespaces();
        tb.start_servers();
        if tb.engine_config.is_some() {
            tb.start_engine();
        } else {
            tb.ip_phone(&["route", "add", "default", "via", INTERNET_VETH_V4, "dev", VETH]);
            tb.ip_phone(&["-6", "route", "add", "default", "via", INTERNET_VETH_V6, "dev", VETH]);
        }
        tb
    }

    /// True if the engine runs in this test bed.
    pub fn has_engine(&self) -> bool {
        self.engine_config.is_some()
    }

    fn write_files(&mut self) {
        let w =
            |p: &Path, data: &[u8]| std::fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        w(&self.test_list, TEST_BLOCKLIST.as_bytes());
        w(&self.dir.join("servers.py"), SERVERS_PY.as_bytes());
        w(&self.client_py, CLIENT_PY.as_bytes());
        w(&self.big, &big_body());
        let extra: Vec<String> = self.extra_hosts.iter().map(|(n, _)| n.clone()).collect();
        self.pki = pki::generate(&self.dir, &extra);
    }

    fn build_namespaces(&mut self) {
        for ns in [self.phone.clone(), self.internet.clone()] {
            run_ok(command("ip", &["netns", "add", &ns]), STEP);
            self.namespaces.push(ns);
        }
        let (p, i) = (self.phone.clone(), self.internet.clone());
        run_ok(
            command("ip", &["link", "add", VETH, "netns", &p, "type", "veth", "peer", "name", VETH, "netns", &i]),
            STEP,
        );

        // Internet side: server addresses on lo, the veth with the DNS server's addresses.
        self.ip_internet(&["link", "set", "lo", "up"]);
        let mut lo_addrs = server_addresses();
        if !self.has_engine() {
            lo_addrs.extend([OUTSIDE_RESOLVER_V4, OUTSIDE_RESOLVER_V6]);
        }
        for a in lo_addrs {
            if a.contains(':') {
                self.ip_internet(&["-6", "addr", "add", &format!("{a}/128"), "dev", "lo", "nodad"]);
            } else {
                self.ip_internet(&["addr", "add", &format!("{a}/32"), "dev", "lo"]);
            }
        }
        self.ip_internet(&["addr", "add", &format!("{INTERNET_VETH_V4}/24"), "dev", VETH]);
        self.ip_internet(&["-6", "addr", "add", &format!("{INTERNET_VETH_V6}/64"), "dev", VETH, "nodad"]);
        self.ip_internet(&["link", "set", VETH, "up"]);

        // Phone side: the veth only; routes come with the engine (or straight to the veth).
        self.ip_phone(&["link", "set", "lo", "up"]);
        self.ip_phone(&["addr", "add", &format!("{PHONE_VETH_V4}/24"), "dev", VETH]);
        self.ip_phone(&["-6", "addr", "add", &format!("{PHONE_VETH_V6}/64"), "dev", VETH, "nodad"]);
        self.ip_phone(&["link", "set", VETH, "up"]);
        self.disable_rp_filter(&["all", "default", "lo", VETH]);

        // The phone's resolver is an "outside" address; only the engine's interception answers it.
        let resolv_dir = PathBuf::from("/etc/netns").join(&self.phone);
        std::fs::create_dir_all(&resolv_dir).expect("create /etc/netns/<phone>");
        self.resolv_dir = Some(resolv_dir.clone());
        std::fs::write(resolv_dir.join("resolv.conf"), format!("nameserver {OUTSIDE_RESOLVER_V4}\n"))
            .expect("write netns resolv.conf");
    }

    fn disable_rp_filter(&self, interfaces: &[&str]) {
        let script: String =
            interfaces.iter().map(|i| format!("echo 0 > /proc/sys/net/ipv4/conf/{i}/rp_filter; ")).collect();
        run_ok(self.phone_command("sh", &["-c", &script]), STEP);
    }

    fn start_servers(&mut self) {
        // The capture first, so it sees everything.
        let mut cap = self.internet_command(
            "tcpdump",
            &["-i", VETH, "-nn", "-U", "--immediate-mode", "-s", "256", "-Z", "root", "-w"],
        );
        cap.arg(&self.capture_path);
        let mut cap = Background::spawn("tcpdump", cap, &self.dir.join("tcpdump.log"));
        cap.wait_for_log("listening on", STEP);
        self.capture = Some(cap);

        let mut dns = self.internet_command(
            "dnsmasq",
            &[
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--pid-file",
                "--user=root",
                "--port=53",
                "--local-ttl=300",
                "--log-queries",
                "--log-facility=-",
            ],
        );
        let mut listen = vec![INTERNET_VETH_V4, INTERNET_VETH_V6];
        if !self.has_engine() {
            listen.extend([OUTSIDE_RESOLVER_V4, OUTSIDE_RESOLVER_V6]);
        }
        for a in listen {
            dns.arg(format!("--listen-address={a}"));
        }
        let mut records: Vec<(String, Vec<String>)> = host_records()
            .into_iter()
            .map(|(n, a)| (n.to_string(), a.into_iter().map(String::from).collect()))
            .collect();
        records.extend(self.extra_hosts.iter().cloned());
        for (name, addrs) in records {
            dns.arg(format!("--host-record={name},{}", addrs.join(",")));
        }
        for (alias, target) in cname_records() {
            dns.arg(format!("--cname={alias},{target}"));
        }
        self.others.push(Background::spawn("dnsmasq", dns, &self.dir.join("dnsmasq.log")));

        let mut srv = self.internet_command("python3", &["-u"]);
        srv.arg(self.dir.join("servers.py"));
        srv.arg("--log").arg(&self.server_log_path);
        srv.arg("--big").arg(&self.big);
        srv.arg("--cert").arg(&self.pki.server_cert);
        srv.arg("--key").arg(&self.pki.server_key);
        for a in server_addresses() {
            srv.arg("--udp-addr").arg(a);
        }
        let mut srv = Background::spawn("servers", srv, &self.dir.join("servers.log"));
        srv.wait_for_log("servers: ready", STEP);
        self.others.push(srv);

        // dnsmasq is ready when it answers.
        let deadline = Instant::now() + STEP;
        loop {
            let r = run(
                self.internet_command("dig", &["@198.18.0.1", "+short", "+time=1", "+tries=1", NORMAL_NAME, "A"]),
                STEP,
            );
            if r.stdout.trim() == Family::V4.normal() {
                break;
            }
            let dnsmasq = self.others.iter_mut().find(|b| b.name == "dnsmasq").expect("dnsmasq");
            if let Some(status) = dnsmasq.try_exit() {
                panic!("dnsmasq exited ({status}):\n{}", dnsmasq.log_text());
            }
            assert!(Instant::now() < deadline, "dnsmasq does not answer: {r}\n{}", dnsmasq.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_engine(&mut self) {
        let cfg = self.engine_config.clone().expect("engine config");
        let mut cmd = self.phone_command_os(cfg.bin.as_os_str(), &[]);
        cmd.args(["run", "--tun", TUN, "--profile", &cfg.profile]);
        if cfg.test_list {
            cmd.arg("--blocklist").arg(&self.test_list);
        }
        cmd.args(["--dns-upstream", DNS_UPSTREAM]);
        cmd.arg("--events").arg(&self.events_path);
        cmd.args(&cfg.extra_args);
        let mut engine = Background::spawn("engine", cmd, &self.dir.join("engine.log"));
        engine.wait_for_log(&format!("hushwall: ready on {TUN}"), STEP);
        self.engine = Some(engine);

        // What VpnService.Builder does on a phone: address, routes into the tun; plus "protect()" routing.
        self.ip_phone(&["addr", "add", &format!("{PHONE_TUN_V4}/32"), "dev", TUN]);
        self.ip_phone(&["-6", "addr", "add", &format!("{PHONE_TUN_V6}/128"), "dev", TUN, "nodad"]);
        self.ip_phone(&["link", "set", TUN, "up"]);
        self.disable_rp_filter(&[TUN]);
        self.ip_phone(&["route", "add", "default", "dev", TUN, "src", PHONE_TUN_V4]);
        self.ip_phone(&["-6", "route", "add", "default", "dev", TUN, "src", PHONE_TUN_V6]);
        for v6 in [false, true] {
            let fam: &[&str] = if v6 { &["-6"] } else { &[] };
            let via = if v6 { INTERNET_VETH_V6 } else { INTERNET_VETH_V4 };
            let mut rule = fam.to_vec();
            rule.extend(["rule", "add", "fwmark", FWMARK, "lookup", PROTECT_TABLE, "priority", "100"]);
            self.ip_phone(&rule);
            let mut route = fam.to_vec();
            route.extend(["route", "add", "default", "via", via, "dev", VETH, "table", PROTECT_TABLE]);
            self.ip_phone(&route);
        }
    }

    /// `ip netns exec <phone> program args…`.
    pub fn phone_command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = command("ip", &["netns", "exec", &self.phone, program]);
        c.args(args);
        c
    }

    fn phone_command_os(&self, program: &std::ffi::OsStr, args: &[&str]) -> Command {
        let mut c = command("ip", &["netns", "exec", &self.phone]);
        c.arg(program).args(args);
        c
    }

    /// `ip netns exec <internet> program args…`.
    pub fn internet_command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = command("ip", &["netns", "exec", &self.internet, program]);
        c.args(args);
        c
    }

    /// Runs `ip -n <phone> args…`, panicking on failure.
    pub fn ip_phone(&self, args: &[&str]) {
        let mut c = command("ip", &["-n", &self.phone]);
        c.args(args);
        run_ok(c, STEP);
    }

    /// Runs `ip -n <internet> args…`, panicking on failure.
    pub fn ip_internet(&self, args: &[&str]) {
        let mut c = command("ip", &["-n", &self.internet]);
        c.args(args);
        run_ok(c, STEP);
    }

    /// The engine's output so far (empty without an engine).
    pub fn engine_log(&self) -> String {
        self.engine.as_ref().map(|e| e.log_text()).unwrap_or_default()
    }

    /// The engine's process id, if it runs.
    pub fn engine_pid(&self) -> Option<u32> {
        self.engine.as_ref().map(|e| e.child.id())
    }

    /// Stops the engine with `sig` (e.g. `TERM`, `INT`) and returns its exit status.
    ///
    /// # Panics
    /// Without an engine, or if it does not exit within 5 s (it is killed then).
    pub fn stop_engine(&mut self, sig: &str) -> ExitStatus {
        let engine = self.engine.as_mut().expect("this test bed runs no engine");
        match engine.stop(sig, Duration::from_secs(5)) {
            Some(status) => status,
            None => panic!("the engine did not exit within 5 s of SIG{sig}; output:\n{}", engine.log_text()),
        }
    }

    /// True while the engine process runs.
    pub fn engine_running(&mut self) -> bool {
        self.engine.as_mut().is_some_and(|e| e.try_exit().is_none())
    }

    /// Every event the engine wrote so far (a trailing partial line is ignored).
    ///
    /// # Panics
    /// If a complete line is not JSON.
    pub fn events(&self) -> Vec<Value> {
        read_json_lines(&self.events_path)
    }

    /// Waits until an event matching `pred` appears; returns it, or `None` after `timeout`.
    pub fn wait_for_event(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(&pred) {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the servers logged so far (see `tests/scripts/servers.py`).
    pub fn server_log(&self) -> Vec<Value> {
        read_json_lines(&self.server_log_path)
    }

    /// dnsmasq's log (it logs every query).
    pub fn dns_log(&self) -> String {
        self.others.iter().find(|b| b.name == "dnsmasq").map(|b| b.log_text()).unwrap_or_default()
    }

    /// Stops the capture: tcpdump flushes its file and exits on SIGINT. Idempotent.
    ///
    /// # Panics
    /// If tcpdump had to be killed (its file may then miss the last packets).
    pub fn stop_capture(&mut self) {
        if let Some(cap) = self.capture.as_mut() {
            let status = cap.stop("INT", Duration::from_secs(5));
            assert!(status.is_some(), "tcpdump did not exit on SIGINT: the capture may be incomplete");
        }
    }

    /// Stops the capture and checks that it is complete: tcpdump's exit summary says the kernel dropped no
    /// packet, so "no packet matched" means none was sent.
    ///
    /// # Panics
    /// If the summary is missing or reports drops.
    pub fn assert_capture_complete(&mut self) {
        self.stop_capture();
        let log = self.capture.as_ref().map(|c| c.log_text()).expect("this test bed has a capture");
        let dropped = log
            .lines()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("tcpdump printed no exit summary:\n{log}"));
        assert_eq!(dropped, 0, "the capture lost packets, so it proves nothing:\n{log}");
    }

    /// Stops the capture and returns the packets matching the tcpdump `filter`, one line each.
    ///
    /// # Panics
    /// If tcpdump cannot read the capture.
    pub fn captured(&mut self, filter: &str) -> Vec<String> {
        self.stop_capture();
        let mut c = command("tcpdump", &["-nn", "-r"]);
        c.arg(&self.capture_path).arg(filter);
        let r = run_ok(c, Duration::from_secs(60));
        r.stdout.lines().map(String::from).collect()
    }

    /// Stops the capture and returns every captured packet to or from a forbidden address
    /// ([`forbidden_addresses`]): telemetry hosts and blocked ranges.
    pub fn forbidden_packets(&mut self) -> Vec<String> {
        self.captured(FORBIDDEN_FILTER)
    }

    fn dump_diagnostics(&self) {
        eprintln!("==== test bed {} failed; files in {} ====", self.id, self.dir.display());
        let mut logs: Vec<(&str, String)> = Vec::new();
        if let Some(e) = &self.engine {
            logs.push(("engine", e.log_text()));
        }
        for b in &self.others {
            logs.push((&b.name, b.log_text()));
        }
        logs.push(("events", std::fs::read_to_string(&self.events_path).unwrap_or_default()));
        logs.push(("server log", std::fs::read_to_string(&self.server_log_path).unwrap_or_default()));
        for (name, text) in logs {
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!("---- {name} (last {} of {} lines) ----", tail.len(), lines.len());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_diagnostics();
        }
        if let Some(e) = self.engine.as_mut() {
            e.stop("TERM", Duration::from_secs(3));
        }
        self.stop_capture();
        for b in self.others.iter_mut() {
            b.stop("KILL", Duration::from_secs(3));
        }
        for ns in self.namespaces.drain(..).rev() {
            purge_namespace(&ns);
        }
        if let Some(d) = self.resolv_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
        if std::env::var_os("HUSHWALL_E2E_KEEP").is_some() {
            eprintln!("test bed {}: keeping {}", self.id, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A bare network namespace (only `lo`, down) for running the engine where it cannot touch anything, e.g. to
/// check how it rejects bad arguments. Named like a phone namespace so stale cleanup covers it; `Drop` kills
/// whatever runs inside and deletes it.
#[derive(Debug)]
pub struct Netns {
    /// The namespace's name.
    pub name: String,
}

impl Netns {
    /// Creates the namespace.
    ///
    /// # Panics
    /// If not root or `ip netns add` fails.
    pub fn create() -> Netns {
        require_root();
        STALE.call_once(cleanup_stale);
        let name = format!("{PHONE_PREFIX}{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        run_ok(command("ip", &["netns", "add", &name]), STEP);
        Netns { name }
    }

    /// `ip netns exec <name> program`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = command("ip", &["netns", "exec", &self.name]);
        c.arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        purge_namespace(&self.name);
    }
}

/// A temporary directory named like a test bed's (so stale cleanup covers it), removed on `Drop`.
#[derive(Debug)]
pub struct TempDir {
    /// The directory.
    pub path: PathBuf,
}

impl TempDir {
    /// Creates an empty directory.
    ///
    /// # Panics
    /// If it cannot be created.
    pub fn create() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Kills every process inside namespace `ns`, then deletes it.
fn purge_namespace(ns: &str) {
    let pids = run(command("ip", &["netns", "pids", ns]), STEP);
    for pid in pids.stdout.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
        signal(pid, "KILL");
    }
    let _ = run(command("ip", &["netns", "del", ns]), STEP);
}

/// The creator pid encoded in a test bed name (`hwp-<pid>-<n>`), if `name` is one.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PHONE_PREFIX).or_else(|| name.strip_prefix(INTERNET_PREFIX))?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces, netns resolv.conf directories and temporary directories left by test beds whose
/// process no longer exists (a crashed or killed earlier run).
pub fn cleanup_stale() {
    let me = std::process::id();
    let stale = |name: &str| creator_pid(name).is_some_and(|pid| pid != me && !alive(pid));
    let list = run(command("ip", &["netns", "list"]), STEP);
    for line in list.stdout.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if stale(name) {
            eprintln!("test bed: removing stale namespace {name}");
            purge_namespace(name);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/etc/netns") {
        for e in entries.flatten() {
            if stale(&e.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(DIR_PREFIX) {
                if stale(&format!("{PHONE_PREFIX}{rest}")) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
}

/// Reads a JSON-lines file; a last line without its newline is skipped (it may be half written).
///
/// Every file read here is opened by its writer before the writer reports ready (the engine's `--events`, the
/// servers' logs), so a missing file is an error, never "no lines yet": an empty answer from a file that does not
/// exist would let every "nothing was logged" assertion pass vacuously.
///
/// # Panics
/// If the file cannot be read or a complete line is not JSON.
pub fn read_json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: not a JSON line ({e}): {l}", path.display())))
        .collect()
}

/// The deterministic large body: [`BIG_SIZE`] bytes from a fixed-seed xorshift generator.
pub fn big_body() -> Vec<u8> {
    let mut x: u64 = 0x6877_6877_6877_6877;
    let mut out = Vec::with_capacity(BIG_SIZE + 8);
    while out.len() < BIG_SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(BIG_SIZE);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    #[should_panic(expected = "read ")]
    fn a_missing_json_lines_file_is_an_error() {
        read_json_lines(Path::new("/nonexistent/hushwall-events.jsonl"));
    }

    #[test]
    fn dep_info_paths_are_moved_onto_this_checkout() {
        let d = "/a/t/release/hushwall: /a/cli/src/main.rs /a/core/src/x\\ y.rs /home/.cargo/registry/z.rs\n";
        let got = dep_info_sources(d, Path::new("/b"));
        assert_eq!(got, vec![PathBuf::from("/b/cli/src/main.rs"), PathBuf::from("/b/core/src/x y.rs")]);
    }

    /// A binary written before one of its sources changed is stale; written after, it is not.
    #[test]
    fn a_binary_older_than_a_source_is_stale() {
        let dir = TempDir::create();
        let root = dir.path.join("checkout");
        std::fs::create_dir_all(root.join("cli/src")).expect("mkdir");
        let main = root.join("cli/src/main.rs");
        std::fs::write(&main, "fn main() {}").expect("write");
        let bin = dir.path.join("hushwall");
        std::fs::write(&bin, "binary").expect("write");
        let dep_info = format!("{}: /elsewhere/cli/src/main.rs\n", bin.display());
        std::fs::write(bin.with_extension("d"), dep_info).expect("write");
        let set = |p: &Path, t: SystemTime| {
            std::fs::File::options().write(true).open(p).and_then(|f| f.set_modified(t)).expect("set mtime")
        };
        let now = SystemTime::now();
        set(&main, now - Duration::from_secs(60));
        set(&bin, now - Duration::from_secs(30));
        assert_eq!(stale_source_in(&bin, &root), None, "built after its source");
        set(&main, now);
        assert_eq!(stale_source_in(&bin, &root), Some(main), "a source changed after the build");
    }
}
