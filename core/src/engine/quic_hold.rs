//! QUIC flows: a new UDP flow to port 443 is held until its client Initial packets name the server.
//!
//! The first datagram of a UDP flow is normally judged by address alone. For QUIC the server name is readable
//! from the client's Initial packets ([`crate::inspect::quic`]), so a new flow to port 443 whose address is not
//! already decided (by a CIDR rule) is held: its datagrams are buffered, nothing goes upstream, and each one is fed
//! to a [`ClientHelloAssembler`]. As soon as the ClientHello is complete the flow is judged by its SNI like a TLS
//! flow over TCP: a blocked name is refused with ICMP port unreachable (reason `quic_sni`) and the held datagrams
//! are dropped, so the server never receives one; an allowed name opens the upstream socket and sends the held
//! datagrams in order. A refused flow is remembered while it stays active (for
//! [`EngineConfig::udp_idle_timeout`](super::EngineConfig::udp_idle_timeout) after its last datagram): its later
//! datagrams — retransmitted Initials, the client's CONNECTION_CLOSE, which carry no ClientHello to judge — are
//! refused too, without a new event, so none of them can reach the server by a timeout. If the datagrams are not QUIC, the ClientHello carries no name, the hold outgrows its bounds
//! or [`EngineConfig::sniff_timeout`](super::EngineConfig::sniff_timeout) passes first, the flow is decided by
//! address as any UDP flow would have been.

use super::private_dns::DOT_PORT;
use super::reply::Unreachable;
use super::timers::Timer;
use super::{AddressVerdict, Engine, FlowId, FlowKey, Upstream};
use crate::event::Protocol;
use crate::inspect::quic::{ClientHelloAssembler, QuicScan, VERSION_1, VERSION_2};
use crate::verdict::{Reason, Verdict};
use std::net::SocketAddr;
use std::time::Instant;

/// The port QUIC (HTTP/3) flows are held on.
const QUIC_PORT: u16 = 443;
/// Most datagrams held per flow. A ClientHello needs one or two Initial packets; clients coalesce or send a few
/// more (0-RTT) before an answer.
const MAX_HELD_DATAGRAMS: usize = 8;
/// Most payload bytes held per flow.
const MAX_HELD_BYTES: usize = 16 * 1024;

/// A UDP flow waiting for its ClientHello.
#[derive(Debug)]
pub(crate) struct QuicHold {
    id: FlowId,
    /// The first IP packet, quoted by the ICMP error if the flow is refused after a timeout.
    first_packet: Vec<u8>,
    /// Held payloads, in arrival order.
    datagrams: Vec<Vec<u8>>,
    held_bytes: usize,
    assembler: ClientHelloAssembler,
    /// The verdict by address, used unless the ClientHello names a host.
    fallback: Verdict,
    /// A name DNS mapped to the address, if any.
    mapped_host: Option<String>,
    deadline: Instant,
    /// The flow was refused: its datagrams are refused until then (extended by each new one).
    refused_until: Option<Instant>,
}

/// Whether a datagram can be a QUIC v1/v2 long-header packet (cheap check before holding a flow).
fn looks_like_quic_initial(payload: &[u8]) -> bool {
    match payload {
        [first, a, b, c, d, ..] => {
            first & 0xc0 == 0xc0 && matches!(u32::from_be_bytes([*a, *b, *c, *d]), VERSION_1 | VERSION_2)
        }
        _ => false,
    }
}

impl Engine {
    /// Takes a datagram of a flow that is being held, or starts holding a new QUIC flow. Returns false when the
    /// datagram is not for a QUIC hold (the caller judges it as plain UDP).
    pub(super) fn hold_quic_datagram(
        &mut self,
        now: Instant,
        packet: &[u8],
        client: SocketAddr,
        server: SocketAddr,
        payload: &[u8],
        up: &mut impl Upstream,
    ) -> bool {
        let key = (client, server);
        if let Some(hold) = self.quic_holds.get_mut(&key) {
            match hold.refused_until {
                Some(until) if until > now => {
                    hold.refused_until = Some(now + self.config.udp_idle_timeout);
                    self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
                    return true;
                }
                Some(_) => {
                    self.quic_holds.remove(&key);
                }
                None => {}
            }
        }
        if !self.quic_holds.contains_key(&key) {
            let doq = server.port() == DOT_PORT && self.private_dns_is_set();
            if (server.port() != QUIC_PORT && !doq) || !looks_like_quic_initial(payload) {
                return false;
            }
            let (fallback, mapped_host) = match self.address_verdict(now, server.ip()) {
                // DNS over QUIC is refused unless its ClientHello names the Private DNS server.
                _ if doq => (Verdict::block(Reason::DnsOverTls), None),
                // A CIDR rule decides regardless of the name: leave it to the plain UDP path.
                AddressVerdict::Decided(_) => return false,
                AddressVerdict::MappedBlocked(verdict, host) => (verdict, Some(host)),
                AddressVerdict::Shared(host) => (Verdict::no_match(), Some(host)),
                AddressVerdict::Unknown(host) => (Verdict::no_match(), host),
            };
            if self.udp_table_full(now, up) {
                return false;
            }
            let id = self.new_flow_id();
            let deadline = now + self.config.sniff_timeout;
            self.timers.arm(deadline, Timer::QuicHold(id));
            let hold = QuicHold {
                id,
                first_packet: packet.to_vec(),
                datagrams: Vec::new(),
                held_bytes: 0,
                assembler: ClientHelloAssembler::new(),
                fallback,
                mapped_host,
                deadline,
                refused_until: None,
            };
            self.quic_holds.insert(key, hold);
        }
        let Some(hold) = self.quic_holds.get_mut(&key) else {
            return false;
        };
        hold.datagrams.push(payload.to_vec());
        hold.held_bytes += payload.len();
        let over_bounds = hold.datagrams.len() >= MAX_HELD_DATAGRAMS || hold.held_bytes >= MAX_HELD_BYTES;
        match hold.assembler.push_datagram(payload) {
            QuicScan::Sni(name) => {
                let verdict = self
                    .private_dns_verdict(now, server, Some(&name))
                    .unwrap_or_else(|| self.name_verdict(&name, Reason::QuicSni));
                self.release_quic_hold(now, key, packet, verdict, Some(name), up);
            }
            QuicScan::NeedMore if !over_bounds => {}
            QuicScan::NeedMore | QuicScan::NoSni | QuicScan::NotQuic => {
                self.release_quic_hold_by_address(now, key, packet, up);
            }
        }
        true
    }

    /// A hold's deadline passed: decide by address.
    pub(super) fn on_quic_hold_deadline(&mut self, now: Instant, id: FlowId, up: &mut impl Upstream) {
        let Some((&key, hold)) = self.quic_holds.iter().find(|(_, h)| h.id == id) else {
            return;
        };
        if let Some(until) = hold.refused_until {
            if until > now {
                self.timers.arm(until, Timer::QuicHold(id));
            } else {
                self.quic_holds.remove(&key);
            }
            return;
        }
        if hold.deadline > now {
            return;
        }
        let packet = hold.first_packet.clone();
        self.release_quic_hold_by_address(now, key, &packet, up);
    }

    fn release_quic_hold_by_address(&mut self, now: Instant, key: FlowKey, packet: &[u8], up: &mut impl Upstream) {
        let Some(hold) = self.quic_holds.get_mut(&key) else {
            return;
        };
        let verdict = std::mem::replace(&mut hold.fallback, Verdict::no_match());
        let host = hold.mapped_host.take();
        self.release_quic_hold(now, key, packet, verdict, host, up);
    }

    /// Ends a hold: refuses the flow (dropping what was held) or opens it and sends the held datagrams in order.
    /// `packet` is the IP packet an ICMP refusal quotes.
    fn release_quic_hold(
        &mut self,
        now: Instant,
        key: FlowKey,
        packet: &[u8],
        verdict: Verdict,
        host: Option<String>,
        up: &mut impl Upstream,
    ) {
        let Some(mut hold) = self.quic_holds.remove(&key) else {
            return;
        };
        let (client, server) = key;
        self.report(now, Protocol::Udp, client, server, host.as_deref(), &verdict);
        if verdict.is_block() {
            self.refuse_with_icmp(packet, client.ip(), server.ip(), Unreachable::Port);
            // Remember the refusal (without the held bytes) so the flow's later datagrams are refused too.
            let until = now + self.config.udp_idle_timeout;
            hold.datagrams = Vec::new();
            hold.first_packet = Vec::new();
            hold.assembler = ClientHelloAssembler::new();
            hold.refused_until = Some(until);
            self.timers.arm(until, Timer::QuicHold(hold.id));
            self.quic_holds.insert(key, hold);
            return;
        }
        let held = hold.datagrams.iter().map(Vec::as_slice);
        self.open_udp_flow(now, packet, key, host.as_deref(), held, up);
    }
}
