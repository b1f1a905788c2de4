//! Shared harness of the engine fuzz targets: an engine with a small test policy, a fake upstream whose answers
//! come from the fuzz input, a virtual clock, and a tiny "phone" that turns input bytes into well-formed packets
//! (real checksums; sequence and acknowledgement numbers that follow what the engine sent), so the fuzzer gets
//! past the handshake into sniffing, dialing and splicing instead of only exercising the header parsers.
//!
//! The fake upstream also checks the promise that a blocked server never receives a packet: it panics if the
//! engine dials (TCP or UDP) a destination the test policy blocks by address, or sends upstream a TLS ClientHello
//! or QUIC Initial naming a blocked host, or an HTTP request head that a server reading the connection's bytes
//! would take as naming a blocked host (every request of a keep-alive connection, as [`HttpServerView`] frames
//! them). Steps that send ClientHellos, sealed QUIC Initials and keep-alive HTTP request sequences naming blocked
//! and allowed hosts (split, padded, overlapping, chunked as the input says) let the fuzzer reach those paths.

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use hushwall_core::engine::{Engine, EngineConfig, FlowId, OwnerLookup, SocketAction, SocketDriver, Transfer};
use hushwall_core::event::Protocol;
use hushwall_core::inspect::quic::seal::{client_initial, crypto_frame};
use hushwall_core::inspect::quic::{crypto_frames, open_client_initial, VERSION_1, VERSION_2};
use hushwall_core::inspect::tls::{scan_client_hello, ClientHelloScan};
use hushwall_core::policy::{ListRole, ListSource, Policy};
use std::collections::{HashMap, HashSet};
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
    /// Bytes each TCP flow will read next (then `Transfer::Blocked`, or EOF if marked).
    pub to_read: HashMap<FlowId, (Vec<u8>, bool)>,
    /// Flows the engine opened and has not closed, TCP and UDP.
    pub open: HashMap<FlowId, SocketAddr>,
    /// How many more writes succeed before `Transfer::Blocked` (backpressure).
    pub write_budget: usize,
    /// Make connects and sends fail.
    pub fail: bool,
    /// The policy the engine enforces: nothing it blocks may be dialled or named upstream.
    pub policy: Option<Arc<Policy>>,
    /// The first bytes written upstream per TCP flow (bounded), scanned for a ClientHello.
    pub tcp_sent: HashMap<FlowId, Vec<u8>>,
    /// The datagrams sent upstream per UDP flow, read as a QUIC server would.
    pub quic_sent: HashMap<FlowId, ServerView>,
    /// The bytes sent upstream per TCP flow, read as an HTTP/1.1 server would.
    pub http_sent: HashMap<FlowId, HttpServerView>,
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

/// What an HTTP/1.1 server reading one connection's bytes (as sent upstream) takes as request heads: it frames
/// requests itself (Content-Length, chunked, trailers, empty lines before a head, a protocol switch after
/// CONNECT or `Upgrade` when the next bytes are not a request) and reads each head's host (absolute-form
/// target first, then `Host`, user info and port dropped), independently of the engine's own framing code, so
/// that a request the engine let pass unjudged is caught. Once the bytes stop being HTTP it would answer 400
/// and close: nothing after that is read.
#[derive(Default)]
pub struct HttpServerView {
    /// Bytes not yet framed (at most [`HTTP_HEAD_MAX`] while waiting for the rest of a head or line).
    pending: Vec<u8>,
    at: HttpAt,
}

/// Where an [`HttpServerView`] is in the stream.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum HttpAt {
    /// Before a request head (empty lines are skipped).
    #[default]
    Head,
    /// After a request that may have switched protocols: a head, or the end of HTTP.
    AfterSwitch,
    /// Inside a body of known length: this many bytes left.
    Body(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// Inside a chunk: this many data bytes left, then its CRLF.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines after the last chunk, up to an empty line.
    Trailers,
    /// Not HTTP (any more): the server closed, or the connection became a tunnel.
    Done,
}

/// Longest head or framing line a server waits for.
const HTTP_HEAD_MAX: usize = 64 * 1024;

impl HttpServerView {
    /// Adds bytes sent upstream; the hosts of the request heads they complete, in order.
    fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut hosts = Vec::new();
        if self.at == HttpAt::Done {
            return hosts;
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(data);
        let mut used = 0;
        while self.at != HttpAt::Done {
            match self.step(&pending[used..], &mut hosts) {
                Some(n) => used += n,
                None => break,
            }
        }
        pending.drain(..used);
        if pending.len() > HTTP_HEAD_MAX {
            self.at = HttpAt::Done;
        }
        if self.at != HttpAt::Done {
            self.pending = pending;
        }
        hosts
    }

    /// Frames what `buf` starts with; how many bytes were used, or `None` to wait for more.
    fn step(&mut self, buf: &[u8], hosts: &mut Vec<String>) -> Option<usize> {
        match self.at {
            HttpAt::Head | HttpAt::AfterSwitch => {
                let skipped = match buf {
                    [b'\r', b'\n', ..] => 2,
                    [b'\n', ..] => 1,
                    [] | [b'\r'] => return None,
                    _ => 0,
                };
                if skipped > 0 {
                    if self.at == HttpAt::AfterSwitch {
                        self.at = HttpAt::Head;
                    }
                    return Some(skipped);
                }
                let mut headers = [httparse::EMPTY_HEADER; 256];
                let mut request = httparse::Request::new(&mut headers);
                let n = match request.parse(buf) {
                    Ok(httparse::Status::Complete(n)) => n,
                    Ok(httparse::Status::Partial) => return None,
                    Err(_) => {
                        self.at = HttpAt::Done;
                        return Some(0);
                    }
                };
                let header = |name: &'static str| {
                    request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
                };
                let target = request.path.unwrap_or_default();
                let absolute = ["http://", "https://"]
                    .iter()
                    .find_map(|scheme| target.get(..scheme.len()).filter(|s| s.eq_ignore_ascii_case(scheme)))
                    .map(|scheme| target[scheme.len()..].split(['/', '?', '#']).next().unwrap_or_default());
                let authority = absolute.map(str::as_bytes).or_else(|| header("host").next());
                if let Some(host) = authority.and_then(server_host) {
                    hosts.push(host);
                }
                let chunked = header("transfer-encoding").any(|v| {
                    String::from_utf8_lossy(v)
                        .rsplit(',')
                        .next()
                        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
                });
                let length = header("content-length")
                    .next()
                    .map(|v| std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<u64>().ok()));
                let switches = request.method.is_some_and(|m| m.eq_ignore_ascii_case("CONNECT"))
                    || header("upgrade").next().is_some();
                self.at = match (chunked, length) {
                    (true, _) => HttpAt::ChunkSize,
                    (false, Some(None)) => HttpAt::Done,
                    (false, Some(Some(len))) if len > 0 => HttpAt::Body(len),
                    _ if switches => HttpAt::AfterSwitch,
                    _ => HttpAt::Head,
                };
                Some(n)
            }
            HttpAt::Body(left) => {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                if n == 0 {
                    return None;
                }
                self.at = match left - n as u64 {
                    0 => HttpAt::Head,
                    left => HttpAt::Body(left),
                };
                Some(n)
            }
            HttpAt::ChunkSize => {
                let line_end = buf.iter().position(|&b| b == b'\n')?;
                let line = String::from_utf8_lossy(&buf[..line_end]);
                let size = line.trim_end_matches('\r').split(';').next().unwrap_or_default().trim();
                self.at = match u64::from_str_radix(size, 16) {
                    Ok(0) => HttpAt::Trailers,
                    Ok(size) => HttpAt::ChunkData(size),
                    Err(_) => HttpAt::Done,
                };
                Some(line_end + 1)
            }
            HttpAt::ChunkData(left) => {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                if n == 0 {
                    return None;
                }
                self.at = match left - n as u64 {
                    0 => HttpAt::ChunkEnd,
                    left => HttpAt::ChunkData(left),
                };
                Some(n)
            }
            HttpAt::ChunkEnd => match buf {
                [b'\r', b'\n', ..] => {
                    self.at = HttpAt::ChunkSize;
                    Some(2)
                }
                [] | [b'\r'] => None,
                _ => {
                    self.at = HttpAt::Done;
                    Some(0)
                }
            },
            HttpAt::Trailers => {
                let line_end = buf.iter().position(|&b| b == b'\n')?;
                if buf[..line_end].iter().all(|&b| b == b'\r') {
                    self.at = HttpAt::Head;
                }
                Some(line_end + 1)
            }
            HttpAt::Done => None,
        }
    }
}

/// The host a server takes from an authority (`[userinfo@]host[:port]`): lower case, no trailing dot.
fn server_host(authority: &[u8]) -> Option<String> {
    let authority = std::str::from_utf8(authority).ok()?.trim();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host_port.split(':').next().unwrap_or_default(),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
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

impl SocketDriver for FakeUpstream {
    /// Performs one socket action as a driver would (checking that no blocked destination is dialled and no
    /// blocked name goes upstream); the error the engine must be told of, if it failed.
    fn perform(&mut self, action: SocketAction) -> io::Result<()> {
        match action {
            SocketAction::TcpConnect { flow, dst } => {
                self.check_destination(dst);
                if self.fail {
                    return Err(io::ErrorKind::ConnectionRefused.into());
                }
                self.open.insert(flow, dst);
            }
            SocketAction::TcpShutdownWrite { .. } => {}
            SocketAction::TcpClose { flow, .. } => {
                self.open.remove(&flow);
                self.to_read.remove(&flow);
                self.tcp_sent.remove(&flow);
                self.http_sent.remove(&flow);
            }
            SocketAction::UdpOpen { flow, dst, .. } => {
                self.check_destination(dst);
                if self.fail {
                    return Err(io::ErrorKind::NetworkUnreachable.into());
                }
                self.open.insert(flow, dst);
            }
            SocketAction::UdpSend { flow, datagram } => {
                // What a server would read from the datagrams.
                if let Some(name) = self.quic_sent.entry(flow).or_default().push(&datagram) {
                    self.check_name_sent(&name, "QUIC Initial");
                }
                if self.fail {
                    return Err(io::ErrorKind::ConnectionRefused.into());
                }
            }
            SocketAction::UdpClose { flow } => {
                self.open.remove(&flow);
                self.quic_sent.remove(&flow);
            }
        }
        Ok(())
    }

    fn write(&mut self, flow: FlowId, data: &[u8]) -> Transfer {
        if self.write_budget == 0 {
            return Transfer::Blocked;
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
        for host in self.http_sent.entry(flow).or_default().push(&data[..taken]) {
            self.check_name_sent(&host, "HTTP request");
        }
        Transfer::Moved(taken)
    }
    fn read(&mut self, flow: FlowId, buf: &mut [u8]) -> Transfer {
        let Some((pending, eof)) = self.to_read.get_mut(&flow) else {
            return Transfer::Blocked;
        };
        if pending.is_empty() {
            return if *eof { Transfer::Moved(0) } else { Transfer::Blocked };
        }
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        pending.drain(..n);
        Transfer::Moved(n)
    }
}

impl OwnerLookup for FakeUpstream {
    /// The fuzzed phone's flows have no owning app.
    fn owner_uid(&mut self, _: Protocol, _: SocketAddr, _: SocketAddr) -> Option<u32> {
        None
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
    /// Flows whose upstream connect the harness completed.
    connected: HashSet<FlowId>,
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
            connected: HashSet::new(),
        }
    }

    /// One packet from the tun, then the stack, then everything the engine wants written back.
    pub fn tun_packet(&mut self, packet: &[u8]) {
        self.engine.handle_tun_packet(self.now, packet, &mut self.up);
        self.engine.poll(self.now);
        self.drain();
    }

    /// Performs the engine's socket actions, telling it of each open and failure as a driver does; then writes
    /// its output "to the phone", remembering TCP sequence numbers for later acknowledgements.
    pub fn drain(&mut self) {
        self.engine.perform_socket_actions(self.now, &mut self.up);
        let mut out = Vec::new();
        self.engine.take_tun_packets(&mut out);
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
        self.engine.handle_timeout(self.now);
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
                let ok = !input.u8().is_multiple_of(4);
                if let Some(flow) = self.pick_flow(input) {
                    let result = if ok { Ok(()) } else { Err(io::ErrorKind::ConnectionRefused.into()) };
                    self.engine.on_tcp_connected(self.now, flow, result);
                    self.engine.poll(self.now);
                    self.drain();
                }
            }
            // Upstream bytes (or EOF) arrive for a TCP flow.
            9 => {
                let len = usize::from(input.u16() % 4096);
                let eof = input.u8().is_multiple_of(4);
                let data = input.bytes(len).to_vec();
                if let Some(flow) = self.pick_flow(input) {
                    let entry = self.up.to_read.entry(flow).or_default();
                    entry.0.extend_from_slice(&data);
                    entry.1 |= eof;
                    self.engine.upstream_readable(self.now, flow, |buf| self.up.read(flow, buf));
                    self.engine.upstream_writable(self.now, flow, |data| self.up.write(flow, data));
                    self.engine.poll(self.now);
                    self.drain();
                }
            }
            // A datagram from upstream: to a UDP flow, or to the newest DNS query's socket as a DNS response.
            10 => {
                let to_dns = input.u8().is_multiple_of(2);
                let len = usize::from(input.u16() % 1500);
                let data = input.bytes(len).to_vec();
                let newest_dns = self.up.open.iter().filter(|(_, dst)| dst.port() == 53).map(|(&f, _)| f).max();
                let flow = if to_dns { newest_dns } else { self.pick_flow(input) };
                if let Some(flow) = flow {
                    if input.u8().is_multiple_of(8) {
                        self.engine.on_udp_error(self.now, flow, io::ErrorKind::ConnectionRefused.into());
                    } else {
                        self.engine.on_udp_datagram(self.now, flow, &data);
                    }
                    self.engine.poll(self.now);
                    self.drain();
                }
            }
            // A keep-alive HTTP request sequence naming the hosts, over a new or open connection.
            11 => self.http_requests(input),
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
                    self.engine.upstream_writable(self.now, flow, |data| self.up.write(flow, data));
                }
                self.engine.poll(self.now);
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

    /// Two or three HTTP/1.1 requests on one connection (a handshake first if the phone has none open to that
    /// destination), each naming one of [`HOSTS`] in `Host` or an absolute-form target, with bodies framed by
    /// Content-Length or chunked, empty lines between, sent in segments split where the input says. Upstream
    /// connects complete at once, so that what the engine lets pass reaches the [`HttpServerView`].
    fn http_requests(&mut self, input: &mut Input<'_>) {
        let (v6, src, dst) = Self::addrs(input);
        let sport = 40000 + u16::from(input.u8() % 16);
        let dport = PORTS[usize::from(input.u8()) % PORTS.len()];
        let mut stream = Vec::new();
        for _ in 0..2 + input.u8() % 2 {
            let host = HOSTS[usize::from(input.u8()) % HOSTS.len()];
            let mode = input.u8();
            if mode & 1 != 0 {
                stream.extend_from_slice(b"\r\n");
            }
            let target = if mode & 2 != 0 { format!("http://{host}/p") } else { "/p".to_owned() };
            let host_field = match mode >> 2 & 3 {
                0 => host.to_owned(),
                1 => format!("{}:80", host.to_ascii_uppercase()),
                2 => format!("user@{host}."),
                _ => "www.example.org".to_owned(),
            };
            stream.extend_from_slice(format!("POST {target} HTTP/1.1\r\nHost: {host_field}\r\n").as_bytes());
            if mode & 16 != 0 {
                stream.extend_from_slice(b"Upgrade: websocket\r\n");
            }
            let body_len = usize::from(input.u8()) * 4;
            let body = input.bytes(body_len);
            if mode & 32 != 0 {
                stream.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let cut = usize::from(input.u8()).min(body.len());
                for chunk in [&body[..cut], &body[cut..]].into_iter().filter(|c| !c.is_empty()) {
                    stream.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    stream.extend_from_slice(chunk);
                    stream.extend_from_slice(b"\r\n");
                }
                stream.extend_from_slice(b"0\r\n\r\n");
            } else {
                stream.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                stream.extend_from_slice(body);
            }
        }
        let key = (v6, sport, SocketAddr::new(dst, dport));
        if self.phone.get(&key).and_then(|p| p.ack).is_none() {
            self.tcp_send(key, src, (0x01, 65535), None, &[]);
        }
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at((1 + usize::from(input.u16() % 1400)).min(rest.len()));
            rest = tail;
            self.tcp_send(key, src, (0x18, 65535), None, piece);
            let server = key.2;
            let dialled: Vec<FlowId> = self.up.open.iter().filter(|(_, d)| **d == server).map(|(&f, _)| f).collect();
            for flow in dialled {
                if self.connected.insert(flow) {
                    self.engine.on_tcp_connected(self.now, flow, Ok(()));
                    self.engine.poll(self.now);
                    self.drain();
                }
            }
        }
    }

    fn tcp_segment_carrying(&mut self, input: &mut Input<'_>, payload: Vec<u8>) {
        let (v6, src, dst) = Self::addrs(input);
        let sport = 40000 + u16::from(input.u8() % 16);
        let dport = PORTS[usize::from(input.u8()) % PORTS.len()];
        let flags = input.u8();
        let window = input.u16();
        let key = (v6, sport, SocketAddr::new(dst, dport));
        // Bit 7: take sequence and acknowledgement numbers from the input instead of the tracked ones.
        let numbers = (flags & 0x80 != 0).then(|| (input.u32(), input.u32()));
        self.tcp_send(key, src, (flags, window), numbers, &payload);
    }

    /// Sends one TCP segment from the phone's `src` on connection `key`, with the tracked sequence and
    /// acknowledgement numbers unless `numbers` gives them. Flag bits: 1 SYN, 2 FIN, 4 RST, 8 ACK (always once the
    /// engine answered), 16 PSH.
    fn tcp_send(
        &mut self,
        key: (bool, u16, SocketAddr),
        src: IpAddr,
        (flags, window): (u8, u16),
        numbers: Option<(u32, u32)>,
        payload: &[u8],
    ) {
        let (_, sport, server) = key;
        let (dst, dport) = (server.ip(), server.port());
        let state = self.phone.entry(key).or_default();
        let (seq, ack) = numbers.unwrap_or((state.next_seq, state.ack.unwrap_or(0)));
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
        if tcp.write(&mut p, payload).is_ok() {
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
