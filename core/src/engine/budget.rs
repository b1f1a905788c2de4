//! Per-client budgets: one client cannot take the flow tables or the TCP buffer memory from the others.
//!
//! A client is the source address of the phone-side packets: a LAN host behind a gateway, or on a phone the
//! phone itself (all its apps share the tun address; UIDs are not known when a flow is created, so they are not
//! the key). Each client is guaranteed [`EngineConfig::client_share_percent`] of each flow cap:
//! - while a table has room, any client may use it (a phone alone can still open every flow);
//! - at the cap, a client holding less than its share takes room from the client most over its share, that
//!   client's least recently active flow first (`flow_evicted`), whatever its phase: a flood of half-open
//!   connections cannot keep others out;
//! - a client at or over its share only makes room by closing its own flows quiet long enough (as the caps
//!   always did); otherwise its new flow is refused (RST / ICMP), reason `client_limit` while other clients
//!   hold flows too, `flow_limit` when it is alone.
//!
//! TCP buffer memory: a client whose flows' smoltcp buffers add up to [`EngineConfig::client_tcp_buffer_budget`]
//! gets small buffers ([`SMALL_TCP_BUFFER`]) for its further flows, so a client holding thousands of flows with
//! full buffers (a tiny receive window) is bounded to the budget plus the small buffers of its share. (The
//! upstream sockets' buffers are the kernel's, bounded by its own limits.) Pending DNS queries are bounded per
//! client address in `dns` ([`super::dns::MAX_PENDING_PER_CLIENT`]).
//!
//! [`EngineConfig::client_share_percent`]: super::EngineConfig::client_share_percent
//! [`EngineConfig::client_tcp_buffer_budget`]: super::EngineConfig::client_tcp_buffer_budget

use super::{tcp, udp, Engine, Upstream};
use crate::verdict::BlockReason;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Send and receive buffer size of a client's TCP flows once its buffers reach its budget.
pub(super) const SMALL_TCP_BUFFER: usize = 16 * 1024;

/// Which flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Tcp,
    Udp,
}

/// What one client holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// TCP flows open.
    pub(crate) tcp: usize,
    /// UDP flows open.
    pub(crate) udp: usize,
    /// Bytes of smoltcp socket buffers (send + receive) of its TCP flows.
    pub(crate) tcp_buffers: usize,
}

impl Usage {
    fn flows(&self, table: Table) -> usize {
        match table {
            Table::Tcp => self.tcp,
            Table::Udp => self.udp,
        }
    }

    fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// What every client holds.
#[derive(Debug, Default)]
pub(crate) struct ClientBudgets {
    clients: HashMap<IpAddr, Usage>,
}

impl ClientBudgets {
    /// What `client` holds now.
    pub(crate) fn usage(&self, client: IpAddr) -> Usage {
        self.clients.get(&client).copied().unwrap_or_default()
    }

    /// A TCP flow with `buffers` bytes of socket buffers opened.
    pub(super) fn add_tcp(&mut self, client: IpAddr, buffers: usize) {
        let usage = self.clients.entry(client).or_default();
        usage.tcp += 1;
        usage.tcp_buffers += buffers;
    }

    /// A TCP flow with `buffers` bytes of socket buffers freed.
    pub(super) fn remove_tcp(&mut self, client: IpAddr, buffers: usize) {
        self.update(client, |usage| {
            usage.tcp = usage.tcp.saturating_sub(1);
            usage.tcp_buffers = usage.tcp_buffers.saturating_sub(buffers);
        });
    }

    /// A UDP flow opened.
    pub(super) fn add_udp(&mut self, client: IpAddr) {
        self.clients.entry(client).or_default().udp += 1;
    }

    /// A UDP flow closed.
    pub(super) fn remove_udp(&mut self, client: IpAddr) {
        self.update(client, |usage| usage.udp = usage.udp.saturating_sub(1));
    }

    fn update(&mut self, client: IpAddr, change: impl FnOnce(&mut Usage)) {
        if let Some(usage) = self.clients.get_mut(&client) {
            change(usage);
            if usage.is_empty() {
                self.clients.remove(&client);
            }
        }
    }

    /// The client other than `except` holding the most flows of `table`, if it holds more than `share`.
    pub(super) fn most_over_share(&self, except: IpAddr, table: Table, share: usize) -> Option<IpAddr> {
        self.clients
            .iter()
            .filter(|&(&ip, usage)| ip != except && usage.flows(table) > share)
            .max_by_key(|(_, usage)| usage.flows(table))
            .map(|(&ip, _)| ip)
    }

    /// Whether a client other than `except` holds flows of `table`.
    pub(super) fn others_hold(&self, except: IpAddr, table: Table) -> bool {
        self.clients.iter().any(|(&ip, usage)| ip != except && usage.flows(table) > 0)
    }
}

impl Engine {
    /// Makes room in the full `table` for a new flow of `client`, or says why it cannot. A client within its share
    /// takes room from the client most over its share, else from any flow quiet long enough (60 s TCP, 15 s UDP);
    /// a client at or over its share only from its own quiet flows. The flow that makes room is closed with a
    /// `flow_evicted` event.
    pub(super) fn make_room(
        &mut self,
        now: Instant,
        client: IpAddr,
        table: Table,
        up: &mut impl Upstream,
    ) -> Option<BlockReason> {
        let (cap, min_idle) = match table {
            Table::Tcp => (self.config.max_tcp_flows, tcp::EVICT_MIN_IDLE),
            Table::Udp => (self.config.max_udp_flows, udp::EVICT_MIN_IDLE),
        };
        let share = share(cap, self.config.client_share_percent);
        let mut evict = |engine: &mut Engine, owner: Option<IpAddr>, idle: Duration| match table {
            Table::Tcp => engine.evict_tcp_flow(now, owner, idle, up),
            Table::Udp => engine.evict_udp_flow(now, owner, idle, up),
        };
        if self.budgets.usage(client).flows(table) < share {
            if let Some(over) = self.budgets.most_over_share(client, table, share) {
                if evict(self, Some(over), Duration::ZERO) {
                    return None;
                }
            }
            return (!evict(self, None, min_idle)).then_some(BlockReason::FlowLimit);
        }
        if evict(self, Some(client), min_idle) {
            return None;
        }
        Some(if self.budgets.others_hold(client, table) { BlockReason::ClientLimit } else { BlockReason::FlowLimit })
    }
}

/// A client's guaranteed share of `cap`: `percent` of it, at least one flow.
pub(super) fn share(cap: usize, percent: u8) -> usize {
    (cap.saturating_mul(usize::from(percent)) / 100).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 111, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 111, 0, 2));

    #[test]
    fn usage_is_counted_and_released() {
        let mut budgets = ClientBudgets::default();
        budgets.add_tcp(A, 100);
        budgets.add_tcp(A, 50);
        budgets.add_udp(A);
        assert_eq!(budgets.usage(A), Usage { tcp: 2, udp: 1, tcp_buffers: 150 });
        budgets.remove_tcp(A, 100);
        budgets.remove_tcp(A, 50);
        budgets.remove_udp(A);
        assert_eq!(budgets.usage(A), Usage::default());
        assert!(budgets.clients.is_empty(), "a client holding nothing is forgotten");
        budgets.remove_udp(B);
        assert!(budgets.clients.is_empty());
    }

    #[test]
    fn the_client_most_over_its_share_is_found() {
        let mut budgets = ClientBudgets::default();
        for _ in 0..5 {
            budgets.add_tcp(A, 1);
        }
        budgets.add_tcp(B, 1);
        assert_eq!(budgets.most_over_share(B, Table::Tcp, 4), Some(A));
        assert_eq!(budgets.most_over_share(B, Table::Tcp, 5), None, "within its share");
        assert_eq!(budgets.most_over_share(A, Table::Tcp, 0), Some(B), "never the asking client itself");
        assert_eq!(budgets.most_over_share(B, Table::Udp, 0), None);
        assert!(budgets.others_hold(B, Table::Tcp) && !budgets.others_hold(B, Table::Udp));
        assert_eq!(share(4096, 25), 1024);
        assert_eq!(share(3, 25), 1);
    }
}
