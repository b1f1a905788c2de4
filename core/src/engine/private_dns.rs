//! The user's Private DNS server (Android's strict "Private DNS provider hostname").
//!
//! With Private DNS set, the system resolver talks DNS-over-TLS (TCP 853) to that host through the VPN, and may
//! use DNS over QUIC (UDP 853) or HTTP/3 (UDP 443) to it. Refusing it would leave the phone with no DNS at all,
//! so flows to that host are let through (reason `private_dns`) while DNS-over-TLS and DNS over QUIC to any other
//! server stay refused (`dns_over_tls`). The host is recognised by the server name in the TLS or QUIC ClientHello;
//! a DNS-over-TLS ClientHello without one is let through when the IP→names cache maps its destination to the host.

use super::Engine;
use crate::verdict::{AllowReason, BlockReason, Verdict};
use std::net::SocketAddr;
use std::time::Instant;

/// DNS over TLS and DNS over QUIC.
pub(super) const DOT_PORT: u16 = 853;
/// DNS over HTTP/3.
const DOH3_PORT: u16 = 443;

impl Engine {
    /// Sets the user's Private DNS host name (`None`: Private DNS off or opportunistic). Applies to new flows.
    pub fn set_private_dns_server(&mut self, host: Option<String>) {
        self.config.private_dns_server = host.map(|h| h.trim_end_matches('.').to_ascii_lowercase());
    }

    /// True if DNS-over-TLS flows must be read up to their ClientHello instead of being refused at the SYN.
    pub(super) fn private_dns_is_set(&self) -> bool {
        self.config.private_dns_server.as_deref().is_some_and(|h| !h.is_empty())
    }

    /// The verdict for a TLS or QUIC flow to `server` whose ClientHello named `sni` (`None`: no name), when the
    /// Private DNS rules decide it: allowed if it goes to the Private DNS server, refused if it is DNS-over-TLS
    /// or DNS over QUIC to anything else. `None` for other flows (the policy decides).
    pub(super) fn private_dns_verdict(&self, now: Instant, server: SocketAddr, sni: Option<&str>) -> Option<Verdict> {
        let host = self.config.private_dns_server.as_deref().filter(|h| !h.is_empty());
        let named = |h: &str| sni.is_some_and(|s| s.trim_end_matches('.').eq_ignore_ascii_case(h));
        let mapped = |h: &str| sni.is_none() && self.dns_cache.names_for(server.ip(), now).any(|n| n == h);
        let to_private = host.is_some_and(|h| match server.port() {
            DOT_PORT => named(h) || mapped(h),
            DOH3_PORT => named(h),
            _ => false,
        });
        if to_private {
            Some(Verdict::Allow { reason: AllowReason::PrivateDns, rule: None })
        } else if server.port() == DOT_PORT && self.config.block_dns_over_tls {
            Some(Verdict::block(BlockReason::DnsOverTls))
        } else {
            None
        }
    }
}
