//! A minimal pcapng writer (draft-ietf-opsawg-pcapng) for what the engine saw on the tun.
//!
//! One section, one interface with link type `LINKTYPE_RAW` (101: each packet starts with its IPv4 or IPv6
//! header, as on a tun), microsecond timestamps, and one Enhanced Packet Block per packet with its direction
//! (`epb_flags`) and, for the packets that decided a flow, an `opt_comment` with the verdict and reason. Wireshark
//! and tshark read it (`tshark -r FILE -Y frame.comment -T fields -e frame.comment`).
//!
//! [`Capture`] is the shareable handle the engine writes through ([`crate::engine::EngineConfig::capture`]); the
//! writer itself works on any [`Write`].

use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

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

/// Which way a packet crossed the tun, seen from the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Read from the tun: sent by the phone.
    Inbound,
    /// Written to the tun: sent to the phone.
    Outbound,
}

/// Writes a pcapng stream: the section and interface headers on creation, then one block per packet.
#[derive(Debug)]
pub struct PcapngWriter<W: Write> {
    out: W,
    block: Vec<u8>,
}

impl<W: Write> PcapngWriter<W> {
    /// Starts a capture on `out`: writes the Section Header and the Interface Description (`if_name`, raw IP).
    pub fn new(out: W, if_name: &str) -> io::Result<Self> {
        let mut w = PcapngWriter { out, block: Vec::new() };
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
        push_option(&mut body, IF_NAME, if_name.as_bytes());
        push_option(&mut body, OPT_END, &[]);
        w.write_block(IDB, &body)?;
        Ok(w)
    }

    /// Writes one packet captured at `timestamp_us` (microseconds since the Unix epoch), with an optional comment.
    pub fn write_packet(
        &mut self,
        timestamp_us: u64,
        direction: Direction,
        data: &[u8],
        comment: Option<&str>,
    ) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
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
        let result = self.write_block(EPB, &body);
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

    fn write_block(&mut self, block_type: u32, body: &[u8]) -> io::Result<()> {
        let total = u32::try_from(body.len() + 12).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.out.write_all(&block_type.to_le_bytes())?;
        self.out.write_all(&total.to_le_bytes())?;
        self.out.write_all(body)?;
        self.out.write_all(&total.to_le_bytes())
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

/// A pcapng capture shared between the engine (which writes every tun packet to it) and its owner (which flushes
/// it at the end). Cloning shares the same writer.
#[derive(Clone)]
pub struct Capture(Arc<Mutex<PcapngWriter<Box<dyn Write + Send>>>>);

impl Capture {
    /// Starts a capture on `out` (the headers are written at once).
    pub fn new(out: impl Write + Send + 'static) -> io::Result<Capture> {
        let writer = PcapngWriter::new(Box::new(out) as Box<dyn Write + Send>, "hushwall-tun")?;
        Ok(Capture(Arc::new(Mutex::new(writer))))
    }

    /// Runs `f` on the writer (a poisoned lock is taken over: the writer holds no invariant a panic could break).
    pub fn with<R>(&self, f: impl FnOnce(&mut PcapngWriter<Box<dyn Write + Send>>) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Flushes the underlying writer.
    pub fn flush(&self) -> io::Result<()> {
        self.with(|w| w.flush())
    }
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Capture(pcapng)")
    }
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
    fn shared_capture_writes_through_clones() {
        #[derive(Clone, Default)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let sink = Shared::default();
        let capture = Capture::new(sink.clone()).unwrap();
        let clone = capture.clone();
        clone.with(|w| w.write_packet(1, Direction::Outbound, &[0x60; 40], None)).unwrap();
        capture.flush().unwrap();
        assert_eq!(blocks(&sink.0.lock().unwrap()).len(), 3);
        assert_eq!(format!("{capture:?}"), "Capture(pcapng)");
    }
}
