//! UDP flows: a NAT table from (phone address, destination) to a connected upstream socket, with idle expiry.
//!
//! UDP does not go through smoltcp: datagrams are judged on the first packet of a flow, then relayed as they
//! are, and replies are wrapped in fresh IP/UDP headers for the tun.

use super::budget::{Client, Owner, Table};
use super::packet::UdpInbound;
use super::quic_hold::looks_like_quic_initial;
use super::reply::Unreachable;
use super::timers::Timer;
use super::{AddressVerdict, Engine, FlowId, FlowKey, Upstream};
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
        up: &mut impl Upstream,
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
            if up.udp_send(id, payload).is_err() {
                self.stats.dropped += 1;
            }
            return;
        }
        if self.refuse_unroutable(now, Protocol::Udp, (client, server)) {
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::NoRoute);
            return;
        }
        let mut owner = Owner::default();
        if let Some(uid) = self.blocked_app(&mut owner, Protocol::Udp, client, server, up) {
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
            self.report_app_blocked(now, Protocol::Udp, client, server, uid);
            return;
        }
        if self.hold_quic_datagram(now, datagram, &mut owner, up) {
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
        let budget = self.budget_key(&mut owner, crowded, Protocol::Udp, (client, server), up);
        if !verdict.is_block() {
            if let Some(reason) = self.udp_table_full(now, budget, up) {
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
        self.open_udp_flow(now, packet, (client, server), budget, host.as_deref(), [payload], up);
    }

    /// Opens the upstream socket of an allowed flow (under a new flow id), sends its first `datagrams` and enters it
    /// in the NAT table, counted in `budget`. If the socket cannot be opened or sent on, the flow is refused with ICMP (quoting `packet`)
    /// and reported.
    // Each argument is one fact about the new flow; bundling them in a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_udp_flow<'a>(
        &mut self,
        now: Instant,
        packet: &[u8],
        (client, server): FlowKey,
        budget: Client,
        host: Option<&str>,
        datagrams: impl IntoIterator<Item = &'a [u8]>,
        up: &mut impl Upstream,
    ) {
        let id = self.new_flow_id();
        let mut quic = None;
        let opened = if server.ip().is_multicast() {
            up.udp_open_multicast(id, client, server)
        } else {
            up.udp_open(id, server)
        };
        let sent = opened.and_then(|()| {
            datagrams.into_iter().try_for_each(|d| {
                quic = quic.take().or_else(|| initial_connection(d));
                up.udp_send(id, d)
            })
        });
        if let Err(error) = sent {
            up.udp_close(id);
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
            self.report_failure(now, Protocol::Udp, (client, server), host, ErrorReason::UdpFailed, error);
            return;
        }
        self.stats.udp_flows += 1;
        self.budgets.add_udp(budget);
        self.udp.insert(id, UdpFlow { client, server, budget, last_active: now, quic });
        self.udp_keys.insert((client, server), id);
        self.timers.arm(now + self.config.udp_idle_timeout, Timer::Udp(id));
    }

    /// A datagram the driver received on an upstream UDP socket (from the flow's server).
    pub fn on_udp_datagram(&mut self, now: Instant, id: FlowId, data: &[u8], up: &mut impl Upstream) {
        if self.dns.owns(id) {
            self.on_dns_datagram_from_upstream(now, id, data, up);
            return;
        }
        let Some(flow) = self.udp.get(&id) else {
            return;
        };
        let from = flow.server;
        self.on_udp_datagram_from(now, id, from, data, up);
    }

    /// A datagram the driver received on an upstream UDP socket from `from`. On a connected socket that is the
    /// flow's server; on the unconnected socket of a broadcast or multicast flow (LAN discovery: mDNS, SSDP,
    /// device control) it is whichever host answered, and the phone gets the answer from that host's address,
    /// as it would on the LAN. Such a host is judged by the IP rules like any destination: a blocked one's
    /// answers are dropped (counted in `blocked`).
    pub fn on_udp_datagram_from(
        &mut self,
        now: Instant,
        id: FlowId,
        from: SocketAddr,
        data: &[u8],
        up: &mut impl Upstream,
    ) {
        if self.dns.owns(id) {
            self.on_dns_datagram_from_upstream(now, id, data, up);
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
    pub fn on_udp_error(&mut self, now: Instant, id: FlowId, error: io::Error, up: &mut impl Upstream) {
        if self.dns.owns(id) {
            self.on_dns_socket_error(now, id, error, up);
        } else if let Some(flow) = self.udp.get(&id) {
            let key = (flow.client, flow.server);
            self.report_failure(now, Protocol::Udp, key, None, ErrorReason::UdpFailed, error);
        }
    }

    /// Why no UDP flow (or QUIC hold) of `client` can be added, if it cannot: the table is at its cap and no flow
    /// may make room ([`Engine::make_room`]); when one may, it is closed first.
    pub(super) fn udp_table_full(
        &mut self,
        now: Instant,
        client: Client,
        up: &mut impl Upstream,
    ) -> Option<BlockReason> {
        if self.udp.len() + self.quic.holding() < self.config.max_udp_flows {
            return None;
        }
        self.make_room(now, client, Table::Udp, up)
    }

    /// Closes the least recently active UDP flow (of `client` only, if given) if it has been quiet for
    /// `min_idle`, with a `flow_evicted` event. False if none qualifies.
    pub(super) fn evict_udp_flow(
        &mut self,
        now: Instant,
        client: Option<Client>,
        min_idle: Duration,
        up: &mut impl Upstream,
    ) -> bool {
        let oldest = self
            .udp
            .iter()
            .filter(|(_, f)| client.is_none_or(|c| f.budget == c))
            .min_by_key(|(_, f)| f.last_active)
            .map(|(&id, f)| (id, f.last_active));
        let Some((id, last_active)) = oldest.filter(|&(_, at)| at + min_idle <= now) else {
            return false;
        };
        if let Some(flow) = self.close_udp_flow(id, up) {
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
    pub(super) fn on_udp_idle_check(&mut self, now: Instant, id: FlowId, up: &mut impl Upstream) {
        let Some(flow) = self.udp.get(&id) else {
            return;
        };
        let expires = flow.last_active + self.config.udp_idle_timeout;
        if expires > now {
            self.timers.arm(expires, Timer::Udp(id));
            return;
        }
        self.close_udp_flow(id, up);
    }

    /// Removes a flow from the NAT table and closes its upstream socket; the flow, if it was there.
    pub(super) fn close_udp_flow(&mut self, id: FlowId, up: &mut impl Upstream) -> Option<UdpFlow> {
        let flow = self.udp.remove(&id)?;
        self.budgets.remove_udp(flow.budget);
        self.udp_keys.remove(&(flow.client, flow.server));
        up.udp_close(id);
        Some(flow)
    }
}
