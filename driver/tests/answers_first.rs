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
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::{segment, tcp, QueueTun, ACK, PSH, SYN};

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
