//! Reading an upstream UDP socket's datagrams several at a time, with one `recvmmsg` system call.
//!
//! A download over UDP (QUIC, a video call) is one datagram per system call when read with `recv_from`; at
//! 800 Mbit/s that is some 70,000 calls a second on the engine's thread, which shares the phone's cores with
//! the apps receiving the data. `recvmmsg` takes up to [`DATAGRAMS_PER_CALL`] in one call. The buffers are
//! allocated once per engine, zeroed lazily by the allocator: a page is only resident once a datagram was
//! written to it.

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Most datagrams one call reads.
pub(crate) const DATAGRAMS_PER_CALL: usize = 32;
/// Largest datagram (and IP packet) the engine handles.
const MAX_DATAGRAM: usize = 65535;

/// Receive buffers and headers for one `recvmmsg`, and what the last call read.
pub(crate) struct DatagramBatch {
    buffers: Vec<Vec<u8>>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Length and sender of each datagram the last call read, in order (no sender: not an IP address).
    received: Vec<(usize, Option<SocketAddr>)>,
}

impl DatagramBatch {
    /// Buffers for [`DATAGRAMS_PER_CALL`] datagrams of up to 64 KiB.
    pub(crate) fn new() -> Self {
        DatagramBatch {
            buffers: (0..DATAGRAMS_PER_CALL).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            headers: MultiHeaders::preallocate(DATAGRAMS_PER_CALL, None),
            received: Vec::with_capacity(DATAGRAMS_PER_CALL),
        }
    }

    /// Reads the datagrams waiting on `socket`, up to [`DATAGRAMS_PER_CALL`]; returns how many it read (at least
    /// one: with none waiting the error is `WouldBlock`). A datagram whose sender is not an IP address (which a
    /// UDP socket cannot have) is skipped.
    pub(crate) fn receive(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.received.clear();
        let mut slices: Vec<[IoSliceMut<'_>; 1]> =
            self.buffers.iter_mut().map(|buffer| [IoSliceMut::new(buffer.as_mut_slice())]).collect();
        let results = recvmmsg(socket.as_raw_fd(), &mut self.headers, slices.iter_mut(), MsgFlags::empty(), None)?;
        self.received.extend(results.map(|message| (message.bytes, message.address.as_ref().and_then(socket_addr))));
        Ok(self.received.len())
    }

    /// The datagrams the last [`DatagramBatch::receive`] read, each with its sender, in order.
    pub(crate) fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.received
            .iter()
            .zip(&self.buffers)
            .filter_map(|(&(len, from), buffer)| Some((buffer.get(..len).unwrap_or_default(), from?)))
    }
}

/// The IP socket address in a `sockaddr` the kernel filled in.
fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
        (Some(v4), _) => Some(SocketAddr::from(*v4)),
        (_, Some(v6)) => Some(SocketAddr::from(*v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        a.connect(b.local_addr().expect("addr")).expect("connect");
        b.set_nonblocking(true).expect("non-blocking");
        (a, b)
    }

    #[test]
    fn one_call_reads_every_waiting_datagram_in_order_with_its_sender() {
        let (sender, receiver) = pair();
        for i in 0..5u8 {
            sender.send(&vec![i; 100 + usize::from(i)]).expect("send");
        }
        let mut batch = DatagramBatch::new();
        assert_eq!(batch.receive(&receiver).expect("receive"), 5);
        let got: Vec<(Vec<u8>, SocketAddr)> = batch.datagrams().map(|(d, from)| (d.to_vec(), from)).collect();
        let expected: Vec<(Vec<u8>, SocketAddr)> =
            (0..5u8).map(|i| (vec![i; 100 + usize::from(i)], sender.local_addr().expect("addr"))).collect();
        assert_eq!(got, expected);
        let error = batch.receive(&receiver).expect_err("nothing left");
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(batch.datagrams().count(), 0, "an empty read leaves no datagrams from before");
    }

    #[test]
    fn a_call_reads_at_most_a_batch_and_the_next_call_the_rest() {
        let (sender, receiver) = pair();
        let total = DATAGRAMS_PER_CALL + 3;
        for i in 0..total {
            sender.send(&(i as u32).to_be_bytes()).expect("send");
        }
        let mut batch = DatagramBatch::new();
        let mut seen = Vec::new();
        while let Ok(n) = batch.receive(&receiver) {
            assert!(n <= DATAGRAMS_PER_CALL);
            seen.extend(batch.datagrams().map(|(d, _)| u32::from_be_bytes(d.try_into().expect("4 bytes"))));
        }
        assert_eq!(seen, (0..total as u32).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_size_datagram_is_read_whole() {
        let (sender, receiver) = pair();
        let big = vec![7u8; 65507];
        sender.send(&big).expect("send");
        let mut batch = DatagramBatch::new();
        batch.receive(&receiver).expect("receive");
        assert_eq!(batch.datagrams().next().map(|(d, _)| d.len()), Some(big.len()));
    }
}
