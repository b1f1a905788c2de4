//! Per-client budgets: one client cannot take the flow tables, the TCP buffer memory or the pending DNS queries
//! from the others.
//!
//! A client ([`Client`]) is the source address of the phone-side packets (a LAN host behind a gateway), or, with
//! [`EngineConfig::budget_by_app`], the app (UID) owning the flow where the platform can tell: on a phone every
//! app shares the tun address, so only the UID tells one app's flows from another's. Each client is guaranteed
//! [`EngineConfig::client_share_percent`] of each flow cap:
//! - while a table has room, any client may use it (a phone alone can still open every flow);
//! - at the cap, a client holding less than its share takes room from the client most over its share (on a tie,
//!   a source address before an app: see below), that client's least recently active flow first
//!   (`flow_evicted`), whatever its phase: a flood of half-open connections cannot keep others out;
//! - a client at or over its share only makes room by closing its own flows quiet long enough (as the caps
//!   always did); otherwise its new flow is refused (RST / ICMP), reason `client_limit` while other clients
//!   hold flows too, `flow_limit` when it is alone. A refusal of a flow counted by app carries its `uid`.
//!
//! Asking the platform who owns a flow costs a sock_diag request (Linux) or a binder call (Android), so a normal
//! day must not pay it: the owner of a new flow or query is asked only once its table holds at least half of
//! what one client may hold ([`crowded`]): half the flow cap (a client alone may fill the table), half a client's
//! pending-DNS bound. Below that nothing can be refused or evicted for a share anyway. Flows and queries created
//! below it count under their source address, as do those whose owner the platform cannot tell (raw sockets, a
//! LAN host). Not one shared "unattributed" key: behind a gateway the address still tells LAN hosts apart, and
//! on a phone the address key is simply one more client holding the oldest flows (at most half the table from
//! before the threshold), over its share at a full table and so the first to give room. A flow's owner is asked
//! at most once: a UID already looked up because some app is blocked ([`Engine::set_blocked_uids`]) is used at
//! any occupancy.
//!
//! TCP buffer memory: a client whose flows' smoltcp buffers add up to [`EngineConfig::client_tcp_buffer_budget`]
//! gets small buffers ([`SMALL_TCP_BUFFER`]) for its further flows, so a client holding thousands of flows with
//! full buffers (a tiny receive window) is bounded to the budget plus the small buffers of its share. (The
//! upstream sockets' buffers are the kernel's, bounded by its own limits.) Pending DNS queries are bounded per
//! client to its share of [`super::dns::MAX_PENDING`], at most [`super::dns::MAX_PENDING_PER_CLIENT`]
//! ([`Engine::pending_dns_share`]).
//!
//! [`EngineConfig::client_share_percent`]: super::EngineConfig::client_share_percent
//! [`EngineConfig::client_tcp_buffer_budget`]: super::EngineConfig::client_tcp_buffer_budget
//! [`EngineConfig::budget_by_app`]: super::EngineConfig::budget_by_app

use super::dns::{MAX_PENDING, MAX_PENDING_PER_CLIENT};
use super::{tcp, udp, Engine, FlowKey, OwnerLookup};
use crate::event::{Event, Protocol};
use crate::verdict::{BlockReason, Verdict};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Send and receive buffer size of a client's TCP flows once its buffers reach its budget.
pub(super) const SMALL_TCP_BUFFER: usize = 16 * 1024;

/// Whose budget a flow or a pending DNS query counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Client {
    /// A source address: a LAN host, or the flows of a phone's apps not attributed to one.
    Address(IpAddr),
    /// An app (Android UID; on Linux the user running the process).
    App(u32),
}

impl Client {
    /// The app's UID, if the client is an app.
    pub(crate) fn uid(self) -> Option<u32> {
        match self {
            Client::Address(_) => None,
            Client::App(uid) => Some(uid),
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Client::Address(ip) => write!(f, "{ip}"),
            Client::App(uid) => write!(f, "uid {uid}"),
        }
    }
}

/// The owner (UID) of one new flow or query, asked of the platform at most once.
#[derive(Debug, Default)]
pub(super) struct Owner {
    /// `Some` once asked: the answer.
    asked: Option<Option<u32>>,
}

impl Owner {
    /// The UID owning the flow from `client` to `server`, asking the platform the first time.
    pub(super) fn uid(
        &mut self,
        protocol: Protocol,
        (client, server): FlowKey,
        owners: &mut impl OwnerLookup,
    ) -> Option<u32> {
        *self.asked.get_or_insert_with(|| owners.owner_uid(protocol, client, server))
    }

    fn asked(&self) -> bool {
        self.asked.is_some()
    }
}

/// Whether a table holding `held` of `limit` (what one client may hold of it) is crowded enough for owners to be
/// asked: at least half.
pub(super) fn crowded(held: usize, limit: usize) -> bool {
    held.saturating_mul(2) >= limit
}

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
    clients: HashMap<Client, Usage>,
}

impl ClientBudgets {
    /// What `client` holds now.
    pub(crate) fn usage(&self, client: Client) -> Usage {
        self.clients.get(&client).copied().unwrap_or_default()
    }

    /// A TCP flow with `buffers` bytes of socket buffers opened.
    pub(super) fn add_tcp(&mut self, client: Client, buffers: usize) {
        let usage = self.clients.entry(client).or_default();
        usage.tcp += 1;
        usage.tcp_buffers += buffers;
    }

    /// A TCP flow with `buffers` bytes of socket buffers freed.
    pub(super) fn remove_tcp(&mut self, client: Client, buffers: usize) {
        self.update(client, |usage| {
            usage.tcp = usage.tcp.saturating_sub(1);
            usage.tcp_buffers = usage.tcp_buffers.saturating_sub(buffers);
        });
    }

    /// A UDP flow opened.
    pub(super) fn add_udp(&mut self, client: Client) {
        self.clients.entry(client).or_default().udp += 1;
    }

    /// A UDP flow closed.
    pub(super) fn remove_udp(&mut self, client: Client) {
        self.update(client, |usage| usage.udp = usage.udp.saturating_sub(1));
    }

    fn update(&mut self, client: Client, change: impl FnOnce(&mut Usage)) {
        if let Some(usage) = self.clients.get_mut(&client) {
            change(usage);
            if usage.is_empty() {
                self.clients.remove(&client);
            }
        }
    }

    /// The client other than `except` holding the most flows of `table`, if it holds more than `share`. Of
    /// clients holding as many, the least in [`Client`]'s order: a source address (whose flows on a phone are the
    /// oldest, from before owners were asked) before an app.
    pub(super) fn most_over_share(&self, except: Client, table: Table, share: usize) -> Option<Client> {
        self.clients
            .iter()
            .filter(|&(&client, usage)| client != except && usage.flows(table) > share)
            .max_by_key(|&(&client, usage)| (usage.flows(table), std::cmp::Reverse(client)))
            .map(|(&client, _)| client)
    }

    /// Whether a client other than `except` holds flows of `table`.
    pub(super) fn others_hold(&self, except: Client, table: Table) -> bool {
        self.clients.iter().any(|(&client, usage)| client != except && usage.flows(table) > 0)
    }
}

impl Engine {
    /// The budget a new flow or DNS query from `client` to `server` counts in: its app if
    /// [`EngineConfig::budget_by_app`] is on and the platform tells the owner, asked only if it was already asked
    /// (`owner`) or the table concerned is `crowded`; else its source address. See the module docs.
    ///
    /// [`EngineConfig::budget_by_app`]: super::EngineConfig::budget_by_app
    pub(super) fn budget_key(
        &self,
        owner: &mut Owner,
        crowded: bool,
        protocol: Protocol,
        (client, server): FlowKey,
        owners: &mut impl OwnerLookup,
    ) -> Client {
        let uid = if self.config.budget_by_app && (crowded || owner.asked()) {
            owner.uid(protocol, (client, server), owners)
        } else {
            None
        };
        uid.map_or(Client::Address(client.ip()), Client::App)
    }

    /// Whether the flow `table` holds at least half its cap (owners of new flows are asked; see the module
    /// docs).
    pub(super) fn flows_crowded(&self, table: Table) -> bool {
        match table {
            Table::Tcp => crowded(self.tcp.len() - self.retiring.len(), self.config.max_tcp_flows),
            Table::Udp => crowded(self.udp.len() + self.quic.holding(), self.config.max_udp_flows),
        }
    }

    /// How many forwarded DNS queries one client may have waiting for answers: its share of
    /// [`MAX_PENDING`], at most [`MAX_PENDING_PER_CLIENT`].
    pub(super) fn pending_dns_share(&self) -> usize {
        share(MAX_PENDING, self.config.client_share_percent).min(MAX_PENDING_PER_CLIENT)
    }

    /// Reports a new flow refused for lack of room (`client_limit`, `flow_limit`), attributed to `client`'s app
    /// if it is counted by app.
    pub(super) fn report_budget_refusal(
        &mut self,
        now: Instant,
        protocol: Protocol,
        (src, dst): FlowKey,
        host: Option<&str>,
        reason: BlockReason,
        client: Client,
    ) {
        let verdict = Verdict::block(reason);
        self.capture_verdict(src, dst, host, &verdict);
        self.stats.blocked += 1;
        let event = self.event(now, protocol, (src, dst), host, verdict.into());
        self.push_folded_event(now, Event { uid: client.uid(), ..event });
    }

    /// Makes room in the full `table` for a new flow of `client`, or says why it cannot. A client within its share
    /// takes room from the client most over its share, else from any flow quiet long enough (60 s TCP, 15 s UDP);
    /// a client at or over its share only from its own quiet flows. The flow that makes room is closed with a
    /// `flow_evicted` event.
    pub(super) fn make_room(&mut self, now: Instant, client: Client, table: Table) -> Option<BlockReason> {
        let (cap, min_idle) = match table {
            Table::Tcp => (self.config.max_tcp_flows, tcp::EVICT_MIN_IDLE),
            Table::Udp => (self.config.max_udp_flows, udp::EVICT_MIN_IDLE),
        };
        let share = share(cap, self.config.client_share_percent);
        let evict = |engine: &mut Engine, owner: Option<Client>, idle: Duration| match table {
            Table::Tcp => engine.evict_tcp_flow(now, owner, idle),
            Table::Udp => engine.evict_udp_flow(now, owner, idle),
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

    const A: Client = Client::Address(IpAddr::V4(std::net::Ipv4Addr::new(10, 111, 0, 1)));
    const B: Client = Client::Address(IpAddr::V4(std::net::Ipv4Addr::new(10, 111, 0, 2)));

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

    #[test]
    fn of_clients_as_far_over_their_share_the_address_gives_room_first() {
        let mut budgets = ClientBudgets::default();
        for _ in 0..3 {
            budgets.add_tcp(Client::App(10_050), 1);
            budgets.add_tcp(A, 1);
            budgets.add_tcp(Client::App(10_040), 1);
        }
        assert_eq!(budgets.most_over_share(B, Table::Tcp, 1), Some(A));
        assert_eq!(budgets.most_over_share(A, Table::Tcp, 1), Some(Client::App(10_040)));
        assert_eq!(Client::App(7).to_string(), "uid 7");
        assert_eq!((Client::App(7).uid(), A.uid()), (Some(7), None));
        assert!(!crowded(1, 4) && crowded(2, 4) && crowded(0, 0));
    }
}
