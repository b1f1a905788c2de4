//! Engine-only cost: the engine between a smoltcp "phone" and a fake upstream on a virtual clock, with no kernel,
//! tun or socket in the loop (the way the core's engine tests pair them).
//!
//! `bench/run.sh` measures the whole path, where 80–90 % of the CPU is the kernel's tun and socket work, and that
//! share depends on the machine. This measures only what runs in user space for each byte: the engine's calls
//! (the same ones the driver makes: `handle_tun_packet`, upstream readiness, `handle_timeout`,
//! `take_tun_packets`) are timed with the thread's CPU clock and their heap allocations counted, apart from the
//! phone's own smoltcp work. So it can be compared across machines and architectures (it builds for
//! `aarch64-linux-android`, see `bench/build-android.sh`).

use crate::counting::ALLOCATIONS;
use hushwall_core::engine::{Engine, EngineConfig, FlowId, OwnerLookup, SocketAction, SocketDriver, Transfer};
use hushwall_core::event::Protocol;
use hushwall_core::policy::{Policy, Profile};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which way the bytes move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Phone → server: the engine reads segments from the tun and writes to the upstream socket.
    Upload,
    /// Server → phone: the engine reads the upstream socket and builds segments for the tun.
    Download,
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which way the bytes moved.
    pub direction: Direction,
    /// The tun MTU the engine and the phone used.
    pub mtu: usize,
    /// Payload bytes that crossed the engine.
    pub bytes: u64,
    /// CPU time spent inside the engine's calls.
    pub engine_cpu: Duration,
    /// CPU time the phone's smoltcp stack took (not the engine's; reported so the split is visible).
    pub phone_cpu: Duration,
    /// Heap allocations made inside the engine's calls.
    pub engine_allocations: u64,
    /// Packets the engine read from and wrote to the tun.
    pub packets: u64,
}

impl Report {
    /// Payload megabytes (10⁶ bytes) the engine moves per second of its own CPU time.
    pub fn mb_per_cpu_second(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.engine_cpu.as_secs_f64().max(1e-9)
    }

    /// Heap allocations in the engine per megabyte moved.
    pub fn allocations_per_mb(&self) -> f64 {
        self.engine_allocations as f64 / (self.bytes as f64 / 1e6).max(1e-9)
    }

    /// One line for a terminal or BENCHMARKS.md.
    pub fn line(&self) -> String {
        format!(
            "{:<8} MTU {:>5}: {:>6.0} MB moved, engine {:>6.3} CPU-s = {:>7.0} MB/CPU-s ({:>5.2} Gbit/s per core), \
             {:>6.1} allocations/MB, {:>5.0} ns/packet; phone stack {:.3} CPU-s",
            format!("{:?}", self.direction).to_lowercase(),
            self.mtu,
            self.bytes as f64 / 1e6,
            self.engine_cpu.as_secs_f64(),
            self.mb_per_cpu_second(),
            self.mb_per_cpu_second() * 8.0 / 1000.0,
            self.allocations_per_mb(),
            self.engine_cpu.as_secs_f64() * 1e9 / self.packets.max(1) as f64,
            self.phone_cpu.as_secs_f64(),
        )
    }
}

/// The server the phone talks to (an address no list blocks) and a port no sniffing rule knows.
const SERVER: ([u8; 4], u16) = ([198, 18, 1, 1], 5201);
/// The phone's address on the tun.
const PHONE: [u8; 4] = [10, 111, 0, 1];
/// Virtual time that passes per round of the loop.
const TICK: Duration = Duration::from_micros(100);
/// Buffer sizes of the phone's socket (as a phone's kernel would autotune to, roughly).
const PHONE_BUFFER: usize = 1024 * 1024;

/// Moves `bytes` payload bytes through one TCP connection with the built-in balanced policy and measures the
/// engine. Errors if the connection does not get going (a bug in the engine or in this harness).
pub fn run(direction: Direction, mtu: usize, bytes: u64) -> io::Result<Report> {
    let policy = Policy::compile(&Profile::Balanced.sources()).map_err(|e| io::Error::other(e.to_string()))?;
    let config = EngineConfig { mtu, ..EngineConfig::default() };
    let start = Instant::now();
    let mut now = start;
    let mut engine = Engine::new(config, Arc::new(policy), now, 1_700_000_000_000);
    let mut up = SinkAndSource::default();
    let mut wire = Wire { mtu, ..Wire::default() };
    let mut phone = Interface::new(Config::new(HardwareAddress::Ip), &mut wire, smoltcp::time::Instant::ZERO);
    phone.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::from(Ipv4Address::from(PHONE)), 32));
    });
    let _ = phone.routes_mut().add_default_ipv4_route(Ipv4Address::from(PHONE));
    let mut sockets = SocketSet::new(Vec::new());
    let mut socket =
        tcp::Socket::new(tcp::SocketBuffer::new(vec![0; PHONE_BUFFER]), tcp::SocketBuffer::new(vec![0; PHONE_BUFFER]));
    socket
        .connect(phone.context(), (IpAddress::from(Ipv4Address::from(SERVER.0)), SERVER.1), 40000)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let handle = sockets.add(socket);

    let mut report = Report {
        direction,
        mtu,
        bytes: 0,
        engine_cpu: Duration::ZERO,
        phone_cpu: Duration::ZERO,
        engine_allocations: 0,
        packets: 0,
    };
    let mut out = Vec::new();
    // The client speaks first with bytes that are neither TLS nor HTTP, so the engine decides by address.
    let mut greeting_sent = false;
    let payload = vec![0x5a_u8; 64 * 1024];
    let mut rounds_without_progress = 0;
    let mut last_moved = 0;
    while report.bytes < bytes {
        let t = smoltcp::time::Instant::from_micros(i64::try_from((now - start).as_micros()).unwrap_or(i64::MAX));
        let phone_started = thread_cpu();
        let s = sockets.get_mut::<tcp::Socket>(handle);
        if s.may_send() {
            if !greeting_sent {
                greeting_sent = s.send_slice(b"\x00hushwall-bench\n").is_ok();
            } else if direction == Direction::Upload {
                let _ = s.send_slice(&payload);
            }
        }
        if direction == Direction::Download {
            while s.can_recv() {
                match s.recv(|data| (data.len(), data.len())) {
                    Ok(n) if n > 0 => report.bytes += n as u64,
                    _ => break,
                }
            }
        }
        phone.poll(t, &mut wire, &mut sockets);
        report.phone_cpu += thread_cpu().saturating_sub(phone_started);

        let engine_started = thread_cpu();
        let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
        for packet in wire.from_phone.drain(..) {
            engine.handle_tun_packet(now, &packet, &mut up);
            report.packets += 1;
        }
        engine.perform_socket_actions(now, &mut up);
        if let Some(flow) = up.flow {
            if up.connecting {
                up.connecting = false;
                engine.on_tcp_connected(now, flow, Ok(()));
            }
            engine.upstream_writable(now, flow, |data| up.write(flow, data));
            if direction == Direction::Download {
                engine.upstream_readable(now, flow, |buf| up.read(flow, buf));
            }
        }
        engine.handle_timeout(now);
        engine.perform_socket_actions(now, &mut up);
        while engine.poll_event().is_some() {}
        engine.take_tun_packets(&mut out);
        report.engine_allocations += (ALLOCATIONS.load(Ordering::Relaxed) - allocations_before) as u64;
        report.engine_cpu += thread_cpu().saturating_sub(engine_started);
        // The copy to the phone is the harness's (the driver hands the buffers to the tun writer instead).
        report.packets += out.len() as u64;
        wire.to_phone.extend(out.iter().cloned());
        let engine_started = thread_cpu();
        let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
        engine.recycle_tun_buffers(out.drain(..));
        report.engine_allocations += (ALLOCATIONS.load(Ordering::Relaxed) - allocations_before) as u64;
        report.engine_cpu += thread_cpu().saturating_sub(engine_started);

        if direction == Direction::Upload {
            report.bytes = up.written;
        }
        if report.bytes == last_moved {
            rounds_without_progress += 1;
            if rounds_without_progress > 100_000 {
                return Err(io::Error::other(format!("stalled after {} bytes", report.bytes)));
            }
        } else {
            rounds_without_progress = 0;
            last_moved = report.bytes;
        }
        now += TICK;
    }
    Ok(report)
}

/// The upstream: accepts every byte written (counting them) and has an endless supply to read.
#[derive(Default)]
struct SinkAndSource {
    flow: Option<FlowId>,
    connecting: bool,
    written: u64,
}

impl SocketDriver for SinkAndSource {
    /// Performs one socket action: the one flow's connect is taken (and reported connected in the next round);
    /// the rest need nothing of an upstream that is all in memory.
    fn perform(&mut self, action: SocketAction) -> io::Result<()> {
        if let SocketAction::TcpConnect { flow, .. } = action {
            self.flow = Some(flow);
            self.connecting = true;
        }
        Ok(())
    }
    fn write(&mut self, _: FlowId, data: &[u8]) -> Transfer {
        self.written += data.len() as u64;
        Transfer::Moved(data.len())
    }
    fn read(&mut self, _: FlowId, buf: &mut [u8]) -> Transfer {
        buf.fill(0xa5);
        Transfer::Moved(buf.len())
    }
}

impl OwnerLookup for SinkAndSource {
    /// The benchmark's flow has no owning app.
    fn owner_uid(&mut self, _: Protocol, _: SocketAddr, _: SocketAddr) -> Option<u32> {
        None
    }
}

/// The phone's side of the tun, in memory.
#[derive(Default)]
struct Wire {
    mtu: usize,
    to_phone: VecDeque<Vec<u8>>,
    from_phone: VecDeque<Vec<u8>>,
}

/// A packet for the phone's stack.
struct PhoneRx(Vec<u8>);
/// A packet from the phone's stack.
struct PhoneTx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for PhoneRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for PhoneTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push_back(buf);
        r
    }
}

impl Device for Wire {
    type RxToken<'a> = PhoneRx;
    type TxToken<'a> = PhoneTx<'a>;
    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(PhoneRx, PhoneTx<'_>)> {
        let p = self.to_phone.pop_front()?;
        Some((PhoneRx(p), PhoneTx(&mut self.from_phone)))
    }
    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<PhoneTx<'_>> {
        Some(PhoneTx(&mut self.from_phone))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// CPU time this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_move_the_bytes_asked_for() {
        for direction in [Direction::Upload, Direction::Download] {
            let report = run(direction, 1500, 2_000_000).expect("runs");
            assert!(report.bytes >= 2_000_000, "{report:?}");
            assert!(report.packets > 1000, "{report:?}");
            assert!(report.engine_cpu > Duration::ZERO, "{report:?}");
        }
    }
}
