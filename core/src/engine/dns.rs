//! DNS interception: every query on port 53 (UDP or TCP, whatever address the phone sent it to) is answered here.
//!
//! Blocked names get an immediate answer (NXDOMAIN or 0.0.0.0/::), never a silent drop, which would make apps
//! retry for minutes. Other queries are forwarded to a resolver: the network's own ([`Engine::set_dns_upstreams`],
//! `--dns-upstream`), then the user's fallbacks, in order. Answers are checked for blocked names hidden behind
//! CNAMEs and recorded in the IP→names cache that later judges connections.
//!
//! Each try of a query gets an upstream socket of its own (the same as Android's own resolver does), opened
//! with a [`SocketAction`] under a fresh [`FlowId`] and closed when the try ends:
//! - nothing can go stale: a socket opened after a network change gets the new source address and route, so DNS
//!   recovers with the network instead of failing until a restart;
//! - each query leaves from a new source port the kernel picks at random, and carries a query id drawn from a
//!   ChaCha20 CSPRNG keyed with OS randomness ([`super::EngineConfig::dns_seed`]): an off-path forger must guess
//!   about 32 bits, as against the phone's own resolver;
//! - the socket is connected, so the kernel delivers only datagrams from the resolver's address and port, and an
//!   answer is taken only if its id and question (name case-insensitively, type, class) are those of the query.
//!   Anything else on the socket is dropped without ending the query.
//!
//! A try that times out (half of [`super::EngineConfig::dns_timeout`]) or fails marks its resolver down for a
//! backoff (5 s, doubling to 60 s; an answer clears it), and the query is tried once more on the next resolver
//! that is up within the same budget; then the phone gets SERVFAIL. An answer with TC set is fetched again over
//! TCP from the same resolver; queries the phone sends over TCP go upstream over TCP. A UDP answer that does not
//! fit the phone's EDNS size (or 512 bytes, or the tun MTU) reaches it truncated (TC set), so it retries over TCP.
//!
//! A try's state (over UDP; over TCP connecting, then exchanging) and why a try fails are in `dns::try_state`.

mod try_state;

use super::budget::{crowded, Client, Owner};
use super::packet::UdpInbound;
use super::socket_action::Direction;
use super::timers::Timer;
use super::{Engine, FlowId, FlowKey, OwnerLookup, SocketAction, Transfer};
use crate::event::Protocol;
use crate::inspect::dns::{self, DnsQuery, QuestionKey};
use crate::verdict::{BlockReason, ErrorReason};
use chacha20::rand_core::{Rng, SeedableRng};
use chacha20::ChaCha20Rng;
use std::collections::HashMap;
use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use try_state::{TryFailure, TryName, TryState};

/// At most this many forwarded queries wait for answers (each holds an upstream socket); more are answered
/// SERVFAIL at once.
pub(super) const MAX_PENDING: usize = 1024;
/// At most this many of them from one client (a LAN host behind a gateway, the phone, or an app with budgets by
/// app), so that one client flooding queries to a slow resolver cannot take every slot; fewer with a client share
/// below half (`Engine::pending_dns_share`). Half: on a phone without budgets by app every app shares one
/// address, and a few hundred queries in flight is far more than apps make.
pub(super) const MAX_PENDING_PER_CLIENT: usize = MAX_PENDING / 2;
/// DNS record types whose answers carry addresses.
const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;
/// Tries per query on different resolvers (a TCP retry after a truncated answer is part of the same try).
const MAX_TRIES: u8 = 2;
/// How long a resolver is skipped after its first failure; doubled for each further one, up to
/// [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_secs(5);
/// The longest a failing resolver is skipped before it is tried again.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// IP and UDP header sizes, to keep UDP answers to the phone within the tun MTU.
const IPV4_UDP_HEADERS: usize = 20 + 8;
const IPV6_UDP_HEADERS: usize = 40 + 8;

/// How an answer gets back to the phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DnsClient {
    /// A UDP query: answer from `server` (the address the phone asked) to `client`.
    Udp { client: SocketAddr, server: SocketAddr },
    /// A query on a DNS-over-TCP flow.
    Tcp(FlowId),
    /// The engine's own query for a blocked rule's name (never the client's query; see `learn`), resolved only so
    /// the name's addresses enter the IP→names cache (an app that later connects to them by address is refused
    /// too). Its answer never reaches the phone.
    Learn,
}

/// A query to forward, and what to do with its answer.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) via: DnsClient,
    pub(crate) client: SocketAddr,
    pub(crate) server: SocketAddr,
    /// Whose budget the query counts in (see `budget`).
    pub(crate) budget: Client,
    /// The phone's query as sent (its id included), to build refusals and SERVFAIL from.
    pub(crate) query: Vec<u8>,
    /// The query's first question, normalised: an answer must echo it.
    pub(crate) question: QuestionKey,
    /// When the phone must have an answer (SERVFAIL then).
    pub(crate) deadline: Instant,
}

/// One upstream exchange of a query: the socket it uses and what it expects back.
#[derive(Debug)]
struct Try {
    pending: Pending,
    resolver: SocketAddr,
    /// The id the query went upstream with.
    id: u16,
    /// Tries so far, this one included.
    tries: u8,
    /// When this try is given up.
    until: Instant,
    /// How far the exchange with the resolver got (see `try_state`).
    state: TryState,
}

/// A resolver and its health.
#[derive(Debug, Clone)]
struct Resolver {
    addr: SocketAddr,
    failures: u32,
    down_until: Option<Instant>,
}

impl Resolver {
    fn new(addr: SocketAddr) -> Self {
        Resolver { addr, failures: 0, down_until: None }
    }

    fn is_up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|until| until <= now)
    }
}

/// The upstream side of DNS: resolvers, the queries in flight (by the flow id of their socket), the id generator.
pub(crate) struct DnsForwarder {
    /// The network's own resolvers, in order.
    upstreams: Vec<Resolver>,
    /// The user's fallbacks, tried after the upstreams.
    fallbacks: Vec<Resolver>,
    tries: HashMap<FlowId, Try>,
    rng: ChaCha20Rng,
}

impl std::fmt::Debug for DnsForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The generator's state is a secret: never printed.
        f.debug_struct("DnsForwarder")
            .field("upstreams", &self.upstreams)
            .field("fallbacks", &self.fallbacks)
            .field("tries", &self.tries)
            .finish_non_exhaustive()
    }
}

impl DnsForwarder {
    /// A forwarder over `upstreams` then `fallbacks`, drawing query ids from a ChaCha20 generator keyed by `seed`.
    pub(crate) fn new(upstreams: &[SocketAddr], fallbacks: &[SocketAddr], seed: [u8; 32]) -> Self {
        DnsForwarder {
            upstreams: upstreams.iter().copied().map(Resolver::new).collect(),
            fallbacks: fallbacks.iter().copied().map(Resolver::new).collect(),
            tries: HashMap::new(),
            rng: ChaCha20Rng::from_seed(seed),
        }
    }

    /// True if `flow` is the socket of a query in flight.
    pub(crate) fn owns(&self, flow: FlowId) -> bool {
        self.tries.contains_key(&flow)
    }

    /// Replaces the network's resolvers; the health of one that stays on the list is kept.
    pub(crate) fn set_upstreams(&mut self, upstreams: &[SocketAddr]) {
        let old = std::mem::take(&mut self.upstreams);
        self.upstreams = upstreams
            .iter()
            .map(|&addr| old.iter().find(|r| r.addr == addr).cloned().unwrap_or_else(|| Resolver::new(addr)))
            .collect();
    }

    /// The resolver for a new try: the first one that is up, upstreams before fallbacks, other than `avoid`;
    /// if every other one is down, the one whose backoff ends first; `avoid` itself only when it is the only one.
    fn pick(&self, now: Instant, avoid: Option<SocketAddr>) -> Option<SocketAddr> {
        let all = || self.upstreams.iter().chain(&self.fallbacks).filter(|r| Some(r.addr) != avoid);
        all()
            .find(|r| r.is_up(now))
            .or_else(|| all().min_by_key(|r| r.down_until))
            .map(|r| r.addr)
            .or(avoid.filter(|a| self.upstreams.iter().chain(&self.fallbacks).any(|r| r.addr == *a)))
    }

    /// Records that `addr` failed: skipped for a backoff that doubles with each failure in a row.
    fn mark_failed(&mut self, addr: SocketAddr, now: Instant) {
        for r in self.upstreams.iter_mut().chain(&mut self.fallbacks).filter(|r| r.addr == addr) {
            r.failures = r.failures.saturating_add(1);
            let backoff = BACKOFF_MIN.saturating_mul(1 << r.failures.saturating_sub(1).min(8)).min(BACKOFF_MAX);
            r.down_until = Some(now + backoff);
        }
    }

    /// Records that `addr` answered.
    fn mark_answered(&mut self, addr: SocketAddr) {
        for r in self.upstreams.iter_mut().chain(&mut self.fallbacks).filter(|r| r.addr == addr) {
            r.failures = 0;
            r.down_until = None;
        }
    }

    /// A query id from the CSPRNG.
    fn next_id(&mut self) -> u16 {
        // Every bit of the output is uniform; the low 16 are the id.
        self.rng.next_u32() as u16
    }
}

impl Engine {
    /// Replaces the network's own DNS resolvers (what the platform reports for the current network), tried in
    /// order before the fallbacks. Queries in flight finish on the resolver they went to (or retry on these).
    pub fn set_dns_upstreams(&mut self, upstreams: Vec<SocketAddr>) {
        self.dns.set_upstreams(&upstreams);
    }

    /// A UDP datagram to port 53.
    pub(super) fn on_dns_datagram(&mut self, now: Instant, datagram: &UdpInbound<'_>, owners: &mut impl OwnerLookup) {
        let UdpInbound { client, server, payload, .. } = *datagram;
        let via = DnsClient::Udp { client, server };
        let mut owner = Owner::default();
        if let Some(uid) = self.blocked_app(&mut owner, Protocol::Udp, client, server, owners) {
            self.stats.dns_queries += 1;
            self.answer_blocked(via, payload);
            self.report_app_blocked(now, Protocol::Dns, client, server, uid);
            return;
        }
        let crowded = crowded(self.dns.tries.len(), self.pending_dns_share());
        let budget = self.budget_key(&mut owner, crowded, Protocol::Udp, (client, server), owners);
        self.dns_query(now, via, (client, server), budget, payload);
    }

    /// Answers a blocked query at once or forwards it upstream, counted in `budget`.
    fn dns_query(&mut self, now: Instant, via: DnsClient, (client, server): FlowKey, budget: Client, msg: &[u8]) {
        self.stats.dns_queries += 1;
        let (Ok(DnsQuery { name, qtype, .. }), Ok(question)) = (dns::parse_query(msg), dns::question_key(msg)) else {
            self.stats.malformed += 1;
            return;
        };
        let verdict = self.name_verdict(&name, BlockReason::DnsQuery);
        self.report(now, Protocol::Dns, client, server, Some(&name), &verdict);
        if verdict.is_block() {
            self.answer_blocked(via, msg);
            // Never the client's query (its labels can carry data): a query for the rule's name, rate-limited.
            if self.config.learn_blocked_addresses && matches!(qtype, QTYPE_A | QTYPE_AAAA) {
                self.learn_blocked_name(now, &verdict, qtype, (client, server));
            }
            return;
        }
        let deadline = now + self.config.dns_timeout;
        let pending = Pending { via, client, server, budget, query: msg.to_vec(), question, deadline };
        self.forward_query(now, pending);
    }

    /// Sends the engine's own query for a blocked rule's name upstream ([`DnsClient::Learn`]; see `learn`).
    pub(super) fn forward_learning_query(
        &mut self,
        now: Instant,
        query: Vec<u8>,
        (client, server): (SocketAddr, SocketAddr),
    ) {
        let Ok(question) = dns::question_key(&query) else {
            return;
        };
        let deadline = now + self.config.dns_timeout;
        // Counted as the client address's: the engine's own query, rate-limited (see `learn`).
        let budget = Client::Address(client.ip());
        let pending = Pending { via: DnsClient::Learn, client, server, budget, query, question, deadline };
        self.forward_query(now, pending);
    }

    /// Sends a query upstream (over TCP if the phone asked over TCP) and remembers it; answers SERVFAIL at once
    /// if no resolver can be reached.
    pub(crate) fn forward_query(&mut self, now: Instant, pending: Pending) {
        if self.dns.tries.len() >= MAX_PENDING {
            self.fail_query(now, pending, format!("{MAX_PENDING} queries already wait for answers"));
            return;
        }
        let (budget, share) = (pending.budget, self.pending_dns_share());
        if self.dns.tries.values().filter(|t| t.pending.budget == budget).count() >= share {
            let why = format!("{share} queries from {budget} already wait for answers");
            self.fail_query(now, pending, why);
            return;
        }
        let tcp = matches!(pending.via, DnsClient::Tcp(_));
        let first_try_until = (now + self.config.dns_timeout / 2).min(pending.deadline);
        match self.dns.pick(now, None) {
            Some(resolver) => self.start_try(pending, resolver, 1, first_try_until, tcp),
            None => self.fail_query(now, pending, "no DNS resolver is configured"),
        }
    }

    /// Sends the query to `resolver` on a socket of its own under a fresh id. If the socket fails (reported by
    /// the driver like any socket error), the resolver is marked down and the query goes on to the next try (or
    /// SERVFAIL).
    fn start_try(&mut self, pending: Pending, resolver: SocketAddr, tries: u8, until: Instant, tcp: bool) {
        let flow = self.new_flow_id();
        let id = self.dns.next_id();
        let mut query = pending.query.clone();
        if dns::set_id(&mut query, id).is_err() {
            self.stats.malformed += 1;
            return;
        }
        let started = if tcp {
            let Ok(len) = u16::try_from(query.len()) else {
                self.stats.malformed += 1;
                return;
            };
            let mut out = len.to_be_bytes().to_vec();
            out.extend_from_slice(&query);
            self.ask(SocketAction::TcpConnect { flow, dst: resolver });
            TryState::tcp_connecting(out)
        } else {
            self.ask(SocketAction::UdpOpen { flow, dst: resolver, multicast_client: None });
            self.ask(SocketAction::UdpSend { flow, datagram: query });
            TryState::Udp
        };
        self.timers.arm(until, Timer::Dns(flow));
        self.dns.tries.insert(flow, Try { pending, resolver, id, tries, until, state: started });
    }

    /// A try failed (`error`): its resolver is marked down and the query tried once more on the next resolver,
    /// if tries and time are left; SERVFAIL otherwise.
    fn retry_or_fail(&mut self, now: Instant, attempt: Try, error: TryFailure) {
        self.dns.mark_failed(attempt.resolver, now);
        let why = format!("resolver {}: {error}", attempt.resolver);
        if attempt.tries >= MAX_TRIES || attempt.pending.deadline <= now {
            self.fail_query(now, attempt.pending, why);
            return;
        }
        log::debug!("dns {}: {why}; trying again", attempt.pending.question.name);
        match self.dns.pick(now, Some(attempt.resolver)) {
            Some(next) => {
                let (tcp, until) = (matches!(attempt.pending.via, DnsClient::Tcp(_)), attempt.pending.deadline);
                self.start_try(attempt.pending, next, attempt.tries + 1, until, tcp);
            }
            None => self.fail_query(now, attempt.pending, why),
        }
    }

    /// A query that got no usable answer: SERVFAIL to the phone, so it gives up quickly instead of hanging, and
    /// an `error` event (none for the engine's own [`DnsClient::Learn`] queries, which only count).
    fn fail_query(&mut self, now: Instant, pending: Pending, error: impl Display) {
        if pending.via == DnsClient::Learn {
            self.stats.upstream_errors += 1;
            return;
        }
        self.answer_servfail(pending.via, &pending.query);
        let flow = (pending.client, pending.server);
        self.report_failure(now, Protocol::Dns, flow, Some(&pending.question.name), ErrorReason::DnsFailed, error);
    }

    /// A datagram on the UDP socket `flow` of a query in flight.
    pub(super) fn on_dns_datagram_from_upstream(&mut self, now: Instant, flow: FlowId, data: &[u8]) {
        let Some(attempt) = self.dns.tries.get(&flow) else {
            return;
        };
        if !dns::is_answer_to(data, attempt.id, &attempt.pending.question) {
            // A forgery, or garbage: the query keeps waiting for its real answer.
            self.stats.dropped += 1;
            return;
        }
        let Some(attempt) = self.dns.tries.remove(&flow) else {
            return;
        };
        self.ask(SocketAction::UdpClose { flow });
        if dns::is_truncated(data) {
            // The whole answer only comes over TCP: ask the same resolver again, within the same budget.
            let until = attempt.pending.deadline;
            self.start_try(attempt.pending, attempt.resolver, attempt.tries, until, true);
            return;
        }
        self.dns.mark_answered(attempt.resolver);
        self.on_dns_answer(now, attempt.pending, data);
    }

    /// The UDP socket of a query in flight failed (e.g. ICMP port unreachable, or the network is gone).
    pub(super) fn on_dns_socket_error(&mut self, now: Instant, flow: FlowId, error: io::Error) {
        self.end_try(now, flow, TryFailure::Socket(error));
    }

    /// Ends the try on socket `flow`, if it is in flight, with `failure`: its socket is closed and the query goes
    /// on to the next try, or SERVFAIL.
    fn end_try(&mut self, now: Instant, flow: FlowId, failure: TryFailure) {
        if let Some(attempt) = self.dns.tries.remove(&flow) {
            self.close_try_socket(flow, &attempt);
            self.retry_or_fail(now, attempt, failure);
        }
    }

    /// A try's deadline passed: on to the next try, or SERVFAIL.
    pub(super) fn on_dns_deadline(&mut self, now: Instant, flow: FlowId) {
        let Some(attempt) = self.dns.tries.get(&flow).filter(|t| t.until <= now) else {
            return;
        };
        let tcp = attempt.state.is_tcp();
        self.end_try(now, flow, TryFailure::Timeout { tcp });
    }

    /// Closes a try's socket (a TCP one with a reset: the exchange did not finish).
    fn close_try_socket(&mut self, flow: FlowId, attempt: &Try) {
        if attempt.state.is_tcp() {
            self.ask(SocketAction::TcpClose { flow, reset: true });
        } else {
            self.ask(SocketAction::UdpClose { flow });
        }
    }

    /// The DNS-over-TCP socket of a query in flight connected (or failed to): the query is written and the answer
    /// read when [`Engine::perform_socket_actions`] lends the stream next.
    pub(super) fn on_dns_tcp_connected(&mut self, now: Instant, flow: FlowId, result: io::Result<()>) {
        match result {
            Ok(()) => {
                if let Some(attempt) = self.dns.tries.get_mut(&flow) {
                    attempt.state.connected(TryName(flow, attempt.resolver));
                }
                self.ask_transfer(flow, Direction::ToServer);
                self.ask_transfer(flow, Direction::ToClient);
            }
            Err(error) => self.on_dns_socket_error(now, flow, error),
        }
    }

    /// Writes with `write` what is left of a DNS-over-TCP query (see [`Engine::upstream_writable`]).
    pub(super) fn write_dns_query(&mut self, now: Instant, flow: FlowId, mut write: impl FnMut(&[u8]) -> Transfer) {
        let Some(Try { state: TryState::TcpExchanging { out, written, .. }, .. }) = self.dns.tries.get_mut(&flow)
        else {
            return;
        };
        while *written < out.len() {
            let failure = match write(out.get(*written..).unwrap_or_default()) {
                Transfer::Moved(0) => TryFailure::WriteZero,
                Transfer::Moved(n) => {
                    *written += n;
                    continue;
                }
                Transfer::Blocked => return,
                Transfer::Failed(e) => TryFailure::Socket(e),
            };
            return self.end_try(now, flow, failure);
        }
    }

    /// Reads with `read` what has come of a DNS-over-TCP answer (see [`Engine::upstream_readable`]); handles the
    /// answer once whole.
    pub(super) fn read_dns_answer(&mut self, now: Instant, flow: FlowId, mut read: impl FnMut(&mut [u8]) -> Transfer) {
        let Some(Try { state: TryState::TcpExchanging { input, .. }, .. }) = self.dns.tries.get_mut(&flow) else {
            return;
        };
        let mut buf = [0u8; 4096];
        while !tcp_message_complete(input) {
            let failure = match read(&mut buf) {
                Transfer::Moved(0) => TryFailure::ClosedBeforeAnswer,
                Transfer::Moved(n) => {
                    input.extend_from_slice(buf.get(..n).unwrap_or_default());
                    continue;
                }
                Transfer::Blocked => return,
                Transfer::Failed(e) => TryFailure::Socket(e),
            };
            return self.end_try(now, flow, failure);
        }
        let Some(attempt) = self.dns.tries.remove(&flow) else {
            return;
        };
        self.ask(SocketAction::TcpClose { flow, reset: false });
        let TryState::TcpExchanging { input, .. } = &attempt.state else {
            return;
        };
        let answer = input.get(2..).unwrap_or_default();
        if !dns::is_answer_to(answer, attempt.id, &attempt.pending.question) {
            let why = TryFailure::MismatchedAnswer;
            self.stats.malformed += 1;
            let answer_len = answer.len();
            log::debug!("dns {}: {why} ({answer_len} bytes)", attempt.pending.question.name);
            self.retry_or_fail(now, attempt, why);
            return;
        }
        self.dns.mark_answered(attempt.resolver);
        let answer = answer.to_vec();
        self.on_dns_answer(now, attempt.pending, &answer);
    }

    /// The accepted answer to a query: checked for CNAME cloaking, learnt, and delivered with the phone's id.
    fn on_dns_answer(&mut self, now: Instant, pending: Pending, data: &[u8]) {
        let Ok(answer) = dns::parse_response(data) else {
            self.stats.malformed += 1;
            self.fail_query(now, pending, "malformed answer from the upstream resolver");
            return;
        };
        if pending.via == DnsClient::Learn {
            self.dns_cache.record(&answer, now);
            return;
        }
        // A blocked name hiding behind a CNAME of an allowed one ("CNAME cloaking").
        let cloaked = answer.chain_names().into_iter().skip(1).find_map(|name| {
            let verdict = self.name_verdict(name, BlockReason::DnsCname);
            verdict.is_block().then(|| (name.to_owned(), verdict))
        });
        if let Some((name, verdict)) = cloaked {
            self.report(now, Protocol::Dns, pending.client, pending.server, Some(&name), &verdict);
            self.answer_blocked(pending.via, &pending.query);
            return;
        }
        self.dns_cache.record(&answer, now);
        // Allowed names only reach here: drop ECH from HTTPS/SVCB answers so the real SNI stays visible. An
        // answer whose ECH cannot be removed is not handed on with it (fail closed): the phone gets SERVFAIL.
        let mut out = match dns::strip_ech(data) {
            Ok(Some(stripped)) => stripped,
            Ok(None) => data.to_vec(),
            Err(_) => {
                self.stats.malformed += 1;
                self.fail_query(now, pending, "answer from the upstream resolver whose ECH cannot be removed");
                return;
            }
        };
        match dns::message_id(&pending.query) {
            Some(id) if dns::set_id(&mut out, id).is_ok() => {
                if let DnsClient::Udp { client, .. } = pending.via {
                    out = self.fit_for_udp(out, &pending.query, client);
                }
                self.deliver_dns(pending.via, &out);
            }
            _ => self.stats.malformed += 1,
        }
        log::trace!("dns {} answered", pending.question.name);
    }

    /// `answer` as it may go to a UDP client: whole if it fits the client's EDNS size (512 without EDNS) and the
    /// tun MTU, else truncated with TC set, so the client asks again over TCP.
    fn fit_for_udp(&self, answer: Vec<u8>, query: &[u8], client: SocketAddr) -> Vec<u8> {
        let headers = if client.is_ipv4() { IPV4_UDP_HEADERS } else { IPV6_UDP_HEADERS };
        let mtu_limit = self.config.mtu.saturating_sub(headers).max(dns::MIN_UDP_PAYLOAD);
        if answer.len() <= dns::udp_payload_limit(query).min(mtu_limit) {
            return answer;
        }
        dns::truncated_response(&answer).unwrap_or(answer)
    }

    fn answer_blocked(&mut self, via: DnsClient, query: &[u8]) {
        match dns::blocked_response(query, self.config.block_answer) {
            Ok(answer) => self.deliver_dns(via, &answer),
            Err(_) => self.stats.malformed += 1,
        }
    }

    fn answer_servfail(&mut self, via: DnsClient, query: &[u8]) {
        match dns::servfail_response(query) {
            Ok(answer) => self.deliver_dns(via, &answer),
            Err(_) => self.stats.malformed += 1,
        }
    }

    /// Sends a DNS message to the phone the way its query came.
    fn deliver_dns(&mut self, via: DnsClient, msg: &[u8]) {
        match via {
            DnsClient::Udp { client, server } => self.send_udp_to_client(server, client, msg),
            DnsClient::Learn => {}
            DnsClient::Tcp(id) => self.deliver_dns_answer(id, msg),
        }
    }

    /// Reads complete length-prefixed queries from a DNS-over-TCP flow and handles each.
    pub(super) fn serve_dns_over_tcp(&mut self, now: Instant, id: FlowId) {
        while let Some(query) = self.next_dns_query(id) {
            self.dns_query(now, DnsClient::Tcp(id), query.key, query.budget, query.message());
        }
    }
}

/// True once `input` holds a whole length-prefixed DNS message.
fn tcp_message_complete(input: &[u8]) -> bool {
    match *input {
        [a, b, ref rest @ ..] => rest.len() >= usize::from(u16::from_be_bytes([a, b])),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 1)), 53);
    const B: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 2)), 53);

    /// A resolver that failed is skipped for 5 s, twice that after a second failure in a row, never more than a
    /// minute; an answer ends its backoff and its count.
    #[test]
    fn a_failing_resolver_is_skipped_for_a_backoff_that_doubles_until_it_answers() {
        let now = Instant::now();
        let ms = Duration::from_millis(1);
        let mut forwarder = DnsForwarder::new(&[A, B], &[], [0; 32]);
        assert_eq!(forwarder.pick(now, None), Some(A));
        forwarder.mark_failed(A, now);
        assert_eq!(forwarder.pick(now + BACKOFF_MIN - ms, None), Some(B));
        assert_eq!(forwarder.pick(now + BACKOFF_MIN, None), Some(A), "after 5 s");
        forwarder.mark_failed(A, now);
        assert_eq!(forwarder.pick(now + 2 * BACKOFF_MIN - ms, None), Some(B), "a second failure doubles it");
        assert_eq!(forwarder.pick(now + 2 * BACKOFF_MIN, None), Some(A));
        for _ in 0..10 {
            forwarder.mark_failed(A, now);
        }
        assert_eq!(forwarder.pick(now + BACKOFF_MAX - ms, None), Some(B));
        assert_eq!(forwarder.pick(now + BACKOFF_MAX, None), Some(A), "never more than a minute");
        forwarder.mark_answered(A);
        assert_eq!(forwarder.pick(now, None), Some(A), "an answer ends the backoff");
        forwarder.mark_failed(A, now);
        assert_eq!(forwarder.pick(now + BACKOFF_MIN, None), Some(A), "and the count starts again");
    }

    /// The forwarder's debug output names its resolvers and never shows the id generator's secret state.
    #[test]
    fn debug_output_hides_the_id_generator() {
        let text = format!("{:?}", DnsForwarder::new(&[A], &[B], [0x42; 32]));
        assert!(text.starts_with("DnsForwarder {") && text.contains("198.18.0.1:53") && text.contains("198.18.0.2:53"));
        assert!(!text.contains("rng") && !text.contains("66, 66"), "{text}");
    }
}
