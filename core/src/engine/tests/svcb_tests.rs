//! Engine tests of HTTPS/SVCB (type 65/64) answers: `ech` removed for allowed names, hint addresses learnt,
//! blocked names refused whatever the type.

use super::*;
use crate::inspect::dns::{parse_response, strip_ech};

const TYPE_SVCB: u16 = 64;
const TYPE_HTTPS: u16 = 65;

fn query_of_type(name: &str, qtype: u16) -> Vec<u8> {
    let mut q = dns_query(name);
    let at = q.len() - 4;
    q[at..at + 2].copy_from_slice(&qtype.to_be_bytes());
    q
}

/// The ech parameter used below: key 5, length 9, an ECHConfigList of 7 bytes.
const ECH_PARAM: [u8; 13] = [0, 5, 0, 9, 0, 7, 0xfe, 0x0d, 0, 3, 1, 2, 3];

/// Upstream's answer to an HTTPS query `forwarded`: one ServiceMode record owned by the question, with
/// alpn h2, ipv4hint NORMAL, ech, and ipv6hint 2001:db8::1.
fn https_answer(forwarded: &[u8]) -> Vec<u8> {
    let mut rdata = vec![0, 1, 0, 0, 1, 0, 3, 2, b'h', b'2', 0, 4, 0, 4];
    rdata.extend_from_slice(&NORMAL);
    rdata.extend_from_slice(&ECH_PARAM);
    rdata.extend_from_slice(&[0, 6, 0, 16, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    let mut answer = forwarded.to_vec();
    answer[2] |= 0x80;
    answer[7] = 1;
    answer.extend_from_slice(&[0xc0, 12, 0, 65, 0, 1, 0, 0, 1, 0x2c]);
    answer.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    answer.extend_from_slice(&rdata);
    answer
}

#[test]
fn https_answer_of_an_allowed_name_loses_ech_and_teaches_its_hints() {
    let mut pair = Pair::new();
    pair.udp([198, 18, 53, 53], 53, &query_of_type("www.example.org", TYPE_HTTPS));
    let (flow, forwarded) = pair.up.udp_sent[0].clone();
    let answer = https_answer(&forwarded);
    pair.engine.on_udp_datagram(pair.now, flow, &answer);
    pair.settle();
    let out = pair.take_out();
    let delivered = udp_payload(&out[0]);
    assert_eq!(&delivered[..2], &[0x12, 0x34], "client's id restored");
    assert_eq!(delivered.len(), answer.len() - ECH_PARAM.len());
    assert_eq!(strip_ech(&delivered), Ok(None), "no ech left: {delivered:02x?}");
    assert_eq!(parse_response(&delivered).unwrap().addrs, parse_response(&answer).unwrap().addrs);
    for ip in [IpAddr::from(NORMAL), "2001:db8::1".parse().unwrap()] {
        let names: Vec<&str> = pair.engine.dns_cache.names_for(ip, pair.now).collect();
        assert_eq!(names, ["www.example.org"], "{ip}");
    }
}

#[test]
fn blocked_name_gets_nxdomain_for_https_and_svcb_and_nothing_is_forwarded() {
    let mut pair = Pair::new();
    for qtype in [TYPE_HTTPS, TYPE_SVCB] {
        pair.udp([198, 18, 53, 53], 53, &query_of_type("tracking.intl.miui.com", qtype));
        let out = pair.take_out();
        assert_eq!(out.len(), 1, "type {qtype}: one answer at once");
        assert_eq!(udp_payload(&out[0])[3] & 0x0f, 3, "type {qtype}: NXDOMAIN");
    }
    assert!(pair.up.udp_sent.is_empty(), "nothing forwarded: {:?}", pair.up.udp_sent);
}

/// An answer the ECH removal cannot rewrite (its owner name runs into the removed bytes; found by the `dns` fuzz
/// target) is not handed on with its ECH: the phone gets SERVFAIL.
#[test]
fn an_answer_whose_ech_cannot_be_removed_is_refused_not_passed_on() {
    let mut pair = Pair::new();
    pair.udp([198, 18, 53, 53], 53, &query_of_type("example.com", TYPE_HTTPS));
    let (flow, forwarded) = pair.up.udp_sent[0].clone();
    let mut answer = vec![
        0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70,
        0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00, 0x41, 0x00, 0x01, 0xc0, 0x1c, 0x00, 0x40, 0x00, 0x01, 0x00,
        0x00, 0x01, 0x2c, 0x00, 0x1a, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x03, 0x02, 0x68, 0x34, 0x00, 0x04, 0x00,
        0x04, 0x01, 0x02, 0x03, 0x04, 0x00, 0x05, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
    ];
    answer[..2].copy_from_slice(&forwarded[..2]);
    assert!(parse_response(&answer).is_ok(), "the answer itself parses");
    pair.engine.on_udp_datagram(pair.now, flow, &answer);
    pair.settle();
    let out = pair.take_out();
    let delivered = parse_response(&udp_payload(&out[0])).expect("an answer");
    assert_eq!((delivered.id, delivered.rcode), (0x1234, 2), "SERVFAIL with the client's id");
    assert_eq!(pair.engine.stats().malformed, 1, "counted");
}
