//! Bounded reading of the DNS wire format (RFC 1035 §4.1): the header, names with compression
//! pointers, questions and resource-record envelopes.
//!
//! Hand-written instead of `simple-dns` because that crate refuses a whole message when a question
//! has a type or class it does not know (`InvalidQType` for TLSA, SSHFP, private types…) and when any
//! record anywhere fails its strict RDATA parsing. A firewall must still answer such a query and
//! still read the A/AAAA/CNAME records of such a response, so only the envelope is read here and
//! RDATA is interpreted for A, AAAA and CNAME alone.
//!
//! Every read is checked against the message length; nothing here indexes, panics or loops without
//! a bound.

use super::DnsError;

/// Length of the fixed DNS header.
pub(super) const HEADER_LEN: usize = 12;
/// Longest name on the wire, root label included (RFC 1035 §3.1).
const MAX_NAME_WIRE_LEN: usize = 255;
/// Longest label (RFC 1035 §3.1).
const MAX_LABEL_LEN: usize = 63;
/// The two high bits of a length byte that mark a compression pointer (RFC 1035 §4.1.4).
const POINTER_TAG: u8 = 0xC0;

/// The fixed 12-byte header of a DNS message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
}

impl Header {
    /// QR: set in responses.
    pub const QR: u16 = 0x8000;
    /// RD: recursion desired, copied from query to response.
    pub const RD: u16 = 0x0100;
    /// RA: recursion available.
    pub const RA: u16 = 0x0080;
    /// CD: checking disabled, copied from query to response (RFC 4035 §3.2.2).
    pub const CD: u16 = 0x0010;

    pub fn parse(msg: &[u8]) -> Result<Self, DnsError> {
        if msg.len() < HEADER_LEN {
            return Err(DnsError::Truncated);
        }
        // NSCOUNT and ARCOUNT are not needed: those sections are never read.
        let mut r = Reader::new(msg, 0);
        Ok(Header { id: r.u16()?, flags: r.u16()?, qdcount: r.u16()?, ancount: r.u16()? })
    }

    pub fn is_response(self) -> bool {
        self.flags & Self::QR != 0
    }

    /// The 4-bit OPCODE; 0 is a standard QUERY.
    pub fn opcode(self) -> u8 {
        // Masked to 4 bits, so the cast cannot truncate.
        ((self.flags >> 11) & 0x0F) as u8
    }

    /// The 4-bit RCODE of the header (extended RCODE bits from EDNS are not read).
    pub fn rcode(self) -> u8 {
        (self.flags & 0x000F) as u8
    }
}

/// One question: its normalised name, type and class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Question {
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
}

/// A resource record with its RDATA still raw. `rdata_at` is the offset of the RDATA in the
/// message, needed to decode names inside it that point back into the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Record<'a> {
    pub name: String,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdata: &'a [u8],
    pub rdata_at: usize,
}

/// A cursor over a whole DNS message. Names may point anywhere before themselves, so the cursor
/// keeps the whole message and a position rather than a shrinking slice.
pub(super) struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(msg: &'a [u8], pos: usize) -> Self {
        Reader { msg, pos }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DnsError> {
        let end = self.pos.checked_add(n).ok_or(DnsError::Truncated)?;
        let bytes = self.msg.get(self.pos..end).ok_or(DnsError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }

    pub fn u16(&mut self) -> Result<u16, DnsError> {
        match *self.take(2)? {
            [a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(DnsError::Truncated),
        }
    }

    pub fn u32(&mut self) -> Result<u32, DnsError> {
        match *self.take(4)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(DnsError::Truncated),
        }
    }

    /// Reads a name at the cursor and leaves the cursor after its in-place part.
    pub fn name(&mut self) -> Result<String, DnsError> {
        let (name, end) = read_name(self.msg, self.pos)?;
        self.pos = end;
        Ok(name)
    }

    pub fn question(&mut self) -> Result<Question, DnsError> {
        Ok(Question { name: self.name()?, qtype: self.u16()?, qclass: self.u16()? })
    }

    pub fn record(&mut self) -> Result<Record<'a>, DnsError> {
        let name = self.name()?;
        let rtype = self.u16()?;
        let class = self.u16()?;
        let ttl = self.u32()?;
        let rdlen = self.u16()?;
        let rdata_at = self.pos;
        let rdata = self.take(usize::from(rdlen))?;
        Ok(Record { name, rtype, class, ttl, rdata, rdata_at })
    }
}

/// Decodes the name starting at `start` into lowercase presentation form without the trailing dot
/// (the root is `""`), and returns it with the offset just after the name's in-place bytes.
///
/// Each compression pointer must point strictly before every byte of the name read so far (a
/// "prior occurrence", RFC 1035 §4.1.4) and after the header, so decoding always moves backwards
/// and terminates; the wire length is capped at 255 as well.
pub(super) fn read_name(msg: &[u8], start: usize) -> Result<(String, usize), DnsError> {
    let mut out = String::new();
    let mut pos = start;
    // Lowest offset read so far: the next pointer must land below it.
    let mut floor = start;
    let mut end = None;
    let mut wire_len = 0usize;
    loop {
        let len = *msg.get(pos).ok_or(DnsError::Truncated)?;
        match len & POINTER_TAG {
            0 if len == 0 => {
                return Ok((out, end.unwrap_or(pos + 1)));
            }
            0 => {
                let label_len = usize::from(len);
                wire_len += 1 + label_len;
                // The root label still needs one byte.
                if label_len > MAX_LABEL_LEN || wire_len >= MAX_NAME_WIRE_LEN {
                    return Err(DnsError::Malformed);
                }
                let label = msg.get(pos + 1..pos + 1 + label_len).ok_or(DnsError::Truncated)?;
                if !out.is_empty() {
                    out.push('.');
                }
                push_label(&mut out, label);
                pos += 1 + label_len;
            }
            POINTER_TAG => {
                let low = *msg.get(pos + 1).ok_or(DnsError::Truncated)?;
                let target = usize::from(u16::from_be_bytes([len & !POINTER_TAG, low]));
                if target < HEADER_LEN || target >= floor {
                    return Err(DnsError::Malformed);
                }
                end.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            // 0x40 and 0x80: extended label types (RFC 6891 §5), not in use.
            _ => return Err(DnsError::Malformed),
        }
    }
}

/// Appends one label in presentation form: ASCII lowercased, `.` and `\` escaped, other bytes
/// outside printable ASCII as `\DDD` (RFC 1035 §5.1), so no crafted label can read as another name.
fn push_label(out: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x21..=0x7E => out.push(char::from(b.to_ascii_lowercase())),
            _ => {
                out.push('\\');
                out.push(char::from(b'0' + b / 100));
                out.push(char::from(b'0' + (b / 10) % 10));
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg_with(body: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; HEADER_LEN];
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn bytes_outside_printable_ascii_are_three_decimal_digits() {
        let mut out = String::new();
        push_label(&mut out, &[0x00, 0x09, 0x7f, 0xc8, 0xff, b'A']);
        assert_eq!(out, "\\000\\009\\127\\200\\255a");
    }

    #[test]
    fn header_fields() {
        let h = Header::parse(&[0x12, 0x34, 0x81, 0x83, 0, 1, 0, 2, 0, 0, 0, 0]).unwrap();
        assert_eq!(h.id, 0x1234);
        assert!(h.is_response());
        assert_eq!(h.opcode(), 0);
        assert_eq!(h.rcode(), 3);
        assert_eq!((h.qdcount, h.ancount), (1, 2));
        assert_eq!(Header::parse(&[0; 11]), Err(DnsError::Truncated));
    }

    #[test]
    fn plain_name_lowercased() {
        let m = msg_with(b"\x03WwW\x07Example\x03COM\x00rest");
        assert_eq!(read_name(&m, HEADER_LEN), Ok(("www.example.com".to_string(), HEADER_LEN + 17)));
    }

    #[test]
    fn root_name_is_empty() {
        let m = msg_with(b"\x00");
        assert_eq!(read_name(&m, HEADER_LEN), Ok((String::new(), HEADER_LEN + 1)));
    }

    #[test]
    fn odd_bytes_are_escaped() {
        let m = msg_with(b"\x04a.b\\\x02\x00\xff\x03com\x00");
        let (name, _) = read_name(&m, HEADER_LEN).unwrap();
        assert_eq!(name, r"a\.b\\.\000\255.com");
    }

    #[test]
    fn pointer_is_followed_and_end_is_after_pointer() {
        // "example.com" at 12, then "www" + pointer to 12 at 25.
        let m = msg_with(b"\x07example\x03com\x00\x03www\xC0\x0C");
        assert_eq!(read_name(&m, 25), Ok(("www.example.com".to_string(), 31)));
    }

    #[test]
    fn pointer_to_itself_or_forward_or_into_header_is_refused() {
        let self_loop = msg_with(b"\xC0\x0C");
        assert_eq!(read_name(&self_loop, HEADER_LEN), Err(DnsError::Malformed));
        let forward = msg_with(b"\xC0\x0E\x00");
        assert_eq!(read_name(&forward, HEADER_LEN), Err(DnsError::Malformed));
        let header = msg_with(b"\x01a\xC0\x02");
        assert_eq!(read_name(&header, HEADER_LEN), Err(DnsError::Malformed));
        // A label that leads back to the pointer that was followed: a loop through labels.
        let label_loop = msg_with(b"\x01a\xC0\x0C");
        assert_eq!(read_name(&label_loop, 14), Err(DnsError::Malformed));
    }

    #[test]
    fn long_names_and_labels_are_refused() {
        let mut body = Vec::new();
        for _ in 0..4 {
            body.push(63);
            body.extend_from_slice(&[b'a'; 63]);
        }
        body.push(0);
        // 4 * 64 + 1 = 257 > 255
        assert_eq!(read_name(&msg_with(&body), HEADER_LEN), Err(DnsError::Malformed));
        let mut label = vec![64u8];
        label.extend_from_slice(&[b'a'; 64]);
        label.push(0);
        assert_eq!(read_name(&msg_with(&label), HEADER_LEN), Err(DnsError::Malformed));
        // 3 * 64 + 62 + 1 = 255 is the longest allowed.
        let mut max = Vec::new();
        for _ in 0..3 {
            max.push(63);
            max.extend_from_slice(&[b'a'; 63]);
        }
        max.push(61);
        max.extend_from_slice(&[b'a'; 61]);
        max.push(0);
        assert!(read_name(&msg_with(&max), HEADER_LEN).is_ok());
    }

    #[test]
    fn extended_label_types_are_refused() {
        assert_eq!(read_name(&msg_with(b"\x41a\x00"), HEADER_LEN), Err(DnsError::Malformed));
        assert_eq!(read_name(&msg_with(b"\x81a\x00"), HEADER_LEN), Err(DnsError::Malformed));
    }

    #[test]
    fn truncated_names() {
        assert_eq!(read_name(&msg_with(b"\x03ab"), HEADER_LEN), Err(DnsError::Truncated));
        assert_eq!(read_name(&msg_with(b"\x03abc"), HEADER_LEN), Err(DnsError::Truncated));
        assert_eq!(read_name(&msg_with(b"\xC0"), HEADER_LEN), Err(DnsError::Truncated));
        assert_eq!(read_name(&msg_with(b""), HEADER_LEN), Err(DnsError::Truncated));
    }

    #[test]
    fn record_envelope() {
        let m = msg_with(b"\x01a\x00\x00\x01\x00\x01\x00\x00\x00\x3C\x00\x04\x0A\x00\x00\x01tail");
        let mut r = Reader::new(&m, HEADER_LEN);
        let rec = r.record().unwrap();
        assert_eq!(rec.name, "a");
        assert_eq!((rec.rtype, rec.class, rec.ttl), (1, 1, 60));
        assert_eq!(rec.rdata, &[10, 0, 0, 1]);
        assert_eq!(rec.rdata_at, HEADER_LEN + 13);
        assert_eq!(r.pos(), m.len() - 4);
        // RDLENGTH beyond the end.
        let short = msg_with(b"\x01a\x00\x00\x01\x00\x01\x00\x00\x00\x3C\x00\x05\x0A\x00\x00\x01");
        assert_eq!(Reader::new(&short, HEADER_LEN).record(), Err(DnsError::Truncated));
    }
}
