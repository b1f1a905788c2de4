//! IP fragments: fragmented IPv4 and IPv6 datagrams from the phone are reassembled into whole packets, and whole
//! datagrams for the phone larger than the tun MTU are cut into fragments.
//!
//! Reassembly is bounded: at most [`MAX_DATAGRAMS`] datagrams at a time (a new one evicts the oldest), at most
//! [`MAX_FRAGMENTS`] fragments and 64 KiB each (the IP limit), and [`REASSEMBLY_TIMEOUT`] to complete. A fragment
//! that overlaps one already held drops its whole datagram (RFC 5722; overlaps are how fragment attacks disguise
//! what the receiver will see). Every discarded fragment is counted. The byte bookkeeping is etherparse's
//! [`IpDefragBuf`]; the bounds, overlap rule and time (a parameter: this module is sans-IO) are ours, because
//! etherparse's own pool is unbounded and accepts overlaps.

use super::timers::Timer;
use super::{Engine, OwnerLookup};
use etherparse::defrag::IpDefragBuf;
use etherparse::{
    IpFragOffset, IpNumber, IpSlice, Ipv4Header, Ipv4HeaderSlice, Ipv6ExtensionSlice, Ipv6FragmentHeader, Ipv6Header,
    Ipv6HeaderSlice,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// At most this many datagrams are reassembled at once.
pub(crate) const MAX_DATAGRAMS: usize = 64;
/// At most this many fragments make one datagram (9,000 bytes at a 1,280-byte MTU take 8).
pub(crate) const MAX_FRAGMENTS: usize = 64;
/// A datagram not complete this long after its first fragment is dropped (RFC 8200 says 60 s; the phone's own
/// stack never needs more than milliseconds, and a short timeout bounds what an incomplete flood holds).
pub(crate) const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Hop limit of the reassembled packet (the engine does not forward it by IP, so any value does).
const TTL: u8 = 64;
/// The MTU of the phone's own network when the platform does not say (`NetworkInfo::mtu`): Wi-Fi and mobile
/// links carry 1,500-byte packets. The tun MTU may be larger, since TCP ends in the engine; a UDP datagram larger
/// than the network's MTU that must not be fragmented is answered as a router would answer it.
pub(crate) const DEFAULT_UPSTREAM_MTU: u16 = 1500;
/// A reported network MTU below this is not believed (IPv6's minimum; Linux ignores smaller ICMPv6 values).
const MIN_UPSTREAM_MTU: u16 = 1280;

/// The MTU to hold datagrams from the phone to: the network's, if reported and plausible, else the default.
pub(crate) fn upstream_mtu(reported: Option<u16>) -> u16 {
    reported.filter(|&m| m >= MIN_UPSTREAM_MTU).unwrap_or(DEFAULT_UPSTREAM_MTU)
}

/// If `packet` (whole, as read from the tun) is a UDP datagram larger than `mtu` that the network must not
/// fragment — IPv4 with DF set (what Linux sets on every datagram that fits its route), or IPv6 (only the source
/// fragments IPv6) — its source and destination: the phone must be told the path's MTU, not have the datagram
/// fragmented behind its back by the upstream socket's kernel.
pub(crate) fn too_big_for_upstream(packet: &[u8], mtu: u16) -> Option<(IpAddr, IpAddr)> {
    if packet.len() <= usize::from(mtu) {
        return None;
    }
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let h = Ipv4HeaderSlice::from_slice(packet).ok()?;
            let whole_df = h.protocol() == IpNumber::UDP && h.dont_fragment() && !h.is_fragmenting_payload();
            whole_df.then(|| (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr())))
        }
        Some(6) => {
            let h = Ipv6HeaderSlice::from_slice(packet).ok()?;
            (h.next_header() == IpNumber::UDP).then(|| (IpAddr::V6(h.source_addr()), IpAddr::V6(h.destination_addr())))
        }
        _ => None,
    }
}

/// Which datagram a fragment belongs to (RFC 791 / RFC 8200: source, destination, protocol, identification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct DatagramKey {
    src: IpAddr,
    dst: IpAddr,
    protocol: IpNumber,
    id: u32,
}

/// A datagram being reassembled.
#[derive(Debug)]
struct Partial {
    buf: IpDefragBuf,
    fragments: u64,
    expires: Instant,
}

/// What one fragment did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reassembly {
    /// Held; its datagram is not complete yet.
    Held,
    /// The datagram is complete: the whole IP packet, without fragmentation.
    Complete(Vec<u8>),
    /// This many fragments were discarded (the fragment itself, and its datagram if the fragment broke it, or the
    /// oldest datagram evicted to make room).
    Dropped(u64),
}

/// Datagrams under reassembly.
#[derive(Debug, Default)]
pub(crate) struct Reassembler {
    partial: HashMap<DatagramKey, Partial>,
}

impl Reassembler {
    /// Adds one fragment (a whole IP packet whose payload is fragmented) received at `now`.
    pub(crate) fn add(&mut self, now: Instant, packet: &[u8]) -> Reassembly {
        let Some((key, offset, more, payload)) = fragment_of(packet) else {
            return Reassembly::Dropped(1);
        };
        let mut evicted = 0;
        if !self.partial.contains_key(&key) && self.partial.len() >= MAX_DATAGRAMS {
            evicted = self.evict_oldest();
        }
        let partial = self.partial.entry(key).or_insert_with(|| Partial {
            buf: IpDefragBuf::new(key.protocol, Vec::new(), Vec::new()),
            fragments: 0,
            expires: now + REASSEMBLY_TIMEOUT,
        });
        partial.fragments += 1;
        let start = offset.byte_offset();
        let end = usize::from(start) + payload.len();
        let overlaps = partial.buf.sections().iter().any(|s| usize::from(s.start) < end && start < s.end);
        if overlaps || partial.fragments > MAX_FRAGMENTS as u64 || partial.buf.add(offset, more, payload).is_err() {
            let dropped = self.partial.remove(&key).map_or(1, |p| p.fragments);
            return Reassembly::Dropped(dropped + evicted);
        }
        if !partial.buf.is_complete() {
            return if evicted > 0 { Reassembly::Dropped(evicted) } else { Reassembly::Held };
        }
        let Some(done) = self.partial.remove(&key) else {
            return Reassembly::Dropped(evicted);
        };
        // No eviction happened here: a datagram completes only with a fragment of one already held.
        match whole_packet(&key, done.buf.data()) {
            Some(packet) => Reassembly::Complete(packet),
            None => Reassembly::Dropped(done.fragments),
        }
    }

    /// Drops every datagram whose time ran out by `now`; the number of fragments discarded.
    pub(crate) fn expire(&mut self, now: Instant) -> u64 {
        let mut dropped = 0;
        self.partial.retain(|_, p| {
            let keep = p.expires > now;
            if !keep {
                dropped += p.fragments;
            }
            keep
        });
        dropped
    }

    /// When the oldest datagram times out, if any is held.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.partial.values().map(|p| p.expires).min()
    }

    /// Datagrams held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.partial.len()
    }

    /// Drops the datagram that would time out first; the number of fragments discarded.
    fn evict_oldest(&mut self) -> u64 {
        let oldest = self.partial.iter().min_by_key(|(_, p)| p.expires).map(|(k, _)| *k);
        oldest.and_then(|k| self.partial.remove(&k)).map_or(0, |p| p.fragments)
    }
}

impl Engine {
    /// A fragment from the phone: held until its datagram is complete, then the whole packet is handled.
    pub(super) fn on_fragment(&mut self, now: Instant, packet: &[u8], owners: &mut impl OwnerLookup) {
        match self.fragments.add(now, packet) {
            Reassembly::Held => {}
            Reassembly::Complete(whole) => {
                self.stats.datagrams_reassembled += 1;
                self.dispatch_tun_packet(now, &whole, owners);
            }
            Reassembly::Dropped(fragments) => self.stats.fragments_dropped += fragments,
        }
        self.arm_reassembly_timer();
    }

    /// Drops the datagrams whose reassembly time ran out.
    pub(super) fn on_reassembly_deadline(&mut self, now: Instant) {
        self.reassembly_timer_armed = false;
        self.stats.fragments_dropped += self.fragments.expire(now);
        self.arm_reassembly_timer();
    }

    /// Arms the reassembly timer for the oldest datagram held, unless one is armed (new datagrams only ever
    /// expire later than the ones held, so the armed timer is never late).
    fn arm_reassembly_timer(&mut self) {
        if self.reassembly_timer_armed {
            return;
        }
        if let Some(at) = self.fragments.next_expiry() {
            self.timers.arm(at, Timer::Reassembly);
            self.reassembly_timer_armed = true;
        }
    }

    /// Writes a datagram larger than the tun MTU to the phone as IP fragments (dropped and counted if it cannot
    /// be cut, e.g. IPv6 on a tun below 1,280 bytes).
    pub(super) fn send_fragmented(&mut self, packet: Vec<u8>) {
        self.next_fragment_id = self.next_fragment_id.wrapping_add(1);
        let device = &mut self.stack.device;
        let mut sent = 0;
        let cut = split(&packet, self.config.mtu, self.next_fragment_id, |fragment| {
            let mut buf = device.take_out_buffer();
            buf.extend_from_slice(fragment);
            device.out.push_back(buf);
            sent += 1;
        });
        self.stats.fragments_sent += sent;
        if !cut {
            self.stats.dropped += 1;
        }
        self.stack.device.recycle(packet);
    }
}

/// The datagram key, offset, more-fragments flag and data of a fragment.
fn fragment_of(packet: &[u8]) -> Option<(DatagramKey, IpFragOffset, bool, &[u8])> {
    match IpSlice::from_slice(packet).ok()? {
        IpSlice::Ipv4(v4) if v4.is_payload_fragmented() => {
            let h = v4.header();
            let key = DatagramKey {
                src: IpAddr::V4(h.source_addr()),
                dst: IpAddr::V4(h.destination_addr()),
                protocol: h.protocol(),
                id: u32::from(h.identification()),
            };
            Some((key, h.fragments_offset(), h.more_fragments(), v4.payload().payload))
        }
        IpSlice::Ipv6(v6) if v6.is_payload_fragmented() => {
            let frag = v6.extensions().clone().into_iter().find_map(|ext| match ext {
                Ipv6ExtensionSlice::Fragment(f) => Some(f),
                _ => None,
            })?;
            let h = v6.header();
            let key = DatagramKey {
                src: IpAddr::V6(h.source_addr()),
                dst: IpAddr::V6(h.destination_addr()),
                protocol: v6.payload().ip_number,
                id: frag.identification(),
            };
            Some((key, frag.fragment_offset(), frag.more_fragments(), v6.payload().payload))
        }
        _ => None,
    }
}

/// The unfragmented IP packet carrying a reassembled payload.
fn whole_packet(key: &DatagramKey, payload: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(payload.len() + Ipv6Header::LEN);
    match (key.src, key.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let len = u16::try_from(payload.len()).ok()?;
            let header = Ipv4Header::new(len, TTL, key.protocol, src.octets(), dst.octets()).ok()?;
            header.write(&mut out).ok()?;
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut header = Ipv6Header {
                next_header: key.protocol,
                hop_limit: TTL,
                source: src.octets(),
                destination: dst.octets(),
                ..Ipv6Header::default()
            };
            header.set_payload_length(payload.len()).ok()?;
            header.write(&mut out).ok()?;
        }
        _ => return None,
    }
    out.extend_from_slice(payload);
    Some(out)
}

/// Cuts `packet` (an unfragmented IPv4 or IPv6 packet we built: no options, no extension headers) into fragments
/// of at most `mtu` bytes, identified by `id`, and hands each to `emit`. False if it cannot be fragmented (an
/// IPv6 MTU below the 1,280-byte minimum, a packet that does not parse).
pub(crate) fn split(packet: &[u8], mtu: usize, id: u32, mut emit: impl FnMut(&[u8])) -> bool {
    let mut frag = Vec::with_capacity(mtu);
    match IpSlice::from_slice(packet) {
        Ok(IpSlice::Ipv4(v4)) => {
            let Ok((mut header, payload)) = Ipv4Header::from_slice(packet) else {
                return false;
            };
            let payload = payload.get(..v4.payload().payload.len()).unwrap_or(payload);
            let chunk = mtu.saturating_sub(header.header_len()) / 8 * 8;
            if chunk == 0 {
                return false;
            }
            header.identification = id as u16;
            header.dont_fragment = false;
            for (i, data) in payload.chunks(chunk).enumerate() {
                let Some(offset) = frag_offset(i * chunk) else {
                    return false;
                };
                header.fragment_offset = offset;
                header.more_fragments = (i + 1) * chunk < payload.len();
                frag.clear();
                if header.set_payload_len(data.len()).is_err() || header.write(&mut frag).is_err() {
                    return false;
                }
                frag.extend_from_slice(data);
                emit(&frag);
            }
            true
        }
        Ok(IpSlice::Ipv6(v6)) if mtu >= 1280 => {
            let Ok((mut header, payload)) = Ipv6Header::from_slice(packet) else {
                return false;
            };
            let payload = payload.get(..v6.payload().payload.len()).unwrap_or(payload);
            let next_header = header.next_header;
            header.next_header = IpNumber::IPV6_FRAGMENTATION_HEADER;
            let chunk = (mtu - Ipv6Header::LEN - Ipv6FragmentHeader::LEN) / 8 * 8;
            for (i, data) in payload.chunks(chunk).enumerate() {
                let Some(offset) = frag_offset(i * chunk) else {
                    return false;
                };
                let more = (i + 1) * chunk < payload.len();
                let fragment_header = Ipv6FragmentHeader::new(next_header, offset, more, id);
                frag.clear();
                if header.set_payload_length(Ipv6FragmentHeader::LEN + data.len()).is_err()
                    || header.write(&mut frag).is_err()
                    || fragment_header.write(&mut frag).is_err()
                {
                    return false;
                }
                frag.extend_from_slice(data);
                emit(&frag);
            }
            true
        }
        _ => false,
    }
}

/// The fragment offset field for a byte offset (a multiple of 8), if it fits.
fn frag_offset(bytes: usize) -> Option<IpFragOffset> {
    IpFragOffset::try_new(u16::try_from(bytes / 8).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp_v4(len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut p = Vec::new();
        PacketBuilder::ipv4([10, 111, 0, 1], [198, 18, 0, 7], 64)
            .udp(40000, 7)
            .write(&mut p, &payload)
            .expect("builds");
        p
    }

    fn udp_v6(len: usize) -> Vec<u8> {
        let payload: Vec<u8> = (0..len).map(|i| (i % 249) as u8).collect();
        let mut p = Vec::new();
        PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).udp(40000, 7).write(&mut p, &payload).expect("builds");
        p
    }

    fn is_fragment(packet: &[u8]) -> bool {
        matches!(super::super::packet::parse(packet), Ok(p) if p.transport == super::super::packet::Transport::Fragment)
    }

    fn fragments(packet: &[u8], mtu: usize, id: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        assert!(split(packet, mtu, id, |f| out.push(f.to_vec())));
        out
    }

    /// The UDP payload of an unfragmented packet.
    fn udp_payload(packet: &[u8]) -> Vec<u8> {
        match etherparse::SlicedPacket::from_ip(packet).expect("parses").transport {
            Some(etherparse::TransportSlice::Udp(u)) => u.payload().to_vec(),
            other => panic!("not udp: {other:?}"),
        }
    }

    #[test]
    fn split_respects_the_mtu_and_reassembles_in_order_and_out_of_order() {
        let t0 = Instant::now();
        // The last two fill their last fragment exactly (2 × 1,480 and 2 × 1,232 bytes of IP payload).
        let exact = [(udp_v4(2 * 1480 - 8), 1500), (udp_v6(2 * 1232 - 8), 1280)];
        let cases = [(udp_v4(4000), 1500), (udp_v4(9000), 1500), (udp_v6(9000), 1280), (udp_v6(4000), 1500)];
        for (packet, mtu) in cases.into_iter().chain(exact) {
            let frags = fragments(&packet, mtu, 77);
            assert!(frags.len() > 1);
            assert!(frags.iter().all(|f| f.len() <= mtu && is_fragment(f)), "every piece fits and is a fragment");
            for order in [frags.clone(), frags.iter().rev().cloned().collect()] {
                let mut r = Reassembler::default();
                let (last, rest) = order.split_last().expect("fragments");
                for f in rest {
                    assert_eq!(r.add(t0, f), Reassembly::Held);
                }
                let Reassembly::Complete(whole) = r.add(t0, last) else { panic!("not complete") };
                assert!(!is_fragment(&whole));
                let (sent, got) = (IpSlice::from_slice(&packet).unwrap(), IpSlice::from_slice(&whole).unwrap());
                assert_eq!((got.source_addr(), got.destination_addr()), (sent.source_addr(), sent.destination_addr()));
                let hops = |ip: &IpSlice| match ip {
                    IpSlice::Ipv4(v4) => v4.header().ttl(),
                    IpSlice::Ipv6(v6) => v6.header().hop_limit(),
                };
                assert_eq!(hops(&got), TTL, "the engine's own hop limit");
                assert_eq!(udp_payload(&whole), udp_payload(&packet), "byte-exact");
                assert_eq!(r.len(), 0);
            }
        }
    }

    #[test]
    fn small_packets_are_not_split_into_more_than_one() {
        assert_eq!(fragments(&udp_v4(100), 1500, 1).len(), 1);
        assert!(!split(&udp_v6(4000), 1000, 1, |_| {}), "IPv6 below its minimum MTU");
    }

    #[test]
    fn overlapping_fragment_drops_the_datagram_and_counts_it() {
        let t0 = Instant::now();
        let frags = fragments(&udp_v4(4000), 1500, 9);
        let mut r = Reassembler::default();
        assert_eq!(r.add(t0, &frags[0]), Reassembly::Held);
        assert_eq!(r.add(t0, &frags[1]), Reassembly::Held);
        // The same second fragment again overlaps what is held.
        assert_eq!(r.add(t0, &frags[1]), Reassembly::Dropped(3));
        assert_eq!(r.len(), 0);
        // A piece cut at another MTU overlaps part of the one held without being the same.
        let held = fragments(&udp_v6(4000), 1280, 5).swap_remove(1);
        assert_eq!(r.add(t0, &held), Reassembly::Held);
        let other = fragments(&udp_v6(4000), 1400, 5).swap_remove(1);
        assert_eq!(r.add(t0, &other), Reassembly::Dropped(2), "1400-MTU piece overlaps the 1280-MTU one");
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn never_completed_datagrams_are_bounded_and_expire_counted() {
        let t0 = Instant::now();
        let mut r = Reassembler::default();
        let mut dropped = 0;
        for id in 0..1000u32 {
            let first = fragments(&udp_v4(4000), 1500, id).swap_remove(0);
            match r.add(t0 + Duration::from_millis(u64::from(id)), &first) {
                Reassembly::Held => {}
                Reassembly::Dropped(n) => dropped += n,
                Reassembly::Complete(_) => panic!("one fragment cannot complete"),
            }
            assert!(r.len() <= MAX_DATAGRAMS);
        }
        assert_eq!(dropped, 1000 - MAX_DATAGRAMS as u64, "each evicted datagram counted");
        let late = t0 + Duration::from_millis(1000) + REASSEMBLY_TIMEOUT;
        assert!(r.next_expiry().is_some_and(|at| at <= late));
        assert_eq!(r.expire(late), MAX_DATAGRAMS as u64);
        assert_eq!((r.len(), r.next_expiry()), (0, None));
    }

    /// A datagram held since `t0` is kept until `t0` + 10 s, not a moment less.
    #[test]
    fn a_datagram_is_held_for_the_reassembly_timeout() {
        let t0 = Instant::now();
        let mut r = Reassembler::default();
        assert_eq!(r.add(t0, &fragments(&udp_v4(4000), 1500, 1)[0]), Reassembly::Held);
        assert_eq!(r.next_expiry(), Some(t0 + REASSEMBLY_TIMEOUT));
        assert_eq!(r.expire(t0 + REASSEMBLY_TIMEOUT - Duration::from_millis(1)), 0);
        assert_eq!(r.expire(t0 + REASSEMBLY_TIMEOUT), 1);
    }

    /// A datagram of exactly 64 fragments is reassembled; a 65th fragment drops it.
    #[test]
    fn a_datagram_may_have_64_fragments_and_no_more() {
        let t0 = Instant::now();
        // 64 × 8 payload bytes at an MTU leaving 8 bytes a fragment (20-byte header + 8).
        let whole = udp_v4(64 * 8 - 8);
        let frags = fragments(&whole, 28, 4);
        assert_eq!(frags.len(), 64);
        let mut r = Reassembler::default();
        for f in &frags[..63] {
            assert_eq!(r.add(t0, f), Reassembly::Held);
        }
        assert!(matches!(r.add(t0, &frags[63]), Reassembly::Complete(_)));
        let more = fragments(&udp_v4(65 * 8 - 8), 28, 5);
        let held: Vec<Reassembly> = more[..65].iter().map(|f| r.add(t0, f)).collect();
        assert_eq!(held[63], Reassembly::Held);
        assert_eq!(held[64], Reassembly::Dropped(65), "the 65th fragment drops all of them");
    }

    /// A fragment that evicts the oldest datagram to make room and is itself bad counts both.
    #[test]
    fn a_bad_fragment_that_evicted_a_datagram_counts_both() {
        let t0 = Instant::now();
        let mut r = Reassembler::default();
        for id in 0..MAX_DATAGRAMS as u32 {
            assert_eq!(r.add(t0, &fragments(&udp_v4(4000), 1500, id)[0]), Reassembly::Held);
        }
        // A first fragment whose length is not a multiple of 8 while more follow cannot be placed.
        let mut bad = fragments(&udp_v4(4000), 1500, 999).swap_remove(0);
        bad.truncate(bad.len() - 3);
        let (mut header, _) = etherparse::Ipv4Header::from_slice(&bad).expect("ipv4");
        header.total_len = bad.len() as u16;
        header.header_checksum = header.calc_header_checksum();
        let mut head = Vec::new();
        header.write(&mut head).expect("writes");
        bad[..head.len()].copy_from_slice(&head);
        assert_eq!(r.add(t0, &bad), Reassembly::Dropped(2), "itself and the evicted one");
    }

    /// Whole packets are not fragments: given one, the reassembler drops it rather than pass it on as complete.
    #[test]
    fn a_whole_packet_is_not_taken_for_a_fragment() {
        let mut r = Reassembler::default();
        assert_eq!(r.add(Instant::now(), &udp_v4(100)), Reassembly::Dropped(1));
        assert_eq!(r.add(Instant::now(), &udp_v6(100)), Reassembly::Dropped(1));
    }

    #[test]
    fn garbage_never_panics_and_is_dropped() {
        let mut r = Reassembler::default();
        let mut bad = fragments(&udp_v4(4000), 1500, 3).swap_remove(0);
        bad.truncate(10);
        assert_eq!(r.add(Instant::now(), &bad), Reassembly::Dropped(1));
        assert!(!is_fragment(&bad));
    }
}
