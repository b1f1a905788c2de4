//! Capture export: every packet read from or written to the tun goes to a pcapng file, when one is configured.
//!
//! Packets are kept in a short queue and written at the end of each driver iteration ([`Engine::drain_tun`]),
//! because a flow is often decided a little after its deciding packet arrived (a ClientHello is read when the
//! stack is polled, after the batch of tun packets). When a verdict is reported, the latest queued packet from
//! the phone on that flow gets a comment with the verdict; if none is queued (a timeout decided), the next packet
//! of the flow in either direction carries it.

use super::packet::{self, Transport};
use super::{Engine, FlowKey};
use crate::pcapng::{Capture, Direction};
use crate::verdict::Verdict;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

/// Packets queued before they are written even without a `drain_tun`.
const MAX_QUEUED: usize = 4096;
/// Comments waiting for a packet of their flow.
const MAX_WAITING_COMMENTS: usize = 1024;

/// One queued packet.
#[derive(Debug)]
struct Captured {
    time_us: u64,
    direction: Direction,
    data: Vec<u8>,
    /// (source, destination) as in the packet; ports 0 when there are none.
    key: Option<FlowKey>,
    comment: Option<String>,
}

/// The engine's capture state.
#[derive(Debug)]
pub(crate) struct CaptureState {
    sink: Capture,
    queue: Vec<Captured>,
    waiting: HashMap<FlowKey, String>,
    /// The latest time the engine was given, for packets written to the tun.
    last_now: Option<Instant>,
    failed: bool,
}

impl CaptureState {
    pub(crate) fn new(sink: Capture) -> Self {
        CaptureState { sink, queue: Vec::new(), waiting: HashMap::new(), last_now: None, failed: false }
    }
}

/// The (source, destination) of a packet.
fn key_of(data: &[u8]) -> Option<FlowKey> {
    let parsed = packet::parse(data).ok()?;
    let (sp, dp) = match parsed.transport {
        Transport::Tcp(seg) => (seg.src_port, seg.dst_port),
        Transport::Udp { src_port, dst_port, .. } => (src_port, dst_port),
        Transport::EchoRequest | Transport::Fragment | Transport::Other => (0, 0),
    };
    Some((SocketAddr::new(parsed.src, sp), SocketAddr::new(parsed.dst, dp)))
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

    /// Queues a packet crossing the tun.
    pub(super) fn capture_packet(&mut self, now: Option<Instant>, direction: Direction, data: &[u8]) {
        let Some(c) = self.capture.as_ref() else {
            return;
        };
        if c.failed {
            return;
        }
        let at = now.or(c.last_now).unwrap_or(self.epoch);
        let time_us = self.capture_time_us(at);
        let key = key_of(data);
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        if now.is_some() {
            c.last_now = now;
        }
        let comment = key.and_then(|(a, b)| c.waiting.remove(&(a, b)).or_else(|| c.waiting.remove(&(b, a))));
        c.queue.push(Captured { time_us, direction, data: data.to_vec(), key, comment });
        if c.queue.len() >= MAX_QUEUED {
            self.flush_capture();
        }
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
            .iter_mut()
            .rev()
            .find(|p| p.direction == Direction::Inbound && p.key == Some(key) && p.comment.is_none());
        match deciding {
            Some(p) => p.comment = Some(text),
            None => {
                if c.waiting.len() >= MAX_WAITING_COMMENTS {
                    c.waiting.clear();
                }
                c.waiting.insert(key, text);
            }
        }
    }

    /// Writes the queued packets and flushes the file. A write error stops the capture (logged once).
    pub(super) fn flush_capture(&mut self) {
        let Some(c) = self.capture.as_mut() else {
            return;
        };
        if c.queue.is_empty() || c.failed {
            return;
        }
        let queue = std::mem::take(&mut c.queue);
        let result = c.sink.with(|w| {
            for p in &queue {
                w.write_packet(p.time_us, p.direction, &p.data, p.comment.as_deref())?;
            }
            w.flush()
        });
        if let Err(e) = result {
            log::warn!("capture stopped: cannot write the pcapng file: {e}");
            c.failed = true;
        }
        // Keep the allocation.
        c.queue = queue;
        c.queue.clear();
    }
}

fn action_word(verdict: &Verdict) -> &'static str {
    if verdict.is_block() {
        "block"
    } else {
        "allow"
    }
}
