//! Events on their way to Kotlin: a bounded queue filled by the engine thread, drained in batches by
//! `pollEvents`, and the compact binary form one batch crosses JNI in.
//!
//! # Batch format (version 4), big-endian, what `app.hushwall.engine.EventDecoder` reads
//!
//! ```text
//! batch  := u8 version (=4) · u32 count · event{count}
//! event  := i64 time_ms · u8 action (0 allow, 1 block, 2 error) · u8 protocol (0 tcp, 1 udp, 2 dns, 3 icmp)
//!           · addr src · addr dst · i32 uid (-1 unknown)
//!           · str host · str reason · str rule_list · i32 rule_line (0 when no rule) · str rule_text
//!           · str peek (the payload peek of a refused HTTP request as JSON, null when there is none)
//!           · str error (what failed, for action `error`; null otherwise)
//!           · i64 repeats (identical blocks this event stands for, folded by the engine; 1 for a single one)
//! addr   := u8 family_len (4 or 16) · bytes[family_len] · u16 port
//! str    := i32 byte_len (-1 = null) · UTF-8 bytes
//! ```
//!
//! `reason` is the stable snake_case code ([`Reason::code`], the same as in the JSON event log) rather than a number, so a reason added to the
//! engine reaches the UI without a Kotlin change. Why binary and not JSON: see BENCHMARKS.md (`## JNI`); in
//! short, Kotlin reads it with `java.nio.ByteBuffer` and no JSON library (none exists in a framework-free
//! Kotlin build on the host, and `org.json` on Android is several times slower).

use hushwall_core::event::{Event, Protocol};
use hushwall_core::verdict::Action;
#[cfg(doc)]
use hushwall_core::verdict::Reason;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Version byte at the start of every batch.
pub const FORMAT_VERSION: u8 = 4;

/// Events kept for Kotlin before the oldest are dropped (and counted).
pub const QUEUE_MAX: usize = 8192;

/// The queue between the engine thread (producer) and Kotlin's `pollEvents` (consumer).
#[derive(Default)]
pub struct EventQueue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    events: VecDeque<Event>,
    dropped: u64,
    closed: bool,
}

impl EventQueue {
    /// Appends a batch, dropping the oldest events past [`QUEUE_MAX`], and wakes a waiting `pollEvents`.
    pub fn push(&self, batch: &[Event]) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for event in batch {
            if state.events.len() >= QUEUE_MAX {
                state.events.pop_front();
                state.dropped += 1;
            }
            state.events.push_back(event.clone());
        }
        drop(state);
        self.ready.notify_all();
    }

    /// Takes up to `max` events, oldest first. With a non-zero `wait`, blocks up to that long for the first
    /// event (returns early, possibly empty, once the queue is closed).
    pub fn take(&self, max: usize, wait: Duration) -> Vec<Event> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.events.is_empty() && !state.closed && !wait.is_zero() {
            state = self
                .ready
                .wait_timeout_while(state, wait, |s| s.events.is_empty() && !s.closed)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let n = max.min(state.events.len());
        state.events.drain(..n).collect()
    }

    /// Events dropped because Kotlin did not keep up.
    pub fn dropped(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).dropped
    }

    /// Wakes every waiter for good (the engine stopped).
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.ready.notify_all();
    }
}

/// Encodes a batch in the format described in the module docs.
pub fn encode(events: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + events.len() * 128);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&u32::try_from(events.len()).unwrap_or(u32::MAX).to_be_bytes());
    for event in events.iter().take(u32::MAX as usize) {
        out.extend_from_slice(&i64::try_from(event.time_ms).unwrap_or(i64::MAX).to_be_bytes());
        out.push(match event.action() {
            Action::Allow => 0,
            Action::Block => 1,
            Action::Error => 2,
        });
        out.push(match event.protocol {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
            Protocol::Dns => 2,
            Protocol::Icmp => 3,
        });
        put_addr(&mut out, event.src);
        put_addr(&mut out, event.dst);
        let uid = event.uid.and_then(|u| i32::try_from(u).ok()).unwrap_or(-1);
        out.extend_from_slice(&uid.to_be_bytes());
        put_str(&mut out, event.host.as_deref());
        put_str(&mut out, Some(event.reason().code()));
        match event.rule() {
            Some(rule) => {
                put_str(&mut out, Some(&rule.list));
                out.extend_from_slice(&i32::try_from(rule.line).unwrap_or(i32::MAX).to_be_bytes());
                put_str(&mut out, Some(&rule.rule));
            }
            None => {
                put_str(&mut out, None);
                out.extend_from_slice(&0i32.to_be_bytes());
                put_str(&mut out, None);
            }
        }
        let peek = event.peek.as_ref().and_then(|p| serde_json::to_string(p).ok());
        put_str(&mut out, peek.as_deref());
        put_str(&mut out, event.error());
        let repeats = event.repeats.unwrap_or(1).max(1);
        out.extend_from_slice(&i64::try_from(repeats).unwrap_or(i64::MAX).to_be_bytes());
    }
    out
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            out.push(16);
            out.extend_from_slice(&a.ip().octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            // Strings here are host names, list names and rules: far below 2 GiB. Truncate at a char boundary
            // rather than lie about the length if one ever were not.
            let mut len = s.len().min(i32::MAX as usize);
            while !s.is_char_boundary(len) {
                len -= 1;
            }
            out.extend_from_slice(&(len as i32).to_be_bytes());
            out.extend_from_slice(s.as_bytes().get(..len).unwrap_or_default());
        }
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hushwall_core::event::Outcome;
    use hushwall_core::verdict::{AllowReason, BlockReason, ErrorReason, Reason, RuleRef};

    pub(crate) fn sample(i: u64) -> Event {
        let rule = RuleRef { list: "builtin:xiaomi-telemetry.txt".into(), line: 12, rule: "||miui.com^".into() };
        Event {
            time_ms: 1_700_000_000_000 + i,
            protocol: Protocol::Dns,
            src: "10.111.0.1:40000".parse().unwrap(),
            dst: "[fd00:6877::53]:53".parse().unwrap(),
            host: Some("tracking.intl.miui.com".into()),
            outcome: Outcome::Block { reason: BlockReason::DnsQuery, rule: Some(rule) },
            uid: Some(10123),
            peek: None,
            repeats: None,
        }
    }

    #[test]
    fn golden_encoding() {
        let mut allowed = sample(0);
        allowed.protocol = Protocol::Tcp;
        allowed.dst = "198.18.1.10:443".parse().unwrap();
        allowed.host = None;
        allowed.outcome = Outcome::Allow { reason: AllowReason::NoMatch, rule: None };
        allowed.uid = None;
        let bytes = encode(&[allowed]);
        let mut expected = vec![4, 0, 0, 0, 1];
        expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        expected.extend_from_slice(&[0, 0]);
        expected.extend_from_slice(&[4, 10, 111, 0, 1, 0x9c, 0x40]);
        expected.extend_from_slice(&[4, 198, 18, 1, 10, 1, 0xbb]);
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        expected.extend_from_slice(&8i32.to_be_bytes());
        expected.extend_from_slice(b"no_match");
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        expected.extend_from_slice(&0i32.to_be_bytes());
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        expected.extend_from_slice(&(-1i32).to_be_bytes()); // no peek
        expected.extend_from_slice(&(-1i32).to_be_bytes()); // no error
        expected.extend_from_slice(&1i64.to_be_bytes()); // one event, not folded
        assert_eq!(bytes, expected);
    }

    #[test]
    fn error_events_carry_action_2_and_the_error_text() {
        let mut failed = sample(0);
        failed.outcome =
            Outcome::Error { reason: ErrorReason::ConnectFailed, error: "Connection refused (os error 111)".into() };
        let bytes = encode(&[failed]);
        assert_eq!(bytes[13], 2, "action byte after version, count and time");
        let tail = b"Connection refused (os error 111)";
        let bytes = &bytes[..bytes.len() - 8]; // the repeats field
        assert!(bytes.ends_with(tail));
        let len = &bytes[bytes.len() - tail.len() - 4..bytes.len() - tail.len()];
        assert_eq!(len, (tail.len() as i32).to_be_bytes());
    }

    /// Reads one encoded event's action byte and reason string (see the format in the module docs).
    fn action_and_reason(batch: &[u8]) -> (u8, String) {
        let event = &batch[5..];
        let action = event[8];
        // time, action, protocol; then two addresses (family_len · bytes · port) and the uid.
        let mut at = 10;
        for _ in 0..2 {
            at += 1 + usize::from(event[at]) + 2;
        }
        at += 4;
        let mut string = || {
            let len = i32::from_be_bytes(event[at..at + 4].try_into().unwrap());
            at += 4;
            let len = usize::try_from(len).unwrap_or(0);
            let s = String::from_utf8(event[at..at + len].to_vec()).unwrap();
            at += len;
            s
        };
        let _host = string();
        (action, string())
    }

    /// Every reason the engine can report crosses JNI with the code and action the JSON event log has for it.
    #[test]
    fn jni_and_json_agree_on_every_reason() {
        for reason in Reason::all() {
            let outcome = match reason {
                Reason::Allow(reason) => Outcome::Allow { reason, rule: None },
                Reason::Block(reason) => Outcome::Block { reason, rule: None },
                Reason::Error(reason) => Outcome::Error { reason, error: "failed".into() },
            };
            let event = Event { outcome, ..sample(0) };
            let json = serde_json::to_value(&event).unwrap();
            let (action, code) = action_and_reason(&encode(&[event]));
            assert_eq!(json["reason"], code.as_str(), "{reason:?}");
            let expected_action = ["allow", "block", "error"].get(usize::from(action)).copied();
            assert_eq!(json["action"].as_str(), expected_action, "{reason:?}");
        }
    }

    /// The app shows a block or allow reason in words (`Ui.reason`): each one the engine can report has its
    /// label there, and every code the app knows is one the engine reports. Errors are shown with their text.
    #[test]
    fn the_app_labels_exactly_the_engines_block_and_allow_reasons() {
        let ui = include_str!("../../app/src/main/kotlin/app/hushwall/ui/Ui.kt");
        let start = ui.find("fun reason(code: String)").expect("Ui.reason");
        let end = start + ui[start..].find("else -> code").expect("end of Ui.reason");
        let labelled: std::collections::BTreeSet<&str> =
            ui[start..end].lines().filter_map(|l| l.trim().strip_prefix('"')?.split('"').next()).collect();
        let shown: std::collections::BTreeSet<&str> = Reason::all()
            .filter(|r| !matches!(r, Reason::Error(_) | Reason::Allow(AllowReason::AllowRule | AllowReason::NoMatch)))
            .map(Reason::code)
            .collect();
        assert_eq!(labelled, shown);
    }

    #[test]
    fn empty_batch_is_header_only() {
        assert_eq!(encode(&[]), vec![4, 0, 0, 0, 0]);
    }

    #[test]
    fn folded_blocks_carry_their_repeat_count() {
        let mut folded = sample(0);
        folded.repeats = Some(37);
        let bytes = encode(&[folded, sample(1)]);
        let one = encode(&[sample(1)]).len() - 5;
        let first = &bytes[5..bytes.len() - one];
        assert_eq!(first[first.len() - 8..], 37i64.to_be_bytes());
        assert_eq!(bytes[bytes.len() - 8..], 1i64.to_be_bytes(), "an unfolded event counts once");
    }

    #[test]
    fn queue_drops_oldest_past_the_bound_and_counts() {
        let queue = EventQueue::default();
        let batch: Vec<Event> = (0..(QUEUE_MAX as u64 + 10)).map(sample).collect();
        queue.push(&batch);
        assert_eq!(queue.dropped(), 10);
        let taken = queue.take(5, Duration::ZERO);
        assert_eq!(taken.len(), 5);
        assert_eq!(taken[0].time_ms, sample(10).time_ms);
        assert_eq!(queue.take(usize::MAX, Duration::ZERO).len(), QUEUE_MAX - 5);
    }

    #[test]
    fn take_waits_until_an_event_or_close() {
        let queue = std::sync::Arc::new(EventQueue::default());
        let producer = std::sync::Arc::clone(&queue);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            producer.push(&[sample(1)]);
        });
        assert_eq!(queue.take(10, Duration::from_secs(10)).len(), 1);
        thread.join().unwrap();
        queue.close();
        let start = std::time::Instant::now();
        assert!(queue.take(10, Duration::from_secs(10)).is_empty());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
