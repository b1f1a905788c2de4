//! The state machine of one try of a forwarded DNS query, and why a try fails.
//!
//! ```text
//!  start_try, over UDP                      start_try, over TCP
//!    |  (socket opened, query sent)           |  (connect asked for; the length-prefixed query waits)
//!    v                                        v
//!   Udp                                    TcpConnecting -- connected --> TcpExchanging
//!    |                                        |                             |  (query written, answer read)
//!    +-- answer, failure or timeout ----------+-----------------------------+--> the try ends
//! ```
//!
//! A try lives as long as its upstream socket; it ends (and leaves the machine) when its answer is accepted, its socket
//! fails or its time is up ([`TryFailure`]). A UDP answer with TC set ends the try too: the same query is asked again
//! over TCP as a new try on a new socket (`TcpConnecting`), never by a transition of the old one. Writing and reading
//! within `TcpExchanging` are data, not transitions. Every transition goes through `StateMachine::set`
//! (`engine::state_machine`), which checks it against the drawn edges in debug builds and logs it.

use crate::engine::state_machine::StateMachine;
use crate::engine::FlowId;
use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Where a try is, and how it talks to its resolver.
#[derive(Debug)]
pub(crate) enum TryState {
    /// The query went out on a connected UDP socket; its answer is awaited.
    Udp,
    /// DNS over TCP (RFC 7766): the connect is under way.
    TcpConnecting {
        /// The length-prefixed query to write once connected.
        out: Vec<u8>,
    },
    /// DNS over TCP, connected: the query is written and the answer read.
    TcpExchanging {
        /// The length-prefixed query.
        out: Vec<u8>,
        /// How much of `out` the socket took so far.
        written: usize,
        /// The length-prefixed answer as read so far.
        input: Vec<u8>,
    },
}

impl TryState {
    /// The state of a TCP try whose connect was asked for, with its length-prefixed query.
    pub(crate) fn tcp_connecting(out: Vec<u8>) -> Self {
        TryState::TcpConnecting { out }
    }

    /// Whether the try talks to its resolver over TCP (its socket is a TCP one).
    pub(crate) fn is_tcp(&self) -> bool {
        !matches!(self, TryState::Udp)
    }

    /// The TCP connect succeeded: `TcpConnecting` moves to `TcpExchanging` with its query, nothing written or
    /// read yet. False, and nothing changes, in any other state (a report for a try that is not connecting).
    pub(crate) fn connected(&mut self, name: TryName) -> bool {
        let TryState::TcpConnecting { out } = self else {
            return false;
        };
        let out = std::mem::take(out);
        self.set(TryState::TcpExchanging { out, written: 0, input: Vec::new() }, name);
        true
    }
}

impl StateMachine for TryState {
    const KIND: &'static str = "dns try";

    fn name(&self) -> &'static str {
        match self {
            TryState::Udp => "Udp",
            TryState::TcpConnecting { .. } => "TcpConnecting",
            TryState::TcpExchanging { .. } => "TcpExchanging",
        }
    }

    fn allows(&self, next: &Self) -> bool {
        matches!((self, next), (TryState::TcpConnecting { .. }, TryState::TcpExchanging { .. }))
    }
}

/// A try as logs name it: its socket's flow id and its resolver.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TryName(pub(crate) FlowId, pub(crate) SocketAddr);

impl fmt::Display for TryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", self.0 .0, self.1)
    }
}

/// Why a try ended without an answer. Its text is the detail of the `dns_failed` event if no try is left.
#[derive(Debug)]
pub(crate) enum TryFailure {
    /// The driver could not open, connect, send on, read or write the try's socket (or the network reported an
    /// error on it, e.g. ICMP port unreachable).
    Socket(io::Error),
    /// The resolver's TCP connection took none of the query.
    WriteZero,
    /// The resolver closed its TCP connection before the whole answer came.
    ClosedBeforeAnswer,
    /// No answer came in time.
    Timeout {
        /// The try was over TCP.
        tcp: bool,
    },
    /// A whole answer came over TCP, but its id or question is not the query's.
    MismatchedAnswer,
}

impl fmt::Display for TryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryFailure::Socket(error) => error.fmt(f),
            TryFailure::WriteZero => f.write_str("write zero"),
            TryFailure::ClosedBeforeAnswer => f.write_str("closed before answering"),
            TryFailure::Timeout { tcp: false } => f.write_str("no answer from it in time"),
            TryFailure::Timeout { tcp: true } => f.write_str("no answer from it over TCP in time"),
            TryFailure::MismatchedAnswer => f.write_str("answer over TCP does not match the query"),
        }
    }
}

impl From<io::Error> for TryFailure {
    fn from(error: io::Error) -> Self {
        TryFailure::Socket(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> TryName {
        TryName(FlowId(7), SocketAddr::from(([192, 0, 2, 53], 53)))
    }

    /// One state of each kind, in the order of the enum.
    fn one_of_each() -> Vec<TryState> {
        vec![
            TryState::Udp,
            TryState::tcp_connecting(vec![0, 1, 9]),
            TryState::TcpExchanging { out: vec![0, 1, 9], written: 1, input: vec![0] },
        ]
    }

    #[test]
    fn exactly_the_drawn_edge_is_allowed() {
        for from in one_of_each() {
            for to in one_of_each() {
                let drawn = (from.name(), to.name()) == ("TcpConnecting", "TcpExchanging");
                assert_eq!(from.allows(&to), drawn, "{} -> {}", from.name(), to.name());
            }
        }
    }

    #[test]
    fn a_connected_tcp_try_keeps_its_query_and_starts_with_nothing_written_or_read() {
        let mut state = TryState::tcp_connecting(vec![0, 3, 1, 2, 3]);
        assert!(state.is_tcp());
        state.connected(name());
        match state {
            TryState::TcpExchanging { out, written, input } => {
                assert_eq!((out, written, input), (vec![0, 3, 1, 2, 3], 0, Vec::new()));
            }
            other => panic!("expected TcpExchanging, got {}", other.name()),
        }
    }

    #[test]
    fn set_hands_back_the_state_left() {
        let mut state = TryState::tcp_connecting(vec![0, 1, 9]);
        let left = state.set(TryState::TcpExchanging { out: Vec::new(), written: 0, input: Vec::new() }, name());
        assert!(matches!(left, TryState::TcpConnecting { out } if out == [0, 1, 9]));
        assert_eq!(state.name(), "TcpExchanging");
    }

    #[test]
    fn only_a_udp_try_is_not_over_tcp() {
        for state in one_of_each() {
            assert_eq!(state.is_tcp(), state.name() != "Udp", "{}", state.name());
        }
    }

    #[test]
    fn failures_read_as_the_events_always_said() {
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let cases = [
            (TryFailure::from(refused), "connection refused"),
            (TryFailure::WriteZero, "write zero"),
            (TryFailure::ClosedBeforeAnswer, "closed before answering"),
            (TryFailure::Timeout { tcp: false }, "no answer from it in time"),
            (TryFailure::Timeout { tcp: true }, "no answer from it over TCP in time"),
            (TryFailure::MismatchedAnswer, "answer over TCP does not match the query"),
        ];
        for (failure, text) in cases {
            assert_eq!(failure.to_string(), text, "{failure:?}");
        }
        // The texts the driver's and the engine's io::Errors had before the failures were typed.
        assert_eq!(TryFailure::WriteZero.to_string(), io::Error::from(io::ErrorKind::WriteZero).to_string());
    }

    #[test]
    fn a_try_is_named_by_its_socket_and_resolver() {
        assert_eq!(name().to_string(), "7 to 192.0.2.53:53");
    }

    #[test]
    fn only_a_connecting_try_connects() {
        for mut state in one_of_each() {
            let before = state.name();
            let connecting = before == "TcpConnecting";
            assert_eq!(state.connected(name()), connecting, "{before}");
            let after = if connecting { "TcpExchanging" } else { before };
            assert_eq!(state.name(), after);
        }
        let mut exchanging = TryState::TcpExchanging { out: vec![0, 1, 9], written: 2, input: vec![0, 5] };
        exchanging.connected(name());
        assert!(
            matches!(exchanging, TryState::TcpExchanging { written: 2, ref input, .. } if input == &[0, 5]),
            "a second report keeps what was written and read"
        );
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "no transition Udp -> TcpConnecting")]
    fn a_transition_the_machine_lacks_is_caught_in_debug_builds() {
        TryState::Udp.set(TryState::tcp_connecting(Vec::new()), name());
    }

    #[cfg(not(debug_assertions))]
    #[test]
    fn a_transition_the_machine_lacks_does_not_panic_in_release_builds() {
        let mut state = TryState::Udp;
        let left = state.set(TryState::tcp_connecting(Vec::new()), name());
        assert_eq!((left.name(), state.name()), ("Udp", "TcpConnecting"));
    }
}
