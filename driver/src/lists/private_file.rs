//! Creating files that hold private data (list store state, packet captures, event logs): mode 0600 whatever the
//! umask, never through a symbolic link planted at the path, never into a file someone else owns.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What to do with the contents of a file that already exists at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Keep them and write at the end (event logs).
    Append,
    /// Discard them (captures, temporaries).
    Truncate,
}

/// Opens `path` for writing, creating it with mode 0600 if absent.
///
/// The path's last component must not be a symbolic link (`O_NOFOLLOW`: refused with an error saying so). An
/// existing file is checked after opening (through the open descriptor, so it cannot be swapped in between): it
/// must be a regular file owned by this process's user with one link; its mode is then set to 0600 and, with
/// [`Existing::Truncate`], its contents discarded.
pub fn create_private(path: &Path, existing: Existing) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .append(existing == Existing::Append)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is a symbolic link; refusing to follow it", path.display()),
                )
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    let refuse = |why: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {why}", path.display())));
    if !meta.file_type().is_file() {
        return refuse("not a regular file; refusing to write to it");
    }
    if meta.uid() != effective_uid() {
        return refuse("owned by another user; refusing to write to it");
    }
    if meta.nlink() > 1 {
        return refuse("has other hard links; refusing to write to it");
    }
    if meta.mode() & 0o7777 != 0o600 {
        file.set_permissions(Permissions::from_mode(0o600))?;
    }
    if existing == Existing::Truncate {
        file.set_len(0)?;
    }
    Ok(file)
}

/// This process's effective user (no `unsafe` `geteuid` needed): on Linux `/proc/self` is owned by it.
fn effective_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).expect("stat").mode() & 0o7777
    }

    #[test]
    fn new_files_are_0600_whatever_the_umask() {
        // The test process runs under the usual umask (022 here), which alone would give 0644.
        let dir = tempfile::tempdir().expect("tempdir");
        for existing in [Existing::Append, Existing::Truncate] {
            let path = dir.path().join(format!("{existing:?}"));
            create_private(&path, existing).expect("create");
            assert_eq!(mode(&path), 0o600, "{existing:?}");
        }
    }

    #[test]
    fn existing_world_readable_file_becomes_0600_and_append_keeps_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, b"old\n").expect("write");
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        let mut file = create_private(&path, Existing::Append).expect("open");
        file.write_all(b"new\n").expect("append");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"old\nnew\n");
        create_private(&path, Existing::Truncate).expect("truncate");
        assert_eq!(std::fs::read(&path).expect("read"), b"");
    }

    #[test]
    fn planted_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious").expect("write");
        std::fs::set_permissions(&target, Permissions::from_mode(0o644)).expect("chmod");
        let link = dir.path().join("capture.pcapng");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        for existing in [Existing::Append, Existing::Truncate] {
            let err = create_private(&link, existing).expect_err("a symlink must be refused");
            assert!(err.to_string().contains("symbolic link; refusing to follow it"), "{err}");
        }
        assert_eq!(std::fs::read(&target).expect("read"), b"precious");
        assert_eq!(mode(&target), 0o644);
        // A dangling link (the attacker's file does not exist yet) is refused too, and nothing is created.
        let dangling = dir.path().join("events.jsonl");
        std::os::unix::fs::symlink(dir.path().join("absent"), &dangling).expect("symlink");
        assert!(create_private(&dangling, Existing::Append).is_err());
        assert!(!dir.path().join("absent").exists());
    }

    #[test]
    fn hard_link_and_non_regular_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        std::fs::write(&target, b"precious").expect("write");
        let hard = dir.path().join("hard");
        std::fs::hard_link(&target, &hard).expect("link");
        assert!(create_private(&hard, Existing::Truncate).is_err());
        assert_eq!(std::fs::read(&target).expect("read"), b"precious");
        assert!(create_private(dir.path(), Existing::Append).is_err());
    }
}
