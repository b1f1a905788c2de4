//! `libhushwall.so`: the JNI bridge between the Android app (`app.hushwall.engine.Engine`) and the engine.
//!
//! Thin by design: it converts types, turns errors into Java exceptions, holds the global references the
//! engine thread needs, and otherwise calls `hushwall-driver` exactly as the Linux CLI does.
//!
//! - **`jni` 0.21.** 0.22 (2025) redesigns the API (`Env`/`EnvUnowned`, `jni_sig!` proc macros, `with_env`
//!   that catches panics). We pick 0.21.1 because it is the version the Android Rust ecosystem has been
//!   running for years, its dependency tree is small and pure Rust (no proc-macro crate: quicker builds on
//!   our 2-core machines and nothing extra to cross-compile for `aarch64-linux-android` with `-Zbuild-std`),
//!   and 0.22's main gift here, panic catching at the boundary, is ~20 lines we own in [`error::entry`] and
//!   which cannot work on Android (`panic = "abort"`) anyway. The bridge uses only checked, safe `JNIEnv`
//!   calls; moving to 0.22 later touches `exports.rs` and `callbacks.rs` only.
//! - **Handles** are `jlong`s naming entries of a registry ([`instance`]), so a stale or doubled handle gives
//!   `IllegalStateException` rather than a use-after-free.
//! - **The tun fd** stays owned by Kotlin's `ParcelFileDescriptor`; the engine works on a `dup` it closes
//!   itself ([`fd`]).
//! - **Events** cross in batches, in a compact binary form ([`events`]); callbacks into Java happen once per
//!   upstream socket (`protect`) and once per uncached flow (`uidOf`), never per packet ([`callbacks`]).
//! - **Panics**: the Android build must set `panic = "abort"` (e.g. `--config profile.release.panic='"abort"'`
//!   with `-Zbuild-std=std,panic_abort`); there the panic hook ([`logging`]) logs message and location to
//!   logcat before the abort. On hosts every export also catches the unwind and throws `RuntimeException`.
//!   Nothing in the bridge unwraps or indexes unchecked on data from Java.
//!
//! `unsafe` is denied crate-wide and allowed only in [`fd`] (dup of the descriptor), `exports` (the
//! `#[no_mangle]` JNI symbols) and the test-only `host_test` module; each block carries a `// SAFETY:` note.

#![deny(unsafe_code)]

pub mod callbacks;
pub mod config;
pub mod error;
pub mod events;
mod exports;
pub mod fd;
#[cfg(feature = "host-test")]
mod host_test;
pub mod instance;
pub mod logging;
