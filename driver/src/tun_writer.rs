//! Writing packets to the tun from a second thread.
//!
//! On a plain tun every packet costs one `write()`, and the kernel runs the phone's whole TCP receive path for
//! it inside that call: in the profile this is the largest single cost of a download. A writer thread lets that
//! work run beside the engine (another core) instead of in series with it. Order is kept: batches go to one
//! thread through a FIFO, and a small batch is written inline only when the writer has nothing in hand, so a
//! DNS answer or a SYN|ACK never waits for a thread hand-off on an otherwise quiet engine. The writer sleeps in
//! `recv` when there is nothing to write: no wake-ups when idle.

use crate::event_loop::trace::Trace;
use crate::sys;
use hushwall_core::engine::Engine;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Batches of at most this many packets are written inline when the writer is idle.
const INLINE_MAX: usize = 8;
/// Batches handed over and not yet taken by the writer before the engine waits (backpressure).
const QUEUE_BATCHES: usize = 4;

/// A batch written by the writer thread, handed back: the buffers and how many writes failed.
type Written = (Vec<Vec<u8>>, u64);

/// The engine side of the writer thread.
pub(crate) struct TunWriter {
    file: File,
    to_writer: Option<SyncSender<Vec<Vec<u8>>>>,
    from_writer: Receiver<Written>,
    /// Batches handed to the writer and not yet completely written.
    in_hand: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl TunWriter {
    /// Starts the writer thread on a duplicate of `tun`.
    pub(crate) fn spawn(tun: RawFd) -> io::Result<Self> {
        let file = File::from(sys::dup(tun)?);
        let mut thread_file = File::from(sys::dup(tun)?);
        let (to_writer, batches) = mpsc::sync_channel::<Vec<Vec<u8>>>(QUEUE_BATCHES);
        let (written, from_writer) = mpsc::channel::<Written>();
        let in_hand = Arc::new(AtomicUsize::new(0));
        let thread_in_hand = Arc::clone(&in_hand);
        let thread = std::thread::Builder::new().name("tun-writer".into()).spawn(move || {
            while let Ok(batch) = batches.recv() {
                let failed = write_all(&mut thread_file, &batch);
                thread_in_hand.fetch_sub(1, Ordering::AcqRel);
                if written.send((batch, failed)).is_err() {
                    break;
                }
            }
        })?;
        Ok(TunWriter { file, to_writer: Some(to_writer), from_writer, in_hand, thread: Some(thread) })
    }

    /// Writes everything the engine has for the tun, in order after everything handed over before (noting in
    /// `trace`, if on, what was written here and what was handed over).
    pub(crate) fn flush(&mut self, engine: &mut Engine, trace: Option<&mut Trace>) {
        while let Ok((batch, failed)) = self.from_writer.try_recv() {
            engine.recycle_tun_buffers(batch);
            if failed > 0 {
                engine.note_tun_write_failures(failed);
            }
        }
        let mut batch = Vec::new();
        engine.take_tun_packets(&mut batch);
        if batch.is_empty() {
            return;
        }
        if batch.len() <= INLINE_MAX && self.in_hand.load(Ordering::Acquire) == 0 {
            let failed = write_all(&mut self.file, &batch);
            if let Some(trace) = trace {
                batch.iter().for_each(|packet| trace.tun_out(packet, "inline"));
            }
            engine.recycle_tun_buffers(batch);
            if failed > 0 {
                engine.note_tun_write_failures(failed);
            }
            return;
        }
        if let Some(trace) = trace {
            batch.iter().for_each(|packet| trace.tun_out(packet, "handoff"));
        }
        self.in_hand.fetch_add(1, Ordering::AcqRel);
        let sent = match &self.to_writer {
            Some(to_writer) => to_writer.send(batch).map_err(|e| e.0),
            None => Err(batch),
        };
        if let Err(batch) = sent {
            // The writer thread is gone (it only stops when we drop the sender): write here instead.
            self.in_hand.fetch_sub(1, Ordering::AcqRel);
            let failed = write_all(&mut self.file, &batch);
            engine.recycle_tun_buffers(batch);
            if failed > 0 {
                engine.note_tun_write_failures(failed);
            }
        }
    }
}

impl Drop for TunWriter {
    fn drop(&mut self) {
        self.to_writer = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes each packet with one `write()`; returns how many failed (those are dropped: TCP retransmits).
fn write_all(file: &mut File, batch: &[Vec<u8>]) -> u64 {
    let mut failed = 0;
    for packet in batch {
        if file.write(packet).is_err() {
            failed += 1;
        }
    }
    failed
}
