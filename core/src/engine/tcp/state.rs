//! The state machine of one TCP flow: where it is in its life, and the data that exists only there.
//!
//! ```text
//!  new connection (SYN), judged by its address and port
//!    |
//!    +-- port 53 -------------------------------------> Dns
//!    |
//!    +-- decided by address, or a server-first port
//!    |      v
//!    |   Dialing ------------ connected --------------+
//!    |   (SYN|ACK held)                               v
//!    |                                          Forwarding -- later bytes or request blocked --> Refused
//!    |                                           |    ^                                             ^
//!    |                               server reset     |                                             |
//!    |                                           v    |                                             |
//!    |                                      Resetting |                                             |
//!    +-- otherwise                                    |                                             |
//!           v                                         |                                             |
//!        Sniffing -- first bytes allow --> Connecting +                                             |
//!           |  |                          (connected)                                               |
//!           |  +-- first bytes block (or a client silent on a client-first port closes) -------------+
//!           |
//!           +-- blocked plain-HTTP request, peek on --> Peeking -- read, or time up --> Answered
//! ```
//!
//! Edges, and what takes them (all in `engine::tcp` and `engine::tcp::peek`):
//! - SYN → `Sniffing` | `Dialing` | `Dns`: `open_tcp_flow`, by the address verdict and the port.
//! - `Sniffing` → `Connecting`: `finish_sniff`, the first bytes (or, at the deadline on a port where the server
//!   may speak first, the address) allow the flow; the upstream is dialled.
//! - `Sniffing` → `Refused`: `finish_sniff` blocks, or `sniff` finds a client closed silently on a client-first
//!   port.
//! - `Sniffing` → `Peeking`: `finish_sniff` blocks a plain-HTTP request with the payload peek on (`start_peek`).
//! - `Dialing` | `Connecting` → `Forwarding`: `on_tcp_connected` with success.
//! - `Forwarding` → `Refused`: `judge_late_bytes` (a client dialled before it spoke names a blocked host) or
//!   `judge_next_request` (a later HTTP request does).
//! - `Forwarding` → `Resetting`: `end_reset_flow`, the server reset the connection (the phone is reset at once if
//!   bytes it sent were lost or it had finished, else when it closes, sends or the linger ends).
//! - `Peeking` → `Answered`: `answer_peek`, the request is read, the client stopped sending, or time is up.
//!
//! A flow leaves the machine from any state when its smoltcp socket has closed (`retire_if_closed`); failures
//! (connect refused, an upstream reset outside `Forwarding`, eviction) abort the phone's side and leave the state
//! as it was until then. Changes within a state (a new deadline, `Sniffing::started`, the upstream's readiness, the
//! DNS pending count, the client gate opening) are data, not transitions. Every transition goes through
//! `StateMachine::set` (`engine::state_machine`), which checks it against the drawn edges in debug builds and logs
//! it.

use super::peek::PeekState;
use crate::engine::state_machine::StateMachine;
use crate::verdict::Verdict;
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

/// Whether a connected flow passes the client's bytes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientGate {
    /// The client's first bytes were judged (or an explicit allow rule decided): bytes flow.
    Open,
    /// Dialled before the client sent anything: its bytes wait until judged; the server's pass.
    Shut,
    /// Shut, and the client has started sending: it has `SNIFF_COMPLETE_TIMEOUT` to complete its head.
    Reading,
}

/// The upstream socket of a flow that asked the driver for one, and what is known of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UpstreamSocket {
    /// The socket may have bytes to read.
    pub(crate) readable: bool,
    /// The socket may accept bytes.
    pub(crate) writable: bool,
    /// The upstream has closed its sending side.
    pub(crate) eof: bool,
    /// The client's FIN has been passed upstream.
    pub(crate) fin_forwarded: bool,
}

impl UpstreamSocket {
    /// Whether both directions finished, so the socket may be closed without a RST.
    pub(crate) fn finished(&self) -> bool {
        self.eof && self.fin_forwarded
    }
}

/// Where a TCP flow is in its life (see the module docs for the diagram).
#[derive(Debug)]
pub(crate) enum TcpState {
    /// Handshake done (or under way) locally; waiting for the client's first bytes (SNI, Host).
    Sniffing {
        /// When the wait (for the first byte, or for the rest of the head) ends.
        deadline: Option<Instant>,
        /// The client has sent at least one byte (or its handshake is late): the shorter wait runs.
        started: bool,
        /// The verdict if the first bytes name no host (set when the address alone says block).
        fallback: Option<Verdict>,
    },
    /// Judged by address; upstream connect under way; the client's SYN|ACK is held until it succeeds.
    Dialing {
        /// When the connect times out.
        deadline: Option<Instant>,
        /// Whether the client's bytes will pass once connected.
        gate: ClientGate,
        /// The socket, once the driver took the connect.
        upstream: Option<UpstreamSocket>,
    },
    /// Sniffing allowed the flow; upstream connect under way; client bytes wait in smoltcp.
    Connecting {
        /// When the connect times out.
        deadline: Option<Instant>,
        /// Whether the client's bytes will pass once connected.
        gate: ClientGate,
        /// The socket, once the driver took the connect.
        upstream: Option<UpstreamSocket>,
    },
    /// Bytes flow both ways (the client's once the gate is open).
    Forwarding {
        /// When the phone must have completed its handshake, or a client dialled before it spoke its head.
        deadline: Option<Instant>,
        /// Whether the client's bytes pass upstream yet.
        gate: ClientGate,
        /// The connected socket.
        upstream: UpstreamSocket,
    },
    /// DNS over TCP, answered through the DNS forwarder.
    Dns {
        /// Queries awaiting answers.
        pending: u16,
    },
    /// A blocked plain-HTTP request being read for the payload peek (see `tcp::peek`).
    Peeking {
        /// When the client's time to finish its request is up.
        deadline: Option<Instant>,
        /// What was read so far, and the held block event.
        peek: Box<PeekState>,
    },
    /// The peeked request was answered `403 Forbidden`; the connection is closing.
    Answered {
        /// When a connection still not closed is reset.
        deadline: Option<Instant>,
    },
    /// The server reset the connection: the phone gets what was read, then its side is reset (see
    /// `Engine::linger_after_reset`).
    Resetting {
        /// When a phone that neither closed nor sent is reset and the reset reported.
        deadline: Option<Instant>,
        /// The socket that was reset (closed when the flow retires).
        upstream: UpstreamSocket,
        /// What the stream said, for the report.
        error: String,
    },
    /// Refused after its bytes were judged; the RST goes out and the flow is retired.
    Refused {
        /// The upstream socket if one was connected (it is reset when the flow retires).
        upstream: Option<UpstreamSocket>,
    },
}

impl TcpState {
    /// The state of a flow that waits for its first bytes, with its `fallback` verdict.
    pub(crate) fn sniffing(fallback: Option<Verdict>) -> Self {
        TcpState::Sniffing { deadline: None, started: false, fallback }
    }

    /// The state's deadline, for setting or clearing; `None` in states without a timer.
    pub(crate) fn deadline_mut(&mut self) -> Option<&mut Option<Instant>> {
        match self {
            TcpState::Sniffing { deadline, .. }
            | TcpState::Dialing { deadline, .. }
            | TcpState::Connecting { deadline, .. }
            | TcpState::Forwarding { deadline, .. }
            | TcpState::Peeking { deadline, .. }
            | TcpState::Resetting { deadline, .. }
            | TcpState::Answered { deadline } => Some(deadline),
            TcpState::Dns { .. } | TcpState::Refused { .. } => None,
        }
    }

    /// The upstream socket, in the states that have asked for one.
    pub(crate) fn upstream(&self) -> Option<&UpstreamSocket> {
        match self {
            TcpState::Dialing { upstream, .. }
            | TcpState::Connecting { upstream, .. }
            | TcpState::Refused { upstream } => upstream.as_ref(),
            TcpState::Forwarding { upstream, .. } | TcpState::Resetting { upstream, .. } => Some(upstream),
            TcpState::Sniffing { .. } | TcpState::Dns { .. } | TcpState::Peeking { .. } | TcpState::Answered { .. } => {
                None
            }
        }
    }

    /// The upstream socket, for updating what is known of it.
    pub(crate) fn upstream_mut(&mut self) -> Option<&mut UpstreamSocket> {
        match self {
            TcpState::Dialing { upstream, .. }
            | TcpState::Connecting { upstream, .. }
            | TcpState::Refused { upstream } => upstream.as_mut(),
            TcpState::Forwarding { upstream, .. } | TcpState::Resetting { upstream, .. } => Some(upstream),
            TcpState::Sniffing { .. } | TcpState::Dns { .. } | TcpState::Peeking { .. } | TcpState::Answered { .. } => {
                None
            }
        }
    }

    /// Whether the upstream connect is under way (its failure is a `connect_failed`, not an `upstream_reset`).
    pub(crate) fn is_connecting(&self) -> bool {
        matches!(self, TcpState::Dialing { .. } | TcpState::Connecting { .. })
    }

    /// The verdict if the first bytes name no host: only a sniffing flow may have one.
    pub(crate) fn fallback(&self) -> Option<&Verdict> {
        match self {
            TcpState::Sniffing { fallback, .. } => fallback.as_ref(),
            _ => None,
        }
    }
}

impl StateMachine for TcpState {
    const KIND: &'static str = "tcp";

    fn name(&self) -> &'static str {
        match self {
            TcpState::Sniffing { .. } => "Sniffing",
            TcpState::Dialing { .. } => "Dialing",
            TcpState::Connecting { .. } => "Connecting",
            TcpState::Forwarding { .. } => "Forwarding",
            TcpState::Dns { .. } => "Dns",
            TcpState::Peeking { .. } => "Peeking",
            TcpState::Answered { .. } => "Answered",
            TcpState::Resetting { .. } => "Resetting",
            TcpState::Refused { .. } => "Refused",
        }
    }

    fn allows(&self, next: &Self) -> bool {
        use TcpState::*;
        matches!(
            (self, next),
            (Sniffing { .. }, Connecting { .. } | Refused { .. } | Peeking { .. })
                | (Dialing { .. } | Connecting { .. }, Forwarding { .. })
                | (Forwarding { .. }, Refused { .. } | Resetting { .. })
                | (Peeking { .. }, Answered { .. })
        )
    }
}

/// A flow as logs name it: client → server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowName(pub(crate) SocketAddr, pub(crate) SocketAddr);

impl fmt::Display for FlowName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::BlockReason;
    use std::time::Duration;

    fn flow() -> FlowName {
        FlowName(SocketAddr::from(([10, 0, 0, 2], 40000)), SocketAddr::from(([192, 0, 2, 1], 443)))
    }

    fn connected() -> UpstreamSocket {
        UpstreamSocket { readable: true, writable: true, ..UpstreamSocket::default() }
    }

    /// One state of each kind, in the order of the enum.
    fn one_of_each() -> Vec<TcpState> {
        let at = Some(Instant::now());
        vec![
            TcpState::sniffing(Some(Verdict::block(BlockReason::IpCidr))),
            TcpState::Dialing { deadline: at, gate: ClientGate::Open, upstream: Some(UpstreamSocket::default()) },
            TcpState::Connecting { deadline: at, gate: ClientGate::Shut, upstream: None },
            TcpState::Forwarding { deadline: None, gate: ClientGate::Open, upstream: connected() },
            TcpState::Dns { pending: 0 },
            TcpState::Peeking { deadline: at, peek: Box::new(PeekState::new(None)) },
            TcpState::Answered { deadline: at },
            TcpState::Refused { upstream: Some(connected()) },
            TcpState::Resetting { deadline: at, upstream: connected(), error: String::new() },
        ]
    }

    /// The machine's edges, by state name (the module docs' diagram).
    const EDGES: [(&str, &str); 8] = [
        ("Sniffing", "Connecting"),
        ("Sniffing", "Refused"),
        ("Sniffing", "Peeking"),
        ("Dialing", "Forwarding"),
        ("Connecting", "Forwarding"),
        ("Forwarding", "Refused"),
        ("Forwarding", "Resetting"),
        ("Peeking", "Answered"),
    ];

    #[test]
    fn exactly_the_drawn_edges_are_allowed() {
        for from in one_of_each() {
            for to in one_of_each() {
                let drawn = EDGES.contains(&(from.name(), to.name()));
                assert_eq!(from.allows(&to), drawn, "{} -> {}", from.name(), to.name());
            }
        }
    }

    #[test]
    fn every_allowed_transition_moves_and_hands_back_the_state_left() {
        for (from, to) in EDGES {
            let mut state = one_of_each().into_iter().find(|s| s.name() == from).expect("a state of that name");
            let next = one_of_each().into_iter().find(|s| s.name() == to).expect("a state of that name");
            let left = state.set(next, flow());
            assert_eq!((left.name(), state.name()), (from, to));
        }
    }

    #[test]
    fn a_sniffing_flow_is_dialled_then_forwards_then_may_be_refused_keeping_its_upstream() {
        let mut state = TcpState::sniffing(None);
        assert_eq!(state.upstream(), None, "no upstream socket while sniffing");
        state.set(TcpState::Connecting { deadline: None, gate: ClientGate::Open, upstream: None }, flow());
        assert!(state.is_connecting());
        if let Some(upstream) = state.upstream_mut() {
            upstream.readable = true;
        }
        assert_eq!(state.upstream(), None, "no socket until the driver took the connect");
        let left =
            state.set(TcpState::Forwarding { deadline: None, gate: ClientGate::Open, upstream: connected() }, flow());
        assert!(matches!(left, TcpState::Connecting { gate: ClientGate::Open, .. }));
        assert!(!state.is_connecting());
        if let Some(upstream) = state.upstream_mut() {
            upstream.eof = true;
            upstream.fin_forwarded = true;
        }
        assert!(state.upstream().is_some_and(UpstreamSocket::finished));
        let upstream = state.upstream().copied();
        state.set(TcpState::Refused { upstream }, flow());
        assert!(state.upstream().is_some_and(UpstreamSocket::finished), "the refused flow still closes its socket");
    }

    #[test]
    fn the_peek_leaves_with_the_peeking_state() {
        let mut state = TcpState::Peeking { deadline: None, peek: Box::new(PeekState::new(None)) };
        let left = state.set(TcpState::Answered { deadline: None }, flow());
        assert!(matches!(left, TcpState::Peeking { .. }));
        assert!(matches!(state, TcpState::Answered { .. }));
    }

    #[test]
    fn only_a_sniffing_flow_has_a_fallback_verdict() {
        for state in one_of_each() {
            assert_eq!(state.fallback().is_some(), state.name() == "Sniffing", "{}", state.name());
        }
    }

    #[test]
    fn states_with_a_timer_have_a_deadline_and_the_others_none() {
        let later = Instant::now() + Duration::from_secs(1);
        for mut state in one_of_each() {
            let timed = !matches!(state, TcpState::Dns { .. } | TcpState::Refused { .. });
            match state.deadline_mut() {
                Some(deadline) => *deadline = Some(later),
                None => assert!(!timed, "{} has a timer", state.name()),
            }
            assert_eq!(state.deadline_mut().map(|d| *d), timed.then_some(Some(later)), "{}", state.name());
        }
    }

    #[test]
    fn the_upstream_socket_is_found_in_the_states_that_can_have_one() {
        for state in one_of_each() {
            let has = matches!(state.name(), "Dialing" | "Forwarding" | "Refused" | "Resetting");
            assert_eq!(state.upstream().is_some(), has, "{}", state.name());
        }
    }

    #[test]
    fn an_upstream_closes_gracefully_only_when_both_directions_finished() {
        let eof = UpstreamSocket { eof: true, ..UpstreamSocket::default() };
        let fin = UpstreamSocket { fin_forwarded: true, ..UpstreamSocket::default() };
        assert!(!eof.finished() && !fin.finished() && !UpstreamSocket::default().finished());
        assert!(UpstreamSocket { eof: true, fin_forwarded: true, ..connected() }.finished());
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "no transition Forwarding -> Sniffing")]
    fn a_transition_the_machine_lacks_is_caught_in_debug_builds() {
        let mut state = TcpState::Forwarding { deadline: None, gate: ClientGate::Open, upstream: connected() };
        state.set(TcpState::sniffing(None), flow());
    }

    #[cfg(not(debug_assertions))]
    #[test]
    fn a_transition_the_machine_lacks_does_not_panic_in_release_builds() {
        let mut state = TcpState::Forwarding { deadline: None, gate: ClientGate::Open, upstream: connected() };
        let left = state.set(TcpState::sniffing(None), flow());
        assert_eq!((left.name(), state.name()), ("Forwarding", "Sniffing"));
    }

    #[test]
    fn a_flow_is_named_client_to_server() {
        assert_eq!(flow().to_string(), "10.0.0.2:40000 -> 192.0.2.1:443");
        let v6 = FlowName("[fd00::2]:40000".parse().unwrap(), "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(v6.to_string(), "[fd00::2]:40000 -> [2001:db8::1]:443");
    }
}
