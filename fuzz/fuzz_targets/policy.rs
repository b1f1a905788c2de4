//! List parsing and the compiled policy: arbitrary text as one block list and (after a 0xff byte, if any) one
//! allow list. Compiling must never panic, and a compiled policy must answer name and address checks for names
//! and addresses taken from the same input without panicking. An allow rule for a name must win over a block.
#![no_main]

use hushwall_core::policy::{Decision, ListRole, ListSource, Policy};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let (block, allow) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let block = String::from_utf8_lossy(block).into_owned();
    let allow = String::from_utf8_lossy(allow).into_owned();
    let sources = [
        ListSource { name: "block.txt".into(), role: ListRole::Block, text: block.clone() },
        ListSource { name: "allow.txt".into(), role: ListRole::Allow, text: allow.clone() },
    ];
    let Ok(policy) = Policy::compile(&sources) else { return };
    let _ = policy.stats();
    for word in block.split(|c: char| c.is_whitespace() || c == '|' || c == '^').chain(allow.split_whitespace()) {
        let _ = policy.check_name(word);
        if let Ok(ip) = word.split('/').next().unwrap_or("").parse::<IpAddr>() {
            let _ = policy.check_ip(ip);
        }
    }
    // A plain name on its own line in the allow list is allowed whatever the block list says.
    for line in allow.lines() {
        let name = line.trim();
        let plain = !name.is_empty()
            && name.len() < 200
            && name.split('.').all(|l| !l.is_empty() && l.len() < 60 && l.bytes().all(|b| b.is_ascii_lowercase()))
            && name.contains('.');
        if plain {
            assert!(!matches!(policy.check_name(name), Decision::Blocked(_)), "allow-listed {name:?} is blocked");
        }
    }
});
