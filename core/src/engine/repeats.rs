//! Folding repeated block and error events: a flood (an ICMP echo flood, an app retrying a refused address in a
//! loop, a client flooding DNS queries past its share) must not become thousands of events on the phone, in
//! `--events` or in the UI.
//!
//! The first block (or error) of a kind is reported at once. Identical ones that follow within [`FOLD_WINDOW`] (same
//! action, protocol, source address — any port —, destination, host, reason and app) are only counted; when the
//! window ends, one more event stands for all of them, with `repeats` set to their number and the time of the
//! last. The next one after that starts a new window. At most [`MAX_WINDOWS`] windows are open; past that, blocks
//! are reported one by one as before.

use crate::event::{Event, Protocol};
use crate::verdict::Reason;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How long identical blocks are folded into one summary event.
pub(crate) const FOLD_WINDOW: Duration = Duration::from_secs(10);
/// Most fold windows open at once.
const MAX_WINDOWS: usize = 1024;

/// What makes two block events identical for folding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FoldKey {
    protocol: Protocol,
    src: IpAddr,
    dst: SocketAddr,
    host: Option<String>,
    /// The reason, with its kind: the action.
    reason: Reason,
    uid: Option<u32>,
}

impl FoldKey {
    fn of(event: &Event) -> FoldKey {
        FoldKey {
            protocol: event.protocol,
            src: event.src.ip(),
            dst: event.dst,
            host: event.host.clone(),
            reason: event.reason(),
            uid: event.uid,
        }
    }
}

/// One open window: when it ends, and the last event folded into it with their count.
#[derive(Debug)]
struct Window {
    ends: Instant,
    last: Option<Event>,
    repeats: u64,
}

/// The open fold windows.
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    /// Open windows; one that ended stays until its summary is taken by [`Repeats::due`] (or, if it folded
    /// nothing, until room is needed).
    windows: HashMap<FoldKey, Window>,
}

/// What to do with a block event.
pub(crate) enum Offer {
    /// Report it now.
    Report(Box<Event>),
    /// It was folded into an open window; if it is the window's first, its summary is due at this time (arm a
    /// timer for it, once per window).
    Folded(Option<Instant>),
}

impl Repeats {
    /// Offers a block or error event at `now`: the first of its kind is reported and opens a window, later ones are folded.
    pub(crate) fn offer(&mut self, now: Instant, event: Event) -> Offer {
        let key = FoldKey::of(&event);
        match self.windows.get_mut(&key) {
            Some(window) if window.ends > now => {
                window.repeats += 1;
                window.last = Some(event);
                Offer::Folded((window.repeats == 1).then_some(window.ends))
            }
            _ => {
                if self.windows.len() >= MAX_WINDOWS {
                    // Windows that ended without folding anything have no summary (and no timer) to wait for.
                    self.windows.retain(|_, w| w.ends > now || w.repeats > 0);
                }
                if self.windows.len() >= MAX_WINDOWS && !self.windows.contains_key(&key) {
                    return Offer::Report(Box::new(event));
                }
                self.windows.insert(key, Window { ends: now + FOLD_WINDOW, last: None, repeats: 0 });
                Offer::Report(Box::new(event))
            }
        }
    }

    /// Closes the windows that ended by `now` (every window with `all`): the summary events of those that folded
    /// anything.
    pub(crate) fn due(&mut self, now: Instant, all: bool) -> Vec<Event> {
        let mut out = Vec::new();
        self.windows.retain(|_, window| {
            if window.ends > now && !all {
                return true;
            }
            if let Some(mut last) = window.last.take() {
                last.repeats = Some(window.repeats);
                out.push(last);
            }
            false
        });
        out.sort_by_key(|e| e.time_ms);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Outcome;
    use crate::verdict::BlockReason;

    /// A refusal of UDP from the phone's `port` to 198.18.1.1:`dst_port` at `ms`.
    fn block(ms: u64, port: u16, dst_port: u16) -> Event {
        Event {
            time_ms: ms,
            protocol: Protocol::Udp,
            src: SocketAddr::from(([10, 111, 0, 1], port)),
            dst: SocketAddr::from(([198, 18, 1, 1], dst_port)),
            host: None,
            outcome: Outcome::Block { reason: BlockReason::IpCidr, rule: None },
            uid: None,
            peek: None,
            repeats: None,
        }
    }

    fn reported(offer: Offer) -> bool {
        matches!(offer, Offer::Report(_))
    }

    /// The first block is reported; identical ones (any source port) within 10 s are counted, the first of them
    /// naming when the summary is due; the summary comes when the window ends, not before, with the count and
    /// the last one's time.
    #[test]
    fn identical_blocks_fold_into_one_summary_when_the_window_ends() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut repeats = Repeats::default();
        assert!(reported(repeats.offer(t0, block(0, 1000, 7))));
        assert!(
            matches!(repeats.offer(t0 + s, block(1000, 1001, 7)), Offer::Folded(Some(due)) if due == t0 + FOLD_WINDOW)
        );
        assert!(matches!(repeats.offer(t0 + 2 * s, block(2000, 1002, 7)), Offer::Folded(None)));
        assert!(reported(repeats.offer(t0 + s, block(1000, 1000, 8))), "another destination is another kind");
        assert!(repeats.due(t0 + FOLD_WINDOW - Duration::from_millis(1), false).is_empty(), "not before the end");
        let summaries = repeats.due(t0 + FOLD_WINDOW, false);
        assert_eq!(summaries.len(), 1, "the window of port 8 folded nothing: no summary");
        assert_eq!((summaries[0].repeats, summaries[0].time_ms, summaries[0].src.port()), (Some(2), 2000, 1002));
    }

    /// After a window ends the next identical block is reported and opens a new one, even before the summary of
    /// the old one was taken.
    #[test]
    fn a_block_after_the_window_is_reported_again() {
        let t0 = Instant::now();
        let mut repeats = Repeats::default();
        assert!(reported(repeats.offer(t0, block(0, 1000, 7))));
        assert!(reported(repeats.offer(t0 + FOLD_WINDOW, block(10_000, 1000, 7))));
        assert!(matches!(repeats.offer(t0 + FOLD_WINDOW, block(10_000, 1000, 7)), Offer::Folded(Some(_))));
    }

    /// At most 1,024 windows are open: past that, blocks of a new kind are reported one by one (never lost),
    /// until windows that ended without folding anything make room.
    #[test]
    fn windows_are_bounded_and_ended_empty_ones_make_room() {
        let t0 = Instant::now();
        let mut repeats = Repeats::default();
        for port in 0..MAX_WINDOWS as u16 {
            assert!(reported(repeats.offer(t0, block(0, 1000, port))));
        }
        // One window that folds: its summary is kept until taken.
        assert!(matches!(repeats.offer(t0, block(0, 1000, 0)), Offer::Folded(Some(_))));
        let extra = MAX_WINDOWS as u16;
        assert!(reported(repeats.offer(t0, block(0, 1000, extra))));
        assert!(reported(repeats.offer(t0, block(0, 1000, extra))), "no window for it: reported again");
        assert_eq!(repeats.windows.len(), MAX_WINDOWS);
        // Once they ended, the windows that folded nothing give way; the one with a summary stays.
        let later = t0 + FOLD_WINDOW;
        assert!(reported(repeats.offer(later, block(0, 1000, extra))));
        assert!(matches!(repeats.offer(later, block(0, 1000, extra)), Offer::Folded(Some(_))), "a window now");
        assert_eq!(repeats.windows.len(), 2);
        assert_eq!(repeats.due(later, true).len(), 2, "both summaries");
    }
}
