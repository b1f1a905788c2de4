//! Capture at the tun edge: when [`EngineConfig::capture`](super::EngineConfig::capture) is on, every packet read
//! from or written to the tun is queued as a [`CaptureRecord`] (time, direction, bytes, verdict comment), which the
//! driver takes with [`Engine::take_capture_records`] and writes to a file off the data thread. The engine does no
//! I/O and takes no lock for it; with capture off the data path pays one `Option` check per packet.
//!
//! Comments: a flow is often decided a little after its deciding packet arrived (a ClientHello is read when the
//! stack is polled, after the batch of tun packets), so records stay open for comments until the end of the
//! driver iteration ([`Engine::take_tun_packets`] seals them). When a verdict is reported,
//! the latest open record from the phone on that flow gets a comment with the verdict; if there is none (a timeout
//! decided), the next packet of the flow in either direction carries it. A phone packet's flow comes from the
//! parse the engine does anyway; a packet to the phone is parsed only while a comment waits for its flow.

use super::packet::{IpPacket, Transport};
use super::{packet, Engine, FlowKey};
use crate::pcapng::Direction;
use crate::verdict::Verdict;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// Records queued for the driver; later ones are dropped and counted until it takes them.
pub(super) const MAX_QUEUED: usize = 16 * 1024;
/// Packet bytes queued for the driver; later records are dropped and counted until it takes them.
const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// Comments waiting for a packet of their flow.
const MAX_WAITING_COMMENTS: usize = 1024;

/// One packet that crossed the tun, as the capture file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRecord {
    /// When, in microseconds since the Unix epoch.
    pub time_us: u64,
    /// Which way it crossed the tun.
    pub direction: Direction,
    /// The IP packet.
    pub packet: Vec<u8>,
    /// The verdict on the flow this packet decided (`hushwall: block|allow <reason> host=… rule=…`).
    pub comment: Option<String>,
}

/// A queued record and, for a packet from the phone, its (source, destination); ports 0 when it has none.
#[derive(Debug)]
struct Queued {
    record: CaptureRecord,
    key: Option<FlowKey>,
}

/// The engine's capture state (present only when capture is on).
#[derive(Debug, Default)]
pub(crate) struct CaptureState {
    queue: Vec<Queued>,
    /// Packet bytes in `queue`.
    queued_bytes: usize,
    /// Records before this index are sealed: they take no more comments.
    open_from: usize,
    /// The last queued record is a phone packet whose flow is not known yet (the engine is about to parse it).
    unkeyed: bool,
    waiting: HashMap<FlowKey, String>,
    /// The latest time the engine was given, for packets written to the tun.
    last_now: Option<Instant>,
    /// Records dropped because the queue was full, since the driver last took them.
    dropped: u64,
}

/// The (source, destination) of a parsed packet; ports 0 when it has none.
pub(super) fn flow_key(parsed: &IpPacket<'_>) -> FlowKey {
    let (sp, dp) = match parsed.transport {
        Transport::Tcp(seg) => (seg.src_port, seg.dst_port),
        Transport::Udp { src_port, dst_port, .. } => (src_port, dst_port),
        Transport::EchoRequest | Transport::Fragment | Transport::Other => (0, 0),
    };
    (SocketAddr::new(parsed.src, sp), SocketAddr::new(parsed.dst, dp))
}

/// The (source, destination) of a packet, parsing it.
pub(super) fn key_of(data: &[u8]) -> Option<FlowKey> {
    packet::parse(data).ok().map(|p| flow_key(&p))
}

impl CaptureState {
    /// Queues a record unless the queue is full (then it is counted as dropped); true if queued.
    fn push(&mut self, record: CaptureRecord, key: Option<FlowKey>) -> bool {
        self.unkeyed = false;
        if self.queue.len() >= MAX_QUEUED || self.queued_bytes + record.packet.len() > MAX_QUEUED_BYTES {
            self.dropped += 1;
            return false;
        }
        self.queued_bytes += record.packet.len();
        self.queue.push(Queued { record, key });
        true
    }

    /// The comment waiting for the flow `key` (either way round), taken.
    fn take_waiting(&mut self, (a, b): FlowKey) -> Option<String> {
        if self.waiting.is_empty() {
            return None;
        }
        self.waiting.remove(&(a, b)).or_else(|| self.waiting.remove(&(b, a)))
    }
}

impl Engine {
    /// Microseconds since the Unix epoch at `now`.
    fn capture_time_us(&self, now: Instant) -> u64 {
        let since = u64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX);
        self.epoch_wall_ms.saturating_mul(1000).saturating_add(since)
    }

    /// Notes the time for packets captured without one.
    pub(super) fn capture_clock(&mut self, now: Instant) {
        if let Some(c) = self.capture.as_mut() {
            c.last_now = Some(now);
        }
    }

    /// Queues a packet read from the tun; its flow follows from [`Engine::capture_inbound_key`].
    pub(super) fn capture_inbound(&mut self, now: Instant, data: &[u8]) {
        if self.capture.is_none() {
            return;
        }
        let time_us = self.capture_time_us(now);
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        c.last_now = Some(now);
        let record = CaptureRecord { time_us, direction: Direction::Inbound, packet: data.to_vec(), comment: None };
        c.unkeyed = c.push(record, None);
    }

    /// Gives the packet just queued by [`Engine::capture_inbound`] its flow (`key` runs only when one is needed),
    /// and the comment waiting for that flow, if any.
    pub(super) fn capture_inbound_key(&mut self, key: impl FnOnce() -> Option<FlowKey>) {
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        if !std::mem::take(&mut c.unkeyed) {
            return;
        }
        let key = key();
        let comment = key.and_then(|k| c.take_waiting(k));
        if let Some(last) = c.queue.last_mut() {
            last.key = key;
            last.record.comment = comment;
        }
    }

    /// Queues a packet written to the tun.
    pub(super) fn capture_outbound(&mut self, data: &[u8]) {
        let Some(c) = self.capture.as_ref() else {
            return;
        };
        let time_us = self.capture_time_us(c.last_now.unwrap_or(self.epoch));
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        let comment = if c.waiting.is_empty() { None } else { key_of(data).and_then(|k| c.take_waiting(k)) };
        let record = CaptureRecord { time_us, direction: Direction::Outbound, packet: data.to_vec(), comment };
        c.push(record, None);
    }

    /// Attaches a verdict to the packet that decided the flow from `client` to `server`.
    pub(super) fn capture_verdict(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        host: Option<&str>,
        verdict: &Verdict,
    ) {
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        let mut text = format!("hushwall: {} {}", action_word(verdict), verdict.reason());
        if let Some(host) = host {
            text.push_str(&format!(" host={host}"));
        }
        if let Some(rule) = verdict.rule() {
            text.push_str(&format!(" rule={rule}"));
        }
        let key = (client, server);
        let deciding = c
            .queue
            .get_mut(c.open_from..)
            .unwrap_or_default()
            .iter_mut()
            .rev()
            .find(|p| p.record.direction == Direction::Inbound && p.key == Some(key) && p.record.comment.is_none());
        match deciding {
            Some(p) => p.record.comment = Some(text),
            None => {
                if c.waiting.len() >= MAX_WAITING_COMMENTS {
                    c.waiting.clear();
                }
                c.waiting.insert(key, text);
            }
        }
    }

    /// Ends the driver iteration for the capture: the queued records take no more comments.
    pub(super) fn seal_capture(&mut self) {
        if let Some(c) = self.capture.as_mut() {
            c.open_from = c.queue.len();
            c.unkeyed = false;
        }
    }

    /// Moves the capture records queued so far into `out`, oldest first, and returns how many were dropped since
    /// the last call because the queue was full (the driver did not take them in time). Nothing when capture is
    /// off. Records queued since the last [`Engine::take_tun_packets`] may still be
    /// waiting for a verdict comment: take them after those.
    pub fn take_capture_records(&mut self, out: &mut Vec<CaptureRecord>) -> u64 {
        let Some(c) = self.capture.as_mut() else {
            return 0;
        };
        out.extend(c.queue.drain(..).map(|q| q.record));
        c.queued_bytes = 0;
        c.open_from = 0;
        c.unkeyed = false;
        std::mem::take(&mut c.dropped)
    }

    /// Stops capturing (the driver could not write the capture any more): no more records are queued, and those
    /// queued are discarded.
    pub fn stop_capture(&mut self) {
        self.capture = None;
    }
}

fn action_word(verdict: &Verdict) -> &'static str {
    if verdict.is_block() {
        "block"
    } else {
        "allow"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(len: usize) -> CaptureRecord {
        CaptureRecord { time_us: 0, direction: Direction::Inbound, packet: vec![0; len], comment: None }
    }

    /// 16 MiB of packets fit and not a byte more; a record that does not fit is counted.
    #[test]
    fn the_queue_holds_16_mib_of_packets() {
        let mut c = CaptureState::default();
        for _ in 0..16 {
            assert!(c.push(record(1024 * 1024), None));
        }
        assert!(!c.push(record(1), None));
        assert!(!c.push(record(1024 * 1024), None));
        assert_eq!((c.queue.len(), c.dropped), (16, 2));
    }

    /// 16,384 records fit, however small.
    #[test]
    fn the_queue_holds_16384_records() {
        let mut c = CaptureState::default();
        for _ in 0..16_384 {
            assert!(c.push(record(0), None));
        }
        assert!(!c.push(record(0), None));
        assert_eq!(c.dropped, 1);
    }
}
