//! HTTPS and SVCB records (RFC 9460, types 65 and 64): their address hints, and removing their `ech`
//! parameter so that a client's TLS handshake keeps the real server name in its SNI.
//!
//! Removing bytes from a DNS message moves everything after them, so every compression pointer is found
//! (question and owner names, and the names inside NS, CNAME, PTR, MX, SOA and SVCB/HTTPS data, the only
//! types whose data may be compressed, RFC 3597 §4) and re-aimed; a pointer into removed bytes, or any
//! length that does not add up, refuses the whole message. Every read is bounded; nothing here panics.

use super::wire::{read_name, Reader, HEADER_LEN};
use super::DnsError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// SVCB record type.
pub(super) const TYPE_SVCB: u16 = 64;
/// HTTPS record type.
pub(super) const TYPE_HTTPS: u16 = 65;
const TYPE_NS: u16 = 2;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_PTR: u16 = 12;
const TYPE_MX: u16 = 15;
const KEY_MANDATORY: u16 = 0;
const KEY_IPV4HINT: u16 = 4;
const KEY_ECH: u16 = 5;
const KEY_IPV6HINT: u16 = 6;
const POINTER_TAG: u8 = 0xC0;

/// One SvcParam of a record: its key, where it starts (at the key) and where its value lies.
struct Param {
    key: u16,
    start: usize,
    value: Range<usize>,
}

/// The SvcParams of an SVCB/HTTPS RDATA at `rdata` in `msg`, in order, checked: each inside the RDATA, keys
/// strictly increasing (RFC 9460 §2.2). AliasMode records (priority 0) give none: their parameters are ignored.
fn params(msg: &[u8], rdata: Range<usize>) -> Result<Vec<Param>, DnsError> {
    let mut reader = Reader::new(msg, rdata.start);
    let priority = reader.u16()?;
    let (_, mut pos) = read_name(msg, reader.pos())?;
    let mut out: Vec<Param> = Vec::new();
    while pos < rdata.end {
        let mut reader = Reader::new(msg, pos);
        let key = reader.u16()?;
        let len = usize::from(reader.u16()?);
        let value = reader.pos()..reader.pos() + len;
        if value.end > rdata.end || out.last().is_some_and(|last| last.key >= key) {
            return Err(DnsError::Malformed);
        }
        out.push(Param { key, start: pos, value: value.clone() });
        pos = value.end;
    }
    if pos != rdata.end {
        return Err(DnsError::Malformed);
    }
    if priority == 0 {
        out.clear();
    }
    Ok(out)
}

/// The `ipv4hint` and `ipv6hint` addresses of an SVCB/HTTPS RDATA. A record whose parameters do not parse, or
/// whose hint is not a whole number of addresses, gives none (it is opaque to the client too).
pub(super) fn hints(msg: &[u8], rdata: Range<usize>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for param in params(msg, rdata).unwrap_or_default() {
        let value = msg.get(param.value).unwrap_or_default();
        match param.key {
            KEY_IPV4HINT if value.len() % 4 == 0 => out.extend(
                value
                    .chunks_exact(4)
                    .filter_map(|c| <[u8; 4]>::try_from(c).ok())
                    .map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            ),
            KEY_IPV6HINT if value.len() % 16 == 0 => out.extend(
                value
                    .chunks_exact(16)
                    .filter_map(|c| <[u8; 16]>::try_from(c).ok())
                    .map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            ),
            _ => {}
        }
    }
    out
}

/// The edits that remove `ech`: byte ranges to cut, 16-bit length fields to lower, and every compression
/// pointer of the message (offset of its first byte); and every name of the message as read, in order, so that
/// the copy can be checked to read the same.
#[derive(Default)]
struct Edits {
    cuts: Vec<Range<usize>>,
    shrink: Vec<(usize, u16)>,
    pointers: Vec<usize>,
    names: Vec<String>,
}

impl Edits {
    /// Notes the name at `start`, and the compression pointer that ends it, if it has one.
    fn name(&mut self, msg: &[u8], start: usize) -> Result<usize, DnsError> {
        let (name, end) = read_name(msg, start)?;
        self.names.push(name);
        let mut pos = start;
        while pos < end {
            let len = *msg.get(pos).ok_or(DnsError::Truncated)?;
            if len & POINTER_TAG == POINTER_TAG {
                self.pointers.push(pos);
                break;
            }
            pos += 1 + usize::from(len);
        }
        Ok(end)
    }

    /// Plans the removal of `ech` from one SVCB/HTTPS record whose RDLENGTH field is at `rdlength_at`; a
    /// `mandatory` list naming `ech` loses that key too (or goes, if it named nothing else).
    fn strip_record(&mut self, msg: &[u8], rdlength_at: usize, rdata: Range<usize>) -> Result<(), DnsError> {
        let params = params(msg, rdata)?;
        let Some(ech) = params.iter().find(|p| p.key == KEY_ECH) else {
            return Ok(());
        };
        let mut removed = ech.value.end - ech.start;
        let mut cuts: Vec<Range<usize>> = Vec::new();
        cuts.push(ech.start..ech.value.end);
        if let Some(mandatory) = params.iter().find(|p| p.key == KEY_MANDATORY) {
            let keys = msg.get(mandatory.value.clone()).ok_or(DnsError::Truncated)?;
            let ech_at: Vec<usize> = keys
                .chunks_exact(2)
                .enumerate()
                .filter(|(_, key)| *key == KEY_ECH.to_be_bytes())
                .map(|(i, _)| mandatory.value.start + 2 * i)
                .collect();
            if !ech_at.is_empty() && ech_at.len() * 2 == keys.len() {
                removed += mandatory.value.end - mandatory.start;
                cuts.push(mandatory.start..mandatory.value.end);
            } else if !ech_at.is_empty() {
                let len = 2 * ech_at.len();
                removed += len;
                self.shrink.push((mandatory.start + 2, u16::try_from(len).map_err(|_| DnsError::Malformed)?));
                cuts.extend(ech_at.into_iter().map(|at| at..at + 2));
            }
        }
        self.shrink.push((rdlength_at, u16::try_from(removed).map_err(|_| DnsError::Malformed)?));
        self.cuts.extend(cuts);
        Ok(())
    }

    /// Where byte `old` of the message lands once the cuts are made; Err if it is cut.
    fn moved(&self, old: usize) -> Result<usize, DnsError> {
        let mut shift = 0;
        for cut in &self.cuts {
            if cut.contains(&old) {
                return Err(DnsError::Malformed);
            }
            if cut.end <= old {
                shift += cut.len();
            }
        }
        Ok(old - shift)
    }
}

/// A copy of the response `msg` with the `ech` parameter removed from every SVCB and HTTPS record (RDATA
/// lengths, a `mandatory` list naming `ech`, and compression pointers after the removed bytes adjusted), or
/// `None` when no record has one. Every section is read; Err if any part of the message does not parse, or if
/// the copy would not read as the same message without `ech`: every name in it must read as before. A name
/// whose labels run into the removed bytes or into a length field that changes would not (found by the `dns`
/// fuzz target, twice).
pub(super) fn strip_ech(msg: &[u8]) -> Result<Option<Vec<u8>>, DnsError> {
    let edits = plan(msg)?;
    if edits.cuts.is_empty() {
        return Ok(None);
    }
    let out = apply(msg, &edits)?;
    match plan(&out) {
        Ok(check) if check.cuts.is_empty() && check.names == edits.names => Ok(Some(out)),
        Ok(_) | Err(_) => Err(DnsError::Malformed),
    }
}

/// Reads every section of `msg` and plans the removal of `ech` from it.
fn plan(msg: &[u8]) -> Result<Edits, DnsError> {
    let mut reader = Reader::new(msg, 4);
    let counts = [reader.u16()?, reader.u16()?, reader.u16()?, reader.u16()?];
    let mut edits = Edits::default();
    let mut reader = Reader::new(msg, HEADER_LEN);
    for _ in 0..counts[0] {
        edits.name(msg, reader.pos())?;
        reader.question()?;
    }
    let records: u32 = counts[1..].iter().map(|&c| u32::from(c)).sum();
    for _ in 0..records {
        edits.name(msg, reader.pos())?;
        let record = reader.record()?;
        let rdata = record.rdata_at..record.rdata_at + record.rdata.len();
        match record.rtype {
            TYPE_NS | TYPE_CNAME | TYPE_PTR => {
                edits.name(msg, rdata.start)?;
            }
            TYPE_MX => {
                edits.name(msg, rdata.start + 2)?;
            }
            TYPE_SOA => {
                let rname = edits.name(msg, rdata.start)?;
                edits.name(msg, rname)?;
            }
            TYPE_SVCB | TYPE_HTTPS => {
                edits.name(msg, rdata.start + 2)?;
                edits.strip_record(msg, rdata.start - 2, rdata)?;
            }
            _ => {}
        }
    }
    edits.cuts.sort_by_key(|cut| cut.start);
    Ok(edits)
}

/// `msg` with `edits` made: the cuts removed, the length fields lowered and the pointers re-aimed.
fn apply(msg: &[u8], edits: &Edits) -> Result<Vec<u8>, DnsError> {
    let mut out = Vec::with_capacity(msg.len());
    let mut pos = 0;
    for cut in &edits.cuts {
        out.extend_from_slice(msg.get(pos..cut.start).ok_or(DnsError::Malformed)?);
        pos = cut.end;
    }
    out.extend_from_slice(msg.get(pos..).ok_or(DnsError::Truncated)?);
    for &(field, by) in &edits.shrink {
        let at = edits.moved(field)?;
        let bytes = out.get_mut(at..at + 2).ok_or(DnsError::Malformed)?;
        let len = u16::from_be_bytes([bytes[0], bytes[1]]).checked_sub(by).ok_or(DnsError::Malformed)?;
        bytes.copy_from_slice(&len.to_be_bytes());
    }
    for &pointer in &edits.pointers {
        let at = edits.moved(pointer)?;
        let bytes = out.get_mut(at..at + 2).ok_or(DnsError::Malformed)?;
        let target = usize::from(u16::from_be_bytes([bytes[0] & !POINTER_TAG, bytes[1]]));
        let target = u16::try_from(edits.moved(target)?).map_err(|_| DnsError::Malformed)?;
        bytes.copy_from_slice(&(target | u16::from_be_bytes([POINTER_TAG, 0])).to_be_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{parse_response, strip_ech};
    use super::*;
    use proptest::prelude::*;
    use simple_dns::rdata::{RData, SVCParam, SVCB};
    use simple_dns::{Name, Packet, PacketFlag, Question, ResourceRecord, CLASS, QTYPE, TYPE};

    /// An HTTPS answer for `crypto.cloudflare.com` laid out as Cloudflare serves it: priority 1, target ".",
    /// alpn h3,h2, ipv4hint 162.159.137.85 and 162.159.138.85, an `ech` ECHConfigList (version 0xfe0d, X25519,
    /// public name cloudflare-ech.com), ipv6hint 2606:4700:7::a29f:8955 and ::a29f:8a55; the owner is a
    /// pointer to the question; EDNS OPT in the additional section.
    const CLOUDFLARE_HTTPS: &[u8] = &[
        0x5a, 0x3c, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x06, 0x63, 0x72, 0x79, 0x70, 0x74,
        0x6f, 0x0a, 0x63, 0x6c, 0x6f, 0x75, 0x64, 0x66, 0x6c, 0x61, 0x72, 0x65, 0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00,
        0x41, 0x00, 0x01, 0xc0, 0x0c, 0x00, 0x41, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x88, 0x00, 0x01, 0x00,
        0x00, 0x01, 0x00, 0x06, 0x02, 0x68, 0x33, 0x02, 0x68, 0x32, 0x00, 0x04, 0x00, 0x08, 0xa2, 0x9f, 0x89, 0x55,
        0xa2, 0x9f, 0x8a, 0x55, 0x00, 0x05, 0x00, 0x47, 0x00, 0x45, 0xfe, 0x0d, 0x00, 0x41, 0x2a, 0x00, 0x20, 0x00,
        0x20, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a, 0x4b, 0x4c, 0x4d, 0x4e, 0x4f, 0x50, 0x51,
        0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f, 0x60, 0x00, 0x04, 0x00,
        0x01, 0x00, 0x01, 0x00, 0x12, 0x63, 0x6c, 0x6f, 0x75, 0x64, 0x66, 0x6c, 0x61, 0x72, 0x65, 0x2d, 0x65, 0x63,
        0x68, 0x2e, 0x63, 0x6f, 0x6d, 0x00, 0x00, 0x00, 0x06, 0x00, 0x20, 0x26, 0x06, 0x47, 0x00, 0x00, 0x07, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0xa2, 0x9f, 0x89, 0x55, 0x26, 0x06, 0x47, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0xa2, 0x9f, 0x8a, 0x55, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    /// Offset and length (key and length fields included) of the `ech` parameter in [`CLOUDFLARE_HTTPS`].
    const CLOUDFLARE_ECH: Range<usize> = 76..151;

    /// Found by the `dns` fuzz target: the answer's owner is a pointer to a name inside the question whose
    /// labels run on into the record's own RDATA, across the `ech` bytes; removing them changed the name and the
    /// copy no longer parsed. Such a message is refused, never handed on broken.
    #[test]
    fn a_name_running_into_the_removed_bytes_is_refused() {
        let msg: &[u8] = &[
            0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70,
            0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d, 0x00, 0x00, 0x41, 0x00, 0x01, 0xc0, 0x1c, 0x00, 0x40, 0x00, 0x01, 0x00,
            0x00, 0x01, 0x2c, 0x00, 0x1a, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x03, 0x02, 0x68, 0x34, 0x00, 0x04, 0x00,
            0x04, 0x01, 0x02, 0x03, 0x04, 0x00, 0x05, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
        ];
        assert!(plan(msg).and_then(|edits| apply(msg, &edits)).is_ok(), "the unchecked copy is made");
        assert_eq!(strip_ech(msg), Err(DnsError::Malformed));
    }

    /// Found by the `dns` fuzz target in CI after the case above was fixed: an A record's owner is a pointer
    /// into an earlier record whose labels run across the HTTPS record's RDLENGTH field. The copy parses, but
    /// lowering that length renamed the A record's owner (`...\026` became `...\018`), so a hint or address
    /// would be filed under another name. Refused.
    #[test]
    fn a_name_reading_a_length_that_changes_is_refused() {
        use base64::{engine::general_purpose::STANDARD, Engine as _};
        let msg = STANDARD
            .decode("EjSBgAABAAEAAQAAB2X4YRE0bGUDY29tAG5tAAHAHAABAAEA7wAmAATerQAAAQHADABBAAEAAAEsABoAAQAAAQALAmgxAAQABEECAwQABQAEAcDU1DE=")
            .unwrap();
        let edits = plan(&msg).unwrap();
        let copy = apply(&msg, &edits).unwrap();
        let names = plan(&copy).expect("the unchecked copy parses").names;
        assert_ne!(names, edits.names, "but reads other names");
        assert_eq!(strip_ech(&msg), Err(DnsError::Malformed));
    }

    #[test]
    fn ech_is_cut_from_a_cloudflare_answer_and_lengths_fixed() {
        let stripped = strip_ech(CLOUDFLARE_HTTPS).unwrap().expect("the answer has ech");
        let mut expected = CLOUDFLARE_HTTPS[..CLOUDFLARE_ECH.start].to_vec();
        expected.extend_from_slice(&CLOUDFLARE_HTTPS[CLOUDFLARE_ECH.end..]);
        // RDLENGTH at 49..51: 0x88 = 136 less the 75 bytes of the parameter.
        expected[49..51].copy_from_slice(&(136u16 - 75).to_be_bytes());
        assert_eq!(stripped, expected);
        // An independent reader sees the same record without ech.
        let packet = Packet::parse(&stripped).unwrap();
        let RData::HTTPS(https) = &packet.answers[0].rdata else { panic!("{:?}", packet.answers[0]) };
        let keys: Vec<u16> = https.0.iter_params().map(SVCParam::key_code).collect();
        assert_eq!(keys, [1, 4, 6]);
        assert!(packet.opt().is_some(), "OPT still read after the record");
        assert_eq!(strip_ech(&stripped), Ok(None), "nothing left to strip");
    }

    #[test]
    fn hints_are_read_like_addresses() {
        for msg in [CLOUDFLARE_HTTPS.to_vec(), strip_ech(CLOUDFLARE_HTTPS).unwrap().unwrap()] {
            let answer = parse_response(&msg).unwrap();
            let addrs: Vec<(&str, String, u32)> =
                answer.addrs.iter().map(|(owner, ip, ttl)| (owner.as_str(), ip.to_string(), *ttl)).collect();
            let owner = "crypto.cloudflare.com";
            assert_eq!(
                addrs,
                [
                    (owner, "162.159.137.85".to_owned(), 300),
                    (owner, "162.159.138.85".to_owned(), 300),
                    (owner, "2606:4700:7::a29f:8955".to_owned(), 300),
                    (owner, "2606:4700:7::a29f:8a55".to_owned(), 300),
                ]
            );
        }
    }

    /// A compressed response whose names point behind the removed bytes: a CNAME to a CDN name, two HTTPS
    /// records of that name with `ech` (one also `mandatory=ech,alpn`), an alias-mode SVCB record, and in the
    /// additional section A records owned by the CDN name and by the SVCB target, and an A and AAAA of a name
    /// first spelled out after the removed bytes; compressed by simple-dns.
    fn compressed_chain() -> Vec<u8> {
        let question = Name::new_unchecked("www.example.org");
        let cdn = Name::new_unchecked("www.example.org.cdn.example.net");
        let target = Name::new_unchecked("pool.cdn.example.net");
        let mut packet = Packet::new_reply(0x0707);
        packet.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
        packet.questions.push(Question::new(question.clone(), QTYPE::TYPE(TYPE::HTTPS), CLASS::IN.into(), false));
        let record = |name: &Name<'static>, rdata| ResourceRecord::new(name.clone(), CLASS::IN, 60, rdata);
        packet.answers.push(record(&question, RData::CNAME(simple_dns::rdata::CNAME(cdn.clone()))));
        let with_ech = |priority, mandatory: bool| {
            let mut svcb = SVCB::new(priority, Name::new_unchecked("."));
            svcb.set_alpn(&["h2".try_into().unwrap()]);
            svcb.set_ipv4hint(&[0xc633_0a01 + u32::from(priority)]);
            svcb.set_param(SVCParam::Ech(vec![0xfe, 0x0d, 0, 3, 1, 2, 3].into()));
            if mandatory {
                svcb.set_mandatory([1, 5].into_iter());
            }
            svcb
        };
        packet.answers.push(record(&cdn, RData::HTTPS(simple_dns::rdata::HTTPS(with_ech(1, false)))));
        packet.answers.push(record(&cdn, RData::HTTPS(simple_dns::rdata::HTTPS(with_ech(2, true)))));
        packet.answers.push(record(&cdn, RData::SVCB(SVCB::new(0, target.clone()))));
        packet.additional_records.push(record(&cdn, RData::A(simple_dns::rdata::A { address: 0xc633_0a09 })));
        packet.additional_records.push(record(&target, RData::A(simple_dns::rdata::A { address: 0xc633_0a0a })));
        // Spelled out after the cut, then pointed to: a pointer whose target moves.
        let late = Name::new_unchecked("late.example.com");
        packet.additional_records.push(record(&late, RData::A(simple_dns::rdata::A { address: 0xc633_0a0b })));
        packet.additional_records.push(record(&late, RData::AAAA(simple_dns::rdata::AAAA { address: 1 })));
        packet.build_bytes_vec_compressed().unwrap()
    }

    #[test]
    fn pointers_behind_the_cut_are_re_aimed_and_mandatory_loses_ech() {
        let msg = compressed_chain();
        let before = Packet::parse(&msg).unwrap();
        assert!(msg.len() < before.build_bytes_vec().unwrap().len(), "the test message is compressed");
        let stripped = strip_ech(&msg).unwrap().expect("has ech");
        let RData::HTTPS(https) = &before.answers[1].rdata else { panic!("{:?}", before.answers[1]) };
        let Some(SVCParam::Ech(ech)) = https.0.get_param(5) else { panic!("{https:?}") };
        // Each ech parameter: key, length, then the ECHConfigList with its own 2-byte length.
        assert_eq!(stripped.len(), msg.len() - 2 * (6 + ech.len()) - 2, "two ech params and one mandatory key");
        let after = Packet::parse(&stripped).unwrap();
        let names =
            |p: &Packet| p.answers.iter().chain(&p.additional_records).map(|r| r.name.to_string()).collect::<Vec<_>>();
        assert_eq!(names(&after), names(&before));
        for (i, record) in after.answers.iter().enumerate().skip(1).take(2) {
            let RData::HTTPS(https) = &record.rdata else { panic!("{record:?}") };
            let params: Vec<&SVCParam> = https.0.iter_params().collect();
            assert!(params.iter().all(|p| p.key_code() != 5), "record {i}: {params:?}");
            if i == 2 {
                assert_eq!(params[0], &SVCParam::Mandatory([1].into_iter().collect()));
            }
        }
        assert_eq!(after.answers[3], before.answers[3], "alias-mode record unchanged");
        assert_eq!(after.additional_records, before.additional_records);
        assert_eq!(parse_response(&stripped).unwrap().addrs, parse_response(&msg).unwrap().addrs);
    }

    /// An HTTPS record with `ech` listed as its only `mandatory` key, then names first spelled out after it (an A
    /// record's owner) that the NS, MX and SOA records after it point to, compressed by simple-dns.
    fn ech_then_server_names() -> Vec<u8> {
        let question = Name::new_unchecked("example.org");
        let late = Name::new_unchecked("ns1.late.example.com");
        let mut packet = Packet::new_reply(0x0909);
        packet.questions.push(Question::new(question.clone(), QTYPE::TYPE(TYPE::HTTPS), CLASS::IN.into(), false));
        let record = |name: &Name<'static>, rdata| ResourceRecord::new(name.clone(), CLASS::IN, 60, rdata);
        let mut svcb = SVCB::new(1, Name::new_unchecked("."));
        svcb.set_mandatory([5].into_iter());
        svcb.set_param(SVCParam::Ech(vec![0xfe, 0x0d, 0, 3, 1, 2, 3].into()));
        packet.answers.push(record(&question, RData::HTTPS(simple_dns::rdata::HTTPS(svcb))));
        packet.answers.push(record(&late, RData::A(simple_dns::rdata::A { address: 0xc633_0a0c })));
        let mx = simple_dns::rdata::MX { preference: 10, exchange: Name::new_unchecked("mail.late.example.com") };
        packet.answers.push(record(&question, RData::MX(mx)));
        packet.name_servers.push(record(&question, RData::NS(simple_dns::rdata::NS(late.clone()))));
        let soa = simple_dns::rdata::SOA {
            mname: late.clone(),
            rname: Name::new_unchecked("hostmaster.late.example.com"),
            serial: 1,
            refresh: 2,
            retry: 3,
            expire: 4,
            minimum: 5,
        };
        packet.name_servers.push(record(&question, RData::SOA(soa)));
        packet.build_bytes_vec_compressed().unwrap()
    }

    #[test]
    fn a_mandatory_list_of_only_ech_goes_and_server_names_behind_the_cut_are_re_aimed() {
        let msg = ech_then_server_names();
        let before = Packet::parse(&msg).unwrap();
        let stripped = strip_ech(&msg).unwrap().expect("has ech");
        // The ech parameter (key, length, the list's own length, 7 bytes) and the mandatory parameter (key,
        // length, one key) are gone.
        assert_eq!(stripped.len(), msg.len() - (6 + 7) - (4 + 2));
        let after = Packet::parse(&stripped).unwrap();
        let RData::HTTPS(https) = &after.answers[0].rdata else { panic!("{:?}", after.answers[0]) };
        assert_eq!(https.0.iter_params().count(), 0, "no mandatory list left naming nothing: {https:?}");
        assert_eq!(after.answers[1..], before.answers[1..], "the A and MX records read as before");
        assert_eq!(after.name_servers, before.name_servers, "the NS and SOA records read as before");
    }

    #[test]
    fn ech_is_cut_from_the_front_of_a_mandatory_list() {
        let mut svcb = SVCB::new(1, Name::new_unchecked("."));
        svcb.set_mandatory([5, 6].into_iter());
        svcb.set_param(SVCParam::Ech(vec![0xfe, 0x0d, 0, 3, 1, 2, 3].into()));
        svcb.set_ipv6hint(&[1]);
        let name = Name::new_unchecked("example.org");
        let mut packet = Packet::new_reply(1);
        packet.questions.push(Question::new(name.clone(), QTYPE::TYPE(TYPE::HTTPS), CLASS::IN.into(), false));
        packet.answers.push(ResourceRecord::new(name, CLASS::IN, 60, RData::HTTPS(simple_dns::rdata::HTTPS(svcb))));
        let stripped = strip_ech(&packet.build_bytes_vec_compressed().unwrap()).unwrap().expect("has ech");
        let after = Packet::parse(&stripped).unwrap();
        let RData::HTTPS(https) = &after.answers[0].rdata else { panic!("{:?}", after.answers[0]) };
        let params: Vec<&SVCParam> = https.0.iter_params().collect();
        assert_eq!(params[0], &SVCParam::Mandatory([6].into_iter().collect()), "{params:?}");
        assert_eq!(params.len(), 2, "mandatory and ipv6hint: {params:?}");
    }

    /// A hint whose length is not a whole number of addresses is opaque to the client, and gives none here.
    #[test]
    fn a_hint_of_a_partial_address_gives_none() {
        let mut msg = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        msg.extend_from_slice(b"\x07example\x03org\x00\x00\x41\x00\x01");
        msg.extend_from_slice(&[0xc0, 12, 0, 0x41, 0, 1, 0, 0, 0, 60]);
        // Priority 1, target ".", ipv4hint of 5 bytes, ipv6hint of 17.
        let rdata = [&[0, 1, 0][..], &[0, 4, 0, 5, 1, 2, 3, 4, 5], &[0, 6, 0, 17], &[7; 17]].concat();
        msg.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        msg.extend_from_slice(&rdata);
        assert_eq!(parse_response(&msg).unwrap().addrs, []);
        // The same lengths less the odd byte give one address each.
        let whole = [&[0, 1, 0][..], &[0, 4, 0, 4, 1, 2, 3, 4], &[0, 6, 0, 16], &[7; 16]].concat();
        let at = msg.len() - rdata.len() - 2;
        msg.truncate(at);
        msg.extend_from_slice(&(whole.len() as u16).to_be_bytes());
        msg.extend_from_slice(&whole);
        assert_eq!(parse_response(&msg).unwrap().addrs.len(), 2);
    }

    /// A CNAME whose target is spelled out in full, right before a record whose owner is a pointer to a name
    /// behind the cut: the pointer is re-aimed once (read as part of the CNAME's target too, it would be twice).
    #[test]
    fn a_pointer_right_after_a_name_spelled_out_in_full_is_re_aimed_once() {
        let question = Name::new_unchecked("example.org");
        let late = Name::new_unchecked("late.example.com");
        let mut packet = Packet::new_reply(0x0b0b);
        packet.questions.push(Question::new(question.clone(), QTYPE::TYPE(TYPE::HTTPS), CLASS::IN.into(), false));
        let record = |name: &Name<'static>, rdata| ResourceRecord::new(name.clone(), CLASS::IN, 60, rdata);
        let mut svcb = SVCB::new(1, Name::new_unchecked("."));
        svcb.set_param(SVCParam::Ech(vec![0xfe, 0x0d, 0, 3, 1, 2, 3].into()));
        packet.answers.push(record(&question, RData::HTTPS(simple_dns::rdata::HTTPS(svcb))));
        packet.answers.push(record(&late, RData::A(simple_dns::rdata::A { address: 0xc633_0a0d })));
        let spelled = simple_dns::rdata::CNAME(Name::new_unchecked("cname.target.zz"));
        packet.answers.push(record(&question, RData::CNAME(spelled)));
        packet.answers.push(record(&late, RData::A(simple_dns::rdata::A { address: 0xc633_0a0e })));
        let msg = packet.build_bytes_vec_compressed().unwrap();
        let before = Packet::parse(&msg).unwrap();
        let stripped = strip_ech(&msg).unwrap().expect("has ech");
        let after = Packet::parse(&stripped).unwrap();
        assert_eq!(after.answers[1..], before.answers[1..]);
    }

    #[test]
    fn answers_without_ech_are_left_alone() {
        let mut no_ech = SVCB::new(1, Name::new_unchecked("."));
        no_ech.set_ipv6hint(&[1]);
        let mut packet = Packet::new_reply(1);
        let name = Name::new_unchecked("example.org");
        packet.questions.push(Question::new(name.clone(), QTYPE::TYPE(TYPE::SVCB), CLASS::IN.into(), false));
        packet.answers.push(ResourceRecord::new(name, CLASS::IN, 60, RData::SVCB(no_ech)));
        let msg = packet.build_bytes_vec_compressed().unwrap();
        assert_eq!(strip_ech(&msg), Ok(None));
        assert_eq!(parse_response(&msg).unwrap().addrs[0].1, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn malformed_records_are_refused_and_give_no_hints() {
        // Parameter keys out of order: ech (5) before ipv4hint (4).
        let mut swapped = CLOUDFLARE_HTTPS.to_vec();
        swapped[67] = 5;
        assert_eq!(strip_ech(&swapped), Err(DnsError::Malformed));
        let answer = parse_response(&swapped).unwrap();
        assert!(answer.addrs.is_empty(), "{:?}", answer.addrs);
        // Every prefix is refused (the message ends inside a section it announces).
        for len in 0..CLOUDFLARE_HTTPS.len() {
            assert!(strip_ech(&CLOUDFLARE_HTTPS[..len]).is_err(), "prefix {len}");
        }
    }

    proptest! {
        /// Any mutation of real answers is either refused or stripped into a message that still parses.
        #[test]
        fn mutated_answers_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
            which in any::<bool>(),
        ) {
            let mut msg = if which { CLOUDFLARE_HTTPS.to_vec() } else { compressed_chain() };
            for (at, byte) in flips {
                let at = at % msg.len();
                msg[at] = byte;
            }
            msg.truncate(cut % (msg.len() + 1));
            let _ = parse_response(&msg);
            if let Ok(Some(stripped)) = strip_ech(&msg) {
                prop_assert!(stripped.len() < msg.len());
                prop_assert!(strip_ech(&stripped).is_ok());
            }
        }
    }
}
