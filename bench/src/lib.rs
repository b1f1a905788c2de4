//! Hushwall's benchmarks that need no network: the blocklist matcher (`hushwall-bench`) and the engine alone
//! between an in-memory phone and upstream (`hushwall-bench engine`, [`engine`]).

// The counting allocator is the one place that needs `unsafe` (GlobalAlloc is an unsafe trait), with the CPU
// clock read and the C entry point for Android; each is commented where it is.
#![allow(unsafe_code)]

pub mod counting;
pub mod engine;

/// MTUs the engine benchmark runs at: the app's (1500) and the larger ones a VPN could choose.
pub const ENGINE_BENCH_MTUS: [usize; 4] = [1500, 4000, 9000, 16000];

/// Runs the engine benchmark both ways at every MTU of [`ENGINE_BENCH_MTUS`], `megabytes` each, and prints one
/// line per run; the exit status for a process (0, or 1 if a run failed).
pub fn run_engine_bench(megabytes: u64) -> i32 {
    let mut status = 0;
    for mtu in ENGINE_BENCH_MTUS {
        for direction in [engine::Direction::Upload, engine::Direction::Download] {
            match engine::run(direction, mtu, megabytes * 1_000_000) {
                Ok(report) => println!("{}", report.line()),
                Err(e) => {
                    eprintln!("engine benchmark {direction:?} at MTU {mtu}: {e}");
                    status = 1;
                }
            }
        }
    }
    status
}

/// C entry point, so the engine benchmark can be loaded and run on a phone from the Android build of this crate
/// (`bench/build-android.sh` builds it as a shared library): prints the same lines as `hushwall-bench engine`.
// SAFETY (for `no_mangle`): the symbol name is unique to this crate.
#[unsafe(no_mangle)]
pub extern "C" fn hushwall_engine_bench(megabytes: u32) -> i32 {
    std::panic::catch_unwind(|| run_engine_bench(u64::from(megabytes))).unwrap_or(2)
}
