//! The engine: packets from the tun in, verdicts, forwarded bytes and events out.
//!
//! [`Engine`] is sans-IO: it owns the smoltcp interface that terminates the phone's TCP connections, the UDP NAT
//! table and the DNS forwarder, but it never reads a clock or opens a socket. The platform driver feeds it tun
//! packets and socket readiness with the current time, performs the socket operations the engine queued with
//! [`Engine::perform_socket_actions`] (which also moves the bytes of connected TCP streams), writes what
//! [`Engine::take_tun_packets`] hands it to the tun, delivers [`Engine::poll_event`]s, writes the packet capture
//! from [`Engine::take_capture_records`] when one is on, and sleeps until [`Engine::poll_timeout`].
//!
//! A flow's life: the first packet (a TCP SYN, a UDP datagram, a DNS query) is judged by destination address and
//! the names DNS answers mapped to it. TCP flows whose destination is not already decided are accepted locally and
//! the engine reads the first bytes (TLS ClientHello SNI, HTTP Host) before it dials, so a blocked server never
//! sees a packet. Allowed flows are spliced to an upstream socket with backpressure in both directions.
//!
//! Following one packet from the phone, module by module:
//! - [`Engine::handle_tun_packet`] (here): counts it, hands it to `capture`, answers a datagram too big for the
//!   upstream path (`fragment`, `reply`), then `packet::parse` (etherparse) and a dispatch by transport, a
//!   segment handed on as one `packet::TcpInbound`, a datagram as one `packet::UdpInbound` (both borrow the
//!   packet); fragments are reassembled first (`fragment`).
//! - TCP → `tcp`: a SYN makes a flow (after `budget` finds room) whose state machine is `tcp::state`
//!   (`Sniffing → Connecting → Forwarding`, `Dialing`, `Dns`, `Peeking`, `Refused`); segments go into the smoltcp
//!   interface (`stack`); the client's first bytes are judged by `inspect` (TLS, HTTP; later HTTP requests by
//!   `inspect::http_stream`), blocked plain HTTP may be read for the payload peek (`tcp::peek`), DNS over TCP is
//!   handed to `dns` (`tcp::dns_stream`).
//! - UDP to port 53 → `dns`: the query is judged by name, answered locally when blocked, else forwarded
//!   (`private_dns` for the user's Private DNS server; `learn` resolves blocked rules' own names for their
//!   addresses); each upstream try of a query is a state machine in `dns::try_state` (`Udp`, or
//!   `TcpConnecting → TcpExchanging`) that ends with the answer or a typed `TryFailure`; answers fill the
//!   `DnsCache` that address verdicts read.
//! - Other UDP → `quic_hold` (a QUIC Initial is held until its ClientHello names the server; its state machine
//!   is `quic_hold::state`: `Holding`, then opened or `Refused`) or `udp` (by address). ICMP echo is refused
//!   (`reply`).
//! - Whatever a flow needs of a socket (connect, open, send a datagram, shut down, close) is queued as a
//!   `SocketAction` (`socket_action`) for the driver to perform ([`Engine::perform_socket_actions`]), which
//!   tells the engine how connects, opens and sends went. A connected TCP stream's bytes move when the driver
//!   lends the stream: for a flow the engine asked about (`socket_action::Direction`), or whose socket became ready
//!   ([`Engine::upstream_readable`], [`Engine::upstream_writable`]).
//! - Deadlines of every kind are in one heap (`timers`); block events are folded (`repeats`) and queued complete.
//! - The network under the engine (`network`): its resolvers, address families and MTU, as the driver reports.
//!
//! Verdict and event types are in [`crate::verdict`] and [`crate::event`].

mod budget;
mod capture;
mod dns;
mod fragment;
mod learn;
mod network;
mod packet;
mod private_dns;
mod quic_hold;
mod repeats;
mod reply;
mod socket_action;
mod stack;
mod state_machine;
mod tcp;
mod timers;
mod udp;

use crate::dns_cache::DnsCache;
use crate::event::{Event, Outcome, Protocol};
use crate::inspect::dns::BlockAnswer;
use crate::policy::{Decision, Policy};
use crate::verdict::{AllowReason, BlockReason, ErrorReason, RuleRef, Verdict};
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use capture::CaptureRecord;
use capture::CaptureState;
use dns::DnsForwarder;
use learn::LearnLimiter;
use packet::{TcpInbound, Transport, UdpInbound};
use quic_hold::QuicFlows;
use repeats::{Offer, Repeats};
use stack::Stack;
use tcp::TcpFlow;
use timers::{Timer, Timers};
use udp::UdpFlow;

pub use network::NetworkInfo;
pub use socket_action::{SocketAction, SocketDriver};

/// Identifies one flow and the upstream socket the engine asked the driver for on its behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u64);

/// The platform's answer to "which app owns this phone-side flow?", lent by the driver with each tun packet
/// ([`Engine::handle_tun_packet`]). It is the one question the engine asks in the middle of a call: a new flow's
/// verdict (an app the user blocked) and its budget depend on the answer, so it cannot wait for a later call as a
/// [`SocketAction`] does without holding every new flow back.
pub trait OwnerLookup {
    /// The app (UID) owning the phone-side flow from `src` to `dst`, if the platform can tell. Asked at most once
    /// per new flow or DNS query: while some app is blocked (see [`Engine::set_blocked_uids`]), and with
    /// [`EngineConfig::budget_by_app`] while the table concerned is at least half full (see `engine::budget`).
    /// `None` where the platform cannot tell (there is no default: each platform says what it knows).
    fn owner_uid(&mut self, protocol: Protocol, src: SocketAddr, dst: SocketAddr) -> Option<u32>;
}

/// How one read or write on an upstream stream went, as the driver tells it (it knows its platform's errors; the
/// engine only needs these three cases). See [`Engine::upstream_readable`] and [`Engine::upstream_writable`].
#[derive(Debug)]
pub enum Transfer {
    /// This many bytes moved. A read of 0 is the end of the stream; a write of 0 means the connection takes no
    /// more bytes.
    Moved(usize),
    /// Nothing moves until the socket's next readiness event (the platform's `EWOULDBLOCK`).
    Blocked,
    /// The connection failed (reset, timed out, …): the platform's error.
    Failed(io::Error),
}

impl Transfer {
    /// The bytes moved: what a smoltcp buffer closure reports as consumed or filled.
    fn moved(&self) -> usize {
        match self {
            Transfer::Moved(n) => *n,
            Transfer::Blocked | Transfer::Failed(_) => 0,
        }
    }
}

/// Engine settings. [`EngineConfig::default`] is what the app and the CLI use unless told otherwise.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The network's own DNS resolvers, tried in order (Android: the network's `LinkProperties` DNS servers;
    /// Linux: `--dns-upstream`). Replaced at run time with [`Engine::set_dns_upstreams`].
    pub dns_upstreams: Vec<SocketAddr>,
    /// Resolvers tried after [`EngineConfig::dns_upstreams`] (when those are down, or none are known). The
    /// default is Cloudflare's unfiltered public resolver (README "Network changes and DNS" says why).
    pub dns_fallbacks: Vec<SocketAddr>,
    /// Key of the ChaCha20 generator that draws DNS query ids. It must be secret and unpredictable:
    /// `hushwall_driver::run` replaces the default (all zeros) with OS randomness.
    pub dns_seed: [u8; 32],
    /// The user's Private DNS server (Android "Private DNS provider hostname"): DNS-over-TLS and DNS over QUIC
    /// or HTTP/3 to this host are let through (reason `private_dns`) while other DoT stays refused. Replaced at
    /// run time with [`Engine::set_private_dns_server`].
    pub private_dns_server: Option<String>,
    /// How blocked names are answered.
    pub block_answer: BlockAnswer,
    /// Also report allowed flows and queries as events.
    pub log_allowed: bool,
    /// Also resolve blocked names upstream (never answering the phone with the result) so that connections to
    /// their addresses are refused too (`dns_mapped_ip`). The telemetry host itself still receives nothing: the
    /// engine asks for the blocking rule's own name, rate-limited, never the client's query (see `learn`).
    pub learn_blocked_addresses: bool,
    /// Refuse DNS-over-TLS (TCP 853), which would bypass DNS filtering.
    pub block_dns_over_tls: bool,
    /// Largest IP packet to or from the tun.
    pub mtu: usize,
    /// At most this many concurrent TCP flows; more are refused with RST.
    pub max_tcp_flows: usize,
    /// At most this many concurrent UDP flows; more are refused with ICMP.
    pub max_udp_flows: usize,
    /// The share of each flow cap, in percent, guaranteed to every client (source address, or app with
    /// [`EngineConfig::budget_by_app`]): at a full table a client holding less takes room from the client most
    /// over its share, and one over its share is refused (`client_limit`) unless its own quiet flows make room.
    /// A client's forwarded DNS queries waiting for answers are bounded to its share of them too (at most half).
    /// See `engine::budget`. 100 (the default) shares nothing: for one device, whose IPv4 and IPv6 addresses
    /// would otherwise count as two clients; a gateway serving many LAN hosts sets 25, and so does the app with
    /// budgets by app.
    pub client_share_percent: u8,
    /// Count budgets by app (UID) where the platform tells a flow's owner ([`OwnerLookup::owner_uid`]), rather than
    /// by source address: on a phone all apps share one address. Owners are asked only while the table
    /// concerned is at least half full; earlier flows, and flows whose owner is unknown, count under their
    /// source address (see `engine::budget`). Off by default; the app turns it on.
    pub budget_by_app: bool,
    /// Bytes of TCP socket buffers (send + receive) one client's flows may hold at full size; past it the
    /// client's new flows get small buffers. See `engine::budget`. Unlimited by default: small buffers are
    /// zeroed by the allocator and so resident at once, where full-size ones become resident only as data passes
    /// (one client's 4,096 flows: 131 MiB against 44 MiB); the gateway sets 64 MiB per LAN host.
    pub client_tcp_buffer_budget: usize,
    /// smoltcp send buffer size per TCP flow (server → phone), in bytes, and the most the receive buffer may
    /// be. It bounds how much one flow moves per wake-up: 256 KiB measured 1.5–2× the throughput of 128 KiB at a
    /// 9000-byte tun MTU (BENCHMARKS.md). Pages become resident only as data passes through them.
    pub tcp_buffer_size: usize,
    /// The receive buffer (phone → server), and so the window smoltcp advertises, holds at most this many
    /// full-sized segments (MTU − 40 bytes each), capped by [`EngineConfig::tcp_buffer_size`]. Segments from the
    /// phone wait in the tun device's queue (500 packets, `txqueuelen`, which an app cannot change) until the
    /// engine reads them; if the windows of the busy flows add up to more than that queue, the kernel drops
    /// packets there and the phone's TCP backs off hard. 48 lets about ten flows upload at full speed at once.
    pub tcp_receive_window_segments: usize,
    /// How long to wait for a client's first bytes (SNI, Host) before dialling by address, on ports other than
    /// the web ports (where a silent client is never dialled). The client's bytes are still judged before any
    /// is forwarded.
    pub sniff_timeout: Duration,
    /// How long an upstream TCP connect may take.
    pub connect_timeout: Duration,
    /// A UDP flow with no traffic for this long is closed.
    pub udp_idle_timeout: Duration,
    /// A forwarded DNS query with no answer for this long is answered with SERVFAIL.
    pub dns_timeout: Duration,
    /// Seed for smoltcp's initial sequence numbers.
    pub random_seed: u64,
    /// Payload peek: read blocked plain-HTTP requests to their end locally, answer `403 Forbidden`, and attach a
    /// redacted summary to the block event ([`crate::inspect::peek`]). Off by default: a user switch.
    pub peek: bool,
    /// Queue every packet read from and written to the tun, with the verdicts as comments, for
    /// [`Engine::take_capture_records`] (the driver sets this when it is given a capture file).
    pub capture: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            dns_upstreams: Vec::new(),
            dns_fallbacks: vec![
                SocketAddr::from(([1, 1, 1, 1], 53)),
                SocketAddr::from(([0x2606, 0x4700, 0x4700, 0, 0, 0, 0, 0x1111], 53)),
            ],
            dns_seed: [0; 32],
            private_dns_server: None,
            block_answer: BlockAnswer::NxDomain,
            log_allowed: false,
            learn_blocked_addresses: true,
            block_dns_over_tls: true,
            mtu: 1500,
            max_tcp_flows: 4096,
            max_udp_flows: 4096,
            client_share_percent: 100,
            budget_by_app: false,
            client_tcp_buffer_budget: usize::MAX,
            tcp_buffer_size: 256 * 1024,
            tcp_receive_window_segments: 48,
            sniff_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(15),
            udp_idle_timeout: Duration::from_secs(60),
            dns_timeout: Duration::from_secs(4),
            random_seed: 0x6877_6877,
            peek: false,
            capture: false,
        }
    }
}

/// Counters since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Packets read from the tun.
    pub packets_in: u64,
    /// Bytes read from the tun.
    pub bytes_in: u64,
    /// Packets written to the tun.
    pub packets_out: u64,
    /// Bytes written to the tun.
    pub bytes_out: u64,
    /// Packets that did not parse and were dropped.
    pub malformed: u64,
    /// Packets dropped for other reasons (unsupported protocol, tun write failures, full queues).
    pub dropped: u64,
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
    /// Upstream failures (connect failures, resets, UDP errors, DNS queries answered SERVFAIL); each is also an
    /// event with action `error`.
    pub upstream_errors: u64,
    /// Events discarded because the event queue was full.
    pub events_dropped: u64,
    /// Idle flows closed to make room at the flow caps; each is also an event (`flow_evicted`).
    pub flows_evicted: u64,
    /// Fragmented IP datagrams from the phone reassembled and handled.
    pub datagrams_reassembled: u64,
    /// IP fragments from the phone discarded: overlapping, malformed, too many, timed out, or evicted from the
    /// full reassembly table (see `engine::fragment`).
    pub fragments_dropped: u64,
    /// Fragments written to the tun for datagrams larger than the MTU.
    pub fragments_sent: u64,
}

/// Key of a TCP or UDP flow as the phone sees it: (client address, original destination).
type FlowKey = (SocketAddr, SocketAddr);

/// Events kept for the driver before the oldest are dropped.
const EVENT_QUEUE_MAX: usize = 4096;

/// The firewall engine. See the module docs.
pub struct Engine {
    config: EngineConfig,
    policy: Arc<Policy>,
    stack: Stack,
    dns_cache: DnsCache,
    dns: DnsForwarder,
    /// When each blocked rule's name was last learnt (see `learn`).
    learning: LearnLimiter,
    tcp: HashMap<FlowId, TcpFlow>,
    tcp_keys: HashMap<FlowKey, FlowId>,
    udp: HashMap<FlowId, UdpFlow>,
    udp_keys: HashMap<FlowKey, FlowId>,
    /// What each client holds of the flow tables and TCP buffers (see `budget`).
    budgets: budget::ClientBudgets,
    /// QUIC flows not opened: new ones held until their ClientHello names the server, and refused ones whose
    /// later datagrams are refused too (see `quic_hold`).
    quic: QuicFlows,
    /// The pcapng capture, if configured.
    capture: Option<CaptureState>,
    /// Fragmented datagrams from the phone being reassembled.
    fragments: fragment::Reassembler,
    /// A [`Timer::Reassembly`] is armed.
    reassembly_timer_armed: bool,
    /// Identification of the next datagram fragmented towards the phone.
    next_fragment_id: u32,
    /// TCP flows whose sockets may have changed since they were last serviced.
    touched: Vec<FlowId>,
    /// Upstream streams with bytes ready to move, for [`Engine::perform_socket_actions`] to move.
    transfers: Vec<(FlowId, socket_action::Direction)>,
    /// Closed TCP flows whose sockets are freed after the next stack poll (which sends their last segment).
    retiring: Vec<FlowId>,
    /// Apps (UIDs) whose traffic the user blocked entirely.
    blocked_uids: HashSet<u32>,
    /// The network under the engine, as the platform last reported it.
    network: network::NetworkState,
    /// Reusable buffer for sniffing a client's first bytes.
    scratch: Vec<u8>,
    timers: Timers,
    events: VecDeque<Event>,
    /// Socket operations for the driver, oldest first (see `socket_action`).
    socket_actions: VecDeque<SocketAction>,
    /// The first packet of each UDP flow whose socket the driver has yet to report opened: quoted in the ICMP
    /// refusal if it cannot be.
    udp_opening: HashMap<FlowId, udp::PendingOpen>,
    /// Identical block events being folded into one (see `repeats`).
    repeats: Repeats,
    stats: Stats,
    next_flow: u64,
    epoch: Instant,
    epoch_wall_ms: u64,
}

impl Engine {
    /// A new engine. `wall_clock_ms` is the Unix time in milliseconds at `now`; event times derive from it.
    pub fn new(config: EngineConfig, policy: Arc<Policy>, now: Instant, wall_clock_ms: u64) -> Self {
        let private_dns = config.private_dns_server.clone();
        let mut engine = Engine {
            stack: Stack::new(config.mtu, config.random_seed, now),
            dns: DnsForwarder::new(&config.dns_upstreams, &config.dns_fallbacks, config.dns_seed),
            dns_cache: DnsCache::new(16 * 1024),
            learning: LearnLimiter::default(),
            capture: config.capture.then(CaptureState::default),
            fragments: fragment::Reassembler::default(),
            reassembly_timer_armed: false,
            next_fragment_id: 0,
            config,
            policy,
            tcp: HashMap::new(),
            tcp_keys: HashMap::new(),
            udp: HashMap::new(),
            udp_keys: HashMap::new(),
            budgets: budget::ClientBudgets::default(),
            quic: QuicFlows::default(),
            touched: Vec::new(),
            transfers: Vec::new(),
            retiring: Vec::new(),
            scratch: Vec::new(),
            blocked_uids: HashSet::new(),
            network: network::NetworkState::default(),
            timers: Timers::default(),
            events: VecDeque::new(),
            socket_actions: VecDeque::new(),
            udp_opening: HashMap::new(),
            repeats: Repeats::default(),
            stats: Stats::default(),
            next_flow: 1,
            epoch: now,
            epoch_wall_ms: wall_clock_ms,
        };
        engine.set_private_dns_server(private_dns);
        engine
    }

    /// Replaces the policy; flows already forwarding keep going, new ones are judged by the new policy.
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
    }

    /// Blocks all new flows and DNS queries of these apps (UIDs), replacing the previous set; flows already open
    /// keep going. While the set is empty no UID is ever looked up.
    pub fn set_blocked_uids(&mut self, uids: HashSet<u32>) {
        self.blocked_uids = uids;
    }

    /// The app owning a new flow, if the user blocked it (asked through `owner`, which keeps the answer for the
    /// flow's budget).
    fn blocked_app(
        &self,
        owner: &mut budget::Owner,
        protocol: Protocol,
        client: SocketAddr,
        server: SocketAddr,
        owners: &mut impl OwnerLookup,
    ) -> Option<u32> {
        if self.blocked_uids.is_empty() {
            return None;
        }
        let uid = owner.uid(protocol, (client, server), owners)?;
        self.blocked_uids.contains(&uid).then_some(uid)
    }

    /// Reports a flow refused because its app is blocked, attributed to that app.
    fn report_app_blocked(
        &mut self,
        now: Instant,
        protocol: Protocol,
        client: SocketAddr,
        server: SocketAddr,
        uid: u32,
    ) {
        self.capture_verdict(client, server, None, &Verdict::block(BlockReason::AppBlocked));
        self.stats.blocked += 1;
        let outcome = Outcome::Block { reason: BlockReason::AppBlocked, rule: None };
        let event = self.event(now, protocol, (client, server), None, outcome);
        self.push_folded_event(now, Event { uid: Some(uid), ..event });
    }

    /// The policy in force.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        stats.tcp_active = self.tcp.len() as u64;
        stats.udp_active = self.udp.len() as u64;
        stats
    }

    /// Handles one packet read from the tun; `owners` answers who owns a new flow, when the engine must know
    /// ([`OwnerLookup`]). Call [`Engine::handle_timeout`] (which ends with [`Engine::poll`]) after a batch of these,
    /// then [`Engine::perform_socket_actions`].
    pub fn handle_tun_packet(&mut self, now: Instant, packet: &[u8], owners: &mut impl OwnerLookup) {
        self.stats.packets_in += 1;
        self.stats.bytes_in += packet.len() as u64;
        self.capture_inbound(now, packet);
        let upstream_mtu = fragment::upstream_mtu(self.network().mtu);
        if let Some((client, server)) = fragment::too_big_for_upstream(packet, upstream_mtu) {
            self.capture_inbound_key(|| capture::key_of(packet));
            self.stats.dropped += 1;
            let mut buf = self.stack.device.take_out_buffer();
            if reply::icmp_too_big(&mut buf, server, client, packet, upstream_mtu) {
                self.stack.device.out.push_back(buf);
            } else {
                self.stack.device.recycle(buf);
            }
            return;
        }
        self.dispatch_tun_packet(now, packet, owners);
    }

    /// Handles one whole IP packet from the phone (read from the tun, or reassembled from fragments).
    fn dispatch_tun_packet(&mut self, now: Instant, packet: &[u8], owners: &mut impl OwnerLookup) {
        let parsed = packet::parse(packet);
        self.capture_inbound_key(|| parsed.ok().map(|p| capture::flow_key(&p)));
        let parsed = match parsed {
            Ok(p) => p,
            Err(packet::Malformed) => {
                self.stats.malformed += 1;
                return;
            }
        };
        match parsed.transport {
            Transport::Tcp(seg) => {
                let client = SocketAddr::new(parsed.src, seg.src_port);
                let server = SocketAddr::new(parsed.dst, seg.dst_port);
                self.on_tcp_segment(now, &TcpInbound { packet, client, server, seg }, owners);
            }
            Transport::Udp { src_port, dst_port, payload } => {
                let client = SocketAddr::new(parsed.src, src_port);
                let server = SocketAddr::new(parsed.dst, dst_port);
                let datagram = UdpInbound { packet, client, server, payload };
                if dst_port == 53 {
                    self.on_dns_datagram(now, &datagram, owners);
                } else {
                    self.on_udp_datagram_from_client(now, &datagram, owners);
                }
            }
            Transport::EchoRequest => {
                self.refuse_with_icmp(packet, parsed.src, parsed.dst, reply::Unreachable::Prohibited);
                let (src, dst) = (SocketAddr::new(parsed.src, 0), SocketAddr::new(parsed.dst, 0));
                self.report(now, Protocol::Icmp, src, dst, None, &Verdict::block(BlockReason::IcmpUnsupported));
            }
            Transport::Fragment => self.on_fragment(now, packet, owners),
            Transport::Other => self.stats.dropped += 1,
        }
    }

    /// Runs the TCP/IP stack over queued packets and timers and services every flow that changed: its bytes are
    /// judged, and the transfers they need queued for [`Engine::perform_socket_actions`].
    /// [`Engine::handle_timeout`] ends with this, so a driver that calls that after each batch (as
    /// `hushwall_driver` does) never needs it; it is public for harnesses that step the engine without running
    /// its timers (the fuzz targets).
    pub fn poll(&mut self, now: Instant) {
        self.stack.poll(now);
        while !self.touched.is_empty() {
            let mut touched = std::mem::take(&mut self.touched);
            touched.sort_unstable();
            touched.dedup();
            for &id in &touched {
                self.service_tcp(now, id);
            }
            // Servicing may have queued data or closed sockets: let smoltcp emit it, then free what closed.
            self.stack.poll(now);
            self.free_retired();
            touched.clear();
            if self.touched.is_empty() {
                // Keep the allocation for the next round.
                self.touched = touched;
            }
        }
    }

    /// Handles expired timers (sniff and connect deadlines, idle UDP flows, unanswered DNS queries).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.capture_clock(now);
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Tcp(id) => self.on_tcp_deadline(now, id),
                Timer::Udp(id) => self.on_udp_idle_check(now, id),
                Timer::Dns(flow) => self.on_dns_deadline(now, flow),
                Timer::QuicHold(key, id) => self.on_quic_hold_deadline(now, key, id),
                Timer::Reassembly => self.on_reassembly_deadline(now),
                Timer::Repeats => self.flush_repeats(now),
            }
        }
        self.poll(now);
    }

    /// When [`Engine::handle_timeout`] must next run; `None` when nothing is pending (an idle engine sleeps).
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        match (self.stack.poll_at(now), self.timers.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves every packet waiting for the tun into `out`, in order, counting them as written. For a driver that
    /// writes from another thread; it hands the buffers back through [`Engine::recycle_tun_buffers`] and reports
    /// failed writes with [`Engine::note_tun_write_failures`].
    pub fn take_tun_packets(&mut self, out: &mut Vec<Vec<u8>>) {
        while let Some(buf) = self.stack.device.out.pop_front() {
            self.stats.packets_out += 1;
            self.stats.bytes_out += buf.len() as u64;
            self.capture_outbound(&buf);
            out.push(buf);
        }
        self.seal_capture();
    }

    /// Takes back packet buffers from [`Engine::take_tun_packets`] for reuse.
    pub fn recycle_tun_buffers(&mut self, buffers: impl IntoIterator<Item = Vec<u8>>) {
        for buf in buffers {
            self.stack.device.recycle(buf);
        }
    }

    /// Counts packets from [`Engine::take_tun_packets`] that could not be written as dropped, not written.
    pub fn note_tun_write_failures(&mut self, count: u64) {
        self.stats.packets_out = self.stats.packets_out.saturating_sub(count);
        self.stats.dropped += count;
    }

    /// Counts datagrams of [`SocketAction::UdpSend`]s the driver took but could not send later (it holds a
    /// batch's datagrams to send them together) as dropped.
    pub fn note_udp_send_failures(&mut self, count: u64) {
        self.stats.dropped += count;
    }

    /// The next event for the user interface, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Judges a host name; `block_reason` is the reason used if a block rule matches.
    fn name_verdict(&self, name: &str, block_reason: BlockReason) -> Verdict {
        verdict_of(self.policy.check_name(name), block_reason)
    }

    /// Judges a destination address by CIDR rules and the names DNS answers mapped to it. `::ffff:a.b.c.d` is
    /// judged as `a.b.c.d`. A blocked range yields to an allow rule for a name DNS mapped to the address
    /// (Xiaomi's essential services may share Alibaba's addresses with its telemetry), never to a name that is
    /// merely not blocked.
    fn address_verdict(&self, now: Instant, dst: IpAddr) -> AddressVerdict {
        let dst = dst.to_canonical();
        match self.policy.check_ip(dst) {
            Decision::NoMatch => {}
            Decision::Blocked(rule) => {
                let allowed = self.dns_cache.names_for(dst, now).find_map(|name| match self.policy.check_name(name) {
                    Decision::Allowed(rule) => Some(rule),
                    Decision::Blocked(_) | Decision::NoMatch => None,
                });
                return AddressVerdict::Decided(match allowed {
                    Some(rule) => Verdict::Allow { reason: AllowReason::AllowRule, rule: Some(rule) },
                    None => Verdict::Block { reason: BlockReason::IpCidr, rule: Some(rule) },
                });
            }
            decided => return AddressVerdict::Decided(verdict_of(decided, BlockReason::IpCidr)),
        }
        let mut blocked: Option<(&str, RuleRef)> = None;
        let mut other: Option<&str> = None;
        // A NAT64 address reaches the IPv4 address it embeds: the names learnt for that count too.
        let nat64 = crate::policy::nat64_ipv4(dst).map(IpAddr::V4);
        let names = self
            .dns_cache
            .names_for(dst, now)
            .chain(nat64.into_iter().flat_map(|v4| self.dns_cache.names_for(v4, now)));
        for name in names {
            match self.policy.check_name(name) {
                Decision::Blocked(rule) => {
                    blocked.get_or_insert((name, rule));
                }
                Decision::Allowed(_) | Decision::NoMatch => {
                    other.get_or_insert(name);
                }
            }
        }
        match (blocked, other) {
            (Some((name, rule)), None) => AddressVerdict::MappedBlocked(
                Verdict::Block { reason: BlockReason::DnsMappedIp, rule: Some(rule) },
                name.to_owned(),
            ),
            (Some(_), Some(name)) => AddressVerdict::Shared(name.to_owned()),
            (None, name) => AddressVerdict::Unknown(name.map(str::to_owned)),
        }
    }

    /// Whether DNS answers have mapped any name to `dst` (still valid at `now`).
    fn knows_names(&self, now: Instant, dst: IpAddr) -> bool {
        self.dns_cache.names_for(dst.to_canonical(), now).next().is_some()
    }

    /// Records a verdict as an event (blocks always, allows when configured) and counts blocks.
    fn report(
        &mut self,
        now: Instant,
        protocol: Protocol,
        src: SocketAddr,
        dst: SocketAddr,
        host: Option<&str>,
        verdict: &Verdict,
    ) {
        let Some(event) = self.verdict_event(now, protocol, (src, dst), host, verdict) else {
            return;
        };
        // With the payload peek on, TCP blocks are queued one by one, as the peeked requests' are (each of those
        // carries its own summary, see `tcp::peek`).
        if verdict.is_block() && !(self.config.peek && protocol == Protocol::Tcp) {
            self.push_folded_event(now, event);
        } else {
            self.push_event(event);
        }
    }

    /// Captures and counts a verdict; its event, unless it allows and allowed flows are not reported.
    fn verdict_event(
        &mut self,
        now: Instant,
        protocol: Protocol,
        (src, dst): FlowKey,
        host: Option<&str>,
        verdict: &Verdict,
    ) -> Option<Event> {
        self.capture_verdict(src, dst, host, verdict);
        if verdict.is_block() {
            self.stats.blocked += 1;
        } else if !self.config.log_allowed {
            return None;
        }
        Some(self.event(now, protocol, (src, dst), host, verdict.clone().into()))
    }

    /// Queues a block or error event unless an identical one was reported a moment ago (see `repeats`).
    fn push_folded_event(&mut self, now: Instant, event: Event) {
        match self.repeats.offer(now, event) {
            Offer::Report(event) => self.push_event(*event),
            Offer::Folded(Some(due)) => self.timers.arm(due, Timer::Repeats),
            Offer::Folded(None) => {}
        }
    }

    /// Queues the summaries of fold windows that ended.
    fn flush_repeats(&mut self, now: Instant) {
        for event in self.repeats.due(now, false) {
            self.push_event(event);
        }
    }

    /// Queues the summaries of every identical-event fold still open (see [`crate::event::Event::repeats`]), so
    /// that none is lost: for the driver to call before it stops.
    pub fn flush_folded_events(&mut self, now: Instant) {
        for event in self.repeats.due(now, true) {
            self.push_event(event);
        }
    }

    /// Records an allowed flow or query that failed upstream or was ended by the engine (action `error`) and
    /// counts it: `reason` is one of the error reasons, `error` says what happened.
    fn report_failure(
        &mut self,
        now: Instant,
        protocol: Protocol,
        flow: FlowKey,
        host: Option<&str>,
        reason: ErrorReason,
        error: impl std::fmt::Display,
    ) {
        if reason == ErrorReason::FlowEvicted {
            self.stats.flows_evicted += 1;
        } else {
            self.stats.upstream_errors += 1;
        }
        let event = self.event(now, protocol, flow, host, Outcome::Error { reason, error: error.to_string() });
        self.push_folded_event(now, event);
    }

    /// An event at `now` about the flow from `src` to `dst`, without app or details.
    fn event(
        &self,
        now: Instant,
        protocol: Protocol,
        (src, dst): FlowKey,
        host: Option<&str>,
        outcome: Outcome,
    ) -> Event {
        let elapsed = now.saturating_duration_since(self.epoch).as_millis();
        Event {
            time_ms: self.epoch_wall_ms.saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX)),
            protocol,
            src,
            dst,
            host: host.map(str::to_owned),
            outcome,
            uid: None,
            peek: None,
            repeats: None,
        }
    }

    /// Queues an event for the driver, dropping (and counting) the oldest past [`EVENT_QUEUE_MAX`].
    fn push_event(&mut self, event: Event) {
        if self.events.len() >= EVENT_QUEUE_MAX {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Answers an offending packet with an ICMP destination-unreachable error.
    fn refuse_with_icmp(&mut self, offending: &[u8], client: IpAddr, server: IpAddr, why: reply::Unreachable) {
        let mut buf = self.stack.device.take_out_buffer();
        if reply::icmp_unreachable(&mut buf, server, client, offending, why) {
            self.stack.device.out.push_back(buf);
        } else {
            self.stack.device.recycle(buf);
        }
    }

    /// Sends a UDP datagram to the phone.
    fn send_udp_to_client(&mut self, from: SocketAddr, to: SocketAddr, payload: &[u8]) {
        let mut buf = self.stack.device.take_out_buffer();
        if reply::udp_datagram(&mut buf, from, to, payload) {
            if buf.len() > self.config.mtu {
                self.send_fragmented(buf);
                return;
            }
            self.stack.device.out.push_back(buf);
        } else {
            self.stats.dropped += 1;
            self.stack.device.recycle(buf);
        }
    }

    fn new_flow_id(&mut self) -> FlowId {
        self.next_flow += 1;
        FlowId(self.next_flow)
    }
}

/// What the destination address alone says about a new flow.
enum AddressVerdict {
    /// Decided by a CIDR rule (block or allow).
    Decided(Verdict),
    /// Every name DNS mapped to the address is blocked: refuse, unless the flow itself names an allowed host
    /// (our knowledge of who shares an address is partial, and the SNI or Host is better evidence).
    MappedBlocked(Verdict, String),
    /// Blocked and allowed names share the address: only the first bytes (SNI, Host) can tell.
    Shared(String),
    /// Nothing against it; with a name mapped to the address, if any.
    Unknown(Option<String>),
}

impl AddressVerdict {
    /// True if the address alone refuses traffic (a block rule, or only blocked names map to it).
    fn blocks(&self) -> bool {
        match self {
            AddressVerdict::Decided(verdict) | AddressVerdict::MappedBlocked(verdict, _) => verdict.is_block(),
            AddressVerdict::Shared(_) | AddressVerdict::Unknown(_) => false,
        }
    }
}

/// A verdict from a policy decision.
fn verdict_of(decision: Decision, block_reason: BlockReason) -> Verdict {
    match decision {
        Decision::Blocked(rule) => Verdict::Block { reason: block_reason, rule: Some(rule) },
        Decision::Allowed(rule) => Verdict::Allow { reason: AllowReason::AllowRule, rule: Some(rule) },
        Decision::NoMatch => Verdict::no_match(),
    }
}

#[cfg(test)]
mod tests;
