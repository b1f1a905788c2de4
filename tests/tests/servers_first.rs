//! Server-first protocols through the engine, with the real programs people use on those ports (issue 12.6):
//! OpenSSH (a command and a 5 MB `scp` both ways, byte-exact), SMTP submission with STARTTLS, an IMAP session
//! with STARTTLS (dovecot),
//! FTP in passive mode, and a banner read alone. Each on IPv4 and IPv6. These ports are dialled at the SYN (the
//! server speaks first), the path that used to half-close the upstream connection before the client spoke.
//!
//! Needs root, the release binary (`$HUSHWALL_BIN`) and the packages `tests/install-deps.sh` installs.

use hushwall_tests::evidence::finish;
use hushwall_tests::proc::{command, require_program, run, run_ok, Background};
use hushwall_tests::{sha256, Family, Options, Testbed};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A real client's whole session must end within this.
const SESSION: Duration = Duration::from_secs(20);
/// Servers must be listening within this.
const READY: Duration = Duration::from_secs(10);

/// A server in the internet namespace, stopped when the test ends (also on panic): with SIGTERM, so a server
/// with worker processes (dovecot) takes them along, then SIGKILL.
struct Server(Background);

impl Server {
    fn start(tb: &Testbed, name: &str, cmd: Command, ready: &str) -> Server {
        let mut server = Server(Background::spawn(name, cmd, &tb.dir.join(format!("{name}.log"))));
        server.0.wait_for_log(ready, READY);
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.0.stop("TERM", Duration::from_secs(5));
    }
}

/// No upstream failure may be reported: the old bug showed as `upstream_reset: Broken pipe`.
fn assert_no_failures(tb: &mut Testbed) {
    let events = finish(tb);
    let failures: Vec<_> = events.iter().filter(|e| e["action"] == "error").collect();
    assert!(failures.is_empty(), "upstream failures: {failures:?}");
}

// ---------------------------------------------------------------------------------------------------------
// OpenSSH on port 22.

/// sshd in the internet namespace on port 22 of the normal server, host key and a key-only root login in a
/// temporary configuration; returns it and the client's private key.
fn start_sshd(tb: &Testbed) -> (Server, PathBuf) {
    require_program("ssh", "openssh-client");
    let dir = tb.dir.join("ssh");
    std::fs::create_dir_all(&dir).expect("ssh dir");
    let key = |name: &str| {
        let mut c = command("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f"]);
        c.arg(dir.join(name));
        run_ok(c, READY);
    };
    key("host_ed25519");
    key("client_ed25519");
    std::fs::copy(dir.join("client_ed25519.pub"), dir.join("authorized_keys")).expect("authorized_keys");
    // sshd's privilege separation directory (Debian creates it only when the service starts).
    std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port 22\nListenAddress {v4}\nListenAddress {v6}\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n",
            v4 = Family::V4.normal(),
            v6 = Family::V6.normal(),
            d = dir.display()
        ),
    )
    .expect("sshd_config");
    let sshd = which("sshd", &["/usr/sbin/sshd", "/usr/bin/sshd"]);
    let mut cmd = tb.internet_command(&sshd, &["-D", "-e", "-f"]);
    cmd.arg(&config);
    let listening = format!("Server listening on {} port 22", Family::V6.normal());
    (Server::start(tb, "sshd", cmd, &listening), dir.join("client_ed25519"))
}

/// The first of `candidates` that exists, else `name` (found on PATH).
fn which(name: &str, candidates: &[&str]) -> String {
    candidates.iter().find(|p| Path::new(p).exists()).map_or_else(|| name.to_string(), |p| p.to_string())
}

fn ssh_options(key: &Path) -> Vec<String> {
    let mut o = vec!["-i".to_string(), key.display().to_string()];
    for opt in ["StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes", "ConnectTimeout=5"] {
        o.extend(["-o".to_string(), opt.to_string()]);
    }
    o.push("-q".into());
    o
}

fn openssh(fam: Family) {
    let mut tb = Testbed::start(Options::engine());
    let (_sshd, key) = start_sshd(&tb);
    let server = fam.normal();

    let mut args = ssh_options(&key);
    args.extend([format!("root@{server}"), "echo hushwall-ssh-$((6*7))".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = run(tb.phone_command("ssh", &args), SESSION);
    assert!(r.success() && r.stdout.trim() == "hushwall-ssh-42", "ssh command through the engine: {r}");

    // 5 MB up and back down with scp, byte-exact.
    let local = tb.dir.join("scp-5mb.bin");
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&local, &data).expect("write scp source");
    let remote = format!("root@{}:{}", fam.bracket(server), tb.dir.join("scp-uploaded.bin").display());
    let back = tb.dir.join("scp-downloaded.bin");
    for (from, to) in [(local.display().to_string(), remote.clone()), (remote, back.display().to_string())] {
        let mut args = ssh_options(&key);
        args.extend([from, to]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(tb.phone_command("scp", &args), SESSION);
        assert!(r.success(), "scp through the engine: {r}");
    }
    let want = sha256(&local);
    assert_eq!(sha256(&tb.dir.join("scp-uploaded.bin")), want, "uploaded byte-exact");
    assert_eq!(sha256(&back), want, "downloaded byte-exact");

    // The banner alone: read the first line and hang up.
    let banner = tb.tcp_banner(server, 22);
    assert_eq!(banner.result, "banner", "{:?}", banner.raw);
    assert!(banner.detail.as_deref().unwrap_or("").starts_with("SSH-2.0-"), "{:?}", banner.raw);
    assert_no_failures(&mut tb);
}

#[test]
fn openssh_v4() {
    openssh(Family::V4);
}

#[test]
fn openssh_v6() {
    openssh(Family::V6);
}

// ---------------------------------------------------------------------------------------------------------
// SMTP submission with STARTTLS (port 587): aiosmtpd, curl as the client.

fn smtp_starttls(fam: Family) {
    let mut tb = Testbed::start(Options::engine());
    let maildir = tb.dir.join("mail");
    std::fs::create_dir_all(&maildir).expect("maildir");
    let script = hushwall_tests::testbed::workspace_root().join("tests/scripts/smtp_server.py");
    let mut cmd = tb.internet_command("python3", &[]);
    cmd.arg(script).arg(fam.normal()).arg("587").arg(&tb.pki.server_cert).arg(&tb.pki.server_key).arg(&maildir);
    let _smtp = Server::start(&tb, "smtp", cmd, "ready");

    let message = tb.dir.join("message.eml");
    std::fs::write(
        &message,
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: hushwall\r\n\r\nhushwall-smtp-body\r\n",
    )
    .expect("message");
    let url = format!("smtp://{}:587", fam.bracket(fam.normal()));
    let mut c = tb.phone_command("curl", &["-sS", "--max-time", "15", "--ssl-reqd", "--mail-from", "a@example.org"]);
    c.args(["--mail-rcpt", "b@example.org", "--cacert"]).arg(&tb.pki.ca_cert).arg("--upload-file").arg(&message);
    c.arg(&url);
    let r = run(c, SESSION);
    assert!(r.success(), "SMTP submission with STARTTLS through the engine: {r}");
    let got = std::fs::read_to_string(maildir.join("1.eml")).unwrap_or_default();
    assert!(got.contains("hushwall-smtp-body"), "the server got the message: {got:?}");
    assert_no_failures(&mut tb);
}

#[test]
fn smtp_starttls_v4() {
    smtp_starttls(Family::V4);
}

#[test]
fn smtp_starttls_v6() {
    smtp_starttls(Family::V6);
}

// ---------------------------------------------------------------------------------------------------------
// An IMAP session (port 143, STARTTLS): Debian's dovecot in a temporary configuration, curl as the client.

fn start_dovecot(tb: &Testbed) -> Server {
    let dovecot = which("dovecot", &["/usr/sbin/dovecot"]);
    require_program("curl", "curl");
    let dir = tb.dir.join("imap");
    for sub in ["run", "state", "home"] {
        std::fs::create_dir_all(dir.join(sub)).expect("imap dirs");
    }
    // Mail is stored as the `dovecot` user (dovecot refuses UID 0); its home must be writable by it.
    run_ok(command("chown", &["-R", "dovecot:dovecot", &dir.join("home").display().to_string()]), READY);
    let config = dir.join("dovecot.conf");
    std::fs::write(
        &config,
        format!(
            "protocols = imap\nlisten = {v4}, {v6}\nbase_dir = {d}/run\nstate_dir = {d}/state\n\
             log_path = /dev/stderr\ninfo_log_path = /dev/stderr\nssl = required\nssl_cert = <{cert}\n\
             ssl_key = <{key}\nauth_mechanisms = plain\n\
             passdb {{\n  driver = static\n  args = password=hushwall\n}}\n\
             userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={d}/home/%u\n}}\n\
             mail_location = maildir:~/Maildir\nfirst_valid_uid = 1\ndefault_internal_user = dovecot\n\
             service imap-login {{\n  inet_listener imap {{\n    port = 143\n  }}\n  \
             inet_listener imaps {{\n    port = 0\n  }}\n}}\n",
            v4 = Family::V4.normal(),
            v6 = Family::V6.normal(),
            d = dir.display(),
            cert = tb.pki.server_cert.display(),
            key = tb.pki.server_key.display(),
        ),
    )
    .expect("dovecot.conf");
    let mut cmd = tb.internet_command(&dovecot, &["-F", "-c"]);
    cmd.arg(&config);
    Server::start(tb, "dovecot", cmd, "starting up for imap")
}

/// curl against the IMAP server with STARTTLS required and the test CA; `args` end with the URL.
fn imap_curl(tb: &Testbed, args: &[&str]) -> hushwall_tests::proc::Run {
    let mut c = tb.phone_command("curl", &["-sS", "--max-time", "15", "--ssl-reqd", "-u", "phone:hushwall"]);
    c.arg("--cacert").arg(&tb.pki.ca_cert).args(args);
    run(c, SESSION)
}

fn imap_session(fam: Family) {
    let mut tb = Testbed::start(Options::engine());
    let _dovecot = start_dovecot(&tb);
    let base = format!("imap://{}:143", fam.bracket(fam.normal()));
    // APPEND a message, then LIST, SELECT and FETCH it back.
    let message = tb.dir.join("imap-message.eml");
    std::fs::write(&message, "From: a@example.org\r\nSubject: hushwall\r\n\r\nhushwall-imap-body\r\n")
        .expect("message");
    let append = imap_curl(&tb, &["-T", &message.display().to_string(), &format!("{base}/INBOX")]);
    assert!(append.success(), "IMAP APPEND through the engine: {append}");
    let list = imap_curl(&tb, &[&format!("{base}/")]);
    assert!(list.success() && list.stdout.contains("INBOX"), "IMAP LIST: {list}");
    let fetch = imap_curl(&tb, &[&format!("{base}/INBOX;UID=1")]);
    assert!(fetch.success() && fetch.stdout.contains("hushwall-imap-body"), "IMAP FETCH: {fetch}");
    assert_no_failures(&mut tb);
}

#[test]
fn imap_session_v4() {
    imap_session(Family::V4);
}

#[test]
fn imap_session_v6() {
    imap_session(Family::V6);
}

// ---------------------------------------------------------------------------------------------------------
// FTP in passive mode (port 21 control, a passive data port): pyftpdlib, curl as the client.

fn ftp_passive(fam: Family) {
    let mut tb = Testbed::start(Options::engine());
    let root = tb.dir.join("ftp");
    std::fs::create_dir_all(&root).expect("ftp root");
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(root.join("file.bin"), &data).expect("ftp file");
    let mut cmd = tb.internet_command("python3", &["-m", "pyftpdlib", "-w", "-p", "21", "-i", fam.normal(), "-d"]);
    cmd.arg(&root);
    let _ftp = Server::start(&tb, "ftp", cmd, "starting FTP server");

    let base = format!("ftp://{}:21", fam.bracket(fam.normal()));
    let fetched = tb.curl(&[&format!("{base}/file.bin")]);
    assert!(fetched.run.success(), "passive FTP download: {}", fetched.run);
    assert_eq!(sha256(&fetched.body), sha256(&root.join("file.bin")), "downloaded byte-exact");
    let upload = tb.dir.join("ftp-upload.bin");
    std::fs::write(&upload, &data[..300_000]).expect("upload source");
    let mut c = tb.phone_command("curl", &["-sS", "--max-time", "15", "-T"]);
    c.arg(&upload).arg(format!("{base}/uploaded.bin"));
    let r = run(c, SESSION);
    assert!(r.success(), "passive FTP upload: {r}");
    assert_eq!(sha256(&root.join("uploaded.bin")), sha256(&upload), "uploaded byte-exact");
    assert_no_failures(&mut tb);
}

#[test]
fn ftp_passive_v4() {
    ftp_passive(Family::V4);
}

#[test]
fn ftp_passive_v6() {
    ftp_passive(Family::V6);
}
