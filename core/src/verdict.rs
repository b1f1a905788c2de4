//! Verdicts: what was decided about a name, an address or a flow, why, and by which rule.
//!
//! Block, allow and error reasons are distinct types ([`BlockReason`], [`AllowReason`], [`ErrorReason`]), so a
//! block cannot carry an error's reason. Each reason's stable code (`dns_query`, `tls_sni`, …) is spelt once, in
//! the declaration below; the JSON event log and the JNI encoding both take it from [`Reason::code`].

use serde::{Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// Whether traffic is let through or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

/// Declares one kind of reason: the enum, each variant's stable code (the only place it is spelt), and
/// `ALL`, every variant, so that tests over all reasons cannot miss one.
macro_rules! reasons {
    ($(#[$attr:meta])* $name:ident { $($(#[$vattr:meta])* $variant:ident = $code:literal,)+ }) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vattr])* $variant,)+
        }

        impl $name {
            /// Every reason of this kind, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable snake_case code, as events carry it.
            pub fn code(self) -> &'static str {
                match self {
                    $($name::$variant => $code,)+
                }
            }
        }
    };
}

reasons! {
    /// Why traffic was refused.
    BlockReason {
        /// The name asked in a DNS query matched a block rule.
        DnsQuery = "dns_query",
        /// A name in the CNAME chain of a DNS answer matched a block rule.
        DnsCname = "dns_cname",
        /// The TLS ClientHello's server name matched a block rule.
        TlsSni = "tls_sni",
        /// The HTTP request's Host header matched a block rule.
        HttpHost = "http_host",
        /// The server name in a QUIC client Initial's ClientHello matched a block rule.
        QuicSni = "quic_sni",
        /// The user blocked all traffic of the app that owns the flow.
        AppBlocked = "app_blocked",
        /// The destination address is inside a blocked address range.
        IpCidr = "ip_cidr",
        /// The destination address was learnt from DNS answers for a blocked name.
        DnsMappedIp = "dns_mapped_ip",
        /// DNS-over-TLS (port 853) is refused so that DNS filtering cannot be bypassed.
        DnsOverTls = "dns_over_tls",
        /// The flow is recognisably TLS, HTTP or QUIC but what the server would read as its host cannot be read
        /// reliably (malformed, truncated at the inspection limit, over the parser's limits, QUIC CRYPTO data that
        /// overlaps with different bytes), or a client on a port where clients speak first sent nothing to judge:
        /// refused rather than let through unjudged.
        Uninspectable = "uninspectable",
        /// The destination is not a host on the network: loopback, unspecified, link-local, multicast or
        /// broadcast (after mapping `::ffff:a.b.c.d` to `a.b.c.d`). Dialling it would reach the device itself.
        LocalDestination = "local_destination",
        /// Too many concurrent flows; the new one is refused.
        FlowLimit = "flow_limit",
        /// The flow table is full and this client (source address, or app when budgets count by app) already holds
        /// more than its share of it while other clients hold flows too; the new one is refused (see
        /// `engine::budget`).
        ClientLimit = "client_limit",
        /// ICMP echo is not forwarded.
        IcmpUnsupported = "icmp_unsupported",
    }
}

reasons! {
    /// Why traffic was let through.
    AllowReason {
        /// An allow rule matched and wins over every block rule.
        AllowRule = "allow_rule",
        /// No rule matched.
        NoMatch = "no_match",
        /// DNS-over-TLS, or DNS over QUIC/HTTP3, to the user's own Private DNS server: let through so the phone
        /// keeps its DNS (DNS-level blocking is off while Private DNS is set; SNI, QUIC and address blocking still
        /// apply).
        PrivateDns = "private_dns",
    }
}

reasons! {
    /// Why an allowed flow or query failed or was ended (not a verdict).
    ErrorReason {
        /// The upstream connect failed: refused, unreachable or timed out.
        ConnectFailed = "connect_failed",
        /// An upstream connection failed while forwarding (reset or another socket error).
        UpstreamReset = "upstream_reset",
        /// An upstream UDP socket could not be opened or sent on, or the network refused it.
        UdpFailed = "udp_failed",
        /// A forwarded DNS query got no usable answer in time; the phone was answered SERVFAIL.
        DnsFailed = "dns_failed",
        /// The flow table was full: this, the least recently active flow, was closed to make room.
        FlowEvicted = "flow_evicted",
        /// The destination's address family (IPv4 or IPv6) has no route upstream: the new connection was
        /// refused at once (RST, ICMP no route), as the kernel refuses it without Hushwall.
        NoRoute = "no_route",
    }
}

/// Any reason, with its kind: what the event log and the UI show. Serialised as its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Why traffic was let through.
    Allow(AllowReason),
    /// Why traffic was refused.
    Block(BlockReason),
    /// Why an allowed flow failed.
    Error(ErrorReason),
}

impl Reason {
    /// Every reason: allows, blocks, then errors.
    pub fn all() -> impl Iterator<Item = Reason> {
        let allow = AllowReason::ALL.iter().map(|&r| Reason::Allow(r));
        let block = BlockReason::ALL.iter().map(|&r| Reason::Block(r));
        allow.chain(block).chain(ErrorReason::ALL.iter().map(|&r| Reason::Error(r)))
    }

    /// The stable snake_case code of this reason, as serialised and as the JNI encoding carries it.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Allow(r) => r.code(),
            Reason::Block(r) => r.code(),
            Reason::Error(r) => r.code(),
        }
    }

    /// The action a reason of this kind goes with.
    pub fn action(self) -> Action {
        match self {
            Reason::Allow(_) => Action::Allow,
            Reason::Block(_) => Action::Block,
            Reason::Error(_) => Action::Error,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

/// The list rule that decided a verdict: the list it came from, its line, and the rule as written there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forwarded.
    Allow {
        /// Why.
        reason: AllowReason,
        /// The deciding rule, if a list rule decided.
        rule: Option<RuleRef>,
    },
    /// Refused.
    Block {
        /// Why.
        reason: BlockReason,
        /// The deciding rule, if a list rule decided.
        rule: Option<RuleRef>,
    },
}

impl Verdict {
    /// An allow verdict because nothing matched.
    pub fn no_match() -> Self {
        Verdict::Allow { reason: AllowReason::NoMatch, rule: None }
    }

    /// A block verdict for `reason` without a list rule (e.g. flow limit).
    pub fn block(reason: BlockReason) -> Self {
        Verdict::Block { reason, rule: None }
    }

    /// True if this verdict refuses the traffic.
    pub fn is_block(&self) -> bool {
        matches!(self, Verdict::Block { .. })
    }

    /// Why, with its kind.
    pub fn reason(&self) -> Reason {
        match self {
            Verdict::Allow { reason, .. } => Reason::Allow(*reason),
            Verdict::Block { reason, .. } => Reason::Block(*reason),
        }
    }

    /// The deciding list rule, if any.
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            Verdict::Allow { rule, .. } | Verdict::Block { rule, .. } => rule.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_reason_serialises_as_its_code_and_codes_are_unique() {
        let mut seen = HashSet::new();
        for reason in Reason::all() {
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json, serde_json::Value::from(reason.code()), "{reason:?}");
            assert_eq!(reason.to_string(), reason.code());
            let code = reason.code();
            assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{code}");
            assert!(seen.insert(code), "{code} is spelt for two reasons");
        }
        assert_eq!(seen.len(), AllowReason::ALL.len() + BlockReason::ALL.len() + ErrorReason::ALL.len());
    }

    #[test]
    fn each_reason_kind_goes_with_its_action() {
        for reason in Reason::all() {
            let action = serde_json::to_value(reason.action()).unwrap();
            let expected = match reason {
                Reason::Allow(_) => "allow",
                Reason::Block(_) => "block",
                Reason::Error(_) => "error",
            };
            assert_eq!(action, expected, "{reason:?}");
        }
    }
}
