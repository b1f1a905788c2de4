//! DNS interception: every query on port 53 (UDP or TCP, whatever address the phone sent it to) is answered here.
//!
//! Blocked names get an immediate answer (NXDOMAIN or 0.0.0.0/::), never a silent drop, which would make apps
//! retry for minutes. Other queries go to the configured upstream through one protected UDP socket, under ids
//! of the forwarder's own (so queries from different clients cannot collide). Answers are checked for blocked
//! names hidden behind CNAMEs and recorded in the IP→names cache that later judges connections.

use super::tcp::Phase;
use super::timers::Timer;
use super::{Engine, FlowId, Upstream};
use crate::event::Protocol;
use crate::inspect::dns::{self, DnsQuery};
use crate::verdict::Reason;
use smoltcp::socket::tcp::Socket;
use std::collections::HashMap;
use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// At most this many forwarded queries wait for answers; more are answered SERVFAIL at once.
const MAX_PENDING: usize = 4096;
/// At most this many of them from one client address (a LAN host behind a gateway, or the phone), so that one
/// client flooding queries to a slow resolver cannot take every slot.
const MAX_PENDING_PER_CLIENT: usize = MAX_PENDING / 4;
/// DNS record types whose answers carry addresses.
const QTYPE_A: u16 = 1;
const QTYPE_AAAA: u16 = 28;
/// Largest DNS message over TCP (two-byte length prefix).
const MAX_TCP_MESSAGE: usize = u16::MAX as usize;

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

/// A forwarded query awaiting its answer.
#[derive(Debug)]
struct Pending {
    via: DnsClient,
    client: SocketAddr,
    server: SocketAddr,
    /// The phone's query as sent (its id included), to build refusals and SERVFAIL from.
    query: Vec<u8>,
    question: String,
    deadline: Instant,
}

/// The upstream side of DNS: one socket, id mapping, pending queries.
#[derive(Debug)]
pub(crate) struct DnsForwarder {
    upstream: SocketAddr,
    flow: FlowId,
    open: bool,
    pending: HashMap<u16, Pending>,
    rng: u64,
}

impl DnsForwarder {
    /// A forwarder to `upstream` using flow id `flow` for its socket.
    pub(crate) fn new(upstream: SocketAddr, flow: FlowId, seed: u64) -> Self {
        DnsForwarder { upstream, flow, open: false, pending: HashMap::new(), rng: seed | 1 }
    }

    /// The flow id of the upstream DNS socket.
    pub(crate) fn flow(&self) -> FlowId {
        self.flow
    }

    /// An unused query id, unpredictable to off-path spoofers (xorshift64*).
    fn next_id(&mut self) -> u16 {
        loop {
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let id = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 48) as u16;
            if !self.pending.contains_key(&id) {
                return id;
            }
        }
    }
}

impl Engine {
    /// A UDP datagram to port 53.
    pub(super) fn on_dns_datagram(
        &mut self,
        now: Instant,
        client: SocketAddr,
        server: SocketAddr,
        payload: &[u8],
        up: &mut impl Upstream,
    ) {
        let via = DnsClient::Udp { client, server };
        if let Some(uid) = self.blocked_app(Protocol::Udp, client, server, up) {
            self.stats.dns_queries += 1;
            self.answer_blocked(via, payload);
            self.report_app_blocked(now, Protocol::Dns, client, server, uid);
            return;
        }
        self.dns_query(now, via, client, server, payload, up);
    }

    /// Answers a blocked query at once or forwards it upstream.
    fn dns_query(
        &mut self,
        now: Instant,
        via: DnsClient,
        client: SocketAddr,
        server: SocketAddr,
        msg: &[u8],
        up: &mut impl Upstream,
    ) {
        self.stats.dns_queries += 1;
        let Ok(DnsQuery { name, qtype, .. }) = dns::parse_query(msg) else {
            self.stats.malformed += 1;
            return;
        };
        let verdict = self.name_verdict(&name, Reason::DnsQuery);
        self.report(now, Protocol::Dns, client, server, Some(&name), &verdict);
        if verdict.is_block() {
            self.answer_blocked(via, msg);
            // Never the client's query (its labels can carry data): a query for the rule's name, rate-limited.
            if self.config.learn_blocked_addresses && matches!(qtype, QTYPE_A | QTYPE_AAAA) {
                self.learn_blocked_name(now, &verdict, qtype, (client, server), up);
            }
            return;
        }
        let pending = Pending {
            via,
            client,
            server,
            query: msg.to_vec(),
            question: name,
            deadline: now + self.config.dns_timeout,
        };
        self.forward_query(now, pending, up);
    }

    /// Sends the engine's own query for a blocked rule's `name` upstream ([`DnsClient::Learn`]; see `learn`).
    pub(super) fn forward_learning_query(
        &mut self,
        now: Instant,
        name: String,
        query: Vec<u8>,
        (client, server): (SocketAddr, SocketAddr),
        up: &mut impl Upstream,
    ) {
        let deadline = now + self.config.dns_timeout;
        let pending = Pending { via: DnsClient::Learn, client, server, query, question: name, deadline };
        self.forward_query(now, pending, up);
    }

    /// Sends a query upstream and remembers it; answers SERVFAIL at once if that cannot be done.
    fn forward_query(&mut self, now: Instant, pending: Pending, up: &mut impl Upstream) {
        let ip = pending.client.ip();
        if self.dns.pending.values().filter(|p| p.client.ip() == ip).count() >= MAX_PENDING_PER_CLIENT {
            let why = format!("{MAX_PENDING_PER_CLIENT} queries from {ip} already wait for answers");
            self.fail_query(now, pending, why);
            return;
        }
        match self.send_upstream(&pending.query, up) {
            Ok(id) => {
                self.timers.arm(pending.deadline, Timer::Dns(id));
                self.dns.pending.insert(id, pending);
            }
            Err(error) => self.fail_query(now, pending, error),
        }
    }

    /// Sends `query` to the upstream resolver under a fresh id, opening the socket if needed; the id used.
    fn send_upstream(&mut self, query: &[u8], up: &mut impl Upstream) -> io::Result<u16> {
        if self.dns.pending.len() >= MAX_PENDING {
            return Err(io::Error::other(format!("{MAX_PENDING} queries already wait for answers")));
        }
        if !self.dns.open {
            up.udp_open(self.dns.flow, self.dns.upstream)?;
            self.dns.open = true;
        }
        let id = self.dns.next_id();
        let mut forwarded = query.to_vec();
        dns::set_id(&mut forwarded, id).map_err(|_| io::Error::other("query too short for an id"))?;
        up.udp_send(self.dns.flow, &forwarded)?;
        Ok(id)
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
        self.report_failure(now, Protocol::Dns, flow, Some(&pending.question), Reason::DnsFailed, error);
    }

    /// An answer from the upstream resolver.
    pub(super) fn on_dns_answer(&mut self, now: Instant, data: &[u8]) {
        let Some(pending) = dns::message_id(data).and_then(|id| self.dns.pending.remove(&id)) else {
            // Late (already timed out) or not an answer to us.
            self.stats.dropped += 1;
            return;
        };
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
            let verdict = self.name_verdict(name, Reason::DnsCname);
            verdict.is_block().then(|| (name.to_owned(), verdict))
        });
        if let Some((name, verdict)) = cloaked {
            self.report(now, Protocol::Dns, pending.client, pending.server, Some(&name), &verdict);
            self.answer_blocked(pending.via, &pending.query);
            return;
        }
        self.dns_cache.record(&answer, now);
        let mut out = data.to_vec();
        match dns::message_id(&pending.query) {
            Some(id) if dns::set_id(&mut out, id).is_ok() => self.deliver_dns(pending.via, &out),
            _ => self.stats.malformed += 1,
        }
        log::trace!("dns {} answered", pending.question);
    }

    /// A forwarded query's deadline passed: SERVFAIL, so the phone gives up quickly instead of hanging.
    pub(super) fn on_dns_deadline(&mut self, now: Instant, id: u16) {
        let due = self.dns.pending.get(&id).is_some_and(|p| p.deadline <= now);
        if let Some(pending) = due.then(|| self.dns.pending.remove(&id)).flatten() {
            let why = format!("no answer from {} within {:?}", self.dns.upstream, self.config.dns_timeout);
            self.fail_query(now, pending, why);
        }
    }

    /// The upstream socket failed: every waiting query gets SERVFAIL now, and the socket is reopened next time.
    pub(super) fn fail_all_dns(&mut self, now: Instant, error: &io::Error) {
        self.dns.open = false;
        let pending: Vec<Pending> = self.dns.pending.drain().map(|(_, p)| p).collect();
        let why = format!("upstream resolver {}: {error}", self.dns.upstream);
        for p in pending {
            self.fail_query(now, p, &why);
        }
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
            DnsClient::Tcp(id) => {
                let Some(flow) = self.tcp.get_mut(&id) else {
                    return;
                };
                if let Phase::Dns { pending } = &mut flow.phase {
                    *pending = pending.saturating_sub(1);
                }
                let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
                let framed_len = msg.len() + 2;
                let fits = socket.send_capacity() - socket.send_queue() >= framed_len;
                let Ok(len) = u16::try_from(msg.len()) else {
                    return;
                };
                if fits && socket.send_slice(&len.to_be_bytes()).is_ok() && socket.send_slice(msg).is_ok() {
                    self.touched.push(id);
                } else {
                    self.stats.dropped += 1;
                }
            }
        }
    }

    /// Reads complete length-prefixed queries from a DNS-over-TCP flow and handles each.
    pub(super) fn serve_dns_over_tcp(&mut self, now: Instant, id: FlowId, up: &mut impl Upstream) {
        loop {
            let Some(flow) = self.tcp.get_mut(&id) else {
                return;
            };
            let (client, server) = (flow.client, flow.server);
            let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
            let mut prefix = [0u8; 2];
            let have = socket.recv_queue();
            if have < 2 || socket.peek_slice(&mut prefix).unwrap_or(0) < 2 {
                if !socket.may_recv() && have == 0 && flow.phase == (Phase::Dns { pending: 0 }) {
                    socket.close();
                }
                return;
            }
            let len = usize::from(u16::from_be_bytes(prefix));
            if have < 2 + len || len > MAX_TCP_MESSAGE {
                return;
            }
            let mut msg = vec![0u8; 2 + len];
            if socket.recv_slice(&mut msg).unwrap_or(0) != msg.len() {
                return;
            }
            if let Phase::Dns { pending } = &mut flow.phase {
                *pending = pending.saturating_add(1);
            }
            self.dns_query(now, DnsClient::Tcp(id), client, server, msg.get(2..).unwrap_or_default(), up);
        }
    }
}
