//! Controlling a running engine from other threads: stop it, swap its policy, report network changes, read its
//! counters.

use hushwall_core::engine::{NetworkInfo, Stats};
use hushwall_core::policy::Policy;
use mio::Waker;
use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

/// Shared between the event loop and whoever controls it. Cheap to clone through `Arc`.
#[derive(Default)]
pub struct Control {
    stop: AtomicBool,
    policy: Mutex<Option<Arc<Policy>>>,
    blocked_uids: Mutex<Option<HashSet<u32>>>,
    network: Mutex<Option<NetworkInfo>>,
    stats: Mutex<Stats>,
    waker: OnceLock<Waker>,
}

impl Control {
    /// A control for a loop that has not started yet.
    pub fn new() -> Arc<Control> {
        Arc::new(Control::default())
    }

    /// Asks the loop to stop; it exits at its next wake-up, which this triggers.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Hands the loop a new policy; it applies it at its next wake-up, which this triggers.
    pub fn set_policy(&self, policy: Arc<Policy>) {
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) = Some(policy);
        self.wake();
    }

    /// Blocks all new traffic of these apps (UIDs), replacing the previous set; applied at the loop's next
    /// wake-up, which this triggers.
    pub fn set_blocked_uids(&self, uids: HashSet<u32>) {
        *self.blocked_uids.lock().unwrap_or_else(PoisonError::into_inner) = Some(uids);
        self.wake();
    }

    /// Reports that the network under the engine changed (Android's network callback); applied at the loop's
    /// next wake-up, which this triggers: new flows of a family without a route are refused from then on, and
    /// flows whose socket lost its address end. Only the latest report counts if several arrive in between.
    pub fn network_changed(&self, info: NetworkInfo) {
        *self.network.lock().unwrap_or_else(PoisonError::into_inner) = Some(info);
        self.wake();
    }

    /// The counters as of the loop's last iteration.
    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    pub(crate) fn take_policy(&self) -> Option<Arc<Policy>> {
        self.policy.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    pub(crate) fn take_blocked_uids(&self) -> Option<HashSet<u32>> {
        self.blocked_uids.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    pub(crate) fn take_network(&self) -> Option<NetworkInfo> {
        self.network.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    pub(crate) fn publish_stats(&self, stats: Stats) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = stats;
    }

    pub(crate) fn install_waker(&self, waker: Waker) {
        // A second install (a loop restarted on the same control) keeps the first waker, which is then stale;
        // controls are one per loop run, so this does not happen.
        let _ = self.waker.set(waker);
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.get() {
            if let Err(e) = waker.wake() {
                log::warn!("could not wake the engine loop: {e}");
            }
        }
    }
}

/// An engine loop running on its own thread.
pub struct EngineThread {
    control: Arc<Control>,
    thread: Option<JoinHandle<io::Result<Stats>>>,
}

impl EngineThread {
    /// Spawns `body` (which must run the loop with `control`) on a thread named `hushwall-engine`.
    pub fn spawn(
        control: Arc<Control>,
        body: impl FnOnce(Arc<Control>) -> io::Result<Stats> + Send + 'static,
    ) -> io::Result<EngineThread> {
        let loop_control = Arc::clone(&control);
        let thread = std::thread::Builder::new().name("hushwall-engine".into()).spawn(move || body(loop_control))?;
        Ok(EngineThread { control, thread: Some(thread) })
    }

    /// The loop's control.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Stops the loop and waits for it; returns its final counters. Idempotent: later calls return the last
    /// published counters.
    pub fn stop(&mut self) -> io::Result<Stats> {
        self.control.stop();
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| Err(io::Error::other("engine thread panicked"))),
            None => Ok(self.control.stats()),
        }
    }
}

impl Drop for EngineThread {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            log::warn!("engine stopped with an error: {e}");
        }
    }
}
