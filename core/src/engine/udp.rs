//! UDP flows: a NAT table from (phone address, destination) to a connected upstream socket, with idle expiry.
//!
//! UDP does not go through smoltcp: datagrams are judged on the first packet of a flow, then relayed as they
//! are, and replies are wrapped in fresh IP/UDP headers for the tun.

use super::budget::{Client, Owner, Table};
use super::packet::UdpInbound;
use super::quic_hold::looks_like_quic_initial;
use super::reply::Unreachable;
use super::timers::Timer;
use super::{AddressVerdict, Engine, FlowId, FlowKey, OwnerLookup, SocketAction};
use crate::event::Protocol;
use crate::inspect::quic::open_client_initial;
use crate::verdict::{BlockReason, ErrorReason, Verdict};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// DNS over QUIC uses the DNS-over-TLS port.
pub(super) const DOQ_PORT: u16 = 853;
/// At the flow cap, a flow quiet for at least this long is closed to make room for a new one (it would idle out
/// anyway); busier ones are never evicted.
pub(super) const EVICT_MIN_IDLE: Duration = Duration::from_secs(15);

/// One UDP flow from the phone.
#[derive(Debug)]
pub(crate) struct UdpFlow {
    pub(super) client: SocketAddr,
    pub(super) server: SocketAddr,
    /// Whose budget the flow counts in (see `budget`).
    pub(super) budget: Client,
    last_active: Instant,
    /// Version and Destination Connection ID of the QUIC client Initial the flow was judged on, if it was.
    quic: Option<(u32, Vec<u8>)>,
}

/// A new allowed UDP flow: what [`Engine::open_udp_flow`] needs to open it and, should its socket fail to
/// open, to refuse and report it.
pub(super) struct UdpOpening<'a> {
    /// The phone's first packet of the flow, quoted in an ICMP refusal.
    pub(super) packet: &'a [u8],
    /// The phone's address and the destination.
    pub(super) key: FlowKey,
    /// Whose budget the flow counts in.
    pub(super) budget: Client,
    /// The name the destination is known by, for events.
    pub(super) host: Option<&'a str>,
}

/// What the engine keeps of a UDP flow until the driver reports its socket opened.
#[derive(Debug)]
pub(super) struct PendingOpen {
    /// The phone's first packet, quoted in the ICMP refusal if the socket cannot be opened.
    packet: Vec<u8>,
    /// The destination's name, for the failure event.
    host: Option<String>,
}

/// The version and DCID of a datagram that opens as a QUIC client Initial (cheap check first).
fn initial_connection(payload: &[u8]) -> Option<(u32, Vec<u8>)> {
    if !looks_like_quic_initial(payload) {
        return None;
    }
    open_client_initial(payload).ok().map(|(initial, _)| (initial.version, initial.dcid))
}

impl Engine {
    /// A UDP datagram from the phone (not DNS).
    pub(super) fn on_udp_datagram_from_client(
        &mut self,
        now: Instant,
        datagram: &UdpInbound<'_>,
        owners: &mut impl OwnerLookup,
    ) {
        let UdpInbound { packet, client, server, payload } = *datagram;
        if let Some(&id) = self.udp_keys.get(&(client, server)) {
            if let Some(flow) = self.udp.get_mut(&id) {
                flow.last_active = now;
                // A client Initial of another QUIC connection than the one judged (or on a flow that was not
                // QUIC) would start a connection no one inspected: dropped. (A server's Retry makes the client
                // send one too; that QUIC connection fails and the client falls back to TCP.)
                if let Some(connection) = initial_connection(payload) {
                    if flow.quic.as_ref() != Some(&connection) {
                        self.stats.dropped += 1;
                        return;
                    }
                }
            }
            self.ask(SocketAction::UdpSend { flow: id, datagram: payload.to_vec() });
            return;
        }
        if self.refuse_unroutable(now, Protocol::Udp, (client, server)) {
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::NoRoute);
            return;
        }
        let mut owner = Owner::default();
        if let Some(uid) = self.blocked_app(&mut owner, Protocol::Udp, client, server, owners) {
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
            self.report_app_blocked(now, Protocol::Udp, client, server, uid);
            return;
        }
        if self.hold_quic_datagram(now, datagram, &mut owner, owners) {
            return;
        }
        let (verdict, host) = if server.port() == DOQ_PORT && self.config.block_dns_over_tls {
            (Verdict::block(BlockReason::DnsOverTls), None)
        } else {
            match self.address_verdict(now, server.ip()) {
                AddressVerdict::Decided(verdict) => (verdict, None),
                AddressVerdict::MappedBlocked(verdict, host) => (verdict, Some(host)),
                AddressVerdict::Shared(host) => (Verdict::no_match(), Some(host)),
                AddressVerdict::Unknown(host) => (Verdict::no_match(), host),
            }
        };
        let crowded = self.flows_crowded(Table::Udp);
        let budget = self.budget_key(&mut owner, crowded, Protocol::Udp, (client, server), owners);
        if !verdict.is_block() {
            if let Some(reason) = self.udp_table_full(now, budget) {
                self.report_budget_refusal(now, Protocol::Udp, (client, server), host.as_deref(), reason, budget);
                self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
                return;
            }
        }
        self.report(now, Protocol::Udp, client, server, host.as_deref(), &verdict);
        if verdict.is_block() {
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
            return;
        }
        let opening = UdpOpening { packet, key: (client, server), budget, host: host.as_deref() };
        self.open_udp_flow(now, opening, [payload.to_vec()]);
    }

    /// Asks the driver to open the upstream socket of an allowed flow (under a new flow id) and send its first
    /// `datagrams`, and enters it in the NAT table, counted in `budget`. If the socket cannot be opened
    /// ([`Engine::on_udp_opened`]), the flow is refused with ICMP (quoting `packet`) and reported.
    pub(super) fn open_udp_flow(
        &mut self,
        now: Instant,
        opening: UdpOpening<'_>,
        datagrams: impl IntoIterator<Item = Vec<u8>>,
    ) {
        let UdpOpening { packet, key: (client, server), budget, host } = opening;
        let id = self.new_flow_id();
        let multicast_client = server.ip().is_multicast().then_some(client);
        self.ask(SocketAction::UdpOpen { flow: id, dst: server, multicast_client });
        let mut quic = None;
        for datagram in datagrams {
            quic = quic.take().or_else(|| initial_connection(&datagram));
            self.ask(SocketAction::UdpSend { flow: id, datagram });
        }
        self.udp_opening.insert(id, PendingOpen { packet: packet.to_vec(), host: host.map(str::to_owned) });
        self.stats.udp_flows += 1;
        self.budgets.add_udp(budget);
        self.udp.insert(id, UdpFlow { client, server, budget, last_active: now, quic });
        self.udp_keys.insert((client, server), id);
        self.timers.arm(now + self.config.udp_idle_timeout, Timer::Udp(id));
    }

    /// The driver's report that it opened (or could not open) the upstream socket of UDP flow `id`. One that
    /// could not be is closed, refused with ICMP and reported, as if never opened; a DNS query's goes on to its
    /// next try.
    pub fn on_udp_opened(&mut self, now: Instant, id: FlowId, result: io::Result<()>) {
        let pending = self.udp_opening.remove(&id);
        let Err(error) = result else {
            return;
        };
        if self.dns.owns(id) {
            self.on_dns_socket_error(now, id, error);
            return;
        }
        let Some(flow) = self.close_udp_flow(id) else {
            return;
        };
        self.stats.udp_flows -= 1;
        let (client, server) = (flow.client, flow.server);
        let host = pending.and_then(|p| {
            self.refuse_with_icmp(&p.packet, client.ip(), server.ip(), Unreachable::Port);
            p.host
        });
        self.report_failure(now, Protocol::Udp, (client, server), host.as_deref(), ErrorReason::UdpFailed, error);
    }

    /// The driver's report that a datagram could not be sent on flow `id`'s socket: dropped, or for a DNS
    /// query, on to its next try.
    pub fn on_udp_send_failed(&mut self, now: Instant, id: FlowId, error: io::Error) {
        if self.dns.owns(id) {
            self.on_dns_socket_error(now, id, error);
        } else if self.udp.contains_key(&id) {
            self.stats.dropped += 1;
        }
    }

    /// A datagram the driver received on an upstream UDP socket (from the flow's server).
    pub fn on_udp_datagram(&mut self, now: Instant, id: FlowId, data: &[u8]) {
        if self.dns.owns(id) {
            self.on_dns_datagram_from_upstream(now, id, data);
            return;
        }
        let Some(flow) = self.udp.get(&id) else {
            return;
        };
        let from = flow.server;
        self.on_udp_datagram_from(now, id, from, data);
    }

    /// A datagram the driver received on an upstream UDP socket from `from`. On a connected socket that is the
    /// flow's server; on the unconnected socket of a broadcast or multicast flow (LAN discovery: mDNS, SSDP,
    /// device control) it is whichever host answered, and the phone gets the answer from that host's address,
    /// as it would on the LAN. Such a host is judged by the IP rules like any destination: a blocked one's
    /// answers are dropped (counted in `blocked`).
    pub fn on_udp_datagram_from(&mut self, now: Instant, id: FlowId, from: SocketAddr, data: &[u8]) {
        if self.dns.owns(id) {
            self.on_dns_datagram_from_upstream(now, id, data);
            return;
        }
        self.deliver_udp_answer(now, id, from, false, data);
    }

    /// A datagram the driver received on a multicast flow's upstream socket that was sent to the flow's group
    /// (an mDNS answer or an SSDP announcement multicast by a LAN host): the phone gets it addressed to the
    /// group, from `from`, as a member of the group on the LAN would (its socket must have joined the group on
    /// the tun). Judged like [`Engine::on_udp_datagram_from`].
    pub fn on_udp_group_datagram(&mut self, now: Instant, id: FlowId, from: SocketAddr, data: &[u8]) {
        self.deliver_udp_answer(now, id, from, true, data);
    }

    /// Hands an upstream datagram of flow `id` from `from` to the phone, addressed to the phone's socket or, if
    /// `to_group`, to the flow's destination group; a sender other than the flow's server that the IP rules
    /// block is dropped (counted in `blocked`).
    fn deliver_udp_answer(&mut self, now: Instant, id: FlowId, from: SocketAddr, to_group: bool, data: &[u8]) {
        let Some(flow) = self.udp.get_mut(&id) else {
            return;
        };
        flow.last_active = now;
        let (server, client) = (flow.server, flow.client);
        if from.ip() != server.ip() && self.address_verdict(now, from.ip()).blocks() {
            self.stats.blocked += 1;
            return;
        }
        let to = if to_group { SocketAddr::new(server.ip(), client.port()) } else { client };
        self.send_udp_to_client(from, to, data);
    }

    /// The driver's report that an upstream UDP socket failed (e.g. ICMP port unreachable from the network).
    pub fn on_udp_error(&mut self, now: Instant, id: FlowId, error: io::Error) {
        if self.dns.owns(id) {
            self.on_dns_socket_error(now, id, error);
        } else if let Some(flow) = self.udp.get(&id) {
            let key = (flow.client, flow.server);
            self.report_failure(now, Protocol::Udp, key, None, ErrorReason::UdpFailed, error);
        }
    }

    /// Why no UDP flow (or QUIC hold) of `client` can be added, if it cannot: the table is at its cap and no flow
    /// may make room ([`Engine::make_room`]); when one may, it is closed first.
    pub(super) fn udp_table_full(&mut self, now: Instant, client: Client) -> Option<BlockReason> {
        if self.udp.len() + self.quic.holding() < self.config.max_udp_flows {
            return None;
        }
        self.make_room(now, client, Table::Udp)
    }

    /// Closes the least recently active UDP flow (of `client` only, if given) if it has been quiet for
    /// `min_idle`, with a `flow_evicted` event. False if none qualifies.
    pub(super) fn evict_udp_flow(&mut self, now: Instant, client: Option<Client>, min_idle: Duration) -> bool {
        let oldest = self
            .udp
            .iter()
            .filter(|(_, f)| client.is_none_or(|c| f.budget == c))
            .min_by_key(|(_, f)| f.last_active)
            .map(|(&id, f)| (id, f.last_active));
        let Some((id, last_active)) = oldest.filter(|&(_, at)| at + min_idle <= now) else {
            return false;
        };
        if let Some(flow) = self.close_udp_flow(id) {
            let idle = now.saturating_duration_since(last_active).as_secs();
            let why = match client {
                Some(c) if min_idle.is_zero() => {
                    format!("flow table full; {c} holds more than its share; idle for {idle} s")
                }
                _ => format!("flow table full; idle for {idle} s"),
            };
            self.report_failure(now, Protocol::Udp, (flow.client, flow.server), None, ErrorReason::FlowEvicted, why);
        }
        true
    }

    /// Closes a UDP flow that has been idle long enough; re-arms the check otherwise.
    pub(super) fn on_udp_idle_check(&mut self, now: Instant, id: FlowId) {
        let Some(flow) = self.udp.get(&id) else {
            return;
        };
        let expires = flow.last_active + self.config.udp_idle_timeout;
        if expires > now {
            self.timers.arm(expires, Timer::Udp(id));
            return;
        }
        self.close_udp_flow(id);
    }

    /// Removes a flow from the NAT table and closes its upstream socket; the flow, if it was there.
    pub(super) fn close_udp_flow(&mut self, id: FlowId) -> Option<UdpFlow> {
        let flow = self.udp.remove(&id)?;
        self.budgets.remove_udp(flow.budget);
        self.udp_keys.remove(&(flow.client, flow.server));
        self.udp_opening.remove(&id);
        self.ask(SocketAction::UdpClose { flow: id });
        Some(flow)
    }
}
