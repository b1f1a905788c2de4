//! Flow → UID from `/proc/net/{tcp,tcp6,udp,udp6}`: app attribution where the platform has no API for it
//! (Android 9, before `ConnectivityManager.getConnectionOwnerUid`; Linux). Where the kernel answers sock_diag
//! requests, each flow is asked of it directly instead ([`crate::sockdiag`]): reading these tables costs time
//! quadratic in the number of sockets, and they are the fallback.
//!
//! Each table line names a socket's local and remote address and its owner's UID. The engine's flows are seen
//! from the client side, so the flow's `src` is the socket's local address and `dst` its remote one. Sockets
//! of dual-stack apps show IPv4 flows as IPv4-mapped IPv6 in the `*6` tables; unconnected UDP sockets show a
//! zero remote address, so UDP falls back to matching the local port (and address, unless bound to any).
//!
//! Each table is parsed into a snapshot that serves lookups for a short while: during a flood the engine reports
//! thousands of refusals a second, and re-reading a table of thousands of sockets for each would stall the data
//! path for seconds. A lookup that misses re-reads the table (a new socket may have appeared since) unless it was
//! already re-read in this event-loop iteration ([`UidResolver::next_iteration`]): attribution of new flows stays
//! exact, and a flood costs at most one re-read per protocol per iteration.
//!
//! Addresses are printed by the kernel as the raw network-order words in host byte order (`%08X` per 32-bit
//! word), ports as plain hex numbers. Every read is bounded and nothing here panics on a malformed line: such a
//! line is skipped.

use crate::platform::UidResolver;
use crate::sockdiag::SockDiag;
use hushwall_core::event::Protocol;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Most lines read from one table (a phone has hundreds of sockets, not hundreds of thousands).
const MAX_LINES: usize = 65_536;
/// A snapshot older than this is re-read before any lookup.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// A [`UidResolver`] reading `/proc/net` (or another directory with the same files, for tests).
#[derive(Debug)]
pub struct ProcNetUids {
    /// Exact lookups by netlink where the kernel offers them (`new` only; the tables are the fallback).
    diag: Option<SockDiag>,
    root: PathBuf,
    tcp: Snapshot,
    udp: Snapshot,
}

/// The parsed lines of one protocol's two tables (`x` and `x6`), indexed, and when they were read.
///
/// Indexed because a flood of refusals looks up one flow per refusal, and a scan over thousands of sockets cost
/// 60–120 µs a lookup.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// Connected sockets: (local, remote) → UID, addresses canonical (IPv4-mapped IPv6 as IPv4).
    connected: HashMap<(SocketAddr, SocketAddr), u32>,
    /// Unconnected sockets (remote port 0) by local port: their local addresses and UIDs, in table order.
    unconnected: HashMap<u16, Vec<(IpAddr, u32)>>,
    read_at: Option<Instant>,
    /// Already re-read in the current event-loop iteration.
    fresh_this_iteration: bool,
}

impl Snapshot {
    fn age(&self, now: Instant) -> Duration {
        self.read_at.map_or(Duration::MAX, |at| now.saturating_duration_since(at))
    }

    fn refresh(&mut self, root: &Path, tables: [&str; 2], now: Instant) {
        self.connected.clear();
        self.unconnected.clear();
        for table in tables {
            let Ok(file) = std::fs::File::open(root.join(table)) else { continue };
            let lines = BufReader::new(file).lines().take(MAX_LINES);
            for entry in lines.map_while(Result::ok).filter_map(|line| parse_line(&line)) {
                self.connected.entry((canonical(entry.local), canonical(entry.remote))).or_insert(entry.uid);
                if entry.remote.port() == 0 {
                    let local = entry.local.ip().to_canonical();
                    self.unconnected.entry(entry.local.port()).or_default().push((local, entry.uid));
                }
            }
        }
        self.read_at = Some(now);
        self.fresh_this_iteration = true;
    }

    /// The owner of the socket `src`→`dst`; for UDP, an unconnected socket bound to `src` also counts.
    fn find(&self, udp: bool, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        let exact = self.connected.get(&(canonical(src), canonical(dst))).copied();
        let unconnected = || {
            let bound = self.unconnected.get(&src.port())?;
            let src_ip = src.ip().to_canonical();
            bound.iter().find(|(ip, _)| ip.is_unspecified() || *ip == src_ip).map(|&(_, uid)| uid)
        };
        exact.or_else(|| if udp { unconnected() } else { None })
    }
}

/// The address with an IPv4-mapped IPv6 address as the IPv4 one.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Default for ProcNetUids {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcNetUids {
    /// Asks the kernel by netlink (sock_diag), falling back to reading `/proc/net`.
    pub fn new() -> Self {
        ProcNetUids { diag: SockDiag::open().ok(), ..Self::with_root("/proc/net") }
    }

    /// Reads the tables under `root` instead (no netlink).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        ProcNetUids { diag: None, root: root.into(), tcp: Snapshot::default(), udp: Snapshot::default() }
    }

    fn lookup(&mut self, udp: bool, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        let (snapshot, tables) = if udp { (&mut self.udp, ["udp", "udp6"]) } else { (&mut self.tcp, ["tcp", "tcp6"]) };
        let now = Instant::now();
        if snapshot.age(now) > MAX_AGE {
            snapshot.refresh(&self.root, tables, now);
        }
        if let Some(uid) = snapshot.find(udp, src, dst) {
            return Some(uid);
        }
        if !snapshot.fresh_this_iteration {
            snapshot.refresh(&self.root, tables, now);
            return snapshot.find(udp, src, dst);
        }
        None
    }
}

impl UidResolver for ProcNetUids {
    fn next_iteration(&mut self) {
        self.tcp.fresh_this_iteration = false;
        self.udp.fresh_this_iteration = false;
    }

    fn uid(&mut self, protocol: Protocol, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        if let Some(diag) = &mut self.diag {
            match diag.uid(protocol, src, dst) {
                Ok(uid) => return uid,
                // Not allowed here (e.g. an app's SELinux domain): the tables from now on.
                Err(e) => {
                    log::info!("sock_diag lookups failed ({e}); reading /proc/net instead");
                    self.diag = None;
                }
            }
        }
        match protocol {
            Protocol::Tcp => self.lookup(false, src, dst),
            Protocol::Udp | Protocol::Dns => self.lookup(true, src, dst),
            Protocol::Icmp => None,
        }
    }
}

/// One parsed table line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    local: SocketAddr,
    remote: SocketAddr,
    uid: u32,
}

/// Parses `sl local rem st tx:rx tr:when retrnsmt uid ...`; None for the header or a malformed line.
fn parse_line(line: &str) -> Option<Entry> {
    let mut fields = line.split_ascii_whitespace();
    let _slot = fields.next()?;
    let local = parse_addr(fields.next()?)?;
    let remote = parse_addr(fields.next()?)?;
    let uid = fields.nth(4)?.parse().ok()?;
    Some(Entry { local, remote, uid })
}

/// Parses `0100007F:0277` or a 32-hex-digit IPv6 form.
fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(ip.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// One `%08X` word: the kernel printed the network-order bytes as a host-order u32.
fn word(hex: &str) -> Option<[u8; 4]> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders an address the way the kernel does on this machine (for fixtures that work on any endianness).
    fn render(addr: SocketAddr) -> String {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => format!("{:08X}", u32::from_ne_bytes(v4.octets())),
            IpAddr::V6(v6) => v6
                .octets()
                .chunks_exact(4)
                .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        };
        format!("{ip}:{:04X}", addr.port())
    }

    fn line(local: &str, remote: &str, uid: u32) -> String {
        format!(
            "   0: {} {} 01 00000000:00000000 00:00000000 00000000 {uid:>5}        0 4242 1 0000000000000000 20 4 30 10 -1",
            render(local.parse().unwrap()),
            render(remote.parse().unwrap())
        )
    }

    const HEADER: &str =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    fn tables(files: &[(&str, Vec<String>)]) -> (ProcNetUids, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "hushwall-procnet-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, lines) in files {
            let mut text = format!("{HEADER}\n");
            for l in lines {
                text.push_str(l);
                text.push('\n');
            }
            std::fs::write(dir.join(name), text).unwrap();
        }
        (ProcNetUids::with_root(&dir), dir)
    }

    #[test]
    fn parses_a_real_kernel_line() {
        // From an x86-64 /proc/net/tcp: 127.0.0.1:631 listening, uid 0.
        if cfg!(target_endian = "little") {
            let entry = parse_line(
                "   0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 20412 1 0",
            )
            .unwrap();
            assert_eq!(entry.local, "127.0.0.1:631".parse().unwrap());
            assert_eq!(entry.remote, "0.0.0.0:0".parse().unwrap());
            assert_eq!(entry.uid, 0);
        }
        assert_eq!(parse_line(HEADER), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("0: zz:1 00000000:0000 0A a b c 5"), None);
    }

    /// A flood of lookups re-reads a table at most once per event-loop iteration: hits are served from the
    /// snapshot, and a miss re-reads it once per iteration (so a socket that appeared since is still found).
    #[test]
    fn lookups_reuse_a_snapshot_and_refresh_on_a_stale_miss() {
        let (mut uids, dir) = tables(&[("tcp", vec![line("10.111.0.1:40000", "198.18.1.10:443", 10123)])]);
        let (src, dst) = ("10.111.0.1:40000".parse().unwrap(), "198.18.1.10:443".parse().unwrap());
        assert_eq!(uids.uid(Protocol::Tcp, src, dst), Some(10123));
        // The table changes on disk; hits keep using the snapshot.
        let newer =
            [line("10.111.0.1:40000", "198.18.1.10:443", 20000), line("10.111.0.1:40001", "198.18.1.10:443", 10124)];
        std::fs::write(dir.join("tcp"), format!("{HEADER}\n{}\n{}\n", newer[0], newer[1])).unwrap();
        assert_eq!(uids.uid(Protocol::Tcp, src, dst), Some(10123), "served from the snapshot");
        // In the same iteration a miss does not re-read again; in the next one it does and finds the new socket.
        let src2 = "10.111.0.1:40001".parse().unwrap();
        assert_eq!(uids.uid(Protocol::Tcp, src2, dst), None, "one re-read per iteration");
        uids.next_iteration();
        assert_eq!(uids.uid(Protocol::Tcp, src2, dst), Some(10124));
        assert_eq!(uids.uid(Protocol::Tcp, src, dst), Some(20000), "the re-read snapshot serves later lookups");
        let _ = std::fs::remove_dir_all(dir);
    }

    // Each refusal's event in a flood is attributed: a scan of the whole table per lookup (10,000 sockets in the
    // UDP flow flood of tests/tests/reliability.rs) cost 60–120 µs each. Lookups are indexed now.
    #[test]
    fn lookups_in_a_large_table_do_not_scan_it() {
        let sockets: Vec<String> =
            (0..20_000u32).map(|i| line(&format!("[fd00::1]:{}", 20_000 + i % 40_000), "[fd00::7]:7", i)).collect();
        let (mut uids, dir) = tables(&[("udp6", sockets)]);
        let dst = "[fd00::7]:7".parse().unwrap();
        assert_eq!(uids.uid(Protocol::Udp, "[fd00::1]:20000".parse().unwrap(), dst), Some(0), "table read");
        let read_at = uids.udp.read_at;
        for i in (15_000..20_000u32).rev() {
            let src = SocketAddr::new("fd00::1".parse().unwrap(), (20_000 + i) as u16);
            assert_eq!(uids.uid(Protocol::Udp, src, dst), Some(i));
        }
        // Counted, not timed (a timed unit test fails on a loaded machine): one read served all 5,000.
        assert_eq!(uids.udp.read_at, read_at, "the table was read again");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn finds_tcp_v4_v6_and_mapped() {
        let (mut uids, dir) = tables(&[
            ("tcp", vec![line("10.111.0.1:40000", "198.18.1.10:443", 10123)]),
            (
                "tcp6",
                vec![
                    line("[fd00:6877:1::1]:40001", "[fd00:6877:2::10]:443", 10124),
                    line("[::ffff:10.111.0.1]:40002", "[::ffff:198.18.1.10]:443", 10125),
                ],
            ),
        ]);
        let dst: SocketAddr = "198.18.1.10:443".parse().unwrap();
        assert_eq!(uids.uid(Protocol::Tcp, "10.111.0.1:40000".parse().unwrap(), dst), Some(10123));
        assert_eq!(
            uids.uid(
                Protocol::Tcp,
                "[fd00:6877:1::1]:40001".parse().unwrap(),
                "[fd00:6877:2::10]:443".parse().unwrap()
            ),
            Some(10124)
        );
        assert_eq!(uids.uid(Protocol::Tcp, "10.111.0.1:40002".parse().unwrap(), dst), Some(10125));
        assert_eq!(uids.uid(Protocol::Tcp, "10.111.0.1:40003".parse().unwrap(), dst), None);
        assert_eq!(uids.uid(Protocol::Icmp, "10.111.0.1:40000".parse().unwrap(), dst), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn udp_falls_back_to_the_local_port_of_unconnected_sockets() {
        let (mut uids, dir) = tables(&[
            ("udp", vec![line("0.0.0.0:5353", "0.0.0.0:0", 1000), line("10.111.0.1:40000", "0.0.0.0:0", 10200)]),
            ("udp6", vec![line("[::]:41000", "[::]:0", 10201)]),
        ]);
        let dns: SocketAddr = "198.18.1.53:53".parse().unwrap();
        assert_eq!(uids.uid(Protocol::Dns, "10.111.0.1:40000".parse().unwrap(), dns), Some(10200));
        assert_eq!(uids.uid(Protocol::Udp, "10.111.0.1:41000".parse().unwrap(), dns), Some(10201));
        assert_eq!(uids.uid(Protocol::Udp, "10.111.0.1:42000".parse().unwrap(), dns), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_tables_and_garbage_are_unknown() {
        let (mut uids, dir) = tables(&[("tcp", vec!["garbage".into(), "1: 0:0 0:0".into()])]);
        assert_eq!(uids.uid(Protocol::Tcp, "10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap()), None);
        assert_eq!(uids.uid(Protocol::Udp, "10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap()), None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn finds_a_live_socket_of_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
        let found = ProcNetUids::new().uid(Protocol::Tcp, client.local_addr().unwrap(), client.peer_addr().unwrap());
        assert_eq!(found, Some(uid));
    }

    // Regression (the UDP flow flood in tests/tests/reliability.rs): with thousands of sockets, every re-read of
    // /proc/net/udp6 (on a miss, once per event-loop iteration, or once a second) stalled the engine for up to
    // 0.8 s, the tun queue overflowed and the phone's datagrams were lost. New sockets are now found without it.
    #[test]
    fn new_sockets_among_many_are_found_without_stalling() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = server.local_addr().unwrap();
        // As many sockets as a default 1,024-descriptor limit leaves room for.
        let crowd: Vec<_> = (0..900).map_while(|_| std::net::UdpSocket::bind("127.0.0.1:0").ok()).collect();
        assert!(crowd.len() >= 800, "could open only {} sockets", crowd.len());
        let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
        let mut uids = ProcNetUids::new();
        for _ in 0..100 {
            let fresh = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            fresh.connect(dst).unwrap();
            uids.next_iteration();
            assert_eq!(uids.uid(Protocol::Udp, fresh.local_addr().unwrap(), dst), Some(uid));
        }
        // Counted, not timed: the kernel answered each by netlink, and /proc/net/udp was never read.
        assert!(uids.diag.is_some() && uids.udp.read_at.is_none(), "a table was read");
    }
}
