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
    match uri.authority() {
        Some(authority) if authority.as_str().contains('@') => bad("user names in URLs are not supported"),
        Some(authority) if authority.host().is_empty() || authority.port_u16() == Some(0) => bad("bad host or port"),
        Some(_) => Ok(()),
        None => bad("no host"),
    }
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
