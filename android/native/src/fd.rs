//! Taking the tun file descriptor from Kotlin.
//!
//! # Ownership
//!
//! Kotlin keeps its `ParcelFileDescriptor` (it stays owned by Kotlin, as Android expects) and passes
//! `pfd.fd`. The bridge `dup`s it (`F_DUPFD_CLOEXEC`) and the engine owns and closes only that duplicate, when
//! the engine thread ends. So each side closes exactly the descriptor it owns: no double close, no close of a
//! number that Kotlin may already have reused, and `stop()` never closes Kotlin's descriptor. Android tears the
//! VPN interface down when the last descriptor of it is closed, i.e. after both `Engine.stop()` and
//! `pfd.close()`; the service calls both (ToyVpn's replace-then-close order works unchanged). A caller that
//! prefers to hand over ownership may pass `pfd.detachFd()` and close it right after `start` returns.

#![allow(unsafe_code)]

use crate::error::{BridgeError, Result};
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;

/// Duplicates Kotlin's tun descriptor into one the engine owns, checking it is a character device (a tun, or
/// Android's VPN fd); anything else is an `IllegalArgumentException`.
pub fn adopt_tun(fd: RawFd) -> Result<File> {
    if fd < 0 {
        return Err(BridgeError::Argument(format!("tun fd {fd} is negative")));
    }
    // SAFETY: F_DUPFD_CLOEXEC takes an integer and allocates a new descriptor; it does not touch memory, and an
    // fd that is not open yields EBADF, which is reported.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        let e = std::io::Error::last_os_error();
        return Err(BridgeError::Argument(format!("tun fd {fd} is not an open descriptor: {e}")));
    }
    // SAFETY: `dup` was just returned by fcntl, is open, and nothing else owns it.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(dup) });
    let metadata = file.metadata().map_err(|e| BridgeError::Argument(format!("cannot stat tun fd {fd}: {e}")))?;
    if !metadata.file_type().is_char_device() {
        // `file` (the duplicate) is closed on return; Kotlin's descriptor is untouched.
        return Err(BridgeError::Argument(format!(
            "fd {fd} is not a tun device (expected a character device, found {:?})",
            metadata.file_type()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn refuses_negative_closed_and_non_device_fds() {
        assert!(matches!(adopt_tun(-1), Err(BridgeError::Argument(_))));
        assert!(matches!(adopt_tun(1_000_000), Err(BridgeError::Argument(_))));
        let regular = File::open("/proc/self/status").unwrap();
        let error = adopt_tun(regular.as_raw_fd()).unwrap_err().to_string();
        assert!(error.contains("not a tun device"), "{error}");
    }

    #[test]
    fn duplicates_a_char_device_and_leaves_the_original_open() {
        let original = File::open("/dev/null").unwrap();
        let adopted = adopt_tun(original.as_raw_fd()).unwrap();
        assert_ne!(adopted.as_raw_fd(), original.as_raw_fd());
        drop(adopted);
        // The original is still valid.
        assert!(original.metadata().is_ok());
    }
}
