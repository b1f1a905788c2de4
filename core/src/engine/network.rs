//! What the engine knows about the network under it, and how it fails faithfully when a family has no route.
//!
//! A phone's networks change all day (Wi-Fi to mobile, IPv4-only hotel Wi-Fi). The platform tells the engine
//! through [`Engine::network_changed`] (Linux: the driver's rtnetlink watch and family probe; Android: the
//! service's network callback through JNI). When a family has no route upstream, a new connection of that
//! family is refused at once, as the kernel would refuse it without Hushwall (TCP RST to the SYN, ICMP/ICMPv6
//! "no route" for UDP), so that Happy Eyeballs falls back to the other family immediately instead of meeting a
//! connection that is accepted locally and reset after its ClientHello. DNS is answered by the engine and is not
//! affected.

use super::{Engine, FlowId, FlowKey};
use crate::event::Protocol;
use crate::verdict::ErrorReason;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// What the platform knows about the network the engine's upstream sockets use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// IPv4 has a default route upstream: new IPv4 flows can be forwarded.
    pub ipv4: bool,
    /// IPv6 has a default route upstream: new IPv6 flows can be forwarded.
    pub ipv6: bool,
    /// The network's own DNS resolvers (Android `LinkProperties.getDnsServers()`); empty when the platform does
    /// not know the network's DNS set-up (the Linux driver), in which case the configured upstreams and Private
    /// DNS server stay and [`NetworkInfo::private_dns`] is ignored.
    pub dns_servers: Vec<IpAddr>,
    /// The Private DNS (DNS-over-TLS) host name the user set for this network, if any.
    pub private_dns: Option<String>,
    /// The network's MTU, if known.
    pub mtu: Option<u16>,
}

impl Default for NetworkInfo {
    /// A dual-stack network whose resolvers are not known: what the engine assumes until it is told otherwise.
    fn default() -> Self {
        NetworkInfo { ipv4: true, ipv6: true, dns_servers: Vec::new(), private_dns: None, mtu: None }
    }
}

/// The network state the engine keeps.
#[derive(Debug, Default)]
pub(crate) struct NetworkState {
    /// The last [`NetworkInfo`] the platform reported.
    info: NetworkInfo,
}

impl Engine {
    /// The platform's report that the network changed (a new default network, an address or route added or
    /// removed): `info` replaces what the engine knew. From now on new flows of a family without a route are
    /// refused at once (reason `no_route`); flows already open are left to the driver, which ends those whose
    /// socket lost its address. Call it again when the network changes back.
    pub fn network_changed(&mut self, info: NetworkInfo) {
        if info.ipv4 != self.network.info.ipv4 || info.ipv6 != self.network.info.ipv6 {
            log::info!("network changed: ipv4 {}, ipv6 {}", info.ipv4, info.ipv6);
        }
        self.apply_network_dns(&info);
        self.network.info = info;
    }

    /// The network as last reported (dual-stack until [`Engine::network_changed`] says otherwise).
    pub fn network(&self) -> &NetworkInfo {
        &self.network.info
    }

    /// Hands the network's DNS servers (port 53) to the DNS forwarder and sets the Private DNS server name (let
    /// through on port 853). A report without DNS servers comes from a platform that does not know the network's
    /// DNS set-up (the Linux driver): the configured resolvers and Private DNS server stay.
    fn apply_network_dns(&mut self, info: &NetworkInfo) {
        if info.dns_servers.is_empty() {
            return;
        }
        self.set_dns_upstreams(info.dns_servers.iter().map(|&ip| SocketAddr::new(ip, 53)).collect());
        self.set_private_dns_server(info.private_dns.clone());
    }

    /// True if `dst`'s family has no route upstream, so a new flow to it must be refused.
    fn family_unreachable(&self, dst: IpAddr) -> bool {
        let info = &self.network.info;
        // An IPv4-mapped IPv6 address leaves as IPv4.
        match dst {
            IpAddr::V4(_) => !info.ipv4,
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => !info.ipv4,
            IpAddr::V6(_) => !info.ipv6,
        }
    }

    /// Refuses a new flow whose family has no route (the caller sends the RST or ICMP) and reports it; false if
    /// the family is routed and the flow may go on.
    pub(super) fn refuse_unroutable(&mut self, now: Instant, protocol: Protocol, flow: FlowKey) -> bool {
        let server: SocketAddr = flow.1;
        if !self.family_unreachable(server.ip()) {
            return false;
        }
        let family = if server.is_ipv4() { "IPv4" } else { "IPv6" };
        let why = format!("no {family} route upstream");
        self.report_failure(now, protocol, flow, None, ErrorReason::NoRoute, why);
        true
    }

    /// The driver's report that a flow's upstream socket can no longer work (its local address vanished, or a
    /// send failed with "network unreachable"): the flow ends now with an error event instead of hanging until a
    /// timeout. TCP: the phone's side is reset (`connect_failed` while dialling, `upstream_reset` after).
    /// UDP: the flow is closed (`udp_failed`); the phone's next datagram opens a new one from the new address.
    pub fn on_upstream_error(&mut self, now: Instant, id: FlowId, error: io::Error) {
        if self.dns.owns(id) {
            self.on_udp_error(now, id, error);
        } else if let Some(flow) = self.tcp.get(&id) {
            let reason = if flow.connecting() { ErrorReason::ConnectFailed } else { ErrorReason::UpstreamReset };
            self.fail_tcp_flow(now, id, reason, error);
            self.poll(now);
        } else if let Some(flow) = self.close_udp_flow(id) {
            let key = (flow.client, flow.server);
            self.report_failure(now, Protocol::Udp, key, None, ErrorReason::UdpFailed, error);
        }
    }
}
