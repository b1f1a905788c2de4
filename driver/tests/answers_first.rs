//! The event loop writes what the phone's packets were answered with at once (here a SYN|ACK) before the
//! iteration's upstream work (here another flow's dial), so a new connection's handshake does not wait for other
//! flows' system calls (BENCHMARKS.md, "Where the tail comes from").
//!
//! The tun is a datagram socketpair whose reads the test feeds from a queue, so that both of the phone's packets
//! are read in one iteration of the loop; the protector, called on the engine's thread when the dial starts,
//! looks at what the phone has received by then. No root, no network: the dial goes to TEST-NET-1.

use hushwall_core::engine::EngineConfig;
use hushwall_core::event::Event;
use hushwall_core::policy::Policy;
use hushwall_driver::platform::NoUids;
use hushwall_driver::{Control, EngineThread, EventSink, Platform, Protector};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PHONE: [u8; 4] = [10, 111, 0, 2];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// The engine's end of a socketpair as a tun: a datagram on it only wakes the loop; the packets a read returns
/// come from `queue`, so the test decides what one iteration reads.
struct QueueTun {
    socket: UnixDatagram,
    queue: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl Read for QueueTun {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut scratch = [0u8; 16];
        while self.socket.recv(&mut scratch).is_ok() {}
        let packet = self.queue.lock().expect("queue").pop_front();
        let packet = packet.ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        buf[..packet.len()].copy_from_slice(&packet);
        Ok(packet.len())
    }
}

impl Write for QueueTun {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.send(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsRawFd for QueueTun {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// At each socket it protects (a dial starting), drains what the phone has received so far and reports whether
/// a SYN|ACK to `port` was among it.
struct Watcher {
    phone: UnixDatagram,
    port: u16,
    seen: Sender<bool>,
}

impl Protector for Watcher {
    fn protect(&mut self, _: BorrowedFd<'_>) -> bool {
        let mut buf = [0u8; 2048];
        let mut found = false;
        while let Ok(n) = self.phone.recv(&mut buf) {
            found |= tcp(&buf[..n]).is_some_and(|s| s.dst_port == self.port && s.flags & (SYN | ACK) == SYN | ACK);
        }
        let _ = self.seen.send(found);
        true
    }
}

struct Discard;
impl EventSink for Discard {
    fn deliver(&mut self, _: &[Event]) {}
}

fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for chunk in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 TCP segment from the phone.
fn segment(src_port: u16, dst: [u8; 4], seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&src_port.to_be_bytes());
    tcp.extend_from_slice(&80u16.to_be_bytes());
    tcp.extend_from_slice(&seq.to_be_bytes());
    tcp.extend_from_slice(&ack.to_be_bytes());
    tcp.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    tcp.extend_from_slice(payload);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&PHONE);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
    let pseudo_sum = pseudo.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    let c = checksum(&tcp, pseudo_sum);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let total = 20 + tcp.len();
    let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&PHONE);
    ip.extend_from_slice(&dst);
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&tcp);
    ip
}

/// The fields of a TCP segment the engine wrote.
struct Tcp {
    dst_port: u16,
    seq: u32,
    flags: u8,
}

fn tcp(packet: &[u8]) -> Option<Tcp> {
    if packet.first()? >> 4 != 4 || *packet.get(9)? != 6 {
        return None;
    }
    let t = packet.get(usize::from(packet[0] & 0x0f) * 4..)?;
    Some(Tcp {
        dst_port: u16::from_be_bytes([*t.get(2)?, *t.get(3)?]),
        seq: u32::from_be_bytes([*t.get(4)?, *t.get(5)?, *t.get(6)?, *t.get(7)?]),
        flags: *t.get(13)?,
    })
}

#[test]
fn a_syn_ack_is_written_before_another_flows_dial_in_the_same_iteration() {
    let (phone, engine_end) = UnixDatagram::pair().expect("socketpair");
    phone.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let queue = Arc::new(Mutex::new(VecDeque::new()));
    let (seen, dials) = mpsc::channel();
    let watcher = Watcher { phone: phone.try_clone().expect("clone"), port: 40002, seen };
    let platform = Platform {
        protector: Box::new(watcher),
        uids: Box::new(NoUids),
        events: Box::new(Discard),
        watch_network: false,
        capture: None,
    };
    let policy = Arc::new(Policy::compile(&[]).expect("an empty policy compiles"));
    let tun = QueueTun { socket: engine_end, queue: Arc::clone(&queue) };
    let mut thread = EngineThread::spawn(Control::new(), move |control| {
        hushwall_driver::run(tun, EngineConfig::default(), policy, platform, control)
    })
    .expect("spawn");
    let wake = |packets: Vec<Vec<u8>>| {
        queue.lock().expect("queue").extend(packets);
        phone.send(&[0]).expect("wake the loop");
    };

    // Flow A (port 40001, to a web port): the engine completes the handshake itself and waits for the request.
    let (a, b) = ([192, 0, 2, 10], [192, 0, 2, 11]);
    wake(vec![segment(40001, a, 1000, 0, SYN, b"")]);
    let mut buf = [0u8; 2048];
    let server_seq = loop {
        let n = phone.recv(&mut buf).expect("a SYN|ACK for flow A");
        match tcp(&buf[..n]) {
            Some(s) if s.dst_port == 40001 && s.flags & (SYN | ACK) == SYN | ACK => break s.seq,
            _ => continue,
        }
    };
    phone.set_nonblocking(true).expect("non-blocking: the watcher drains the phone's side");

    // One iteration reads flow A's request (sniffed at the end of the iteration, then dialled) and flow B's SYN.
    let request = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";
    wake(vec![
        segment(40001, a, 1001, server_seq.wrapping_add(1), ACK | PSH, request),
        segment(40002, b, 5000, 0, SYN, b""),
    ]);
    let syn_ack_first = dials.recv_timeout(Duration::from_secs(5)).expect("flow A was dialled");
    thread.stop().expect("the loop stops cleanly");
    assert!(syn_ack_first, "flow B's SYN|ACK was still unwritten when flow A's dial started");
}
