//! `hushwall run`: the engine on a Linux tun device.

use crate::lists::PolicyArgs;
use crate::notify;
use crate::status::{self, Status, StatusArgs};
use clap::{Args, ValueEnum};
use hushwall_core::engine::EngineConfig;
use hushwall_core::event::Event;
use hushwall_core::inspect::dns::BlockAnswer;
use hushwall_driver::capture::CaptureFile;
use hushwall_driver::lists::{create_private, Existing};
use hushwall_driver::platform::{NoUids, UidResolver};
use hushwall_driver::procnet::ProcNetUids;
use hushwall_driver::{Control, EventSink, Platform, Protector};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Arguments of `hushwall run`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("device").required(true).args(["tun", "tun_fd"]))]
pub struct RunArgs {
    /// Create (or attach to) the tun device NAME in the current network namespace and bring it up.
    #[arg(long, value_name = "NAME")]
    pub(crate) tun: Option<String>,
    /// Adopt an already-open tun file descriptor (what Android's VpnService hands over); it is closed on exit.
    #[arg(long, value_name = "FD")]
    pub(crate) tun_fd: Option<RawFd>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// The network's own resolver that allowed DNS queries are forwarded to (each query from a fresh socket).
    /// Repeatable: tried in order, a resolver that fails or times out is skipped for a backoff.
    #[arg(long = "dns-upstream", value_name = "IP:PORT")]
    dns_upstreams: Vec<SocketAddr>,
    /// Resolver tried after every --dns-upstream (when they are down, or none is given). Repeatable; replaces
    /// the default fallbacks, Cloudflare's unfiltered 1.1.1.1:53 and [2606:4700:4700::1111]:53.
    #[arg(long = "dns-fallback", value_name = "IP:PORT")]
    dns_fallbacks: Vec<SocketAddr>,
    /// The Private DNS (DNS-over-TLS) host name the system resolver uses, as Android's strict Private DNS:
    /// DNS-over-TLS and DNS over QUIC/HTTP3 to it are let through (reason private_dns), other DoT is refused.
    #[arg(long, value_name = "HOST")]
    private_dns: Option<String>,
    /// Write events as JSON Lines to PATH (`-` for standard output).
    #[arg(long, value_name = "PATH")]
    events: Option<PathBuf>,
    /// When the --events file would grow past N MiB it is renamed to PATH.1 (replacing the previous one) and a
    /// new PATH is started: at most about 2 × N MiB on disk.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    events_max_mb: u64,
    /// Report allowed flows and queries too, not only blocks.
    #[arg(long)]
    log_allowed: bool,
    /// SO_MARK put on every upstream socket so policy routing keeps it out of the tun (0: none).
    #[arg(long, value_name = "MARK", default_value = "0x6877", value_parser = parse_mark)]
    pub(crate) fwmark: u32,
    /// How blocked names are answered.
    #[arg(long, value_enum, default_value_t = BlockAnswerArg::Nxdomain)]
    block_answer: BlockAnswerArg,
    /// MTU of the tun device.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u16).range(1280..))]
    mtu: u16,
    /// Write every packet read from and written to the tun to PATH as pcapng (Wireshark/tshark), with the
    /// verdict and reason as a comment on the packet that decided each flow.
    #[arg(long, value_name = "PATH")]
    pcap: Option<PathBuf>,
    /// The --pcap file stops growing at N MiB: later packets are counted (logged once, and at exit), not written.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pcap_max_mb: u64,
    /// Payload peek: read blocked plain-HTTP requests locally, answer 403, and put a redacted summary of what
    /// they tried to send (query, form fields, decoded base64/gzip and Sensors Analytics uploads) in the event.
    #[arg(long)]
    peek: bool,
    /// Refuse all traffic of processes running as this UID (reason `app_blocked`; needs --uid-lookup proc-net).
    /// Repeatable.
    #[arg(long = "block-uid", value_name = "UID")]
    block_uids: Vec<u32>,
    /// At most N concurrent TCP flows (each holds up to 2 × 256 KiB of buffers while busy); past it, the flow
    /// quiet for longest is closed to make room if it has been quiet for 60 s, else the new one is refused.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_tcp_flows: u32,
    /// At most N concurrent UDP flows (each holds one socket); past it, the flow quiet for longest is closed to
    /// make room if it has been quiet for 15 s, else the new one is refused.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_udp_flows: u32,
    /// Guarantee every client (source address, or user with --budget-by-app) PERCENT of each flow cap and of the
    /// pending DNS queries (at most half): at a full table a client holding less takes room from the client most
    /// over its share, one over its share is refused (`client_limit`). 100 (the default for `run`) shares
    /// nothing; `gateway` defaults to 25.
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub(crate) client_share: Option<u8>,
    /// Each client's flows hold full-size TCP buffers up to N MiB together, its further flows small ones
    /// (16 KiB each way). Unlimited by default for `run`; `gateway` defaults to 64.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub(crate) client_buffer_mb: Option<u32>,
    /// Count the --client-share and --client-buffer-mb budgets (and pending DNS queries) per user (UID) of this
    /// machine rather than per source address, as the app does per app: one user flooding connections cannot
    /// starve another. Owners are asked (sock_diag) only while a table is at least half full; earlier flows
    /// count under their source address. Needs --uid-lookup proc-net.
    #[arg(long)]
    budget_by_app: bool,
    /// How events are attributed to a user (UID): `proc-net` reads /proc/net/{tcp,udp}[6] (for clients on this
    /// machine, like apps on a phone); `none` for a gateway whose clients are other machines.
    #[arg(long, value_enum, default_value_t = UidLookup::ProcNet)]
    uid_lookup: UidLookup,
    /// Log more (repeat for even more).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(flatten)]
    pub(crate) status: StatusArgs,
}

/// Where event UIDs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UidLookup {
    /// Look the flow up in /proc/net.
    ProcNet,
    /// Do not attribute.
    None,
}

/// How blocked names are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BlockAnswerArg {
    /// NXDOMAIN: the name does not exist.
    Nxdomain,
    /// 0.0.0.0 for A, :: for AAAA, no records for other types.
    Unspecified,
}

pub(crate) fn parse_mark(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("not a 32-bit mark: {e}"))
}

/// Runs until SIGINT/SIGTERM.
pub fn run(args: RunArgs) -> Result<(), String> {
    run_with(args, |_| Ok(()))
}

/// Runs until SIGINT/SIGTERM; `after_tun` runs once the tun device is up, before the engine starts (the
/// gateway's routing); its error stops the start.
pub(crate) fn run_with(args: RunArgs, after_tun: impl FnOnce(&str) -> Result<(), String>) -> Result<(), String> {
    init_logging(args.verbose);
    if let Some(addr) = args.status.metrics {
        status::check_metrics_addr(addr, args.status.metrics_allow_remote)?;
    }
    let policy = Arc::new(args.policy.compile()?);
    let stats = policy.stats();
    log::info!("policy: {stats:?}");
    let events: Box<dyn EventSink> = match &args.events {
        Some(path) => Box::new(JsonLines::open(path, args.events_max_mb.saturating_mul(MIB))?),
        None => Box::new(Discard),
    };
    let capture = match &args.pcap {
        Some(path) => {
            let file = create_private(path, Existing::Truncate)
                .map_err(|e| format!("cannot create capture file {}: {e}", path.display()))?;
            let max = args.pcap_max_mb.saturating_mul(MIB);
            let capture = CaptureFile::new(BufWriter::new(file), max)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Some(capture)
        }
        None => None,
    };
    let (capture, capture_report) = capture.unzip();
    let control = Control::new();
    let store = (!args.policy.no_store).then(|| args.policy.store.clone());
    let (status, events) = Status::new(events, Arc::clone(&control), store);
    // Before the tun and the gateway's routing: a SIGTERM during the start then stops the engine as soon as it
    // starts, and what was added is removed, rather than killing the process half way.
    handle_signals(Arc::clone(&control), args.policy.clone())?;
    let (device, name) = open_tun(&args)?;
    after_tun(&name)?;
    let defaults = EngineConfig::default();
    let config = EngineConfig {
        dns_upstreams: args.dns_upstreams.clone(),
        dns_fallbacks: if args.dns_fallbacks.is_empty() {
            defaults.dns_fallbacks.clone()
        } else {
            args.dns_fallbacks.clone()
        },
        private_dns_server: args.private_dns.clone(),
        block_answer: match args.block_answer {
            BlockAnswerArg::Nxdomain => BlockAnswer::NxDomain,
            BlockAnswerArg::Unspecified => BlockAnswer::Unspecified,
        },
        log_allowed: args.log_allowed,
        mtu: usize::from(args.mtu),
        random_seed: random_seed(),
        peek: args.peek,
        max_tcp_flows: args.max_tcp_flows as usize,
        max_udp_flows: args.max_udp_flows as usize,
        client_share_percent: args.client_share.unwrap_or(100),
        client_tcp_buffer_budget: args.client_buffer_mb.map_or(usize::MAX, |mb| mb as usize * 1024 * 1024),
        budget_by_app: args.budget_by_app,
        ..defaults
    };
    let platform = Platform {
        protector: Box::new(Fwmark(args.fwmark)),
        uids: match args.uid_lookup {
            UidLookup::ProcNet => Box::new(ProcNetUids::new()) as Box<dyn UidResolver>,
            UidLookup::None => Box::new(NoUids),
        },
        events: Box::new(events),
        watch_network: true,
        capture,
    };
    if !args.block_uids.is_empty() {
        control.set_blocked_uids(args.block_uids.iter().copied().collect());
    }
    let services = status::start(&args.status, &status)?;
    eprintln!("hushwall: ready on {name}");
    notify::ready();
    let result = hushwall_driver::run(device, config, policy, platform, control);
    drop(services);
    // The loop has returned, so the capture thread has written, flushed and closed the file.
    if let Some(summary) = capture_report.and_then(|r| r.summary()) {
        if let Some(e) = &summary.error {
            eprintln!("hushwall: the capture stopped early: cannot write it: {e}");
        }
        if summary.not_written > 0 {
            eprintln!("hushwall: the capture reached --pcap-max-mb; {} packets were not written", summary.not_written);
        }
        if summary.dropped > 0 {
            eprintln!("hushwall: {} packets were left out of the capture (its writer fell behind)", summary.dropped);
        }
    }
    let stats = result.map_err(|e| format!("engine stopped: {e}"))?;
    eprintln!(
        "hushwall: stopped; {} packets in, {} out, {} blocked, {} malformed",
        stats.packets_in, stats.packets_out, stats.blocked, stats.malformed
    );
    Ok(())
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
}

/// Opens the tun device by name or adopts the given descriptor.
fn open_tun(args: &RunArgs) -> Result<(tun::Device, String), String> {
    let mut config = tun::Configuration::default();
    config.mtu(args.mtu);
    let name = match (&args.tun, args.tun_fd) {
        (Some(name), _) => {
            config.tun_name(name).up();
            name.clone()
        }
        (None, Some(fd)) => {
            // tun::create adopts any number without looking at it; check it is open here, so a bad number fails
            // before "ready" is announced rather than at the first read.
            if fd < 0 || std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
                return Err(format!("--tun-fd {fd}: no such open file descriptor"));
            }
            config.raw_fd(fd).close_fd_on_drop(true);
            format!("fd {fd}")
        }
        (None, None) => return Err("give --tun NAME or --tun-fd FD".into()),
    };
    let device = tun::create(&config).map_err(|e| format!("cannot open tun device {name}: {e}"))?;
    Ok((device, name))
}

/// A seed for initial sequence numbers that differs between runs.
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    match File::open("/dev/urandom").and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes)) {
        Ok(()) => u64::from_ne_bytes(bytes),
        Err(_) => u64::from(std::process::id()) ^ 0x6877_6877_6877_6877,
    }
}

/// Stops the engine on the first SIGINT or SIGTERM; on SIGHUP re-reads every list and swaps the new policy in
/// atomically, or keeps the one in force and reports why (file and line) if any list is unreadable or malformed.
fn handle_signals(control: Arc<Control>, lists: PolicyArgs) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot catch signals: {e}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal != SIGHUP {
                    control.stop();
                    return;
                }
                match lists.compile() {
                    Ok(policy) => {
                        eprintln!("hushwall: lists reloaded: {:?}", policy.stats());
                        control.set_policy(Arc::new(policy));
                    }
                    Err(e) => eprintln!("hushwall: reload failed, keeping the lists in force: {e}"),
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// Linux's stand-in for `VpnService.protect()`: marks the socket so an `ip rule fwmark` routes it around the tun.
pub(crate) struct Fwmark(pub(crate) u32);

impl Protector for Fwmark {
    fn protect(&mut self, socket: BorrowedFd<'_>) -> bool {
        if self.0 == 0 {
            return true;
        }
        match socket2::SockRef::from(&socket).set_mark(self.0) {
            Ok(()) => true,
            Err(e) => {
                log::error!("cannot set SO_MARK {:#x} (needs CAP_NET_ADMIN): {e}", self.0);
                false
            }
        }
    }
}

/// One mebibyte, the unit of `--events-max-mb` and `--pcap-max-mb`.
const MIB: u64 = 1024 * 1024;

/// Writes events as JSON Lines, flushed after every batch; a file (not standard output) is rotated to `PATH.1`
/// before it would grow past its cap.
struct JsonLines {
    out: Box<dyn Write + Send>,
    rotation: Option<Rotation>,
}

/// The events file's cap and what has been written to it.
struct Rotation {
    path: PathBuf,
    max_bytes: u64,
    written: u64,
}

impl JsonLines {
    fn open(path: &Path, max_bytes: u64) -> Result<Self, String> {
        if path.as_os_str() == "-" {
            return Ok(JsonLines { out: Box::new(io::stdout()), rotation: None });
        }
        let file = create_private(path, Existing::Append)
            .map_err(|e| format!("cannot open events file {}: {e}", path.display()))?;
        let written = file.metadata().map(|m| m.len()).unwrap_or(0);
        let rotation = Rotation { path: path.to_path_buf(), max_bytes, written };
        Ok(JsonLines { out: Box::new(BufWriter::new(file)), rotation: Some(rotation) })
    }

    /// Before a line of `len` bytes: if it would take the file past its cap, the file becomes `PATH.1` and a new
    /// one is created (0600, no symbolic link followed, as the first).
    fn make_room(&mut self, len: u64) -> io::Result<()> {
        let Some(r) = self.rotation.as_mut() else {
            return Ok(());
        };
        if r.written == 0 || r.written.saturating_add(len) <= r.max_bytes {
            r.written = r.written.saturating_add(len);
            return Ok(());
        }
        self.out.flush()?;
        let mut old = r.path.clone().into_os_string();
        old.push(".1");
        // rename replaces PATH.1 itself (a symbolic link there is replaced, not followed).
        std::fs::rename(&r.path, &old)?;
        let file = create_private(&r.path, Existing::Truncate)?;
        self.out = Box::new(BufWriter::new(file));
        r.written = len;
        Ok(())
    }
}

impl EventSink for JsonLines {
    fn deliver(&mut self, events: &[Event]) {
        for event in events {
            match serde_json::to_string(event) {
                Ok(line) => {
                    if let Err(e) = self.make_room(line.len() as u64 + 1) {
                        log::warn!("cannot rotate the events file: {e}");
                    }
                    if let Err(e) = writeln!(self.out, "{line}") {
                        log::warn!("cannot write event: {e}");
                    }
                }
                Err(e) => log::warn!("cannot encode event: {e}"),
            }
        }
        if let Err(e) = self.out.flush() {
            log::warn!("cannot flush events: {e}");
        }
    }
}

/// Drops events (no `--events`).
struct Discard;

impl EventSink for Discard {
    fn deliver(&mut self, _: &[Event]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use hushwall_core::event::Outcome;
    use hushwall_core::verdict::BlockReason;
    use std::os::unix::fs::PermissionsExt;

    fn event(i: u64) -> Event {
        Event {
            time_ms: 1_700_000_000_000 + i,
            protocol: hushwall_core::event::Protocol::Dns,
            src: "10.0.0.2:40000".parse().unwrap(),
            dst: "10.0.0.1:53".parse().unwrap(),
            host: Some(format!("host-{i}.tracking.example")),
            outcome: Outcome::Block { reason: BlockReason::DnsQuery, rule: None },
            uid: None,
            peek: None,
            repeats: None,
        }
    }

    #[test]
    fn the_events_file_rotates_to_path_1_at_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let line = serde_json::to_string(&event(0)).unwrap().len() as u64 + 1;
        // Room for about ten lines per file.
        let mut sink = JsonLines::open(&path, line * 10 + line / 2).unwrap();
        for i in 0..25 {
            sink.deliver(&[event(i)]);
        }
        drop(sink);
        let current = std::fs::read_to_string(&path).unwrap();
        let rotated = std::fs::read_to_string(dir.path().join("events.jsonl.1")).unwrap();
        assert_eq!((rotated.lines().count(), current.lines().count()), (10, 5));
        assert!(rotated.lines().next().unwrap().contains("host-10."), "PATH.1 holds the previous file");
        assert!(current.lines().next().unwrap().contains("host-20."));
        for p in [&path, &dir.path().join("events.jsonl.1")] {
            assert!(std::fs::metadata(p).unwrap().len() <= line * 10 + line / 2);
            assert_eq!(std::fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn an_appended_events_file_counts_what_it_already_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "x".repeat(1000)).unwrap();
        let mut sink = JsonLines::open(&path, 1000).unwrap();
        sink.deliver(&[event(1)]);
        drop(sink);
        assert_eq!(std::fs::read_to_string(dir.path().join("events.jsonl.1")).unwrap().len(), 1000);
        assert!(std::fs::read_to_string(&path).unwrap().contains("host-1."));
    }

    #[test]
    fn a_symbolic_link_planted_at_the_path_is_not_followed_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let target = dir.path().join("elsewhere");
        let mut sink = JsonLines::open(&path, 10).unwrap();
        sink.deliver(&[event(1)]);
        // Between rotations someone replaces PATH with a link: the next rotation renames the link away and
        // creates a new private file; the link's target is never written.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        sink.deliver(&[event(2)]);
        drop(sink);
        assert!(!target.exists());
        assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_file());
    }
}
