//! TCP flows: how a connection from the phone is judged, dialled and spliced to its upstream socket.
//!
//! Every connection is terminated in smoltcp. Depending on what the destination address tells, a new flow
//! either dials at once with the SYN|ACK held back until the upstream answers ([`TcpState::Dialing`]), or
//! completes the handshake locally and reads the client's first bytes to learn the TLS SNI or HTTP Host before it
//! decides and dials ([`TcpState::Sniffing`]): that way a blocked server never receives a packet. Each flow's
//! life is the state machine drawn in `tcp::state`.
//!
//! The client's first bytes are always judged before any of them is forwarded. On the ports where clients speak
//! first (web ports) a silent client is never dialled: after [`CLIENT_FIRST_WAIT`] it is reset. On other ports a
//! client silent for [`EngineConfig::sniff_timeout`](super::EngineConfig::sniff_timeout) is dialled by address
//! (the server may speak first), but its direction stays shut ([`ClientGate`]) until its first bytes are judged:
//! a late ClientHello or request naming a blocked host resets both sides, and that server has seen a TCP
//! handshake but no byte of the client's. TLS or HTTP whose host cannot be read is refused
//! ([`BlockReason::Uninspectable`]). Destinations that would reach the device itself are refused at the SYN.

use super::budget::{Client, Owner, Table, SMALL_TCP_BUFFER};
use super::packet::TcpInbound;
use super::private_dns::DOT_PORT;
use super::reply;
use super::socket_action::Direction;
use super::state_machine::StateMachine;
use super::timers::Timer;
use super::{AddressVerdict, Engine, FlowId, OwnerLookup, SocketAction, Transfer};
use crate::event::Protocol;
use crate::inspect::http::{scan_request_head, HeadScan};
use crate::inspect::http_stream::{RequestStream, Step};
use crate::inspect::tls::MAX_CLIENT_HELLO_STREAM_LEN;
use crate::inspect::{sniff_stream, StreamSniff};
use crate::policy::Decision;
use crate::verdict::{AllowReason, BlockReason, ErrorReason, Reason, Verdict};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{Socket, State};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

mod dns_stream;
mod peek;
mod state;

use state::{ClientGate, FlowName, TcpState, UpstreamSocket};

/// The most client bytes read to find a ClientHello or request headers: the largest ClientHello the TLS reader
/// accepts. A head still incomplete at this size (or at the receive buffer's size, if smaller) is refused.
const SNIFF_MAX: usize = MAX_CLIENT_HELLO_STREAM_LEN;
/// How many bytes are looked at first for a later request head or a chunk line (more only if it needs more).
const FIRST_LOOK: usize = 2048;
/// Once a client has started sending, how long it has to complete its ClientHello or request headers.
pub(super) const SNIFF_COMPLETE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dialled flow's phone side has to answer the SYN|ACK once the upstream connected.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the server reset a connection whose client had sent all it had, how long the phone has to close its side
/// (its FIN is usually already on the way: a client's TLS close_notify and FIN leave together, and the reset answers
/// the first) before its side is reset and the reset reported. A client that sends instead learns at once.
pub(super) const RESET_LINGER: Duration = Duration::from_millis(250);
/// At the flow cap, a connection quiet for at least this long is closed to make room for a new one; busier ones
/// are never evicted (a flood of fresh connections is refused instead of displacing the phone's live ones).
pub(super) const EVICT_MIN_IDLE: Duration = Duration::from_secs(60);
/// Ports whose protocols have the server speak first: waiting for client bytes would only add delay, so these
/// are judged by address and dialled at once (FTP, SSH, Telnet, SMTP, POP3, IMAP, submission, MySQL, VNC).
const SERVER_FIRST_PORTS: [u16; 9] = [21, 22, 23, 25, 110, 143, 587, 3306, 5900];
/// Ports whose protocols have the client speak first (HTTP, HTTPS and their alternates): a connection here is
/// never dialled before the client's first bytes are judged, however long they take.
const CLIENT_FIRST_PORTS: [u16; 4] = [80, 443, 8080, 8443];
/// How long a client on a [`CLIENT_FIRST_PORTS`] port may stay silent before it is reset (browsers keep
/// preconnected sockets unused for up to 10 s).
pub(super) const CLIENT_FIRST_WAIT: Duration = Duration::from_secs(15);
/// DNS over TCP is answered by the engine's own DNS forwarder.
const DNS_PORT: u16 = 53;

/// One TCP connection from the phone.
#[derive(Debug)]
pub(crate) struct TcpFlow {
    pub(crate) handle: SocketHandle,
    pub(crate) client: SocketAddr,
    pub(crate) server: SocketAddr,
    /// Where the flow is in its life, with the data only that state has (see `tcp::state`).
    state: TcpState,
    /// The host name the flow is for, if known (SNI, Host, or a name DNS mapped to the address).
    host: Option<String>,
    /// The `ip_cidr` block of the destination's range, if it is in one: a name read from the client's first
    /// bytes must then be allow-listed (issue 14.2), even when DNS already named an allow-listed service there.
    range_block: Option<Verdict>,
    /// For a plain-HTTP flow, where its requests start: each is judged before it passes (see
    /// `inspect::http_stream`). `None` for other protocols, and once a switched protocol took over.
    http: Option<RequestStream>,
    /// The flow is closed and waits for its socket to be freed.
    retired: bool,
    /// When the flow last moved bytes or changed state.
    last_active: Instant,
    /// Bytes of its smoltcp socket buffers (send + receive), counted in the client's budget.
    buffers: usize,
    /// Whose budget the flow counts in (see `budget`).
    pub(crate) budget: Client,
}

impl TcpFlow {
    fn new(
        handle: SocketHandle,
        client: SocketAddr,
        server: SocketAddr,
        state: TcpState,
        host: Option<String>,
        now: Instant,
    ) -> Self {
        TcpFlow {
            handle,
            client,
            server,
            state,
            host,
            range_block: None,
            http: None,
            retired: false,
            last_active: now,
            buffers: 0,
            budget: Client::Address(client.ip()),
        }
    }

    /// Moves the flow to `next` (the one place a flow changes state, see `StateMachine::set`); returns the state
    /// left.
    fn set_state(&mut self, next: TcpState) -> TcpState {
        self.state.set(next, FlowName(self.client, self.server))
    }

    /// Refused after its bytes were judged: keeps the upstream socket, if any, to reset when the flow retires.
    fn refuse(&mut self) {
        let upstream = self.state.upstream().copied();
        self.set_state(TcpState::Refused { upstream });
    }

    /// Whether the flow's upstream connect is still under way.
    pub(crate) fn connecting(&self) -> bool {
        self.state.is_connecting()
    }
}

/// A flow judged by address and dialled at once; `gate` says whether the client's bytes may pass.
fn dialing(gate: ClientGate) -> TcpState {
    TcpState::Dialing { deadline: None, gate, upstream: None }
}

impl Engine {
    /// A TCP segment from the phone.
    pub(super) fn on_tcp_segment(&mut self, now: Instant, inbound: &TcpInbound<'_>, owners: &mut impl OwnerLookup) {
        if let Some(&id) = self.tcp_keys.get(&inbound.key()) {
            self.stack.enqueue(inbound.packet);
            self.touched.push(id);
            return;
        }
        if !inbound.seg.is_initial_syn() {
            // A segment of no flow we know (e.g. after the engine restarted): answer like a closed port.
            if !inbound.seg.rst {
                self.send_reset(inbound);
            }
            return;
        }
        self.open_tcp_flow(now, inbound, owners);
    }

    /// Judges a new connection and, unless refused, starts terminating it in smoltcp.
    fn open_tcp_flow(&mut self, now: Instant, syn: &TcpInbound<'_>, owners: &mut impl OwnerLookup) {
        let (client, server) = syn.key();
        if is_local_destination(server.ip()) {
            self.refuse_tcp(now, syn, None, &Verdict::block(BlockReason::LocalDestination));
            return;
        }
        // No route for this family: refused at once, so the client falls back to the other family (DNS over TCP
        // is answered here and unaffected).
        if server.port() != DNS_PORT && self.refuse_unroutable(now, Protocol::Tcp, (client, server)) {
            self.send_reset(syn);
            return;
        }
        let mut owner = Owner::default();
        if let Some(uid) = self.blocked_app(&mut owner, Protocol::Tcp, client, server, owners) {
            self.send_reset(syn);
            self.report_app_blocked(now, Protocol::Tcp, client, server, uid);
            return;
        }
        let server_first = SERVER_FIRST_PORTS.contains(&server.port());
        let range_block = match self.policy.check_ip(server.ip()) {
            Decision::Blocked(rule) => Some(Verdict::Block { reason: BlockReason::IpCidr, rule: Some(rule) }),
            Decision::Allowed(_) | Decision::NoMatch => None,
        };
        let (state, host) = if server.port() == DNS_PORT {
            (TcpState::Dns { pending: 0 }, None)
        } else if server.port() == DOT_PORT && self.config.block_dns_over_tls && self.private_dns_is_set() {
            // Only the ClientHello tells whether it goes to the user's Private DNS server (finish_sniff).
            (TcpState::sniffing(Some(Verdict::block(BlockReason::DnsOverTls))), None)
        } else if server.port() == DOT_PORT && self.config.block_dns_over_tls {
            self.refuse_tcp(now, syn, None, &Verdict::block(BlockReason::DnsOverTls));
            return;
        } else {
            match self.address_verdict(now, server.ip()) {
                // A blocked range, and DNS has told us no name for the address: on a web port the ClientHello or
                // request may name an allow-listed service hosted there (issue 14.2). Elsewhere, or without any
                // allow rule for names, nothing could lift the block: refused at the SYN below, as fast as the
                // kernel would.
                AddressVerdict::Decided(verdict)
                    if verdict.reason() == Reason::Block(BlockReason::IpCidr)
                        && CLIENT_FIRST_PORTS.contains(&server.port())
                        && self.policy.stats().allow_names > 0
                        && !self.knows_names(now, server.ip()) =>
                {
                    (TcpState::sniffing(Some(verdict)), None)
                }
                AddressVerdict::Decided(verdict) if verdict.is_block() => {
                    self.refuse_tcp(now, syn, None, &verdict);
                    return;
                }
                AddressVerdict::MappedBlocked(verdict, host) if server_first => {
                    self.refuse_tcp(now, syn, Some(&host), &verdict);
                    return;
                }
                // An allow rule for the range wins over everything; one for a name DNS mapped to an address in a
                // blocked range has the client's first bytes checked still (they must not name another host).
                AddressVerdict::Decided(_) => {
                    let gate = if range_block.is_none() { ClientGate::Open } else { ClientGate::Shut };
                    (dialing(gate), None)
                }
                AddressVerdict::MappedBlocked(verdict, host) => (TcpState::sniffing(Some(verdict)), Some(host)),
                AddressVerdict::Shared(host) | AddressVerdict::Unknown(Some(host)) if server_first => {
                    (dialing(ClientGate::Shut), Some(host))
                }
                AddressVerdict::Unknown(None) if server_first => (dialing(ClientGate::Shut), None),
                AddressVerdict::Shared(host) | AddressVerdict::Unknown(Some(host)) => {
                    (TcpState::sniffing(None), Some(host))
                }
                AddressVerdict::Unknown(None) => (TcpState::sniffing(None), None),
            }
        };
        let crowded = self.flows_crowded(Table::Tcp);
        let budget = self.budget_key(&mut owner, crowded, Protocol::Tcp, (client, server), owners);
        if self.tcp.len() - self.retiring.len() >= self.config.max_tcp_flows {
            if let Some(reason) = self.make_room(now, budget, Table::Tcp) {
                self.send_reset(syn);
                self.report_budget_refusal(now, Protocol::Tcp, (client, server), host.as_deref(), reason, budget);
                return;
            }
        }
        // Let smoltcp finish what is queued first, so this SYN is the only one that can meet the new listener.
        self.stack.poll(now);
        let hold_synack = matches!(state, TcpState::Dialing { .. });
        let sniff_wait = match state {
            TcpState::Sniffing { .. } if CLIENT_FIRST_PORTS.contains(&server.port()) => Some(CLIENT_FIRST_WAIT),
            TcpState::Sniffing { .. } => Some(self.config.sniff_timeout),
            _ => None,
        };
        let (rx_size, tx_size) = self.tcp_buffer_sizes(budget);
        let Some(handle) = self.stack.listen(server, rx_size, tx_size, hold_synack) else {
            self.stats.dropped += 1;
            self.send_reset(syn);
            return;
        };
        self.stack.enqueue(syn.packet);
        self.stack.poll(now);
        if self.stack.tcp(handle).state() != State::SynReceived {
            // smoltcp did not take the SYN (e.g. bad checksum): drop the listener so it cannot catch another flow.
            self.stack.remove(handle);
            self.stats.malformed += 1;
            return;
        }
        let id = self.new_flow_id();
        self.stats.tcp_flows += 1;
        let mut flow = TcpFlow::new(handle, client, server, state, host, now);
        flow.range_block = range_block;
        flow.buffers = rx_size + tx_size;
        flow.budget = budget;
        self.budgets.add_tcp(budget, flow.buffers);
        self.tcp.insert(id, flow);
        self.tcp_keys.insert((client, server), id);
        if hold_synack {
            self.dial(now, id);
        } else if let Some(wait) = sniff_wait {
            self.set_deadline(id, now + wait);
        }
    }

    /// The receive and send buffer sizes for a new flow of `client`: full size, or small once the client's flows
    /// hold [`EngineConfig::client_tcp_buffer_budget`] (see `budget`).
    ///
    /// [`EngineConfig::client_tcp_buffer_budget`]: super::EngineConfig::client_tcp_buffer_budget
    fn tcp_buffer_sizes(&self, client: Client) -> (usize, usize) {
        let (rx, tx) = (self.tcp_rx_buffer_size(), self.config.tcp_buffer_size);
        let held = self.budgets.usage(client).tcp_buffers;
        if held.saturating_add(rx + tx) <= self.config.client_tcp_buffer_budget {
            (rx, tx)
        } else {
            (rx.min(SMALL_TCP_BUFFER), tx.min(SMALL_TCP_BUFFER))
        }
    }

    /// The receive buffer size for a new flow: [`EngineConfig::tcp_receive_window_segments`] full segments.
    ///
    /// [`EngineConfig::tcp_receive_window_segments`]: super::EngineConfig::tcp_receive_window_segments
    pub(super) fn tcp_rx_buffer_size(&self) -> usize {
        let segments = self.config.tcp_receive_window_segments;
        let mss = self.config.mtu.saturating_sub(40).max(536);
        segments.saturating_mul(mss).min(self.config.tcp_buffer_size)
    }

    /// Refuses a connection attempt with RST and reports it.
    fn refuse_tcp(&mut self, now: Instant, syn: &TcpInbound<'_>, host: Option<&str>, verdict: &Verdict) {
        self.send_reset(syn);
        self.report(now, Protocol::Tcp, syn.client, syn.server, host, verdict);
    }

    /// Answers a segment with RST, as a closed port would.
    fn send_reset(&mut self, inbound: &TcpInbound<'_>) {
        let mut buf = self.stack.device.take_out_buffer();
        if reply::tcp_reset(&mut buf, inbound.client, inbound.server, &inbound.seg) {
            self.stack.device.out.push_back(buf);
        } else {
            self.stack.device.recycle(buf);
        }
    }

    /// Sets the deadline of the flow's state and arms its timer.
    fn set_deadline(&mut self, id: FlowId, at: Instant) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        match flow.state.deadline_mut() {
            Some(deadline) => {
                *deadline = Some(at);
                self.timers.arm(at, Timer::Tcp(id));
            }
            None => debug_assert!(false, "tcp {id:?}: {} has no deadline", flow.state.name()),
        }
    }

    /// Asks the driver to connect the flow upstream; [`Engine::on_tcp_connected`] tells how it went.
    fn dial(&mut self, now: Instant, id: FlowId) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        // Dial `a.b.c.d` for `::ffff:a.b.c.d`: what the policy judged, and never through a dual-stack socket.
        let dst = SocketAddr::new(flow.server.ip().to_canonical(), flow.server.port());
        if let TcpState::Dialing { upstream, .. } | TcpState::Connecting { upstream, .. } = &mut flow.state {
            *upstream = Some(UpstreamSocket::default());
        }
        self.ask(SocketAction::TcpConnect { flow: id, dst });
        self.set_deadline(id, now + self.config.connect_timeout);
    }

    /// The driver's report that an upstream connect finished.
    pub fn on_tcp_connected(&mut self, now: Instant, id: FlowId, result: io::Result<()>) {
        if self.dns.owns(id) {
            return self.on_dns_tcp_connected(now, id, result);
        }
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        let (gate, upstream) = match flow.state {
            TcpState::Dialing { gate, upstream, .. } | TcpState::Connecting { gate, upstream, .. } => (gate, upstream),
            _ => return,
        };
        match result {
            Ok(()) => {
                let socket = self.stack.tcp(flow.handle);
                socket.pause_synack(false);
                let upstream = UpstreamSocket { readable: true, writable: true, ..upstream.unwrap_or_default() };
                flow.set_state(TcpState::Forwarding { deadline: None, gate, upstream });
                if socket.state() == State::SynReceived {
                    // The phone has yet to answer the SYN|ACK released now.
                    self.set_deadline(id, now + HANDSHAKE_TIMEOUT);
                }
                self.touched.push(id);
            }
            Err(error) => self.fail_tcp_flow(now, id, ErrorReason::ConnectFailed, error),
        }
        self.poll(now);
    }

    /// The driver lends a flow's upstream stream to be read: its socket became readable (or closed, or failed),
    /// or [`Engine::perform_socket_actions`] is moving bytes the engine has room for. The server's bytes are read
    /// with `read` into the smoltcp socket towards the client, as far as it has room.
    pub fn upstream_readable(&mut self, now: Instant, id: FlowId, read: impl FnMut(&mut [u8]) -> Transfer) {
        if self.dns.owns(id) {
            return self.read_dns_answer(now, id, read);
        }
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        if let Some(upstream) = flow.state.upstream_mut() {
            upstream.readable = true;
        }
        // What was read goes out at the next stack poll; nothing else about the flow changed.
        if let Err(error) = self.pass_to_client(id, read) {
            self.end_reset_flow(now, id, error);
        }
    }

    /// The driver lends a flow's upstream stream to be written: its socket became writable (or closed, or
    /// failed), or [`Engine::perform_socket_actions`] is moving bytes the engine asked to. The client's bytes are
    /// written with `write` as far as the flow may forward them: on a plain-HTTP flow each request head is judged
    /// as it comes and its bytes pass only if it is allowed, repeated while requests follow one another and the
    /// stream takes them.
    pub fn upstream_writable(&mut self, now: Instant, id: FlowId, mut write: impl FnMut(&[u8]) -> Transfer) {
        if self.dns.owns(id) {
            return self.write_dns_query(now, id, write);
        }
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        if let Some(upstream) = flow.state.upstream_mut() {
            upstream.writable = true;
        }
        // The window opened by what was written goes out at the next stack poll; the client's FIN follows its
        // last byte here.
        loop {
            if !self.judge_next_request(now, id) {
                return;
            }
            let Some(flow) = self.tcp.get(&id) else {
                return;
            };
            let before = self.stack.tcp(flow.handle).recv_queue();
            if let Err(error) = self.pass_to_server(id, &mut write) {
                self.end_reset_flow(now, id, error);
                return;
            }
            let Some(flow) = self.tcp.get(&id) else {
                return;
            };
            let after = self.stack.tcp(flow.handle).recv_queue();
            // Another round only when this one passed bytes up to a request boundary and more are waiting.
            if flow.http.as_ref().is_none_or(|http| http.allowance() > 0) || after == 0 || after == before {
                break;
            }
        }
        self.pass_client_fin(id);
    }

    /// The deadline of a flow's state passed (sniffing, connecting, handshake, peek).
    pub(super) fn on_tcp_deadline(&mut self, now: Instant, id: FlowId) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        // A timer whose deadline moved or was cleared, or of a state left since, is stale.
        let Some(deadline) = flow.state.deadline_mut() else {
            return;
        };
        if deadline.is_none_or(|at| at > now) {
            return;
        }
        *deadline = None;
        let handshake_done = self.stack.tcp(flow.handle).state() != State::SynReceived;
        match &mut flow.state {
            // The client has not even completed the handshake: never dial for it (a SYN flood would become a
            // connection flood to the server). Give a lost SYN|ACK or ACK time to be retransmitted, then give up.
            TcpState::Sniffing { started, .. } if !handshake_done && !*started => {
                *started = true;
                self.set_deadline(id, now + SNIFF_COMPLETE_TIMEOUT);
            }
            TcpState::Sniffing { .. } if !handshake_done => {
                self.stack.tcp(flow.handle).abort();
                // Refused, so that servicing the aborted socket does not take it for a client that closed
                // without a word and dial it by address.
                flow.refuse();
                self.touched.push(id);
            }
            TcpState::Sniffing { .. } => self.sniff_at_deadline(now, id),
            TcpState::Dialing { .. } | TcpState::Connecting { .. } => {
                let why = format!("no answer within {:?}", self.config.connect_timeout);
                self.fail_tcp_flow(now, id, ErrorReason::ConnectFailed, why);
            }
            TcpState::Peeking { .. } | TcpState::Answered { .. } => self.on_peek_deadline(now, id),
            // Dialled for a SYN whose sender never completed the handshake (spoofed, or gone): end it and its
            // upstream connection rather than retransmit the SYN|ACK forever.
            TcpState::Forwarding { .. } if !handshake_done => {
                self.stack.tcp(flow.handle).abort();
                self.touched.push(id);
            }
            TcpState::Forwarding { gate: ClientGate::Reading, .. } => self.judge_late_bytes(now, id, true),
            // The phone neither closed nor sent since the server's reset.
            TcpState::Resetting { .. } => self.fail_reset_flow(now, id),
            TcpState::Forwarding { .. } | TcpState::Dns { .. } | TcpState::Refused { .. } => {}
        }
    }

    /// Moves whatever can move for one flow, then retires it if both sides are done.
    pub(super) fn service_tcp(&mut self, now: Instant, id: FlowId) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        flow.last_active = now;
        // Back in LISTEN means the client reset the handshake: nothing to sniff or splice, only to retire.
        if self.stack.tcp(flow.handle).state() != State::Listen {
            match flow.state {
                TcpState::Sniffing { .. } => self.sniff(now, id),
                TcpState::Forwarding { gate, .. } => {
                    if gate != ClientGate::Open {
                        self.judge_late_bytes(now, id, false);
                    }
                    self.forward(now, id);
                }
                TcpState::Dns { .. } => self.serve_dns_over_tcp(now, id),
                TcpState::Peeking { .. } | TcpState::Answered { .. } => self.peek(now, id),
                TcpState::Resetting { .. } => self.linger_after_reset(now, id),
                TcpState::Dialing { .. } | TcpState::Connecting { .. } | TcpState::Refused { .. } => {}
            }
        }
        self.retire_if_closed(id);
    }

    /// Looks at the client's first bytes; decides once they name a host or cannot.
    fn sniff(&mut self, now: Instant, id: FlowId) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        let queued = socket.recv_queue();
        let client_closed = client_finished(socket);
        if queued == 0 && !client_closed {
            return;
        }
        if queued == 0 && CLIENT_FIRST_PORTS.contains(&flow.server.port()) {
            // The client closed without a word where it had to speak first: nothing to judge or dial.
            socket.abort();
            flow.refuse();
            self.touched.push(id);
            return;
        }
        let limit = SNIFF_MAX.min(socket.recv_capacity());
        self.scratch.resize(queued.min(limit), 0);
        let seen = socket.peek_slice(&mut self.scratch).unwrap_or(0);
        let sniffed = sniff_stream(self.scratch.get(..seen).unwrap_or_default());
        if seen == 0 {
            // Closed without a byte on another port: decided by address, like a silent client.
            self.finish_sniff(now, id, None);
            return;
        }
        if matches!(sniffed, StreamSniff::NeedMore) && seen < limit && !client_closed {
            if let TcpState::Sniffing { started: started @ false, .. } = &mut flow.state {
                *started = true;
                self.set_deadline(id, now + SNIFF_COMPLETE_TIMEOUT);
            }
            return;
        }
        self.finish_sniff(now, id, Some(sniffed));
    }

    /// A sniffing flow's time is up: judged by what it sent (an incomplete head is refused), or, if it sent
    /// nothing, reset on a client-first port and decided by address elsewhere.
    fn sniff_at_deadline(&mut self, now: Instant, id: FlowId) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        let limit = SNIFF_MAX.min(socket.recv_capacity());
        self.scratch.resize(socket.recv_queue().min(limit), 0);
        let seen = socket.peek_slice(&mut self.scratch).unwrap_or(0);
        let sniffed = (seen > 0).then(|| sniff_stream(self.scratch.get(..seen).unwrap_or_default()));
        self.finish_sniff(now, id, sniffed);
    }

    /// The verdict on a flow's first bytes, `None` if it sent none: by the name in them, refused if TLS or HTTP
    /// without a readable name, else the address's verdict. In a blocked range a name must be allow-listed: a
    /// name that is merely not blocked keeps the range's block (issue 14.2), a blocked name gives its own, more
    /// precise reason.
    fn first_bytes_verdict(&self, sniffed: &Option<StreamSniff>, flow: &TcpFlow) -> Verdict {
        let fallback = || flow.state.fallback().cloned().unwrap_or_else(Verdict::no_match);
        let (name, block_reason) = match sniffed {
            Some(StreamSniff::TlsSni(name)) => (name, BlockReason::TlsSni),
            Some(StreamSniff::HttpHost(name)) => (name, BlockReason::HttpHost),
            Some(StreamSniff::Uninspectable | StreamSniff::NeedMore) => {
                return Verdict::block(BlockReason::Uninspectable)
            }
            None if CLIENT_FIRST_PORTS.contains(&flow.server.port()) => {
                return Verdict::block(BlockReason::Uninspectable);
            }
            Some(StreamSniff::Unknown) | None => return fallback(),
        };
        let verdict = self.name_verdict(name, block_reason);
        match &flow.range_block {
            Some(range) if verdict.reason() != Reason::Allow(AllowReason::AllowRule) && !verdict.is_block() => {
                range.clone()
            }
            _ => verdict,
        }
    }

    /// Decides a sniffed flow by its first bytes (`None`: it sent none in time): by the name in them if there is
    /// one, refused if they are TLS or HTTP without a readable name, else by address.
    fn finish_sniff(&mut self, now: Instant, id: FlowId, sniffed: Option<StreamSniff>) {
        let http = matches!(sniffed, Some(StreamSniff::HttpHost(_)));
        let Some(flow) = self.tcp.get(&id) else {
            return;
        };
        let sni = match &sniffed {
            Some(StreamSniff::TlsSni(name)) => Some(name.as_str()),
            _ => None,
        };
        // The user's Private DNS server is let through, other DNS-over-TLS refused, before the lists decide.
        let verdict = match self.private_dns_verdict(now, flow.server, sni) {
            Some(verdict) => verdict,
            None => self.first_bytes_verdict(&sniffed, flow),
        };
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        if let Some(StreamSniff::TlsSni(name) | StreamSniff::HttpHost(name)) = sniffed.as_ref() {
            flow.host = Some(name.clone());
        }
        // Bytes were judged: they may pass. A silent client's will be judged when they come.
        let gate = if sniffed.is_some() { ClientGate::Open } else { ClientGate::Shut };
        if sniffed.is_some() && is_http_request(&self.scratch) {
            flow.http = Some(RequestStream::new());
        }
        let (client, server, host) = (flow.client, flow.server, flow.host.clone());
        if verdict.is_block() && http && self.config.peek {
            self.start_peek(now, id, verdict);
            return;
        }
        if verdict.is_block() {
            flow.refuse();
            self.stack.tcp(flow.handle).abort();
            self.touched.push(id);
        } else {
            flow.set_state(TcpState::Connecting { deadline: None, gate, upstream: None });
            self.dial(now, id);
        }
        self.report(now, Protocol::Tcp, client, server, host.as_deref(), &verdict);
    }

    /// Judges the first bytes of a client dialled before it spoke (gate shut): a name that is blocked, or TLS or
    /// HTTP without a readable name, resets both sides before any byte is forwarded; anything else opens the
    /// gate. `at_deadline`: the client's time to complete its head is up.
    fn judge_late_bytes(&mut self, now: Instant, id: FlowId, at_deadline: bool) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        let (queued, client_closed) = (socket.recv_queue(), client_finished(socket));
        if queued == 0 {
            if let (true, TcpState::Forwarding { gate, .. }) = (client_closed, &mut flow.state) {
                // Nothing was sent: only the FIN is left to pass.
                *gate = ClientGate::Open;
            }
            return;
        }
        let limit = SNIFF_MAX.min(socket.recv_capacity());
        self.scratch.resize(queued.min(limit), 0);
        let seen = socket.peek_slice(&mut self.scratch).unwrap_or(0);
        let sniffed = sniff_stream(self.scratch.get(..seen).unwrap_or_default());
        if matches!(sniffed, StreamSniff::NeedMore) && seen < limit && !client_closed && !at_deadline {
            if let TcpState::Forwarding { gate: gate @ ClientGate::Shut, .. } = &mut flow.state {
                *gate = ClientGate::Reading;
                self.set_deadline(id, now + SNIFF_COMPLETE_TIMEOUT);
            }
            return;
        }
        let sniffed = Some(sniffed);
        let Some(flow) = self.tcp.get(&id) else {
            return;
        };
        let verdict = self.first_bytes_verdict(&sniffed, flow);
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        if let Some(StreamSniff::TlsSni(name) | StreamSniff::HttpHost(name)) = sniffed {
            flow.host = Some(name);
        }
        if !verdict.is_block() {
            if let TcpState::Forwarding { gate, deadline, .. } = &mut flow.state {
                *gate = ClientGate::Open;
                *deadline = None;
            }
            if is_http_request(&self.scratch) {
                flow.http = Some(RequestStream::new());
            }
            return;
        }
        // The upstream saw a handshake and nothing else; it is reset when the flow retires.
        flow.refuse();
        self.stack.tcp(flow.handle).abort();
        self.touched.push(id);
        let (client, server, host) = (flow.client, flow.server, flow.host.clone());
        self.report(now, Protocol::Tcp, client, server, host.as_deref(), &verdict);
    }

    /// Asks for what a forwarding flow's bytes need: on a plain-HTTP flow its next request judged first; its
    /// stream written while the client's bytes may pass and the socket takes them, and read while the client has
    /// room and the socket has bytes (see `socket_action`); the client's FIN passed on once all its bytes have.
    fn forward(&mut self, now: Instant, id: FlowId) {
        if !self.judge_next_request(now, id) {
            return;
        }
        self.pass_client_fin(id);
        let Some(flow) = self.tcp.get(&id) else {
            return;
        };
        let TcpState::Forwarding { gate, upstream, .. } = &flow.state else {
            return;
        };
        let socket = self.stack.sockets.get::<Socket>(flow.handle);
        let allowed = flow.http.as_ref().is_none_or(|http| http.allowance() > 0);
        let write = *gate == ClientGate::Open && allowed && upstream.writable && socket.can_recv();
        let read = upstream.readable && !upstream.eof && socket.can_send();
        if write {
            self.ask_transfer(id, Direction::ToServer);
        }
        if read {
            self.ask_transfer(id, Direction::ToClient);
        }
    }

    /// Once every byte the client sent before its FIN has passed upstream, asks for the upstream socket to be
    /// shut down for writing, once.
    fn pass_client_fin(&mut self, id: FlowId) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        let TcpState::Forwarding { gate: ClientGate::Open, upstream, .. } = &mut flow.state else {
            return;
        };
        let socket = self.stack.sockets.get::<Socket>(flow.handle);
        if !upstream.fin_forwarded && client_finished_sending(socket.state()) && socket.recv_queue() == 0 {
            self.socket_actions.push_back(SocketAction::TcpShutdownWrite { flow: id });
            upstream.fin_forwarded = true;
        }
    }

    /// On a plain-HTTP flow whose judged bytes have all passed: looks at what follows (the next request head,
    /// or a chunk line or trailers of the current body). A head naming a blocked host, or bytes whose framing
    /// cannot be followed, reset the client and end the flow before any of them passes (false).
    fn judge_next_request(&mut self, now: Instant, id: FlowId) -> bool {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return false;
        };
        let Some(http) = flow.http.as_mut().filter(|http| http.allowance() == 0) else {
            return true;
        };
        if !matches!(flow.state, TcpState::Forwarding { gate: ClientGate::Open, .. }) {
            return true;
        }
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        let queued = socket.recv_queue();
        if queued == 0 {
            return true;
        }
        let finished = client_finished(socket);
        let limit = http.lookahead().unwrap_or(SNIFF_MAX).min(socket.recv_capacity()).min(queued);
        // A short look first: heads and chunk lines are mostly short, and pipelined requests must not cost a
        // copy of the whole window each.
        let mut look = limit.min(FIRST_LOOK);
        let step = loop {
            self.scratch.resize(look, 0);
            let seen = socket.peek_slice(&mut self.scratch).unwrap_or(0);
            let bytes = self.scratch.get(..seen).unwrap_or_default();
            match http.step(bytes, finished && seen == queued) {
                Step::NeedMore if seen < limit => look = limit,
                // As much as a head (or chunk line) may take is here, and it is still unfinished.
                Step::NeedMore if seen < queued || seen >= socket.recv_capacity() => break Step::Unreadable,
                step => break step,
            }
        };
        let verdict = match step {
            Step::Pass | Step::NeedMore => return true,
            Step::Tunnel => {
                flow.http = None;
                return true;
            }
            Step::Unreadable => Verdict::block(BlockReason::Uninspectable),
            Step::Head(None) => return true,
            Step::Head(Some(name)) => {
                let sniffed = Some(StreamSniff::HttpHost(name));
                let Some(flow) = self.tcp.get(&id) else {
                    return false;
                };
                let verdict = self.first_bytes_verdict(&sniffed, flow);
                if !verdict.is_block() {
                    return true;
                }
                if let (Some(flow), Some(StreamSniff::HttpHost(name))) = (self.tcp.get_mut(&id), sniffed) {
                    flow.host = Some(name);
                }
                verdict
            }
        };
        let Some(flow) = self.tcp.get_mut(&id) else {
            return false;
        };
        // The upstream has seen the requests before this one, and nothing of it; it is reset when the flow retires.
        flow.refuse();
        self.stack.tcp(flow.handle).abort();
        self.touched.push(id);
        let (client, server, host) = (flow.client, flow.server, flow.host.clone());
        self.report(now, Protocol::Tcp, client, server, host.as_deref(), &verdict);
        false
    }

    /// Writes the client's bytes to the upstream stream with `write`, once its first bytes have been judged; on
    /// a plain-HTTP flow only as far as the requests judged so far reach. An error is the stream's: the caller
    /// ends the flow.
    fn pass_to_server(&mut self, id: FlowId, write: &mut impl FnMut(&[u8]) -> Transfer) -> io::Result<()> {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return Ok(());
        };
        let TcpState::Forwarding { gate: ClientGate::Open, upstream, .. } = &mut flow.state else {
            return Ok(());
        };
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        while upstream.writable && socket.can_recv() {
            let allowance =
                flow.http.as_ref().map_or(usize::MAX, |h| usize::try_from(h.allowance()).unwrap_or(usize::MAX));
            if allowance == 0 {
                break;
            }
            match socket.recv(|data| {
                let data = data.get(..data.len().min(allowance)).unwrap_or(data);
                let transfer = write(data);
                (transfer.moved(), transfer)
            }) {
                Ok(Transfer::Moved(n)) if n > 0 => {
                    if let Some(http) = flow.http.as_mut() {
                        http.passed(n);
                    }
                }
                // The stream takes no more: wait for the socket's next readiness, as for a full one.
                Ok(Transfer::Moved(_) | Transfer::Blocked) => upstream.writable = false,
                Ok(Transfer::Failed(e)) => return Err(e),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Reads the server's bytes from the upstream stream with `read` into the smoltcp socket, as far as it has
    /// room; the end of the stream closes the client's side. An error is the stream's (the server reset the
    /// connection): the caller resets the client's side too.
    fn pass_to_client(&mut self, id: FlowId, mut read: impl FnMut(&mut [u8]) -> Transfer) -> io::Result<()> {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return Ok(());
        };
        let TcpState::Forwarding { upstream, .. } = &mut flow.state else {
            return Ok(());
        };
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        while upstream.readable && !upstream.eof && socket.can_send() {
            match socket.send(|buf| {
                let transfer = read(buf);
                (transfer.moved(), transfer)
            }) {
                Ok(Transfer::Moved(0)) => {
                    upstream.eof = true;
                    socket.close();
                }
                Ok(Transfer::Moved(_)) => {}
                Ok(Transfer::Blocked) => upstream.readable = false,
                Ok(Transfer::Failed(e)) => return Err(e),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Ends a flow whose upstream connection was reset. A reset that cuts nothing off is how many connections end:
    /// a server that has closed answers the client's last bytes (its TLS close_notify) with one. So a forwarding
    /// flow moves to `Resetting`, where [`Engine::linger_after_reset`] judges it at each service, from the next
    /// stack poll on; a flow in any other state is reset and the `upstream_reset` reported at once.
    fn end_reset_flow(&mut self, now: Instant, id: FlowId, error: io::Error) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        let TcpState::Forwarding { upstream, .. } = flow.state else {
            return self.fail_tcp_flow(now, id, ErrorReason::UpstreamReset, error);
        };
        flow.set_state(TcpState::Resetting { deadline: None, upstream, error: error.to_string() });
        self.set_deadline(id, now + RESET_LINGER);
        self.touched.push(id);
    }

    /// A flow whose server reset it (`Resetting`):
    /// - bytes the client sent are waiting to go up (they are lost), or came since: its side is reset and the
    ///   `upstream_reset` reported;
    /// - the client has finished sending and all it sent went up: its side is reset, nothing is reported;
    /// - otherwise the phone gets what was read before the reset, until it closes, sends, or stays quiet for
    ///   [`RESET_LINGER`] (then reset and reported, in [`Engine::on_tcp_deadline`]).
    fn linger_after_reset(&mut self, now: Instant, id: FlowId) {
        let Some(flow) = self.tcp.get(&id) else {
            return;
        };
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        if socket.recv_queue() > 0 {
            self.fail_reset_flow(now, id);
        } else if client_finished(socket) {
            log::debug!("tcp {}: the client finished with the server's reset", FlowName(flow.client, flow.server));
            socket.abort();
        }
    }

    /// Resets the phone's side of a `Resetting` flow and reports the server's reset.
    fn fail_reset_flow(&mut self, now: Instant, id: FlowId) {
        let Some(TcpState::Resetting { error, .. }) = self.tcp.get_mut(&id).map(|flow| &mut flow.state) else {
            return;
        };
        let error = std::mem::take(error);
        self.fail_tcp_flow(now, id, ErrorReason::UpstreamReset, error);
    }

    /// Ends a flow whose upstream failed: resets the phone's side (the upstream socket is closed when the flow
    /// retires) and reports the failure.
    pub(super) fn fail_tcp_flow(
        &mut self,
        now: Instant,
        id: FlowId,
        reason: ErrorReason,
        error: impl std::fmt::Display,
    ) {
        let Some(flow) = self.tcp.get(&id) else {
            return;
        };
        let (key, host) = ((flow.client, flow.server), flow.host.clone());
        self.stack.tcp(flow.handle).abort();
        self.touched.push(id);
        self.report_failure(now, Protocol::Tcp, key, host.as_deref(), reason, error);
    }

    /// At the flow cap: closes the least recently active flow (of `client` only, if given) if it has been quiet
    /// for `min_idle` (RST to the phone, upstream closed, a `flow_evicted` event). Quiet flows must be established
    /// ones; a client over its share (`min_idle` zero) loses its least recently active flow in any phase. False
    /// if none qualifies.
    pub(super) fn evict_tcp_flow(&mut self, now: Instant, client: Option<Client>, min_idle: Duration) -> bool {
        let any_phase = min_idle.is_zero();
        let oldest = self
            .tcp
            .iter()
            .filter(|(_, f)| {
                !f.retired
                    && client.is_none_or(|c| f.budget == c)
                    && (any_phase || matches!(f.state, TcpState::Forwarding { .. } | TcpState::Dns { .. }))
            })
            .min_by_key(|(_, f)| f.last_active)
            .map(|(&id, f)| (id, f.last_active));
        let Some((id, last_active)) = oldest.filter(|&(_, at)| at + min_idle <= now) else {
            return false;
        };
        let idle = now.saturating_duration_since(last_active).as_secs();
        let why = match client {
            Some(c) if any_phase => format!("flow table full; {c} holds more than its share; idle for {idle} s"),
            _ => format!("flow table full; idle for {idle} s"),
        };
        self.fail_tcp_flow(now, id, ErrorReason::FlowEvicted, why);
        self.retire_if_closed(id);
        true
    }

    /// Removes a flow whose smoltcp socket has closed (after smoltcp had the chance to send its last RST/ACK)
    /// and closes its upstream socket: gracefully if both sides finished, with a RST otherwise.
    fn retire_if_closed(&mut self, id: FlowId) {
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
        if let Some(upstream) = flow.state.upstream() {
            self.socket_actions.push_back(SocketAction::TcpClose { flow: id, reset: !upstream.finished() });
        }
        flow.retired = true;
        self.retiring.push(id);
    }

    /// Frees the sockets of flows retired before the last stack poll.
    pub(super) fn free_retired(&mut self) {
        for id in std::mem::take(&mut self.retiring) {
            if let Some(flow) = self.tcp.remove(&id) {
                self.budgets.remove_tcp(flow.budget, flow.buffers);
                self.tcp_keys.remove(&(flow.client, flow.server));
                self.stack.remove(flow.handle);
            }
        }
    }
}

/// Whether `bytes` start with a complete HTTP/1.x request head whose host and framing can be read: such a flow's
/// later requests are followed and judged too.
fn is_http_request(bytes: &[u8]) -> bool {
    matches!(scan_request_head(bytes), HeadScan::Head(_))
}

/// Whether the client has finished sending (FIN, or the connection is gone). Not before the handshake is
/// complete: a socket in SYN-RECEIVED cannot receive yet, but the client has not closed anything.
fn client_finished(socket: &Socket) -> bool {
    let state = socket.state();
    state == State::Closed || client_finished_sending(state)
}

/// Whether dialling `ip` would reach the device itself or no single host: loopback, unspecified, link-local,
/// multicast, broadcast, also when written as `::ffff:a.b.c.d`. Such destinations are refused at the SYN (a LAN
/// host routed through the engine must not reach the gateway's local services).
pub(super) fn is_local_destination(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_unspecified() || v4.is_link_local() || v4.is_multicast() || v4.is_broadcast()
                // 0.0.0.0/8 is "this network": connecting to it reaches the local host on Linux.
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || v6.is_unicast_link_local(),
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
