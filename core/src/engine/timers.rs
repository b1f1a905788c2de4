//! Deadlines for flows and DNS queries, in one min-heap.
//!
//! Entries are never removed early: a popped timer whose flow is gone or whose deadline moved is simply ignored
//! or re-armed by its handler. That keeps arming O(log n) and lets the engine sleep exactly until the next
//! deadline: no periodic tick.

use super::{FlowId, FlowKey};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// A TCP flow's sniff or connect deadline.
    Tcp(FlowId),
    /// A UDP flow's idle check.
    Udp(FlowId),
    /// A forwarded DNS query's try (by the flow id of its upstream socket).
    Dns(FlowId),
    /// A UDP flow held until its QUIC ClientHello names a host: its key in the hold table, and its id (a newer
    /// hold of the same key has another).
    QuicHold(FlowKey, FlowId),
    /// The oldest IP datagram under reassembly times out.
    Reassembly,
    /// A window of folded block events ends (see `repeats`).
    Repeats,
}

/// A min-heap of deadlines.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
}

impl Timers {
    /// Arms `timer` for `at`.
    pub(crate) fn arm(&mut self, at: Instant, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    /// Removes and returns the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let Reverse((at, _)) = self.heap.peek()?;
        if *at > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, timer))| timer)
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.arm(t0 + Duration::from_secs(2), Timer::Udp(FlowId(2)));
        timers.arm(t0 + Duration::from_secs(1), Timer::Dns(FlowId(7)));
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)), Some(Timer::Dns(FlowId(7))));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)), Some(Timer::Udp(FlowId(2))));
        assert_eq!(timers.next_deadline(), None);
    }
}
