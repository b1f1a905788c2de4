//! The Hushwall end-to-end test bed.
//!
//! Real network namespaces stand in for a phone and the internet (see [`testbed`] for the picture): the engine
//! runs on a tun device in the phone namespace, real servers (dnsmasq, HTTP, HTTPS with real TLS, UDP echo)
//! and a packet capture run in the internet namespace, and real clients (curl, dig, a Python socket client)
//! run on the phone. Tests assert on what the clients got, what the engine reported, and what the server side
//! saw.
//!
//! Everything needs root. Tests take the engine from `$HUSHWALL_BIN` (default: the workspace's
//! `target/release/hushwall`).

pub mod clients;
pub mod evidence;
pub mod pki;
pub mod proc;
pub mod reliability;
pub mod testbed;
pub mod topology;

pub use clients::{sha256, ClientResult, Dig, Fetch, Record};
pub use testbed::{hushwall_bin, EngineConfig, Netns, Options, Testbed};
pub use topology::Family;
