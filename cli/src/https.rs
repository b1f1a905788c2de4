//! The Linux CLI's list downloader: one HTTPS/1.1 GET at a time over rustls, on a socket protected like the
//! engine's upstream sockets (`SO_MARK`), so a running firewall's policy routing keeps it out of the tun.
//!
//! TLS is rustls with the *ring* crypto provider, which builds C and assembly code; that is fine for the Linux
//! CLI. The Android app cannot build C, so it downloads through the platform and feeds the bytes into the same
//! validate/compile/swap path (`hushwall_driver::lists::Prefetched`). Certificates are always verified, against
//! the bundled Mozilla roots or, with `--ca-file`, against the given CAs only.
//!
//! Only what list hosting needs is supported: `Content-Length`, chunked and close-delimited bodies, and up to five
//! redirects (to `https://` only). A body shorter than its `Content-Length`, or a connection that ends without
//! TLS close_notify where that is the only end marker, is an error: a list is never used half-downloaded.

use hushwall_driver::lists::{FetchError, Fetcher};
use hushwall_driver::Protector;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most redirects followed.
const MAX_REDIRECTS: usize = 5;
/// Largest response head.
const MAX_HEAD: usize = 64 * 1024;
/// Most response headers.
const MAX_HEADERS: usize = 64;

/// Downloads over HTTPS on protected sockets.
pub struct HttpsFetcher {
    tls: Arc<ClientConfig>,
    protector: Box<dyn Protector>,
    /// Limit for connecting and for each read or write.
    timeout: Duration,
    /// Limit for one whole download.
    total: Duration,
}

impl HttpsFetcher {
    /// A fetcher trusting the CAs in the PEM file `ca_file` (only those), or the bundled Mozilla roots.
    pub fn new(ca_file: Option<&Path>, protector: Box<dyn Protector>, timeout: Duration) -> Result<Self, String> {
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
        Ok(HttpsFetcher { tls: Arc::new(tls), protector, timeout, total: timeout.saturating_mul(10) })
    }

    fn get(&mut self, url: &Url, limit: usize, deadline: Instant) -> Result<Response, FetchError> {
        let tcp = self.connect(url)?;
        let name = ServerName::try_from(url.host.clone()).map_err(|e| FetchError::BadUrl(e.to_string()))?;
        let conn = ClientConnection::new(Arc::clone(&self.tls), name).map_err(|e| FetchError::Tls(e.to_string()))?;
        let mut tls = StreamOwned::new(conn, tcp);
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hushwall/{}\r\nAccept: */*\r\nAccept-Encoding: identity\r\n\
             Connection: close\r\n\r\n",
            url.path,
            url.host_header(),
            env!("CARGO_PKG_VERSION")
        );
        tls.write_all(request.as_bytes()).and_then(|()| tls.flush()).map_err(io_error)?;

        let (head, rest) = read_head(&mut tls)?;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Err(FetchError::Protocol("incomplete response head".into())),
            Err(e) => return Err(FetchError::Protocol(format!("response head: {e}"))),
        }
        let status = response.code.unwrap_or(0);
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
        };
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            let location =
                header("location").ok_or_else(|| FetchError::Protocol("redirect without Location".into()))?;
            return Ok(Response::Redirect(location));
        }
        if status != 200 {
            return Err(FetchError::Status(status));
        }
        let chunked = header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let length = match header("content-length") {
            Some(value) => Some(
                value.parse::<u64>().map_err(|_| FetchError::Protocol(format!("bad Content-Length \"{value}\"")))?,
            ),
            None => None,
        };
        let mut body = Deadline { inner: BufReader::new(Cursor::new(rest).chain(tls)), deadline };
        let bytes = match (chunked, length) {
            (true, _) => read_chunked(&mut body, limit)?,
            (false, Some(length)) => read_exact_length(&mut body, length, limit)?,
            (false, None) => read_to_close(&mut body, limit)?,
        };
        Ok(Response::Body(bytes))
    }

    /// A protected TCP connection to the first address of the host that answers.
    fn connect(&mut self, url: &Url) -> Result<TcpStream, FetchError> {
        let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| FetchError::Connect(format!("cannot resolve {}: {e}", url.host)))?
            .collect();
        let mut last = FetchError::Connect(format!("no address for {}", url.host));
        for addr in addrs {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
                .map_err(|e| FetchError::Connect(e.to_string()))?;
            if !self.protector.protect(socket.as_fd()) {
                return Err(FetchError::Connect("the socket could not be protected (SO_MARK)".into()));
            }
            match socket.connect_timeout(&addr.into(), self.timeout) {
                Ok(()) => {
                    socket.set_read_timeout(Some(self.timeout)).map_err(|e| FetchError::Connect(e.to_string()))?;
                    socket.set_write_timeout(Some(self.timeout)).map_err(|e| FetchError::Connect(e.to_string()))?;
                    return Ok(socket.into());
                }
                Err(e) if is_timeout(&e) => last = FetchError::Timeout,
                Err(e) => last = FetchError::Connect(format!("{addr}: {e}")),
            }
        }
        Err(last)
    }
}

impl Fetcher for HttpsFetcher {
    fn fetch(&mut self, url: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
        let deadline = Instant::now() + self.total;
        let mut current = Url::parse(url)?;
        for _ in 0..=MAX_REDIRECTS {
            match self.get(&current, limit, deadline)? {
                Response::Body(bytes) => return Ok(bytes),
                Response::Redirect(location) => current = current.join(&location)?,
            }
        }
        Err(FetchError::Protocol(format!("more than {MAX_REDIRECTS} redirects")))
    }
}

enum Response {
    Body(Vec<u8>),
    Redirect(String),
}

/// The parts of an `https://` URL a GET needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    /// Host name or IP address (IPv6 without brackets).
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    path: String,
}

impl Url {
    fn parse(url: &str) -> Result<Url, FetchError> {
        let bad = |why: &str| FetchError::BadUrl(format!("{why}: \"{url}\""));
        let rest = url
            .get(..8)
            .filter(|scheme| scheme.eq_ignore_ascii_case("https://"))
            .and_then(|_| url.get(8..))
            .ok_or_else(|| bad("only https:// URLs are accepted"))?;
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        if authority.contains('@') {
            return Err(bad("user names in URLs are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| bad("bad port"))?,
            None => 443,
        };
        if host.is_empty() || path.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(bad("no host, or spaces or control characters"));
        }
        Ok(Url { host: host.to_owned(), port, path })
    }

    /// A redirect target: absolute (`https://…`) or absolute-path (`/…`) reference.
    fn join(&self, location: &str) -> Result<Url, FetchError> {
        if location.starts_with('/') && !location.starts_with("//") {
            return Ok(Url { path: location.to_owned(), ..self.clone() });
        }
        Url::parse(location)
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == 443 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A reader that fails with `TimedOut` once `deadline` has passed (each read is also bounded by the socket's
/// timeout, so a slow trickle cannot hold a download open for ever).
struct Deadline<R> {
    inner: R,
    deadline: Instant,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() > self.deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.inner.read(buf)
    }
}

impl<R: BufRead> BufRead for Deadline<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if Instant::now() > self.deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Maps an error from the TLS stream.
fn io_error(e: io::Error) -> FetchError {
    if is_timeout(&e) {
        FetchError::Timeout
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        FetchError::Protocol("the connection ended early (no TLS close_notify)".into())
    } else if e.kind() == io::ErrorKind::InvalidData {
        FetchError::Tls(e.to_string())
    } else {
        FetchError::Connect(e.to_string())
    }
}

/// Reads up to the end of the response head; returns the head and whatever body bytes came with it.
fn read_head(stream: &mut impl Read) -> Result<(Vec<u8>, Vec<u8>), FetchError> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(FetchError::Protocol("response head too large".into()));
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(FetchError::Protocol("the connection ended before a response".into())),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
}

/// A body of exactly `length` bytes; fewer is [`FetchError::Truncated`].
fn read_exact_length(r: &mut impl Read, length: u64, limit: usize) -> Result<Vec<u8>, FetchError> {
    if length > limit as u64 {
        return Err(FetchError::TooLarge { limit });
    }
    let mut body = Vec::with_capacity(usize::try_from(length).unwrap_or(limit));
    let truncated = |received: usize| FetchError::Truncated { expected: length, received: received as u64 };
    match r.by_ref().take(length).read_to_end(&mut body) {
        Ok(_) if body.len() as u64 == length => Ok(body),
        Ok(_) => Err(truncated(body.len())),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(truncated(body.len())),
        Err(e) => Err(io_error(e)),
    }
}

/// A body that ends when the connection does; rustls reports an end without close_notify as an error, so a
/// cut-off download is never taken for a whole one.
fn read_to_close(r: &mut impl Read, limit: usize) -> Result<Vec<u8>, FetchError> {
    let mut body = Vec::new();
    r.by_ref().take(limit as u64 + 1).read_to_end(&mut body).map_err(io_error)?;
    if body.len() > limit {
        return Err(FetchError::TooLarge { limit });
    }
    Ok(body)
}

/// A `Transfer-Encoding: chunked` body (RFC 9112 §7.1); trailers are read and ignored.
fn read_chunked(r: &mut impl BufRead, limit: usize) -> Result<Vec<u8>, FetchError> {
    let ended = || FetchError::Protocol("the connection ended inside a chunked body".into());
    let mut body = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        r.by_ref().take(1024).read_until(b'\n', &mut line).map_err(io_error)?;
        if !line.ends_with(b"\n") {
            return Err(ended());
        }
        let text = String::from_utf8_lossy(&line);
        let size_text = text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| FetchError::Protocol(format!("bad chunk size \"{size_text}\"")))?;
        if size == 0 {
            // Trailer lines up to an empty one.
            loop {
                line.clear();
                r.by_ref().take(8192).read_until(b'\n', &mut line).map_err(io_error)?;
                if !line.ends_with(b"\n") {
                    return Err(ended());
                }
                if line == b"\r\n" || line == b"\n" {
                    return Ok(body);
                }
            }
        }
        if body.len().saturating_add(size) > limit {
            return Err(FetchError::TooLarge { limit });
        }
        let start = body.len();
        body.resize(start + size, 0);
        match r.read_exact(body.get_mut(start..).unwrap_or_default()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(ended()),
            Err(e) => return Err(io_error(e)),
        }
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).map_err(|_| ended())?;
        if &crlf != b"\r\n" {
            return Err(FetchError::Protocol("chunk not followed by CRLF".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("https://lists.example/a/b.txt?x=1#frag").unwrap();
        assert_eq!(u, Url { host: "lists.example".into(), port: 443, path: "/a/b.txt?x=1".into() });
        assert_eq!(u.host_header(), "lists.example");
        let u = Url::parse("HTTPS://198.18.1.1:8443").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str(), u.host_header()),
            ("198.18.1.1", 8443, "/", "198.18.1.1:8443".into())
        );
        let u = Url::parse("https://[fd00:6877::1]:8443/l").unwrap();
        assert_eq!((u.host.as_str(), u.host_header()), ("fd00:6877::1", "[fd00:6877::1]:8443".into()));
        for bad in
            ["http://a/b", "https://", "https://u@h/", "https://h:0/", "https://h:x/", "https://[::1/", "ftp://h"]
        {
            assert!(matches!(Url::parse(bad), Err(FetchError::BadUrl(_))), "{bad}");
        }
        let base = Url::parse("https://a.example:8443/x").unwrap();
        assert_eq!(base.join("/y").unwrap().path, "/y");
        assert_eq!(base.join("https://b.example/z").unwrap().host, "b.example");
        assert!(base.join("http://b.example/z").is_err());
    }

    #[test]
    fn chunked_bodies() {
        let ok = b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\nTrailer: x\r\n\r\n";
        assert_eq!(read_chunked(&mut &ok[..], 100).unwrap(), b"abcdefg");
        for cut in [5, 10, 20, ok.len() - 2] {
            let err = read_chunked(&mut &ok[..cut], 100).unwrap_err();
            assert!(matches!(err, FetchError::Protocol(_)), "{cut}: {err}");
        }
        assert_eq!(read_chunked(&mut &ok[..], 5), Err(FetchError::TooLarge { limit: 5 }));
        assert!(matches!(read_chunked(&mut &b"zz\r\n"[..], 100), Err(FetchError::Protocol(_))));
    }

    #[test]
    fn length_delimited_bodies() {
        assert_eq!(read_exact_length(&mut &b"abcdef"[..], 4, 10).unwrap(), b"abcd");
        assert_eq!(read_exact_length(&mut &b"ab"[..], 4, 10), Err(FetchError::Truncated { expected: 4, received: 2 }));
        assert_eq!(read_exact_length(&mut &b"ab"[..], 40, 10), Err(FetchError::TooLarge { limit: 10 }));
        assert_eq!(read_to_close(&mut &b"abc"[..], 2), Err(FetchError::TooLarge { limit: 2 }));
    }

    #[test]
    fn heads() {
        let (head, rest) = read_head(&mut &b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"[..]).unwrap();
        assert_eq!((head.len(), rest.as_slice()), (25, &b"body"[..]));
        assert!(read_head(&mut &b"HTTP/1.1 200 OK\r\n"[..]).is_err());
    }
}
