//! `hushwall`: the Hushwall firewall engine on a Linux tun device.
//!
//! The same engine the Android app runs, here for testing end to end and for protecting a whole home network
//! from a Linux gateway (Xiaomi TVs, vacuums and other IoT devices that cannot run the app).

mod check;
mod https;
mod lists;
mod lists_cmd;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Hushwall: stops Xiaomi/MIUI telemetry at the network level.
#[derive(Parser)]
#[command(name = "hushwall", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the firewall on a tun device until SIGINT or SIGTERM.
    Run(run::RunArgs),
    /// Show how the policy judges names or IP addresses (one JSON object per input).
    Check(check::CheckArgs),
    /// Manage downloaded lists: add URLs, update them (atomically, keeping the last good copies), show them.
    Lists(lists_cmd::ListsArgs),
}

fn main() -> ExitCode {
    pin_malloc_mmap_threshold();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::check(args),
        Command::Lists(args) => lists_cmd::lists(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hushwall: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps glibc from hoarding the engine's per-flow TCP buffers.
///
/// Each flow has two smoltcp buffers of 64-256 KiB. glibc serves those from `mmap` at first, but raises its mmap
/// threshold to the size of the first such block freed; from then on they come from the heap, where `calloc`
/// zeroes (touches) every page and freed blocks are rarely returned. Measured with 4,096 concurrent flows: about
/// 570 MiB resident at the peak, never given back, and about 1 GiB after a second flood. With the threshold pinned
/// at 64 KiB every buffer is its own mapping, untouched pages cost nothing, and `free` returns them: 42 MiB at the
/// peak, 9.5 MiB afterwards (tests/tests/reliability.rs `flood_10k_concurrent_tcp_connections`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn pin_malloc_mmap_threshold() {
    // SAFETY: mallopt only changes allocator parameters; it is called first thing in main, before any other
    // thread exists or any allocation of interest is made.
    #[allow(unsafe_code)]
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024) };
    if ok != 1 {
        eprintln!("hushwall: warning: could not set the malloc mmap threshold");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn pin_malloc_mmap_threshold() {}
