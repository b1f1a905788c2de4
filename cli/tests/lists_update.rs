//! `hushwall lists update` against a real HTTPS server in test network namespaces. Needs root (namespaces,
//! SO_MARK), `ip`, `openssl` and `python3`; it fails, never skips, without them.
//!
//! Topology: namespace `hwS…` runs a Python `http.server` over TLS on 198.18.1.1:8443 with a certificate from a
//! CA made for the test (also on 198.18.1.5, a second host to redirect to); namespace `hwC…` runs the CLI. The
//! client namespace has its address as a /32 and its only routes to the server in table 100, reached through
//! `ip rule fwmark 0x6877`: only a marked (protected) socket gets through, as with a running firewall's policy
//! routing.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

const SERVER: &str = r#"
import http.server, os, socket, ssl, sys
root, host, port, cert, key = sys.argv[1:6]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = os.path.join(root, os.path.basename(self.path.split("?")[0]))
        mode = open(path + ".mode").read().strip() if os.path.exists(path + ".mode") else "ok"
        if mode.startswith("status "):
            return self.reply(int(mode.split()[1]), b"error\n")
        if mode.startswith("redirect "):
            return self.reply(302, headers=[("Location", mode.split()[1])])
        if not os.path.exists(path):
            return self.reply(404)
        body = open(path, "rb").read()
        self.send_response(200)
        if mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 7):
                chunk = body[i:i + 7]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
            return
        if mode == "close-truncate":
            # A close-delimited body: half of it, then the connection ends (no TLS close_notify).
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "truncate":
            # Half the announced body, then the connection ends (no TLS close_notify).
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"#;

const GOOD: &str = "# remote list\ntelemetry.test\n||ads.test^\n203.0.113.0/24\n";
const BASE_URL: &str = "https://198.18.1.1:8443";

fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The namespaces, server and files of one test; everything is removed on drop, also when the test fails.
struct Lab {
    dir: tempfile::TempDir,
    client_ns: String,
    server_ns: String,
    server: Option<Child>,
}

impl Lab {
    fn start() -> Lab {
        // Namespaces and SO_MARK need root: fail loudly rather than skip.
        let uid = sh("id", &["-u"]);
        assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "0", "these tests need root; they are never skipped");
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!("{}{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = tempfile::tempdir().unwrap();
        let mut lab = Lab { dir, client_ns: format!("hwC{id}"), server_ns: format!("hwS{id}"), server: None };
        lab.make_certificates();
        lab.make_namespaces(&id);
        lab.start_server();
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn make_certificates(&self) {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let (ca_key, ca, key, csr, cert, ext) = (
            self.p("ca.key"),
            self.p("ca.pem"),
            self.p("srv.key"),
            self.p("srv.csr"),
            self.p("srv.pem"),
            self.p("ext"),
        );
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", "/CN=hushwall test CA"]);
        sh("openssl", &args);
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=198.18.1.1"]);
        sh("openssl", &args);
        std::fs::write(
            &ext,
            "subjectAltName=IP:198.18.1.1,IP:198.18.1.5\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        sh(
            "openssl",
            &["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-CAcreateserial", "-out", &cert]
                .into_iter()
                .chain(["-days", "2", "-extfile", &ext])
                .collect::<Vec<_>>(),
        );
    }

    fn make_namespaces(&self, id: &str) {
        let (c, s) = (self.client_ns.as_str(), self.server_ns.as_str());
        let (cv, sv) = (format!("hwc{id}"), format!("hws{id}"));
        sh("ip", &["netns", "add", c]);
        sh("ip", &["netns", "add", s]);
        sh("ip", &["link", "add", &cv, "netns", c, "type", "veth", "peer", "name", &sv, "netns", s]);
        sh("ip", &["-n", s, "addr", "add", "198.18.1.1/30", "dev", &sv]);
        sh("ip", &["-n", s, "addr", "add", "198.18.1.5/32", "dev", &sv]);
        sh("ip", &["-n", s, "link", "set", &sv, "up"]);
        sh("ip", &["-n", s, "link", "set", "lo", "up"]);
        sh("ip", &["-n", c, "addr", "add", "198.18.1.2/32", "dev", &cv]);
        sh("ip", &["-n", c, "link", "set", &cv, "up"]);
        sh("ip", &["-n", c, "link", "set", "lo", "up"]);
        // Only marked sockets find a route to the server.
        sh("ip", &["-n", c, "route", "add", "198.18.1.1/32", "dev", &cv, "table", "100"]);
        sh("ip", &["-n", c, "route", "add", "198.18.1.5/32", "dev", &cv, "table", "100"]);
        sh("ip", &["-n", c, "rule", "add", "fwmark", "0x6877", "lookup", "100"]);
    }

    fn start_server(&mut self) {
        std::fs::create_dir(self.path("www")).unwrap();
        std::fs::write(self.path("server.py"), SERVER).unwrap();
        let (www, script, cert, key) = (self.p("www"), self.p("server.py"), self.p("srv.pem"), self.p("srv.key"));
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.server_ns, "python3", &script, &www, "0.0.0.0", "8443", &cert, &key])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.server = Some(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the test server did not start");
    }

    fn stop_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Serves `text` at `/NAME` in `mode` (`ok`, `truncate`, `close-truncate`, `chunked`, `status N`,
    /// `redirect URL`).
    fn serve(&self, name: &str, text: &str, mode: &str) {
        std::fs::write(self.path("www").join(name), text).unwrap();
        std::fs::write(self.path("www").join(format!("{name}.mode")), mode).unwrap();
    }

    fn store(&self) -> String {
        self.p("store")
    }

    /// Runs the CLI in the client namespace.
    fn hushwall(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.client_ns, env!("CARGO_BIN_EXE_hushwall")])
            .args(args)
            .output()
            .unwrap()
    }

    /// `lists update` with the test CA; `extra` adds or overrides options.
    fn update(&self, extra: &[&str]) -> Output {
        let (store, ca) = (self.store(), self.p("ca.pem"));
        let mut args = vec!["lists", "update", "--store", &store, "--timeout", "5"];
        if !extra.contains(&"--no-ca") {
            args.extend(["--ca-file", &ca]);
        }
        args.extend(extra.iter().filter(|&&a| a != "--no-ca"));
        self.hushwall(&args)
    }

    fn show(&self) -> Value {
        let out = self.hushwall(&["lists", "show", "--store", &self.store()]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `(verdict, list, line)` for a name, judged with the store's lists only.
    fn check(&self, name: &str) -> (String, String, u64) {
        let out = self.hushwall(&["check", "--profile", "none", "--store", &self.store(), name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        (s(&v["verdict"]), s(&v["rule"]["list"]), v["rule"]["line"].as_u64().unwrap_or(0))
    }

    /// Asserts the update failed with `message` and the GOOD list from the first update is still in force.
    fn assert_failed_keeping_good(&self, out: &Output, message: &str, generation: &Value) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the update should fail: {stderr}");
        assert!(stderr.contains(message), "stderr should contain {message:?}: {stderr}");
        assert!(stderr.contains("the last good lists stay in force"), "{stderr}");
        let show = self.show();
        assert_eq!(&show["current"], generation, "nothing swapped");
        let last = &show["last_update"];
        assert_eq!(last["ok"], false);
        assert!(last["lists"][0]["error"].as_str().unwrap_or_default().contains(message), "{last}");
        assert_eq!(last["lists"][0]["kept_last_good"], true);
        let list = format!("store:a ({BASE_URL}/a.txt)");
        assert_eq!(self.check("x.ads.test"), ("block".into(), list, 3));
        assert_eq!(self.check("new.test").0, "allow", "the failed download's names are not in force");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_server();
        for ns in [&self.client_ns, &self.server_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

#[test]
fn update_over_https_keeps_the_last_good_set_on_every_failure() {
    let mut lab = Lab::start();
    let store = lab.store();
    let url = format!("{BASE_URL}/a.txt");
    let out = lab.hushwall(&["lists", "add", "--store", &store, "a", &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A good list is downloaded, validated and swapped in.
    lab.serve("a.txt", GOOD, "ok");
    let out = lab.update(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("a: updated, 3 entries"));
    let show = lab.show();
    let generation = show["current"].clone();
    assert_eq!(generation["lists"][0]["size"], GOOD.len());
    assert_eq!(show["last_update"]["ok"], true);
    assert_eq!(lab.check("telemetry.test"), ("block".into(), format!("store:a ({url})"), 2));

    let newer = "new.test\n||ads.test^\n";
    lab.serve("a.txt", newer, "truncate");
    lab.assert_failed_keeping_good(&lab.update(&[]), "download truncated", &generation);

    lab.serve("a.txt", "new.test\nthis is not a name\n", "ok");
    let message = format!("store:a ({url}):2: invalid domain name");
    lab.assert_failed_keeping_good(&lab.update(&[]), &message, &generation);

    lab.serve("a.txt", newer, "status 500");
    lab.assert_failed_keeping_good(&lab.update(&[]), "server answered HTTP 500", &generation);

    // Verification is never off: without the test CA the server's certificate is refused.
    lab.serve("a.txt", newer, "ok");
    lab.assert_failed_keeping_good(&lab.update(&["--no-ca"]), "TLS error", &generation);

    // An unmarked socket has no route: the download only works through the protected path.
    lab.assert_failed_keeping_good(&lab.update(&["--fwmark", "0"]), "cannot connect", &generation);

    // Redirects are followed and chunked bodies decoded.
    lab.serve("a.txt", "", "redirect /b.txt");
    lab.serve("b.txt", newer, "chunked");
    let out = lab.update(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lab.check("new.test"), ("block".into(), format!("store:a ({url})"), 1));
    let generation = lab.show()["current"].clone();

    // An unreachable server: the newer set stays.
    lab.stop_server();
    let out = lab.update(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Connection refused"), "{out:?}");
    assert_eq!(lab.show()["current"], generation);
    assert_eq!(lab.check("new.test").0, "block");
}

#[test]
fn cut_close_delimited_bodies_and_http_redirects_are_refused_and_redirects_stay_protected() {
    let lab = Lab::start();
    let store = lab.store();
    let out = lab.hushwall(&["lists", "add", "--store", &store, "a", &format!("{BASE_URL}/a.txt")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    lab.serve("a.txt", GOOD, "ok");
    let out = lab.update(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let generation = lab.show()["current"].clone();

    // Without Content-Length or chunks only TLS close_notify marks the end: a connection cut before it is refused.
    let newer = "new.test\n||ads.test^\n";
    lab.serve("a.txt", newer, "close-truncate");
    lab.assert_failed_keeping_good(&lab.update(&[]), "no TLS close_notify", &generation);

    // A redirect to plain http:// is refused, even to a port that speaks TLS.
    lab.serve("a.txt", "", "redirect http://198.18.1.1:8443/b.txt");
    lab.serve("b.txt", newer, "ok");
    lab.assert_failed_keeping_good(&lab.update(&[]), "only https:// URLs are accepted", &generation);

    // A redirect to another host opens a new socket; it is marked too (198.18.1.5 is reachable only so).
    lab.serve("a.txt", "", "redirect https://198.18.1.5:8443/b.txt");
    let out = lab.update(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lab.check("new.test").0, "block");
}
