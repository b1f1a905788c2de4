//! Upstream sockets: the driver's side of the engine's socket actions ([`SocketDriver`]) and its owner lookup
//! ([`OwnerLookup`]), on non-blocking `mio` sockets.
//!
//! Every socket is created with `socket2`, non-blocking and close-on-exec in the `socket()` call itself, protected
//! through the platform before it connects, then registered with epoll (edge-triggered) under a token equal to its
//! flow id.

use crate::network::is_network_gone;
use crate::own_addresses::OwnAddresses;
use crate::platform::{Protector, UidResolver};
use crate::udp_segments::Run;
use hushwall_core::engine::{FlowId, OwnerLookup, SocketAction, SocketDriver, Transfer};
use hushwall_core::event::Protocol as FlowProtocol;
use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

/// One upstream socket.
pub(crate) enum Conn {
    /// A TCP connection; `connecting` until the first writable event confirms it.
    Tcp { stream: TcpStream, connecting: bool },
    /// A connected UDP socket.
    Udp(UdpSocket),
}

/// The upstream sockets of one engine.
pub(crate) struct Sockets {
    registry: Registry,
    protector: Box<dyn Protector>,
    /// Finds the app owning a flow (for blocked apps and for event attribution).
    pub(crate) uids: Box<dyn UidResolver>,
    pub(crate) conns: HashMap<FlowId, Conn>,
    /// UDP flows whose send failed because the network or their address is gone: the loop ends them.
    pub(crate) unroutable: Vec<FlowId>,
    /// A socket call failed with "network unreachable" or "address not available": the loop re-probes.
    pub(crate) network_suspect: bool,
    /// UDP flows to a broadcast or multicast destination: their socket is unconnected, sends go to this address
    /// and answers are taken from any host.
    any_source: HashMap<FlowId, SocketAddr>,
    /// Multicast flows whose socket is bound to the group's port and joined the group upstream (see
    /// `multicast_client` of [`SocketAction::UdpOpen`]), with the upstream interface's index: datagrams sent to
    /// the group on that interface go to the phone addressed to the group.
    groups: HashMap<FlowId, OnInterface>,
    /// This device's own addresses, which TCP flows may not dial.
    pub(crate) own_addresses: OwnAddresses,
    /// While the loop reads a batch of tun packets, datagrams of connected UDP flows are held per flow and sent
    /// after it, each flow's in one segmented send (see [`crate::udp_segments`]).
    holding: bool,
    held: HashMap<FlowId, Run>,
    /// Whether the kernel segments UDP.
    gso: bool,
    /// Held datagrams that could not be sent, not yet reported to the engine.
    failed_sends: u64,
}

/// An address with an interface index: a group joined on that interface, or where a datagram was sent to and
/// the interface it arrived on.
type OnInterface = (IpAddr, u32);

/// Whom a datagram read from an upstream UDP socket is for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Addressee {
    /// The phone's socket (a unicast or broadcast answer).
    Phone,
    /// The multicast group the flow sends to (a LAN host multicast it).
    Group,
    /// Neither: another group, or the group on another interface (the phone's own side, the tun): not relayed.
    Nobody,
}

/// The epoll token of a flow's socket.
pub(crate) fn token_of(flow: FlowId) -> Token {
    Token(flow.0 as usize)
}

/// The flow a socket token belongs to.
pub(crate) fn flow_of(token: Token) -> FlowId {
    FlowId(token.0 as u64)
}

impl Sockets {
    pub(crate) fn new(registry: Registry, protector: Box<dyn Protector>, uids: Box<dyn UidResolver>) -> Self {
        Sockets {
            registry,
            protector,
            uids,
            conns: HashMap::new(),
            unroutable: Vec::new(),
            network_suspect: false,
            any_source: HashMap::new(),
            groups: HashMap::new(),
            own_addresses: OwnAddresses::new(),
            holding: false,
            held: HashMap::new(),
            gso: crate::udp_segments::kernel_segments_udp(),
            failed_sends: 0,
        }
    }

    /// From now on, holds the datagrams of connected UDP flows until [`Sockets::send_held`].
    pub(crate) fn hold_udp_sends(&mut self) {
        self.holding = true;
    }

    /// Sends every held datagram (each flow's in one segmented send) and stops holding; returns how many held
    /// datagrams could not be sent since the last call.
    pub(crate) fn send_held(&mut self) -> u64 {
        self.holding = false;
        let flows: Vec<FlowId> = self.held.iter().filter(|(_, run)| !run.is_empty()).map(|(&f, _)| f).collect();
        for flow in flows {
            self.send_run(flow);
        }
        std::mem::take(&mut self.failed_sends)
    }

    /// Sends `flow`'s held datagrams, if any.
    fn send_run(&mut self, flow: FlowId) {
        let (Some(run), Some(Conn::Udp(socket))) = (self.held.get_mut(&flow), self.conns.get(&flow)) else {
            return;
        };
        if run.is_empty() {
            return;
        }
        let (failed, error) = run.send(socket, self.gso);
        self.failed_sends += failed as u64;
        if let Some(error) = error {
            log::debug!("flow {}: {failed} datagrams not sent: {error}", flow.0);
            if is_network_gone(&error) {
                self.unroutable.push(flow);
            }
            let _ = self.note_error::<()>(Err(error));
        }
    }

    /// Holds `data` for `flow` if the loop is holding sends and the flow's socket is connected; false if it must
    /// be sent now (anything held for the flow before it has then been sent).
    fn hold(&mut self, flow: FlowId, data: &[u8]) -> bool {
        if !self.holding || self.any_source.contains_key(&flow) || !matches!(self.conns.get(&flow), Some(Conn::Udp(_)))
        {
            return false;
        }
        if self.held.entry(flow).or_default().push(data) {
            return true;
        }
        self.send_run(flow);
        self.held.get_mut(&flow).is_some_and(|run| run.push(data))
    }

    /// Reads one datagram from `flow`'s UDP socket: its length, sender and addressee.
    pub(crate) fn udp_recv(&mut self, flow: FlowId, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Addressee)> {
        let joined = self.groups.get(&flow).copied();
        let socket = self.udp(flow)?;
        let Some((group, upstream)) = joined else {
            let (n, from) = socket.recv_from(buf)?;
            return Ok((n, from, Addressee::Phone));
        };
        let (n, from, destination) = recv_with_destination(socket, buf)?;
        let addressee = match destination {
            Some((to, _)) if !to.is_multicast() => Addressee::Phone,
            Some((to, interface)) if to == group && interface == upstream => Addressee::Group,
            _ => Addressee::Nobody,
        };
        Ok((n, from, addressee))
    }

    /// The upstream interface of a family: the source address a protected socket gets towards the family's
    /// probe address (so the interface the marked default route leaves by), and that interface's index.
    fn upstream_interface(&mut self, ipv6: bool) -> Option<OnInterface> {
        let probe = crate::network::probe_address(ipv6);
        let socket = self.protected_socket(probe, Type::DGRAM, Protocol::UDP).ok()?;
        socket.connect(&probe.into()).ok()?;
        let source = socket.local_addr().ok()?.as_socket()?.ip();
        Some((source, crate::network::interface_with_address(source)?))
    }

    /// Sets up a multicast flow's socket: its datagrams leave by the upstream interface (link-scoped groups
    /// such as ff02::fb have no route to choose one), are not looped back to this device, and when the phone
    /// sends from the group's own port the socket binds that port (shared with a local responder such as
    /// avahi) and joins the group on the upstream interface, so answers and announcements multicast to the
    /// group are heard (the kernel leaves the group when the socket closes); if that fails the flow goes on
    /// unjoined. Returns the joined group and interface index, if it joined. Fails with "network unreachable"
    /// if no upstream interface is known.
    fn prepare_multicast(
        &mut self,
        socket: &Socket,
        group: SocketAddr,
        client_port: Option<u16>,
    ) -> io::Result<Option<OnInterface>> {
        let Some((source, index)) = self.upstream_interface(group.is_ipv6()) else {
            return Err(io::Error::new(
                io::ErrorKind::NetworkUnreachable,
                format!("no upstream interface for multicast to {group}"),
            ));
        };
        match (group.ip(), source) {
            (IpAddr::V4(_), IpAddr::V4(source)) => {
                socket.set_multicast_if_v4(&source)?;
                socket.set_multicast_loop_v4(false)?;
            }
            _ => {
                socket.set_multicast_if_v6(index)?;
                socket.set_multicast_loop_v6(false)?;
            }
        }
        if client_port != Some(group.port()) {
            return Ok(None);
        }
        match join_group(socket, group, source, index) {
            Ok(()) => Ok(Some((group.ip(), index))),
            Err(e) => {
                // The port is taken (say by the phone's own socket, without SO_REUSEADDR): the socket stays on an
                // ephemeral port, where responders answer unicast (RFC 6762 §6.7).
                log::debug!("multicast to {group}: not joining the group ({e}); only unicast answers are heard");
                Ok(None)
            }
        }
    }

    /// Notes an error that says the network changed under a socket.
    fn note_error<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if result.as_ref().is_err_and(is_network_gone) {
            self.network_suspect = true;
        }
        result
    }

    /// Whether `dst`'s family has a route: a protected UDP socket can connect to it (nothing is sent). `None`
    /// if the probe itself failed for another reason (e.g. out of descriptors).
    pub(crate) fn has_route(&mut self, dst: SocketAddr) -> Option<bool> {
        let result = self.protected_socket(dst, Type::DGRAM, Protocol::UDP).and_then(|s| s.connect(&dst.into()));
        match result {
            Ok(()) => Some(true),
            Err(e) if is_network_gone(&e) => Some(false),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EHOSTUNREACH | libc::EAFNOSUPPORT)) => Some(false),
            Err(e) => {
                log::debug!("route probe to {dst}: {e}");
                None
            }
        }
    }

    fn start_tcp_connect(&mut self, flow: FlowId, dst: SocketAddr) -> io::Result<()> {
        let socket = self.protected_socket(dst, Type::STREAM, Protocol::TCP)?;
        socket.set_tcp_nodelay(true)?;
        match socket.connect(&dst.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        let mut stream = TcpStream::from_std(socket.into());
        self.registry.register(&mut stream, token_of(flow), Interest::READABLE | Interest::WRITABLE)?;
        self.conns.insert(flow, Conn::Tcp { stream, connecting: true });
        Ok(())
    }

    /// A new protected, non-blocking socket for `dst`.
    fn protected_socket(&mut self, dst: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
        let socket = upstream_socket(dst, ty, proto)?;
        if !self.protector.protect(socket.as_fd()) {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "socket could not be protected"));
        }
        Ok(socket)
    }

    fn tcp(&mut self, flow: FlowId) -> io::Result<&mut TcpStream> {
        match self.conns.get_mut(&flow) {
            Some(Conn::Tcp { stream, .. }) => Ok(stream),
            _ => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    fn udp(&mut self, flow: FlowId) -> io::Result<&mut UdpSocket> {
        match self.conns.get_mut(&flow) {
            Some(Conn::Udp(socket)) => Ok(socket),
            _ => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// Drops `flow`'s socket from the table; the caller's drop closes it. Closing takes it out of epoll (no other
    /// descriptor refers to an upstream socket), so it is not deregistered first: one `epoll_ctl` fewer per flow.
    fn forget(&mut self, flow: FlowId) -> Option<Conn> {
        self.send_run(flow);
        self.held.remove(&flow);
        self.any_source.remove(&flow);
        self.groups.remove(&flow);
        self.conns.remove(&flow)
    }

    /// Opens `flow`'s UDP socket to `dst`, for a phone socket on `client_port` if known (see
    /// [`Sockets::prepare_multicast`]).
    fn open_udp(&mut self, flow: FlowId, client_port: Option<u16>, dst: SocketAddr) -> io::Result<()> {
        let result = self.protected_socket(dst, Type::DGRAM, Protocol::UDP);
        let socket = self.note_error(result)?;
        let mut joined = None;
        let any_source = if dst.ip().is_multicast() {
            joined = self.prepare_multicast(&socket, dst, client_port)?;
            true
        } else {
            dst.ip() == IpAddr::V4(Ipv4Addr::BROADCAST)
                || match socket.connect(&dst.into()) {
                    Ok(()) => false,
                    // The route says broadcast (a subnet's broadcast address): connect() wants SO_BROADCAST,
                    // and answers come from the hosts, not from that address.
                    Err(e) if e.raw_os_error() == Some(libc::EACCES) => true,
                    Err(e) => return self.note_error(Err(e)),
                }
        };
        if any_source {
            socket.set_broadcast(true)?;
            self.any_source.insert(flow, dst);
        }
        let mut socket = UdpSocket::from_std(socket.into());
        self.registry.register(&mut socket, token_of(flow), Interest::READABLE)?;
        self.conns.insert(flow, Conn::Udp(socket));
        if let Some(membership) = joined {
            self.groups.insert(flow, membership);
        }
        Ok(())
    }

    /// Number of open upstream sockets.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }
}

/// A new non-blocking, close-on-exec socket for `dst` (both flags in the `socket()` call: socket2 adds
/// `SOCK_CLOEXEC`). An IPv6 socket is IPv6-only: `::ffff:a.b.c.d` must never reach an IPv4 host (say the device's
/// 127.0.0.1) through a dual-stack socket.
fn upstream_socket(dst: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(dst), ty.nonblocking(), Some(proto))?;
    if dst.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Joins `group` on the upstream interface (`source` address, `index`), asks for each datagram's destination
/// (`IP_PKTINFO` / `IPV6_PKTINFO`), hears no other group (Linux), and binds the group's port, shared with other
/// sockets (a local avahi); the bind comes last, so a socket whose bind fails is left on an ephemeral port.
fn join_group(socket: &Socket, group: SocketAddr, source: IpAddr, index: u32) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    let any = match (group.ip(), source) {
        (IpAddr::V4(g), IpAddr::V4(source)) => {
            socket.join_multicast_v4(&g, &source)?;
            setsockopt(socket, sockopt::Ipv4PacketInfo, &true)?;
            #[cfg(target_os = "linux")]
            socket.set_multicast_all_v4(false)?;
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
        (IpAddr::V6(g), _) => {
            socket.join_multicast_v6(&g, index)?;
            setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)?;
            #[cfg(target_os = "linux")]
            socket.set_multicast_all_v6(false)?;
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        }
        (IpAddr::V4(_), IpAddr::V6(_)) => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
    };
    socket.bind(&SocketAddr::new(any, group.port()).into())
}

/// Reads one datagram with `IP_PKTINFO` / `IPV6_PKTINFO`: its length, sender, and the address it was sent to
/// with the index of the interface it arrived on (if the kernel said).
fn recv_with_destination(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Option<OnInterface>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrStorage};
    let mut control = nix::cmsg_space!(libc::in6_pktinfo);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(socket.as_raw_fd(), &mut iov, Some(&mut control), MsgFlags::empty())?;
    let destination = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::Ipv4PacketInfo(info) => {
            let to = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
            Some((IpAddr::V4(to), u32::try_from(info.ipi_ifindex).unwrap_or(0)))
        }
        ControlMessageOwned::Ipv6PacketInfo(info) => {
            // u32 in glibc, i32 in Android's bionic.
            #[allow(clippy::useless_conversion)]
            let index = u32::try_from(info.ipi6_ifindex).unwrap_or(0);
            Some((IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)), index))
        }
        _ => None,
    });
    let from = msg.address.and_then(|a| match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
        (Some(v4), _) => Some(SocketAddr::from(*v4)),
        (_, Some(v6)) => Some(SocketAddr::from(*v6)),
        _ => None,
    });
    let from = from.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without an IP sender"))?;
    Ok((msg.bytes, from, destination))
}

impl Sockets {
    /// Starts a TCP connect to `dst` for `flow` ([`SocketAction::TcpConnect`]); never to this device's own
    /// addresses.
    pub(crate) fn tcp_connect(&mut self, flow: FlowId, dst: SocketAddr) -> io::Result<()> {
        if self.own_addresses.contains(dst.ip(), Instant::now()) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the destination is this device's own address",
            ));
        }
        let result = self.start_tcp_connect(flow, dst);
        self.note_error(result)
    }

    /// Half-closes `flow`'s connection ([`SocketAction::TcpShutdownWrite`]).
    pub(crate) fn tcp_shutdown_write(&mut self, flow: FlowId) {
        if let Ok(stream) = self.tcp(flow) {
            // NotConnected here only means the peer already went away; the read side reports that.
            let _ = stream.shutdown(Shutdown::Write);
        }
    }

    /// Closes `flow`'s connection, with a RST if `reset` ([`SocketAction::TcpClose`]).
    pub(crate) fn tcp_close(&mut self, flow: FlowId, reset: bool) {
        if let Some(Conn::Tcp { stream, .. }) = self.forget(flow) {
            if reset {
                // Linger 0 makes close() send RST, so the server learns the phone aborted.
                let socket = socket2::SockRef::from(&stream);
                let _ = socket.set_linger(Some(std::time::Duration::ZERO));
            }
        }
    }

    /// Sends one datagram on `flow`'s socket, or holds it for the batch's segmented send
    /// ([`SocketAction::UdpSend`]).
    pub(crate) fn udp_send(&mut self, flow: FlowId, data: &[u8]) -> io::Result<()> {
        if self.hold(flow, data) {
            return Ok(());
        }
        let result = match self.any_source.get(&flow).copied() {
            Some(dst) => self.udp(flow)?.send_to(data, dst).map(|_| ()),
            None => self.udp(flow)?.send(data).map(|_| ()),
        };
        if result.as_ref().is_err_and(is_network_gone) {
            // The flow cannot recover on this socket: the loop ends it (the engine only counts a failed send).
            self.unroutable.push(flow);
        }
        self.note_error(result)
    }

    /// Closes `flow`'s UDP socket ([`SocketAction::UdpClose`]).
    pub(crate) fn udp_close(&mut self, flow: FlowId) {
        self.forget(flow);
    }
}

impl SocketDriver for Sockets {
    /// Performs one of the engine's socket actions; the error of one that failed at once.
    fn perform(&mut self, action: SocketAction) -> io::Result<()> {
        match action {
            SocketAction::TcpConnect { flow, dst } => self.tcp_connect(flow, dst),
            SocketAction::TcpShutdownWrite { flow } => {
                self.tcp_shutdown_write(flow);
                Ok(())
            }
            SocketAction::TcpClose { flow, reset } => {
                self.tcp_close(flow, reset);
                Ok(())
            }
            SocketAction::UdpOpen { flow, dst, multicast_client } => {
                self.open_udp(flow, multicast_client.map(|c| c.port()), dst)
            }
            SocketAction::UdpSend { flow, datagram } => self.udp_send(flow, &datagram),
            SocketAction::UdpClose { flow } => {
                self.udp_close(flow);
                Ok(())
            }
        }
    }

    fn write(&mut self, flow: FlowId, data: &[u8]) -> Transfer {
        let result = self.tcp(flow).and_then(|stream| stream.write(data));
        transfer(self.note_error(result))
    }

    fn read(&mut self, flow: FlowId, buf: &mut [u8]) -> Transfer {
        transfer(self.tcp(flow).and_then(|stream| stream.read(buf)))
    }
}

impl OwnerLookup for Sockets {
    fn owner_uid(&mut self, protocol: FlowProtocol, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        self.uids.uid(protocol, src, dst)
    }
}

/// What a non-blocking stream's read or write result means to the engine.
fn transfer(result: io::Result<usize>) -> Transfer {
    match result {
        Ok(n) => Transfer::Moved(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Transfer::Blocked,
        Err(e) => Transfer::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::NoUids;
    use std::time::{Duration, Instant};

    /// The engine learns "would block" from the driver, and every other error as a failure with its kind.
    #[test]
    fn stream_results_become_transfers() {
        assert!(matches!(transfer(Ok(7)), Transfer::Moved(7)));
        assert!(matches!(transfer(Ok(0)), Transfer::Moved(0)));
        assert!(matches!(transfer(Err(io::ErrorKind::WouldBlock.into())), Transfer::Blocked));
        let Transfer::Failed(e) = transfer(Err(io::ErrorKind::ConnectionReset.into())) else {
            panic!("a reset is a failure");
        };
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    /// `::ffff:127.0.0.1` through an IPv6-only socket reaches nothing, least of all IPv4 loopback.
    #[test]
    fn ipv6_sockets_do_not_reach_ipv4_through_mapped_addresses() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("addr").port();
        let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{port}").parse().expect("addr");
        let Ok(socket) = upstream_socket(mapped, Type::STREAM, Protocol::TCP) else {
            return; // no IPv6 on this machine
        };
        assert!(socket.connect(&mapped.into()).is_err(), "reached IPv4 loopback through {mapped}");
    }

    struct Unprotected;

    impl Protector for Unprotected {
        fn protect(&mut self, _: std::os::fd::BorrowedFd<'_>) -> bool {
            true
        }
    }

    /// The first datagram on `flow`'s socket within 5 s, with its source.
    fn receive(sockets: &mut Sockets, flow: FlowId) -> (Vec<u8>, SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = [0u8; 64];
        loop {
            match sockets.udp(flow).expect("udp socket").recv_from(&mut buf) {
                Ok((n, from)) => return (buf[..n].to_vec(), from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("no answer: {e}"),
            }
        }
    }

    // Issue 12.4: a subnet's broadcast address (here loopback's, 127.255.255.255) could not even be sent to
    // (connect() without SO_BROADCAST fails with EACCES), and a connected socket would drop the hosts' answers.
    #[test]
    fn a_subnet_broadcast_flow_sends_and_takes_answers_from_the_hosts() {
        let host = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind the host");
        host.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let port = host.local_addr().expect("addr").port();
        let poll = mio::Poll::new().expect("poll");
        let registry = poll.registry().try_clone().expect("registry");
        let mut sockets = Sockets::new(registry, Box::new(Unprotected), Box::new(NoUids));
        let flow = FlowId(7);
        let broadcast = SocketAddr::from(([127, 255, 255, 255], port));
        sockets.open_udp(flow, None, broadcast).expect("a broadcast flow opens");
        sockets.udp_send(flow, b"who is there").expect("broadcast sent");
        let mut buf = [0u8; 64];
        let (n, asker) = host.recv_from(&mut buf).expect("the host hears the broadcast");
        assert_eq!(&buf[..n], b"who is there");
        host.send_to(b"me", asker).expect("answer");
        let (answer, from) = receive(&mut sockets, flow);
        assert_eq!(answer, b"me");
        assert_eq!(from, SocketAddr::from(([127, 0, 0, 1], port)), "the answer comes from the host itself");
        sockets.udp_close(flow);
        assert!(sockets.any_source.is_empty());
    }

    /// Datagrams held during a tun batch reach the server exactly as sent, in order: a run of equal ones with a
    /// shorter last, an empty one (never held: it flushes what was held before it), a longer one starting a new
    /// run; and those held when the flow closes still go out first.
    #[test]
    fn held_datagrams_arrive_whole_and_in_order() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the server");
        server.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let poll = mio::Poll::new().expect("poll");
        let registry = poll.registry().try_clone().expect("registry");
        let mut sockets = Sockets::new(registry, Box::new(Unprotected), Box::new(NoUids));
        let flow = FlowId(9);
        sockets.open_udp(flow, None, server.local_addr().expect("addr")).expect("open");
        let sent: Vec<Vec<u8>> =
            vec![vec![1; 1200], vec![2; 1200], vec![3; 700], vec![], vec![4; 1300], vec![5; 1300], vec![6; 1400]];
        sockets.hold_udp_sends();
        for d in &sent[..6] {
            sockets.udp_send(flow, d).expect("taken");
        }
        assert_eq!(sockets.send_held(), 0);
        sockets.hold_udp_sends();
        sockets.udp_send(flow, &sent[6]).expect("taken");
        sockets.udp_close(flow);
        assert_eq!(sockets.send_held(), 0);
        let mut buf = [0u8; 2048];
        let got: Vec<Vec<u8>> = sent
            .iter()
            .map(|_| {
                let n = server.recv(&mut buf).expect("a datagram");
                buf[..n].to_vec()
            })
            .collect();
        assert_eq!(got, sent);
    }
}
