//! The `native` methods of `app.hushwall.engine.NativeBridge` (Kotlin `internal object` with `@JvmStatic
//! external fun`s; `Engine` is the public API on top). Each export only converts types and runs inside
//! [`entry`], which turns errors into Java exceptions and (on hosts) panics into `RuntimeException`.
//!
//! `#[no_mangle]` counts as unsafe code to the lint (a symbol name could clash); these are the JNI names the
//! JVM looks up, and they are unique to this library.

#![allow(unsafe_code)]

use crate::callbacks::JavaCallbacks;
use crate::error::{entry, BridgeError, Result};
use crate::instance::{self, Instance};
use crate::{config, events, fd};
use jni::objects::{JClass, JIntArray, JObject, JString};
use jni::sys::{jbyteArray, jint, jlong, jlongArray, jstring, JNI_VERSION_1_6};
use jni::JNIEnv;
use std::ffi::c_void;
use std::time::Duration;

/// Called by `System.loadLibrary("hushwall")`: installs logging and the panic hook.
#[no_mangle]
pub extern "system" fn JNI_OnLoad(_vm: *mut jni::sys::JavaVM, _reserved: *mut c_void) -> jint {
    crate::logging::init();
    JNI_VERSION_1_6
}

/// Reads a Java string argument; null is an `IllegalArgumentException` naming `what`.
fn string_arg(env: &mut JNIEnv<'_>, value: &JString<'_>, what: &str) -> Result<String> {
    if value.is_null() {
        return Err(BridgeError::Argument(format!("{what} must not be null")));
    }
    Ok(env.get_string(value)?.into())
}

/// `nativeStart(tunFd: Int, configJson: String, callbacks: Callbacks): Long` → a live handle.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_engine_NativeBridge_nativeStart<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    tun_fd: jint,
    config_json: JString<'local>,
    callbacks: JObject<'local>,
) -> jlong {
    entry(&mut env, 0, |env| {
        crate::logging::init();
        let json = string_arg(env, &config_json, "config")?;
        if callbacks.is_null() {
            return Err(BridgeError::Argument("callbacks must not be null".into()));
        }
        let config = config::parse_start(&json).map_err(BridgeError::Argument)?;
        let tun = fd::adopt_tun(tun_fd)?;
        let callbacks = JavaCallbacks::new(env.get_java_vm()?, env.new_global_ref(&callbacks)?);
        let instance = Instance::start(tun, config, callbacks)?;
        let handle = instance::register(instance);
        log::info!("engine {handle} started on tun fd {tun_fd}");
        Ok(handle)
    })
}

/// `nativeReplacePolicy(handle: Long, policyJson: String)`: compiles on the caller's thread, swaps atomically.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_engine_NativeBridge_nativeReplacePolicy<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    policy_json: JString<'local>,
) {
    entry(&mut env, (), |env| {
        let instance = instance::lookup(handle)?;
        let json = string_arg(env, &policy_json, "policy")?;
        let policy = config::parse_policy(&json).map_err(BridgeError::Argument)?;
        instance.replace_policy(policy)
    })
}

/// `nativeSetBlockedUids(handle: Long, uids: IntArray)`: refuse all new traffic of these apps from now on.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_engine_NativeBridge_nativeSetBlockedUids<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    uids: JIntArray<'local>,
) {
    entry(&mut env, (), |env| {
        let instance = instance::lookup(handle)?;
        if uids.is_null() {
            return Err(BridgeError::Argument("uids must not be null".into()));
        }
        let len = env.get_array_length(&uids).map_err(|e| BridgeError::Argument(format!("uids: {e}")))?;
        let mut raw = vec![0; usize::try_from(len).unwrap_or(0)];
        env.get_int_array_region(&uids, 0, &mut raw).map_err(|e| BridgeError::Argument(format!("uids: {e}")))?;
        let set = raw
            .into_iter()
            .map(|uid| u32::try_from(uid).map_err(|_| BridgeError::Argument(format!("negative uid {uid}"))))
            .collect::<Result<_>>()?;
        instance.set_blocked_uids(set)
    })
}

/// `nativeNetworkChanged(handle: Long, networkJson: String)`: the network under the VPN changed (families with a
/// route, DNS servers, Private DNS, MTU; see [`config::parse_network`]).
#[no_mangle]
pub extern "system" fn Java_app_hushwall_engine_NativeBridge_nativeNetworkChanged<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    network_json: JString<'local>,
) {
    entry(&mut env, (), |env| {
        let instance = instance::lookup(handle)?;
        let json = string_arg(env, &network_json, "network")?;
        let info = config::parse_network(&json).map_err(BridgeError::Argument)?;
        instance.network_changed(info)
    })
}

/// `nativePollEvents(handle: Long, max: Int, waitMs: Long): ByteArray?`: one batch in the format of
/// [`crate::events`], or null when none arrived within `waitMs`.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_engine_NativeBridge_nativePollEvents<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
    max: jint,
    wait_ms: jlong,
) -> jbyteArray {
    entry(&mut env, std::ptr::null_mut(), |env| {
        let max = usize::try_from(max)
            .ok()
            .filter(|&m| m > 0)
            .ok_or_else(|| BridgeError::Argument(format!("max {max} must be positive")))?;
        let wait = u64::try_from(wait_ms)
            .map(Duration::from_millis)
            .map_err(|_| BridgeError::Argument(format!("waitMs {wait_ms} must not be negative")))?;
        let instance = instance::lookup(handle)?;
        let batch = instance.take_events(max, wait);
        if batch.is_empty() {
            return Ok(std::ptr::null_mut());
        }
        Ok(env.byte_array_from_slice(&events::encode(&batch))?.into_raw())
    })
}

/// Counters in `Counters`' order as a `long[]`.
fn counters_array(env: &mut JNIEnv<'_>, values: &[i64]) -> Result<jlongArray> {
    let length = i32::try_from(values.len()).unwrap_or(i32::MAX);
    let array = env.new_long_array(length)?;
    env.set_long_array_region(&array, 0, values)?;
    Ok(array.into_raw())
}

/// `nativeCounters(handle: Long): LongArray`.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_engine_NativeBridge_nativeCounters<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
) -> jlongArray {
    entry(&mut env, std::ptr::null_mut(), |env| {
        let counters = instance::lookup(handle)?.counters();
        counters_array(env, &counters)
    })
}

/// `nativeStop(handle: Long): LongArray`: stops the engine and joins its thread (idempotent); returns the final
/// counters. The handle stays live (queued events can still be polled) until `nativeDestroy`.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_engine_NativeBridge_nativeStop<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
) -> jlongArray {
    entry(&mut env, std::ptr::null_mut(), |env| {
        let instance = instance::lookup(handle)?;
        instance.stop();
        counters_array(env, &instance.counters())
    })
}

/// `nativeFailure(handle: Long): String?`: why the engine ended on its own (tun closed, poll error), if it did.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_engine_NativeBridge_nativeFailure<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
) -> jstring {
    entry(&mut env, std::ptr::null_mut(), |env| match instance::lookup(handle)?.failure() {
        Some(message) => Ok(env.new_string(message)?.into_raw()),
        None => Ok(std::ptr::null_mut()),
    })
}

/// `nativeDestroy(handle: Long)`: stops if needed and frees the instance; the handle is dead afterwards.
#[no_mangle]
pub extern "system" fn Java_app_hushwall_engine_NativeBridge_nativeDestroy<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
    handle: jlong,
) {
    entry(&mut env, (), |_| instance::destroy(handle))
}

/// `nativeDiagnostics(): LongArray` = [live engine instances, threads this library has attached to the JVM].
#[no_mangle]
pub extern "system" fn Java_app_hushwall_engine_NativeBridge_nativeDiagnostics<'local>(
    mut env: JNIEnv<'local>,
    _class: JClass<'local>,
) -> jlongArray {
    entry(&mut env, std::ptr::null_mut(), |env| {
        let attached = env.get_java_vm()?.threads_attached();
        let values = [instance::live_count(), attached].map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        counters_array(env, &values)
    })
}
