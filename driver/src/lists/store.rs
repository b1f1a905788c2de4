//! The on-disk list store: configuration, generations of last good copies, and the last update's status.

use super::private_file::{create_private, Existing};
use super::update::UpdateStatus;
use crate::sys;
use hushwall_core::policy::{ListRole, ListSource};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const CONFIG: &str = "lists.json";
const CURRENT: &str = "current";
const MANIFEST: &str = "manifest.json";
const STATUS: &str = "status.json";
const LOCK: &str = "lock";
const TMP_SUFFIX: &str = ".tmp";
const GEN_PREFIX: &str = "gen-";
/// Longest list name (it is also a file name).
const MAX_NAME_LEN: usize = 64;
/// Longest list URL.
const MAX_URL_LEN: usize = 2048;

/// Whether a configured list blocks or allows; stored as `"block"` or `"allow"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The list's rules block.
    Block,
    /// The list's rules allow, winning over every block rule.
    Allow,
}

impl From<Role> for ListRole {
    fn from(role: Role) -> ListRole {
        match role {
            Role::Block => ListRole::Block,
            Role::Allow => ListRole::Allow,
        }
    }
}

/// One configured list: what to download and how to use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListConfig {
    /// Short unique name (letters, digits, `.`, `_`, `-`; at most 64 bytes); also the copy's file name.
    pub name: String,
    /// Where to download it: an `https://` URL.
    pub url: String,
    /// Block or allow.
    pub role: Role,
}

impl ListConfig {
    /// Checks the name and URL.
    pub fn validate(&self) -> Result<(), StoreError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= MAX_NAME_LEN
            && self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && self.name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if !name_ok {
            return Err(StoreError::InvalidName(self.name.clone()));
        }
        let url_ok = self.url.len() <= MAX_URL_LEN
            && self.url.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"))
            && self.url.len() > 8
            && self.url.bytes().all(|b| b.is_ascii_graphic());
        if !url_ok {
            return Err(StoreError::InvalidUrl(self.url.clone()));
        }
        Ok(())
    }
}

/// The configuration file's contents.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ConfigFile {
    lists: Vec<ListConfig>,
}

/// The last good copy of one list, as recorded in its generation's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCopy {
    /// The list's configured name.
    pub name: String,
    /// The URL it was downloaded from.
    pub url: String,
    /// Block or allow.
    pub role: Role,
    /// SHA-256 of the text, lowercase hex.
    pub sha256: String,
    /// Size of the text in bytes.
    pub size: u64,
    /// Rules in the list after duplicates are dropped.
    pub entries: usize,
    /// When it was downloaded, in seconds since the Unix epoch.
    pub fetched_at: u64,
}

impl ListCopy {
    /// The name rules from this list carry in verdicts, `hushwall check` and errors: `store:NAME (URL)`.
    pub fn display_name(&self) -> String {
        format!("store:{} ({})", self.name, self.url)
    }

    fn file_name(&self) -> String {
        format!("{}.txt", self.name)
    }
}

/// One complete set of last good copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Directory name, e.g. `gen-00000007`.
    pub name: String,
    /// The copies, in configuration order.
    pub lists: Vec<ListCopy>,
}

/// Why the store could not be read or written.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory could not be read or written.
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The system's error.
        error: io::Error,
    },
    /// A store file has unexpected contents (hand-edited, or damaged outside Hushwall).
    Corrupt {
        /// The path concerned.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A list name that is empty, too long, or has characters other than letters, digits, `.`, `_`, `-`.
    InvalidName(String),
    /// A list URL that is not `https://…` or has spaces or control characters.
    InvalidUrl(String),
    /// `add` with a name that is already configured.
    DuplicateName(String),
    /// `remove` with a name that is not configured.
    UnknownName(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            StoreError::Corrupt { path, message } => write!(f, "{}: {message}", path.display()),
            StoreError::InvalidName(name) => write!(
                f,
                "invalid list name \"{name}\": use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-', \
                 starting with a letter or digit"
            ),
            StoreError::InvalidUrl(url) => write!(f, "invalid list URL \"{url}\": only https:// URLs are accepted"),
            StoreError::DuplicateName(name) => write!(f, "a list named \"{name}\" is already configured"),
            StoreError::UnknownName(name) => write!(f, "no list named \"{name}\" is configured"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// An `io::Result` mapper that names the path.
fn at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io { path: path.to_owned(), error }
}

/// Lowercase hex SHA-256.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().fold(String::with_capacity(64), |mut s, b| {
        s.push_str(&format!("{b:02x}"));
        s
    })
}

/// A list store in one directory. Creating the value does no I/O; the directory is created by the first write.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Holds the store's writer lock until dropped.
pub(super) struct WriteLock {
    _file: File,
}

impl Store {
    /// The store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True if the directory exists (a store that was never written to has nothing to load).
    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    /// The configured lists; none if the store has no configuration yet.
    pub fn config(&self) -> Result<Vec<ListConfig>, StoreError> {
        Ok(read_json::<ConfigFile>(&self.dir.join(CONFIG))?.unwrap_or_default().lists)
    }

    /// Adds a list to the configuration (it is downloaded by the next update).
    pub fn add(&self, list: ListConfig) -> Result<(), StoreError> {
        list.validate()?;
        let _lock = self.lock()?;
        let mut config = self.config()?;
        if config.iter().any(|l| l.name == list.name) {
            return Err(StoreError::DuplicateName(list.name));
        }
        config.push(list);
        self.write_config(config)
    }

    /// Removes a list from the configuration; its last good copy stays in force until the next update.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut config = self.config()?;
        let before = config.len();
        config.retain(|l| l.name != name);
        if config.len() == before {
            return Err(StoreError::UnknownName(name.to_owned()));
        }
        self.write_config(config)
    }

    fn write_config(&self, lists: Vec<ListConfig>) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(&ConfigFile { lists }).map_err(|e| corrupt(&self.dir, e))?;
        write_atomic(&self.dir, CONFIG, &json)
    }

    /// The generation in force (its manifest only), if any update ever succeeded.
    pub fn current(&self) -> Result<Option<Generation>, StoreError> {
        let path = self.dir.join(CURRENT);
        let name = match fs::read_to_string(&path) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at(&path)(e)),
        };
        let valid =
            name.strip_prefix(GEN_PREFIX).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !valid {
            return Err(StoreError::Corrupt { path, message: format!("not a generation name: \"{name}\"") });
        }
        let manifest = self.dir.join(&name).join(MANIFEST);
        let lists = read_json::<Vec<ListCopy>>(&manifest)?
            .ok_or_else(|| StoreError::Corrupt { path: manifest.clone(), message: "missing".to_owned() })?;
        for copy in &lists {
            ListConfig { name: copy.name.clone(), url: copy.url.clone(), role: copy.role }
                .validate()
                .map_err(|e| corrupt(&manifest, e))?;
        }
        Ok(Some(Generation { name, lists }))
    }

    /// The lists in force, ready for [`Policy::compile`](hushwall_core::policy::Policy::compile), each named
    /// by [`ListCopy::display_name`]. Every copy is checked against its recorded size and SHA-256. An empty
    /// vector if no update ever succeeded (or the directory does not exist).
    pub fn load(&self) -> Result<Vec<ListSource>, StoreError> {
        let copies = self.load_copies()?;
        Ok(copies
            .into_iter()
            .map(|(copy, text)| ListSource { name: copy.display_name(), role: copy.role.into(), text })
            .collect())
    }

    /// The copies in force with their texts.
    pub(super) fn load_copies(&self) -> Result<Vec<(ListCopy, String)>, StoreError> {
        match self.try_load_copies() {
            // A concurrent update may have removed the generation between reading `current` and its files.
            Err(StoreError::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => self.try_load_copies(),
            other => other,
        }
    }

    fn try_load_copies(&self) -> Result<Vec<(ListCopy, String)>, StoreError> {
        let Some(generation) = self.current()? else { return Ok(Vec::new()) };
        let dir = self.dir.join(&generation.name);
        let mut out = Vec::with_capacity(generation.lists.len());
        for copy in generation.lists {
            let path = dir.join(copy.file_name());
            let bytes = fs::read(&path).map_err(at(&path))?;
            if bytes.len() as u64 != copy.size || sha256_hex(&bytes) != copy.sha256 {
                return Err(StoreError::Corrupt {
                    path,
                    message: "size or SHA-256 differs from the manifest".to_owned(),
                });
            }
            let text = String::from_utf8(bytes).map_err(|e| corrupt(&path, e))?;
            out.push((copy, text));
        }
        Ok(out)
    }

    /// The last update's result, if any update ran.
    pub fn status(&self) -> Result<Option<UpdateStatus>, StoreError> {
        read_json(&self.dir.join(STATUS))
    }

    pub(super) fn write_status(&self, status: &UpdateStatus) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(status).map_err(|e| corrupt(&self.dir, e))?;
        write_atomic(&self.dir, STATUS, &json)
    }

    /// Creates the directory if needed and takes the writer lock (waiting for another writer to finish).
    pub(super) fn lock(&self) -> Result<WriteLock, StoreError> {
        fs::create_dir_all(&self.dir).map_err(at(&self.dir))?;
        let path = self.dir.join(LOCK);
        let file = create_private(&path, Existing::Append).map_err(at(&path))?;
        sys::lock_exclusive(&file).map_err(at(&path))?;
        Ok(WriteLock { _file: file })
    }

    /// Writes `copies` as a new generation and makes it current. Call with the lock held.
    pub(super) fn commit(&self, _lock: &WriteLock, copies: &[(ListCopy, &str)]) -> Result<String, StoreError> {
        let next = self.generations()?.iter().filter_map(|g| gen_number(g)).max().map_or(1, |n| n + 1);
        let name = format!("{GEN_PREFIX}{next:08}");
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        remove_any(&tmp)?;
        fs::create_dir(&tmp).map_err(at(&tmp))?;
        for (copy, text) in copies {
            write_synced(&tmp.join(copy.file_name()), text.as_bytes())?;
        }
        let manifest: Vec<&ListCopy> = copies.iter().map(|(copy, _)| copy).collect();
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| corrupt(&tmp, e))?;
        write_synced(&tmp.join(MANIFEST), &json)?;
        sync_dir(&tmp)?;
        let dest = self.dir.join(&name);
        fs::rename(&tmp, &dest).map_err(at(&dest))?;
        sync_dir(&self.dir)?;
        write_atomic(&self.dir, CURRENT, format!("{name}\n").as_bytes())?;
        Ok(name)
    }

    /// Removes leftover temporaries and, if `keep` is given, every generation not in it. Call with the lock held.
    pub(super) fn clean(&self, _lock: &WriteLock, keep: Option<&[&str]>) -> Result<(), StoreError> {
        for entry in fs::read_dir(&self.dir).map_err(at(&self.dir))? {
            let entry = entry.map_err(at(&self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale_gen = gen_number(&name).is_some() && keep.is_some_and(|keep| !keep.contains(&name.as_str()));
            if name.ends_with(TMP_SUFFIX) || stale_gen {
                remove_any(&entry.path())?;
            }
        }
        Ok(())
    }

    /// Names of the complete generation directories present.
    fn generations(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(at(&self.dir))? {
            let name = entry.map_err(at(&self.dir))?.file_name().to_string_lossy().into_owned();
            if gen_number(&name).is_some() {
                out.push(name);
            }
        }
        Ok(out)
    }
}

/// `Some(n)` for `gen-n` (not for `gen-n.tmp`).
fn gen_number(name: &str) -> Option<u64> {
    name.strip_prefix(GEN_PREFIX)?.parse().ok()
}

fn corrupt(path: &Path, e: impl fmt::Display) -> StoreError {
    StoreError::Corrupt { path: path.to_owned(), message: e.to_string() }
}

/// Reads and parses a JSON file; `None` if it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| corrupt(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(at(path)(e)),
    }
}

/// Creates (or truncates) `path` private to its owner (0600, no symlink followed), writes `bytes` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = create_private(path, Existing::Truncate).map_err(at(path))?;
    file.write_all(bytes).map_err(at(path))?;
    file.sync_all().map_err(at(path))
}

/// Fsyncs a directory, making renames and creations in it durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

/// Replaces `dir/name` with `bytes`: write `name.tmp`, fsync, rename over `name`, fsync `dir`.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(at(dir))?;
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    write_synced(&tmp, bytes)?;
    let dest = dir.join(name);
    fs::rename(&tmp, &dest).map_err(at(&dest))?;
    sync_dir(dir)
}

/// Removes a file or a directory tree; absent is fine.
fn remove_any(path: &Path) -> Result<(), StoreError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(at(path))
}
