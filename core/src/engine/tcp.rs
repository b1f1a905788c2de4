//! TCP flows: how a connection from the phone is judged, dialled and spliced to its upstream socket.
//!
//! Every connection is terminated in smoltcp. Depending on what the destination address tells, a new flow
//! either dials at once with the SYN|ACK held back until the upstream answers ([`Phase::Dialing`]), or completes
//! the handshake locally and reads the client's first bytes to learn the TLS SNI or HTTP Host before it decides
//! and dials ([`Phase::Sniffing`]): that way a blocked server never receives a packet.

use super::packet::TcpSummary;
use super::reply;
use super::timers::Timer;
use super::{AddressVerdict, Engine, FlowId, Upstream};
use crate::event::Protocol;
use crate::inspect::{sniff_stream, StreamSniff};
use crate::verdict::{Reason, Verdict};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{Socket, State};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod peek;
pub(crate) use peek::PeekState;

/// The most client bytes read to find a ClientHello or request headers.
const SNIFF_MAX: usize = 16 * 1024;
/// Once a client has started sending, how long it has to complete its ClientHello or request headers.
const SNIFF_COMPLETE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dialled flow's phone side has to answer the SYN|ACK once the upstream connected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At the flow cap, a connection quiet for at least this long is closed to make room for a new one; busier ones
/// are never evicted (a flood of fresh connections is refused instead of displacing the phone's live ones).
const EVICT_MIN_IDLE: Duration = Duration::from_secs(60);
/// Ports whose protocols have the server speak first: waiting for client bytes would only add delay, so these
/// are judged by address and dialled at once (FTP, SSH, Telnet, SMTP, POP3, IMAP, submission, MySQL, VNC).
const SERVER_FIRST_PORTS: [u16; 9] = [21, 22, 23, 25, 110, 143, 587, 3306, 5900];
/// DNS over TCP is answered by the engine's own DNS forwarder.
const DNS_PORT: u16 = 53;
/// DNS over TLS.
const DOT_PORT: u16 = 853;

/// Where a TCP flow is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Upstream connect under way; the client's SYN|ACK is held until it succeeds.
    Dialing,
    /// Handshake done locally; waiting for the client's first bytes (SNI, Host).
    Sniffing {
        /// The client has sent at least one byte.
        started: bool,
    },
    /// Sniffing allowed the flow; upstream connect under way; client bytes wait in smoltcp.
    Connecting,
    /// Bytes flow both ways.
    Forwarding,
    /// DNS over TCP, answered through the DNS forwarder; the count of queries awaiting answers.
    Dns { pending: u16 },
    /// Refused after sniffing; the RST goes out and the flow is retired.
    Refused,
    /// A blocked plain-HTTP request read to its end for the payload peek, then answered `403 Forbidden`.
    Peeking {
        /// The refusal has been sent; the connection is closing.
        answered: bool,
    },
}

/// One TCP connection from the phone.
#[derive(Debug)]
pub(crate) struct TcpFlow {
    pub(crate) handle: SocketHandle,
    pub(crate) client: SocketAddr,
    pub(crate) server: SocketAddr,
    pub(crate) phase: Phase,
    /// The host name the flow is for, if known (SNI, Host, or a name DNS mapped to the address).
    host: Option<String>,
    /// When the current phase times out (sniffing, connecting).
    deadline: Option<Instant>,
    /// The verdict if sniffing finds no host name (set when the address alone says block).
    fallback: Option<Verdict>,
    /// An upstream socket was requested and not yet closed.
    upstream_open: bool,
    /// The upstream socket may have bytes to read.
    upstream_readable: bool,
    /// The upstream socket may accept bytes.
    upstream_writable: bool,
    /// The upstream has closed its sending side.
    upstream_eof: bool,
    /// The client's FIN has been passed upstream.
    fin_forwarded: bool,
    /// The flow is closed and waits for its socket to be freed.
    retired: bool,
    /// When the flow last moved bytes or changed state.
    last_active: Instant,
}

impl TcpFlow {
    fn new(
        handle: SocketHandle,
        client: SocketAddr,
        server: SocketAddr,
        phase: Phase,
        host: Option<String>,
        now: Instant,
    ) -> Self {
        TcpFlow {
            handle,
            client,
            server,
            phase,
            host,
            deadline: None,
            fallback: None,
            upstream_open: false,
            upstream_readable: false,
            upstream_writable: false,
            upstream_eof: false,
            fin_forwarded: false,
            retired: false,
            last_active: now,
        }
    }
}

impl Engine {
    /// A TCP segment from the phone.
    pub(super) fn on_tcp_segment(
        &mut self,
        now: Instant,
        packet: &[u8],
        client: SocketAddr,
        server: SocketAddr,
        seg: &TcpSummary,
        up: &mut impl Upstream,
    ) {
        if let Some(&id) = self.tcp_keys.get(&(client, server)) {
            self.stack.enqueue(packet);
            self.touched.push(id);
            return;
        }
        if !seg.is_initial_syn() {
            // A segment of no flow we know (e.g. after the engine restarted): answer like a closed port.
            if !seg.rst {
                self.send_reset(client, server, seg);
            }
            return;
        }
        self.open_tcp_flow(now, packet, client, server, seg, up);
    }

    /// Judges a new connection and, unless refused, starts terminating it in smoltcp.
    fn open_tcp_flow(
        &mut self,
        now: Instant,
        packet: &[u8],
        client: SocketAddr,
        server: SocketAddr,
        seg: &TcpSummary,
        up: &mut impl Upstream,
    ) {
        if let Some(uid) = self.blocked_app(Protocol::Tcp, client, server, up) {
            self.send_reset(client, server, seg);
            self.report_app_blocked(now, Protocol::Tcp, client, server, uid);
            return;
        }
        let server_first = SERVER_FIRST_PORTS.contains(&server.port());
        let (phase, host, fallback) = if server.port() == DNS_PORT {
            (Phase::Dns { pending: 0 }, None, None)
        } else if server.port() == DOT_PORT && self.config.block_dns_over_tls {
            self.refuse_tcp(now, client, server, seg, None, &Verdict::block(Reason::DnsOverTls));
            return;
        } else {
            match self.address_verdict(now, server.ip()) {
                AddressVerdict::Decided(verdict) if verdict.is_block() => {
                    self.refuse_tcp(now, client, server, seg, None, &verdict);
                    return;
                }
                AddressVerdict::MappedBlocked(verdict, host) if server_first => {
                    self.refuse_tcp(now, client, server, seg, Some(&host), &verdict);
                    return;
                }
                AddressVerdict::Decided(_) => (Phase::Dialing, None, None),
                AddressVerdict::MappedBlocked(verdict, host) => {
                    (Phase::Sniffing { started: false }, Some(host), Some(verdict))
                }
                AddressVerdict::Shared(host) | AddressVerdict::Unknown(Some(host)) if server_first => {
                    (Phase::Dialing, Some(host), None)
                }
                AddressVerdict::Unknown(None) if server_first => (Phase::Dialing, None, None),
                AddressVerdict::Shared(host) | AddressVerdict::Unknown(Some(host)) => {
                    (Phase::Sniffing { started: false }, Some(host), None)
                }
                AddressVerdict::Unknown(None) => (Phase::Sniffing { started: false }, None, None),
            }
        };
        if self.tcp.len() - self.retiring.len() >= self.config.max_tcp_flows && !self.evict_idle_tcp_flow(now, up) {
            self.refuse_tcp(now, client, server, seg, host.as_deref(), &Verdict::block(Reason::FlowLimit));
            return;
        }
        // Let smoltcp finish what is queued first, so this SYN is the only one that can meet the new listener.
        self.stack.poll(now);
        let hold_synack = phase == Phase::Dialing;
        let Some(handle) =
            self.stack.listen(server, self.tcp_rx_buffer_size(), self.config.tcp_buffer_size, hold_synack)
        else {
            self.stats.dropped += 1;
            self.send_reset(client, server, seg);
            return;
        };
        self.stack.enqueue(packet);
        self.stack.poll(now);
        if self.stack.tcp(handle).state() != State::SynReceived {
            // smoltcp did not take the SYN (e.g. bad checksum): drop the listener so it cannot catch another flow.
            self.stack.remove(handle);
            self.stats.malformed += 1;
            return;
        }
        let id = self.new_flow_id();
        self.stats.tcp_flows += 1;
        let mut flow = TcpFlow::new(handle, client, server, phase, host, now);
        flow.fallback = fallback;
        self.tcp.insert(id, flow);
        self.tcp_keys.insert((client, server), id);
        match phase {
            Phase::Dialing => self.dial(now, id, up),
            Phase::Sniffing { .. } => self.set_deadline(id, now + self.config.sniff_timeout),
            _ => {}
        }
    }

    /// The receive buffer size for a new flow: [`EngineConfig::tcp_receive_window_segments`] full segments.
    ///
    /// [`EngineConfig::tcp_receive_window_segments`]: super::EngineConfig::tcp_receive_window_segments
    fn tcp_rx_buffer_size(&self) -> usize {
        let segments = self.config.tcp_receive_window_segments;
        let mss = self.config.mtu.saturating_sub(40).max(536);
        segments.saturating_mul(mss).min(self.config.tcp_buffer_size)
    }

    /// Refuses a connection attempt with RST and reports it.
    fn refuse_tcp(
        &mut self,
        now: Instant,
        client: SocketAddr,
        server: SocketAddr,
        seg: &TcpSummary,
        host: Option<&str>,
        verdict: &Verdict,
    ) {
        self.send_reset(client, server, seg);
        self.report(now, Protocol::Tcp, client, server, host, verdict);
    }

    fn send_reset(&mut self, client: SocketAddr, server: SocketAddr, seg: &TcpSummary) {
        let mut buf = self.stack.device.take_out_buffer();
        if reply::tcp_reset(&mut buf, client, server, seg) {
            self.stack.device.out.push_back(buf);
        } else {
            self.stack.device.recycle(buf);
        }
    }

    fn set_deadline(&mut self, id: FlowId, at: Instant) {
        if let Some(flow) = self.tcp.get_mut(&id) {
            flow.deadline = Some(at);
            self.timers.arm(at, Timer::Tcp(id));
        }
    }

    /// Asks the driver to connect the flow upstream.
    fn dial(&mut self, now: Instant, id: FlowId, up: &mut impl Upstream) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        match up.tcp_connect(id, flow.server) {
            Ok(()) => {
                flow.upstream_open = true;
                self.set_deadline(id, now + self.config.connect_timeout);
            }
            Err(error) => self.fail_tcp_flow(now, id, Reason::ConnectFailed, error),
        }
    }

    /// The driver's report that an upstream connect finished.
    pub fn on_tcp_connected(&mut self, now: Instant, id: FlowId, result: io::Result<()>, up: &mut impl Upstream) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        if !matches!(flow.phase, Phase::Dialing | Phase::Connecting) {
            return;
        }
        match result {
            Ok(()) => {
                let socket = self.stack.tcp(flow.handle);
                socket.pause_synack(false);
                flow.phase = Phase::Forwarding;
                flow.deadline = None;
                flow.upstream_writable = true;
                flow.upstream_readable = true;
                if socket.state() == State::SynReceived {
                    // The phone has yet to answer the SYN|ACK released now.
                    self.set_deadline(id, now + HANDSHAKE_TIMEOUT);
                }
                self.touched.push(id);
            }
            Err(error) => self.fail_tcp_flow(now, id, Reason::ConnectFailed, error),
        }
        self.poll(now, up);
    }

    /// The driver's report that a flow's upstream socket became readable.
    pub fn on_upstream_readable(&mut self, id: FlowId) {
        if let Some(flow) = self.tcp.get_mut(&id) {
            flow.upstream_readable = true;
            self.touched.push(id);
        }
    }

    /// The driver's report that a flow's upstream socket became writable.
    pub fn on_upstream_writable(&mut self, id: FlowId) {
        if let Some(flow) = self.tcp.get_mut(&id) {
            flow.upstream_writable = true;
            self.touched.push(id);
        }
    }

    /// A sniff or connect deadline passed.
    pub(super) fn on_tcp_deadline(&mut self, now: Instant, id: FlowId, up: &mut impl Upstream) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        if flow.deadline.is_none_or(|at| at > now) {
            return;
        }
        flow.deadline = None;
        let handshake_done = self.stack.tcp(flow.handle).state() != State::SynReceived;
        match flow.phase {
            // The client has not even completed the handshake: never dial for it (a SYN flood would become a
            // connection flood to the server). Give a lost SYN|ACK or ACK time to be retransmitted, then give up.
            Phase::Sniffing { started: false } if !handshake_done => {
                flow.phase = Phase::Sniffing { started: true };
                self.set_deadline(id, now + SNIFF_COMPLETE_TIMEOUT);
            }
            Phase::Sniffing { .. } if !handshake_done => {
                self.stack.tcp(flow.handle).abort();
                self.touched.push(id);
            }
            Phase::Sniffing { .. } => self.finish_sniff(now, id, None, up),
            Phase::Dialing | Phase::Connecting => {
                let why = format!("no answer within {:?}", self.config.connect_timeout);
                self.fail_tcp_flow(now, id, Reason::ConnectFailed, why);
            }
            Phase::Peeking { .. } => self.on_peek_deadline(now, id),
            // Dialled for a SYN whose sender never completed the handshake (spoofed, or gone): end it and its
            // upstream connection rather than retransmit the SYN|ACK forever.
            Phase::Forwarding if !handshake_done => {
                self.stack.tcp(flow.handle).abort();
                self.touched.push(id);
            }
            Phase::Forwarding | Phase::Dns { .. } | Phase::Refused => {}
        }
    }

    /// Moves whatever can move for one flow, then retires it if both sides are done.
    pub(super) fn service_tcp(&mut self, now: Instant, id: FlowId, up: &mut impl Upstream) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        flow.last_active = now;
        let (phase, handle) = (flow.phase, flow.handle);
        // Back in LISTEN means the client reset the handshake: nothing to sniff or splice, only to retire.
        if self.stack.tcp(handle).state() != State::Listen {
            match phase {
                Phase::Sniffing { .. } => self.sniff(now, id, up),
                Phase::Forwarding => {
                    if let Err(error) = self.splice(id, up) {
                        self.fail_tcp_flow(now, id, Reason::UpstreamReset, error);
                    }
                }
                Phase::Dns { .. } => self.serve_dns_over_tcp(now, id, up),
                Phase::Peeking { .. } => self.peek(now, id),
                Phase::Dialing | Phase::Connecting | Phase::Refused => {}
            }
        }
        self.retire_if_closed(id, up);
    }

    /// Looks at the client's first bytes; decides once they name a host or cannot.
    fn sniff(&mut self, now: Instant, id: FlowId, up: &mut impl Upstream) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        let queued = socket.recv_queue();
        let client_closed = !socket.may_recv();
        if queued == 0 && !client_closed {
            return;
        }
        self.scratch.resize(queued.min(SNIFF_MAX), 0);
        let seen = socket.peek_slice(&mut self.scratch).unwrap_or(0);
        let sniffed = sniff_stream(&self.scratch[..seen]);
        if matches!(sniffed, StreamSniff::NeedMore) && seen < SNIFF_MAX && !client_closed {
            if flow.phase == (Phase::Sniffing { started: false }) {
                flow.phase = Phase::Sniffing { started: true };
                self.set_deadline(id, now + SNIFF_COMPLETE_TIMEOUT);
            }
            return;
        }
        self.finish_sniff(now, id, Some(sniffed), up);
    }

    /// Decides a sniffed flow: by the name in its first bytes if there is one, else by address (already cleared).
    fn finish_sniff(&mut self, now: Instant, id: FlowId, sniffed: Option<StreamSniff>, up: &mut impl Upstream) {
        let http = matches!(sniffed, Some(StreamSniff::HttpHost(_)));
        let named = match sniffed {
            Some(StreamSniff::TlsSni(name)) => Some((self.name_verdict(&name, Reason::TlsSni), name)),
            Some(StreamSniff::HttpHost(name)) => Some((self.name_verdict(&name, Reason::HttpHost), name)),
            _ => None,
        };
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        let (verdict, host) = match named {
            Some((verdict, name)) => (verdict, Some(name)),
            None => (flow.fallback.take().unwrap_or_else(Verdict::no_match), None),
        };
        if host.is_some() {
            flow.host = host;
        }
        let (client, server, host) = (flow.client, flow.server, flow.host.clone());
        if verdict.is_block() && http && self.config.peek {
            self.start_peek(now, id, verdict);
            return;
        }
        if verdict.is_block() {
            flow.phase = Phase::Refused;
            self.stack.tcp(flow.handle).abort();
            self.touched.push(id);
        } else {
            flow.phase = Phase::Connecting;
            flow.deadline = None;
            self.dial(now, id, up);
        }
        self.report(now, Protocol::Tcp, client, server, host.as_deref(), &verdict);
    }

    /// Copies bytes both ways between the smoltcp socket and the upstream socket, as far as both sides allow.
    /// An error is the upstream socket's: the caller ends the flow.
    fn splice(&mut self, id: FlowId, up: &mut impl Upstream) -> io::Result<()> {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return Ok(());
        };
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        // Phone → upstream.
        while flow.upstream_writable && socket.can_recv() {
            match socket.recv(|data| match up.tcp_write(id, data) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            }) {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) => break,
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => flow.upstream_writable = false,
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        if !flow.fin_forwarded && client_finished_sending(socket.state()) && socket.recv_queue() == 0 {
            up.tcp_shutdown_write(id);
            flow.fin_forwarded = true;
        }
        // Upstream → phone.
        while flow.upstream_readable && !flow.upstream_eof && socket.can_send() {
            match socket.send(|buf| match up.tcp_read(id, buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            }) {
                Ok(Ok(0)) => {
                    flow.upstream_eof = true;
                    socket.close();
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => flow.upstream_readable = false,
                // The server reset the connection: the caller resets the phone's side too.
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Ends a flow whose upstream failed: resets the phone's side (the upstream socket is closed when the flow
    /// retires) and reports the failure.
    fn fail_tcp_flow(&mut self, now: Instant, id: FlowId, reason: Reason, error: impl std::fmt::Display) {
        let Some(flow) = self.tcp.get(&id) else {
            return;
        };
        let (key, host) = ((flow.client, flow.server), flow.host.clone());
        self.stack.tcp(flow.handle).abort();
        self.touched.push(id);
        self.report_failure(now, Protocol::Tcp, key, host.as_deref(), reason, error);
    }

    /// At the flow cap: closes the least recently active established flow if it has been quiet for
    /// [`EVICT_MIN_IDLE`] (RST to the phone, upstream closed, a `flow_evicted` event). False if none qualifies.
    fn evict_idle_tcp_flow(&mut self, now: Instant, up: &mut impl Upstream) -> bool {
        let oldest = self
            .tcp
            .iter()
            .filter(|(_, f)| !f.retired && matches!(f.phase, Phase::Forwarding | Phase::Dns { .. }))
            .min_by_key(|(_, f)| f.last_active)
            .map(|(&id, f)| (id, f.last_active));
        let Some((id, last_active)) = oldest.filter(|&(_, at)| at + EVICT_MIN_IDLE <= now) else {
            return false;
        };
        let idle = now.saturating_duration_since(last_active).as_secs();
        self.fail_tcp_flow(now, id, Reason::FlowEvicted, format_args!("flow table full; idle for {idle} s"));
        self.retire_if_closed(id, up);
        true
    }

    /// Removes a flow whose smoltcp socket has closed (after smoltcp had the chance to send its last RST/ACK)
    /// and closes its upstream socket: gracefully if both sides finished, with a RST otherwise.
    fn retire_if_closed(&mut self, id: FlowId, up: &mut impl Upstream) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        let state = self.stack.tcp(flow.handle).state();
        // LISTEN: a flow's socket only gets back there when the client reset the handshake (smoltcp returns a
        // SYN-RECEIVED socket to LISTEN on RST). The connection is over; a listener left behind would be dialled
        // at its deadline, hold its upstream socket forever and could capture a later connection.
        if flow.retired || !matches!(state, State::Closed | State::TimeWait | State::Listen) {
            return;
        }
        if flow.upstream_open {
            let graceful = flow.upstream_eof && flow.fin_forwarded;
            up.tcp_close(id, !graceful);
            flow.upstream_open = false;
        }
        flow.retired = true;
        self.retiring.push(id);
    }

    /// Frees the sockets of flows retired before the last stack poll.
    pub(super) fn free_retired(&mut self) {
        for id in std::mem::take(&mut self.retiring) {
            if let Some(flow) = self.tcp.remove(&id) {
                self.tcp_keys.remove(&(flow.client, flow.server));
                self.stack.remove(flow.handle);
            }
        }
    }
}

/// True once the phone has closed its sending side (its FIN was received), so its FIN may be passed upstream.
///
/// `may_recv()` cannot tell this: it is also false in SYN-RECEIVED, where a flow dialled at the SYN (server-first
/// ports) sits until the phone ACKs the released SYN|ACK. Forwarding a FIN there half-closed the upstream
/// connection before the client had said anything, and servers such as sshd hang up on that.
fn client_finished_sending(state: State) -> bool {
    matches!(state, State::CloseWait | State::LastAck | State::Closing | State::TimeWait)
}
