//! Writing the packet capture on a thread of its own, at the edge of the engine (as smoltcp's `PcapWriter` sits
//! at its device).
//!
//! The engine only queues what crossed the tun ([`CaptureRecord`]: time, direction, bytes, verdict comment). Each
//! loop iteration, after the tun packets were taken (so the iteration's verdict comments are in place), the event
//! loop takes the records and hands them to the capture thread through a bounded channel without ever waiting:
//! when the thread is behind (a slow disk), the batch is dropped and counted. The thread owns the file, encodes
//! pcapng ([`PcapngWriter`]), enforces the size cap and flushes whenever it has nothing more in hand. A write
//! error ends the capture (logged once), never the engine. When the loop stops, the thread writes what is left,
//! flushes, and the [`CaptureSummary`] says what was left out.

use hushwall_core::engine::{CaptureRecord, Engine};
use hushwall_core::pcapng::PcapngWriter;
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

/// Batches handed over and not yet taken by the thread before later ones are dropped.
const QUEUE_BATCHES: usize = 64;
/// Packet bytes handed over and not yet taken by the thread before later batches are dropped.
const QUEUE_BYTES: usize = 32 * 1024 * 1024;

/// What a capture wrote and left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureSummary {
    /// Packets written to the file.
    pub written: u64,
    /// Packets left out because the file reached its size cap.
    pub not_written: u64,
    /// Packets dropped because the writer fell behind the engine.
    pub dropped: u64,
    /// The write error that ended the capture early, if one did.
    pub error: Option<String>,
}

/// Reads a capture's [`CaptureSummary`] once it has ended; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct CaptureReport(Arc<Mutex<Option<CaptureSummary>>>);

impl CaptureReport {
    /// The summary once the capture has ended (a write error, or the engine loop returned); complete once the
    /// loop has returned.
    pub fn summary(&self) -> Option<CaptureSummary> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn update(&self, f: impl FnOnce(&mut CaptureSummary)) {
        let mut summary = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(summary.get_or_insert_with(CaptureSummary::default));
    }
}

/// A pcapng file for [`crate::Platform::capture`]: the engine's tun packets, written on a thread of its own.
pub struct CaptureFile {
    writer: PcapngWriter<Box<dyn Write + Send>>,
    report: CaptureReport,
}

impl CaptureFile {
    /// Starts a capture on `out` that never grows past `max_bytes` (later packets are counted, not written; the
    /// file stays valid pcapng). The headers are written and flushed now, so an unwritable destination fails at
    /// start. The report reads what the capture wrote and left out once it has ended.
    pub fn new(out: impl Write + Send + 'static, max_bytes: u64) -> io::Result<(CaptureFile, CaptureReport)> {
        let mut writer = PcapngWriter::new(Box::new(out) as Box<dyn Write + Send>, "hushwall-tun")?;
        writer.set_max_bytes(max_bytes);
        writer.flush()?;
        let report = CaptureReport::default();
        Ok((CaptureFile { writer, report: report.clone() }, report))
    }
}

/// The event loop's side of the capture thread.
pub(crate) struct CaptureWriter {
    /// `None` once the thread has ended (a write error).
    to_thread: Option<SyncSender<Vec<CaptureRecord>>>,
    /// Packet bytes handed over and not yet taken by the thread.
    in_hand: Arc<AtomicUsize>,
    /// Packets dropped on this side (the engine's queue or the channel was full).
    dropped: u64,
    report: CaptureReport,
    thread: Option<JoinHandle<()>>,
}

impl CaptureWriter {
    /// Starts the capture thread on `file`.
    pub(crate) fn spawn(file: CaptureFile) -> io::Result<Self> {
        let CaptureFile { writer, report } = file;
        let (to_thread, batches) = mpsc::sync_channel(QUEUE_BATCHES);
        let in_hand = Arc::new(AtomicUsize::new(0));
        let (thread_in_hand, thread_report) = (Arc::clone(&in_hand), report.clone());
        let thread = std::thread::Builder::new()
            .name("capture-writer".into())
            .spawn(move || write_batches(writer, &batches, &thread_in_hand, &thread_report))?;
        Ok(CaptureWriter { to_thread: Some(to_thread), in_hand, dropped: 0, report, thread: Some(thread) })
    }

    /// Takes the engine's capture records and hands them to the thread, without waiting. If the thread has
    /// ended (a write error), the engine stops capturing.
    pub(crate) fn pump(&mut self, engine: &mut Engine) {
        let mut batch = Vec::new();
        self.dropped += engine.take_capture_records(&mut batch);
        if !batch.is_empty() && !self.hand_over(batch) {
            engine.stop_capture();
        }
    }

    /// Hands a batch to the thread; drops it (counted) if the thread is behind. False once the thread has ended.
    fn hand_over(&mut self, batch: Vec<CaptureRecord>) -> bool {
        let Some(to_thread) = &self.to_thread else {
            return false;
        };
        let bytes: usize = batch.iter().map(|r| r.packet.len()).sum();
        if self.in_hand.load(Ordering::Acquire).saturating_add(bytes) > QUEUE_BYTES {
            self.dropped += batch.len() as u64;
            return true;
        }
        self.in_hand.fetch_add(bytes, Ordering::AcqRel);
        match to_thread.try_send(batch) {
            Ok(()) => true,
            Err(TrySendError::Full(batch)) => {
                self.in_hand.fetch_sub(bytes, Ordering::AcqRel);
                self.dropped += batch.len() as u64;
                true
            }
            Err(TrySendError::Disconnected(_)) => {
                self.to_thread = None;
                false
            }
        }
    }
}

impl Drop for CaptureWriter {
    /// Lets the thread write what it holds, flush and end, then completes the summary.
    fn drop(&mut self) {
        self.to_thread = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                self.report.update(|s| s.error = Some("the capture thread panicked".into()));
            }
        }
        let dropped = self.dropped;
        self.report.update(|s| s.dropped += dropped);
        if let Some(s) = self.report.summary() {
            if s.not_written > 0 || s.dropped > 0 {
                log::warn!(
                    "capture: {} packets written, {} left out at the size cap, {} dropped (writer behind)",
                    s.written,
                    s.not_written,
                    s.dropped
                );
            }
        }
    }
}

/// The capture thread: writes batches until the loop hangs up or a write fails, then reports.
fn write_batches(
    mut writer: PcapngWriter<Box<dyn Write + Send>>,
    batches: &Receiver<Vec<CaptureRecord>>,
    in_hand: &AtomicUsize,
    report: &CaptureReport,
) {
    let mut written = 0;
    let error = write_until_hang_up(&mut writer, batches, in_hand, &mut written).err().map(|e| {
        log::warn!("capture stopped: cannot write the pcapng file: {e}");
        e.to_string()
    });
    let not_written = writer.not_written();
    report.update(|s| {
        s.written = written;
        s.not_written = not_written;
        s.error = error;
    });
}

/// Writes every batch, flushing whenever no other is waiting; counts the packets written (not left out at the
/// cap) in `written`.
fn write_until_hang_up(
    writer: &mut PcapngWriter<Box<dyn Write + Send>>,
    batches: &Receiver<Vec<CaptureRecord>>,
    in_hand: &AtomicUsize,
    written: &mut u64,
) -> io::Result<()> {
    while let Ok(first) = batches.recv() {
        let mut next = Some(first);
        while let Some(batch) = next {
            in_hand.fetch_sub(batch.iter().map(|r| r.packet.len()).sum(), Ordering::AcqRel);
            for r in &batch {
                let left_out = writer.not_written();
                writer.write_packet(r.time_us, r.direction, &r.packet, r.comment.as_deref())?;
                *written += u64::from(writer.not_written() == left_out);
            }
            next = batches.try_recv().ok();
        }
        writer.flush()?;
    }
    writer.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{EventSink, NoUids, Platform, Protector};
    use crate::{Control, EngineThread};
    use hushwall_core::engine::EngineConfig;
    use hushwall_core::event::Event;
    use hushwall_core::pcapng::Direction;
    use hushwall_core::policy::Policy;
    use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
    use std::os::unix::net::UnixDatagram;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    /// A file in memory, shared with the test; fails every write once `fail` is set.
    #[derive(Clone, Default)]
    struct Shared {
        bytes: Arc<Mutex<Vec<u8>>>,
        fail: Arc<AtomicBool>,
    }

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::Error::other("disk full"));
            }
            self.bytes.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn record(i: u64) -> CaptureRecord {
        CaptureRecord { time_us: i, direction: Direction::Outbound, packet: vec![0x45; 100], comment: None }
    }

    /// Whole pcapng blocks: (type, total length) each; panics on a torn block.
    fn blocks(bytes: &[u8]) -> Vec<(u32, usize)> {
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32_at(at + 4) as usize;
            assert_eq!(u32_at(at + len - 4) as usize, len, "trailing length");
            out.push((u32_at(at), len));
            at += len;
        }
        out
    }

    /// How many whole blocks `bytes` starts with; a block the writer thread is still writing is not counted.
    fn whole_blocks(bytes: &[u8]) -> usize {
        let (mut at, mut count) = (0, 0);
        while let Some(len) = bytes.get(at + 4..at + 8).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize) {
            if len == 0 || at + len > bytes.len() {
                break;
            }
            at += len;
            count += 1;
        }
        count
    }

    #[test]
    fn the_thread_honours_the_cap_and_reports_what_it_left_out() {
        let file = Shared::default();
        let mut uncapped = PcapngWriter::new(io::sink(), "hushwall-tun").unwrap();
        let headers = uncapped.written();
        uncapped.write_packet(0, Direction::Outbound, &record(0).packet, None).unwrap();
        let per_packet = uncapped.written() - headers;
        let max = headers + 3 * per_packet + per_packet / 2;
        let (capture, report) = CaptureFile::new(file.clone(), max).unwrap();
        assert_eq!(file.bytes.lock().unwrap().len() as u64, headers, "the headers are on disk at start");
        let mut writer = CaptureWriter::spawn(capture).unwrap();
        assert!(writer.hand_over((0..4).map(record).collect()));
        assert!(writer.hand_over((4..10).map(record).collect()));
        assert_eq!(report.summary(), None, "still running");
        drop(writer);
        let summary = report.summary().expect("ended");
        assert_eq!(summary, CaptureSummary { written: 3, not_written: 7, dropped: 0, error: None });
        let bytes = file.bytes.lock().unwrap().clone();
        assert!(bytes.len() as u64 <= max);
        assert_eq!(blocks(&bytes).len(), 2 + 3, "a valid pcapng of whole blocks");

        // A cap the headers nearly fill leaves every packet out; no cap leaves none out.
        let (capture, report) = CaptureFile::new(io::sink(), 100).unwrap();
        let mut writer = CaptureWriter::spawn(capture).unwrap();
        assert!(writer.hand_over((0..5).map(record).collect()));
        drop(writer);
        assert_eq!(report.summary().map(|s| (s.written, s.not_written)), Some((0, 5)));
        let (capture, report) = CaptureFile::new(io::sink(), u64::MAX).unwrap();
        let mut writer = CaptureWriter::spawn(capture).unwrap();
        assert!(writer.hand_over((0..5).map(record).collect()));
        drop(writer);
        assert_eq!(report.summary().map(|s| (s.written, s.not_written)), Some((5, 0)));
    }

    #[test]
    fn a_write_error_ends_the_capture_with_the_error_reported() {
        let file = Shared::default();
        let (capture, report) = CaptureFile::new(file.clone(), u64::MAX).unwrap();
        file.fail.store(true, Ordering::SeqCst);
        let mut writer = CaptureWriter::spawn(capture).unwrap();
        assert!(writer.hand_over(vec![record(0)]));
        // The thread ends on the error; the next hand-over finds it gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while report.summary().is_none() {
            assert!(std::time::Instant::now() < deadline, "the capture thread did not end on a write error");
            std::thread::yield_now();
        }
        let summary = report.summary().unwrap();
        assert_eq!((summary.written, summary.error.as_deref()), (0, Some("disk full")));
        while writer.hand_over(vec![record(1)]) {
            assert!(std::time::Instant::now() < deadline, "the thread's end was not noticed");
            std::thread::yield_now();
        }
        drop(writer);
    }

    #[test]
    fn a_failed_headers_write_fails_at_start() {
        let file = Shared::default();
        file.fail.store(true, Ordering::SeqCst);
        assert!(CaptureFile::new(file, u64::MAX).is_err());
    }

    /// A file whose writes wait while it is shut, saying that one is waiting.
    #[derive(Clone, Default)]
    struct Gate {
        state: Arc<(Mutex<(bool, bool)>, std::sync::Condvar)>,
    }

    impl Gate {
        fn set_shut(&self, shut: bool) {
            self.state.0.lock().unwrap().0 = shut;
            self.state.1.notify_all();
        }
        fn writer_waiting(&self) -> bool {
            self.state.0.lock().unwrap().1
        }
    }

    /// Opens the gate when dropped, so a failed assertion cannot leave the capture thread stuck (and the test
    /// hanging in the writer's join).
    struct OpenOnDrop(Gate);

    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.set_shut(false);
        }
    }

    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let (lock, changed) = &*self.state;
            let mut state = lock.lock().unwrap();
            while state.0 {
                state.1 = true;
                state = changed.wait(state).unwrap();
            }
            state.1 = false;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer stuck on a slow disk never makes the loop wait: past the channel's room (batches) or bytes in
    /// hand, batches are dropped and counted, and what was handed over is still written.
    #[test]
    fn a_writer_behind_drops_and_counts_instead_of_waiting() {
        let gate = Gate::default();
        let (capture, report) = CaptureFile::new(gate.clone(), u64::MAX).unwrap();
        gate.set_shut(true);
        let mut writer = CaptureWriter::spawn(capture).unwrap();
        let opener = OpenOnDrop(gate.clone());
        assert!(writer.hand_over(vec![record(0)]));
        wait_until("the thread is stuck writing", || gate.writer_waiting());
        for i in 0..QUEUE_BATCHES as u64 {
            assert!(writer.hand_over(vec![record(i), record(i)]), "room for {QUEUE_BATCHES} batches");
        }
        assert_eq!(writer.dropped, 0);
        assert!(writer.hand_over(vec![record(0); 3]));
        assert_eq!(writer.dropped, 3, "the channel is full");
        drop(opener);
        wait_until("the channel has room", || writer.in_hand.load(Ordering::Acquire) == 0);
        let huge = CaptureRecord { packet: vec![0x45; QUEUE_BYTES + 1], ..record(0) };
        assert!(writer.hand_over(vec![huge, record(1)]));
        assert_eq!(writer.dropped, 5, "more bytes than may be in hand");
        drop(writer);
        let summary = report.summary().unwrap();
        assert_eq!((summary.written, summary.dropped), (1 + 2 * QUEUE_BATCHES as u64, 5));
    }

    /// One end of a datagram socketpair as the tun: one read = one packet.
    struct PairTun(UnixDatagram);

    impl io::Read for PairTun {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.recv(buf)
        }
    }

    impl Write for PairTun {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.send(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl AsRawFd for PairTun {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
    }

    struct NoSockets;

    impl Protector for NoSockets {
        fn protect(&mut self, _: BorrowedFd<'_>) -> bool {
            false
        }
    }

    struct Discard;

    impl EventSink for Discard {
        fn deliver(&mut self, _: &[Event]) {}
    }

    /// The Internet checksum of `bytes`.
    fn checksum(bytes: &[u8]) -> [u8; 2] {
        let mut sum: u32 =
            bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        (!(sum as u16)).to_be_bytes()
    }

    /// An IPv4 ICMP echo request from the phone (the engine refuses pings with an ICMP error).
    fn echo_request(seq: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 111, 0, 1, 198, 18, 1, 1];
        let ip_sum = checksum(&p);
        p[10..12].copy_from_slice(&ip_sum);
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
        icmp.extend_from_slice(&seq.to_be_bytes());
        let icmp_sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&icmp_sum);
        p.extend_from_slice(&icmp);
        p
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::yield_now();
        }
    }

    /// Through the event loop: the capture thread writes both directions with the verdict on the phone's packet;
    /// a write error then ends the capture, not the engine, which keeps answering and stops cleanly.
    #[test]
    fn the_event_loop_outlives_a_capture_write_error() {
        let file = Shared::default();
        let (capture, report) = CaptureFile::new(file.clone(), u64::MAX).unwrap();
        let headers = file.bytes.lock().unwrap().len();
        let (phone, engine_end) = UnixDatagram::pair().unwrap();
        phone.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let platform = Platform {
            protector: Box::new(NoSockets),
            uids: Box::new(NoUids),
            events: Box::new(Discard),
            watch_network: false,
            capture: Some(capture),
        };
        let policy = Arc::new(Policy::compile(&[]).unwrap());
        let mut engine = EngineThread::spawn(Control::new(), move |control| {
            crate::run(PairTun(engine_end), EngineConfig::default(), policy, platform, control)
        })
        .unwrap();
        let mut buf = [0u8; 2048];
        let mut ping = |seq: u16| {
            phone.send(&echo_request(seq)).unwrap();
            let n = phone.recv(&mut buf).unwrap_or_else(|e| panic!("ping {seq}: the engine did not answer: {e}"));
            assert_eq!((n, buf[9], buf[20]), (56, 1, 3), "ping {seq}: an ICMP unreachable quoting it");
        };
        ping(1);
        let packets = || whole_blocks(file.bytes.lock().unwrap().get(headers..).unwrap_or_default());
        wait_until("the first exchange is on disk", || packets() == 2);
        let bytes = file.bytes.lock().unwrap().clone();
        let comment = b"hushwall: block icmp_unsupported";
        let request = &bytes[headers..headers + blocks(&bytes[headers..])[0].1];
        assert!(request.windows(comment.len()).any(|w| w == comment), "the verdict is on the request");
        assert!(request.windows(28).any(|w| w == echo_request(1)), "the request is the first packet");

        file.fail.store(true, Ordering::SeqCst);
        ping(2);
        wait_until("the capture ends on the write error", || report.summary().is_some());
        for seq in 3..=5 {
            ping(seq);
        }
        let stats = engine.stop().expect("the loop ends cleanly");
        assert_eq!((stats.packets_in, stats.packets_out), (5, 5));
        let summary = report.summary().unwrap();
        assert_eq!((summary.written, summary.error.as_deref()), (2, Some("disk full")));
    }
}
