//! Events: what the engine reports to the user interface (every block, and optionally every allowed flow).

use crate::inspect::peek::RequestPeek;
use crate::verdict::{Action, Reason, RuleRef};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The transport a verdict applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// A TCP connection.
    Tcp,
    /// A UDP flow (other than DNS).
    Udp,
    /// A DNS query (over UDP or TCP).
    Dns,
    /// An ICMP or ICMPv6 message.
    Icmp,
}

/// One decision about one flow or DNS query, as shown in the block log, or (action `error`) an upstream failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Allowed or blocked.
    pub action: Action,
    /// Transport.
    pub protocol: Protocol,
    /// The client (phone-side) address and port.
    pub src: SocketAddr,
    /// The destination address and port the client asked for.
    pub dst: SocketAddr,
    /// The host name involved, if known (DNS question, SNI, Host header or a name mapped from DNS answers).
    pub host: Option<String>,
    /// Why.
    pub reason: Reason,
    /// The deciding list rule, if any.
    pub rule: Option<RuleRef>,
    /// The app (Linux/Android UID) that owns the flow, if the platform could tell.
    pub uid: Option<u32>,
    /// With the payload peek on: what a refused plain-HTTP request tried to send (bounded, redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peek: Option<RequestPeek>,
    /// For action `error`: what failed, e.g. "Connection refused (os error 111)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A summary of identical blocks or errors (same action, protocol, source address, destination, host, reason and app)
    /// folded within a few seconds of the first, which was reported on its own: it stands for this many of them,
    /// and `time_ms` is the last one's. Absent on ordinary events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<u64>,
}
