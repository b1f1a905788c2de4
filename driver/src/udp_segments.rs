//! Sending a flow's consecutive UDP datagrams in one system call with UDP generic segmentation offload
//! (`UDP_SEGMENT`, Linux 4.18+).
//!
//! An upload over UDP (a video call, QUIC) reaches the engine as a run of same-size datagrams of one flow. Sent
//! one `send()` each, every datagram walks the whole kernel path on the engine's thread (routing, netfilter,
//! the device); that is most of what the engine's thread does during an upload (BENCHMARKS.md, "UDP loss").
//! While the driver reads a batch of tun packets, a connected flow's datagrams are held here instead, and
//! after the batch each flow's run goes out as one `sendmsg` with a `UDP_SEGMENT` size: the kernel walks the
//! path once and cuts the datagrams at the end, each exactly as the phone sent it. A run is datagrams of one
//! size, of which only the last may be shorter, at most [`MAX_SEGMENTS`] of them in at most
//! [`MAX_RUN_BYTES`]; whatever does not fit starts a new run.
//!
//! A kernel older than 4.18 (the Redmi Note 8 ships 4.14) does not know `UDP_SEGMENT` and would ignore the
//! option, sending the whole run as one datagram; so segmentation is only used where the socket option reads
//! back ([`kernel_segments_udp`]), and elsewhere each datagram is sent on its own, as before. A run the kernel
//! refuses to segment (`EMSGSIZE`, or `EINVAL` before 5.x: datagrams larger than the path MTU, which
//! unsegmented are IP-fragmented; `EIO`: an IPsec route) is sent datagram by datagram.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;

/// Most datagrams in one segmented send (the kernel's limit is 64).
pub(crate) const MAX_SEGMENTS: usize = 64;
/// Most bytes in one segmented send: what fits in one IP packet's length field, less IPv6 and UDP headers.
pub(crate) const MAX_RUN_BYTES: usize = 65535 - 40 - 8;

/// Consecutive datagrams of one flow, waiting to be sent together.
#[derive(Debug, Default)]
pub(crate) struct Run {
    /// The datagrams, back to back.
    bytes: Vec<u8>,
    /// Size of every datagram but the last, which may be shorter.
    segment: usize,
    count: usize,
}

impl Run {
    /// Appends `datagram` if it continues the run; false if it must start a new one (send this one first). An
    /// empty datagram is never held: it cannot be a segment.
    pub(crate) fn push(&mut self, datagram: &[u8]) -> bool {
        let fits = !datagram.is_empty()
            && (self.count == 0
                || (self.bytes.len() == self.segment * self.count
                    && datagram.len() <= self.segment
                    && self.count < MAX_SEGMENTS
                    && self.bytes.len() + datagram.len() <= MAX_RUN_BYTES));
        if fits {
            if self.count == 0 {
                self.segment = datagram.len();
            }
            self.bytes.extend_from_slice(datagram);
            self.count += 1;
        }
        fits
    }

    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sends the run on the connected `socket` and empties it: one `sendmsg` with `UDP_SEGMENT` when it holds
    /// several datagrams and `gso` (see [`kernel_segments_udp`]), else one `send` per datagram; a run the kernel
    /// refuses to segment is sent datagram by datagram. Returns how many datagrams could not be sent, with the
    /// last error.
    pub(crate) fn send(&mut self, socket: &impl AsRawFd, gso: bool) -> (usize, Option<io::Error>) {
        let result = if self.count > 1 && gso {
            match send_segmented(socket, &self.bytes, self.segment) {
                Err(e) if segmentation_refused(&e) => {
                    log::debug!("UDP segmentation refused ({e}); sending {} datagrams one by one", self.count);
                    self.send_each(socket)
                }
                Err(e) => (self.count, Some(e)),
                Ok(()) => (0, None),
            }
        } else {
            self.send_each(socket)
        };
        self.bytes.clear();
        self.count = 0;
        result
    }

    fn send_each(&self, socket: &impl AsRawFd) -> (usize, Option<io::Error>) {
        let mut failed = (0, None);
        for datagram in self.bytes.chunks(self.segment.max(1)) {
            if let Err(e) = nix::sys::socket::send(socket.as_raw_fd(), datagram, nix::sys::socket::MsgFlags::empty()) {
                failed = (failed.0 + 1, Some(io::Error::from(e)));
            }
        }
        failed
    }
}

/// One `sendmsg` of `bytes` cut by the kernel into datagrams of `segment` bytes (the last may be shorter).
fn send_segmented(socket: &impl AsRawFd, bytes: &[u8], segment: usize) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, SockaddrStorage};
    let size = u16::try_from(segment).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let sent = sendmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &[ControlMessage::UdpGsoSegments(&size)],
        MsgFlags::empty(),
        None,
    )?;
    if sent != bytes.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, format!("sent {sent} of {} bytes", bytes.len())));
    }
    Ok(())
}

/// Whether `error` says the kernel would not segment this run (rather than that the send failed).
fn segmentation_refused(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMSGSIZE | libc::EINVAL | libc::ENOPROTOOPT | libc::EIO | libc::EOPNOTSUPP)
    )
}

/// Whether this kernel segments UDP: the `UDP_SEGMENT` socket option (Linux 4.18+) reads back on a UDP socket.
/// Before 4.18 the option is unknown (`ENOPROTOOPT`), and the same option as a control message would be
/// silently ignored.
pub(crate) fn kernel_segments_udp() -> bool {
    std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|socket| Ok(nix::sys::socket::getsockopt(&socket, nix::sys::socket::sockopt::UdpGsoSegment)?))
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn pair() -> (UdpSocket, UdpSocket) {
        let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sender.connect(receiver.local_addr().expect("addr")).expect("connect");
        receiver.set_read_timeout(Some(std::time::Duration::from_secs(5))).expect("timeout");
        (sender, receiver)
    }

    fn received(receiver: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut buf = vec![0u8; 65535];
        (0..count)
            .map(|_| {
                let n = receiver.recv(&mut buf).expect("a datagram");
                buf[..n].to_vec()
            })
            .collect()
    }

    #[test]
    fn a_run_of_datagrams_arrives_as_the_same_datagrams() {
        let (sender, receiver) = pair();
        let datagrams: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1200]).chain([vec![9u8; 77]]).collect();
        let mut run = Run::default();
        for d in &datagrams {
            assert!(run.push(d));
        }
        assert!(kernel_segments_udp(), "this machine's kernel segments UDP");
        assert_eq!(run.send(&sender, true).0, 0);
        assert!(run.is_empty());
        assert_eq!(received(&receiver, datagrams.len()), datagrams);
    }

    #[test]
    fn a_run_takes_one_size_and_one_shorter_last_datagram_within_its_bounds() {
        let mut run = Run::default();
        assert!(run.push(&[1; 1000]));
        assert!(!run.push(&[2; 1001]), "a longer datagram starts a new run");
        assert!(run.push(&[3; 500]));
        assert!(!run.push(&[4; 500]), "nothing follows the shorter last datagram");
        assert!(!Run::default().push(&[]), "an empty datagram is sent on its own");
        let mut run = Run::default();
        for _ in 0..MAX_SEGMENTS {
            assert!(run.push(&[5; 100]));
        }
        assert!(!run.push(&[5; 100]), "at most {MAX_SEGMENTS} datagrams");
        let mut run = Run::default();
        while run.push(&[6; 9000]) {}
        assert!(run.bytes.len() <= MAX_RUN_BYTES && run.count == MAX_RUN_BYTES / 9000);
    }

    /// A datagram larger than the path MTU cannot be a segment (the kernel says `EMSGSIZE`): the run still
    /// arrives, datagram by datagram (IP-fragmented). In a network namespace of the test's own whose loopback
    /// MTU is 1500 (needs root; skipped otherwise).
    #[test]
    fn a_run_the_kernel_will_not_segment_goes_one_by_one() {
        std::thread::spawn(|| {
            // This thread and the `ip` it runs share a new network namespace; the rest of the tests do not.
            if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
                eprintln!("SKIPPED: no network namespace of our own ({e}); run as root");
                return;
            }
            let status = std::process::Command::new("ip").args(["link", "set", "lo", "up", "mtu", "1500"]).status();
            assert!(status.is_ok_and(|s| s.success()), "ip link set lo up mtu 1500");
            let (sender, receiver) = pair();
            let datagrams = vec![vec![1u8; 2000], vec![2u8; 2000]];
            let mut run = Run::default();
            for d in &datagrams {
                assert!(run.push(d));
            }
            let refused = send_segmented(&sender, &run.bytes, run.segment).expect_err("larger than the MTU");
            // EMSGSIZE since Linux 5.x, EINVAL before.
            assert!(matches!(refused.raw_os_error(), Some(libc::EMSGSIZE | libc::EINVAL)), "{refused}");
            assert_eq!(run.send(&sender, true).0, 0);
            assert_eq!(received(&receiver, 2), datagrams);
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    fn without_segmentation_the_same_datagrams_go_one_by_one() {
        let (sender, receiver) = pair();
        let datagrams: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 300]).collect();
        let mut run = Run::default();
        for d in &datagrams {
            run.push(d);
        }
        assert_eq!(run.send(&sender, false).0, 0);
        assert_eq!(received(&receiver, 3), datagrams);
    }

    #[test]
    fn a_failed_send_counts_every_datagram_of_the_run() {
        let unconnected = UdpSocket::bind("127.0.0.1:0").expect("bind");
        for gso in [true, false] {
            let mut run = Run::default();
            run.push(&[1; 100]);
            run.push(&[2; 100]);
            let (failed, error) = run.send(&unconnected, gso);
            assert_eq!(failed, 2, "{error:?}");
            assert!(error.is_some() && run.is_empty());
        }
    }
}
