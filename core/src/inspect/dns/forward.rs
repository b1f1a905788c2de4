//! What a forwarding resolver needs beyond reading names: the question a message is about (to match an answer
//! to its query), the truncation bit, the client's UDP size limit (EDNS(0), RFC 6891) and a correctly truncated
//! answer for a client whose answer does not fit (RFC 1035 §4.2.1, RFC 2181 §9).

use super::wire::{Header, Reader, HEADER_LEN};
use super::DnsError;

/// TC: the message was truncated (RFC 1035 §4.1.1).
const TC: u16 = 0x0200;
/// The OPT pseudo-record type of EDNS(0) (RFC 6891 §6.1.1).
const TYPE_OPT: u16 = 41;
/// The UDP payload every DNS client accepts (RFC 1035 §2.3.4).
pub const MIN_UDP_PAYLOAD: usize = 512;

/// The first question of a message: what an answer must echo to be accepted for a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionKey {
    /// The name, normalised (lowercase presentation form), so comparing keys ignores letter case.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
}

/// The first question of a query or response.
pub fn question_key(msg: &[u8]) -> Result<QuestionKey, DnsError> {
    let header = Header::parse(msg)?;
    if header.qdcount == 0 {
        return Err(DnsError::NoQuestion);
    }
    let q = Reader::new(msg, HEADER_LEN).question()?;
    Ok(QuestionKey { name: q.name, qtype: q.qtype, qclass: q.qclass })
}

/// True if `msg` is a response (QR set, OPCODE QUERY) with id `id` whose first question is `question`: the only
/// messages a forwarder may take as the answer to the query it sent under that id.
pub fn is_answer_to(msg: &[u8], id: u16, question: &QuestionKey) -> bool {
    let Ok(header) = Header::parse(msg) else {
        return false;
    };
    header.is_response()
        && header.opcode() == 0
        && header.id == id
        && question_key(msg).is_ok_and(|key| key == *question)
}

/// True if the TC bit is set: the sender cut the message short, the whole of it only comes over TCP.
pub fn is_truncated(msg: &[u8]) -> bool {
    Header::parse(msg).is_ok_and(|h| h.flags & TC != 0)
}

/// The largest UDP answer the sender of `query` accepts: the payload size of its EDNS(0) OPT record, never
/// below 512; 512 without one (or if the query cannot be read that far).
pub fn udp_payload_limit(query: &[u8]) -> usize {
    match find_opt(query) {
        Ok(Some((_, class))) => usize::from(class).max(MIN_UDP_PAYLOAD),
        _ => MIN_UDP_PAYLOAD,
    }
}

/// The answer cut to its header and question section with TC set (and its EDNS OPT record, if it had one), so
/// that a client whose answer did not fit retries over TCP. Id, flags and RCODE are kept.
pub fn truncated_response(answer: &[u8]) -> Result<Vec<u8>, DnsError> {
    let header = Header::parse(answer)?;
    let mut reader = Reader::new(answer, HEADER_LEN);
    for _ in 0..header.qdcount {
        reader.question()?;
    }
    let questions = answer.get(..reader.pos()).ok_or(DnsError::Truncated)?;
    let opt = find_opt(answer)?.map(|(range, _)| range);
    let mut out = Vec::with_capacity(questions.len() + 11);
    out.extend_from_slice(questions);
    let flags = header.flags | TC;
    out.get_mut(2..4).ok_or(DnsError::Truncated)?.copy_from_slice(&flags.to_be_bytes());
    // ANCOUNT, NSCOUNT, ARCOUNT.
    let arcount = u16::from(opt.is_some());
    out.get_mut(6..12).ok_or(DnsError::Truncated)?.copy_from_slice(&[0, 0, 0, 0, 0, arcount as u8]);
    if let Some(range) = opt {
        out.extend_from_slice(answer.get(range).ok_or(DnsError::Truncated)?);
    }
    Ok(out)
}

/// The byte range of the OPT record in the additional section and its CLASS (the UDP payload size), if any.
fn find_opt(msg: &[u8]) -> Result<Option<(std::ops::Range<usize>, u16)>, DnsError> {
    let header = Header::parse(msg)?;
    let mut counts = Reader::new(msg, 8);
    let (nscount, arcount) = (counts.u16()?, counts.u16()?);
    let mut reader = Reader::new(msg, HEADER_LEN);
    for _ in 0..header.qdcount {
        reader.question()?;
    }
    for _ in 0..u32::from(header.ancount) + u32::from(nscount) {
        reader.record()?;
    }
    for _ in 0..arcount {
        let start = reader.pos();
        let record = reader.record()?;
        if record.rtype == TYPE_OPT {
            return Ok(Some((start..reader.pos(), record.class)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (type A, class IN) with id 0x1234, and an EDNS OPT record of `edns` bytes if given.
    fn query(name: &str, edns: Option<u16>) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        if let Some(size) = edns {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&size.to_be_bytes());
            q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        q
    }

    /// The OPT record is found after the records of every section before it, the authority section's included.
    #[test]
    fn the_payload_size_is_read_past_an_authority_record() {
        let mut q = query("example.org", Some(1400));
        q[7] = 1; // ANCOUNT 1
        q[9] = 1; // NSCOUNT 1
        let opt_at = q.len() - 11;
        // An answer and an authority record, each owned by the root: type A, class IN, TTL 0, four bytes.
        let record = [0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 192, 0, 2, 1];
        let records = [record, record].concat();
        q.splice(opt_at..opt_at, records);
        assert_eq!(udp_payload_limit(&q), 1400);
    }

    /// The response to `q` with `n` A records (and the query's OPT record after them).
    fn answer(q: &[u8], n: u8) -> Vec<u8> {
        let opt_at = q.len() - if q[11] == 1 { 11 } else { 0 };
        let mut a = q[..opt_at].to_vec();
        a[2] |= 0x80;
        a[7] = n;
        for i in 0..n {
            a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 1, i]);
        }
        a.extend_from_slice(&q[opt_at..]);
        a
    }

    #[test]
    fn answer_must_echo_id_and_question_in_any_case() {
        let q = query("www.example.org", None);
        let key = question_key(&q).expect("key");
        assert_eq!(key, QuestionKey { name: "www.example.org".into(), qtype: 1, qclass: 1 });
        let a = answer(&q, 1);
        assert!(is_answer_to(&a, 0x1234, &key));
        assert!(!is_answer_to(&a, 0x1235, &key), "wrong id");
        assert!(!is_answer_to(&q, 0x1234, &key), "a query is no answer");
        let upper = answer(&query("WWW.Example.ORG", None), 1);
        assert!(is_answer_to(&upper, 0x1234, &key), "names compare case-insensitively");
        let other = answer(&query("www.example.com", None), 1);
        assert!(!is_answer_to(&other, 0x1234, &key), "wrong name");
        let mut aaaa = a.clone();
        aaaa[12 + 17] = 28;
        assert!(!is_answer_to(&aaaa, 0x1234, &key), "wrong type");
        let mut chaos = a.clone();
        chaos[12 + 19] = 3;
        assert!(!is_answer_to(&chaos, 0x1234, &key), "wrong class");
        for len in 0..12 + 21 {
            assert!(!is_answer_to(&a[..len], 0x1234, &key), "a prefix of {len} bytes");
        }
    }

    #[test]
    fn udp_limit_comes_from_edns() {
        assert_eq!(udp_payload_limit(&query("a.example", None)), 512);
        assert_eq!(udp_payload_limit(&query("a.example", Some(1232))), 1232);
        assert_eq!(udp_payload_limit(&query("a.example", Some(100))), 512, "never below 512");
        assert_eq!(udp_payload_limit(&[1, 2, 3]), 512);
    }

    #[test]
    fn truncated_response_keeps_question_and_opt_and_sets_tc() {
        let q = query("big.example.org", Some(1232));
        let full = answer(&q, 200);
        assert!(!is_truncated(&full));
        let cut = truncated_response(&full).expect("cut");
        assert!(is_truncated(&cut));
        assert!(cut.len() < 60, "{} bytes", cut.len());
        let key = question_key(&q).expect("key");
        assert!(is_answer_to(&cut, 0x1234, &key));
        assert_eq!(&cut[6..12], &[0, 0, 0, 0, 0, 1], "no answers, the OPT record kept");
        assert_eq!(udp_payload_limit(&cut), 1232);
        let plain = truncated_response(&answer(&query("big.example.org", None), 3)).expect("cut");
        assert_eq!(&plain[6..12], &[0, 0, 0, 0, 0, 0]);
        assert_eq!(plain.len(), 12 + 17 + 4);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = question_key(&bytes);
            let _ = udp_payload_limit(&bytes);
            let _ = truncated_response(&bytes);
            let _ = is_truncated(&bytes);
        }
    }
}
