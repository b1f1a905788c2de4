//! DNS messages (RFC 1035): reading a client's query, answering it for a blocked name, and reading
//! an upstream response for policy and the IP→names cache.
//!
//! Names are returned lowercase without the trailing dot, in presentation form (RFC 1035 §5.1):
//! bytes outside printable ASCII and `.`/`\` inside a label are escaped, so a crafted label can
//! never read as a different name. The root is `""`. No function here panics on any input.

mod forward;
mod svcb;
mod wire;

pub use forward::{
    is_answer_to, is_truncated, question_key, truncated_response, udp_payload_limit, QuestionKey, MIN_UDP_PAYLOAD,
};

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wire::{Header, Reader, HEADER_LEN};

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const RCODE_NOERROR: u8 = 0;
const RCODE_SERVFAIL: u8 = 2;
const RCODE_NXDOMAIN: u8 = 3;
/// A compression pointer to offset 12, where the echoed question name starts in our responses.
const POINTER_TO_QUESTION: [u8; 2] = [0xC0, 0x0C];
/// RFC 2181 §8: a TTL with the top bit set is treated as zero.
const MAX_TTL: u32 = 0x7FFF_FFFF;

/// TTL, in seconds, of the records in answers for blocked names.
pub const BLOCK_TTL: u32 = 60;

/// A parsed DNS query: its id, first question's name (lowercase, no trailing dot) and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    /// The message id.
    pub id: u16,
    /// The first question's name, normalised (see the module docs).
    pub name: String,
    /// The first question's type (1 = A, 28 = AAAA, 65 = HTTPS, …), any value accepted.
    pub qtype: u16,
}

/// Why a DNS message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DnsError {
    /// The message ends before a header, name or record it announces.
    Truncated,
    /// A name or record is invalid: bad compression pointer, over-long name or label, reserved
    /// label type, wrong RDATA length.
    Malformed,
    /// A query was expected but the QR bit is set.
    NotAQuery,
    /// A response was expected but the QR bit is clear.
    NotAResponse,
    /// The query has no question.
    NoQuestion,
    /// The query's OPCODE is not QUERY (0): NOTIFY, UPDATE and others are not answered here.
    UnsupportedOpcode,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsError::Truncated => "DNS message truncated",
            DnsError::Malformed => "malformed DNS message",
            DnsError::NotAQuery => "DNS message is not a query",
            DnsError::NotAResponse => "DNS message is not a response",
            DnsError::NoQuestion => "DNS query has no question",
            DnsError::UnsupportedOpcode => "DNS opcode is not QUERY",
        })
    }
}

impl std::error::Error for DnsError {}

/// Reads the id and first question of a standard query (QR = 0, OPCODE = QUERY, at least one
/// question). Later questions and the other sections are not read.
pub fn parse_query(msg: &[u8]) -> Result<DnsQuery, DnsError> {
    let query = Query::parse(msg)?;
    Ok(DnsQuery { id: query.header.id, name: query.question.name, qtype: query.question.qtype })
}

/// How blocked names are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAnswer {
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// NOERROR with the unspecified address: A → `0.0.0.0`, AAAA → `::`, any other type (or a
    /// class other than IN) → no answer records (NODATA). Records carry [`BLOCK_TTL`].
    Unspecified,
}

/// Builds the answer for a query whose name is blocked.
///
/// Copies the id, the RD and CD flags and the first question byte for byte (so its letter case,
/// used by resolvers as 0x20 entropy, is kept); sets QR and RA; RCODE is NXDOMAIN or NOERROR as
/// `style` says. The query must pass [`parse_query`]'s checks.
pub fn blocked_response(query: &[u8], style: BlockAnswer) -> Result<Vec<u8>, DnsError> {
    let query = Query::parse(query)?;
    match style {
        BlockAnswer::NxDomain => Ok(query.respond(RCODE_NXDOMAIN, None)),
        BlockAnswer::Unspecified => {
            let q = &query.question;
            let addr = match (q.qtype, q.qclass) {
                (TYPE_A, CLASS_IN) => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                (TYPE_AAAA, CLASS_IN) => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
                _ => None,
            };
            Ok(query.respond(RCODE_NOERROR, addr))
        }
    }
}

/// Builds a SERVFAIL answer to a query (e.g. when the upstream resolver cannot be reached), with
/// the same copying rules as [`blocked_response`].
pub fn servfail_response(query: &[u8]) -> Result<Vec<u8>, DnsError> {
    Ok(Query::parse(query)?.respond(RCODE_SERVFAIL, None))
}

/// Rewrites the 16-bit id of a DNS message in place (forwarder uses its own ids). Err if shorter
/// than 12 bytes.
pub fn set_id(msg: &mut [u8], id: u16) -> Result<(), DnsError> {
    if msg.len() < HEADER_LEN {
        return Err(DnsError::Truncated);
    }
    match msg.get_mut(..2) {
        Some(bytes) => {
            bytes.copy_from_slice(&id.to_be_bytes());
            Ok(())
        }
        None => Err(DnsError::Truncated),
    }
}

/// The id of a DNS message, if it has at least the two id bytes.
pub fn message_id(msg: &[u8]) -> Option<u16> {
    match *msg {
        [a, b, ..] => Some(u16::from_be_bytes([a, b])),
        _ => None,
    }
}

/// What a DNS response says, for policy and the IP→names cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The message id.
    pub id: u16,
    /// The 4-bit header RCODE (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN…); EDNS extended bits not read.
    pub rcode: u8,
    /// First question name, normalised; `None` when the response has no question.
    pub question: Option<String>,
    /// (alias, canonical target, ttl) of the class-IN CNAME answer records, in answer order.
    pub cnames: Vec<(String, String, u32)>,
    /// (owner name, address, ttl) of the class-IN A and AAAA answer records and of the `ipv4hint`/`ipv6hint`
    /// addresses of the class-IN HTTPS and SVCB answer records (RFC 9460), in answer order.
    pub addrs: Vec<(String, IpAddr, u32)>,
}

impl DnsAnswer {
    /// Every name in the chain: question, all cname aliases and targets, deduplicated, in order.
    pub fn chain_names(&self) -> Vec<&str> {
        let mut seen = HashSet::new();
        self.question
            .iter()
            .map(String::as_str)
            .chain(self.cnames.iter().flat_map(|(alias, target, _)| [alias.as_str(), target.as_str()]))
            .filter(|name| seen.insert(*name))
            .collect()
    }

    /// The CNAME path that starts at the question: the question, its target, that target's
    /// target, and so on (the first CNAME of each alias is followed; a loop ends the path).
    /// Empty when there is no question.
    pub fn question_path(&self) -> Vec<&str> {
        let mut next: HashMap<&str, &str> = HashMap::new();
        for (alias, target, _) in &self.cnames {
            next.entry(alias.as_str()).or_insert(target.as_str());
        }
        let mut path: Vec<&str> = Vec::new();
        let mut current = self.question.as_deref();
        while let Some(name) = current {
            if path.contains(&name) {
                break;
            }
            path.push(name);
            current = next.remove(name);
        }
        path
    }
}

/// Reads a response (QR = 1): the first question name, the A, AAAA and CNAME records of the answer
/// section, and the address hints of its HTTPS and SVCB records. Records of other types or classes are
/// skipped; the authority and additional sections are not read.
pub fn parse_response(msg: &[u8]) -> Result<DnsAnswer, DnsError> {
    let header = Header::parse(msg)?;
    if !header.is_response() {
        return Err(DnsError::NotAResponse);
    }
    let mut reader = Reader::new(msg, HEADER_LEN);
    let mut question = None;
    for _ in 0..header.qdcount {
        let q = reader.question()?;
        question.get_or_insert(q.name);
    }
    let mut cnames = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..header.ancount {
        let rec = reader.record()?;
        if rec.class != CLASS_IN {
            continue;
        }
        let ttl = if rec.ttl > MAX_TTL { 0 } else { rec.ttl };
        match rec.rtype {
            TYPE_A => {
                let octets = <[u8; 4]>::try_from(rec.rdata).map_err(|_| DnsError::Malformed)?;
                addrs.push((rec.name, IpAddr::from(octets), ttl));
            }
            TYPE_AAAA => {
                let octets = <[u8; 16]>::try_from(rec.rdata).map_err(|_| DnsError::Malformed)?;
                addrs.push((rec.name, IpAddr::from(octets), ttl));
            }
            TYPE_CNAME => {
                let (target, end) = wire::read_name(msg, rec.rdata_at)?;
                // The target must fill the RDATA exactly, not run on into the next record.
                if end != rec.rdata_at + rec.rdata.len() {
                    return Err(DnsError::Malformed);
                }
                cnames.push((rec.name, target, ttl));
            }
            svcb::TYPE_SVCB | svcb::TYPE_HTTPS => {
                let rdata = rec.rdata_at..rec.rdata_at + rec.rdata.len();
                addrs.extend(svcb::hints(msg, rdata).into_iter().map(|ip| (rec.name.clone(), ip, ttl)));
            }
            _ => {}
        }
    }
    Ok(DnsAnswer { id: header.id, rcode: header.rcode(), question, cnames, addrs })
}

/// A copy of the response `msg` with the `ech` parameter (Encrypted ClientHello, RFC 9460 §7.3) removed from
/// every HTTPS and SVCB record, so that clients connect with the real server name in the TLS SNI, where the
/// policy can see it; `None` when no record carries `ech`. Lengths, a `mandatory` list naming `ech`, and
/// compression pointers behind the removed bytes are adjusted. Err when any section does not parse.
pub fn strip_ech(msg: &[u8]) -> Result<Option<Vec<u8>>, DnsError> {
    svcb::strip_ech(msg)
}

/// A checked standard query: its header and first question, and the raw bytes of that question
/// (which contain no compression pointer: a first question has nothing before it to point to).
struct Query<'a> {
    header: Header,
    question: wire::Question,
    question_bytes: &'a [u8],
}

impl<'a> Query<'a> {
    fn parse(msg: &'a [u8]) -> Result<Self, DnsError> {
        let header = Header::parse(msg)?;
        if header.is_response() {
            return Err(DnsError::NotAQuery);
        }
        if header.opcode() != 0 {
            return Err(DnsError::UnsupportedOpcode);
        }
        if header.qdcount == 0 {
            return Err(DnsError::NoQuestion);
        }
        let mut reader = Reader::new(msg, HEADER_LEN);
        let question = reader.question()?;
        let question_bytes = msg.get(HEADER_LEN..reader.pos()).ok_or(DnsError::Truncated)?;
        Ok(Query { header, question, question_bytes })
    }

    /// A response with the question echoed and at most one answer record, owned by the question
    /// name, holding `addr`.
    fn respond(&self, rcode: u8, addr: Option<IpAddr>) -> Vec<u8> {
        let flags = Header::QR | Header::RA | (self.header.flags & (Header::RD | Header::CD)) | u16::from(rcode & 0x0F);
        let ancount = u16::from(addr.is_some());
        let mut out = Vec::with_capacity(HEADER_LEN + self.question_bytes.len() + 28);
        out.extend_from_slice(&self.header.id.to_be_bytes());
        out.extend_from_slice(&flags.to_be_bytes());
        for count in [1, ancount, 0, 0] {
            out.extend_from_slice(&u16::to_be_bytes(count));
        }
        out.extend_from_slice(self.question_bytes);
        match addr {
            Some(IpAddr::V4(a)) => push_answer(&mut out, TYPE_A, &a.octets()),
            Some(IpAddr::V6(a)) => push_answer(&mut out, TYPE_AAAA, &a.octets()),
            None => {}
        }
        out
    }
}

/// Appends one class-IN answer record owned by the question name. `rdata` is 4 or 16 bytes.
fn push_answer(out: &mut Vec<u8>, rtype: u16, rdata: &[u8]) {
    out.extend_from_slice(&POINTER_TO_QUESTION);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&BLOCK_TTL.to_be_bytes());
    // 4 or 16 bytes: the conversion cannot fail.
    let rdlen = u16::try_from(rdata.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&rdlen.to_be_bytes());
    out.extend_from_slice(rdata);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `dig @127.0.0.1 tracking.intl.miui.com A`, captured: RD and AD set, EDNS OPT with a cookie.
    const DIG_QUERY_A: &[u8] = &[
        0x42, 0x6d, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x74, 0x72, 0x61, 0x63, 0x6b,
        0x69, 0x6e, 0x67, 0x04, 0x69, 0x6e, 0x74, 0x6c, 0x04, 0x6d, 0x69, 0x75, 0x69, 0x03, 0x63, 0x6f, 0x6d, 0x00,
        0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0a, 0x00,
        0x08, 0x8d, 0x0b, 0x22, 0xa7, 0xaf, 0x67, 0x59, 0xb4,
    ];
    /// End of the question in [`DIG_QUERY_A`].
    const DIG_QUERY_A_QEND: usize = 40;

    /// `dig +noedns @127.0.0.1 Data.Mistat.XIAOMI.com TYPE65`, captured.
    const DIG_QUERY_HTTPS: &[u8] = &[
        0xc8, 0x00, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x44, 0x61, 0x74, 0x61, 0x06,
        0x4d, 0x69, 0x73, 0x74, 0x61, 0x74, 0x06, 0x58, 0x49, 0x41, 0x4f, 0x4d, 0x49, 0x03, 0x63, 0x6f, 0x6d, 0x00,
        0x00, 0x41, 0x00, 0x01,
    ];

    /// Response for `a.example` A: CNAME `b.example` (TTL 300), then A 198.18.1.2 (TTL 60) and
    /// AAAA 2001:db8::1:2 (TTL 120) owned by `b.example`. Names after the question are compressed:
    /// the CNAME target is "b" + pointer to "example" (offset 14), the A/AAAA owners point at
    /// the CNAME target (offset 39).
    const CNAME_CHAIN_RESPONSE: &[u8] = &[
        0xbe, 0xef, 0x81, 0x80, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, // header
        0x01, b'a', 0x07, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0x00, 0x00, 0x01, 0x00,
        0x01, // question at 12
        0xc0, 0x0c, 0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x04, // CNAME at 27
        0x01, b'b', 0xc0, 0x0e, // rdata at 39: b.example
        0xc0, 0x27, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x04, 198, 18, 1, 2, // A at 43
        0xc0, 0x27, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x10, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0x01, 0x00, 0x02, // AAAA at 59
    ];

    /// NXDOMAIN for `tracking.intl.miui.com` A with an SOA for `miui.com` in the authority
    /// section (RFC 2308 negative answer).
    const NXDOMAIN_RESPONSE: &[u8] = &[
        0x42, 0x6d, 0x81, 0x83, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x08, b't', b'r', b'a', b'c', b'k',
        b'i', b'n', b'g', 0x04, b'i', b'n', b't', b'l', 0x04, b'm', b'i', b'u', b'i', 0x03, b'c', b'o', b'm', 0x00,
        0x00, 0x01, 0x00, 0x01, // question
        0xc0, 0x1a, 0x00, 0x06, 0x00, 0x01, 0x00, 0x00, 0x02, 0x58, 0x00, 0x26, // SOA miui.com
        0x02, b'n', b's', 0xc0, 0x1a, 0x05, b'a', b'd', b'm', b'i', b'n', 0xc0, 0x1a, // mname, rname
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x0e, 0x10, 0x00, 0x00, 0x03, 0x84, 0x00, 0x09, 0x3a, 0x80, 0x00, 0x00,
        0x02, 0x58, // serial refresh retry expire minimum
    ];

    fn header_flags(msg: &[u8]) -> u16 {
        u16::from_be_bytes([msg[2], msg[3]])
    }

    fn counts(msg: &[u8]) -> [u16; 4] {
        [4, 6, 8, 10].map(|i| u16::from_be_bytes([msg[i], msg[i + 1]]))
    }

    fn with_qtype(query: &[u8], qend: usize, qtype: u16) -> Vec<u8> {
        let mut q = query.to_vec();
        q[qend - 4..qend - 2].copy_from_slice(&qtype.to_be_bytes());
        q
    }

    // ---- parse_query ----

    #[test]
    fn parse_query_golden_a() {
        assert_eq!(
            parse_query(DIG_QUERY_A),
            Ok(DnsQuery { id: 0x426d, name: "tracking.intl.miui.com".into(), qtype: 1 })
        );
    }

    #[test]
    fn parse_query_lowercases_and_accepts_https_type() {
        let q = parse_query(DIG_QUERY_HTTPS).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype), (0xc800, "data.mistat.xiaomi.com", 65));
    }

    #[test]
    fn parse_query_accepts_types_unknown_to_simple_dns() {
        // TLSA (52) and a private-use type: simple-dns refuses both with InvalidQType.
        for qtype in [52, 65_280] {
            let q = with_qtype(DIG_QUERY_A, DIG_QUERY_A_QEND, qtype);
            assert_eq!(parse_query(&q).map(|q| q.qtype), Ok(qtype));
        }
    }

    #[test]
    fn parse_query_of_a_query_built_by_simple_dns() {
        use simple_dns::{Name, Packet, Question, CLASS, TYPE};
        let mut packet = Packet::new_query(0x0102);
        packet.questions.push(Question::new(
            Name::new_unchecked("Sdkconfig.AD.Xiaomi.com"),
            TYPE::AAAA.into(),
            CLASS::IN.into(),
            false,
        ));
        let bytes = packet.build_bytes_vec().unwrap();
        assert_eq!(parse_query(&bytes), Ok(DnsQuery { id: 0x0102, name: "sdkconfig.ad.xiaomi.com".into(), qtype: 28 }));
    }

    #[test]
    fn parse_query_refusals() {
        assert_eq!(parse_query(CNAME_CHAIN_RESPONSE), Err(DnsError::NotAQuery));
        let mut notify = DIG_QUERY_A.to_vec();
        notify[2] |= 4 << 3; // OPCODE 4 = NOTIFY
        assert_eq!(parse_query(&notify), Err(DnsError::UnsupportedOpcode));
        let mut no_question = DIG_QUERY_A.to_vec();
        no_question[5] = 0;
        assert_eq!(parse_query(&no_question), Err(DnsError::NoQuestion));
        // A pointer in the first question has nothing before it to point to.
        let mut pointer = DIG_QUERY_A[..12].to_vec();
        pointer.extend_from_slice(&[0x01, b'x', 0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
        assert_eq!(parse_query(&pointer), Err(DnsError::Malformed));
    }

    #[test]
    fn parse_query_truncations() {
        for len in 0..DIG_QUERY_A.len() {
            let result = parse_query(&DIG_QUERY_A[..len]);
            if len < DIG_QUERY_A_QEND {
                assert_eq!(result, Err(DnsError::Truncated), "prefix {len}");
            } else {
                // Only the additional section (EDNS) is cut: it is not read.
                assert!(result.is_ok(), "prefix {len}");
            }
        }
    }

    // ---- blocked_response / servfail_response ----

    #[test]
    fn blocked_nxdomain_golden_bytes() {
        let response = blocked_response(DIG_QUERY_A, BlockAnswer::NxDomain).unwrap();
        let mut expected = vec![0x42, 0x6d, 0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(&DIG_QUERY_A[12..DIG_QUERY_A_QEND]);
        assert_eq!(response, expected);
    }

    #[test]
    fn blocked_unspecified_a_golden_bytes() {
        let response = blocked_response(DIG_QUERY_A, BlockAnswer::Unspecified).unwrap();
        let mut expected = vec![0x42, 0x6d, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        expected.extend_from_slice(&DIG_QUERY_A[12..DIG_QUERY_A_QEND]);
        expected.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 0, 0, 0, 0]);
        assert_eq!(response, expected);
    }

    #[test]
    fn blocked_nxdomain_parses_back() {
        let response = blocked_response(DIG_QUERY_HTTPS, BlockAnswer::NxDomain).unwrap();
        let answer = parse_response(&response).unwrap();
        assert_eq!(answer.id, 0xc800);
        assert_eq!(answer.rcode, 3);
        assert_eq!(answer.question.as_deref(), Some("data.mistat.xiaomi.com"));
        assert!(answer.addrs.is_empty() && answer.cnames.is_empty());
        // QR, RD copied, RA; AD not copied; NXDOMAIN.
        assert_eq!(header_flags(&response), 0x8000 | 0x0100 | 0x0080 | 3);
        // The question keeps the client's letter case (0x20 entropy).
        assert_eq!(&response[12..], &DIG_QUERY_HTTPS[12..]);
    }

    #[test]
    fn blocked_unspecified_per_type() {
        let a = parse_response(&blocked_response(DIG_QUERY_A, BlockAnswer::Unspecified).unwrap()).unwrap();
        assert_eq!(a.rcode, 0);
        assert_eq!(a.addrs, vec![("tracking.intl.miui.com".into(), IpAddr::V4(Ipv4Addr::UNSPECIFIED), BLOCK_TTL)]);

        let aaaa_query = with_qtype(DIG_QUERY_A, DIG_QUERY_A_QEND, TYPE_AAAA);
        let aaaa = blocked_response(&aaaa_query, BlockAnswer::Unspecified).unwrap();
        assert_eq!(
            parse_response(&aaaa).unwrap().addrs,
            vec![("tracking.intl.miui.com".into(), IpAddr::V6(Ipv6Addr::UNSPECIFIED), BLOCK_TTL)]
        );

        // HTTPS: NOERROR without answers (NODATA).
        let https = blocked_response(DIG_QUERY_HTTPS, BlockAnswer::Unspecified).unwrap();
        assert_eq!(counts(&https), [1, 0, 0, 0]);
        assert_eq!(parse_response(&https).unwrap().rcode, 0);

        // Class CH (3): NODATA too.
        let mut chaos = DIG_QUERY_A.to_vec();
        chaos[DIG_QUERY_A_QEND - 1] = 3;
        let chaos = blocked_response(&chaos, BlockAnswer::Unspecified).unwrap();
        assert_eq!(counts(&chaos), [1, 0, 0, 0]);
    }

    #[test]
    fn blocked_response_checked_by_simple_dns() {
        use simple_dns::{rdata::RData, Packet, PacketFlag, RCODE};
        let aaaa_query = with_qtype(DIG_QUERY_A, DIG_QUERY_A_QEND, TYPE_AAAA);
        let bytes = blocked_response(&aaaa_query, BlockAnswer::Unspecified).unwrap();
        let packet = Packet::parse(&bytes).unwrap();
        assert_eq!(packet.id(), 0x426d);
        assert!(packet.has_flags(PacketFlag::RESPONSE | PacketFlag::RECURSION_DESIRED));
        assert!(packet.has_flags(PacketFlag::RECURSION_AVAILABLE));
        assert_eq!(packet.rcode(), RCODE::NoError);
        assert_eq!(packet.questions[0].qname.to_string(), "tracking.intl.miui.com");
        assert_eq!(packet.answers.len(), 1);
        assert_eq!(packet.answers[0].ttl, 60);
        assert_eq!(packet.answers[0].name.to_string(), "tracking.intl.miui.com");
        match &packet.answers[0].rdata {
            RData::AAAA(aaaa) => assert_eq!(Ipv6Addr::from(aaaa.address), Ipv6Addr::UNSPECIFIED),
            other => panic!("unexpected rdata {other:?}"),
        }
        let nx = blocked_response(DIG_QUERY_A, BlockAnswer::NxDomain).unwrap();
        assert_eq!(Packet::parse(&nx).unwrap().rcode(), RCODE::NameError);
    }

    #[test]
    fn blocked_response_copies_cd_but_not_other_flags() {
        let mut q = DIG_QUERY_A.to_vec();
        q[2] = 0x06; // AA, TC set (nonsense in a query), RD clear
        q[3] = 0x10; // CD
        let r = blocked_response(&q, BlockAnswer::NxDomain).unwrap();
        assert_eq!(header_flags(&r), 0x8000 | 0x0080 | 0x0010 | 3);
    }

    #[test]
    fn servfail_echoes_question() {
        let r = servfail_response(DIG_QUERY_HTTPS).unwrap();
        assert_eq!(header_flags(&r), 0x8000 | 0x0100 | 0x0080 | 2);
        assert_eq!(counts(&r), [1, 0, 0, 0]);
        let answer = parse_response(&r).unwrap();
        assert_eq!((answer.id, answer.rcode), (0xc800, 2));
        assert_eq!(answer.question.as_deref(), Some("data.mistat.xiaomi.com"));
    }

    #[test]
    fn responses_refuse_what_parse_query_refuses() {
        for style in [BlockAnswer::NxDomain, BlockAnswer::Unspecified] {
            assert_eq!(blocked_response(CNAME_CHAIN_RESPONSE, style), Err(DnsError::NotAQuery));
            assert_eq!(blocked_response(&DIG_QUERY_A[..30], style), Err(DnsError::Truncated));
        }
        assert_eq!(servfail_response(&DIG_QUERY_A[..11]), Err(DnsError::Truncated));
    }

    // ---- ids ----

    #[test]
    fn set_and_read_id() {
        let mut msg = DIG_QUERY_A.to_vec();
        assert_eq!(message_id(&msg), Some(0x426d));
        set_id(&mut msg, 0xabcd).unwrap();
        assert_eq!(message_id(&msg), Some(0xabcd));
        assert_eq!(&msg[2..], &DIG_QUERY_A[2..]);
        assert_eq!(parse_query(&msg).unwrap().id, 0xabcd);
        let mut short = [0u8; 11];
        assert_eq!(set_id(&mut short, 1), Err(DnsError::Truncated));
        assert_eq!(short, [0; 11]);
        assert_eq!(message_id(&[1]), None);
        assert_eq!(message_id(&[1, 2]), Some(0x0102));
    }

    // ---- parse_response ----

    #[test]
    fn parse_response_golden_cname_chain() {
        let answer = parse_response(CNAME_CHAIN_RESPONSE).unwrap();
        assert_eq!(
            answer,
            DnsAnswer {
                id: 0xbeef,
                rcode: 0,
                question: Some("a.example".into()),
                cnames: vec![("a.example".into(), "b.example".into(), 300)],
                addrs: vec![
                    ("b.example".into(), "198.18.1.2".parse().unwrap(), 60),
                    ("b.example".into(), "2001:db8::1:2".parse().unwrap(), 120),
                ],
            }
        );
        assert_eq!(answer.chain_names(), ["a.example", "b.example"]);
        assert_eq!(answer.question_path(), ["a.example", "b.example"]);
    }

    #[test]
    fn parse_response_golden_nxdomain() {
        let answer = parse_response(NXDOMAIN_RESPONSE).unwrap();
        assert_eq!((answer.id, answer.rcode), (0x426d, 3));
        assert_eq!(answer.question.as_deref(), Some("tracking.intl.miui.com"));
        assert!(answer.cnames.is_empty() && answer.addrs.is_empty());
        assert_eq!(answer.chain_names(), ["tracking.intl.miui.com"]);
    }

    #[test]
    fn parse_response_refuses_queries() {
        assert_eq!(parse_response(DIG_QUERY_A), Err(DnsError::NotAResponse));
    }

    #[test]
    fn parse_response_truncations() {
        for len in 0..CNAME_CHAIN_RESPONSE.len() {
            assert_eq!(parse_response(&CNAME_CHAIN_RESPONSE[..len]), Err(DnsError::Truncated), "prefix {len}");
        }
    }

    #[test]
    fn parse_response_built_by_simple_dns_with_compression() {
        use simple_dns::rdata::{RData, A, AAAA, CNAME, TXT};
        use simple_dns::{Name, Packet, Question, ResourceRecord, CLASS, TYPE};
        let rr = |name: &'static str, ttl, rdata| ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, ttl, rdata);
        let mut packet = Packet::new_reply(7);
        packet.questions.push(Question::new(
            Name::new_unchecked("api.ad.xiaomi.com"),
            TYPE::A.into(),
            CLASS::IN.into(),
            false,
        ));
        let cname = |t: &'static str| RData::CNAME(CNAME(Name::new_unchecked(t)));
        packet.answers.push(rr("api.ad.xiaomi.com", 30, cname("api.ad.xiaomi.com.cdn.example")));
        packet.answers.push(rr("api.ad.xiaomi.com.cdn.example", 40, cname("edge.cdn.example")));
        packet.answers.push(rr("edge.cdn.example", 50, RData::A(A { address: 0x0a000001 })));
        packet.answers.push(rr("edge.cdn.example", 50, RData::A(A { address: 0x0a000002 })));
        packet.answers.push(rr("edge.cdn.example", 50, RData::TXT(TXT::new())));
        packet.answers.push(rr("edge.cdn.example", 70, RData::AAAA(AAAA { address: 1 })));
        let bytes = packet.build_bytes_vec_compressed().unwrap();
        // Compression is really in use: "cdn.example" appears once on the wire.
        assert_eq!(bytes.windows(3).filter(|w| w == b"cdn").count(), 1);

        let answer = parse_response(&bytes).unwrap();
        assert_eq!(answer.question.as_deref(), Some("api.ad.xiaomi.com"));
        assert_eq!(
            answer.cnames,
            vec![
                ("api.ad.xiaomi.com".into(), "api.ad.xiaomi.com.cdn.example".into(), 30),
                ("api.ad.xiaomi.com.cdn.example".into(), "edge.cdn.example".into(), 40),
            ]
        );
        let addrs: Vec<(&str, IpAddr, u32)> = answer.addrs.iter().map(|(n, ip, ttl)| (n.as_str(), *ip, *ttl)).collect();
        assert_eq!(
            addrs,
            vec![
                ("edge.cdn.example", "10.0.0.1".parse().unwrap(), 50),
                ("edge.cdn.example", "10.0.0.2".parse().unwrap(), 50),
                ("edge.cdn.example", "::1".parse().unwrap(), 70),
            ]
        );
        assert_eq!(answer.chain_names(), ["api.ad.xiaomi.com", "api.ad.xiaomi.com.cdn.example", "edge.cdn.example"]);
    }

    /// An answer record: owner name in wire form, type, class, ttl, rdata.
    type TestRecord<'a> = (&'a [u8], u16, u16, u32, &'a [u8]);

    /// A response for `q` with the given answer records, no compression.
    fn response(q: &[u8], records: &[TestRecord<'_>]) -> Vec<u8> {
        let mut m = vec![0, 9, 0x81, 0x80, 0, 1, 0, records.len() as u8, 0, 0, 0, 0];
        m.extend_from_slice(q);
        m.extend_from_slice(&[0, 1, 0, 1]);
        for (name, rtype, class, ttl, rdata) in records {
            m.extend_from_slice(name);
            m.extend_from_slice(&rtype.to_be_bytes());
            m.extend_from_slice(&class.to_be_bytes());
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(rdata);
        }
        m
    }

    #[test]
    fn parse_response_ttl_with_top_bit_is_zero() {
        let m = response(b"\x01x\x00", &[(b"\x01x\x00", 1, 1, 0x8000_0000, &[1, 2, 3, 4])]);
        assert_eq!(parse_response(&m).unwrap().addrs[0].2, 0);
        let m = response(b"\x01x\x00", &[(b"\x01x\x00", 1, 1, 0x7FFF_FFFF, &[1, 2, 3, 4])]);
        assert_eq!(parse_response(&m).unwrap().addrs[0].2, 0x7FFF_FFFF);
    }

    #[test]
    fn parse_response_bad_rdata() {
        let a5 = response(b"\x01x\x00", &[(b"\x01x\x00", 1, 1, 5, &[1, 2, 3, 4, 5])]);
        assert_eq!(parse_response(&a5), Err(DnsError::Malformed));
        let aaaa4 = response(b"\x01x\x00", &[(b"\x01x\x00", 28, 1, 5, &[1, 2, 3, 4])]);
        assert_eq!(parse_response(&aaaa4), Err(DnsError::Malformed));
        let cname_junk = response(b"\x01x\x00", &[(b"\x01x\x00", 5, 1, 5, b"\x01y\x00junk")]);
        assert_eq!(parse_response(&cname_junk), Err(DnsError::Malformed));
        // A CNAME target that runs past its RDATA into the next record.
        let cname_long =
            response(b"\x01x\x00", &[(b"\x01x\x00", 5, 1, 5, b"\x01y"), (b"\x00", 1, 1, 5, &[1, 2, 3, 4])]);
        assert_eq!(parse_response(&cname_long), Err(DnsError::Malformed));
    }

    #[test]
    fn parse_response_skips_other_classes_and_types() {
        let m = response(
            b"\x01x\x00",
            &[
                (b"\x01x\x00", 1, 3, 5, &[1, 2, 3, 4]),    // class CH
                (b"\x01x\x00", 16, 1, 5, b"\x03txt"),      // TXT
                (b"\x01x\x00", 65, 1, 5, b"\x00\x01\x00"), // HTTPS
                (b"\x01x\x00", 1, 1, 5, &[5, 6, 7, 8]),
            ],
        );
        let answer = parse_response(&m).unwrap();
        assert_eq!(answer.addrs, vec![("x".into(), "5.6.7.8".parse().unwrap(), 5)]);
    }

    #[test]
    fn chain_names_and_path_with_loops_and_strays() {
        let answer = DnsAnswer {
            id: 0,
            rcode: 0,
            question: Some("q".into()),
            cnames: vec![
                ("q".into(), "b".into(), 1),
                ("stray".into(), "other".into(), 1),
                ("b".into(), "q".into(), 1),
                ("b".into(), "ignored-second-cname".into(), 1),
            ],
            addrs: vec![],
        };
        assert_eq!(answer.chain_names(), ["q", "b", "stray", "other", "ignored-second-cname"]);
        assert_eq!(answer.question_path(), ["q", "b"]);
        let no_question = DnsAnswer { question: None, ..answer };
        assert!(no_question.question_path().is_empty());
    }

    #[test]
    fn errors_display_distinctly() {
        let all = [
            DnsError::Truncated,
            DnsError::Malformed,
            DnsError::NotAQuery,
            DnsError::NotAResponse,
            DnsError::NoQuestion,
            DnsError::UnsupportedOpcode,
        ];
        let texts: HashSet<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(texts.len(), all.len());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_query(&bytes);
            let _ = parse_response(&bytes);
            let _ = servfail_response(&bytes);
            let _ = blocked_response(&bytes, BlockAnswer::NxDomain);
            let _ = blocked_response(&bytes, BlockAnswer::Unspecified);
            let _ = message_id(&bytes);
            let mut copy = bytes.clone();
            let _ = set_id(&mut copy, 1);
        }

        #[test]
        fn mutated_golden_messages_never_panic(
            which in 0usize..4,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let base = [DIG_QUERY_A, DIG_QUERY_HTTPS, CNAME_CHAIN_RESPONSE, NXDOMAIN_RESPONSE][which];
            let mut msg = base.to_vec();
            for (at, byte) in edits {
                let at = at % msg.len();
                msg[at] = byte;
            }
            msg.truncate(cut % (msg.len() + 1));
            if let Ok(answer) = parse_response(&msg) {
                let _ = answer.chain_names();
                let _ = answer.question_path();
            }
            let _ = parse_query(&msg);
            let _ = blocked_response(&msg, BlockAnswer::Unspecified);
        }

        /// Whatever query is accepted gets a well-formed answer with its id and name.
        #[test]
        fn accepted_queries_get_parsable_answers(
            id in any::<u16>(),
            labels in proptest::collection::vec("[a-zA-Z0-9-]{1,20}", 1..5),
            qtype in any::<u16>(),
            rd in any::<bool>(),
        ) {
            let mut q = id.to_be_bytes().to_vec();
            q.extend_from_slice(&[if rd { 1 } else { 0 }, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
            for label in &labels {
                q.push(label.len() as u8);
                q.extend_from_slice(label.as_bytes());
            }
            q.extend_from_slice(&[0]);
            q.extend_from_slice(&qtype.to_be_bytes());
            q.extend_from_slice(&[0, 1]);
            let name = labels.join(".").to_ascii_lowercase();
            prop_assert_eq!(parse_query(&q), Ok(DnsQuery { id, name: name.clone(), qtype }));
            for style in [BlockAnswer::NxDomain, BlockAnswer::Unspecified] {
                let r = blocked_response(&q, style).unwrap();
                let answer = parse_response(&r).unwrap();
                prop_assert_eq!(answer.id, id);
                prop_assert_eq!(answer.question.as_deref(), Some(name.as_str()));
                prop_assert_eq!(header_flags(&r) & 0x0100 != 0, rd);
            }
        }
    }
}
