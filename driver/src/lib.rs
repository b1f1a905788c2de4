//! Hushwall's driver: the event loop that runs the core engine over a tun file descriptor and real sockets.
//!
//! It is shared by the Linux CLI and the Android JNI library; what differs between them is behind the traits in
//! [`platform`] (protecting sockets from the tunnel, finding a flow's app, delivering events). One thread blocks
//! in epoll (through `mio`) on the tun, every upstream socket and a waker, with the engine's next deadline as
//! the timeout: when nothing happens, it does not wake up at all. A second thread only writes packets to the tun
//! ([`tun_writer`]), so the kernel work each `write()` triggers runs beside the engine; it sleeps when idle. With
//! a packet capture on, a third owns the pcapng file ([`capture`]): no file I/O on the data path.
//!
//! [`lists`] keeps downloaded block and allow lists on disk and updates them (the same code path on both
//! platforms; only the download itself differs).

pub mod capture;
pub mod control;
pub mod event_loop;
pub mod lists;
mod network;
mod own_addresses;
pub mod platform;
pub mod procnet;
mod sockdiag;
mod sockets;
mod sys;
mod tun_writer;
mod udp_segments;

pub use control::{Control, EngineThread};
pub use event_loop::run;
pub use platform::{EventSink, Platform, Protector, UidResolver};
