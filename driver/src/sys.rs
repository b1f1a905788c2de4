//! The few raw system calls the driver needs.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Puts `fd` into non-blocking mode.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL only reads and sets file status flags of a descriptor the caller owns;
    // an invalid descriptor yields EBADF, which is reported, not undefined behaviour.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Takes an exclusive `flock` on `file`, blocking until it is granted; released when the file is closed.
pub(crate) fn lock_exclusive(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock only takes an advisory lock on a descriptor the borrowed `file` keeps open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Makes glibc serve large allocations (the per-flow smoltcp buffers) from fresh `mmap`s and unmap them on free.
///
/// glibc's default *dynamic* mmap threshold rises to the size of the largest freed mmapped block, after which
/// each new flow's zeroed buffers come from the reused heap, where `calloc` memsets them: every page of every
/// buffer becomes resident at once and stays so (1 GiB with 4,096 flows in BENCHMARKS.md). A fixed threshold
/// keeps buffers lazily backed by zero pages, resident only as far as data has passed through them, and gives
/// them back to the system when the flow closes (except the few the engine keeps for new flows: `Stack`'s spare
/// sockets in hushwall-core) (measured with 4,096 concurrent flows: about 570 MiB resident and
/// never returned without it, 1 GiB after a second flood; 42 MiB at the peak and under 10 MiB afterwards with it:
/// tests/tests/reliability.rs `flood_10k_concurrent_tcp_connections`). Other C libraries (bionic) are left alone.
pub(crate) fn prefer_mmap_for_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Allocations of at least this many bytes are mmapped (a packet buffer and a socket buffer are larger).
        const THRESHOLD: libc::c_int = 64 * 1024;
        // SAFETY: mallopt only changes allocator tuning parameters; it takes no pointers. A failure (0) leaves the
        // defaults in place, which is harmless.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) };
        if ok == 0 {
            log::debug!("mallopt(M_MMAP_THRESHOLD) failed; keeping glibc's dynamic threshold");
        }
    }
}

/// A second descriptor for the same open file (shares its flags, including non-blocking mode).
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: dup only reads the descriptor table; an invalid `fd` yields EBADF. On success the new descriptor
    // is ours alone, so OwnedFd may close it.
    unsafe {
        let new = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0);
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(new))
    }
}
