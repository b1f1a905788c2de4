//! A minimal pcapng writer (draft-ietf-opsawg-pcapng) for what the engine saw on the tun.
//!
//! One section, one interface with link type `LINKTYPE_RAW` (101: each packet starts with its IPv4 or IPv6
//! header, as on a tun), microsecond timestamps, and one Enhanced Packet Block per packet with its direction
//! (`epb_flags`) and, for the packets that decided a flow, an `opt_comment` with the verdict and reason. Wireshark
//! and tshark read it (`tshark -r FILE -Y frame.comment -T fields -e frame.comment`).
//!
//! This is encoding only: [`PcapngWriter`] works on any [`Write`]. The engine queues what it saw
//! ([`crate::engine::Engine::take_capture_records`]); the driver owns the file and writes it on a thread of its
//! own with this writer.

use std::io::{self, Write};

/// Block type of the Section Header Block.
const SHB: u32 = 0x0A0D_0D0A;
/// Block type of the Interface Description Block.
const IDB: u32 = 0x0000_0001;
/// Block type of the Enhanced Packet Block.
const EPB: u32 = 0x0000_0006;
/// Byte-order magic.
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// Raw IP: the packet starts with an IPv4 or IPv6 header (tcpdump.org link-layer header types).
pub const LINKTYPE_RAW: u16 = 101;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const EPB_FLAGS: u16 = 2;
/// Longest comment written; longer ones are cut (on a character boundary).
const MAX_COMMENT: usize = 1024;
/// Longest interface name written; a longer one is cut (on a character boundary).
const MAX_IF_NAME: usize = 256;
/// Longest packet written: more than any IP packet a tun carries (65,535 bytes). A longer one is only counted
/// ([`PcapngWriter::not_written`]), so that every block's length fits its 32-bit field.
const MAX_PACKET: usize = 1 << 20;

/// Which way a packet crossed the tun, seen from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Read from the tun: sent by the phone.
    Inbound,
    /// Written to the tun: sent to the phone.
    Outbound,
}

/// Writes a pcapng stream: the section and interface headers on creation, then one block per packet, up to an
/// optional size cap ([`PcapngWriter::set_max_bytes`]).
#[derive(Debug)]
pub struct PcapngWriter<W: Write> {
    out: W,
    block: Vec<u8>,
    /// Bytes written so far (headers included).
    written: u64,
    /// The file never grows past this many bytes.
    max_bytes: u64,
    /// Packets left out because the cap was reached.
    not_written: u64,
}

impl<W: Write> PcapngWriter<W> {
    /// Starts a capture on `out`: writes the Section Header and the Interface Description (`if_name`, raw IP).
    pub fn new(out: W, if_name: &str) -> io::Result<Self> {
        let mut w = PcapngWriter { out, block: Vec::new(), written: 0, max_bytes: u64::MAX, not_written: 0 };
        let mut body = Vec::new();
        body.extend_from_slice(&BYTE_ORDER_MAGIC.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&u64::MAX.to_le_bytes()); // section length unknown
        push_option(&mut body, SHB_USERAPPL, b"Hushwall");
        push_option(&mut body, OPT_END, &[]);
        w.write_block(SHB, &body)?;
        let mut body = Vec::new();
        body.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes()); // no snap length
        push_option(&mut body, IF_NAME, truncate_utf8(if_name, MAX_IF_NAME).as_bytes());
        push_option(&mut body, OPT_END, &[]);
        w.write_block(IDB, &body)?;
        Ok(w)
    }

    /// Caps the stream at `max_bytes` (headers included): a packet whose block would take it past the cap is not
    /// written but counted ([`PcapngWriter::not_written`]), and the first one is logged. The file stays a valid
    /// pcapng that ends with the last whole block.
    pub fn set_max_bytes(&mut self, max_bytes: u64) {
        self.max_bytes = max_bytes;
    }

    /// Packets left out because the cap was reached.
    pub fn not_written(&self) -> u64 {
        self.not_written
    }

    /// Bytes written so far, headers included.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes one packet captured at `timestamp_us` (microseconds since the Unix epoch), with an optional comment.
    /// Past the cap, the packet is only counted.
    pub fn write_packet(
        &mut self,
        timestamp_us: u64,
        direction: Direction,
        data: &[u8],
        comment: Option<&str>,
    ) -> io::Result<()> {
        if data.len() > MAX_PACKET {
            self.not_written += 1;
            return Ok(());
        }
        let len = data.len() as u32;
        let mut body = std::mem::take(&mut self.block);
        body.clear();
        body.extend_from_slice(&0u32.to_le_bytes()); // interface 0
        body.extend_from_slice(&((timestamp_us >> 32) as u32).to_le_bytes());
        body.extend_from_slice(&(timestamp_us as u32).to_le_bytes());
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(&len.to_le_bytes());
        body.extend_from_slice(data);
        pad(&mut body);
        let flags: u32 = match direction {
            Direction::Inbound => 1,
            Direction::Outbound => 2,
        };
        push_option(&mut body, EPB_FLAGS, &flags.to_le_bytes());
        if let Some(text) = comment {
            push_option(&mut body, OPT_COMMENT, truncate_utf8(text, MAX_COMMENT).as_bytes());
        }
        push_option(&mut body, OPT_END, &[]);
        let block_len = body.len() as u64 + 12;
        let result = if self.written.saturating_add(block_len) > self.max_bytes {
            if self.not_written == 0 {
                log::warn!(
                    "capture reached its cap of {} bytes: later packets are counted, not written",
                    self.max_bytes
                );
            }
            self.not_written += 1;
            Ok(())
        } else {
            self.write_block(EPB, &body)
        };
        self.block = body;
        result
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }

    /// Writes one block around `body`, which the callers keep short (a packet of at most [`MAX_PACKET`] bytes,
    /// a comment of at most [`MAX_COMMENT`], a name of at most [`MAX_IF_NAME`], a few fixed fields): its length
    /// fits the block's 32-bit length field.
    fn write_block(&mut self, block_type: u32, body: &[u8]) -> io::Result<()> {
        let total = (body.len() + 12) as u32;
        self.out.write_all(&block_type.to_le_bytes())?;
        self.out.write_all(&total.to_le_bytes())?;
        self.out.write_all(body)?;
        self.out.write_all(&total.to_le_bytes())?;
        self.written += u64::from(total);
        Ok(())
    }
}

/// Appends an option (code, length, value padded to 32 bits).
fn push_option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&len.to_le_bytes());
    body.extend_from_slice(value.get(..usize::from(len)).unwrap_or(value));
    pad(body);
}

fn pad(body: &mut Vec<u8>) {
    while body.len() % 4 != 0 {
        body.push(0);
    }
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Walks the blocks: every total length is a multiple of 4 and repeated at the block's end.
    fn blocks(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (ty, len) = (u32_at(bytes, at), u32_at(bytes, at + 4) as usize);
            assert_eq!(len % 4, 0);
            assert_eq!(u32_at(bytes, at + len - 4) as usize, len, "trailing length");
            out.push((ty, bytes[at + 8..at + len - 4].to_vec()));
            at += len;
        }
        out
    }

    #[test]
    fn writes_section_interface_and_packets_with_comments() {
        let mut w = PcapngWriter::new(Vec::new(), "tun0").unwrap();
        let packet = [0x45u8, 0, 0, 21, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, 0xaa];
        w.write_packet(1_700_000_000_123_456, Direction::Inbound, &packet, Some("block tls_sni é")).unwrap();
        w.write_packet(1_700_000_000_123_457, Direction::Outbound, &packet[..20], None).unwrap();
        let bytes = w.into_inner();
        let blocks = blocks(&bytes);
        assert_eq!(blocks.iter().map(|b| b.0).collect::<Vec<_>>(), [SHB, IDB, EPB, EPB]);
        assert_eq!(u32_at(&blocks[0].1, 0), BYTE_ORDER_MAGIC);
        assert_eq!(u16::from_le_bytes([blocks[1].1[0], blocks[1].1[1]]), LINKTYPE_RAW);
        let epb = &blocks[2].1;
        let ts = (u64::from(u32_at(epb, 4)) << 32) | u64::from(u32_at(epb, 8));
        assert_eq!(ts, 1_700_000_000_123_456);
        assert_eq!((u32_at(epb, 12), u32_at(epb, 16)), (21, 21));
        assert_eq!(&epb[20..41], &packet);
        let comment = "block tls_sni é".as_bytes();
        assert!(epb.windows(comment.len()).any(|w| w == comment));
        assert_eq!(epb.len() % 4, 0);
    }

    #[test]
    fn long_comments_are_cut_on_a_character_boundary() {
        assert_eq!(truncate_utf8("ééé", 3), "é");
        let mut w = PcapngWriter::new(Vec::new(), "t").unwrap();
        w.write_packet(0, Direction::Inbound, &[], Some(&"x".repeat(5000))).unwrap();
        let bytes = w.into_inner();
        assert!(blocks(&bytes)[2].1.len() < 1100);
    }

    #[test]
    fn the_cap_stops_writing_at_a_block_boundary_and_counts_what_was_left_out() {
        let packet = [0x45u8; 100];
        let mut uncapped = PcapngWriter::new(Vec::new(), "t").unwrap();
        let headers = uncapped.written();
        uncapped.write_packet(0, Direction::Inbound, &packet, None).unwrap();
        let per_packet = uncapped.written() - headers;
        assert_eq!(uncapped.written(), uncapped.into_inner().len() as u64);

        // Room for the headers and three packets and a bit: the fourth and later are counted, not written.
        let max = headers + 3 * per_packet + per_packet / 2;
        let mut w = PcapngWriter::new(Vec::new(), "t").unwrap();
        w.set_max_bytes(max);
        for i in 0..10 {
            w.write_packet(i, Direction::Inbound, &packet, None).unwrap();
        }
        assert_eq!(w.not_written(), 7);
        assert_eq!(w.written(), headers + 3 * per_packet);
        let bytes = w.into_inner();
        assert!(bytes.len() as u64 <= max);
        assert_eq!(blocks(&bytes).len(), 2 + 3, "a valid pcapng of whole blocks");
        // A smaller packet that still fits is written.
        let mut w = PcapngWriter::new(Vec::new(), "t").unwrap();
        w.set_max_bytes(headers + per_packet);
        w.write_packet(0, Direction::Inbound, &[0x45; 200], None).unwrap();
        w.write_packet(1, Direction::Inbound, &packet, None).unwrap();
        assert_eq!((w.not_written(), w.written()), (1, headers + per_packet));
    }

    #[test]
    fn a_packet_too_long_for_a_block_is_counted_and_a_long_name_cut() {
        let mut w = PcapngWriter::new(Vec::new(), &"é".repeat(MAX_IF_NAME)).unwrap();
        let headers = w.written();
        w.write_packet(0, Direction::Inbound, &vec![0x45; MAX_PACKET + 1], None).unwrap();
        w.write_packet(1, Direction::Inbound, &vec![0x45; MAX_PACKET], None).unwrap();
        assert_eq!(w.not_written(), 1, "only the packet over the limit is left out");
        let bytes = w.into_inner();
        let blocks = blocks(&bytes);
        assert_eq!(blocks.len(), 3, "a valid pcapng of whole blocks");
        assert!(headers < 2 * MAX_IF_NAME as u64, "the name was cut: {headers} bytes of headers");
    }
}
