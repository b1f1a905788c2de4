//! The state machine of a QUIC flow before it is opened, and the table of such flows.
//!
//! ```text
//!  first datagram opens as a client Initial, address not decided
//!    |
//!    v
//!  Holding -- ClientHello names an allowed host (or none, allowed by address) --> opened (a `udp` flow)
//!    |
//!    +-- names a blocked host, uninspectable, over bounds, time up --> Refused{until} -- quiet until then --> forgotten
//! ```
//!
//! Edges, and what takes them (all in `engine::quic_hold`):
//! - new → `Holding`: `hold_quic_datagram` ([`QuicFlows::start_hold`]).
//! - `Holding` → opened: `release_quic_hold` with an allowing verdict ([`QuicFlows::open`]): the flow leaves the
//!   table with its held datagrams, which go upstream.
//! - `Holding` → `Refused`: `release_quic_hold` with a blocking verdict ([`QuicFlows::refuse`]): the held bytes are
//!   dropped; a refused flow keeps only when it may be forgotten.
//! - `Refused` → forgotten: a datagram after `until` ([`QuicFlows::refresh_refusal`]), or the refusal that would
//!   expire first when the refusals are at their bound.
//!
//! Datagrams held, the assembler's progress and a refusal's extension are data, not transitions. The one transition
//! within the table goes through `StateMachine::set` (`engine::state_machine`), which checks it against the drawn edges
//! in debug builds and logs it.

use crate::engine::budget::Client;
use crate::engine::state_machine::StateMachine;
use crate::engine::{FlowId, FlowKey};
use crate::inspect::quic::ClientHelloAssembler;
use crate::verdict::{BlockReason, Verdict};
use std::collections::HashMap;
use std::time::Instant;

/// A QUIC flow waiting for its ClientHello: what is held, and what judges it if the ClientHello names no host.
#[derive(Debug)]
pub(crate) struct Hold {
    /// Tells this hold from a later one of the same key (its timer carries it).
    pub(crate) id: FlowId,
    /// The first IP packet, quoted by the ICMP error if the flow is refused after a timeout.
    pub(crate) first_packet: Vec<u8>,
    /// Held payloads, in arrival order.
    pub(crate) datagrams: Vec<Vec<u8>>,
    /// Their total size.
    pub(crate) held_bytes: usize,
    /// The ClientHello as read from the Initials so far.
    pub(crate) assembler: ClientHelloAssembler,
    /// The verdict by address, used if the ClientHello is complete but names no host.
    pub(crate) fallback: Verdict,
    /// A name DNS mapped to the address, if any.
    pub(crate) mapped_host: Option<String>,
    /// When the ClientHello must be complete.
    pub(crate) deadline: Instant,
    /// Whose budget the flow will count in once opened (see `budget`).
    pub(crate) budget: Client,
}

/// How a hold ends, and so whether the flow opens or is refused.
#[derive(Debug)]
pub(crate) enum Release {
    /// The ClientHello named a host, judged to this verdict.
    Named(Verdict, String),
    /// The ClientHello named none, or the datagrams turned out not to be QUIC: the verdict by address decides.
    ByAddress,
    /// The Initials could not be read as the server would read them, in bounds and in time: refused.
    Uninspectable,
}

impl Release {
    /// Whether `hold` ends refused (`Holding` → `Refused`) rather than opened.
    pub(crate) fn blocks(&self, hold: &Hold) -> bool {
        match self {
            Release::Named(verdict, _) => verdict.is_block(),
            Release::ByAddress => hold.fallback.is_block(),
            Release::Uninspectable => true,
        }
    }

    /// The verdict the flow is reported with, and the host it names, given the hold's `fallback` and
    /// `mapped_host`.
    pub(crate) fn verdict(self, fallback: Verdict, mapped_host: Option<String>) -> (Verdict, Option<String>) {
        match self {
            Release::Named(verdict, name) => (verdict, Some(name)),
            Release::ByAddress => (fallback, mapped_host),
            Release::Uninspectable => (Verdict::block(BlockReason::Uninspectable), None),
        }
    }
}

/// Where a QUIC flow that is not open is (see the module docs for the diagram).
#[derive(Debug)]
pub(crate) enum QuicFlow {
    /// Its datagrams are held until the ClientHello names the server.
    Holding(Box<Hold>),
    /// Refused: its later datagrams are refused too, without a new event, while it stays active.
    Refused {
        /// When it may be forgotten (extended by each new datagram).
        until: Instant,
    },
}

impl StateMachine for QuicFlow {
    const KIND: &'static str = "quic";

    fn name(&self) -> &'static str {
        match self {
            QuicFlow::Holding(_) => "Holding",
            QuicFlow::Refused { .. } => "Refused",
        }
    }

    fn allows(&self, next: &Self) -> bool {
        matches!((self, next), (QuicFlow::Holding(_), QuicFlow::Refused { .. }))
    }
}

/// QUIC flows not opened, by key: held ones and refused ones. Held flows count toward the UDP flow cap (see
/// [`QuicFlows::holding`]); refused ones hold no socket and do not, and are bounded on their own: at the bound the
/// refusal that would expire first is forgotten, which only means that flow's next datagram is held and judged
/// again.
#[derive(Debug, Default)]
pub(crate) struct QuicFlows {
    flows: HashMap<FlowKey, QuicFlow>,
    /// How many of `flows` are `Holding`.
    holding: usize,
}

impl QuicFlows {
    /// Number of flows held.
    pub(crate) fn holding(&self) -> usize {
        self.holding
    }

    /// Number of refusals remembered.
    pub(crate) fn refused(&self) -> usize {
        self.flows.len() - self.holding
    }

    /// The hold of `key`, if the flow is held.
    pub(crate) fn hold_mut(&mut self, key: &FlowKey) -> Option<&mut Hold> {
        match self.flows.get_mut(key) {
            Some(QuicFlow::Holding(hold)) => Some(hold),
            _ => None,
        }
    }

    /// Whether `key` is a refused flow at `now`; if so its refusal is extended to `extend_to`. A refusal that has
    /// expired is forgotten.
    pub(crate) fn refresh_refusal(&mut self, key: &FlowKey, now: Instant, extend_to: Instant) -> bool {
        match self.flows.get_mut(key) {
            Some(QuicFlow::Refused { until }) if *until > now => {
                *until = extend_to;
                true
            }
            Some(QuicFlow::Refused { .. }) => {
                self.flows.remove(key);
                false
            }
            Some(QuicFlow::Holding(_)) | None => false,
        }
    }

    /// Starts holding the new flow `key` (one the table does not have).
    pub(crate) fn start_hold(&mut self, key: FlowKey, hold: Box<Hold>) {
        log::trace!("quic {} -> {}: Holding", key.0, key.1);
        let held_before = matches!(self.flows.insert(key, QuicFlow::Holding(hold)), Some(QuicFlow::Holding(_)));
        debug_assert!(!held_before, "quic {} -> {}: held twice", key.0, key.1);
        if !held_before {
            self.holding += 1;
        }
    }

    /// Ends the hold of `key` to open the flow: it leaves the table, with what was held.
    pub(crate) fn open(&mut self, key: &FlowKey) -> Option<Box<Hold>> {
        if !matches!(self.flows.get(key), Some(QuicFlow::Holding(_))) {
            return None;
        }
        let Some(QuicFlow::Holding(hold)) = self.flows.remove(key) else {
            return None;
        };
        self.holding -= 1;
        log::trace!("quic {} -> {}: Holding -> opened", key.0, key.1);
        Some(hold)
    }

    /// Refuses the held flow `key` until `until`: `Holding` → `Refused`, handing back what was held. At most `cap`
    /// refusals are kept: expired ones are forgotten first, then the one that would expire first.
    pub(crate) fn refuse(&mut self, key: FlowKey, now: Instant, until: Instant, cap: usize) -> Option<Box<Hold>> {
        if !matches!(self.flows.get(&key), Some(QuicFlow::Holding(_))) {
            return None;
        }
        if self.refused() >= cap {
            self.flows.retain(|_, flow| !matches!(flow, QuicFlow::Refused { until: at } if *at <= now));
        }
        if self.refused() >= cap {
            let first_to_expire = self
                .flows
                .iter()
                .filter_map(|(&k, flow)| match flow {
                    QuicFlow::Refused { until } => Some((k, *until)),
                    QuicFlow::Holding(_) => None,
                })
                .min_by_key(|&(_, until)| until)
                .map(|(k, _)| k);
            if let Some(k) = first_to_expire {
                self.flows.remove(&k);
            }
        }
        let flow = self.flows.get_mut(&key)?;
        match flow.set(QuicFlow::Refused { until }, format_args!("{} -> {}", key.0, key.1)) {
            QuicFlow::Holding(hold) => {
                self.holding -= 1;
                Some(hold)
            }
            QuicFlow::Refused { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::BlockReason;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn key(port: u16) -> FlowKey {
        (SocketAddr::from(([10, 0, 0, 2], port)), SocketAddr::from(([192, 0, 2, 1], 443)))
    }

    fn hold(id: u64, at: Instant) -> Box<Hold> {
        Box::new(Hold {
            id: FlowId(id),
            first_packet: vec![0x45; 40],
            datagrams: vec![vec![0xc0; 1200]],
            held_bytes: 1200,
            assembler: ClientHelloAssembler::new(),
            fallback: Verdict::block(BlockReason::IpCidr),
            mapped_host: Some("mapped.example".into()),
            deadline: at,
            budget: Client::Address(SocketAddr::from(([10, 0, 0, 2], 0)).ip()),
        })
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn exactly_the_drawn_edge_is_allowed() {
        let now = Instant::now();
        let one_of_each = || [QuicFlow::Holding(hold(1, now)), QuicFlow::Refused { until: now }];
        for from in one_of_each() {
            for to in one_of_each() {
                let drawn = (from.name(), to.name()) == ("Holding", "Refused");
                assert_eq!(from.allows(&to), drawn, "{} -> {}", from.name(), to.name());
            }
        }
    }

    #[test]
    fn a_held_flow_is_found_and_counted_as_held() {
        let (now, mut flows) = (Instant::now(), QuicFlows::default());
        flows.start_hold(key(1), hold(1, now));
        assert_eq!((flows.holding(), flows.refused()), (1, 0));
        let held = flows.hold_mut(&key(1)).expect("held");
        held.datagrams.push(vec![1; 10]);
        held.held_bytes += 10;
        assert_eq!(
            flows.hold_mut(&key(1)).map(|h| (h.id, h.datagrams.len(), h.held_bytes)),
            Some((FlowId(1), 2, 1210))
        );
        assert!(flows.hold_mut(&key(2)).is_none());
        assert!(!flows.refresh_refusal(&key(1), now, now + secs(30)), "a held flow is not refused");
        assert_eq!(flows.holding(), 1, "and stays held");
    }

    #[test]
    fn an_opened_flow_leaves_the_table_with_what_was_held() {
        let (now, mut flows) = (Instant::now(), QuicFlows::default());
        flows.start_hold(key(1), hold(1, now));
        let opened = flows.open(&key(1)).expect("was held");
        assert_eq!((opened.datagrams.len(), opened.mapped_host.as_deref()), (1, Some("mapped.example")));
        assert_eq!((flows.holding(), flows.refused()), (0, 0));
        assert!(flows.open(&key(1)).is_none() && flows.hold_mut(&key(1)).is_none());
    }

    #[test]
    fn a_refused_flow_keeps_only_its_expiry_and_hands_back_the_hold() {
        let (now, mut flows) = (Instant::now(), QuicFlows::default());
        flows.start_hold(key(1), hold(1, now));
        let dropped = flows.refuse(key(1), now, now + secs(30), 8).expect("was held");
        assert_eq!(dropped.first_packet.len(), 40, "the ICMP refusal can quote the first packet");
        assert_eq!((flows.holding(), flows.refused()), (0, 1));
        assert!(flows.hold_mut(&key(1)).is_none() && flows.open(&key(1)).is_none(), "a refused flow holds nothing");
        assert!(flows.refuse(key(1), now, now + secs(30), 8).is_none(), "refused once");
        assert!(matches!(flows.flows.get(&key(1)), Some(QuicFlow::Refused { until }) if *until == now + secs(30)));
    }

    #[test]
    fn a_refusal_is_extended_by_each_datagram_and_forgotten_once_quiet() {
        let (now, mut flows) = (Instant::now(), QuicFlows::default());
        flows.start_hold(key(1), hold(1, now));
        flows.refuse(key(1), now, now + secs(30), 8);
        assert!(flows.refresh_refusal(&key(1), now + secs(20), now + secs(50)));
        assert!(flows.refresh_refusal(&key(1), now + secs(40), now + secs(70)), "extended to 50 s");
        assert!(!flows.refresh_refusal(&key(1), now + secs(70), now + secs(100)), "quiet until it expired");
        assert_eq!(flows.refused(), 0, "forgotten");
        assert!(!flows.refresh_refusal(&key(2), now, now + secs(30)), "never refused");
    }

    #[test]
    fn refusals_are_bounded_forgetting_expired_ones_then_the_first_to_expire() {
        let (now, mut flows) = (Instant::now(), QuicFlows::default());
        for port in 1..=3 {
            flows.start_hold(key(port), hold(u64::from(port), now));
            flows.refuse(key(port), now, now + secs(u64::from(port) * 10), 3);
        }
        flows.start_hold(key(9), hold(9, now));
        assert_eq!((flows.holding(), flows.refused()), (1, 3));
        // At the bound with none expired: the one that expires first (port 1) goes.
        flows.start_hold(key(4), hold(4, now));
        flows.refuse(key(4), now, now + secs(40), 3);
        assert_eq!((flows.holding(), flows.refused()), (1, 3), "the held flow is never forgotten for a refusal");
        assert!(!flows.refresh_refusal(&key(1), now, now + secs(60)));
        assert!(flows.refresh_refusal(&key(2), now, now + secs(20)));
        // At the bound at 35 s, with ports 2 and 3 expired (at 20 and 30 s): both are forgotten, none else.
        flows.start_hold(key(5), hold(5, now));
        flows.refuse(key(5), now + secs(35), now + secs(60), 3);
        assert_eq!(flows.refused(), 2, "ports 4 and 5");
        assert!(!flows.refresh_refusal(&key(3), now + secs(35), now + secs(60)), "expired, forgotten");
        assert!(flows.refresh_refusal(&key(4), now + secs(35), now + secs(60)), "not expired, kept");
        assert!(flows.hold_mut(&key(9)).is_some());
    }

    #[test]
    fn a_hold_ends_refused_by_a_blocking_name_its_address_verdict_or_when_uninspectable() {
        let now = Instant::now();
        let (by_blocked_address, mut by_allowed_address) = (hold(1, now), hold(2, now));
        by_allowed_address.fallback = Verdict::no_match();
        let named = |verdict| Release::Named(verdict, "named.example".to_owned());
        let cases = [
            (named(Verdict::block(BlockReason::QuicSni)), &by_allowed_address, true),
            (named(Verdict::no_match()), &by_blocked_address, false),
            (Release::ByAddress, &by_blocked_address, true),
            (Release::ByAddress, &by_allowed_address, false),
            (Release::Uninspectable, &by_allowed_address, true),
        ];
        for (release, held, blocks) in cases {
            assert_eq!(release.blocks(held), blocks, "{release:?}");
        }
    }

    #[test]
    fn a_released_flow_is_reported_with_its_name_or_else_its_address_verdict_and_mapped_host() {
        let (fallback, mapped) = (Verdict::block(BlockReason::IpCidr), Some("mapped.example".to_owned()));
        let named =
            Release::Named(Verdict::no_match(), "named.example".into()).verdict(fallback.clone(), mapped.clone());
        assert_eq!(named, (Verdict::no_match(), Some("named.example".into())));
        assert_eq!(Release::ByAddress.verdict(fallback.clone(), mapped.clone()), (fallback.clone(), mapped.clone()));
        let uninspectable = Release::Uninspectable.verdict(fallback, mapped);
        assert_eq!(uninspectable, (Verdict::block(BlockReason::Uninspectable), None));
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "no transition Refused -> Holding")]
    fn a_transition_the_machine_lacks_is_caught_in_debug_builds() {
        let now = Instant::now();
        QuicFlow::Refused { until: now }.set(QuicFlow::Holding(hold(1, now)), "a flow");
    }

    #[cfg(not(debug_assertions))]
    #[test]
    fn a_transition_the_machine_lacks_does_not_panic_in_release_builds() {
        let now = Instant::now();
        let mut state = QuicFlow::Refused { until: now };
        let left = state.set(QuicFlow::Holding(hold(1, now)), "a flow");
        assert_eq!((left.name(), state.name()), ("Refused", "Holding"));
    }
}
