//! Inspection of what flows carry: DNS messages, TLS ClientHello SNI and HTTP Host.
//!
//! Everything here is a pure function of the bytes given: no state, no clock, no I/O, and no
//! panic on any input.

pub mod dns;
