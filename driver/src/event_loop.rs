//! The data-path thread: one `mio` poll over the tun, the upstream sockets and a waker.
//!
//! Each iteration: wait (until the engine's next deadline, or forever when it has none), read a bounded batch
//! of tun packets and socket data into the engine, run its timers and stack, hand its packets to the tun writer
//! (a second thread, see [`crate::tun_writer`]), its capture records to the capture thread if there is one
//! ([`crate::capture`]), and deliver its events. Work per iteration is bounded so a flood on one side cannot
//! starve the other or the timers; whatever was left over makes the next wait zero-length. With
//! `HUSHWALL_TRACE_LATENCY` set, each iteration and each step of a new TCP connection is noted in a trace file
//! ([`trace`], for `bench/trace.py`).

use crate::capture::CaptureWriter;
use crate::control::Control;
use crate::network::{self, NetlinkWatch};
use crate::platform::Platform;
use crate::sockets::{flow_of, Addressee, Conn, Sockets};
use crate::sys;
use crate::tun_writer::TunWriter;
use hushwall_core::engine::{Engine, EngineConfig, FlowId, SocketDriver, Stats};
use hushwall_core::event::Event;
use hushwall_core::policy::Policy;
use mio::event::Event as MioEvent;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use trace::Trace;

pub(crate) mod trace;

/// Token of the tun file descriptor.
const TUN: Token = Token(usize::MAX);
/// Token of the cross-thread waker.
const WAKER: Token = Token(usize::MAX - 1);
/// Token of the rtnetlink socket (address and route changes).
const NETLINK: Token = Token(usize::MAX - 2);
/// Most tun packets read per iteration.
const TUN_BATCH: usize = 256;
/// Most datagrams read from one UDP socket per iteration.
const UDP_BATCH: usize = 64;
/// Largest IP packet the tun can hand us.
const MAX_PACKET: usize = 65535;

/// Runs the engine on `tun` until `control` asks it to stop or the tun fails; returns the final counters.
///
/// `tun` must read and write one whole IP packet per call (a Linux tun with `IFF_NO_PI`, Android's VPN fd); it
/// is switched to non-blocking mode here.
pub fn run<T: Read + Write + AsRawFd>(
    mut tun: T,
    mut config: EngineConfig,
    policy: Arc<Policy>,
    platform: Platform,
    control: Arc<Control>,
) -> io::Result<Stats> {
    let Platform { protector, uids, events: mut sink, watch_network, capture } = platform;
    config.capture = capture.is_some();
    if config.dns_seed == [0; 32] {
        config.dns_seed = os_random_key()?;
    }
    sys::prefer_mmap_for_large_buffers();
    sys::set_nonblocking(tun.as_raw_fd())?;
    let mut poll = Poll::new()?;
    control.install_waker(Waker::new(poll.registry(), WAKER)?);
    poll.registry().register(&mut SourceFd(&tun.as_raw_fd()), TUN, Interest::READABLE)?;
    let mut sockets = Sockets::new(poll.registry().try_clone()?, protector, uids);
    let mut writer = TunWriter::spawn(tun.as_raw_fd())?;
    let mut capture = capture.map(CaptureWriter::spawn).transpose()?;
    let mut engine = Engine::new(config, policy, Instant::now(), wall_clock_ms());
    let mut netlink = if watch_network { open_netlink_watch(&poll) } else { None };
    sockets.own_addresses.set_watched(netlink.is_some());
    // Whether the network may have changed since the engine last looked (the first look is at start).
    let mut network_changed = netlink.is_some();
    let mut ready = Events::with_capacity(1024);
    let mut packet = vec![0u8; MAX_PACKET];
    let mut batch: Vec<Event> = Vec::new();
    // Work left over from a bounded iteration: poll without sleeping until it is done.
    let mut tun_backlog = true;
    let mut udp_backlog: Vec<FlowId> = Vec::new();
    let mut trace = Trace::from_env();

    while !control.stop_requested() {
        if let Some(policy) = control.take_policy() {
            engine.set_policy(policy);
        }
        if let Some(uids) = control.take_blocked_uids() {
            engine.set_blocked_uids(uids);
        }
        if let Some(info) = control.take_network() {
            engine.network_changed(info);
            sockets.own_addresses.network_changed();
            let now = Instant::now();
            network::end_flows_on_vanished_addresses(now, &mut engine, &mut sockets);
            engine.perform_socket_actions(now, &mut sockets);
        }
        let now = Instant::now();
        let timeout = if tun_backlog || !udp_backlog.is_empty() {
            Some(Duration::ZERO)
        } else {
            engine.poll_timeout(now).map(|at| at.saturating_duration_since(now))
        };
        match poll.poll(&mut ready, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        if let Some(trace) = trace.as_mut() {
            let events = ready.iter().count();
            trace.line(format_args!("wake\t{events}\t{}", timeout.map_or(-1, |t| t.as_micros() as i64)));
        }
        sockets.uids.next_iteration();
        for event in ready.iter() {
            match event.token() {
                TUN => tun_backlog = true,
                WAKER => {}
                NETLINK => {
                    if netlink.as_mut().is_some_and(NetlinkWatch::drain) {
                        // Before the tun is read: a dial in this iteration must see the new addresses.
                        sockets.own_addresses.network_changed();
                        network_changed = true;
                    }
                }
                token => {
                    let flow = flow_of(token);
                    if let Some(trace) = trace.as_mut() {
                        trace.socket_event(flow, event.is_readable(), &sockets);
                    }
                    on_socket_event(now, event, flow, &mut engine, &mut sockets, &mut udp_backlog, &mut packet)
                }
            }
        }
        for flow in std::mem::take(&mut udp_backlog) {
            if read_udp(now, flow, &mut engine, &mut sockets, &mut packet) {
                udp_backlog.push(flow);
            }
        }
        if tun_backlog {
            // The batch's UDP datagrams go upstream together, each flow's in one segmented send, when the
            // engine's socket actions are performed below.
            sockets.hold_udp_sends();
            tun_backlog = read_tun(now, &mut tun, &mut engine, &mut sockets, &mut packet, trace.as_mut())?;
        }
        // What the phone's packets were answered with at once (a SYN|ACK, a DNS answer, a refusal) goes out
        // before the flows' upstream work below (dials, sends, closes, freeing buffers), whose system calls would
        // otherwise delay it (connect and DNS latency: BENCHMARKS.md, "Where the tail comes from").
        // Events first, each time: app attribution reads the client's socket (/proc/net,
        // getConnectionOwnerUid), and the refusals about to be written (RST, NXDOMAIN) make the client close it.
        attribute_events(&mut engine, sockets.uids.as_mut(), &mut batch);
        writer.flush(&mut engine, trace.as_mut());
        engine.perform_socket_actions(now, &mut sockets);
        engine.note_udp_send_failures(sockets.send_held());
        follow_network(now, &mut engine, &mut sockets, netlink.is_some(), std::mem::take(&mut network_changed));
        engine.handle_timeout(now);
        engine.perform_socket_actions(now, &mut sockets);
        attribute_events(&mut engine, sockets.uids.as_mut(), &mut batch);
        deliver_events(sink.as_mut(), &mut batch);
        writer.flush(&mut engine, trace.as_mut());
        if let Some(capture) = capture.as_mut() {
            capture.pump(&mut engine);
        }
        if let Some(trace) = trace.as_mut() {
            trace.end_iteration();
        }
        control.publish_stats(engine.stats());
    }
    // Summaries of identical blocks still being folded are events too.
    engine.flush_folded_events(Instant::now());
    attribute_events(&mut engine, sockets.uids.as_mut(), &mut batch);
    deliver_events(sink.as_mut(), &mut batch);
    if let Some(mut capture) = capture.take() {
        capture.pump(&mut engine);
    }
    log::info!("engine stopping; {} upstream sockets open", sockets.len());
    Ok(engine.stats())
}

/// The rtnetlink watch, registered with `poll`; `None` (logged) if the platform does not allow it.
fn open_netlink_watch(poll: &Poll) -> Option<NetlinkWatch> {
    match NetlinkWatch::open(poll.registry(), NETLINK) {
        Ok(watch) => Some(watch),
        Err(e) => {
            log::warn!("cannot watch network changes (rtnetlink): {e}; failures will not follow the network");
            None
        }
    }
}

/// Ends flows the network failed under (a send found their network or address gone). After a change (an
/// rtnetlink notification, or such a failure) ends the flows on vanished addresses and, when `watching` the
/// network, re-probes each family.
fn follow_network(now: Instant, engine: &mut Engine, sockets: &mut Sockets, watching: bool, changed: bool) {
    for flow in std::mem::take(&mut sockets.unroutable) {
        let error = io::Error::new(io::ErrorKind::NetworkUnreachable, "the network is gone under this flow");
        engine.on_upstream_error(now, flow, error);
    }
    let suspect = std::mem::take(&mut sockets.network_suspect);
    if changed || suspect {
        network::end_flows_on_vanished_addresses(now, engine, sockets);
        if watching {
            network::reprobe(engine, sockets);
        }
    }
}

/// Reads up to [`TUN_BATCH`] packets into the engine; true if more may be waiting.
fn read_tun<T: Read>(
    now: Instant,
    tun: &mut T,
    engine: &mut Engine,
    sockets: &mut Sockets,
    packet: &mut [u8],
    mut trace: Option<&mut Trace>,
) -> io::Result<bool> {
    for _ in 0..TUN_BATCH {
        match tun.read(packet) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the tun device was closed")),
            Ok(n) => {
                let packet = packet.get(..n).unwrap_or_default();
                match trace.as_deref_mut() {
                    None => engine.handle_tun_packet(now, packet, sockets),
                    Some(trace) => trace.handle_tun_packet(packet, sockets.len(), |packet| {
                        engine.handle_tun_packet(now, packet, sockets);
                        sockets.len()
                    }),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Passes a socket's readiness to the engine.
fn on_socket_event(
    now: Instant,
    event: &MioEvent,
    flow: FlowId,
    engine: &mut Engine,
    sockets: &mut Sockets,
    udp_backlog: &mut Vec<FlowId>,
    buf: &mut [u8],
) {
    if matches!(sockets.conns.get(&flow), Some(Conn::Udp(_))) {
        if read_udp(now, flow, engine, sockets, buf) {
            udp_backlog.push(flow);
        }
        return;
    }
    match sockets.conns.get_mut(&flow) {
        Some(Conn::Tcp { stream, connecting }) if *connecting => {
            let result = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match stream.peer_addr() {
                    Ok(_) => Ok(()),
                    // Not connected yet and no error: a spurious wake-up; wait for the next event.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected && !event.is_error() => return,
                    Err(e) => Err(e),
                },
            };
            *connecting = result.is_err();
            if result.as_ref().is_err_and(crate::network::is_network_gone) {
                sockets.network_suspect = true;
            }
            engine.on_tcp_connected(now, flow, result);
        }
        Some(Conn::Tcp { .. }) => {
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                engine.upstream_readable(now, flow, |buf| sockets.read(flow, buf));
            }
            if event.is_writable() || event.is_write_closed() || event.is_error() {
                engine.upstream_writable(now, flow, |data| sockets.write(flow, data));
            }
        }
        Some(Conn::Udp(_)) | None => {}
    }
}

/// Reads up to [`UDP_BATCH`] datagrams from one socket into the engine; true if more may be waiting.
fn read_udp(now: Instant, flow: FlowId, engine: &mut Engine, sockets: &mut Sockets, buf: &mut [u8]) -> bool {
    for _ in 0..UDP_BATCH {
        if !matches!(sockets.conns.get(&flow), Some(Conn::Udp(_))) {
            return false;
        }
        match sockets.udp_recv(flow, buf) {
            Ok((n, from, to)) => {
                let data = buf.get(..n).unwrap_or_default();
                match to {
                    Addressee::Phone => engine.on_udp_datagram_from(now, flow, from, data),
                    Addressee::Group => engine.on_udp_group_datagram(now, flow, from, data),
                    Addressee::Nobody => log::trace!("flow {}: datagram from {from} not for the phone", flow.0),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => engine.on_udp_error(now, flow, e),
        }
    }
    true
}

/// Takes the engine's new events into `batch`, attributed to apps.
fn attribute_events(engine: &mut Engine, uids: &mut dyn crate::platform::UidResolver, batch: &mut Vec<Event>) {
    while let Some(mut event) = engine.poll_event() {
        if event.uid.is_none() {
            event.uid = uids.uid(event.protocol, event.src, event.dst);
        }
        batch.push(event);
    }
}

/// Hands the iteration's events to the platform in one batch.
fn deliver_events(sink: &mut dyn crate::platform::EventSink, batch: &mut Vec<Event>) {
    if !batch.is_empty() {
        sink.deliver(batch);
        batch.clear();
    }
}

/// 32 bytes from the kernel's CSPRNG (`/dev/urandom`: readable by apps on Android too), the key of the engine's
/// DNS query ids.
fn os_random_key() -> io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read OS randomness from /dev/urandom: {e}")))?;
    Ok(key)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn wall_clock_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}
