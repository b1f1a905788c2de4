//! Test-only exports for the host proof (`android/host-test`), behind the `host-test` feature and never in
//! the Android build: what the `VpnService` framework provides on a phone (a tun descriptor, socket
//! protection) and a way to feed synthetic events for the benchmark. Class `app.hushwall.hosttest.TestNative`.

#![allow(unsafe_code)]

use crate::error::{entry, BridgeError, Result};
use crate::instance;
use hushwall_core::event::{Event, Outcome, Protocol};
use hushwall_core::verdict::{BlockReason, RuleRef};
use jni::objects::{JClass, JString};
use jni::sys::{jboolean, jint, jlong, JNI_FALSE, JNI_TRUE};
use jni::JNIEnv;
use std::ffi::CString;
use std::sync::Arc;

fn os_error(what: &str) -> BridgeError {
    BridgeError::Io(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Opens `/dev/net/tun` and attaches it to tun device `name` (IFF_TUN | IFF_NO_PI, created if absent) in the
/// calling thread's network namespace; the caller owns the returned descriptor (close it with `closeFd`).
fn open_tun(name: &str) -> Result<i32> {
    let path = CString::new("/dev/net/tun").map_err(|e| BridgeError::Argument(e.to_string()))?;
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(BridgeError::Argument(format!("bad interface name {name:?}")));
    }
    // SAFETY: `path` is a valid NUL-terminated string; open does not keep the pointer.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(os_error("open /dev/net/tun"));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, &b) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = b as libc::c_char;
    }
    request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads an ifreq from the pointer, which points at a live, initialised ifreq.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut request as *mut libc::ifreq) };
    if rc < 0 {
        let error = os_error("TUNSETIFF");
        // SAFETY: fd was opened above and is owned here.
        unsafe { libc::close(fd) };
        return Err(error);
    }
    Ok(fd)
}

/// `openTun(name: String): Int`.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_hosttest_TestNative_openTun<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    name: JString<'local>,
) -> jint {
    entry(&mut env, -1, |env| {
        let name: String = env.get_string(&name)?.into();
        open_tun(&name)
    })
}

/// `closeFd(fd: Int)`.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_hosttest_TestNative_closeFd<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    fd: jint,
) {
    entry(&mut env, (), |_| {
        // SAFETY: closing an integer descriptor touches no memory; the test owns `fd`.
        if unsafe { libc::close(fd) } < 0 {
            return Err(os_error("close"));
        }
        Ok(())
    })
}

/// `markSocket(fd: Int, mark: Int): Boolean`: SO_MARK, Linux's stand-in for `VpnService.protect`.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_hosttest_TestNative_markSocket<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    fd: jint,
    mark: jint,
) -> jboolean {
    entry(&mut env, JNI_FALSE, |_| {
        let value: libc::c_int = mark;
        // SAFETY: the option value points at a live c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_MARK,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(if rc == 0 { JNI_TRUE } else { JNI_FALSE })
    })
}

/// `socketType(fd: Int): Int`: SO_TYPE (1 stream, 2 datagram), -1 if not a socket.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_hosttest_TestNative_socketType<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    fd: jint,
) -> jint {
    entry(&mut env, -1, |_| {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len are live and sized as getsockopt expects.
        let rc = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_TYPE, (&mut value as *mut libc::c_int).cast(), &mut len)
        };
        Ok(if rc == 0 { value } else { -1 })
    })
}

/// `injectEvents(handle: Long, count: Int)`: queues `count` synthetic block events (benchmark input).
#[no_mangle]
pub extern "system" fn Java_app_hushwall_hosttest_TestNative_injectEvents<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    count: jint,
) {
    entry(&mut env, (), |_| {
        let instance = instance::lookup(handle)?;
        let list: Arc<str> = Arc::from("builtin:xiaomi-telemetry.txt");
        let batch: Vec<Event> = (0..count.max(0))
            .map(|i| Event {
                time_ms: 1_700_000_000_000 + i as u64,
                protocol: Protocol::Dns,
                src: std::net::SocketAddr::from(([10, 111, 0, 1], 40000 + (i % 20000) as u16)),
                dst: std::net::SocketAddr::from(([198, 18, 1, 53], 53)),
                host: Some(format!("t{}.tracking.intl.miui.com", i % 100)),
                outcome: Outcome::Block {
                    reason: BlockReason::DnsQuery,
                    rule: Some(RuleRef { list: Arc::clone(&list), line: 12, rule: "||tracking.intl.miui.com^".into() }),
                },
                uid: Some(10123),
                peek: None,
                repeats: None,
            })
            .collect();
        instance.events().push(&batch);
        Ok(())
    })
}

/// `encodeJson(handle: Long, max: Int): String?`: like `nativePollEvents` but serde JSON (format comparison in
/// the benchmark only).
#[no_mangle]
pub extern "system" fn Java_app_hushwall_hosttest_TestNative_pollEventsJson<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    max: jint,
) -> jni::sys::jstring {
    entry(&mut env, std::ptr::null_mut(), |env| {
        let batch = instance::lookup(handle)?.take_events(usize::try_from(max).unwrap_or(0), Default::default());
        if batch.is_empty() {
            return Ok(std::ptr::null_mut());
        }
        let json = serde_json::to_string(&batch).map_err(|e| BridgeError::State(e.to_string()))?;
        Ok(env.new_string(json)?.into_raw())
    })
}

/// `panic()`: panics inside an export, to prove a host panic becomes a Java exception.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_hosttest_TestNative_panic<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
) {
    entry(&mut env, (), |_| -> Result<()> {
        let v: Vec<u8> = Vec::new();
        let index = std::hint::black_box(3);
        // Deliberate: the one place an out-of-bounds index is the point.
        #[allow(clippy::indexing_slicing)]
        let _ = v[index];
        Ok(())
    })
}

/// `benchCallbacks(callbacks: Callbacks, iterations: Int): LongArray` = total nanoseconds for `iterations`
/// calls of [protect, uidOf (uncached), uid through the cache], made the way the engine makes them: from a
/// native thread attached once.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_hosttest_TestNative_benchCallbacks<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    callbacks: jni::objects::JObject<'local>,
    iterations: jint,
) -> jni::sys::jlongArray {
    use crate::callbacks::{CachedUids, JavaCallbacks, JavaProtector, JavaUids};
    use hushwall_driver::platform::{Protector, UidResolver};
    use std::os::fd::AsFd;
    use std::time::Instant;
    entry(&mut env, std::ptr::null_mut(), |env| {
        let callbacks = JavaCallbacks::new(env.get_java_vm()?, env.new_global_ref(&callbacks)?);
        let n = u32::try_from(iterations).unwrap_or(0);
        let thread = std::thread::Builder::new()
            .name("hushwall-bench".into())
            .spawn(move || -> std::io::Result<[i64; 3]> {
                callbacks.attach();
                let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
                let mut protector = JavaProtector(Arc::clone(&callbacks));
                let mut uids = JavaUids(Arc::clone(&callbacks));
                let mut cached = CachedUids::new(JavaUids(Arc::clone(&callbacks)));
                let src = std::net::SocketAddr::from(([10, 111, 0, 1], 40000));
                let dst = std::net::SocketAddr::from(([198, 18, 1, 10], 443));
                let time = |f: &mut dyn FnMut()| {
                    let start = Instant::now();
                    for _ in 0..n {
                        f();
                    }
                    i64::try_from(start.elapsed().as_nanos()).unwrap_or(i64::MAX)
                };
                let protect = time(&mut || {
                    std::hint::black_box(protector.protect(socket.as_fd()));
                });
                let uid = time(&mut || {
                    std::hint::black_box(uids.uid(Protocol::Tcp, src, dst));
                });
                let hit = time(&mut || {
                    std::hint::black_box(cached.uid(Protocol::Tcp, src, dst));
                });
                Ok([protect, uid, hit])
            })
            .map_err(|e| BridgeError::Io(e.to_string()))?;
        let times = thread
            .join()
            .map_err(|_| BridgeError::State("bench thread panicked".into()))?
            .map_err(|e| BridgeError::Io(e.to_string()))?;
        let array = env.new_long_array(3)?;
        env.set_long_array_region(&array, 0, &times)?;
        Ok(array.into_raw())
    })
}
