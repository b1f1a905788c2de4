//! Running commands: one-shot commands with a deadline, background processes with log files, signals.
//!
//! Everything here reports failures by panicking with context: the callers are tests and the demo, where a
//! panic unwinds into [`crate::Testbed`]'s `Drop`, which cleans up.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished (or timed-out) one-shot command did.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit status; `None` if the command was killed at its deadline.
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// Wall time from spawn to exit (or to the kill).
    pub elapsed: Duration,
}

impl Run {
    /// True if the command exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// True if the command was killed at its deadline.
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    /// The exit code, if it exited (not killed by a signal or at the deadline).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Panics with the whole record unless the command succeeded.
    pub fn expect_success(self) -> Self {
        assert!(self.success(), "command failed: {self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "killed at deadline".to_string(),
        };
        write!(
            f,
            "`{}` ({status}, {} ms)\n--- stdout ---\n{}--- stderr ---\n{}",
            self.cmdline,
            self.elapsed.as_millis(),
            self.stdout,
            self.stderr
        )
    }
}

/// A readable form of a command line.
pub fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion with stdin closed, capturing its output; kills it after `timeout`.
///
/// # Panics
/// If the program cannot be started.
pub fn run(mut cmd: Command, timeout: Duration) -> Run {
    let line = cmdline(&cmd);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{line}`: {e}"));
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_deadline(&mut child, timeout);
    let elapsed = start.elapsed();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Run {
        cmdline: line,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed,
    }
}

/// Runs `cmd` and panics with its output unless it exits 0 within `timeout`.
pub fn run_ok(cmd: Command, timeout: Duration) -> Run {
    run(cmd, timeout).expect_success()
}

/// Builds a [`Command`] from a program and arguments.
pub fn command<S: AsRef<std::ffi::OsStr>>(program: &str, args: &[S]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child` until `timeout`; `None` if it is still running then.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

/// Sends `signal` (a name such as `TERM`, `INT`, `KILL`) to `pid` with kill(1). Errors are ignored: the
/// process may already be gone.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A long-running process whose stdout and stderr go to one log file.
#[derive(Debug)]
pub struct Background {
    /// Short name, for messages ("dnsmasq", "engine", …).
    pub name: String,
    /// The process.
    pub child: Child,
    /// Its combined stdout/stderr.
    pub log: PathBuf,
    /// Exit status once it has been reaped.
    pub exit: Option<ExitStatus>,
}

impl Background {
    /// Starts `cmd` with stdin closed and output appended to `log`.
    ///
    /// # Panics
    /// If the log cannot be created or the program cannot be started.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Background {
        let line = cmdline(&cmd);
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} (`{line}`): {e}"));
        Background { name: name.to_string(), child, log: log.to_path_buf(), exit: None }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Exit status if the process has exited (reaps it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits until the log contains `needle`.
    ///
    /// # Panics
    /// If the process exits first or `timeout` passes, with the log in the message.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Some(status) = self.try_exit() {
                panic!("{} exited ({status}) before printing {needle:?}; its output:\n{}", self.name, self.log_text());
            }
            if Instant::now() >= deadline {
                panic!("{} did not print {needle:?} within {timeout:?}; its output:\n{}", self.name, self.log_text());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` and waits up to `timeout` for the exit; then SIGKILL. Returns the status if it exited
    /// within `timeout` (`None` if it had to be killed).
    pub fn stop(&mut self, sig: &str, timeout: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.try_exit() {
            return Some(s);
        }
        signal(self.child.id(), sig);
        match wait_deadline(&mut self.child, timeout) {
            Some(s) => {
                self.exit = Some(s);
                Some(s)
            }
            None => {
                let _ = self.child.kill();
                self.exit = self.child.wait().ok();
                None
            }
        }
    }
}

/// True if this process runs with effective UID 0.
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Panics with an explanation unless running as root.
pub fn require_root() {
    assert!(
        is_root(),
        "the Hushwall end-to-end tests need root (they create network namespaces, veth pairs and tun \
         devices); run them as root, e.g. `sudo ./tests/run.sh`"
    );
}

/// Panics with an explanation unless `program` is on `PATH`.
pub fn require_program(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(found, "`{program}` is not installed (Debian package `{package}`); tests/run.sh installs it");
}
