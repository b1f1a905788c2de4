//! The server name in a QUIC client's Initial packets (QUIC v1, RFC 9000/9001; QUIC v2, RFC 9369).
//!
//! A client's Initial packets are encrypted, but with keys anyone can derive: they come from the Destination
//! Connection ID the client chose and a salt fixed by the version (RFC 9001 §5.2). So no secret is needed to read
//! the TLS ClientHello they carry: derive the keys, remove header protection (§5.4), open the AEAD (§5.3), walk the
//! frames, and put the CRYPTO frames' data back in order by offset. The ClientHello may span several CRYPTO frames,
//! Initial packets and datagrams (post-quantum key shares make it larger than one packet), and frames may come out
//! of order; [`ClientHelloAssembler`] collects them, bounded, and hands the contiguous start of the stream to the
//! TLS scanner ([`super::tls::scan_client_hello`]). The server must read the same ClientHello as we do, so any
//! ambiguity (overlapping CRYPTO data that differs, Initials the server discards or attributes to another
//! connection) makes the flow [`QuicScan::Uninspectable`] rather than judged on one of two readings.
//!
//! Nothing here panics on any input, and memory per flow is bounded by [`MAX_CRYPTO_LEN`].

use super::tls::{scan_client_hello, ClientHelloScan};
use aes::cipher::{generic_array::GenericArray, BlockEncrypt};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes128Gcm;
use hkdf::Hkdf;
use sha2::Sha256;

/// QUIC version 1 (RFC 9000).
pub const VERSION_1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369 §3.1).
pub const VERSION_2: u32 = 0x6b33_43cf;

/// Initial salt of QUIC v1 (RFC 9001 §5.2).
const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f,
    0x0a,
];
/// Initial salt of QUIC v2 (RFC 9369 §3.3.1).
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9, 0xbd, 0x2e,
    0xd9,
];

/// Most CRYPTO-stream bytes collected per flow. Real ClientHellos are 250 B to a few KiB (two Initial packets with
/// ML-KEM key shares); one that does not fit is [`QuicScan::Uninspectable`].
pub const MAX_CRYPTO_LEN: usize = 16 * 1024;
/// Most disjoint pieces of the CRYPTO stream kept while waiting for the gaps between them to fill.
const MAX_PIECES: usize = 32;
/// Longest connection ID (RFC 9000 §17.2).
const MAX_CID_LEN: usize = 20;
/// AES-128 key and header-protection key length.
const KEY_LEN: usize = 16;
/// AEAD nonce length.
const IV_LEN: usize = 12;
/// AEAD tag length.
const TAG_LEN: usize = 16;
/// Header-protection sample length (RFC 9001 §5.4.2).
const SAMPLE_LEN: usize = 16;
/// Largest TLS record fragment, used to wrap CRYPTO data in records for the TLS scanner.
const RECORD_MAX: usize = 1 << 14;

/// The client's Initial packet protection keys (RFC 9001 §5.1–5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialKeys {
    /// AEAD_AES_128_GCM key.
    pub key: [u8; KEY_LEN],
    /// AEAD IV, XORed with the packet number to make the nonce.
    pub iv: [u8; IV_LEN],
    /// Header-protection key (AES-128-ECB).
    pub hp: [u8; KEY_LEN],
}

/// The labels a version uses: (key, iv, hp).
fn labels(version: u32) -> Option<(&'static [u8; 20], &'static str, &'static str, &'static str)> {
    match version {
        VERSION_1 => Some((&SALT_V1, "quic key", "quic iv", "quic hp")),
        VERSION_2 => Some((&SALT_V2, "quicv2 key", "quicv2 iv", "quicv2 hp")),
        _ => None,
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(secret: &Hkdf<Sha256>, label: &str, out: &mut [u8]) -> Option<()> {
    let full_len = 6 + label.len();
    let mut info = Vec::with_capacity(4 + full_len);
    info.extend_from_slice(&u16::try_from(out.len()).ok()?.to_be_bytes());
    info.push(u8::try_from(full_len).ok()?);
    info.extend_from_slice(b"tls13 ");
    info.extend_from_slice(label.as_bytes());
    info.push(0);
    secret.expand(&info, out).ok()
}

/// The client's Initial keys for `version` (v1 or v2) and the Destination Connection ID of its first Initial;
/// `None` for other versions.
pub fn client_initial_keys(version: u32, dcid: &[u8]) -> Option<InitialKeys> {
    let (salt, key_label, iv_label, hp_label) = labels(version)?;
    let (_, initial) = Hkdf::<Sha256>::extract(Some(salt), dcid);
    let mut client_secret = [0u8; 32];
    expand_label(&initial, "client in", &mut client_secret)?;
    let client = Hkdf::<Sha256>::from_prk(&client_secret).ok()?;
    let mut keys = InitialKeys { key: [0; KEY_LEN], iv: [0; IV_LEN], hp: [0; KEY_LEN] };
    expand_label(&client, key_label, &mut keys.key)?;
    expand_label(&client, iv_label, &mut keys.iv)?;
    expand_label(&client, hp_label, &mut keys.hp)?;
    Some(keys)
}

/// Why a datagram's first packet is not a client Initial we can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InitialError {
    /// Not a long-header packet (short header, or empty).
    NotLongHeader,
    /// A long header of a version other than v1 and v2 (or version negotiation).
    UnsupportedVersion,
    /// A long-header packet of another type (0-RTT, Handshake, Retry).
    NotInitial,
    /// The packet is shorter than its header says.
    Truncated,
    /// A field is out of range (connection ID too long, too short to sample).
    Malformed,
    /// The AEAD did not open: not a client Initial, or corrupted.
    Decrypt,
}

/// A decrypted client Initial packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInitial {
    /// QUIC version.
    pub version: u32,
    /// Destination Connection ID.
    pub dcid: Vec<u8>,
    /// Packet number (as sent: client Initial packet numbers start at 0, so no expansion is needed).
    pub packet_number: u64,
    /// The decrypted frames.
    pub payload: Vec<u8>,
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn u8(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([*b.first()?, *b.get(1)?, *b.get(2)?, *b.get(3)?]))
    }

    /// A variable-length integer (RFC 9000 §16).
    fn varint(&mut self) -> Option<u64> {
        let first = self.u8()?;
        let len = 1usize << (first >> 6);
        let mut value = u64::from(first & 0x3f);
        for &b in self.take(len - 1)? {
            value = value << 8 | u64::from(b);
        }
        Some(value)
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

/// Whether a long header's type bits say Initial: 0b00 in v1, 0b01 in v2 (RFC 9369 §3.2).
fn is_initial_type(version: u32, first: u8) -> bool {
    let ty = (first >> 4) & 0x03;
    match version {
        VERSION_1 => ty == 0b00,
        VERSION_2 => ty == 0b01,
        _ => false,
    }
}

/// Opens the client Initial packet at the start of `datagram`. Returns it and the number of bytes it occupies
/// (a datagram may carry further coalesced packets after it, RFC 9000 §12.2).
pub fn open_client_initial(datagram: &[u8]) -> Result<(ClientInitial, usize), InitialError> {
    let mut r = Reader::new(datagram);
    let first = r.u8().ok_or(InitialError::NotLongHeader)?;
    if first & 0x80 == 0 {
        return Err(InitialError::NotLongHeader);
    }
    let version = r.u32().ok_or(InitialError::Truncated)?;
    if labels(version).is_none() {
        return Err(InitialError::UnsupportedVersion);
    }
    if !is_initial_type(version, first) {
        return Err(InitialError::NotInitial);
    }
    let dcid_len = usize::from(r.u8().ok_or(InitialError::Truncated)?);
    if dcid_len > MAX_CID_LEN {
        return Err(InitialError::Malformed);
    }
    let dcid = r.take(dcid_len).ok_or(InitialError::Truncated)?;
    let scid_len = usize::from(r.u8().ok_or(InitialError::Truncated)?);
    if scid_len > MAX_CID_LEN {
        return Err(InitialError::Malformed);
    }
    r.take(scid_len).ok_or(InitialError::Truncated)?;
    let token_len = r.varint().ok_or(InitialError::Truncated)?;
    r.take(usize::try_from(token_len).map_err(|_| InitialError::Truncated)?).ok_or(InitialError::Truncated)?;
    let length = r.varint().ok_or(InitialError::Truncated)?;
    let length = usize::try_from(length).map_err(|_| InitialError::Truncated)?;
    let pn_offset = r.pos;
    let end = pn_offset.checked_add(length).ok_or(InitialError::Truncated)?;
    let packet = datagram.get(..end).ok_or(InitialError::Truncated)?;
    // The sample starts 4 bytes after the packet number offset, whatever the packet number length (§5.4.2).
    if length < 4 + SAMPLE_LEN {
        return Err(InitialError::Malformed);
    }
    let keys = client_initial_keys(version, dcid).ok_or(InitialError::UnsupportedVersion)?;
    let sample: [u8; SAMPLE_LEN] = packet
        .get(pn_offset + 4..pn_offset + 4 + SAMPLE_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(InitialError::Truncated)?;
    let mask = header_protection_mask(&keys.hp, sample);
    let mut header = packet.get(..pn_offset).ok_or(InitialError::Truncated)?.to_vec();
    let unmasked_first = first ^ (mask[0] & 0x0f);
    if let Some(b) = header.first_mut() {
        *b = unmasked_first;
    }
    let pn_len = usize::from(unmasked_first & 0x03) + 1;
    let mut packet_number = 0u64;
    for i in 0..pn_len {
        let byte = packet.get(pn_offset + i).ok_or(InitialError::Truncated)? ^ mask.get(1 + i).copied().unwrap_or(0);
        header.push(byte);
        packet_number = packet_number << 8 | u64::from(byte);
    }
    let ciphertext = packet.get(pn_offset + pn_len..).ok_or(InitialError::Truncated)?;
    if ciphertext.len() < TAG_LEN {
        return Err(InitialError::Malformed);
    }
    let payload = aead_open(&keys, packet_number, &header, ciphertext).ok_or(InitialError::Decrypt)?;
    Ok((ClientInitial { version, dcid: dcid.to_vec(), packet_number, payload }, end))
}

/// AES-ECB of the sample with the header-protection key (RFC 9001 §5.4.3).
fn header_protection_mask(hp: &[u8; KEY_LEN], sample: [u8; SAMPLE_LEN]) -> [u8; SAMPLE_LEN] {
    let cipher = aes::Aes128::new(&GenericArray::from(*hp));
    let mut block = GenericArray::from(sample);
    cipher.encrypt_block(&mut block);
    block.into()
}

/// The AEAD nonce: the IV XORed with the packet number (RFC 9001 §5.3).
fn nonce(iv: &[u8; IV_LEN], packet_number: u64) -> [u8; IV_LEN] {
    let mut nonce = *iv;
    for (n, p) in nonce.iter_mut().skip(IV_LEN - 8).zip(packet_number.to_be_bytes()) {
        *n ^= p;
    }
    nonce
}

fn aead_open(keys: &InitialKeys, packet_number: u64, header: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes128Gcm::new(&GenericArray::from(keys.key));
    let nonce = GenericArray::from(nonce(&keys.iv, packet_number));
    cipher.decrypt(&nonce, Payload { msg: ciphertext, aad: header }).ok()
}

/// The CRYPTO frames (offset, data) in a decrypted Initial payload, in packet order. Parsing stops at the first
/// frame type not allowed in Initial packets (RFC 9000 §12.4) or at a malformed frame; what was read so far is kept.
pub fn crypto_frames(payload: &[u8]) -> Vec<(u64, &[u8])> {
    let mut frames = Vec::new();
    let mut r = Reader::new(payload);
    while !r.is_empty() {
        let Some(ty) = r.varint() else { break };
        let ok = match ty {
            0x00 | 0x01 => Some(()),
            0x02 | 0x03 => skip_ack(&mut r, ty == 0x03),
            0x06 => r.varint().and_then(|offset| {
                let len = usize::try_from(r.varint()?).ok()?;
                frames.push((offset, r.take(len)?));
                Some(())
            }),
            _ => None,
        };
        if ok.is_none() {
            break;
        }
    }
    frames
}

/// Skips an ACK frame body (RFC 9000 §19.3).
fn skip_ack(r: &mut Reader<'_>, ecn: bool) -> Option<()> {
    r.varint()?; // largest acknowledged
    r.varint()?; // delay
    let ranges = r.varint()?;
    r.varint()?; // first range
    for _ in 0..ranges.min(1024) {
        r.varint()?;
        r.varint()?;
    }
    if ecn {
        for _ in 0..3 {
            r.varint()?;
        }
    }
    Some(())
}

/// What the client's Initial packets seen so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuicScan {
    /// A QUIC client Initial whose ClientHello is not complete yet.
    NeedMore,
    /// A complete ClientHello naming this host (lowercase, without a trailing dot).
    Sni(String),
    /// A complete ClientHello without a usable host name.
    NoSni,
    /// The first datagram is not a QUIC v1/v2 client Initial.
    NotQuic,
    /// A client Initial was opened, but what the server would read cannot be known for sure: CRYPTO data that
    /// overlaps earlier data with different bytes, an Initial in a datagram under [`MIN_INITIAL_DATAGRAM`] bytes
    /// (servers discard those, RFC 9000 §14.1), an Initial of another connection ID or version than the first,
    /// a CRYPTO stream beyond the bounds or one that is not a ClientHello. The caller refuses the flow: judging
    /// one reading while the server acts on another is how a blocked name gets through.
    Uninspectable,
}

/// Smallest UDP payload that may carry a client Initial (RFC 9000 §14.1: servers must discard smaller ones).
pub const MIN_INITIAL_DATAGRAM: usize = 1200;

/// Why CRYPTO data could not be added to the stream.
enum InsertError {
    /// Beyond [`MAX_CRYPTO_LEN`], or too fragmented.
    Bounds,
    /// It overlaps data already held with different bytes.
    Conflict,
}

/// Collects the CRYPTO stream of one flow's client Initial packets, bounded, and reads the ClientHello from it.
#[derive(Debug, Default)]
pub struct ClientHelloAssembler {
    /// CRYPTO stream bytes, indexed by offset; holes are zero until filled.
    stream: Vec<u8>,
    /// Filled byte ranges of `stream`, sorted and disjoint: `(start, end)`.
    filled: Vec<(usize, usize)>,
    /// Version and Destination Connection ID of the first Initial opened: every later one must match.
    first: Option<(u32, Vec<u8>)>,
    /// Final answer, once reached.
    done: Option<QuicScan>,
}

impl ClientHelloAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one UDP datagram from the client and says what is known now.
    ///
    /// The first datagram decides whether the flow is QUIC at all: if it does not start with a client Initial that
    /// opens, the answer is [`QuicScan::NotQuic`]. Later datagrams without an Initial (0-RTT, garbage) change
    /// nothing. Anything that could make the server read another ClientHello than the one judged here gives
    /// [`QuicScan::Uninspectable`]. Once an answer other than `NeedMore` is reached it is kept.
    pub fn push_datagram(&mut self, datagram: &[u8]) -> QuicScan {
        if let Some(done) = &self.done {
            return done.clone();
        }
        let mut rest = datagram;
        let mut opened_any = false;
        // Coalesced packets (RFC 9000 §12.2): an Initial may be followed by 0-RTT packets, which are skipped.
        while !rest.is_empty() {
            let Ok((initial, used)) = open_client_initial(rest) else {
                break;
            };
            opened_any = true;
            let first = self.first.get_or_insert_with(|| (initial.version, initial.dcid.clone()));
            if datagram.len() < MIN_INITIAL_DATAGRAM || *first != (initial.version, initial.dcid.clone()) {
                return self.finish(QuicScan::Uninspectable);
            }
            for (offset, data) in crypto_frames(&initial.payload) {
                if self.insert(offset, data).is_err() {
                    return self.finish(QuicScan::Uninspectable);
                }
            }
            rest = rest.get(used..).unwrap_or_default();
        }
        if !opened_any && self.first.is_none() {
            return self.finish(QuicScan::NotQuic);
        }
        match self.scan() {
            QuicScan::NeedMore => QuicScan::NeedMore,
            decided => self.finish(decided),
        }
    }

    fn finish(&mut self, scan: QuicScan) -> QuicScan {
        self.done = Some(scan.clone());
        // The bytes are no longer needed.
        self.stream = Vec::new();
        self.filled = Vec::new();
        scan
    }

    /// Copies CRYPTO data at `offset`. Data overlapping what is held must repeat it byte for byte (a
    /// retransmission); data that differs is refused, as is data beyond the bound or fragmenting the stream too much.
    fn insert(&mut self, offset: u64, data: &[u8]) -> Result<(), InsertError> {
        if data.is_empty() {
            return Ok(());
        }
        let start = usize::try_from(offset).map_err(|_| InsertError::Bounds)?;
        let end = start.checked_add(data.len()).ok_or(InsertError::Bounds)?;
        if end > MAX_CRYPTO_LEN {
            return Err(InsertError::Bounds);
        }
        let differs = self.filled.iter().any(|&(s, e)| {
            let (lo, hi) = (s.max(start), e.min(end));
            lo < hi && self.stream.get(lo..hi) != data.get(lo - start..hi - start)
        });
        if differs {
            return Err(InsertError::Conflict);
        }
        if self.stream.len() < end {
            self.stream.resize(end, 0);
        }
        if let Some(dst) = self.stream.get_mut(start..end) {
            dst.copy_from_slice(data);
        }
        // Merge (start, end) into the sorted, disjoint ranges.
        let (mut lo, mut hi) = (start, end);
        self.filled.retain(|&(s, e)| {
            if e < lo || s > hi {
                true
            } else {
                lo = lo.min(s);
                hi = hi.max(e);
                false
            }
        });
        let at = self.filled.partition_point(|&(s, _)| s < lo);
        self.filled.insert(at, (lo, hi));
        if self.filled.len() > MAX_PIECES {
            return Err(InsertError::Bounds);
        }
        Ok(())
    }

    /// Scans the contiguous start of the CRYPTO stream.
    fn scan(&self) -> QuicScan {
        let contiguous = match self.filled.first() {
            Some(&(0, end)) => end,
            _ => return QuicScan::NeedMore,
        };
        let Some(prefix) = self.stream.get(..contiguous) else {
            return QuicScan::NeedMore;
        };
        match scan_client_hello(&as_tls_records(prefix)) {
            ClientHelloScan::NeedMore if contiguous >= MAX_CRYPTO_LEN => QuicScan::Uninspectable,
            ClientHelloScan::NeedMore => QuicScan::NeedMore,
            ClientHelloScan::Sni(name) => QuicScan::Sni(name),
            ClientHelloScan::NoSni => QuicScan::NoSni,
            ClientHelloScan::NotTls => QuicScan::Uninspectable,
        }
    }
}

/// Wraps handshake bytes in TLS handshake records so the TCP scanner can read them (QUIC carries TLS handshake
/// messages without the record layer, RFC 9001 §4).
fn as_tls_records(handshake: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(handshake.len() + 5 * (handshake.len() / RECORD_MAX + 1));
    for chunk in handshake.chunks(RECORD_MAX) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Builds protected client Initial packets, for tests of this module and of the engine, and for the `quic` fuzz
/// target (feature `quic-seal`), which needs valid Initials to reach frame parsing past the AEAD.
#[cfg(any(test, feature = "quic-seal"))]
pub mod seal {
    use super::*;

    /// A protected client Initial: `frames` (plaintext) padded with PADDING so the packet is `size` bytes, with a
    /// 4-byte packet number and an empty SCID and token.
    pub fn client_initial(version: u32, dcid: &[u8], pn: u32, frames: &[u8], size: usize) -> Vec<u8> {
        let first = match version {
            VERSION_2 => 0xd3,
            _ => 0xc3,
        };
        let mut header = vec![first];
        header.extend_from_slice(&version.to_be_bytes());
        header.push(dcid.len() as u8);
        header.extend_from_slice(dcid);
        header.extend_from_slice(&[0x00, 0x00]); // SCID length, token length
        let overhead = header.len() + 2 + 4 + TAG_LEN;
        let mut payload = frames.to_vec();
        payload.resize(size.saturating_sub(overhead).max(frames.len()), 0);
        let length = (4 + payload.len() + TAG_LEN) as u16 | 0x4000;
        header.extend_from_slice(&length.to_be_bytes());
        let pn_offset = header.len();
        header.extend_from_slice(&pn.to_be_bytes());
        protect(version, dcid, &header, pn_offset, u64::from(pn), &payload)
    }

    /// Encrypts `payload` under `header` (unprotected, ending with a 4-byte packet number at `pn_offset`) and
    /// applies header protection.
    pub fn protect(version: u32, dcid: &[u8], header: &[u8], pn_offset: usize, pn: u64, payload: &[u8]) -> Vec<u8> {
        let keys = client_initial_keys(version, dcid).unwrap();
        let cipher = Aes128Gcm::new(&GenericArray::from(keys.key));
        let nonce = GenericArray::from(nonce(&keys.iv, pn));
        let sealed = cipher.encrypt(&nonce, Payload { msg: payload, aad: header }).unwrap();
        let mut packet = header.to_vec();
        packet.extend_from_slice(&sealed);
        let sample: [u8; 16] = packet[pn_offset + 4..pn_offset + 20].try_into().unwrap();
        let mask = header_protection_mask(&keys.hp, sample);
        let pn_len = usize::from(packet[0] & 0x03) + 1;
        packet[0] ^= mask[0] & 0x0f;
        for i in 0..pn_len {
            packet[pn_offset + i] ^= mask[1 + i];
        }
        packet
    }

    /// A CRYPTO frame.
    pub fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x06];
        f.extend_from_slice(&(0x8000_0000u32 | offset as u32).to_be_bytes());
        f.extend_from_slice(&(0x4000u16 | data.len() as u16).to_be_bytes());
        f.extend_from_slice(data);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::seal::{client_initial, crypto_frame, protect};
    use super::*;
    use proptest::prelude::*;

    fn unhex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| l.bytes())
            .filter(u8::is_ascii_hexdigit)
            .map(|c| (c as char).to_digit(16).unwrap() as u8)
            .collect();
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    const DCID: &str = "8394c8f03e515708";
    /// RFC 9001 A.2 / RFC 9369 A.2: the client's CRYPTO frame (a ClientHello for example.com).
    const RFC_CRYPTO_FRAME: &str = "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868\
        04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578\
        616d706c652e636f6dff01000100000a00080006001d00170018001000070005\
        04616c706e000500050100000000003300260024001d00209370b2c9caa47fba\
        baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400\
        0d0010000e0403050306030203080408050806002d00020101001c0002400100\
        3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000\
        75300901100f088394c8f03e51570806048000ffff";

    fn v1_packet() -> Vec<u8> {
        unhex(include_str!("testdata/quic_v1_client_initial.hex"))
    }

    fn v2_packet() -> Vec<u8> {
        unhex(include_str!("testdata/quic_v2_client_initial.hex"))
    }

    /// The ClientHello message of the RFC vectors (the CRYPTO frame's data).
    fn rfc_client_hello() -> Vec<u8> {
        unhex(RFC_CRYPTO_FRAME)[4..].to_vec()
    }

    /// The edges of the header: a 20-byte connection ID is allowed and 21 is not (RFC 9000 §17.2); a packet just
    /// long enough to sample its header protection (20 bytes after the packet number offset) opens.
    #[test]
    fn header_field_limits() {
        assert!(open_client_initial(&client_initial(VERSION_1, &[1; 20], 0, &crypto_frame(0, b"x"), 1200)).is_ok());
        let long_cid = client_initial(VERSION_1, &[1; 21], 0, &crypto_frame(0, b"x"), 1200);
        assert_eq!(open_client_initial(&long_cid).err(), Some(InitialError::Malformed));
        let shortest = client_initial(VERSION_1, &[1; 8], 0, &[], 0);
        assert!(open_client_initial(&shortest).is_ok(), "a Length of exactly 20");
    }

    #[test]
    fn rfc9001_client_keys() {
        let keys = client_initial_keys(VERSION_1, &unhex(DCID)).unwrap();
        assert_eq!(keys.key.to_vec(), unhex("1f369613dd76d5467730efcbe3b1a22d"));
        assert_eq!(keys.iv.to_vec(), unhex("fa044b2f42a3fd3b46fb255c"));
        assert_eq!(keys.hp.to_vec(), unhex("9f50449e04a0e810283a1e9933adedd2"));
    }

    #[test]
    fn rfc9369_client_keys() {
        let keys = client_initial_keys(VERSION_2, &unhex(DCID)).unwrap();
        assert_eq!(keys.key.to_vec(), unhex("8b1a0bc121284290a29e0971b5cd045d"));
        assert_eq!(keys.iv.to_vec(), unhex("91f73e2351d8fa91660e909f"));
        assert_eq!(keys.hp.to_vec(), unhex("45b95e15235d6f45a6b19cbcb0294ba9"));
        assert_eq!(client_initial_keys(0xff00_001d, &unhex(DCID)), None);
    }

    #[test]
    fn rfc9001_protected_client_initial_opens_to_example_com() {
        let packet = v1_packet();
        assert_eq!(packet.len(), 1200);
        let (initial, used) = open_client_initial(&packet).unwrap();
        assert_eq!(used, 1200);
        assert_eq!((initial.version, initial.packet_number), (VERSION_1, 2));
        assert_eq!(initial.dcid, unhex(DCID));
        assert_eq!(initial.payload.len(), 1162);
        assert_eq!(&initial.payload[..245], &unhex(RFC_CRYPTO_FRAME)[..]);
        assert!(initial.payload[245..].iter().all(|&b| b == 0));
        let mut asm = ClientHelloAssembler::new();
        assert_eq!(asm.push_datagram(&packet), QuicScan::Sni("example.com".into()));
    }

    #[test]
    fn rfc9369_protected_client_initial_opens_to_example_com() {
        let packet = v2_packet();
        let (initial, _) = open_client_initial(&packet).unwrap();
        assert_eq!((initial.version, initial.packet_number), (VERSION_2, 2));
        let mut asm = ClientHelloAssembler::new();
        assert_eq!(asm.push_datagram(&packet), QuicScan::Sni("example.com".into()));
    }

    /// The test sealer reproduces the RFC packets byte for byte, so packets it builds are real Initials.
    #[test]
    fn sealer_reproduces_the_rfc_packets() {
        let mut payload = unhex(RFC_CRYPTO_FRAME);
        payload.resize(1162, 0);
        let v1_header = unhex("c300000001088394c8f03e5157080000449e00000002");
        assert_eq!(protect(VERSION_1, &unhex(DCID), &v1_header, 18, 2, &payload), v1_packet());
        let v2_header = unhex("d36b3343cf088394c8f03e5157080000449e00000002");
        assert_eq!(protect(VERSION_2, &unhex(DCID), &v2_header, 18, 2, &payload), v2_packet());
    }

    #[test]
    fn tampered_packets_do_not_open() {
        let mut packet = v1_packet();
        packet[600] ^= 1;
        assert_eq!(open_client_initial(&packet).map(|_| ()), Err(InitialError::Decrypt));
        let mut asm = ClientHelloAssembler::new();
        assert_eq!(asm.push_datagram(&packet), QuicScan::NotQuic);
        // A v2 packet with its version changed to v1 derives other keys.
        let mut packet = v2_packet();
        packet[1..5].copy_from_slice(&VERSION_1.to_be_bytes());
        assert!(open_client_initial(&packet).is_err());
    }

    #[test]
    fn other_packets_are_not_initials() {
        assert_eq!(open_client_initial(&[]).map(|_| ()), Err(InitialError::NotLongHeader));
        assert_eq!(open_client_initial(&[0x40, 1, 2, 3]).map(|_| ()), Err(InitialError::NotLongHeader));
        let mut packet = v1_packet();
        packet[1..5].copy_from_slice(&0xff00_001du32.to_be_bytes());
        assert_eq!(open_client_initial(&packet).map(|_| ()), Err(InitialError::UnsupportedVersion));
        let mut packet = v1_packet();
        packet[0] = 0xd0; // v1 0-RTT
        assert_eq!(open_client_initial(&packet).map(|_| ()), Err(InitialError::NotInitial));
        for cut in [1, 5, 6, 10, 20, 40, 1199] {
            assert!(open_client_initial(&v1_packet()[..cut]).is_err(), "cut {cut}");
        }
        let dns = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
        assert_eq!(ClientHelloAssembler::new().push_datagram(dns), QuicScan::NotQuic);
    }

    #[test]
    fn client_hello_split_across_datagrams_and_out_of_order() {
        let hello = rfc_client_hello();
        let dcid = [0x11; 8];
        let (a, b, c) = (&hello[..100], &hello[100..180], &hello[180..]);
        // Datagram 1 carries the last piece and the first; datagram 2 the middle.
        let mut frames1 = crypto_frame(180, c);
        frames1.extend(crypto_frame(0, a));
        let d1 = client_initial(VERSION_1, &dcid, 0, &frames1, 1200);
        let d2 = client_initial(VERSION_1, &dcid, 1, &crypto_frame(100, b), 1200);
        let mut asm = ClientHelloAssembler::new();
        assert_eq!(asm.push_datagram(&d1), QuicScan::NeedMore);
        assert_eq!(asm.push_datagram(&d2), QuicScan::Sni("example.com".into()));
        // The answer is kept.
        assert_eq!(asm.push_datagram(b"junk"), QuicScan::Sni("example.com".into()));

        // Only the tail first, then the head: still found; a retransmitted overlap changes nothing.
        let mut asm = ClientHelloAssembler::new();
        assert_eq!(
            asm.push_datagram(&client_initial(VERSION_2, &dcid, 0, &crypto_frame(50, &hello[50..]), 1200)),
            QuicScan::NeedMore
        );
        assert_eq!(
            asm.push_datagram(&client_initial(VERSION_2, &dcid, 1, &crypto_frame(20, &hello[20..60]), 1200)),
            QuicScan::NeedMore
        );
        assert_eq!(
            asm.push_datagram(&client_initial(VERSION_2, &dcid, 2, &crypto_frame(0, &hello[..30]), 1200)),
            QuicScan::Sni("example.com".into())
        );
    }

    /// A four-byte packet number is read whole (it is part of the nonce).
    #[test]
    fn a_long_packet_number_opens() {
        let packet = client_initial(VERSION_1, &[1; 8], 0x0102_0304, &crypto_frame(0, b"x"), 1200);
        assert_eq!(open_client_initial(&packet).unwrap().0.packet_number, 0x0102_0304);
    }

    /// The assembler's bounds: 32 separate pieces and no more; 16 KiB of contiguous CRYPTO data still short of
    /// a whole ClientHello is uninspectable rather than awaited.
    #[test]
    fn assembler_bounds() {
        let pieces = |n: u64| (0..n).flat_map(|i| crypto_frame(100 + 2 * i, b"x")).collect::<Vec<u8>>();
        let mut asm = ClientHelloAssembler::new();
        assert_eq!(asm.push_datagram(&client_initial(VERSION_1, &[1; 8], 0, &pieces(32), 1200)), QuicScan::NeedMore);
        let mut asm = ClientHelloAssembler::new();
        let too_many = client_initial(VERSION_1, &[1; 8], 0, &pieces(33), 1200);
        assert_eq!(asm.push_datagram(&too_many), QuicScan::Uninspectable);
        // A ClientHello header claiming 60,000 bytes, then 16 KiB of it.
        let mut start = vec![0x01, 0x00, 0xea, 0x60];
        start.resize(MAX_CRYPTO_LEN, 0);
        let mut asm = ClientHelloAssembler::new();
        let half = MAX_CRYPTO_LEN / 2;
        let first = client_initial(VERSION_1, &[1; 8], 0, &crypto_frame(0, &start[..half]), half + 100);
        assert_eq!(asm.push_datagram(&first), QuicScan::NeedMore);
        let second = client_initial(VERSION_1, &[1; 8], 1, &crypto_frame(half as u64, &start[half..]), half + 100);
        assert_eq!(asm.push_datagram(&second), QuicScan::Uninspectable);
    }

    /// A client Initial like [`client_initial`]'s (a CRYPTO frame of one byte, padded), with a source connection ID
    /// of `scid_len` bytes.
    fn initial_with_scid(scid_len: usize) -> Vec<u8> {
        let dcid = [1u8; 8];
        let mut header = vec![0xc3];
        header.extend_from_slice(&VERSION_1.to_be_bytes());
        header.push(8);
        header.extend_from_slice(&dcid);
        header.push(scid_len as u8);
        header.resize(header.len() + scid_len, 2);
        header.push(0); // token length
        let mut payload = crypto_frame(0, b"x");
        payload.resize(1100, 0);
        let length = (4 + payload.len() + TAG_LEN) as u16 | 0x4000;
        header.extend_from_slice(&length.to_be_bytes());
        let pn_offset = header.len();
        header.extend_from_slice(&0u32.to_be_bytes());
        protect(VERSION_1, &dcid, &header, pn_offset, 0, &payload)
    }

    /// RFC 9000 §17.2: a connection ID is at most 20 bytes, the source's as the destination's.
    #[test]
    fn a_source_connection_id_may_be_20_bytes_and_no_longer() {
        let packet = initial_with_scid(20);
        let (initial, used) = open_client_initial(&packet).expect("a 20-byte SCID opens");
        assert_eq!((crypto_frames(&initial.payload), used), (vec![(0, &b"x"[..])], packet.len()));
        assert_eq!(open_client_initial(&initial_with_scid(21)).err(), Some(InitialError::Malformed));
    }

    /// A piece far ahead of the ClientHello does not hide it once the hello's own bytes arrive.
    #[test]
    fn a_stray_piece_ahead_does_not_hide_the_hello() {
        let hello = rfc_client_hello();
        let mut asm = ClientHelloAssembler::new();
        let ahead = client_initial(VERSION_1, &[1; 8], 0, &crypto_frame(3000, b"zz"), 1200);
        assert_eq!(asm.push_datagram(&ahead), QuicScan::NeedMore);
        let whole = client_initial(VERSION_1, &[1; 8], 1, &crypto_frame(0, &hello), 1200);
        assert_eq!(asm.push_datagram(&whole), QuicScan::Sni("example.com".into()));
    }

    #[test]
    fn coalesced_initials_in_one_datagram() {
        let hello = rfc_client_hello();
        let dcid = [0x22; 8];
        let mut datagram = client_initial(VERSION_1, &dcid, 0, &crypto_frame(0, &hello[..120]), 200);
        datagram.extend(client_initial(VERSION_1, &dcid, 1, &crypto_frame(120, &hello[120..]), 1000));
        assert_eq!(ClientHelloAssembler::new().push_datagram(&datagram), QuicScan::Sni("example.com".into()));
    }

    #[test]
    fn later_non_initial_datagrams_are_ignored_until_decided() {
        let hello = rfc_client_hello();
        let dcid = [0x33; 8];
        let mut asm = ClientHelloAssembler::new();
        assert_eq!(
            asm.push_datagram(&client_initial(VERSION_1, &dcid, 0, &crypto_frame(0, &hello[..50]), 1200)),
            QuicScan::NeedMore
        );
        assert_eq!(asm.push_datagram(&[0x40; 100]), QuicScan::NeedMore);
        assert_eq!(
            asm.push_datagram(&client_initial(VERSION_1, &dcid, 1, &crypto_frame(50, &hello[50..]), 1200)),
            QuicScan::Sni("example.com".into())
        );
    }

    #[test]
    fn bounds() {
        let dcid = [0x44; 8];
        // Data beyond the bound; data ending exactly at it is kept.
        let far = client_initial(VERSION_1, &dcid, 0, &crypto_frame(MAX_CRYPTO_LEN as u64, b"x"), 1200);
        assert_eq!(ClientHelloAssembler::new().push_datagram(&far), QuicScan::Uninspectable);
        let last = client_initial(VERSION_1, &dcid, 0, &crypto_frame(MAX_CRYPTO_LEN as u64 - 1, b"x"), 1200);
        assert_eq!(ClientHelloAssembler::new().push_datagram(&last), QuicScan::NeedMore);
        // Too many pieces with gaps between them.
        let mut asm = ClientHelloAssembler::new();
        let mut last = QuicScan::NeedMore;
        for i in 0..(MAX_PIECES as u64 + 2) {
            last = asm.push_datagram(&client_initial(
                VERSION_1,
                &dcid,
                i as u32,
                &crypto_frame(10 + i * 10, b"abc"),
                1200,
            ));
        }
        assert_eq!(last, QuicScan::Uninspectable);
        // A CRYPTO stream that is not a ClientHello.
        let not_hello = client_initial(VERSION_1, &dcid, 0, &crypto_frame(0, b"\x02\x00\x00\x10hello"), 1200);
        assert_eq!(ClientHelloAssembler::new().push_datagram(&not_hello), QuicScan::Uninspectable);
    }

    /// A ClientHello like the RFC's naming `name` instead of `example.com` (same length as `name` must be).
    fn hello_naming(name: &str) -> Vec<u8> {
        let hello = rfc_client_hello();
        let at = hello.windows(11).position(|w| w == b"example.com").unwrap();
        let mut out = hello.clone();
        out.splice(at..at + 11, name.bytes());
        out
    }

    #[test]
    fn overlapping_crypto_data_that_differs_is_uninspectable() {
        let dcid = [0x55; 8];
        let (blocked, allowed) = (hello_naming("tracker.com"), hello_naming("allowed.org"));
        // Two coalesced Initials, both with CRYPTO at offset 0: the server reads the first, a last-copy-wins
        // assembler the second.
        let mut datagram = client_initial(VERSION_1, &dcid, 0, &crypto_frame(0, &blocked), 600);
        datagram.extend(client_initial(VERSION_1, &dcid, 1, &crypto_frame(0, &allowed), 600));
        assert_eq!(ClientHelloAssembler::new().push_datagram(&datagram), QuicScan::Uninspectable);
        // The same in two datagrams, and a partial overlap that differs in one byte.
        let mut asm = ClientHelloAssembler::new();
        let d1 = client_initial(VERSION_1, &dcid, 0, &crypto_frame(0, &blocked[..40]), 1200);
        assert_eq!(asm.push_datagram(&d1), QuicScan::NeedMore);
        let mut changed = allowed[30..].to_vec();
        changed[0] ^= 1;
        let d2 = client_initial(VERSION_1, &dcid, 1, &crypto_frame(30, &changed), 1200);
        assert_eq!(asm.push_datagram(&d2), QuicScan::Uninspectable);
        // Identical overlaps (retransmissions) are fine.
        let mut datagram = client_initial(VERSION_1, &dcid, 0, &crypto_frame(0, &blocked), 600);
        datagram.extend(client_initial(VERSION_1, &dcid, 1, &crypto_frame(0, &blocked), 600));
        assert_eq!(ClientHelloAssembler::new().push_datagram(&datagram), QuicScan::Sni("tracker.com".into()));
    }

    #[test]
    fn initials_the_server_would_read_differently_are_uninspectable() {
        let hello = rfc_client_hello();
        // Servers discard Initials in datagrams under 1200 bytes.
        let small = client_initial(VERSION_1, &[1; 8], 0, &crypto_frame(0, &hello), 1199);
        assert_eq!(ClientHelloAssembler::new().push_datagram(&small), QuicScan::Uninspectable);
        // A second Initial of another connection ID (servers ignore it) or version.
        for (version, dcid) in [(VERSION_1, [2; 8]), (VERSION_2, [1; 8])] {
            let mut asm = ClientHelloAssembler::new();
            let d1 = client_initial(VERSION_1, &[1; 8], 0, &crypto_frame(0, &hello[..100]), 1200);
            assert_eq!(asm.push_datagram(&d1), QuicScan::NeedMore);
            let d2 = client_initial(version, &dcid, 1, &crypto_frame(100, &hello[100..]), 1200);
            assert_eq!(asm.push_datagram(&d2), QuicScan::Uninspectable);
        }
    }

    #[test]
    fn frames_around_crypto_are_skipped() {
        let hello = rfc_client_hello();
        let mut frames = vec![0x01, 0x00]; // PING, PADDING
        frames.extend([0x02, 0x05, 0x00, 0x01, 0x00, 0x00, 0x01]); // ACK with one extra range
        frames.extend(crypto_frame(0, &hello));
        let packet = client_initial(VERSION_1, &[7; 20], 9, &frames, 1300);
        assert_eq!(ClientHelloAssembler::new().push_datagram(&packet), QuicScan::Sni("example.com".into()));
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1400), 1..4)) {
            let mut asm = ClientHelloAssembler::new();
            for d in &datagrams {
                let _ = asm.push_datagram(d);
            }
        }

        #[test]
        fn mutated_rfc_packets_never_panic(pos in 0usize..1200, byte in any::<u8>(), cut in 0usize..1200) {
            let mut packet = v1_packet();
            packet[pos] = byte;
            packet.truncate(cut.max(1));
            let _ = ClientHelloAssembler::new().push_datagram(&packet);
        }

        #[test]
        fn arbitrary_frames_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = crypto_frames(&payload);
        }
    }
}
