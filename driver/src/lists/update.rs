//! Updating the store: download, validate, compile the whole set, then swap.

use super::store::{sha256_hex, ListConfig, ListCopy, Role, Store, StoreError};
use hushwall_core::policy::{ListError, ListSource, Policy};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest list accepted: 32 MiB (a 1,000,000-name hosts file is about 30 MB).
pub const MAX_LIST_BYTES: usize = 32 << 20;

/// Downloads a list. The Linux CLI implements it over HTTPS on a protected socket; the Android app downloads
/// through the platform and passes the results in with [`Prefetched`].
pub trait Fetcher {
    /// The complete body of `url`, or an error. Must fail with [`FetchError::TooLarge`] rather than return more
    /// than `limit` bytes, and must never return a body it knows to be incomplete.
    fn fetch(&mut self, url: &str, limit: usize) -> Result<Vec<u8>, FetchError>;
}

/// Why a download failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL cannot be used (not `https://`, bad host or port).
    BadUrl(String),
    /// Name resolution, socket protection or connection failed.
    Connect(String),
    /// The TLS handshake failed (for instance an untrusted certificate) or the TLS stream broke.
    Tls(String),
    /// No answer within the time limit.
    Timeout,
    /// The server answered with a status other than 200 (after following redirects).
    Status(u16),
    /// The body ended before its announced `Content-Length`.
    Truncated {
        /// Bytes announced.
        expected: u64,
        /// Bytes received before the connection ended.
        received: u64,
    },
    /// The body is larger than the limit.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The response is not valid HTTP/1.1, or the connection ended mid-response.
    Protocol(String),
    /// Anything else (for instance an error reported by the platform's downloader).
    Other(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::BadUrl(why) => write!(f, "bad URL: {why}"),
            FetchError::Connect(why) => write!(f, "cannot connect: {why}"),
            FetchError::Tls(why) => write!(f, "TLS error: {why}"),
            FetchError::Timeout => f.write_str("timed out"),
            FetchError::Status(code) => write!(f, "server answered HTTP {code}"),
            FetchError::Truncated { expected, received } => {
                write!(f, "download truncated: got {received} of {expected} bytes")
            }
            FetchError::TooLarge { limit } => write!(f, "list is larger than the limit of {limit} bytes"),
            FetchError::Protocol(why) => write!(f, "bad HTTP response: {why}"),
            FetchError::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for FetchError {}

/// Download results handed over by a platform that downloads by itself (the Android app): URL → body or error.
/// A URL without an entry fails with [`FetchError::Other`].
#[derive(Debug, Default)]
pub struct Prefetched {
    bodies: HashMap<String, Result<Vec<u8>, FetchError>>,
}

impl Prefetched {
    /// No results yet.
    pub fn new() -> Prefetched {
        Prefetched::default()
    }

    /// Records the outcome of downloading `url`.
    pub fn insert(&mut self, url: impl Into<String>, result: Result<Vec<u8>, FetchError>) {
        self.bodies.insert(url.into(), result);
    }
}

impl Fetcher for Prefetched {
    fn fetch(&mut self, url: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
        match self.bodies.remove(url) {
            Some(Ok(body)) if body.len() > limit => Err(FetchError::TooLarge { limit }),
            Some(result) => result,
            None => Err(FetchError::Other("not downloaded".to_owned())),
        }
    }
}

/// The outcome for one configured list in an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOutcome {
    /// The list's name.
    pub name: String,
    /// The URL it was downloaded from.
    pub url: String,
    /// The download was valid and is now the list's copy in force.
    pub ok: bool,
    /// Why not, if not (`FILE:LINE: message` for a bad line).
    pub error: Option<String>,
    /// On failure: whether an older good copy stays in force (otherwise the list has none yet).
    pub kept_last_good: bool,
}

/// The result of an update, also saved as the store's `status.json` (the app's "last update result").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// When the update finished, in seconds since the Unix epoch.
    pub finished_at: u64,
    /// Every list downloaded, validated and swapped in (or nothing was configured).
    pub ok: bool,
    /// The generation in force after the update, if any.
    pub generation: Option<String>,
    /// A new generation was swapped in.
    pub swapped: bool,
    /// One outcome per configured list.
    pub lists: Vec<ListOutcome>,
    /// An error concerning the whole set (it did not compile, or could not be written); nothing was swapped.
    pub error: Option<String>,
}

impl UpdateStatus {
    /// Every error of the update, one per line.
    pub fn errors(&self) -> Vec<String> {
        let lists = self.lists.iter().filter_map(|l| l.error.as_ref().map(|e| format!("list \"{}\": {e}", l.name)));
        lists.chain(self.error.clone()).collect()
    }
}

/// Checks a downloaded list: size limit, UTF-8, every line parses. Returns the text and its rule count, or the
/// error naming `display_name` and the line (`FILE:LINE: message`).
pub fn validate(display_name: &str, role: Role, bytes: Vec<u8>, limit: usize) -> Result<(String, usize), ListError> {
    let whole = |message: String| ListError { list: display_name.to_owned(), line: 0, message };
    if bytes.len() > limit {
        return Err(whole(format!("list is larger than the limit of {limit} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.as_bytes().get(..e.utf8_error().valid_up_to()).unwrap_or_default();
        let newlines = valid.iter().filter(|&&b| b == b'\n').count();
        let line = u32::try_from(newlines).unwrap_or(u32::MAX - 1) + 1;
        ListError { list: display_name.to_owned(), line, message: "the text is not valid UTF-8".to_owned() }
    })?;
    let source = ListSource { name: display_name.to_owned(), role: role.into(), text };
    let stats = Policy::compile(std::slice::from_ref(&source))?.stats();
    let entries = stats.block_names + stats.allow_names + stats.block_cidrs + stats.allow_cidrs;
    Ok((source.text, entries))
}

/// Downloads every configured list, validates each, compiles `base` (the built-in lists the policy also holds)
/// plus the new set, and only then swaps the new set in and records the outcome in `status.json`.
///
/// A list whose download or validation fails keeps its last good copy and makes the update not `ok`. If the
/// whole set fails to compile, nothing is swapped. Lists removed from the configuration are dropped at the next
/// swap. Returns `Err` only if the store cannot be locked or its configuration read; failures after that are
/// reported in the returned status (which is also written to the store, best effort).
pub fn update(
    store: &Store,
    fetcher: &mut dyn Fetcher,
    base: &[ListSource],
    now: SystemTime,
) -> Result<UpdateStatus, StoreError> {
    let lock = store.lock()?;
    let config = store.config()?;
    // Leftovers of a writer that was killed: never read, removed here.
    if let Err(e) = store.clean(&lock, None) {
        log::warn!("cannot remove temporary files: {e}");
    }
    let old_generation = store.current().ok().flatten().map(|g| g.name);
    // A damaged current generation must not block updates: lists that fail now then have no copy to keep.
    let old = store.load_copies().unwrap_or_else(|e| {
        log::warn!("last good lists unreadable, updating without them: {e}");
        Vec::new()
    });
    let fetched_at = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());

    let mut lists = Vec::with_capacity(config.len());
    let mut next: Vec<(ListCopy, String)> = Vec::with_capacity(config.len());
    let mut fetched_any = false;
    for ListConfig { name, url, role } in config {
        let attempt = ListCopy {
            name: name.clone(),
            url: url.clone(),
            role,
            sha256: String::new(),
            size: 0,
            entries: 0,
            fetched_at,
        };
        let result = fetcher
            .fetch(&url, MAX_LIST_BYTES)
            .map_err(|e| format!("{}: {e}", attempt.display_name()))
            .and_then(|bytes| {
                let sha256 = sha256_hex(&bytes);
                let size = bytes.len() as u64;
                let (text, entries) =
                    validate(&attempt.display_name(), role, bytes, MAX_LIST_BYTES).map_err(|e| e.to_string())?;
                Ok((ListCopy { sha256, size, entries, ..attempt }, text))
            });
        match result {
            Ok(copy) => {
                fetched_any = true;
                lists.push(ListOutcome { name, url, ok: true, error: None, kept_last_good: false });
                next.push(copy);
            }
            Err(error) => {
                let last_good = old.iter().find(|(copy, _)| copy.name == name).cloned();
                lists.push(ListOutcome {
                    name,
                    url,
                    ok: false,
                    error: Some(error),
                    kept_last_good: last_good.is_some(),
                });
                next.extend(last_good);
            }
        }
    }

    let mut status = UpdateStatus {
        finished_at: fetched_at,
        ok: lists.iter().all(|l| l.ok),
        generation: old_generation.clone(),
        swapped: false,
        lists,
        error: None,
    };
    let dropped = old.iter().any(|(copy, _)| !next.iter().any(|(c, _)| c.name == copy.name));
    if fetched_any || dropped {
        let mut sources = base.to_vec();
        sources.extend(next.iter().map(|(copy, text)| ListSource {
            name: copy.display_name(),
            role: copy.role.into(),
            text: text.clone(),
        }));
        let swapped =
            Policy::compile(&sources).map_err(|e| format!("the new set does not compile: {e}")).and_then(|_| {
                let copies: Vec<(ListCopy, &str)> = next.iter().map(|(c, t)| (c.clone(), t.as_str())).collect();
                store.commit(&lock, &copies).map_err(|e| format!("cannot save the new set: {e}"))
            });
        match swapped {
            Ok(generation) => {
                let keep: Vec<&str> =
                    [Some(generation.as_str()), old_generation.as_deref()].into_iter().flatten().collect();
                if let Err(e) = store.clean(&lock, Some(&keep)) {
                    log::warn!("cannot remove old list generations: {e}");
                }
                status.generation = Some(generation);
                status.swapped = true;
            }
            Err(e) => {
                status.ok = false;
                status.error = Some(e);
            }
        }
    }
    if let Err(e) = store.write_status(&status) {
        status.ok = false;
        status.error.get_or_insert_with(|| format!("cannot record the update's result: {e}"));
    }
    Ok(status)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
