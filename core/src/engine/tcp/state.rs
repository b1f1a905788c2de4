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
//!    |                                                ^                                             ^
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
//! - `Peeking` → `Answered`: `answer_peek`, the request is read, the client stopped sending, or time is up.
//!
//! A flow leaves the machine from any state when its smoltcp socket has closed (`retire_if_closed`); failures
//! (connect refused, upstream reset, eviction) abort the phone's side and leave the state as it was until then.
//! Changes within a state (a new deadline, `Sniffing::started`, the upstream's readiness, the DNS pending
//! count, the client gate opening) are data, not transitions. Every transition goes through
//! [`TcpState::set`], which checks it against [`TcpState::allows`] in debug builds and logs it.

use super::peek::PeekState;
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

    /// The state's name, for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            TcpState::Sniffing { .. } => "Sniffing",
            TcpState::Dialing { .. } => "Dialing",
            TcpState::Connecting { .. } => "Connecting",
            TcpState::Forwarding { .. } => "Forwarding",
            TcpState::Dns { .. } => "Dns",
            TcpState::Peeking { .. } => "Peeking",
            TcpState::Answered { .. } => "Answered",
            TcpState::Refused { .. } => "Refused",
        }
    }

    /// Whether the machine has an edge from this state to `next` (see the module docs).
    pub(crate) fn allows(&self, next: &TcpState) -> bool {
        use TcpState::*;
        matches!(
            (self, next),
            (Sniffing { .. }, Connecting { .. } | Refused { .. } | Peeking { .. })
                | (Dialing { .. } | Connecting { .. }, Forwarding { .. })
                | (Forwarding { .. }, Refused { .. })
                | (Peeking { .. }, Answered { .. })
        )
    }

    /// Moves to `next`, returning the state left (with the data only it had). A transition the machine does not
    /// allow is a bug in the engine, never the result of a packet: caught in debug builds, logged in all.
    pub(crate) fn set(&mut self, next: TcpState, flow: FlowName) -> TcpState {
        debug_assert!(self.allows(&next), "tcp {flow}: no transition {} -> {}", self.name(), next.name());
        if self.allows(&next) {
            log::trace!("tcp {flow}: {} -> {}", self.name(), next.name());
        } else {
            log::warn!("tcp {flow}: unexpected transition {} -> {}", self.name(), next.name());
        }
        std::mem::replace(self, next)
    }

    /// The state's deadline, for setting or clearing; `None` in states without a timer.
    pub(crate) fn deadline_mut(&mut self) -> Option<&mut Option<Instant>> {
        match self {
            TcpState::Sniffing { deadline, .. }
            | TcpState::Dialing { deadline, .. }
            | TcpState::Connecting { deadline, .. }
            | TcpState::Forwarding { deadline, .. }
            | TcpState::Peeking { deadline, .. }
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
            TcpState::Forwarding { upstream, .. } => Some(upstream),
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
            TcpState::Forwarding { upstream, .. } => Some(upstream),
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

/// A flow as logs name it: client → server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowName(pub(crate) SocketAddr, pub(crate) SocketAddr);

impl fmt::Display for FlowName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.0, self.1)
    }
}
