//! QUIC flows: a new UDP flow whose first datagram is a QUIC client Initial is held until the Initials name the
//! server.
//!
//! The first datagram of a UDP flow is normally judged by address alone. For QUIC the server name is readable
//! from the client's Initial packets ([`crate::inspect::quic`]), so a new flow (to any port: HTTP/3 is not bound
//! to 443) whose first datagram looks like a v1/v2 client Initial and whose address is not already decided (by a
//! CIDR rule) is held: its datagrams are buffered, nothing goes upstream, and each one is fed to a
//! [`ClientHelloAssembler`]. As soon as the ClientHello is complete the flow is judged by its SNI like a TLS flow
//! over TCP: a blocked name is refused with ICMP port unreachable (reason `quic_sni`) and the held datagrams are
//! dropped, so the server never receives one; an allowed name opens the upstream socket and sends the held
//! datagrams in order. A refused flow is remembered while it stays active (for
//! [`EngineConfig::udp_idle_timeout`](super::EngineConfig::udp_idle_timeout) after its last datagram): its later
//! datagrams — retransmitted Initials, the client's CONNECTION_CLOSE, which carry no ClientHello to judge — are
//! refused too, without a new event, so none of them can reach the server by a timeout. Refused flows do not
//! count toward the UDP flow cap.
//!
//! Fail closed: once an Initial has opened, the flow is QUIC, and only a readable ClientHello lets it through.
//! If the Initials are ambiguous ([`QuicScan::Uninspectable`]), the hold outgrows its bounds, or
//! [`EngineConfig::sniff_timeout`](super::EngineConfig::sniff_timeout) passes before the ClientHello is complete,
//! the flow is refused (reason `uninspectable`): the held datagrams may name a blocked host we could not read,
//! and a refused QUIC flow costs the client little (browsers fall back to TCP, where the SNI is read). A complete
//! ClientHello without a name, or a first datagram that does not open as an Initial, is decided by address as any
//! UDP flow would have been. Once a flow is open, a client Initial of another connection than the one judged (or
//! on a flow that was not QUIC) is dropped (`udp`): it would start a connection no one inspected.
//!
//! A flow's state before it opens (`Holding`, then opened or `Refused`) and the table of such flows are in
//! `quic_hold::state`.

mod state;

pub(crate) use state::QuicFlows;

use super::budget::{Owner, Table};
use super::packet::UdpInbound;
use super::reply::Unreachable;
use super::timers::Timer;
use super::udp::{UdpOpening, DOQ_PORT};
use super::{AddressVerdict, Engine, FlowId, FlowKey, OwnerLookup};
use crate::event::Protocol;
use crate::inspect::quic::{ClientHelloAssembler, QuicScan, VERSION_1, VERSION_2};
use crate::verdict::{BlockReason, Verdict};
use state::{Hold, Release};
use std::time::Instant;

/// Most datagrams held per flow. A ClientHello needs one or two Initial packets; clients coalesce or send a few
/// more (0-RTT) before an answer.
const MAX_HELD_DATAGRAMS: usize = 8;
/// Most payload bytes held per flow.
const MAX_HELD_BYTES: usize = 16 * 1024;

/// Whether a datagram can start with a QUIC v1/v2 client Initial: a long header with the fixed bit, a known
/// version and the Initial type bits (0b00 in v1, 0b01 in v2). A cheap check before holding a flow on any port.
pub(super) fn looks_like_quic_initial(payload: &[u8]) -> bool {
    match payload {
        [first, a, b, c, d, ..] if first & 0xc0 == 0xc0 => match u32::from_be_bytes([*a, *b, *c, *d]) {
            VERSION_1 => first & 0x30 == 0x00,
            VERSION_2 => first & 0x30 == 0x10,
            _ => false,
        },
        _ => false,
    }
}

impl Engine {
    /// Takes a datagram of a flow that is being held, or starts holding a new QUIC flow. Returns false when the
    /// datagram is not for a QUIC hold (the caller judges it as plain UDP). `owner`: the flow's owner, asked at most
    /// once (see `budget`).
    pub(super) fn hold_quic_datagram(
        &mut self,
        now: Instant,
        datagram: &UdpInbound<'_>,
        owner: &mut Owner,
        owners: &mut impl OwnerLookup,
    ) -> bool {
        let UdpInbound { packet, client, server, payload } = *datagram;
        let key = datagram.key();
        if self.quic.refresh_refusal(&key, now, now + self.config.udp_idle_timeout) {
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
            return true;
        }
        if self.quic.hold_mut(&key).is_none() {
            // DNS over QUIC is held only to let the user's Private DNS server through (its ClientHello names it);
            // without one it is refused on the plain path when DNS over TLS is.
            let doq = server.port() == DOQ_PORT && self.private_dns_is_set();
            let doq_refused = server.port() == DOQ_PORT && !doq && self.config.block_dns_over_tls;
            if doq_refused || !looks_like_quic_initial(payload) {
                return false;
            }
            let (fallback, mapped_host) = match self.address_verdict(now, server.ip()) {
                // DNS over QUIC is refused unless its ClientHello names the Private DNS server.
                _ if doq => (Verdict::block(BlockReason::DnsOverTls), None),
                // A CIDR rule decides regardless of the name: leave it to the plain UDP path.
                AddressVerdict::Decided(_) => return false,
                AddressVerdict::MappedBlocked(verdict, host) => (verdict, Some(host)),
                AddressVerdict::Shared(host) => (Verdict::no_match(), Some(host)),
                AddressVerdict::Unknown(host) => (Verdict::no_match(), host),
            };
            let budget = self.budget_key(owner, self.flows_crowded(Table::Udp), Protocol::Udp, key, owners);
            if self.udp_table_full(now, budget).is_some() {
                return false;
            }
            let id = self.new_flow_id();
            let deadline = now + self.config.sniff_timeout;
            self.timers.arm(deadline, Timer::QuicHold(key, id));
            let hold = Hold {
                id,
                first_packet: packet.to_vec(),
                datagrams: Vec::new(),
                held_bytes: 0,
                assembler: ClientHelloAssembler::new(),
                fallback,
                mapped_host,
                deadline,
                budget,
            };
            self.quic.start_hold(key, Box::new(hold));
        }
        let Some(hold) = self.quic.hold_mut(&key) else {
            return false;
        };
        hold.datagrams.push(payload.to_vec());
        hold.held_bytes += payload.len();
        let over_bounds = hold.datagrams.len() >= MAX_HELD_DATAGRAMS || hold.held_bytes >= MAX_HELD_BYTES;
        match hold.assembler.push_datagram(payload) {
            QuicScan::Sni(name) => {
                let verdict = self
                    .private_dns_verdict(now, server, Some(&name))
                    .unwrap_or_else(|| self.name_verdict(&name, BlockReason::QuicSni));
                self.release_quic_hold(now, key, Some(packet), Release::Named(verdict, name));
            }
            QuicScan::NeedMore if !over_bounds => {}
            QuicScan::NoSni | QuicScan::NotQuic => self.release_quic_hold(now, key, Some(packet), Release::ByAddress),
            QuicScan::NeedMore | QuicScan::Uninspectable => {
                self.release_quic_hold(now, key, Some(packet), Release::Uninspectable);
            }
        }
        true
    }

    /// A hold's deadline passed with the ClientHello still incomplete: refuse (see the module docs).
    pub(super) fn on_quic_hold_deadline(&mut self, now: Instant, key: FlowKey, id: FlowId) {
        if self.quic.hold_mut(&key).is_some_and(|hold| hold.id == id && hold.deadline <= now) {
            self.release_quic_hold(now, key, None, Release::Uninspectable);
        }
    }

    /// Ends a hold: refuses the flow (dropping what was held; its later datagrams are refused too) or opens it and
    /// sends the held datagrams in order. An ICMP refusal quotes `packet`, or the flow's first packet if `None`.
    fn release_quic_hold(&mut self, now: Instant, key: FlowKey, packet: Option<&[u8]>, release: Release) {
        let Some(held) = self.quic.hold_mut(&key) else {
            return;
        };
        let blocks = release.blocks(held);
        let hold = if blocks {
            let until = now + self.config.udp_idle_timeout;
            self.quic.refuse(key, now, until, self.config.max_udp_flows)
        } else {
            self.quic.open(&key)
        };
        let Some(hold) = hold else {
            return;
        };
        let Hold { first_packet, datagrams, fallback, mapped_host, budget, .. } = *hold;
        let (verdict, host) = release.verdict(fallback, mapped_host);
        let packet = packet.unwrap_or(&first_packet);
        let (client, server) = key;
        self.report(now, Protocol::Udp, client, server, host.as_deref(), &verdict);
        if blocks {
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
            return;
        }
        self.open_udp_flow(now, UdpOpening { packet, key, budget, host: host.as_deref() }, datagrams);
    }
}
