//! Calls from the engine thread into Kotlin's `app.hushwall.engine.Callbacks` (implemented by the
//! `VpnService`): `protect(fd)` once per upstream socket, `uidOf(...)` once per event whose flow is not in the
//! cache. Never per packet.
//!
//! The engine thread attaches to the JVM once, as a daemon, when it starts (see `instance.rs`); it is detached
//! automatically when it exits. Every call runs in its own JNI local frame, because a native thread that never
//! returns to Java would otherwise accumulate local references until ART aborts at 512. A Java exception
//! thrown by a callback is logged and cleared and counts as "refused" / "unknown".

use hushwall_core::event::{Event, Protocol};
use hushwall_driver::platform::{EventSink, Protector, UidResolver};
use jni::objects::{GlobalRef, JValue};
use jni::{JNIEnv, JavaVM};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::EventQueue;

/// `OsConstants.IPPROTO_TCP`, as `getConnectionOwnerUid` expects.
pub const IPPROTO_TCP: i32 = 6;
/// `OsConstants.IPPROTO_UDP`.
pub const IPPROTO_UDP: i32 = 17;

/// The Kotlin callbacks object and the VM to reach it from any thread.
pub struct JavaCallbacks {
    vm: JavaVM,
    callbacks: GlobalRef,
}

impl JavaCallbacks {
    /// Wraps a global reference to a `Callbacks` implementation.
    pub fn new(vm: JavaVM, callbacks: GlobalRef) -> Arc<Self> {
        Arc::new(JavaCallbacks { vm, callbacks })
    }

    /// The env of the current thread, attaching it (as a daemon, detached at thread exit) if needed.
    fn env(&self) -> Option<JNIEnv<'_>> {
        match self.vm.attach_current_thread_as_daemon() {
            Ok(env) => Some(env),
            Err(e) => {
                log::error!("cannot attach the engine thread to the JVM: {e}");
                None
            }
        }
    }

    /// Attaches the calling thread (the engine thread calls this once at start) and gives its
    /// `java.lang.Thread` the native thread's name, so Java-side traces and thread dumps show `hushwall-engine`.
    pub fn attach(&self) -> bool {
        let Some(mut env) = self.env() else { return false };
        let name = std::thread::current().name().unwrap_or("hushwall").to_owned();
        let named = env.with_local_frame(4, |env| -> jni::errors::Result<()> {
            let thread =
                env.call_static_method("java/lang/Thread", "currentThread", "()Ljava/lang/Thread;", &[])?.l()?;
            let name = env.new_string(&name)?;
            env.call_method(&thread, "setName", "(Ljava/lang/String;)V", &[JValue::Object(&name)])?;
            Ok(())
        });
        if let Err(e) = named {
            clear_exception(&mut env, "Thread.setName", &e);
        }
        true
    }

    /// Kotlin's `protect(fd)`; false on a Java exception.
    fn protect(&self, fd: i32) -> bool {
        let Some(mut env) = self.env() else { return false };
        let result = env.with_local_frame(4, |env| {
            env.call_method(self.callbacks.as_obj(), "protect", "(I)Z", &[JValue::Int(fd)])?.z()
        });
        match result {
            Ok(protected) => protected,
            Err(e) => {
                clear_exception(&mut env, "protect", &e);
                false
            }
        }
    }

    /// Kotlin's `uidOf(protocol, srcAddr, srcPort, dstAddr, dstPort)`; None for a negative answer or an
    /// exception.
    fn uid_of(&self, protocol: i32, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        let mut env = self.env()?;
        let result = env.with_local_frame(8, |env| -> jni::errors::Result<i32> {
            let src_ip = env.byte_array_from_slice(&ip_bytes(src.ip()))?;
            let dst_ip = env.byte_array_from_slice(&ip_bytes(dst.ip()))?;
            env.call_method(
                self.callbacks.as_obj(),
                "uidOf",
                "(I[BI[BI)I",
                &[
                    JValue::Int(protocol),
                    JValue::Object(&src_ip),
                    JValue::Int(i32::from(src.port())),
                    JValue::Object(&dst_ip),
                    JValue::Int(i32::from(dst.port())),
                ],
            )?
            .i()
        });
        match result {
            Ok(uid) => u32::try_from(uid).ok(),
            Err(e) => {
                clear_exception(&mut env, "uidOf", &e);
                None
            }
        }
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Logs and clears a Java exception a callback threw, so the engine thread can carry on.
fn clear_exception(env: &mut JNIEnv<'_>, method: &str, error: &jni::errors::Error) {
    if env.exception_check().unwrap_or(false) {
        let _ = env.exception_describe();
        let _ = env.exception_clear();
    }
    log::warn!("Callbacks.{method} failed: {error}");
}

/// [`Protector`] backed by Kotlin's `protect` (Android: `VpnService.protect(fd)`).
pub struct JavaProtector(pub Arc<JavaCallbacks>);

impl Protector for JavaProtector {
    fn protect(&mut self, socket: BorrowedFd<'_>) -> bool {
        let protected = self.0.protect(socket.as_raw_fd());
        if !protected {
            log::warn!("Callbacks.protect refused socket {}; the connection is failed", socket.as_raw_fd());
        }
        protected
    }
}

/// How long a known UID stays cached; flows are short and ports get reused by other apps.
const UID_TTL: Duration = Duration::from_secs(60);
/// How long "unknown" stays cached (the socket may simply not be visible yet).
const UNKNOWN_TTL: Duration = Duration::from_secs(2);
/// Entries kept before the cache is cleared wholesale.
const UID_CACHE_MAX: usize = 4096;

/// Caches any [`UidResolver`] by (protocol, src, dst); the engine asks once per event.
pub struct CachedUids<R> {
    inner: R,
    cache: HashMap<(Protocol, SocketAddr, SocketAddr), (Option<u32>, Instant)>,
}

impl<R: UidResolver> CachedUids<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        CachedUids { inner, cache: HashMap::new() }
    }
}

impl<R: UidResolver> UidResolver for CachedUids<R> {
    fn uid(&mut self, protocol: Protocol, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        let now = Instant::now();
        let key = (protocol, src, dst);
        if let Some(&(uid, at)) = self.cache.get(&key) {
            let ttl = if uid.is_some() { UID_TTL } else { UNKNOWN_TTL };
            if now.saturating_duration_since(at) < ttl {
                return uid;
            }
        }
        let uid = self.inner.uid(protocol, src, dst);
        if self.cache.len() >= UID_CACHE_MAX {
            self.cache.clear();
        }
        self.cache.insert(key, (uid, now));
        uid
    }
}

/// [`UidResolver`] backed by Kotlin's `uidOf` (Android 10+: `getConnectionOwnerUid`).
pub struct JavaUids(pub Arc<JavaCallbacks>);

impl UidResolver for JavaUids {
    fn uid(&mut self, protocol: Protocol, src: SocketAddr, dst: SocketAddr) -> Option<u32> {
        let protocol = match protocol {
            Protocol::Tcp => IPPROTO_TCP,
            // DNS reaches the engine over UDP in all but rare TCP fallbacks.
            Protocol::Udp | Protocol::Dns => IPPROTO_UDP,
            Protocol::Icmp => return None,
        };
        self.0.uid_of(protocol, src, dst)
    }
}

/// [`EventSink`] that queues batches for Kotlin's `pollEvents`.
pub struct QueueSink(pub Arc<EventQueue>);

impl EventSink for QueueSink {
    fn deliver(&mut self, events: &[Event]) {
        self.0.push(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(u32);

    impl UidResolver for Counting {
        fn uid(&mut self, _: Protocol, src: SocketAddr, _: SocketAddr) -> Option<u32> {
            self.0 += 1;
            (src.port() != 0).then_some(1000 + u32::from(src.port()))
        }
    }

    #[test]
    fn cache_asks_once_per_flow() {
        let mut uids = CachedUids::new(Counting(0));
        let src: SocketAddr = "10.111.0.1:40000".parse().unwrap();
        let dst: SocketAddr = "198.18.1.10:443".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(uids.uid(Protocol::Tcp, src, dst), Some(41000));
        }
        assert_eq!(uids.inner.0, 1);
        assert_eq!(uids.uid(Protocol::Udp, src, dst), Some(41000));
        assert_eq!(uids.inner.0, 2);
    }

    #[test]
    fn cache_stays_bounded() {
        let mut uids = CachedUids::new(Counting(0));
        let dst: SocketAddr = "198.18.1.10:443".parse().unwrap();
        for port in 1..=(UID_CACHE_MAX as u16 + 100) {
            uids.uid(Protocol::Tcp, SocketAddr::from(([10, 111, 0, 1], port)), dst);
        }
        assert!(uids.cache.len() <= UID_CACHE_MAX);
    }
}
