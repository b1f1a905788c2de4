//! QUIC client Initials (`inspect::quic`), one flow's datagrams at a time through the `ClientHelloAssembler`.
//!
//! Input: a mode byte, then datagrams as `u16 length · bytes` (at most 8). Mode bit 0 clear: the datagrams are fed
//! as they are (long-header parsing, version and type checks, header protection and AEAD on arbitrary bytes).
//! Set: each is a *plaintext* Initial payload, sealed first into a valid protected Initial (v1, or v2 with mode
//! bit 1), so fuzzing reaches what random bytes never get past the AEAD: frame parsing, CRYPTO reassembly
//! (out of order, overlapping, bounded) and the ClientHello scan. Besides "never panics": a host name found is
//! lowercase, non-empty and without a trailing dot, and an answer other than `NeedMore` never changes.
#![no_main]

use hushwall_core::inspect::quic::seal::client_initial;
use hushwall_core::inspect::quic::{ClientHelloAssembler, QuicScan, VERSION_1, VERSION_2};
use libfuzzer_sys::fuzz_target;

/// The Destination Connection ID of every sealed Initial (the keys derive from it).
const DCID: [u8; 8] = [0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let version = if mode & 2 == 0 { VERSION_1 } else { VERSION_2 };
    let mut assembler = ClientHelloAssembler::new();
    let mut decided: Option<QuicScan> = None;
    for packet_number in 0..8u32 {
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        let datagram =
            if mode & 1 == 0 { chunk.to_vec() } else { client_initial(version, &DCID, packet_number, chunk, 1200) };
        let scan = assembler.push_datagram(&datagram);
        if let QuicScan::Sni(name) = &scan {
            assert!(!name.is_empty() && !name.ends_with('.'), "{name:?}");
            assert_eq!(name, &name.to_ascii_lowercase());
        }
        match &decided {
            Some(first) => assert_eq!(&scan, first, "a final answer changed"),
            None if scan != QuicScan::NeedMore => decided = Some(scan),
            None => {}
        }
    }
});
