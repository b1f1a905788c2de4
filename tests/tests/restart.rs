//! The engine loop started and stopped 100 times in one process, over a socketpair standing in for the tun (one
//! datagram per IP packet, like a tun fd) and a DNS upstream on loopback. Each run answers a forwarded and a
//! blocked query; every stop returns the counters; afterwards the process holds exactly as many file descriptors
//! and threads as before, so nothing leaks per start (what an Android app toggling the VPN does for weeks).
//! No root, no namespaces.

use hushwall_core::engine::EngineConfig;
use hushwall_core::event::Event;
use hushwall_core::policy::{ListRole, ListSource, Policy};
use hushwall_driver::platform::NoUids;
use hushwall_driver::{Control, EngineThread, EventSink, Platform, Protector};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

/// One end of a datagram socketpair as a tun: one read = one packet.
struct PairTun(UnixDatagram);

impl Read for PairTun {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
}

impl Write for PairTun {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for PairTun {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

struct NoProtect;
impl Protector for NoProtect {
    fn protect(&mut self, _: BorrowedFd<'_>) -> bool {
        true
    }
}

struct Discard;
impl EventSink for Discard {
    fn deliver(&mut self, _: &[Event]) {}
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP packet from the phone (10.111.0.1:port) to 198.18.53.53:53 carrying a query for `name` (A).
fn dns_packet(id: u16, port: u16, name: &str) -> Vec<u8> {
    let mut dns = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        dns.push(label.len() as u8);
        dns.extend_from_slice(label.as_bytes());
    }
    dns.extend_from_slice(&[0, 0, 1, 0, 1]);
    let total = 20 + 8 + dns.len();
    let mut p = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend_from_slice(&[10, 111, 0, 1, 198, 18, 53, 53]);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    let udp_len = (8 + dns.len()) as u16;
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&53u16.to_be_bytes());
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]); // no UDP checksum (allowed in IPv4)
    p.extend_from_slice(&dns);
    p
}

/// The DNS RCODE of an IPv4/UDP packet written to the tun.
fn rcode(packet: &[u8]) -> Option<u8> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    Some(packet.get(ihl + 8 + 3)? & 0x0f)
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// A loopback resolver answering every query with NOERROR and no records, until `stop`.
fn fake_resolver() -> (UdpSocket, std::thread::JoinHandle<()>, Arc<std::sync::atomic::AtomicBool>) {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind resolver");
    sock.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, flag) = (sock.try_clone().expect("clone"), Arc::clone(&stop));
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                if n >= 12 {
                    buf[2] |= 0x80; // QR
                    buf[3] = 0x80; // RA, NOERROR
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        }
    });
    (sock, t, stop)
}

#[test]
fn engine_loop_started_and_stopped_100_times_leaks_nothing() {
    let (resolver, resolver_thread, resolver_stop) = fake_resolver();
    let upstream = resolver.local_addr().expect("addr");
    let source = ListSource { name: "t.txt".into(), role: ListRole::Block, text: "||tracking.intl.miui.com^\n".into() };
    let policy = Arc::new(Policy::compile(&[source]).expect("compiles"));
    // Warm up once so lazily created process-wide things (logger, thread-locals) exist before the baseline.
    let mut baseline = None;
    for round in 0..101u16 {
        let (phone, engine_end) = UnixDatagram::pair().expect("socketpair");
        phone.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let config =
            EngineConfig { dns_upstreams: vec![upstream], dns_fallbacks: Vec::new(), ..EngineConfig::default() };
        let platform = Platform {
            protector: Box::new(NoProtect),
            uids: Box::new(NoUids),
            events: Box::new(Discard),
            watch_network: false,
            capture: None,
        };
        let policy = Arc::clone(&policy);
        let mut thread = EngineThread::spawn(Control::new(), move |control| {
            hushwall_driver::run(PairTun(engine_end), config, policy, platform, control)
        })
        .expect("spawn");
        let mut buf = [0u8; 2048];
        for (i, (name, want)) in [("www.example.org", 0u8), ("x.tracking.intl.miui.com", 3)].into_iter().enumerate() {
            phone.send(&dns_packet(round * 2 + i as u16, 40000 + i as u16, name)).expect("send");
            let n = phone.recv(&mut buf).unwrap_or_else(|e| panic!("round {round}: no answer for {name}: {e}"));
            assert_eq!(rcode(&buf[..n]), Some(want), "round {round}: answer for {name}");
        }
        let stats = thread.stop().unwrap_or_else(|e| panic!("round {round}: the loop failed: {e}"));
        assert_eq!(stats.dns_queries, 2, "round {round}: {stats:?}");
        assert_eq!(stats.malformed, 0, "round {round}: {stats:?}");
        drop(thread);
        drop(phone);
        if round == 0 {
            baseline = Some((fds(), threads()));
        }
    }
    let (base_fds, base_threads) = baseline.expect("baseline");
    assert_eq!(fds(), base_fds, "file descriptors leaked over 100 starts");
    assert_eq!(threads(), base_threads, "threads leaked over 100 starts");
    resolver_stop.store(true, std::sync::atomic::Ordering::SeqCst);
    resolver_thread.join().expect("resolver thread");
}
