//! Helpers of the reliability tests (`tests/reliability.rs`, `tests/leaks.rs`): the engine process's resource
//! use, and the bounded load generators of `scripts/flood.py`.

use crate::proc::{run, Background, Run};
use crate::testbed::Testbed;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const FLOOD_PY: &str = include_str!("../scripts/flood.py");

/// Port of the connection-holding echo server started by [`Testbed::start_hold_server`].
pub const HOLD_PORT: u16 = 9000;

/// Resource use of one process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Resident set size, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// Threads.
    pub threads: u64,
}

/// Reads `/proc/<pid>`; `None` once the process is gone or going: an exiting process has released its memory
/// and its status no longer has `VmRSS` (seen while a failed test bed was torn down).
///
/// # Panics
/// If the process's status lacks `Threads`, or a `VmRSS` or `Threads` that does not read as a number (a zero
/// would pass every upper bound).
pub fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let value = status.lines().find_map(|l| l.strip_prefix(name))?.split_whitespace().next();
        Some(value.and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("/proc/{pid}/status: bad {name}\n{status}")))
    };
    let rss_kib = field("VmRSS:")?;
    let threads = field("Threads:").unwrap_or_else(|| panic!("/proc/{pid}/status has no Threads field:\n{status}"));
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Usage { rss_kib, fds, threads })
}

/// The largest values seen while sampling a process in the background.
#[derive(Debug)]
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Usage, usize)>>,
}

impl Sampler {
    /// Samples `pid` every 100 ms until [`Sampler::finish`].
    pub fn start(pid: u32) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = Usage { rss_kib: 0, fds: 0, threads: 0 };
            let mut samples = 0;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(u) = usage(pid) {
                    peak.rss_kib = peak.rss_kib.max(u.rss_kib);
                    peak.fds = peak.fds.max(u.fds);
                    peak.threads = peak.threads.max(u.threads);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (peak, samples)
        });
        Sampler { stop, thread: Some(thread) }
    }

    /// Stops sampling; returns the peaks and the number of samples.
    ///
    /// # Panics
    /// If the sampling thread panicked or took no sample (zero peaks would pass every upper bound).
    pub fn finish(mut self) -> (Usage, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let thread = self.thread.take().expect("finish is called once");
        let (peak, samples) = thread.join().unwrap_or_else(|_| panic!("the sampling thread panicked"));
        assert!(samples > 0, "the sampler took no sample: the process was gone or the load ended within 100 ms");
        (peak, samples)
    }
}

impl Testbed {
    /// Where `flood.py` is written in this test bed (written on first use).
    pub fn flood_py(&self) -> PathBuf {
        let path = self.dir.join("flood.py");
        if !path.exists() {
            std::fs::write(&path, FLOOD_PY).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        path
    }

    /// The engine's resource use now.
    ///
    /// # Panics
    /// If the engine does not run.
    pub fn engine_usage(&self) -> Usage {
        let pid = self.engine_pid().expect("this test bed runs no engine");
        usage(pid).unwrap_or_else(|| panic!("the engine (pid {pid}) is gone; output:\n{}", self.engine_log()))
    }

    /// Starts `flood.py hold-server` on [`HOLD_PORT`] at `addrs` in the internet namespace and waits until it
    /// listens. The namespace's teardown ends it.
    pub fn start_hold_server(&self, addrs: &[&str]) -> Background {
        let mut c = self.internet_command("python3", &["-u"]);
        c.arg(self.flood_py()).arg("hold-server").arg(HOLD_PORT.to_string()).args(addrs);
        let mut b = Background::spawn("hold-server", c, &self.dir.join("hold-server.log"));
        b.wait_for_log("\"ready\": true", Duration::from_secs(10));
        b
    }

    /// Runs `flood.py args…` in the phone namespace (with a high fd limit) and returns its last JSON line.
    ///
    /// # Panics
    /// If it fails, times out or prints no JSON.
    pub fn flood(&self, args: &[&str], timeout: Duration) -> Value {
        let r = self.flood_run(args, timeout);
        last_json(&r)
    }

    /// Runs `flood.py args…` in the phone namespace and returns the process record.
    pub fn flood_run(&self, args: &[&str], timeout: Duration) -> Run {
        let script = format!("ulimit -n 20000 2>/dev/null; exec python3 -u {} \"$@\"", self.flood_py().display());
        let mut c = self.phone_command("sh", &["-c", &script, "flood"]);
        c.args(args);
        let r = run(c, timeout);
        assert!(r.success() && !r.timed_out(), "flood.py {args:?} failed: {r}");
        r
    }

    /// Starts `flood.py args…` in the phone namespace in the background (output in `<dir>/<name>.log`).
    pub fn flood_background(&self, name: &str, args: &[&str]) -> Background {
        let script = format!("ulimit -n 20000 2>/dev/null; exec python3 -u {} \"$@\"", self.flood_py().display());
        let mut c = self.phone_command("sh", &["-c", &script, "flood"]);
        c.args(args);
        Background::spawn(name, c, &self.dir.join(format!("{name}.log")))
    }

    /// Panics with the engine's log unless the engine process still runs.
    pub fn assert_engine_alive(&mut self, when: &str) {
        assert!(self.engine_running(), "the engine died {when}; its output:\n{}", self.engine_log());
    }
}

/// The last JSON line a process printed.
///
/// # Panics
/// If there is none.
pub fn last_json(r: &Run) -> Value {
    r.stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON result line: {r}"))
}

/// Waits until `f` holds, polling every 100 ms; false after `timeout`.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A JSON number field as u64.
///
/// # Panics
/// If `key` is missing or not a non-negative integer: read as 0 it would let upper bounds pass vacuously.
pub fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no number {key:?} in {v}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_number_is_read() {
        assert_eq!(num(&json!({"echoed": 7}), "echoed"), 7);
    }

    #[test]
    #[should_panic(expected = "no number \"echoed\"")]
    fn a_missing_key_is_an_error_not_zero() {
        num(&json!({"sent": 3}), "echoed");
    }
}
