//! UDP flows: a NAT table from (phone address, destination) to a connected upstream socket, with idle expiry.
//!
//! UDP does not go through smoltcp: datagrams are judged on the first packet of a flow, then relayed as they
//! are, and replies are wrapped in fresh IP/UDP headers for the tun.

use super::reply::Unreachable;
use super::timers::Timer;
use super::{AddressVerdict, Engine, FlowId, Upstream};
use crate::event::Protocol;
use crate::verdict::{Reason, Verdict};
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// DNS over QUIC uses the DNS-over-TLS port.
const DOQ_PORT: u16 = 853;

/// One UDP flow from the phone.
#[derive(Debug)]
pub(crate) struct UdpFlow {
    client: SocketAddr,
    server: SocketAddr,
    last_active: Instant,
}

impl UdpFlow {
    /// A flow that was active at `now`.
    pub(crate) fn new(client: SocketAddr, server: SocketAddr, now: Instant) -> Self {
        UdpFlow { client, server, last_active: now }
    }
}

impl Engine {
    /// A UDP datagram from the phone (not DNS).
    pub(super) fn on_udp_datagram_from_client(
        &mut self,
        now: Instant,
        packet: &[u8],
        client: SocketAddr,
        server: SocketAddr,
        payload: &[u8],
        up: &mut impl Upstream,
    ) {
        if let Some(&id) = self.udp_keys.get(&(client, server)) {
            if let Some(flow) = self.udp.get_mut(&id) {
                flow.last_active = now;
            }
            if up.udp_send(id, payload).is_err() {
                self.stats.dropped += 1;
            }
            return;
        }
        if let Some(uid) = self.blocked_app(Protocol::Udp, client, server, up) {
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
            self.report_app_blocked(now, Protocol::Udp, client, server, uid);
            return;
        }
        if self.hold_quic_datagram(now, packet, client, server, payload, up) {
            return;
        }
        let (verdict, host) = if server.port() == DOQ_PORT && self.config.block_dns_over_tls {
            (Verdict::block(Reason::DnsOverTls), None)
        } else {
            match self.address_verdict(now, server.ip()) {
                AddressVerdict::Decided(verdict) => (verdict, None),
                AddressVerdict::MappedBlocked(verdict, host) => (verdict, Some(host)),
                AddressVerdict::Shared(host) => (Verdict::no_match(), Some(host)),
                AddressVerdict::Unknown(host) => (Verdict::no_match(), host),
            }
        };
        let verdict = if !verdict.is_block() && self.udp.len() >= self.config.max_udp_flows {
            Verdict::block(Reason::FlowLimit)
        } else {
            verdict
        };
        self.report(now, Protocol::Udp, client, server, host.as_deref(), &verdict);
        if verdict.is_block() {
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
            return;
        }
        let id = self.new_flow_id();
        if up.udp_open(id, server).and_then(|()| up.udp_send(id, payload)).is_err() {
            self.stats.upstream_errors += 1;
            up.udp_close(id);
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
            return;
        }
        self.stats.udp_flows += 1;
        self.udp.insert(id, UdpFlow { client, server, last_active: now });
        self.udp_keys.insert((client, server), id);
        self.timers.arm(now + self.config.udp_idle_timeout, Timer::Udp(id));
    }

    /// A datagram the driver received on an upstream UDP socket.
    pub fn on_udp_datagram(&mut self, now: Instant, id: FlowId, data: &[u8]) {
        if id == self.dns.flow() {
            self.on_dns_answer(now, data);
            return;
        }
        let Some(flow) = self.udp.get_mut(&id) else {
            return;
        };
        flow.last_active = now;
        let (from, to) = (flow.server, flow.client);
        self.send_udp_to_client(from, to, data);
    }

    /// The driver's report that an upstream UDP socket failed (e.g. ICMP port unreachable from the network).
    pub fn on_udp_error(&mut self, now: Instant, id: FlowId, _error: io::Error) {
        self.stats.upstream_errors += 1;
        if id == self.dns.flow() {
            self.fail_all_dns(now);
        }
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
        let key = (flow.client, flow.server);
        self.udp.remove(&id);
        self.udp_keys.remove(&key);
        up.udp_close(id);
    }
}
