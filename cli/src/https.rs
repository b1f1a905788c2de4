//! The Linux CLI's list downloader: `ureq` (HTTP/1.1: redirects, chunked and close-delimited bodies, header
//! limits, timeouts) over a connector of our own that opens every socket protected like the engine's upstream
//! sockets (`SO_MARK`), so a running firewall's policy routing keeps it out of the tun, and speaks TLS with rustls.
//!
//! TLS is rustls with the *ring* crypto provider, which builds C and assembly code; that is fine for the Linux
//! CLI. The Android app cannot build C, so it downloads through the platform and feeds the bytes into the same
//! validate/compile/swap path (`hushwall_driver::lists::Prefetched`). Certificates are always verified, against
//! the bundled Mozilla roots or, with `--ca-file`, against the given CAs only.
//!
//! Up to five redirects are followed, to `https://` only. A body shorter than its `Content-Length`, a chunked body
//! without its last chunk, or a connection that ends without TLS close_notify is an error: a list is never used
//! half-downloaded. ureq itself takes a connection's end without close_notify for the end of a close-delimited
//! body, so the transport here reports that end as an error rather than as end-of-file.

use hushwall_driver::lists::{FetchError, Fetcher};
use hushwall_driver::Protector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use socket2::{Domain, Protocol, Socket, Type};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use ureq::http::Uri;
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport};
use ureq::{Agent, Timeout};

/// Most redirects followed.
const MAX_REDIRECTS: u32 = 5;
/// Largest response head (ureq also caps the number of headers, at 128).
const MAX_HEAD: usize = 64 * 1024;

/// Downloads over HTTPS on protected sockets.
pub struct HttpsFetcher {
    agent: Agent,
}

impl HttpsFetcher {
    /// A fetcher trusting the CAs in the PEM file `ca_file` (only those), or the bundled Mozilla roots. `timeout`
    /// bounds connecting and each read or write; a whole download (redirects included) gets ten times that.
    pub fn new(ca_file: Option<&Path>, protector: Box<dyn Protector>, timeout: Duration) -> Result<Self, String> {
        let config = Agent::config_builder()
            .https_only(true)
            .max_redirects(MAX_REDIRECTS)
            .http_status_as_error(false)
            .max_response_header_size(MAX_HEAD)
            .proxy(None)
            .max_idle_connections(0)
            .user_agent(concat!("hushwall/", env!("CARGO_PKG_VERSION")))
            .accept("*/*")
            .accept_encoding("identity")
            .timeout_connect(Some(timeout))
            .timeout_per_read(Some(timeout))
            .timeout_per_write(Some(timeout))
            .timeout_global(Some(timeout.saturating_mul(10)))
            .build();
        let connector = MarkedTlsConnector { tls: tls_config(ca_file)?, protector: Mutex::new(protector) };
        Ok(HttpsFetcher { agent: Agent::with_parts(config, connector, DefaultResolver::default()) })
    }
}

impl Fetcher for HttpsFetcher {
    fn fetch(&mut self, url: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
        check_url(url)?;
        let mut response = self.agent.get(url).call().map_err(fetch_error)?;
        if response.status() != 200 {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let length = response.body().content_length();
        if length.is_some_and(|length| length > limit as u64) {
            return Err(FetchError::TooLarge { limit });
        }
        let mut body = Vec::new();
        let read = response.body_mut().as_reader().take(limit as u64 + 1).read_to_end(&mut body);
        let received = body.len() as u64;
        match (read, length) {
            (Ok(_), _) if body.len() > limit => Err(FetchError::TooLarge { limit }),
            (Ok(_), Some(expected)) if received != expected => Err(FetchError::Truncated { expected, received }),
            (Ok(_), _) => Ok(body),
            (Err(e), _) if is_timeout(&e) => Err(FetchError::Timeout),
            (Err(_), Some(expected)) => Err(FetchError::Truncated { expected, received }),
            (Err(e), None) => Err(FetchError::Protocol(format!("the body is incomplete: {}", io_error_text(&e)))),
        }
    }
}

/// Refuses what ureq would accept but a list URL must not have: another scheme, user info, port 0.
fn check_url(url: &str) -> Result<(), FetchError> {
    let bad = |why: &str| Err(FetchError::BadUrl(format!("{why}: \"{url}\"")));
    let Ok(uri) = url.parse::<Uri>() else { return bad("not a URL") };
    if uri.scheme_str().is_none_or(|scheme| !scheme.eq_ignore_ascii_case("https")) {
        return bad("only https:// URLs are accepted");
    }
    let Some(authority) = uri.authority() else { return bad("no host") };
    if authority.as_str().contains('@') {
        return bad("user names in URLs are not supported");
    }
    // After an IPv6 literal's ']', a ':' starts the port, which must be a number from 1 to 65535.
    let after_host = authority.as_str().rsplit_once(']').map_or(authority.as_str(), |(_, rest)| rest);
    let bad_port = after_host.contains(':') && authority.port_u16().is_none_or(|port| port == 0);
    if authority.host().is_empty() || bad_port {
        return bad("bad host or port");
    }
    Ok(())
}

/// Maps an error of a request (connecting, TLS, the response head, redirects).
fn fetch_error(e: ureq::Error) -> FetchError {
    match e {
        ureq::Error::Timeout(_) => FetchError::Timeout,
        ureq::Error::Io(e) if is_timeout(&e) => FetchError::Timeout,
        ureq::Error::Io(e) if e.kind() == io::ErrorKind::InvalidData => FetchError::Tls(io_error_text(&e)),
        ureq::Error::Io(e) if ended_early(&e) => FetchError::Protocol(io_error_text(&e)),
        ureq::Error::Io(e) => FetchError::Connect(io_error_text(&e)),
        ureq::Error::HostNotFound => FetchError::Connect("cannot resolve the host".into()),
        ureq::Error::RequireHttpsOnly(url) => FetchError::BadUrl(format!("only https:// URLs are accepted: {url}")),
        ureq::Error::BadUri(why) => FetchError::BadUrl(why),
        ureq::Error::Http(e) => FetchError::BadUrl(e.to_string()),
        ureq::Error::TooManyRedirects => FetchError::Protocol(format!("more than {MAX_REDIRECTS} redirects")),
        ureq::Error::LargeResponseHeader(..) => FetchError::Protocol("response head too large".into()),
        ureq::Error::Protocol(e) => FetchError::Protocol(e.to_string()),
        ureq::Error::StatusCode(code) => FetchError::Status(code),
        e => FetchError::Other(e.to_string()),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|e| matches!(e, ureq::Error::Timeout(_)) || matches!(e, ureq::Error::Io(e) if is_timeout(e)))
}

/// Whether `e` is (or wraps) [`EndedEarly`].
fn ended_early(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<EndedEarly>())
}

/// An I/O error's text with its sources (rustls puts the certificate problem in the inner error).
fn io_error_text(e: &io::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.get_ref().and_then(|inner| inner.source());
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

/// The rustls client configuration: safe default protocol versions, the *ring* provider, and the given roots.
fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("no usable CA certificate in {}", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// Opens every connection of the agent (the first and each redirect's) on a protected socket and completes the
/// TLS handshake on it. It is the agent's only connector, so no socket is ever opened without protection.
struct MarkedTlsConnector {
    tls: Arc<ClientConfig>,
    protector: Mutex<Box<dyn Protector>>,
}

impl fmt::Debug for MarkedTlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MarkedTlsConnector").finish_non_exhaustive()
    }
}

impl Connector for MarkedTlsConnector {
    type Out = TlsTransport;

    fn connect(&self, details: &ConnectionDetails, _: Option<()>) -> Result<Option<TlsTransport>, ureq::Error> {
        let host = details.uri.host().ok_or_else(|| ureq::Error::BadUri("no host".into()))?;
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let name = ServerName::try_from(bare.to_owned()).map_err(|e| ureq::Error::BadUri(e.to_string()))?;
        let timeout = details.timeout.not_zero().map(|t| *t);
        let tcp = self.connect_tcp(&details.addrs, timeout, details.timeout.reason)?;
        let conn = ClientConnection::new(Arc::clone(&self.tls), name).map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(|e| transport_error(e, details.timeout.reason))?;
        }
        let (input, output) = (details.config.input_buffer_size(), details.config.output_buffer_size());
        Ok(Some(TlsTransport { stream, buffers: LazyBuffers::new(input, output) }))
    }
}

impl MarkedTlsConnector {
    /// A protected TCP connection to the first of `addrs` that answers; the socket is marked before it connects.
    fn connect_tcp(
        &self,
        addrs: &[SocketAddr],
        timeout: Option<Duration>,
        reason: Timeout,
    ) -> Result<TcpStream, ureq::Error> {
        let mut last = ureq::Error::HostNotFound;
        for &addr in addrs {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            if !self.protector.lock().unwrap_or_else(PoisonError::into_inner).protect(socket.as_fd()) {
                let why = "the socket could not be protected (SO_MARK)";
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, why).into());
            }
            let connected = match timeout {
                Some(timeout) => socket.connect_timeout(&addr.into(), timeout),
                None => socket.connect(&addr.into()),
            };
            match connected {
                Ok(()) => {
                    socket.set_read_timeout(timeout)?;
                    socket.set_write_timeout(timeout)?;
                    return Ok(socket.into());
                }
                Err(e) => last = transport_error(io::Error::new(e.kind(), format!("{addr}: {e}")), reason),
            }
        }
        Err(last)
    }
}

/// A TLS connection for ureq to read and write through its buffers.
struct TlsTransport {
    stream: StreamOwned<ClientConnection, TcpStream>,
    buffers: LazyBuffers,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport").field("peer", &self.stream.sock.peer_addr().ok()).finish_non_exhaustive()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        self.stream.sock.set_write_timeout(timeout.not_zero().map(|t| *t))?;
        let output = self.buffers.output().get(..amount).unwrap_or_default();
        self.stream.write_all(output).and_then(|()| self.stream.flush()).map_err(|e| transport_error(e, timeout.reason))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        if timeout.after.is_zero() {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        self.stream.sock.set_read_timeout(timeout.not_zero().map(|t| *t))?;
        let amount = loop {
            match self.stream.read(self.buffers.input_append_buf()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => break result.map_err(|e| transport_error(e, timeout.reason))?,
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    /// A download's connection is never reused (the agent keeps no idle connections).
    fn is_open(&mut self) -> bool {
        false
    }

    fn is_tls(&self) -> bool {
        true
    }
}

/// Maps an I/O error of the socket or the TLS stream. An end of the connection without TLS close_notify, and a
/// reset, become [`EndedEarly`]: ureq would take them for the end of a close-delimited body.
fn transport_error(e: io::Error, reason: Timeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ureq::Error::Timeout(reason),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            ureq::Error::Io(io::Error::other(EndedEarly(e)))
        }
        _ => ureq::Error::Io(e),
    }
}

/// The connection ended (or was reset) without TLS close_notify, so whatever came last may be cut short.
#[derive(Debug)]
struct EndedEarly(io::Error);

impl fmt::Display for EndedEarly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the connection ended early (no TLS close_notify): {}", self.0)
    }
}

impl std::error::Error for EndedEarly {}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection};
    use std::net::TcpListener;
    use std::os::fd::BorrowedFd;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// How the test server ends a connection after its reply.
    #[derive(Debug, Clone, Copy)]
    enum End {
        /// TLS close_notify, then the TCP close: a clean end.
        CloseNotify,
        /// A TCP close without close_notify (a cut-off connection, or an attacker's injected FIN).
        Eof,
        /// A TCP reset.
        Reset,
        /// Nothing more until the client gives up.
        Stall,
    }

    /// A test CA and a server certificate for 127.0.0.1 and 127.0.0.2, made with the `openssl` command.
    struct Certs {
        dir: tempfile::TempDir,
    }

    impl Certs {
        fn new() -> Certs {
            let dir = tempfile::tempdir().unwrap();
            let p = |name: &str| dir.path().join(name).display().to_string();
            let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
            let (ca_key, ca, key, csr, cert, ext) =
                (p("ca.key"), p("ca.pem"), p("srv.key"), p("srv.csr"), p("srv.pem"), p("ext"));
            std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,IP:127.0.0.2\nbasicConstraints=CA:FALSE\n").unwrap();
            let runs: [Vec<&str>; 3] = [
                [&["req", "-x509"][..], &ec, &["-keyout", &ca_key, "-out", &ca, "-days", "2", "-subj", "/CN=t"]]
                    .concat(),
                [&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]].concat(),
                vec!["x509", "-req", "-in", &csr, "-CA", &ca, "-CAkey", &ca_key, "-CAcreateserial", "-out", &cert]
                    .into_iter()
                    .chain(["-days", "2", "-extfile", &ext])
                    .collect(),
            ];
            for args in runs {
                let out = Command::new("openssl").args(&args).output().expect("these tests need the openssl command");
                assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Certs { dir }
        }

        fn ca(&self) -> std::path::PathBuf {
            self.dir.path().join("ca.pem")
        }

        /// Starts a TLS server on 127.0.0.0/8 that answers its n-th connection with the n-th reply (made knowing
        /// the port) and ends it as told. Returns the port and the count of connections accepted.
        fn serve(&self, replies: impl FnOnce(u16) -> Vec<(String, End)>) -> (u16, Arc<AtomicUsize>) {
            let certs = CertificateDer::pem_file_iter(self.dir.path().join("srv.pem"))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(self.dir.path().join("srv.key")).unwrap();
            let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
            let config = Arc::new(config);
            let listener = TcpListener::bind("0.0.0.0:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let replies = replies(port);
            let accepted = Arc::new(AtomicUsize::new(0));
            let count = Arc::clone(&accepted);
            // The thread ends with its last reply, or stays in accept() if the client stops early.
            std::thread::spawn(move || {
                for (reply, end) in replies {
                    let (tcp, _) = listener.accept().unwrap();
                    count.fetch_add(1, Ordering::SeqCst);
                    let conn = ServerConnection::new(Arc::clone(&config)).unwrap();
                    // Write errors are the client's choice to stop reading (a limit): not the test's concern.
                    let _ = answer(StreamOwned::new(conn, tcp), reply.as_bytes(), end);
                }
            });
            (port, accepted)
        }
    }

    fn answer(mut tls: StreamOwned<ServerConnection, TcpStream>, reply: &[u8], end: End) -> io::Result<()> {
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tls.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            request.extend_from_slice(&buf[..n]);
        }
        tls.write_all(reply)?;
        tls.flush()?;
        match end {
            End::CloseNotify => {
                tls.conn.send_close_notify();
                tls.flush()?;
            }
            End::Eof => {}
            End::Reset => socket2::SockRef::from(&tls.sock).set_linger(Some(Duration::ZERO))?,
            End::Stall => while tls.read(&mut buf)? > 0 {},
        }
        Ok(())
    }

    /// Counts the sockets it protects.
    struct Counting(Arc<AtomicUsize>);

    impl Protector for Counting {
        fn protect(&mut self, _: BorrowedFd<'_>) -> bool {
            self.0.fetch_add(1, Ordering::SeqCst);
            true
        }
    }

    /// Refuses to protect any socket.
    struct Refusing;

    impl Protector for Refusing {
        fn protect(&mut self, _: BorrowedFd<'_>) -> bool {
            false
        }
    }

    fn fetcher(certs: &Certs, protected: &Arc<AtomicUsize>) -> HttpsFetcher {
        let counting = Box::new(Counting(Arc::clone(protected)));
        HttpsFetcher::new(Some(&certs.ca()), counting, Duration::from_secs(5)).unwrap()
    }

    /// Serves one reply per URL fetched; returns each fetch's result with limit 100.
    fn fetch_each(certs: &Certs, replies: &[(&str, End)]) -> Vec<Result<Vec<u8>, FetchError>> {
        let owned = replies.iter().map(|&(r, e)| (r.to_owned(), e)).collect();
        let (port, _) = certs.serve(|_| owned);
        let mut fetcher = fetcher(certs, &Arc::new(AtomicUsize::new(0)));
        replies.iter().map(|_| fetcher.fetch(&format!("https://127.0.0.1:{port}/l"), 100)).collect()
    }

    const HEAD: &str = "HTTP/1.1 200 OK\r\n";

    #[test]
    fn whole_bodies_are_returned() {
        let certs = Certs::new();
        let results = fetch_each(
            &certs,
            &[
                (&format!("{HEAD}Content-Length: 4\r\n\r\nabcd"), End::Eof),
                (&format!("{HEAD}Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=1\r\nefg\r\n0\r\n\r\n"), End::Eof),
                (&format!("{HEAD}\r\nclose-delimited"), End::CloseNotify),
            ],
        );
        let bodies: Vec<_> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(bodies, [&b"abcd"[..], b"abcdefg", b"close-delimited"]);
    }

    #[test]
    fn cut_off_bodies_are_refused() {
        let certs = Certs::new();
        let length = format!("{HEAD}Content-Length: 10\r\n\r\nabcd");
        let chunked = format!("{HEAD}Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n");
        let close = format!("{HEAD}\r\nabcd");
        let cases = [
            (&length, End::Eof),
            (&length, End::CloseNotify),
            (&chunked, End::Eof),
            (&chunked, End::CloseNotify),
            // Only close_notify tells a close-delimited body's end from a cut.
            (&close, End::Eof),
            (&close, End::Reset),
        ];
        let replies: Vec<_> = cases.iter().map(|(r, e)| (r.as_str(), *e)).collect();
        let results = fetch_each(&certs, &replies);
        for ((reply, end), result) in cases.iter().zip(results) {
            let err = result.expect_err(&format!("{reply:?} ended by {end:?} must be refused"));
            if reply.contains("Content-Length") {
                assert_eq!(err, FetchError::Truncated { expected: 10, received: 4 }, "{end:?}");
            } else {
                assert!(matches!(err, FetchError::Protocol(_)), "{reply:?} {end:?}: {err}");
            }
        }
    }

    #[test]
    fn limits_are_kept() {
        let certs = Certs::new();
        let big = "x".repeat(101);
        let huge_head = format!("{HEAD}X: {}\r\n\r\n", "h".repeat(70_000));
        let results = fetch_each(
            &certs,
            &[
                (&format!("{HEAD}Content-Length: 101\r\n\r\n{big}"), End::CloseNotify),
                (&format!("{HEAD}Transfer-Encoding: chunked\r\n\r\n65\r\n{big}\r\n0\r\n\r\n"), End::CloseNotify),
                (&format!("{HEAD}\r\n{big}"), End::CloseNotify),
                (&huge_head, End::CloseNotify),
                (&format!("{HEAD}Content-Length: x\r\n\r\n"), End::CloseNotify),
                ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", End::CloseNotify),
            ],
        );
        let too_large = Err(FetchError::TooLarge { limit: 100 });
        assert_eq!(results[..3], [too_large.clone(), too_large.clone(), too_large]);
        assert_eq!(results[3], Err(FetchError::Protocol("response head too large".into())));
        assert!(matches!(results[4], Err(FetchError::Protocol(_))), "{:?}", results[4]);
        assert_eq!(results[5], Err(FetchError::Status(404)));
    }

    #[test]
    fn redirects_are_followed_on_protected_sockets_to_https_only() {
        let certs = Certs::new();
        let redirect =
            |to: &str| (format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n"), End::Eof);
        let ok = (format!("{HEAD}Content-Length: 2\r\n\r\nok"), End::CloseNotify);

        // A relative redirect, then one to another host: each connection is on a socket of its own, protected.
        let (port, accepted) =
            certs.serve(|port| vec![redirect("/b"), redirect(&format!("https://127.0.0.2:{port}/c")), ok.clone()]);
        let protected = Arc::new(AtomicUsize::new(0));
        let body = fetcher(&certs, &protected).fetch(&format!("https://127.0.0.1:{port}/a"), 100);
        assert_eq!(body.as_deref(), Ok(&b"ok"[..]));
        assert_eq!((accepted.load(Ordering::SeqCst), protected.load(Ordering::SeqCst)), (3, 3));

        // Never to plain http://, not even on the same port.
        let (port, accepted) = certs.serve(|port| vec![redirect(&format!("http://127.0.0.1:{port}/b")), ok.clone()]);
        let result = fetcher(&certs, &protected).fetch(&format!("https://127.0.0.1:{port}/a"), 100);
        assert!(matches!(&result, Err(FetchError::BadUrl(why)) if why.contains("only https://")), "{result:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // Five redirects are followed, a sixth is not.
        let (port, _) = certs.serve(|_| [vec![redirect("/r"); 5], vec![ok.clone()]].concat());
        let body = fetcher(&certs, &protected).fetch(&format!("https://127.0.0.1:{port}/a"), 100);
        assert_eq!(body.as_deref(), Ok(&b"ok"[..]));
        let (port, _) = certs.serve(|_| [vec![redirect("/r"); 6], vec![ok.clone()]].concat());
        let result = fetcher(&certs, &protected).fetch(&format!("https://127.0.0.1:{port}/a"), 100);
        assert_eq!(result, Err(FetchError::Protocol("more than 5 redirects".into())));
    }

    #[test]
    fn no_unprotected_socket_untrusted_certificate_or_bad_url_is_used() {
        let certs = Certs::new();
        let ok = || vec![(format!("{HEAD}Content-Length: 2\r\n\r\nok"), End::CloseNotify)];

        let (port, accepted) = certs.serve(|_| ok());
        let mut refusing = HttpsFetcher::new(Some(&certs.ca()), Box::new(Refusing), Duration::from_secs(5)).unwrap();
        let result = refusing.fetch(&format!("https://127.0.0.1:{port}/a"), 100);
        assert!(matches!(&result, Err(FetchError::Connect(why)) if why.contains("SO_MARK")), "{result:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "an unprotected socket never connects");

        // The bundled Mozilla roots do not know the test CA.
        let (port, _) = certs.serve(|_| ok());
        let counting = Box::new(Counting(Arc::new(AtomicUsize::new(0))));
        let mut public = HttpsFetcher::new(None, counting, Duration::from_secs(5)).unwrap();
        let result = public.fetch(&format!("https://127.0.0.1:{port}/a"), 100);
        assert!(matches!(&result, Err(FetchError::Tls(why)) if why.contains("certificate")), "{result:?}");

        let mut fetcher = fetcher(&certs, &Arc::new(AtomicUsize::new(0)));
        for bad in
            ["http://a/b", "https://", "https://u@h/", "https://h:0/", "https://h:x/", "https://[::1/", "ftp://h"]
        {
            assert!(matches!(fetcher.fetch(bad, 100), Err(FetchError::BadUrl(_))), "{bad}");
        }
    }

    #[test]
    fn a_silent_server_times_out() {
        let certs = Certs::new();
        let (port, _) = certs.serve(|_| vec![(String::new(), End::Stall)]);
        let counting = Box::new(Counting(Arc::new(AtomicUsize::new(0))));
        let mut fetcher = HttpsFetcher::new(Some(&certs.ca()), counting, Duration::from_secs(1)).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(fetcher.fetch(&format!("https://127.0.0.1:{port}/a"), 100), Err(FetchError::Timeout));
        // Each read is bounded, not only the whole download (ten times as long).
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
