//! Following the network under the engine: rtnetlink address and route events, per-family route probes, and
//! ending flows whose upstream socket lost its local address.
//!
//! On Linux the loop subscribes to the kernel's address and route notifications (both families) on a netlink
//! socket in its poll, so it wakes only when something changed. After a change it re-probes each family and
//! tells the engine ([`hushwall_core::engine::Engine::network_changed`]), and it ends every flow whose socket's
//! local address is no longer assigned. On Android apps may not bind netlink route sockets; there the app
//! reports changes from its network callback ([`crate::Control::network_changed`]) and the driver only does the
//! second part.

use crate::sockets::{Conn, Sockets};
use hushwall_core::engine::{Engine, FlowId, NetworkInfo};
use mio::{Interest, Registry, Token};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr as NetlinkAddr};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

/// rtnetlink multicast groups (linux/rtnetlink.h; kernel ABI, also on Android, whose libc crate omits them).
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
const RTMGRP_IPV6_ROUTE: u32 = 0x400;

/// Where the family probes "connect" a UDP socket: global addresses that any default route covers (bionic's
/// resolver probes the same ones to decide which families to ask for). Nothing is ever sent to them.
const PROBE_V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)), 53);
const PROBE_V6: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0)), 53);

/// A netlink socket subscribed to address and route changes of both families, registered with the loop's poll.
pub(crate) struct NetlinkWatch {
    socket: Socket,
    buf: Vec<u8>,
}

impl NetlinkWatch {
    /// Subscribes and registers under `token` (readable when a notification is queued).
    pub(crate) fn open(registry: &Registry, token: Token) -> io::Result<NetlinkWatch> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        let groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE;
        socket.bind(&NetlinkAddr::new(0, groups))?;
        socket.set_non_blocking(true)?;
        registry.register(&mut socket, token, Interest::READABLE)?;
        Ok(NetlinkWatch { socket, buf: vec![0; 64 * 1024] })
    }

    /// Reads every queued notification; true if there was any. Their contents do not matter: any address or
    /// route change means "look again" (a burst of them is one look). A receive-queue overflow (`ENOBUFS`) lost
    /// notifications, so it counts as a change too.
    pub(crate) fn drain(&mut self) -> bool {
        let mut changed = false;
        loop {
            match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(_) => changed = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return changed,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed = true,
                Err(e) => {
                    log::warn!("netlink watch: {e}");
                    return changed;
                }
            }
        }
    }
}

/// True if `error` says the socket's network or address is gone (as opposed to a server refusing or resetting).
pub(crate) fn is_network_gone(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENETUNREACH | libc::EADDRNOTAVAIL | libc::ENETDOWN))
}

/// Where a family's probe "connects" (see [`PROBE_V4`]).
pub(crate) fn probe_address(ipv6: bool) -> SocketAddr {
    if ipv6 {
        PROBE_V6
    } else {
        PROBE_V4
    }
}

/// The index of the interface that has `address` (the source address a protected socket gets towards a
/// family's probe address, so the interface the marked default route leaves by), if any has it.
pub(crate) fn interface_with_address(address: IpAddr) -> Option<u32> {
    let interfaces = nix::ifaddrs::getifaddrs().ok()?;
    let name = interfaces.into_iter().find_map(|i| {
        let a = i.address?;
        let ip = match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => return None,
        };
        (ip == address).then_some(i.interface_name)
    })?;
    nix::net::if_::if_nametoindex(name.as_str()).ok()
}

/// Probes which families have a route upstream and tells the engine (keeping what the engine knew of DNS).
pub(crate) fn reprobe(engine: &mut Engine, sockets: &mut Sockets) {
    let known = engine.network().clone();
    let ipv4 = sockets.has_route(PROBE_V4).unwrap_or(known.ipv4);
    let ipv6 = sockets.has_route(PROBE_V6).unwrap_or(known.ipv6);
    log::debug!("network probe: ipv4 {ipv4}, ipv6 {ipv6}");
    engine.network_changed(NetworkInfo { ipv4, ipv6, ..known });
}

/// Ends every flow whose upstream socket is bound to an address no longer assigned here, with an error event.
pub(crate) fn end_flows_on_vanished_addresses(now: Instant, engine: &mut Engine, sockets: &mut Sockets) {
    let mut assigned: HashMap<IpAddr, bool> = HashMap::new();
    let mut vanished: Vec<(FlowId, IpAddr)> = Vec::new();
    for (&flow, conn) in &sockets.conns {
        let local = match conn {
            Conn::Tcp { stream, .. } => stream.local_addr(),
            Conn::Udp(socket) => socket.local_addr(),
        };
        let Ok(local) = local else { continue };
        if local.ip().is_unspecified() {
            continue;
        }
        if !*assigned.entry(local.ip()).or_insert_with(|| is_assigned(local)) {
            vanished.push((flow, local.ip()));
        }
    }
    vanished.sort_unstable();
    for (flow, ip) in vanished {
        let error = io::Error::new(io::ErrorKind::AddrNotAvailable, format!("local address {ip} vanished"));
        engine.on_upstream_error(now, flow, error);
    }
}

/// True if `local`'s address is still assigned to an interface: a fresh socket can bind to it (the kernel
/// answers `EADDRNOTAVAIL` for an address that was removed, unless `net.ipv4.ip_nonlocal_bind` or its IPv6 twin
/// allows binding any address; then vanished addresses are only found by failing sends).
fn is_assigned(local: SocketAddr) -> bool {
    // Port 0, and for a link-local IPv6 address the same scope.
    let probe = match local {
        SocketAddr::V4(v4) => SocketAddr::from((*v4.ip(), 0)),
        SocketAddr::V6(v6) => SocketAddr::V6(std::net::SocketAddrV6::new(*v6.ip(), 0, 0, v6.scope_id())),
    };
    match std::net::UdpSocket::bind(probe) {
        Ok(_) => true,
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => false,
        // Anything else (out of descriptors) says nothing about the address: keep the flow.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_assigned_only_while_an_interface_has_it() {
        assert!(is_assigned("127.0.0.1:4000".parse().unwrap()));
        // TEST-NET-1: no interface of a test machine has it.
        assert!(!is_assigned("192.0.2.77:4000".parse().unwrap()));
    }

    #[test]
    fn the_loopback_address_is_on_the_loopback_interface() {
        let lo = nix::net::if_::if_nametoindex("lo").expect("lo");
        assert_eq!(interface_with_address(IpAddr::V4(Ipv4Addr::LOCALHOST)), Some(lo));
        assert_eq!(interface_with_address("192.0.2.77".parse().unwrap()), None);
    }

    #[test]
    fn only_network_errors_mean_the_network_is_gone() {
        assert!(is_network_gone(&io::Error::from_raw_os_error(libc::ENETUNREACH)));
        assert!(is_network_gone(&io::Error::from_raw_os_error(libc::EADDRNOTAVAIL)));
        assert!(!is_network_gone(&io::Error::from_raw_os_error(libc::ECONNREFUSED)));
        assert!(!is_network_gone(&io::Error::from(io::ErrorKind::WouldBlock)));
    }
}
