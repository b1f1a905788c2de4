//! One arbitrary packet from the tun into a fresh engine: the IPv4/IPv6/TCP/UDP/ICMP parsing path and the first
//! decision (refusals, ICMP errors, DNS answers, new flows). Must never panic.
#![no_main]

use hushwall_fuzz::Harness;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    h.tun_packet(data);
    h.now += std::time::Duration::from_secs(1);
    h.timeout();
    h.check_invariants();
});
