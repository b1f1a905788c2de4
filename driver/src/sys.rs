//! The few raw system calls the driver needs.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

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
