//! A throw-away certificate authority and one server certificate for every test name, made with openssl(1).

use crate::proc::{command, run_ok};
use crate::topology::{cname_records, host_records, server_addresses};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Paths of the generated PEM files.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (clients use it with `curl --cacert`).
    pub ca_cert: PathBuf,
    /// The server certificate (SANs: every test name and server address).
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
}

/// Creates a CA and a server certificate in `dir`, covering `extra_names` besides the test bed's names.
///
/// # Panics
/// If openssl fails.
pub fn generate(dir: &Path, extra_names: &[String]) -> Pki {
    let p = |name: &str| dir.join(name);
    let t = Duration::from_secs(30);
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

    let mut ca = command("openssl", &["req", "-x509"]);
    ca.args(ec).arg("-keyout").arg(p("ca.key")).arg("-out").arg(p("ca.pem"));
    ca.args([
        "-days",
        "2",
        "-subj",
        "/CN=Hushwall e2e test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run_ok(ca, t);

    let mut csr = command("openssl", &["req"]);
    csr.args(ec).arg("-keyout").arg(p("server.key")).arg("-out").arg(p("server.csr"));
    csr.args(["-subj", "/CN=hushwall-e2e server"]);
    run_ok(csr, t);

    let mut sans: Vec<String> = Vec::new();
    for (name, _) in host_records() {
        sans.push(format!("DNS:{name}"));
    }
    for (alias, _) in cname_records() {
        sans.push(format!("DNS:{alias}"));
    }
    for name in extra_names {
        sans.push(format!("DNS:{name}"));
    }
    for ip in server_addresses() {
        sans.push(format!("IP:{ip}"));
    }
    sans.dedup();
    let ext = format!(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName={}\n",
        sans.join(",")
    );
    std::fs::write(p("server.ext"), ext).expect("write server.ext");

    let mut sign = command("openssl", &["x509", "-req", "-days", "2", "-set_serial", "1"]);
    sign.arg("-in").arg(p("server.csr"));
    sign.arg("-CA").arg(p("ca.pem")).arg("-CAkey").arg(p("ca.key"));
    sign.arg("-extfile").arg(p("server.ext"));
    sign.arg("-out").arg(p("server.pem"));
    run_ok(sign, t);

    Pki { ca_cert: p("ca.pem"), server_cert: p("server.pem"), server_key: p("server.key") }
}
