//! What the engine asks of the driver's sockets: [`SocketAction`]s, queued in order, which the driver has
//! performed with [`Engine::perform_socket_actions`] after each call into the engine.
//!
//! The engine never calls the driver to open, send on or close a socket: it queues an action and goes on as if it
//! succeeded. Each failure comes back through the entry point the variant names; until then the flow waits,
//! exactly as it would for a slow network. A connected TCP stream whose bytes are ready to move (the client's
//! bytes judged and the socket writable, or room for the server's and the socket readable) is queued the same
//! way, as a [`Direction`]; [`Engine::perform_socket_actions`] moves them by lending the driver's stream to
//! [`Engine::upstream_writable`] or [`Engine::upstream_readable`], so the splice copies straight between
//! smoltcp's buffers and the kernel's.

use super::{Engine, FlowId, Transfer};
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

/// One socket operation for the driver to perform. Flow ids are never reused, so an action for a flow the
/// engine has since forgotten is harmless (the driver finds no socket, or closes one no one reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAction {
    /// Start a TCP connect to `dst` (protected, so it bypasses the tun); report the end with
    /// [`Engine::on_tcp_connected`], a failure to even start included.
    TcpConnect {
        /// The flow the socket belongs to.
        flow: FlowId,
        /// Where to connect.
        dst: SocketAddr,
    },
    /// Half-close the connection (FIN after everything written so far).
    TcpShutdownWrite {
        /// The flow whose socket to shut down for writing.
        flow: FlowId,
    },
    /// Close the connection and forget the flow; `reset` aborts it with a RST.
    TcpClose {
        /// The flow whose socket to close.
        flow: FlowId,
        /// Abort with RST rather than a graceful close.
        reset: bool,
    },
    /// Open a UDP socket for datagrams to `dst` and report the result with [`Engine::on_udp_opened`]. Answers
    /// arrive through [`Engine::on_udp_datagram_from`]. The socket is connected (only `dst` may answer), except
    /// for broadcast and multicast destinations, whose answers come from the hosts that reply: there it is
    /// unconnected and may broadcast.
    UdpOpen {
        /// The flow the socket belongs to.
        flow: FlowId,
        /// Where its datagrams go.
        dst: SocketAddr,
        /// For a flow to a multicast group, the phone's socket that sends to it. A driver that can join the
        /// group upstream does so when this port is the group's own (an mDNS querier on 5353 is answered by
        /// multicast, RFC 6762 §6), and hands what is sent to the group to [`Engine::on_udp_group_datagram`].
        multicast_client: Option<SocketAddr>,
    },
    /// Send one datagram, now or, for a driver that sends a batch's datagrams together, soon after in order. A
    /// failure now is reported with [`Engine::on_udp_send_failed`], a later one with
    /// [`Engine::note_udp_send_failures`].
    UdpSend {
        /// The flow whose socket sends it.
        flow: FlowId,
        /// The datagram's payload.
        datagram: Vec<u8>,
    },
    /// Close the UDP socket and forget the flow.
    UdpClose {
        /// The flow whose socket to close.
        flow: FlowId,
    },
}

/// The driver's side of the socket actions: it performs them and lends its connected TCP streams while they run.
/// Every socket must be protected (Android `VpnService.protect`, Linux `SO_MARK`) before it connects, so its
/// traffic bypasses the tun. Reads and writes are non-blocking: the driver tells how each went as a [`Transfer`].
pub trait SocketDriver {
    /// Performs one action; the error if it failed at once.
    fn perform(&mut self, action: SocketAction) -> io::Result<()>;
    /// Writes bytes to a flow's connected stream; [`Transfer::Moved`] says how many it took.
    fn write(&mut self, flow: FlowId, data: &[u8]) -> Transfer;
    /// Reads bytes from a flow's connected stream; [`Transfer::Moved`]`(0)` is the end of the stream.
    fn read(&mut self, flow: FlowId, buf: &mut [u8]) -> Transfer;
}

/// Which way a flow's bytes are ready to move through its upstream stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Direction {
    /// The client's bytes (or a DNS query) to the server: the stream is written.
    ToServer,
    /// The server's bytes to the client (or a DNS answer): the stream is read.
    ToClient,
}

impl Engine {
    /// The next socket operation to perform, oldest first (tests look at the queue without performing it).
    pub(super) fn poll_socket_action(&mut self) -> Option<SocketAction> {
        self.socket_actions.pop_front()
    }

    /// Performs every queued socket action, oldest first, with the driver's [`SocketDriver::perform`], and tells
    /// the engine how each connect, open and send went (through [`Engine::on_tcp_connected`],
    /// [`Engine::on_udp_opened`] and [`Engine::on_udp_send_failed`]); then moves the bytes ready to move on
    /// connected streams through [`SocketDriver::write`] and [`SocketDriver::read`], and runs the stack over what
    /// moved. What that queues is performed too, until nothing is left. Call it after every call into the engine:
    /// until an action is performed, its flow makes no progress. It is the one way actions are drained: the
    /// driver, the engine tests, the fuzz harness and the benchmark all use it.
    pub fn perform_socket_actions(&mut self, now: Instant, driver: &mut impl SocketDriver) {
        loop {
            while let Some(action) = self.poll_socket_action() {
                let report = Report::of(&action);
                match (report, driver.perform(action)) {
                    (Report::Connect(flow), Err(e)) => self.on_tcp_connected(now, flow, Err(e)),
                    (Report::Open(flow), result) => self.on_udp_opened(now, flow, result),
                    (Report::Send(flow), Err(e)) => self.on_udp_send_failed(now, flow, e),
                    _ => {}
                }
            }
            if self.transfers.is_empty() {
                return;
            }
            let mut transfers = std::mem::take(&mut self.transfers);
            // A flow serviced twice since the last drain asked twice: its stream moves once.
            transfers.sort_unstable();
            transfers.dedup();
            for &(flow, direction) in &transfers {
                match direction {
                    Direction::ToServer => self.upstream_writable(now, flow, |data| driver.write(flow, data)),
                    Direction::ToClient => self.upstream_readable(now, flow, |buf| driver.read(flow, buf)),
                }
            }
            // Let smoltcp send what was read and the windows writes opened; service what moved.
            self.poll(now);
            if self.transfers.is_empty() {
                transfers.clear();
                // Keep the allocation for the next drain.
                self.transfers = transfers;
            }
        }
    }

    /// Queues a flow's stream to be written (its client's bytes may pass) or read (its client has room).
    pub(super) fn ask_transfer(&mut self, flow: FlowId, direction: Direction) {
        self.transfers.push((flow, direction));
    }

    /// Queues a socket operation for the driver.
    pub(super) fn ask(&mut self, action: SocketAction) {
        self.socket_actions.push_back(action);
    }
}

/// What the engine must be told after an action is performed.
enum Report {
    /// A connect that fails at once ([`Engine::on_tcp_connected`]; a later end is the driver's to report).
    Connect(FlowId),
    /// Whether the UDP socket opened ([`Engine::on_udp_opened`]).
    Open(FlowId),
    /// A datagram that could not be sent ([`Engine::on_udp_send_failed`]).
    Send(FlowId),
    /// Nothing: shutting down and closing cannot fail in a way the flow could act on.
    Nothing,
}

impl Report {
    fn of(action: &SocketAction) -> Report {
        match *action {
            SocketAction::TcpConnect { flow, .. } => Report::Connect(flow),
            SocketAction::UdpOpen { flow, .. } => Report::Open(flow),
            SocketAction::UdpSend { flow, .. } => Report::Send(flow),
            SocketAction::TcpShutdownWrite { .. } | SocketAction::TcpClose { .. } | SocketAction::UdpClose { .. } => {
                Report::Nothing
            }
        }
    }
}
