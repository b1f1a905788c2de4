//! The TCP side of DNS over TCP: a flow to port 53 is answered by the engine's DNS forwarder (`engine::dns`),
//! which reads its queries and hands back its answers through these two methods, never through the flow itself.

use super::TcpState;
use crate::engine::budget::Client;
use crate::engine::{Engine, FlowId, FlowKey};
use smoltcp::socket::tcp::Socket;

/// A query read from a DNS-over-TCP flow.
pub(crate) struct StreamQuery {
    /// The flow's client and server.
    pub(crate) key: FlowKey,
    /// Whose budget the flow counts in.
    pub(crate) budget: Client,
    /// The query with its two-byte length prefix.
    pub(crate) framed: Vec<u8>,
}

impl StreamQuery {
    /// The query without its length prefix.
    pub(crate) fn message(&self) -> &[u8] {
        self.framed.get(2..).unwrap_or_default()
    }
}

impl Engine {
    /// Takes the next complete length-prefixed query from a DNS-over-TCP flow and counts it as awaiting its
    /// answer. `None` until a whole one has arrived; a client that finished sending and has every answer gets
    /// the connection closed.
    pub(crate) fn next_dns_query(&mut self, id: FlowId) -> Option<StreamQuery> {
        let flow = self.tcp.get_mut(&id)?;
        let TcpState::Dns { pending } = &mut flow.state else {
            return None;
        };
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        let mut prefix = [0u8; 2];
        let have = socket.recv_queue();
        if socket.peek_slice(&mut prefix).unwrap_or(0) < 2 {
            if !socket.may_recv() && have == 0 && *pending == 0 {
                socket.close();
            }
            return None;
        }
        // At most 65,535 bytes: the prefix is 16 bits.
        let len = usize::from(u16::from_be_bytes(prefix));
        if have < 2 + len {
            return None;
        }
        let mut framed = vec![0u8; 2 + len];
        if socket.recv_slice(&mut framed).unwrap_or(0) != framed.len() {
            return None;
        }
        *pending = pending.saturating_add(1);
        Some(StreamQuery { key: (flow.client, flow.server), budget: flow.budget, framed })
    }

    /// Sends a DNS message to a DNS-over-TCP flow, length-prefixed, and counts one query fewer awaiting its
    /// answer. Dropped (and counted) if the flow's send buffer has no room for it.
    pub(crate) fn deliver_dns_answer(&mut self, id: FlowId, msg: &[u8]) {
        let Some(flow) = self.tcp.get_mut(&id) else {
            return;
        };
        if let TcpState::Dns { pending } = &mut flow.state {
            *pending = pending.saturating_sub(1);
        }
        let socket = self.stack.sockets.get_mut::<Socket>(flow.handle);
        let framed_len = msg.len() + 2;
        let fits = socket.send_capacity() - socket.send_queue() >= framed_len;
        let Ok(len) = u16::try_from(msg.len()) else {
            return;
        };
        if fits && socket.send_slice(&len.to_be_bytes()).is_ok() && socket.send_slice(msg).is_ok() {
            self.touched.push(id);
        } else {
            self.stats.dropped += 1;
        }
    }
}
