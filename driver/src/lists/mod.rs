//! Downloaded lists on disk: the list store and its updater, shared by the Linux CLI and the Android app.
//!
//! # Store layout
//! A store is one directory (`/var/lib/hushwall/lists` on Linux, app-internal storage on Android):
//!
//! ```text
//! DIR/
//!   lists.json           configured lists: name, URL, role (block/allow)
//!   current              name of the generation in force, e.g. "gen-00000007"
//!   gen-00000007/        one complete set of last good copies
//!     manifest.json      per list: name, URL, role, sha256, size, entry count, download time
//!     NAME.txt           the list's text exactly as downloaded and validated
//!   status.json          the last update's result: time, per-list outcome and error ("last update result")
//!   lock                 flock'ed by writers, so two updates never interleave
//! ```
//!
//! Every file is created 0600 (whatever the umask; a symbolic link planted at its path is refused), written to a
//! temporary name, fsynced, renamed into place, and its directory fsynced. A new generation is built as `gen-N.tmp`, fsynced and renamed to `gen-N`, and only then is `current` switched to it
//! (itself by write-fsync-rename). A crash or kill at any point therefore leaves either the old or the new set in
//! force, never a mix or a half-written file; readers ignore leftover `*.tmp` entries and the next writer removes
//! them. The generation before the current one is kept, so a reader that read `current` just before a swap can
//! still open its files (and [`Store::load`] retries once if one vanished anyway).
//!
//! # Update
//! [`update`] downloads every configured list through a [`Fetcher`] (the Linux CLI implements it with rustls over
//! a socket marked with `SO_MARK`; the Android app downloads through the platform and hands the bytes over with
//! [`Prefetched`]), validates each download (size limit, UTF-8, every line parses: errors read `FILE:LINE:
//! message`), compiles the whole policy (built-in lists plus the new set) and only then swaps. A list whose
//! download or validation fails keeps its last good copy; the failure is returned and recorded in
//! `status.json`.

mod private_file;
mod store;
mod update;

pub use private_file::{create_private, Existing};
pub use store::{Generation, ListConfig, ListCopy, Role, Store, StoreError};
pub use update::{update, validate, FetchError, Fetcher, ListOutcome, Prefetched, UpdateStatus, MAX_LIST_BYTES};
