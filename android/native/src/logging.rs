//! Logging (the `log` facade everywhere: `android_logger` to logcat on Android, `env_logger` to stderr on a
//! host, filtered by `RUST_LOG`, default `warn`) and the panic hook.
//!
//! The Android build is `panic = "abort"` (there is no unwinder without the NDK), so the hook is the only trace
//! a panic leaves: it logs the message and location at error level before the default hook and the abort. On a
//! host the exports additionally catch the unwind and throw a Java exception (see [`crate::error::entry`]).

use std::sync::Once;

static INIT: Once = Once::new();

/// Installs the logger and the panic hook; later calls do nothing.
pub fn init() {
    INIT.call_once(|| {
        install_logger();
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = crate::error::panic_message(info.payload());
            let location = info.location().map_or_else(|| "unknown location".to_owned(), |l| l.to_string());
            let thread = std::thread::current();
            log::error!("panic in thread {} at {location}: {message}", thread.name().unwrap_or("<unnamed>"));
            default_hook(info);
        }));
    });
}

#[cfg(target_os = "android")]
fn install_logger() {
    android_logger::init_once(
        android_logger::Config::default().with_tag("hushwall").with_max_level(log::LevelFilter::Info),
    );
}

#[cfg(not(target_os = "android"))]
fn install_logger() {
    // Another library in the process may have installed a logger already; then that one is used.
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).try_init();
}
