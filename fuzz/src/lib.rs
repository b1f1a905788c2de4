//! Shared harness of the engine fuzz targets: an engine with a small test policy, a fake upstream whose answers
//! come from the fuzz input, a virtual clock, and a tiny "phone" that turns input bytes into well-formed packets
//! (real checksums; sequence and acknowledgement numbers that follow what the engine sent), so the fuzzer gets
//! past the handshake into sniffing, dialing and splicing instead of only exercising the header parsers.
//!
//! The fake upstream also checks the promise that a blocked server never receives a packet: it panics if the
//! engine dials (TCP or UDP) a destination the test policy blocks by address, or sends upstream a TLS ClientHello
//! or QUIC Initial naming a blocked host. Steps that send ClientHellos and sealed QUIC Initials naming blocked and
//! allowed hosts (split and overlapping as the input says) let the fuzzer reach those paths.

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use hushwall_core::engine::{Engine, EngineConfig, FlowId, Upstream};
use hushwall_core::inspect::quic::seal::{client_initial, crypto_frame};
use hushwall_core::inspect::quic::{crypto_frames, open_client_initial, VERSION_1, VERSION_2};
use hushwall_core::inspect::tls::{scan_client_hello, ClientHelloScan};
use hushwall_core::policy::{ListRole, ListSource, Policy};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The test list: names, an address range, both families.
pub const LIST: &str = "||tracking.intl.miui.com^\nsa.api.intl.miui.com\n198.19.0.0/24\nfd00:6877:bad::/48\n";

/// Reads the fuzz input front to back; past the end every read is zero.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps the input.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// One byte.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    /// Two bytes, big-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    /// Four bytes, big-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

/// The fake network: what the engine asked for is counted and bounded; what it reads comes from the input.
#[derive(Default)]
pub struct FakeUpstream {
    /// Bytes each TCP flow will read next (then `WouldBlock`, or EOF if marked).
    pub to_read: HashMap<FlowId, (Vec<u8>, bool)>,
    /// Flows the engine opened and has not closed, TCP and UDP.
    pub open: HashMap<FlowId, SocketAddr>,
    /// How many more writes succeed before `WouldBlock` (backpressure).
    pub write_budget: usize,
    /// Make connects and sends fail.
    pub fail: bool,
    /// The policy the engine enforces: nothing it blocks may be dialled or named upstream.
    pub policy: Option<Arc<Policy>>,
    /// The first bytes written upstream per TCP flow (bounded), scanned for a ClientHello.
    pub tcp_sent: HashMap<FlowId, Vec<u8>>,
    /// The datagrams sent upstream per UDP flow, read as a QUIC server would.
    pub quic_sent: HashMap<FlowId, ServerView>,
}

/// What a QUIC server could read from the client Initials sent on one flow: every Initial that opens, whatever
/// its datagram size or connection ID (more than a strict server reads), and the *first* copy of each CRYPTO byte
/// (what a server that ignores retransmitted data keeps), so that an engine judging another copy is caught.
#[derive(Default)]
pub struct ServerView {
    stream: Vec<u8>,
    filled: Vec<bool>,
}

impl ServerView {
    /// Adds a datagram sent upstream; the host named by the ClientHello read so far, if complete.
    fn push(&mut self, datagram: &[u8]) -> Option<String> {
        let mut rest = datagram;
        while let Ok((initial, used)) = open_client_initial(rest) {
            for (offset, data) in crypto_frames(&initial.payload) {
                let Some(start) = usize::try_from(offset).ok().filter(|s| s + data.len() <= TCP_SENT_KEPT) else {
                    continue;
                };
                let end = start + data.len();
                if self.stream.len() < end {
                    self.stream.resize(end, 0);
                    self.filled.resize(end, false);
                }
                for (i, &b) in data.iter().enumerate() {
                    if !self.filled[start + i] {
                        self.stream[start + i] = b;
                        self.filled[start + i] = true;
                    }
                }
            }
            rest = rest.get(used..).unwrap_or_default();
        }
        let contiguous = self.filled.iter().position(|f| !f).unwrap_or(self.filled.len());
        let mut records = Vec::new();
        for chunk in self.stream[..contiguous].chunks(1 << 14) {
            records.extend_from_slice(&[0x16, 0x03, 0x01]);
            records.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            records.extend_from_slice(chunk);
        }
        match scan_client_hello(&records) {
            ClientHelloScan::Sni(name) => Some(name),
            _ => None,
        }
    }
}

/// Most bytes per TCP flow kept for the ClientHello check (the largest ClientHello the engine reads).
const TCP_SENT_KEPT: usize = 64 * 1024;

impl FakeUpstream {
    /// Panics if the policy blocks `dst` by address.
    fn check_destination(&self, dst: SocketAddr) {
        if let Some(policy) = &self.policy {
            assert!(!policy.check_ip(dst.ip()).is_blocked(), "dialled {dst}, which the policy blocks");
        }
    }

    /// Panics if `name`, read from what was sent upstream, is blocked.
    fn check_name_sent(&self, name: &str, what: &str) {
        if let Some(policy) = &self.policy {
            assert!(!policy.check_name(name).is_blocked(), "sent upstream a {what} naming blocked {name}");
        }
    }
}

impl Upstream for FakeUpstream {
    fn tcp_connect(&mut self, flow: FlowId, dst: SocketAddr) -> io::Result<()> {
        self.check_destination(dst);
        if self.fail {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        self.open.insert(flow, dst);
        Ok(())
    }
    fn tcp_write(&mut self, flow: FlowId, data: &[u8]) -> io::Result<usize> {
        if self.write_budget == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.write_budget -= 1;
        let taken = data.len().min(1000);
        let sent = self.tcp_sent.entry(flow).or_default();
        if sent.len() < TCP_SENT_KEPT {
            sent.extend_from_slice(&data[..taken.min(TCP_SENT_KEPT - sent.len())]);
            if let ClientHelloScan::Sni(name) = scan_client_hello(sent) {
                self.check_name_sent(&name, "TLS ClientHello");
            }
        }
        Ok(taken)
    }
    fn tcp_read(&mut self, flow: FlowId, buf: &mut [u8]) -> io::Result<usize> {
        let Some((pending, eof)) = self.to_read.get_mut(&flow) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        if pending.is_empty() {
            return if *eof { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        pending.drain(..n);
        Ok(n)
    }
    fn tcp_shutdown_write(&mut self, _: FlowId) {}
    fn tcp_close(&mut self, flow: FlowId, _: bool) {
        self.open.remove(&flow);
        self.to_read.remove(&flow);
        self.tcp_sent.remove(&flow);
    }
    fn udp_open(&mut self, flow: FlowId, dst: SocketAddr) -> io::Result<()> {
        self.check_destination(dst);
        if self.fail {
            return Err(io::ErrorKind::NetworkUnreachable.into());
        }
        self.open.insert(flow, dst);
        Ok(())
    }
    fn udp_send(&mut self, flow: FlowId, data: &[u8]) -> io::Result<()> {
        if flow != FlowId(0) {
            // What a server would read from the datagrams (the DNS forwarder's flow 0 carries no QUIC).
            if let Some(name) = self.quic_sent.entry(flow).or_default().push(data) {
                self.check_name_sent(&name, "QUIC Initial");
            }
        }
        if self.fail {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        Ok(())
    }
    fn udp_close(&mut self, flow: FlowId) {
        self.open.remove(&flow);
        self.quic_sent.remove(&flow);
    }
}

const PHONE_V4: [u8; 4] = [10, 111, 0, 1];
const PHONE_V6: [u8; 16] = [0xfd, 0, 0x68, 0x77, 0, 0xf, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// Destinations the phone talks to: normal, telemetry, shared, blocked range, resolver (v4 then v6).
const DSTS_V4: [[u8; 4]; 5] = [[198, 18, 1, 1], [198, 18, 1, 2], [198, 18, 1, 3], [198, 19, 0, 10], [198, 18, 53, 53]];
const PORTS: [u16; 8] = [80, 443, 53, 853, 7777, 7, 8080, 5353];
/// Hosts the ClientHellos of the TLS and QUIC steps name: blocked (two rules), allowed, and the same lengths.
const HOSTS: [&str; 4] =
    ["tracking.intl.miui.com", "sa.api.intl.miui.com", "www.example.org", "www.example-shop.co.uk"];

/// A TLS ClientHello handshake message (without the record header) naming `name`, padded with `pad` bytes.
fn client_hello(name: &str, pad: usize) -> Vec<u8> {
    let n = name.len() as u16;
    let mut ext = vec![0x00, 0x00];
    ext.extend_from_slice(&(n + 5).to_be_bytes());
    ext.extend_from_slice(&(n + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&n.to_be_bytes());
    ext.extend_from_slice(name.as_bytes());
    ext.extend_from_slice(&[0x00, 0x15]);
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.resize(ext.len() + pad, 0);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01, 0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut msg = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    msg.extend_from_slice(&body);
    msg
}

/// Per phone-side TCP connection: next sequence number to send, and what the engine sent last.
#[derive(Default, Clone, Copy)]
struct PhoneTcp {
    next_seq: u32,
    ack: Option<u32>,
}

/// An engine, its fake upstream, a virtual clock and the phone's TCP bookkeeping.
pub struct Harness {
    /// The engine under test.
    pub engine: Engine,
    /// Its network.
    pub up: FakeUpstream,
    /// Virtual now.
    pub now: Instant,
    phone: HashMap<(bool, u16, SocketAddr), PhoneTcp>,
}

impl Harness {
    /// An engine with small flow caps (so the fuzzer reaches them) and the test list.
    pub fn new() -> Harness {
        let source = ListSource { name: "test.txt".into(), role: ListRole::Block, text: LIST.into() };
        let policy = Policy::compile(&[source]).expect("test list compiles");
        let now = Instant::now();
        let config = EngineConfig {
            dns_upstreams: vec!["198.18.0.1:53".parse().expect("addr")],
            max_tcp_flows: 8,
            max_udp_flows: 8,
            tcp_buffer_size: 8 * 1024,
            log_allowed: true,
            ..EngineConfig::default()
        };
        let policy = Arc::new(policy);
        Harness {
            engine: Engine::new(config, Arc::clone(&policy), now, 1_700_000_000_000),
            up: FakeUpstream { write_budget: 1 << 20, policy: Some(policy), ..FakeUpstream::default() },
            now,
            phone: HashMap::new(),
        }
    }

    /// One packet from the tun, then the stack, then everything the engine wants written back.
    pub fn tun_packet(&mut self, packet: &[u8]) {
        self.engine.handle_tun_packet(self.now, packet, &mut self.up);
        self.engine.poll(self.now, &mut self.up);
        self.drain();
    }

    /// Writes the engine's output "to the phone": remembers TCP sequence numbers for later acknowledgements.
    pub fn drain(&mut self) {
        let mut out = Vec::new();
        self.engine.drain_tun(|p| {
            out.push(p.to_vec());
            Ok(())
        });
        for p in out {
            let Ok(sliced) = SlicedPacket::from_ip(&p) else { continue };
            let Some(TransportSlice::Tcp(tcp)) = sliced.transport else { continue };
            let (src, v6) = match sliced.net {
                Some(etherparse::NetSlice::Ipv4(v4)) => (IpAddr::V4(v4.header().source_addr()), false),
                Some(etherparse::NetSlice::Ipv6(v6)) => (IpAddr::V6(v6.header().source_addr()), true),
                _ => continue,
            };
            let key = (v6, tcp.destination_port(), SocketAddr::new(src, tcp.source_port()));
            let len = tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
            let entry = self.phone.entry(key).or_default();
            entry.ack = Some(tcp.sequence_number().wrapping_add(len));
        }
        while self.engine.poll_event().is_some() {}
    }

    /// Runs timers due at the virtual now.
    pub fn timeout(&mut self) {
        self.engine.handle_timeout(self.now, &mut self.up);
        self.drain();
    }

    /// Interprets the whole input as a sequence of operations.
    pub fn run(&mut self, input: &mut Input<'_>) {
        let mut steps = 0;
        while !input.is_empty() && steps < 256 {
            steps += 1;
            self.step(input);
        }
        // Let every deadline pass: all flows must wind down without panicking.
        for _ in 0..8 {
            self.now += Duration::from_secs(120);
            self.timeout();
        }
    }

    fn step(&mut self, input: &mut Input<'_>) {
        match input.u8() % 14 {
            // A raw packet, length-prefixed.
            0 => {
                let len = usize::from(input.u16() % 2048);
                let p = input.bytes(len).to_vec();
                self.tun_packet(&p);
            }
            // A well-formed TCP segment from the phone.
            1..=4 => self.tcp_segment(input),
            // A well-formed UDP datagram from the phone (DNS when the port is 53).
            5 | 6 => self.udp_datagram(input),
            // Time passes, timers run.
            7 => {
                self.now += Duration::from_millis(u64::from(input.u16()) * 4);
                self.timeout();
            }
            // An upstream connect completes (or fails) for one of the flows the engine dialed.
            8 => {
                let ok = input.u8() % 4 != 0;
                if let Some(flow) = self.pick_flow(input) {
                    let result = if ok { Ok(()) } else { Err(io::ErrorKind::ConnectionRefused.into()) };
                    self.engine.on_tcp_connected(self.now, flow, result, &mut self.up);
                    self.engine.poll(self.now, &mut self.up);
                    self.drain();
                }
            }
            // Upstream bytes (or EOF) arrive for a TCP flow.
            9 => {
                let len = usize::from(input.u16() % 4096);
                let eof = input.u8() % 4 == 0;
                let data = input.bytes(len).to_vec();
                if let Some(flow) = self.pick_flow(input) {
                    let entry = self.up.to_read.entry(flow).or_default();
                    entry.0.extend_from_slice(&data);
                    entry.1 |= eof;
                    self.engine.on_upstream_readable(flow);
                    self.engine.on_upstream_writable(flow);
                    self.engine.poll(self.now, &mut self.up);
                    self.drain();
                }
            }
            // A datagram from upstream: to a UDP flow, or to the newest DNS query's socket as a DNS response.
            10 => {
                let to_dns = input.u8() % 2 == 0;
                let len = usize::from(input.u16() % 1500);
                let data = input.bytes(len).to_vec();
                let newest_dns = self.up.open.iter().filter(|(_, dst)| dst.port() == 53).map(|(&f, _)| f).max();
                let flow = if to_dns { newest_dns } else { self.pick_flow(input) };
                if let Some(flow) = flow {
                    if input.u8() % 8 == 0 {
                        self.engine.on_udp_error(self.now, flow, io::ErrorKind::ConnectionRefused.into(), &mut self.up);
                    } else {
                        self.engine.on_udp_datagram(self.now, flow, &data, &mut self.up);
                    }
                    self.engine.poll(self.now, &mut self.up);
                    self.drain();
                }
            }
            // A TCP segment carrying (part of) a TLS record with a ClientHello naming one of the hosts.
            12 => self.tcp_segment_with_hello(input),
            // A UDP datagram of two sealed QUIC Initials with CRYPTO frames of ClientHellos naming the hosts.
            13 => self.quic_datagram(input),
            // Upstream conditions change: failures, backpressure.
            _ => {
                let b = input.u8();
                self.up.fail = b & 1 != 0;
                self.up.write_budget = if b & 2 != 0 { 0 } else { 1 << 20 };
                let flows: Vec<FlowId> = self.up.open.keys().copied().collect();
                for flow in flows {
                    self.engine.on_upstream_writable(flow);
                }
                self.engine.poll(self.now, &mut self.up);
                self.drain();
            }
        }
    }

    fn pick_flow(&mut self, input: &mut Input<'_>) -> Option<FlowId> {
        let mut flows: Vec<FlowId> = self.up.open.keys().copied().collect();
        if flows.is_empty() {
            return None;
        }
        flows.sort_unstable();
        Some(flows[usize::from(input.u8()) % flows.len()])
    }

    fn addrs(input: &mut Input<'_>) -> (bool, IpAddr, IpAddr) {
        let b = input.u8();
        let v6 = b & 0x80 != 0;
        let d = DSTS_V4[usize::from(b & 0x7f) % DSTS_V4.len()];
        if v6 {
            let dst = match d {
                [198, 19, ..] => [0xfd, 0, 0x68, 0x77, 0xb, 0xad, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10],
                [198, 18, 53, 53] => [0xfd, 0, 0x68, 0x77, 0, 0x53, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53],
                [_, _, _, last] => [0xfd, 0, 0x68, 0x77, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, last],
            };
            (true, IpAddr::from(PHONE_V6), IpAddr::from(dst))
        } else {
            (false, IpAddr::from(PHONE_V4), IpAddr::from(d))
        }
    }

    fn tcp_segment(&mut self, input: &mut Input<'_>) {
        let len = usize::from(input.u16() % 1400);
        let payload = input.bytes(len).to_vec();
        self.tcp_segment_carrying(input, payload);
    }

    /// A TCP segment whose payload is a slice of a TLS record holding a ClientHello naming one of [`HOSTS`].
    fn tcp_segment_with_hello(&mut self, input: &mut Input<'_>) {
        let hello = client_hello(HOSTS[usize::from(input.u8()) % HOSTS.len()], usize::from(input.u16() % 3000));
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&(hello.len() as u16).to_be_bytes());
        record.extend_from_slice(&hello);
        let start = usize::from(input.u16()) % (record.len() + 1);
        let end = (start + 1 + usize::from(input.u16() % 1400)).min(record.len());
        self.tcp_segment_carrying(input, record[start..end].to_vec());
    }

    /// A datagram of two sealed QUIC Initials (v1 or v2, one connection ID), each with a CRYPTO frame taken from a
    /// ClientHello naming one of [`HOSTS`] at an offset the input chooses, padded to a size it chooses.
    fn quic_datagram(&mut self, input: &mut Input<'_>) {
        let (_, src, dst) = Self::addrs(input);
        let sport = 50000 + u16::from(input.u8() % 16);
        let dport = PORTS[usize::from(input.u8()) % PORTS.len()];
        let mode = input.u8();
        let version = if mode & 1 == 0 { VERSION_1 } else { VERSION_2 };
        let dcid = [mode >> 4; 8];
        let mut datagram = Vec::new();
        for pn in 0..2u32 {
            let hello = client_hello(HOSTS[usize::from(input.u8()) % HOSTS.len()], usize::from(input.u16() % 1500));
            let start = usize::from(input.u16()) % (hello.len() + 1);
            let end = (start + usize::from(input.u16())).min(hello.len());
            let size = 600 + usize::from(input.u8()) * 4;
            datagram.extend(client_initial(version, &dcid, pn, &crypto_frame(start as u64, &hello[start..end]), size));
        }
        self.udp_to(src, dst, sport, dport, &datagram);
    }

    fn tcp_segment_carrying(&mut self, input: &mut Input<'_>, payload: Vec<u8>) {
        let (v6, src, dst) = Self::addrs(input);
        let sport = 40000 + u16::from(input.u8() % 16);
        let dport = PORTS[usize::from(input.u8()) % PORTS.len()];
        let flags = input.u8();
        let window = input.u16();
        let key = (v6, sport, SocketAddr::new(dst, dport));
        let state = self.phone.entry(key).or_default();
        // Bit 7: take sequence and acknowledgement numbers from the input instead of the tracked ones.
        let (seq, ack) =
            if flags & 0x80 != 0 { (input.u32(), input.u32()) } else { (state.next_seq, state.ack.unwrap_or(0)) };
        let syn = flags & 1 != 0;
        let fin = flags & 2 != 0;
        let rst = flags & 4 != 0;
        let has_ack = flags & 8 != 0 || (!syn && state.ack.is_some());
        state.next_seq = seq.wrapping_add(payload.len() as u32 + u32::from(syn) + u32::from(fin));
        let builder = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
            _ => return,
        };
        let mut tcp = builder.tcp(sport, dport, seq, window);
        if syn {
            tcp = tcp.syn();
        }
        if fin {
            tcp = tcp.fin();
        }
        if rst {
            tcp = tcp.rst();
        }
        if has_ack {
            tcp = tcp.ack(ack);
        }
        if flags & 16 != 0 {
            tcp = tcp.psh();
        }
        let mut p = Vec::with_capacity(payload.len() + 60);
        if tcp.write(&mut p, &payload).is_ok() {
            self.tun_packet(&p);
        }
    }

    fn udp_datagram(&mut self, input: &mut Input<'_>) {
        let (_, src, dst) = Self::addrs(input);
        let sport = 50000 + u16::from(input.u8() % 16);
        let dport = PORTS[usize::from(input.u8()) % PORTS.len()];
        let len = usize::from(input.u16() % 1400);
        let payload = input.bytes(len).to_vec();
        self.udp_to(src, dst, sport, dport, &payload);
    }

    fn udp_to(&mut self, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) {
        let builder = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
            (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
            _ => return,
        };
        let mut p = Vec::with_capacity(payload.len() + 48);
        if builder.udp(sport, dport).write(&mut p, payload).is_ok() {
            self.tun_packet(&p);
        }
    }

    /// Checks the engine's invariants after a run: flow counts within the caps, and (call it after [`Harness::run`],
    /// which lets every deadline pass) no UDP flow outlives its idle timeout.
    pub fn check_invariants(&self) {
        let stats = self.engine.stats();
        assert!(stats.tcp_active <= 8, "tcp flows over the cap: {stats:?}");
        assert!(stats.udp_active <= 8, "udp flows over the cap: {stats:?}");
    }

    /// After [`Harness::run`]: every UDP flow has expired (the idle timeout is 60 s; 16 minutes passed).
    pub fn check_wound_down(&self) {
        let stats = self.engine.stats();
        assert_eq!(stats.udp_active, 0, "UDP flows outlived their idle timeout: {stats:?}");
    }
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}
