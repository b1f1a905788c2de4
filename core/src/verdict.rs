//! Verdicts: what was decided about a name, an address or a flow, why, and by which rule.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Whether traffic is let through or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forwarded to its destination.
    Allow,
    /// Refused locally; the destination never sees a packet.
    Block,
    /// Not a verdict: an allowed flow or query failed upstream or was ended by the engine (see the reason and
    /// the event's `error`). The phone was told at once (RST, ICMP, SERVFAIL), never left hanging.
    Error,
}

/// Why a verdict was reached. Stable codes: the UI and the event log show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// The name asked in a DNS query matched a block rule.
    DnsQuery,
    /// A name in the CNAME chain of a DNS answer matched a block rule.
    DnsCname,
    /// The TLS ClientHello's server name matched a block rule.
    TlsSni,
    /// The HTTP request's Host header matched a block rule.
    HttpHost,
    /// The server name in a QUIC client Initial's ClientHello matched a block rule.
    QuicSni,
    /// The user blocked all traffic of the app that owns the flow.
    AppBlocked,
    /// The destination address is inside a blocked address range.
    IpCidr,
    /// The destination address was learnt from DNS answers for a blocked name.
    DnsMappedIp,
    /// DNS-over-TLS (port 853) is refused so that DNS filtering cannot be bypassed.
    DnsOverTls,
    /// The flow is recognisably TLS, HTTP or QUIC but what the server would read as its host cannot be read
    /// reliably (malformed, truncated at the inspection limit, over the parser's limits, QUIC CRYPTO data that
    /// overlaps with different bytes), or a client on a port where clients speak first sent nothing to judge:
    /// refused rather than let through unjudged.
    Uninspectable,
    /// The destination is not a host on the network: loopback, unspecified, link-local, multicast or
    /// broadcast (after mapping `::ffff:a.b.c.d` to `a.b.c.d`). Dialling it would reach the device itself.
    LocalDestination,
    /// Too many concurrent flows; the new one is refused.
    FlowLimit,
    /// The flow table is full and this client (source address) already holds more than its share of it while
    /// other clients hold flows too; the new one is refused (see `engine::budget`).
    ClientLimit,
    /// ICMP echo is not forwarded.
    IcmpUnsupported,
    /// An allow rule matched and wins over every block rule.
    AllowRule,
    /// No rule matched.
    NoMatch,
    /// (Allow) DNS-over-TLS, or DNS over QUIC/HTTP3, to the user's own Private DNS server: let through so the
    /// phone keeps its DNS (DNS-level blocking is off while Private DNS is set; SNI, QUIC and address blocking
    /// still apply).
    PrivateDns,
    /// (Error) The upstream connect failed: refused, unreachable or timed out.
    ConnectFailed,
    /// (Error) An upstream connection failed while forwarding (reset or another socket error).
    UpstreamReset,
    /// (Error) An upstream UDP socket could not be opened or sent on, or the network refused it.
    UdpFailed,
    /// (Error) A forwarded DNS query got no usable answer in time; the phone was answered SERVFAIL.
    DnsFailed,
    /// (Error) The flow table was full: this, the least recently active flow, was closed to make room.
    FlowEvicted,
    /// (Error) The destination's address family (IPv4 or IPv6) has no route upstream: the new connection was
    /// refused at once (RST, ICMP no route), as the kernel refuses it without Hushwall.
    NoRoute,
}

impl Reason {
    /// The stable snake_case code of this reason, as serialised.
    pub fn code(self) -> &'static str {
        match self {
            Reason::DnsQuery => "dns_query",
            Reason::DnsCname => "dns_cname",
            Reason::TlsSni => "tls_sni",
            Reason::HttpHost => "http_host",
            Reason::QuicSni => "quic_sni",
            Reason::AppBlocked => "app_blocked",
            Reason::IpCidr => "ip_cidr",
            Reason::DnsMappedIp => "dns_mapped_ip",
            Reason::DnsOverTls => "dns_over_tls",
            Reason::Uninspectable => "uninspectable",
            Reason::LocalDestination => "local_destination",
            Reason::FlowLimit => "flow_limit",
            Reason::ClientLimit => "client_limit",
            Reason::IcmpUnsupported => "icmp_unsupported",
            Reason::AllowRule => "allow_rule",
            Reason::NoMatch => "no_match",
            Reason::PrivateDns => "private_dns",
            Reason::ConnectFailed => "connect_failed",
            Reason::UpstreamReset => "upstream_reset",
            Reason::UdpFailed => "udp_failed",
            Reason::DnsFailed => "dns_failed",
            Reason::FlowEvicted => "flow_evicted",
            Reason::NoRoute => "no_route",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The list rule that decided a verdict: the list it came from, its line, and the rule as written there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    /// The list's display name: a file path, or `builtin:<file>` for lists shipped in the binary.
    pub list: Arc<str>,
    /// 1-based line number in that list.
    pub line: u32,
    /// The rule in canonical form, e.g. `||tracking.miui.com^`, `*.ad.xiaomi.com`, `203.0.113.0/24`.
    pub rule: Box<str>,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.list, self.line, self.rule)
    }
}

/// A decision with its reason and, where a list rule decided it, that rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Allow or block.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// The deciding rule, if a list rule decided.
    pub rule: Option<RuleRef>,
}

impl Verdict {
    /// An allow verdict because nothing matched.
    pub fn no_match() -> Self {
        Verdict { action: Action::Allow, reason: Reason::NoMatch, rule: None }
    }

    /// A block verdict for `reason` without a list rule (e.g. flow limit).
    pub fn block(reason: Reason) -> Self {
        Verdict { action: Action::Block, reason, rule: None }
    }

    /// True if this verdict refuses the traffic.
    pub fn is_block(&self) -> bool {
        self.action == Action::Block
    }
}
