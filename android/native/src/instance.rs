//! Running engines and the handles Kotlin holds for them.
//!
//! A handle is a `jlong` naming an entry in a process-wide registry, not a raw pointer: a handle used after
//! `destroy`, twice destroyed, or simply made up is looked up, not dereferenced, so it gives an
//! `IllegalStateException` instead of a use-after-free. Handles count up from 1 and are never reused. The
//! lookup (a mutex and a hash probe) happens once per Kotlin call, never per packet.

use crate::callbacks::{CachedUids, JavaCallbacks, JavaProtector, JavaUids, QueueSink};
use crate::config::{StartConfig, UidSource};
use crate::error::{BridgeError, Result};
use crate::events::EventQueue;
use hushwall_core::engine::{NetworkInfo, Stats};
use hushwall_core::event::Event;
use hushwall_core::policy::Policy;
use hushwall_driver::platform::{NoUids, UidResolver};
use hushwall_driver::procnet::ProcNetUids;
use hushwall_driver::{Control, EngineThread, Platform};
use std::collections::BTreeMap;
use std::fs::File;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// One engine started from Kotlin.
pub struct Instance {
    control: Arc<Control>,
    thread: Mutex<Option<EngineThread>>,
    events: Arc<EventQueue>,
    /// Why the engine loop ended on its own (the tun was closed, a poll error), if it did.
    failure: Arc<Mutex<Option<String>>>,
    /// Final counters, once stopped.
    stopped: Mutex<Option<Stats>>,
}

/// Counters as Kotlin receives them: the engine's [`Stats`], events dropped (engine and bridge), running.
pub const COUNTER_COUNT: usize = 16;

impl Instance {
    /// Starts an engine thread on `tun` (which it then owns).
    pub fn start(tun: File, config: StartConfig, callbacks: Arc<JavaCallbacks>) -> Result<Arc<Instance>> {
        let events = Arc::new(EventQueue::default());
        let failure = Arc::new(Mutex::new(None));
        let StartConfig { engine, policy, uids, capture } = config;
        let uids: Box<dyn UidResolver> = match uids {
            UidSource::Callback => Box::new(CachedUids::new(JavaUids(Arc::clone(&callbacks)))),
            UidSource::ProcNet => Box::new(CachedUids::new(ProcNetUids::new())),
            UidSource::None => Box::new(NoUids),
        };
        let platform = Platform {
            protector: Box::new(JavaProtector(Arc::clone(&callbacks))),
            uids,
            events: Box::new(QueueSink(Arc::clone(&events))),
            // Android apps may not bind netlink route sockets: the app reports changes (networkChanged).
            watch_network: false,
            // Written on the driver's capture thread; closed before the engine thread ends.
            capture,
        };
        let (loop_events, loop_failure) = (Arc::clone(&events), Arc::clone(&failure));
        let thread = EngineThread::spawn(Control::new(), move |control| {
            // Attach once, as a daemon (a forgotten engine must not keep the JVM alive); detached when this
            // thread exits. protect/uidOf then find the env already there.
            if !callbacks.attach() {
                log::error!("engine thread not attached; protect() will refuse every socket");
            }
            let result = hushwall_driver::run(tun, engine, Arc::new(policy), platform, control);
            if let Err(e) = &result {
                log::error!("engine loop ended: {e}");
                *loop_failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
            }
            loop_events.close();
            drop(callbacks);
            result
        })
        .map_err(|e| BridgeError::Io(format!("cannot start the engine thread: {e}")))?;
        let control = Arc::clone(thread.control());
        Ok(Arc::new(Instance { control, thread: Mutex::new(Some(thread)), events, failure, stopped: Mutex::new(None) }))
    }

    fn is_stopped(&self) -> bool {
        self.stopped.lock().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Swaps the policy of the running engine.
    pub fn replace_policy(&self, policy: Policy) -> Result<()> {
        if self.is_stopped() {
            return Err(BridgeError::State("the engine is stopped".into()));
        }
        self.control.set_policy(Arc::new(policy));
        Ok(())
    }

    /// Replaces the set of apps (UIDs) whose traffic the running engine refuses.
    pub fn set_blocked_uids(&self, uids: std::collections::HashSet<u32>) -> Result<()> {
        if self.is_stopped() {
            return Err(BridgeError::State("the engine is stopped".into()));
        }
        self.control.set_blocked_uids(uids);
        Ok(())
    }

    /// Reports a network change to the running engine (applied at its next wake-up, which this triggers).
    pub fn network_changed(&self, info: NetworkInfo) -> Result<()> {
        if self.is_stopped() {
            return Err(BridgeError::State("the engine is stopped".into()));
        }
        self.control.network_changed(info);
        Ok(())
    }

    /// Takes up to `max` queued events, waiting up to `wait` for the first.
    pub fn take_events(&self, max: usize, wait: Duration) -> Vec<Event> {
        self.events.take(max, wait)
    }

    /// Stops the engine and waits for its thread; idempotent.
    pub fn stop(&self) -> Stats {
        let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(stats) = *stopped {
            return stats;
        }
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        let stats = match thread {
            Some(mut thread) => thread.stop().unwrap_or_else(|e| {
                log::warn!("engine stopped with an error: {e}");
                self.control.stats()
            }),
            None => self.control.stats(),
        };
        self.events.close();
        *stopped = Some(stats);
        stats
    }

    /// The counters in Kotlin's order (see [`COUNTER_COUNT`]).
    pub fn counters(&self) -> [i64; COUNTER_COUNT] {
        let stopped = *self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let s = stopped.unwrap_or_else(|| self.control.stats());
        let running = stopped.is_none() && self.failure().is_none();
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        [
            n(s.packets_in),
            n(s.bytes_in),
            n(s.packets_out),
            n(s.bytes_out),
            n(s.malformed),
            n(s.dropped),
            n(s.tcp_flows),
            n(s.udp_flows),
            n(s.tcp_active),
            n(s.udp_active),
            n(s.dns_queries),
            n(s.blocked),
            n(s.upstream_errors),
            n(s.events_dropped.saturating_add(self.events.dropped())),
            n(s.flows_evicted),
            i64::from(running),
        ]
    }

    /// Why the engine ended on its own, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The event queue (host-test injection of synthetic events).
    #[cfg(feature = "host-test")]
    pub fn events(&self) -> &EventQueue {
        &self.events
    }
}

/// Live instances by handle.
struct Registry {
    next: i64,
    live: BTreeMap<i64, Arc<Instance>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { next: 1, live: BTreeMap::new() });

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers an instance; returns its handle.
pub fn register(instance: Arc<Instance>) -> i64 {
    let mut registry = registry();
    let handle = registry.next;
    registry.next = registry.next.saturating_add(1);
    registry.live.insert(handle, instance);
    handle
}

/// The instance behind `handle`.
pub fn lookup(handle: i64) -> Result<Arc<Instance>> {
    registry()
        .live
        .get(&handle)
        .cloned()
        .ok_or_else(|| BridgeError::State(format!("engine handle {handle} is not live (destroyed or never created)")))
}

/// Removes `handle` (stopping its engine first if needed).
pub fn destroy(handle: i64) -> Result<()> {
    let instance = registry().live.remove(&handle);
    match instance {
        // Stop outside the registry lock: joining the thread can take a moment.
        Some(instance) => {
            instance.stop();
            Ok(())
        }
        None => Err(BridgeError::State(format!("engine handle {handle} is not live (destroyed or never created)"))),
    }
}

/// Number of live instances (diagnostics and tests).
pub fn live_count() -> usize {
    registry().live.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_handles_are_state_errors() {
        assert!(matches!(lookup(0), Err(BridgeError::State(_))));
        assert!(matches!(lookup(-5), Err(BridgeError::State(_))));
        assert!(matches!(destroy(i64::MAX), Err(BridgeError::State(_))));
    }
}
