//! Hushwall's platform-free engine.
//!
//! The engine takes IP packets read from a tun device, decides per flow whether the destination is telemetry
//! (by DNS name, TLS SNI, HTTP Host or destination address), refuses blocked flows quickly and forwards the rest
//! through sockets the host platform provides. It never touches a device, a clock or the OS network stack itself:
//! time is always a parameter, and every socket operation is an [`engine::SocketAction`] the driver performs, in
//! the sans-IO style of `quinn-proto`. The driver lends what the engine must not own: a connected TCP stream's
//! reads and writes to [`engine::Engine::upstream_readable`] and [`engine::Engine::upstream_writable`] (so the
//! splice copies straight between smoltcp's buffers and the kernel's), and the platform's owner lookup
//! ([`engine::OwnerLookup`]) with each tun packet. The Linux CLI and the Android JNI library drive it.
//!
//! What it decides is a [`verdict::Verdict`] (allow or block, with a [`verdict::AllowReason`] or
//! [`verdict::BlockReason`] and the deciding rule); what it reports is an [`event::Event`], complete when queued,
//! whose [`event::Outcome`] is such a verdict or a failure ([`verdict::ErrorReason`] and what failed). Each reason's
//! code (`tls_sni`, …) is spelt once, in `verdict`, and is what both the JSON event log and the JNI encoding carry.
//!
//! Nothing in here panics on input from the network, a list file or a caller: malformed input is refused,
//! counted and reported.

#![forbid(unsafe_code)]

pub mod dns_cache;
pub mod engine;
pub mod event;
pub mod inspect;
pub mod pcapng;
pub mod policy;
pub mod verdict;
