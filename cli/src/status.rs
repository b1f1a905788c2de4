//! What a running engine tells its operator: counters over a root-only Unix control socket (`hushwall status`),
//! optionally Prometheus text over HTTP (`--metrics`), and a one-line live status on a terminal.

use clap::Args;
use hushwall_core::engine::Stats;
use hushwall_core::event::Event;
use hushwall_core::verdict::Action;
use hushwall_driver::lists::Store;
use hushwall_driver::{Control, EventSink};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Where `hushwall gateway` listens and `hushwall status` asks unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/hushwall/control.sock";
/// Distinct blocked hosts counted one by one; past this, blocks of new hosts are counted as `(other)`.
const MAX_HOSTS: usize = 10_000;
/// Hosts listed in the status.
const TOP_HOSTS: usize = 10;

/// Status options of `run` and `gateway`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Answer `hushwall status` on this Unix socket (mode 0600; its directory is created 0700 if missing).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Serve Prometheus metrics (text format) over HTTP on IP:PORT; loopback only unless
    /// --metrics-allow-remote.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Let --metrics listen on a non-loopback address.
    #[arg(long, requires = "metrics")]
    pub metrics_allow_remote: bool,
    /// No live status line on a terminal.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `hushwall status`.
#[derive(Debug, Args)]
pub struct StatusCmdArgs {
    /// The engine's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the engine's answer as JSON (for scripts).
    #[arg(long)]
    json: bool,
}

/// What blocks and errors the engine reported, tallied from its events.
#[derive(Debug, Default)]
struct Tally {
    blocks_by_reason: BTreeMap<String, u64>,
    errors_by_kind: BTreeMap<String, u64>,
    blocked_hosts: HashMap<String, u64>,
    last_blocked: Option<String>,
}

/// Counts events on their way to the real sink.
pub struct Counting {
    inner: Box<dyn EventSink>,
    tally: Arc<Mutex<Tally>>,
}

impl EventSink for Counting {
    fn deliver(&mut self, events: &[Event]) {
        {
            let mut tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
            for event in events {
                tally.count(event);
            }
        }
        self.inner.deliver(events);
    }
}

impl Tally {
    /// Counts an event; a summary of folded identical events (`repeats`) counts for each of them.
    fn count(&mut self, event: &Event) {
        let n = event.repeats.unwrap_or(1);
        match event.action() {
            Action::Block => {
                *self.blocks_by_reason.entry(event.reason().code().to_owned()).or_default() += n;
                let host = event.host.clone().unwrap_or_else(|| event.dst.ip().to_string());
                let key = if self.blocked_hosts.len() < MAX_HOSTS || self.blocked_hosts.contains_key(&host) {
                    host.clone()
                } else {
                    "(other)".to_owned()
                };
                *self.blocked_hosts.entry(key).or_default() += n;
                self.last_blocked = Some(host);
            }
            Action::Error => {
                *self.errors_by_kind.entry(event.reason().code().to_owned()).or_default() += n;
            }
            _ => {}
        }
    }
}

/// One blocked host and how often it was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCount {
    /// Name (or address when no name was known).
    pub host: String,
    /// Blocks.
    pub blocks: u64,
}

/// The engine's counters as the control socket reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// TCP flows opened.
    pub tcp_flows: u64,
    /// UDP flows opened (not counting DNS).
    pub udp_flows: u64,
    /// TCP flows open now.
    pub tcp_active: u64,
    /// UDP flows open now.
    pub udp_active: u64,
    /// DNS queries seen.
    pub dns_queries: u64,
    /// Blocks of any kind.
    pub blocked: u64,
    /// Failures of allowed traffic upstream.
    pub upstream_errors: u64,
    /// Idle flows closed to make room at the flow caps.
    pub flows_evicted: u64,
    /// Packets read from the tun.
    pub packets_in: u64,
    /// Packets written to the tun.
    pub packets_out: u64,
    /// Packets that did not parse.
    pub malformed: u64,
    /// Events lost to a full queue.
    pub events_dropped: u64,
}

impl From<Stats> for Counters {
    fn from(s: Stats) -> Counters {
        Counters {
            tcp_flows: s.tcp_flows,
            udp_flows: s.udp_flows,
            tcp_active: s.tcp_active,
            udp_active: s.udp_active,
            dns_queries: s.dns_queries,
            blocked: s.blocked,
            upstream_errors: s.upstream_errors,
            flows_evicted: s.flows_evicted,
            packets_in: s.packets_in,
            packets_out: s.packets_out,
            malformed: s.malformed,
            events_dropped: s.events_dropped,
        }
    }
}

/// The answer on the control socket (and the source of the metrics and the live line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Hushwall's version.
    pub version: String,
    /// Seconds since the engine started.
    pub uptime_secs: u64,
    /// The list store's generation in force on disk (`hushwall lists update`), if any.
    pub list_generation: Option<String>,
    /// The engine's counters (flows, packets, DNS queries, blocks, errors).
    pub engine: Counters,
    /// Blocks by reason (`dns_query`, `tls_sni`, …).
    pub blocks_by_reason: BTreeMap<String, u64>,
    /// Failures of allowed traffic by kind (`connect_failed`, `dns_failed`, …).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The most often blocked hosts, most first.
    pub top_blocked_hosts: Vec<HostCount>,
    /// The host blocked last.
    pub last_blocked: Option<String>,
}

/// The status services of one engine run; removes the control socket when dropped.
pub struct Status {
    control: Arc<Control>,
    tally: Arc<Mutex<Tally>>,
    started: Instant,
    store: Option<PathBuf>,
}

impl Status {
    /// Wraps the engine's event sink so blocks and errors are tallied.
    pub fn new(events: Box<dyn EventSink>, control: Arc<Control>, store: Option<PathBuf>) -> (Arc<Status>, Counting) {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let status = Arc::new(Status { control, tally: Arc::clone(&tally), started: Instant::now(), store });
        (status, Counting { inner: events, tally })
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let tally = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        let mut hosts: Vec<HostCount> =
            tally.blocked_hosts.iter().map(|(host, &blocks)| HostCount { host: host.clone(), blocks }).collect();
        hosts.sort_by(|a, b| b.blocks.cmp(&a.blocks).then_with(|| a.host.cmp(&b.host)));
        hosts.truncate(TOP_HOSTS);
        Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_secs: self.started.elapsed().as_secs(),
            list_generation: self
                .store
                .as_ref()
                .and_then(|dir| Store::new(dir).current().ok().flatten())
                .map(|g| g.name),
            engine: self.control.stats().into(),
            blocks_by_reason: tally.blocks_by_reason.clone(),
            errors_by_kind: tally.errors_by_kind.clone(),
            top_blocked_hosts: hosts,
            last_blocked: tally.last_blocked.clone(),
        }
    }
}

/// Refuses a metrics address off loopback unless allowed.
pub fn check_metrics_addr(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "--metrics {addr} is not a loopback address; the metrics name blocked hosts, so add \
             --metrics-allow-remote to serve them to the network"
        ))
    }
}

/// The running services; dropping it removes the control socket.
pub struct Services {
    socket: Option<PathBuf>,
    live: Option<LiveLine>,
}

impl Drop for Services {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            live.finish();
        }
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts what `args` ask for: the control socket, the metrics listener, the live line.
pub fn start(args: &StatusArgs, status: &Arc<Status>) -> Result<Services, String> {
    let mut services = Services { socket: None, live: None };
    if let Some(path) = &args.control_socket {
        let listener = bind_control(path)?;
        services.socket = Some(path.clone());
        let status = Arc::clone(status);
        spawn("control", move || {
            for stream in listener.incoming().flatten() {
                answer_control(stream, &status);
            }
        })?;
    }
    if let Some(addr) = args.metrics {
        check_metrics_addr(addr, args.metrics_allow_remote)?;
        let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
        let status = Arc::clone(status);
        spawn("metrics", move || {
            for stream in listener.incoming().flatten() {
                answer_metrics(stream, &status);
            }
        })?;
    }
    if show_live_line(args.quiet, io::stderr().is_terminal()) {
        services.live = Some(LiveLine::start(Arc::clone(status))?);
    }
    Ok(services)
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map(|_| ())
        .map_err(|e| format!("cannot start the {name} thread: {e}"))
}

/// Binds the control socket: its directory is created 0700 if missing, a stale socket left by a crashed
/// engine is replaced, a live one (another engine answering) or any other file at the path is refused.
fn bind_control(path: &Path) -> Result<UnixListener, String> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(format!("another engine answers on {shown}"));
            }
            std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket {shown}: {e}"))?;
        }
        Ok(_) => return Err(format!("{shown} exists and is not a socket")),
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| format!("cannot listen on {shown}: {e}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot make {shown} private: {e}"))?;
    Ok(listener)
}

/// Writes one snapshot as JSON and closes the connection (only the socket's owner, root, can connect: 0600).
fn answer_control(mut stream: UnixStream, status: &Status) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    if let Ok(mut json) = serde_json::to_vec(&status.snapshot()) {
        json.push(b'\n');
        let _ = stream.write_all(&json);
    }
}

/// Answers any HTTP request with the metrics and closes the connection.
fn answer_metrics(mut stream: std::net::TcpStream, status: &Status) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    // Read the request head (bounded), whatever it asks: there is one page.
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while head.len() < 16 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }
    let body = prometheus(&status.snapshot());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// The snapshot in Prometheus text exposition format (no host names: one series per host would be unbounded).
pub fn prometheus(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, series: &[(String, u64)]| {
        out.push_str(&format!("# HELP hushwall_{name} {help}\n# TYPE hushwall_{name} {kind}\n"));
        for (labels, value) in series {
            out.push_str(&format!("hushwall_{name}{labels} {value}\n"));
        }
    };
    let e = &s.engine;
    let one = |v: u64| vec![(String::new(), v)];
    metric("uptime_seconds", "gauge", "Seconds since the engine started.", &one(s.uptime_secs));
    metric(
        "flows_total",
        "counter",
        "Flows opened.",
        &[("{protocol=\"tcp\"}".into(), e.tcp_flows), ("{protocol=\"udp\"}".into(), e.udp_flows)],
    );
    metric(
        "flows_active",
        "gauge",
        "Flows open now.",
        &[("{protocol=\"tcp\"}".into(), e.tcp_active), ("{protocol=\"udp\"}".into(), e.udp_active)],
    );
    metric("dns_queries_total", "counter", "DNS queries seen.", &one(e.dns_queries));
    let reasons: Vec<(String, u64)> =
        s.blocks_by_reason.iter().map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n)).collect();
    metric("blocks_total", "counter", "Blocks by reason.", &reasons);
    let errors: Vec<(String, u64)> =
        s.errors_by_kind.iter().map(|(kind, n)| (format!("{{kind=\"{kind}\"}}"), *n)).collect();
    metric("errors_total", "counter", "Failures of allowed traffic by kind.", &errors);
    metric(
        "packets_total",
        "counter",
        "Packets read from (in) and written to (out) the tun.",
        &[("{direction=\"in\"}".into(), e.packets_in), ("{direction=\"out\"}".into(), e.packets_out)],
    );
    metric("malformed_packets_total", "counter", "Packets that did not parse.", &one(e.malformed));
    metric("events_dropped_total", "counter", "Events lost to a full queue.", &one(e.events_dropped));
    out
}

/// `hushwall status`: asks the running engine and prints its counters.
pub fn status(args: StatusCmdArgs) -> Result<(), String> {
    let shown = args.socket.display();
    let mut stream = UnixStream::connect(&args.socket)
        .map_err(|e| format!("cannot reach the engine at {shown}: {e} (is it running? are you root?)"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| format!("{shown}: {e}"))?;
    let snapshot: Snapshot =
        serde_json::from_str(&text).map_err(|e| format!("{shown}: not an answer from the engine: {e}"))?;
    if args.json {
        println!("{}", text.trim_end());
    } else {
        print!("{}", human(&snapshot));
    }
    Ok(())
}

/// The snapshot for people.
pub fn human(s: &Snapshot) -> String {
    let e = &s.engine;
    let mut out = format!(
        "hushwall {}: up {}, lists {}\n\
         flows: {} TCP ({} open), {} UDP ({} open), {} DNS queries\n\
         blocked: {}\n",
        s.version,
        duration(s.uptime_secs),
        s.list_generation.as_deref().unwrap_or("built-in only"),
        e.tcp_flows,
        e.tcp_active,
        e.udp_flows,
        e.udp_active,
        e.dns_queries,
        e.blocked,
    );
    for (reason, n) in &s.blocks_by_reason {
        out.push_str(&format!("  {n:>8}  {reason}\n"));
    }
    if !s.top_blocked_hosts.is_empty() {
        out.push_str("top blocked hosts:\n");
        for h in &s.top_blocked_hosts {
            out.push_str(&format!("  {:>8}  {}\n", h.blocks, h.host));
        }
    }
    out.push_str(&format!(
        "errors: {} upstream, {} malformed packets, {} events dropped\n",
        e.upstream_errors, e.malformed, e.events_dropped
    ));
    for (kind, n) in &s.errors_by_kind {
        out.push_str(&format!("  {n:>8}  {kind}\n"));
    }
    out
}

fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// Whether `run` shows the live line: on a terminal, unless `--quiet` (journald and files get plain logs).
pub fn show_live_line(quiet: bool, stderr_is_terminal: bool) -> bool {
    !quiet && stderr_is_terminal
}

/// The live line's text.
pub fn live_line(s: &Snapshot) -> String {
    let mut line = format!(
        "hushwall: {} blocked, {} flows open, {} DNS queries",
        s.engine.blocked,
        s.engine.tcp_active + s.engine.udp_active,
        s.engine.dns_queries
    );
    if let Some(host) = &s.last_blocked {
        line.push_str(&format!(", last blocked: {host}"));
    }
    line
}

/// Redraws the live line on standard error once a second.
struct LiveLine {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl LiveLine {
    fn start(status: Arc<Status>) -> Result<LiveLine, String> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        spawn("live-line", move || {
            // First drawn a second in, after the start-up messages.
            loop {
                std::thread::sleep(Duration::from_secs(1));
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                // Carriage return and erase-line: the line is redrawn in place.
                eprint!("\r\x1b[2K{}", live_line(&status.snapshot()));
            }
        })?;
        Ok(LiveLine { stop })
    }

    fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushwall_core::event::Outcome;
    use hushwall_core::event::Protocol;
    use hushwall_core::verdict::{AllowReason, BlockReason};

    fn event(outcome: Outcome, host: Option<&str>) -> Event {
        Event {
            time_ms: 0,
            protocol: Protocol::Tcp,
            src: "10.0.0.2:4000".parse().expect("addr"),
            dst: "198.18.1.2:443".parse().expect("addr"),
            host: host.map(str::to_owned),
            outcome,
            uid: None,
            peek: None,
            repeats: None,
        }
    }

    fn status_with(events: &[Event]) -> Arc<Status> {
        let (status, mut sink) = Status::new(Box::new(Nothing), Control::new(), None);
        sink.deliver(events);
        status
    }

    struct Nothing;
    impl EventSink for Nothing {
        fn deliver(&mut self, _: &[Event]) {}
    }

    #[test]
    fn blocks_are_tallied_by_reason_and_host() {
        let s = status_with(&[
            event(Outcome::Block { reason: BlockReason::DnsQuery, rule: None }, Some("tracking.intl.miui.com")),
            event(Outcome::Block { reason: BlockReason::TlsSni, rule: None }, Some("tracking.intl.miui.com")),
            event(Outcome::Block { reason: BlockReason::IpCidr, rule: None }, None),
            event(Outcome::Allow { reason: AllowReason::NoMatch, rule: None }, Some("www.example.org")),
        ])
        .snapshot();
        assert_eq!(s.blocks_by_reason.get("dns_query"), Some(&1));
        assert_eq!(s.blocks_by_reason.get("tls_sni"), Some(&1));
        assert_eq!(s.blocks_by_reason.get("ip_cidr"), Some(&1));
        assert_eq!(s.top_blocked_hosts[0], HostCount { host: "tracking.intl.miui.com".into(), blocks: 2 });
        assert_eq!(s.top_blocked_hosts[1], HostCount { host: "198.18.1.2".into(), blocks: 1 });
        assert_eq!(s.last_blocked.as_deref(), Some("198.18.1.2"));
        let text = human(&s);
        assert!(text.contains("       2  tracking.intl.miui.com"), "{text}");
        let metrics = prometheus(&s);
        assert!(metrics.contains("hushwall_blocks_total{reason=\"dns_query\"} 1\n"), "{metrics}");
        assert!(!metrics.contains("tracking"), "no host names in metrics: {metrics}");
    }

    #[test]
    fn live_line_shows_blocks_and_the_last_host_and_only_on_a_terminal() {
        let s = status_with(&[event(
            Outcome::Block { reason: BlockReason::DnsQuery, rule: None },
            Some("tracking.intl.miui.com"),
        )])
        .snapshot();
        // The tally saw one block; the engine's own counter is published by the loop (none here).
        assert_eq!(
            live_line(&s),
            "hushwall: 0 blocked, 0 flows open, 0 DNS queries, last blocked: tracking.intl.miui.com"
        );
        assert!(show_live_line(false, true));
        assert!(!show_live_line(true, true));
        assert!(!show_live_line(false, false));
    }

    #[test]
    fn metrics_stay_on_loopback_unless_allowed() {
        assert!(check_metrics_addr("127.0.0.1:9877".parse().expect("addr"), false).is_ok());
        assert!(check_metrics_addr("[::1]:9877".parse().expect("addr"), false).is_ok());
        let err = check_metrics_addr("0.0.0.0:9877".parse().expect("addr"), false).expect_err("refused");
        assert!(err.contains("--metrics-allow-remote"), "{err}");
        assert!(check_metrics_addr("192.0.2.1:9877".parse().expect("addr"), true).is_ok());
    }

    #[test]
    fn host_table_is_bounded() {
        let mut tally = Tally::default();
        for i in 0..MAX_HOSTS + 50 {
            tally.count(&event(
                Outcome::Block { reason: BlockReason::DnsQuery, rule: None },
                Some(&format!("h{i}.example")),
            ));
        }
        assert_eq!(tally.blocked_hosts.len(), MAX_HOSTS + 1);
        assert_eq!(tally.blocked_hosts.get("(other)"), Some(&50));
    }
}
