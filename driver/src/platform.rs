//! What a platform provides to the driver.

use hushwall_core::event::{Event, Protocol};
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

/// Keeps an upstream socket out of the tunnel: Android's `VpnService.protect(fd)`, `SO_MARK` on Linux.
pub trait Protector: Send {
    /// Protects `socket` before it connects. `false` means it could not be protected; the driver then refuses to
    /// use the socket rather than let it loop back into the tunnel.
    fn protect(&mut self, socket: BorrowedFd<'_>) -> bool;
}

/// Finds which app (UID) owns a flow.
pub trait UidResolver: Send {
    /// The UID owning the connection from `src` to `dst`, if it can be found.
    fn uid(&mut self, protocol: Protocol, src: SocketAddr, dst: SocketAddr) -> Option<u32>;

    /// Called once per event-loop iteration, before that iteration's lookups: a resolver that reads a table may
    /// re-read it at most once per iteration, however many flows the iteration judged or refused.
    fn next_iteration(&mut self) {}
}

/// Receives events, in batches (one call per loop iteration that produced any).
pub trait EventSink: Send {
    /// Delivers a batch of events, oldest first.
    fn deliver(&mut self, events: &[Event]);
}

/// The platform edges, bundled for [`crate::run`].
pub struct Platform {
    /// Socket protection.
    pub protector: Box<dyn Protector>,
    /// App attribution.
    pub uids: Box<dyn UidResolver>,
    /// Event delivery.
    pub events: Box<dyn EventSink>,
    /// Watch the kernel's address and route changes (rtnetlink) and probe each family's route on every change
    /// (Linux). False where the app reports changes through [`crate::Control::network_changed`] instead
    /// (Android, where apps may not bind netlink route sockets).
    pub watch_network: bool,
    /// Write every tun packet to this pcapng capture, with the verdicts as comments ([`crate::capture`]).
    pub capture: Option<crate::capture::CaptureFile>,
}

/// A resolver that never knows (for gateways, where flows come from other machines).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoUids;

impl UidResolver for NoUids {
    fn uid(&mut self, _: Protocol, _: SocketAddr, _: SocketAddr) -> Option<u32> {
        None
    }
}
