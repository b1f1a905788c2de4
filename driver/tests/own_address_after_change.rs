//! The dial guard against this device's own addresses (issue 18.6) follows the network: an address that appears
//! after the engine last read the interfaces is refused at the next dial, because the loop marks the set stale
//! on the rtnetlink event before it reads the tun (driver/src/own_addresses.rs).
//!
//! Runs the loop in a network namespace of its own (root; skipped otherwise), with a socketpair as the tun.
//! Nothing is sent anywhere: the protector refuses every socket.

use hushwall_core::engine::EngineConfig;
use hushwall_core::event::Event;
use hushwall_core::policy::Policy;
use hushwall_driver::platform::NoUids;
use hushwall_driver::{Control, EngineThread, EventSink, Platform, Protector};
use std::collections::VecDeque;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::{segment, tcp, QueueTun, ACK, PSH, SYN};

/// Lets no socket be protected, so every dial that passes the guard fails at once ("could not be protected")
/// and nothing leaves: the test needs no route, only to see whether the guard refused first.
struct Unprotectable;
impl Protector for Unprotectable {
    fn protect(&mut self, _: BorrowedFd<'_>) -> bool {
        false
    }
}

struct Events(Sender<Event>);
impl EventSink for Events {
    fn deliver(&mut self, events: &[Event]) {
        for e in events {
            let _ = self.0.send(e.clone());
        }
    }
}

/// Opens a connection from the phone's `port` to `dst`:80 and sends a request, so the engine dials; returns the
/// error of the flow's event.
fn dial(phone: &UnixDatagram, wake: &dyn Fn(Vec<u8>), events: &Receiver<Event>, port: u16, dst: [u8; 4]) -> String {
    wake(segment(port, dst, 1000, 0, SYN, b""));
    let mut buf = [0u8; 2048];
    let server_seq = loop {
        let n = phone.recv(&mut buf).expect("a SYN|ACK");
        match tcp(&buf[..n]) {
            Some(s) if s.dst_port == port && s.flags & (SYN | ACK) == SYN | ACK => break s.seq,
            _ => continue,
        }
    };
    // A host of its own: identical failures would be folded into one later event.
    let request = format!("GET / HTTP/1.1\r\nHost: {port}.example.com\r\n\r\n");
    wake(segment(port, dst, 1001, server_seq.wrapping_add(1), ACK | PSH, request.as_bytes()));
    loop {
        let event = events.recv_timeout(Duration::from_secs(10)).expect("an event for the dial");
        if event.src.port() == port {
            if let Some(error) = event.error() {
                return error.to_owned();
            }
        }
    }
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}");
}

#[test]
fn an_address_added_after_the_engine_started_is_refused_at_the_next_dial() {
    // This thread, the engine's thread it spawns and the `ip` commands it runs share a new network namespace.
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        eprintln!("SKIPPED: no network namespace of our own ({e}); run as root");
        return;
    }
    ip(&["link", "set", "lo", "up"]);
    let (phone, engine_end) = UnixDatagram::pair().expect("socketpair");
    phone.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let queue = Arc::new(Mutex::new(VecDeque::new()));
    let (sink, events) = mpsc::channel();
    let platform = Platform {
        protector: Box::new(Unprotectable),
        uids: Box::new(NoUids),
        events: Box::new(Events(sink)),
        watch_network: true,
        capture: None,
    };
    let policy = Arc::new(Policy::compile(&[]).expect("an empty policy compiles"));
    let tun = QueueTun { socket: engine_end, queue: Arc::clone(&queue) };
    let mut thread = EngineThread::spawn(Control::new(), move |control| {
        hushwall_driver::run(tun, EngineConfig::default(), policy, platform, control)
    })
    .expect("spawn");
    let wake = |packet: Vec<u8>| {
        queue.lock().expect("queue").push_back(packet);
        phone.send(&[0]).expect("wake the loop");
    };

    // The first dial reads the interfaces: 192.0.2.50 is nobody's, so the dial goes on (and fails to protect).
    let target = [192, 0, 2, 50];
    let first = dial(&phone, &wake, &events, 40001, target);
    assert!(first.contains("could not be protected"), "the first dial passed the guard: {first}");

    // The address appears on this device; a dial to it right after must not reach the local service.
    ip(&["addr", "add", "192.0.2.50/32", "dev", "lo"]);
    let second = dial(&phone, &wake, &events, 40002, target);
    thread.stop().expect("the loop stops cleanly");
    assert!(second.contains("this device's own address"), "dialled a new own address: {second}");
}
