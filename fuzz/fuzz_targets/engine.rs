//! The engine fed arbitrary sequences from the tun side (raw and well-formed TCP/UDP packets), with upstream
//! connects, data, errors, DNS responses and time passing in between (see the harness for the steps and for what
//! its fake upstream refuses to receive). Must never panic, never exceed its flow
//! caps, and let no UDP flow outlive its idle timeout.
#![no_main]

use hushwall_fuzz::{Harness, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut h = Harness::new();
    h.run(&mut Input::new(data));
    h.check_invariants();
    h.check_wound_down();
});
