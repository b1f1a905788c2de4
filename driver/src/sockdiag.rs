//! The owner (UID) of one socket, asked of the kernel by its addresses (netlink `NETLINK_SOCK_DIAG`, an exact
//! `SOCK_DIAG_BY_FAMILY` request): what `ss` and Android's `getConnectionOwnerUid` use.
//!
//! One lookup costs one request and one answer, however many sockets exist. Reading `/proc/net/udp6` instead
//! costs time quadratic in the number of sockets (the kernel walks its table again for every 4 KiB page read):
//! about 0.7 s for 10,000 sockets on the test machine, during which the engine's data path stood still and the
//! tun queue overflowed (the UDP flow flood in tests/tests/reliability.rs).

use hushwall_core::event::Protocol as FlowProtocol;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLM_F_REQUEST`.
const NLM_F_REQUEST: u16 = 1;
/// `NLMSG_HDRLEN`.
const NLMSG_HDRLEN: usize = 16;
/// Offset of `idiag_uid` in an answer: netlink header, 4 bytes of family/state/timer/retrans, the 48-byte socket
/// id, then expires, rqueue and wqueue (linux/inet_diag.h, `struct inet_diag_msg`).
const UID_OFFSET: usize = NLMSG_HDRLEN + 4 + 48 + 12;
/// How long the kernel may take to answer (it answers at once; this only bounds a misbehaving system).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(200);

/// A netlink socket for socket-owner lookups.
#[derive(Debug)]
pub(crate) struct SockDiag {
    socket: Socket,
    seq: u32,
    answer: Vec<u8>,
}

impl SockDiag {
    /// Opens the netlink socket; fails where sock_diag is unavailable (the caller falls back to `/proc/net`).
    pub(crate) fn open() -> io::Result<SockDiag> {
        let socket =
            Socket::new(Domain::from(libc::AF_NETLINK), Type::DGRAM, Some(Protocol::from(libc::NETLINK_SOCK_DIAG)))?;
        socket.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(SockDiag { socket, seq: 0, answer: vec![0; 8192] })
    }

    /// The UID owning the phone-side socket of the flow `src` → `dst`; `Ok(None)` if there is no such socket
    /// (or the families differ), an error if the kernel could not be asked. An unconnected UDP socket bound to
    /// `src` counts.
    pub(crate) fn uid(&mut self, protocol: FlowProtocol, src: SocketAddr, dst: SocketAddr) -> io::Result<Option<u32>> {
        let (src, dst) = (canonical(src), canonical(dst));
        let ip_proto = match protocol {
            FlowProtocol::Tcp => libc::IPPROTO_TCP,
            FlowProtocol::Udp | FlowProtocol::Dns => libc::IPPROTO_UDP,
            FlowProtocol::Icmp => return Ok(None),
        };
        // The kernel looks a TCP socket up as (local, remote) and a UDP one as the receiver of a datagram from
        // (remote) to (local) (inet_diag_find_one_icsk, udp_dump_one).
        let (first, second) = if ip_proto == libc::IPPROTO_TCP { (src, dst) } else { (dst, src) };
        let family = match (first.ip(), second.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
            (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
            _ => return Ok(None),
        };
        self.seq = self.seq.wrapping_add(1);
        let request = request(self.seq, family as u8, ip_proto as u8, first, second);
        self.socket.send(&request)?;
        loop {
            let n = (&self.socket).read(&mut self.answer)?;
            let answer = self.answer.get(..n).unwrap_or_default();
            let field = |at: usize| answer.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
            let kind = answer.get(4..6).map(|b| u16::from_ne_bytes([b[0], b[1]]));
            if field(8) != Some(self.seq) {
                continue; // an answer to an earlier request that timed out
            }
            // Anything but an answer (an NLMSG_ERROR: ENOENT) means no such socket.
            return Ok((kind == Some(SOCK_DIAG_BY_FAMILY)).then(|| field(UID_OFFSET)).flatten());
        }
    }
}

/// An exact `SOCK_DIAG_BY_FAMILY` request for the socket with id (`first`, `second`).
fn request(seq: u32, family: u8, protocol: u8, first: SocketAddr, second: SocketAddr) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDRLEN + 56);
    m.extend_from_slice(&((NLMSG_HDRLEN + 56) as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // struct inet_diag_req_v2: family, protocol, ext, pad, states (all), then struct inet_diag_sockid.
    m.extend_from_slice(&[family, protocol, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes());
    m.extend_from_slice(&first.port().to_be_bytes());
    m.extend_from_slice(&second.port().to_be_bytes());
    for addr in [first.ip(), second.ip()] {
        let mut bytes = [0u8; 16];
        match addr {
            IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => bytes = v6.octets(),
        }
        m.extend_from_slice(&bytes);
    }
    m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    m.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    m
}

/// The address with an IPv4-mapped IPv6 address as the IPv4 one.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};

    fn my_uid() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let line = status.lines().find_map(|l| l.strip_prefix("Uid:")).expect("Uid line");
        line.split_whitespace().next().and_then(|u| u.parse().ok()).expect("uid")
    }

    #[test]
    fn finds_live_tcp_and_udp_sockets_of_this_process() {
        let Ok(mut diag) = SockDiag::open() else {
            eprintln!("sock_diag unavailable here; nothing to test");
            return;
        };
        let uid = my_uid();
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (src, dst) = (client.local_addr().expect("local"), client.peer_addr().expect("peer"));
        assert_eq!(diag.uid(FlowProtocol::Tcp, src, dst).expect("asked"), Some(uid), "tcp {src} -> {dst}");

        let server = UdpSocket::bind("[::1]:0").expect("bind");
        let udp = UdpSocket::bind("[::1]:0").expect("bind");
        udp.connect(server.local_addr().expect("addr")).expect("connect");
        let (src, dst) = (udp.local_addr().expect("local"), server.local_addr().expect("addr"));
        assert_eq!(diag.uid(FlowProtocol::Udp, src, dst).expect("asked"), Some(uid), "connected udp {src} -> {dst}");
        let unconnected = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let src = unconnected.local_addr().expect("local");
        let anywhere = "127.0.0.9:53".parse().expect("addr");
        assert_eq!(diag.uid(FlowProtocol::Udp, src, anywhere).expect("asked"), Some(uid), "unconnected");

        let nobody: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert_eq!(diag.uid(FlowProtocol::Tcp, nobody, dst).expect("asked"), None, "no such socket");
    }
}
