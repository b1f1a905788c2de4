//! The smoltcp side of the engine: an in-memory `phy::Device` between the tun and smoltcp, and the interface
//! that terminates every TCP connection the phone opens (AnyIP, so it answers for every destination).

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, Ipv4Address, Ipv6Address};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// At most this many spare packet buffers are kept for reuse in each direction.
const POOL_MAX: usize = 512;
/// smoltcp may queue at most this many packets for the tun before the driver drains them. smoltcp's `poll`
/// repeats egress as long as a socket emits something, so with an unbounded device a socket that always has
/// something to send (the fuzzer found one) makes a single `poll` loop forever and grow the queue until the
/// process runs out of memory. A full queue makes the device say "exhausted", as a real NIC would.
pub(crate) const OUT_MAX: usize = 4096;

/// Packet queues between the tun and smoltcp, with buffer pools so the steady state allocates nothing.
pub(crate) struct QueueDevice {
    /// Packets from the tun waiting for smoltcp.
    rx: VecDeque<Vec<u8>>,
    /// Packets for the tun (from smoltcp and from the engine's own replies).
    pub(crate) out: VecDeque<Vec<u8>>,
    rx_pool: Vec<Vec<u8>>,
    pub(crate) tx_pool: Vec<Vec<u8>>,
    mtu: usize,
}

impl QueueDevice {
    fn new(mtu: usize) -> Self {
        QueueDevice { rx: VecDeque::new(), out: VecDeque::new(), rx_pool: Vec::new(), tx_pool: Vec::new(), mtu }
    }

    /// A cleared buffer for a packet to the tun.
    pub(crate) fn take_out_buffer(&mut self) -> Vec<u8> {
        self.tx_pool.pop().unwrap_or_else(|| Vec::with_capacity(self.mtu))
    }

    /// Returns a written-out buffer to the pool.
    pub(crate) fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.tx_pool.len() < POOL_MAX {
            buf.clear();
            self.tx_pool.push(buf);
        }
    }
}

/// Hands one queued tun packet to smoltcp.
pub(crate) struct QueueRxToken<'a> {
    buf: Vec<u8>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl RxToken for QueueRxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.buf);
        if self.pool.len() < POOL_MAX {
            let mut buf = self.buf;
            buf.clear();
            self.pool.push(buf);
        }
        result
    }
}

/// Lets smoltcp write one packet for the tun.
pub(crate) struct QueueTxToken<'a> {
    out: &'a mut VecDeque<Vec<u8>>,
    pool: &'a mut Vec<Vec<u8>>,
}

impl TxToken for QueueTxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let result = f(&mut buf);
        self.out.push_back(buf);
        result
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = QueueRxToken<'a>;
    type TxToken<'a> = QueueTxToken<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let buf = self.rx.pop_front()?;
        Some((
            QueueRxToken { buf, pool: &mut self.rx_pool },
            QueueTxToken { out: &mut self.out, pool: &mut self.tx_pool },
        ))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<Self::TxToken<'_>> {
        if self.out.len() >= OUT_MAX {
            return None;
        }
        Some(QueueTxToken { out: &mut self.out, pool: &mut self.tx_pool })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// At most this many TCP sockets of ended flows are kept, with their buffers, for new flows (see [`Spare`]).
const SPARE_SOCKETS_MAX: usize = 8;

/// TCP sockets of ended flows, kept with their buffers so that a new flow does not pay for fresh ones: at the
/// engine's 256 KiB a buffer is `mmap`ped, page-faulted in as it is touched and `munmap`ped when freed, about a
/// sixth of the engine's CPU per short connection (BENCHMARKS.md, "Where the tail comes from"). The most
/// recently freed [`SPARE_SOCKETS_MAX`] are kept, whatever their sizes (budgeted flows get small buffers); a new
/// flow takes one whose buffers have exactly the sizes it asks for, so budgets keep working. Bounded: at most
/// `SPARE_SOCKETS_MAX` pairs of the largest buffers stay resident after the flows are gone.
///
/// A reused socket starts as a new one would. `listen` resets smoltcp's connection state (sequence numbers,
/// timers, RTT estimate, reassembly, both rings' positions) and [`configure`] sets every option the engine uses,
/// the congestion controller afresh. The old flow's bytes stay in the rings' memory but are never exposed: a ring
/// hands out only bytes written into it since the reset (the phone's segments into the receive ring, the
/// upstream's answer into the send ring), and smoltcp sends only from the part of the send ring written to.
/// What `listen` does not reset is bookkeeping that a new connection overwrites before it matters (the peer's
/// SACK permission and last timestamp, taken from its SYN) or that only compares against the previous flow's
/// sequence numbers (duplicate-ACK and SACK tracking, which a new connection's random initial sequence number
/// does not meet); at worst one segment is sent twice.
#[derive(Default)]
struct Spare {
    sockets: VecDeque<tcp::Socket<'static>>,
}

impl Spare {
    /// Takes a socket whose buffers have these sizes, if one is kept.
    fn take(&mut self, rx_size: usize, tx_size: usize) -> Option<tcp::Socket<'static>> {
        let at = self.sockets.iter().rposition(|s| s.recv_capacity() == rx_size && s.send_capacity() == tx_size)?;
        self.sockets.remove(at)
    }

    /// Keeps an ended flow's socket, dropping (freeing) the oldest kept one if there are already enough.
    fn keep(&mut self, mut socket: tcp::Socket<'static>) {
        // Closed without a word: the socket is out of the set, so nothing is sent (no RST), and `listen` accepts
        // only a closed socket.
        socket.abort();
        if self.sockets.len() >= SPARE_SOCKETS_MAX {
            self.sockets.pop_front();
        }
        self.sockets.push_back(socket);
    }
}

/// Sets the options of a flow's socket (new or reused: see [`Spare`]).
fn configure(socket: &mut tcp::Socket<'static>, hold_synack: bool) {
    socket.set_nagle_enabled(false);
    socket.set_congestion_control(tcp::CongestionControl::Cubic);
    socket.pause_synack(hold_synack);
}

/// smoltcp's interface, its sockets and the device, plus the clock conversion.
pub(crate) struct Stack {
    iface: Interface,
    pub(crate) sockets: SocketSet<'static>,
    pub(crate) device: QueueDevice,
    epoch: Instant,
    spare: Spare,
}

impl Stack {
    /// An interface that accepts traffic for any address (`0.0.0.1/0`, `::1/0`, AnyIP).
    pub(crate) fn new(mtu: usize, seed: u64, now: Instant) -> Self {
        let mut device = QueueDevice::new(mtu);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut device, SmolInstant::ZERO);
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            // Two addresses always fit in smoltcp's fixed-size address list.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(Ipv4Address::new(0, 0, 0, 1)), 0));
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(Ipv6Address::LOCALHOST), 0));
        });
        // The route table has room for these two defaults; a failure would only mean a full table.
        let _ = iface.routes_mut().add_default_ipv4_route(Ipv4Address::new(0, 0, 0, 1));
        let _ = iface.routes_mut().add_default_ipv6_route(Ipv6Address::LOCALHOST);
        Stack { iface, sockets: SocketSet::new(Vec::new()), device, epoch: now, spare: Spare::default() }
    }

    fn smol_now(&self, now: Instant) -> SmolInstant {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        SmolInstant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    /// Queues a packet from the tun for smoltcp (copied into a pooled buffer).
    pub(crate) fn enqueue(&mut self, packet: &[u8]) {
        let mut buf = self.device.rx_pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        self.device.rx.push_back(buf);
    }

    /// Lets smoltcp process queued packets and timers and emit what it has to send.
    pub(crate) fn poll(&mut self, now: Instant) {
        let now = self.smol_now(now);
        self.iface.poll(now, &mut self.device, &mut self.sockets);
    }

    /// When smoltcp next needs [`Stack::poll`], if ever.
    pub(crate) fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let at = self.iface.poll_at(self.smol_now(now), &self.sockets)?;
        let micros = u64::try_from(at.total_micros()).unwrap_or(0);
        Some(self.epoch + Duration::from_micros(micros))
    }

    /// Adds a socket listening on `local` (the phone's original destination) and returns its handle. Its buffers
    /// (`rx_size` and `tx_size` bytes) are an ended flow's if one of those sizes is kept (see [`Spare`]).
    pub(crate) fn listen(
        &mut self,
        local: SocketAddr,
        rx_size: usize,
        tx_size: usize,
        hold_synack: bool,
    ) -> Option<SocketHandle> {
        let mut socket = self.spare.take(rx_size, tx_size).unwrap_or_else(|| {
            tcp::Socket::new(tcp::SocketBuffer::new(vec![0; rx_size]), tcp::SocketBuffer::new(vec![0; tx_size]))
        });
        configure(&mut socket, hold_synack);
        let endpoint = IpListenEndpoint { addr: Some(local.ip().into()), port: local.port() };
        socket.listen(endpoint).ok()?;
        Some(self.sockets.add(socket))
    }

    /// The TCP socket behind `handle`.
    pub(crate) fn tcp(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// Removes a socket; it is kept for a later flow (see [`Spare`]).
    pub(crate) fn remove(&mut self, handle: SocketHandle) {
        // The engine adds only TCP sockets (another smoltcp feature enabled elsewhere would add variants).
        #[allow(irrefutable_let_patterns)]
        if let smoltcp::socket::Socket::Tcp(socket) = self.sockets.remove(handle) {
            self.spare.keep(socket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(stack: &mut Stack, port: u16, rx: usize, tx: usize) -> SocketHandle {
        let local = SocketAddr::from(([198, 18, 1, 1], port));
        stack.listen(local, rx, tx, false).expect("listens")
    }

    #[test]
    fn ended_flows_sockets_are_reused_by_size_and_bounded() {
        let mut stack = Stack::new(1500, 1, Instant::now());
        let first = listener(&mut stack, 80, 4096, 8192);
        stack.remove(first);
        assert_eq!(stack.spare.sockets.len(), 1, "an ended flow's socket is kept");
        // Other sizes (a budgeted flow's small buffers) do not take it.
        let small = listener(&mut stack, 81, 1024, 1024);
        assert_eq!(stack.spare.sockets.len(), 1);
        let second = listener(&mut stack, 82, 4096, 8192);
        assert!(stack.spare.sockets.is_empty(), "a flow of the same sizes reuses it");
        let socket = stack.tcp(second);
        assert_eq!((socket.recv_capacity(), socket.send_capacity()), (4096, 8192));
        assert_eq!(socket.state(), tcp::State::Listen);
        assert_eq!(socket.listen_endpoint().port, 82, "listening where the new flow asked");
        stack.remove(small);
        stack.remove(second);
        // At most SPARE_SOCKETS_MAX are kept, the most recently freed.
        let many: Vec<SocketHandle> =
            (0..SPARE_SOCKETS_MAX as u16 + 3).map(|i| listener(&mut stack, 1000 + i, 2048, 2048)).collect();
        for handle in many {
            stack.remove(handle);
        }
        assert_eq!(stack.spare.sockets.len(), SPARE_SOCKETS_MAX);
        assert!(stack.spare.sockets.iter().all(|s| s.recv_capacity() == 2048), "the oldest (other sizes) went first");
    }

    /// A kept socket is taken only by a flow asking for both its sizes.
    #[test]
    fn a_kept_socket_needs_both_sizes_to_match() {
        let mut stack = Stack::new(1500, 1, Instant::now());
        let first = listener(&mut stack, 80, 4096, 8192);
        stack.remove(first);
        listener(&mut stack, 81, 4096, 4096);
        listener(&mut stack, 82, 8192, 8192);
        assert_eq!(stack.spare.sockets.len(), 1, "neither took it");
    }

    /// At most 512 spare packet buffers are kept each way; more are freed.
    #[test]
    fn packet_buffer_pools_are_bounded() {
        let mut stack = Stack::new(1500, 1, Instant::now());
        for _ in 0..POOL_MAX + 10 {
            stack.device.recycle(vec![0; 100]);
            stack.enqueue(&[0x45; 20]);
        }
        assert_eq!(stack.device.tx_pool.len(), POOL_MAX);
        while let Some((rx, _)) = stack.device.receive(SmolInstant::ZERO) {
            rx.consume(|_| ());
        }
        assert_eq!(stack.device.rx_pool.len(), POOL_MAX);
    }

    /// smoltcp's next deadline (a SYN-ACK's retransmission) comes back as an instant after now on the engine's
    /// clock.
    #[test]
    fn poll_at_is_on_the_engines_clock() {
        let t0 = Instant::now();
        let mut stack = Stack::new(1500, 1, t0);
        assert_eq!(stack.poll_at(t0), None, "nothing to do");
        listener(&mut stack, 80, 4096, 4096);
        let mut syn = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 111, 0, 1], [198, 18, 1, 1], 64)
            .tcp(40000, 80, 1, 64240)
            .syn()
            .write(&mut syn, &[])
            .expect("builds");
        let now = t0 + Duration::from_secs(5);
        stack.enqueue(&syn);
        stack.poll(now);
        assert_eq!(stack.device.out.len(), 1, "the SYN-ACK");
        let at = stack.poll_at(now).expect("a retransmission is due");
        assert!(at > now && at <= now + Duration::from_secs(3), "{:?} after now", at.saturating_duration_since(now));
    }
}
