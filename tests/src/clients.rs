//! Real clients run in the phone namespace: dig, curl and `tests/scripts/client.py`.

use crate::proc::{command, run, run_ok, Run};
use crate::testbed::Testbed;
use crate::topology::Family;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static DOWNLOADS: AtomicUsize = AtomicUsize::new(0);

/// One DNS answer record as dig prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name without the trailing dot.
    pub name: String,
    /// Time to live, seconds.
    pub ttl: u32,
    /// Type: `A`, `AAAA`, `CNAME`, …
    pub rtype: String,
    /// Data without a trailing dot.
    pub data: String,
}

/// What a dig query returned.
#[derive(Debug)]
pub struct Dig {
    /// The process record.
    pub run: Run,
    /// The response code (`NOERROR`, `NXDOMAIN`, …); `None` if no response arrived.
    pub status: Option<String>,
    /// The answer section.
    pub answers: Vec<Record>,
}

impl Dig {
    /// The data of answers of type `rtype`.
    pub fn addresses(&self, rtype: &str) -> Vec<String> {
        self.answers.iter().filter(|r| r.rtype == rtype).map(|r| r.data.clone()).collect()
    }
}

/// What a curl transfer did.
#[derive(Debug)]
pub struct Fetch {
    /// The process record (stdout is curl's `-w` line).
    pub run: Run,
    /// HTTP status; 0 if no response.
    pub http_code: u32,
    /// Where the body was written.
    pub body: PathBuf,
}

/// What `client.py` reported.
#[derive(Debug, Clone)]
pub struct ClientResult {
    /// `echo`, `refused`, `timeout`, `banner`, `reset`, `eof`, `error`.
    pub result: String,
    /// Time the client took.
    pub elapsed: Duration,
    /// Extra detail (the banner, an error text).
    pub detail: Option<String>,
    /// The whole JSON object.
    pub raw: Value,
}

impl Testbed {
    /// Runs dig in the phone namespace with `args` (server, name, type, options), adding `+time=3 +tries=1`
    /// so that a lost answer shows up as a timeout rather than a retry.
    pub fn dig(&self, args: &[&str]) -> Dig {
        let mut all = vec!["+time=3", "+tries=1", "+nocmd", "+noall", "+comments", "+answer"];
        all.extend_from_slice(args);
        let r = run(self.phone_command("dig", &all), Duration::from_secs(20));
        parse_dig(r)
    }

    /// dig for `name` of `family`'s address type through the phone's resolv.conf (the outside resolver).
    pub fn resolve(&self, name: &str, family: Family) -> Dig {
        self.dig(&[name, family.rtype()])
    }

    /// Runs curl in the phone namespace: `-sS`, the test CA, 5 s connect and 60 s total timeouts, the body to a
    /// fresh file, `-w '%{http_code}'`, then `args`.
    pub fn curl(&self, args: &[&str]) -> Fetch {
        let n = DOWNLOADS.fetch_add(1, Ordering::SeqCst);
        let body = self.dir.join(format!("download-{n}.bin"));
        let mut c =
            self.phone_command("curl", &["-sS", "--connect-timeout", "5", "--max-time", "60", "-w", "%{http_code}"]);
        c.arg("--cacert").arg(&self.pki.ca_cert).arg("-o").arg(&body).args(args);
        let r = run(c, Duration::from_secs(90));
        let http_code = r.stdout.trim().parse().unwrap_or(0);
        Fetch { run: r, http_code, body }
    }

    /// curl `scheme://host/path` with DNS bypassed: `--resolve host:port:ip`.
    pub fn curl_resolved(&self, scheme: &str, host: &str, ip: &str, path: &str, family: Family) -> Fetch {
        let port = if scheme == "https" { 443 } else { 80 };
        let resolve = format!("{host}:{port}:{}", family.bracket(ip));
        let url = format!("{scheme}://{host}{path}");
        self.curl(&[family.flag(), "--resolve", &resolve, &url])
    }

    fn client(&self, kind: &str, ip: &str, port: u16, timeout_s: f64) -> ClientResult {
        let mut c = self.phone_command("python3", &[]);
        c.arg(&self.client_py).args([kind, ip, &port.to_string(), &timeout_s.to_string()]);
        let r = run_ok(c, Duration::from_secs_f64(timeout_s * 2.0 + 10.0));
        let raw: Value =
            serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("client.py printed no JSON ({e}): {r}"));
        ClientResult {
            result: raw["result"].as_str().unwrap_or("").to_string(),
            elapsed: Duration::from_millis(raw["elapsed_ms"].as_u64().unwrap_or(0)),
            detail: raw["detail"].as_str().map(String::from),
            raw,
        }
    }

    /// Sends one datagram to `ip:port` from the phone and waits up to 3 s for the echo.
    pub fn udp_echo(&self, ip: &str, port: u16) -> ClientResult {
        self.client("udp", ip, port, 3.0)
    }

    /// Connects to `ip:port` from the phone and reads the first line (3 s timeouts).
    pub fn tcp_banner(&self, ip: &str, port: u16) -> ClientResult {
        self.client("tcp", ip, port, 3.0)
    }
}

/// The SHA-256 of a file, hex, computed by sha256sum(1).
///
/// # Panics
/// If sha256sum fails (e.g. the file is missing).
pub fn sha256(path: &Path) -> String {
    let mut c = command("sha256sum", &["-b"]);
    c.arg(path);
    let r = run_ok(c, Duration::from_secs(60));
    r.stdout.split_whitespace().next().unwrap_or("").to_string()
}

/// Parses dig output made with `+noall +comments +answer`.
pub fn parse_dig(run: Run) -> Dig {
    let mut status = None;
    let mut answers = Vec::new();
    for line in run.stdout.lines() {
        if let Some(i) = line.find("status: ") {
            let rest = &line[i + "status: ".len()..];
            status = Some(rest.split(',').next().unwrap_or("").trim().to_string());
        } else if !line.starts_with(';') && !line.trim().is_empty() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                answers.push(Record {
                    name: f[0].trim_end_matches('.').to_string(),
                    ttl: f[1].parse().unwrap_or(0),
                    rtype: f[3].to_string(),
                    data: f[4..].join(" ").trim_end_matches('.').to_string(),
                });
            }
        }
    }
    Dig { run, status, answers }
}
