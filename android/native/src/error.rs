//! Errors at the JNI boundary and how each becomes a Java exception; the wrapper every export runs in.

use jni::JNIEnv;
use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What went wrong in a call from Java. Each variant maps to one Java exception class.
#[derive(Debug)]
pub enum BridgeError {
    /// The caller passed something unusable (bad fd, bad JSON, bad lists): `IllegalArgumentException`.
    Argument(String),
    /// The call does not fit the object's state (after stop, unknown handle): `IllegalStateException`.
    State(String),
    /// An operating-system call failed (thread spawn, dup): `java.io.IOException`.
    Io(String),
    /// A JNI call failed. If it left a Java exception pending, that one propagates; otherwise a
    /// `RuntimeException` is thrown.
    Jni(jni::errors::Error),
}

impl fmt::Display for BridgeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BridgeError::Argument(m) | BridgeError::State(m) | BridgeError::Io(m) => f.write_str(m),
            BridgeError::Jni(e) => write!(f, "JNI call failed: {e}"),
        }
    }
}

impl From<jni::errors::Error> for BridgeError {
    fn from(e: jni::errors::Error) -> Self {
        BridgeError::Jni(e)
    }
}

/// Result of a bridge call.
pub type Result<T> = std::result::Result<T, BridgeError>;

/// Runs one exported function's body: catches panics (host builds; Android's `panic = "abort"` ends the
/// process after the panic hook has logged) and turns errors into Java exceptions. Returns `default` (the
/// value Java ignores while an exception is pending) on any failure.
pub fn entry<'local, R>(
    env: &mut JNIEnv<'local>,
    default: R,
    body: impl FnOnce(&mut JNIEnv<'local>) -> Result<R>,
) -> R {
    let outcome = catch_unwind(AssertUnwindSafe(|| body(env)));
    match outcome {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => {
            throw(env, &error);
            default
        }
        Err(panic) => {
            // The panic hook has already logged message and location. A half-done JNI call may have left an
            // exception pending; the panic is the more important news.
            let message = panic_message(panic.as_ref());
            let _ = env.exception_clear();
            if let Err(e) = env.throw_new("java/lang/RuntimeException", format!("hushwall native panic: {message}")) {
                log::error!("cannot throw for a panic ({message}): {e}");
            }
            default
        }
    }
}

/// Throws the Java exception for `error`, unless one is already pending (that one says more).
fn throw(env: &mut JNIEnv<'_>, error: &BridgeError) {
    if env.exception_check().unwrap_or(false) {
        return;
    }
    let class = match error {
        BridgeError::Argument(_) => "java/lang/IllegalArgumentException",
        BridgeError::State(_) => "java/lang/IllegalStateException",
        BridgeError::Io(_) => "java/io/IOException",
        BridgeError::Jni(_) => "java/lang/RuntimeException",
    };
    if let Err(e) = env.throw_new(class, error.to_string()) {
        log::error!("cannot throw {class} ({error}): {e}");
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}
