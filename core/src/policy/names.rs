//! The name table: every name rule as a 64-bit hash in one sorted array, with a bucket index in front.
//!
//! # Layout
//! Rules are stored struct-of-arrays: `hashes` (sorted `u64`) and `metas` (8-byte [`Meta`]: list, line, kind,
//! role) side by side, i.e. 16 bytes per rule, plus a bucket index of `u32` offsets (one bucket per ~4–8 rules,
//! under one byte per rule) that maps the top bits of a hash to its slice of `hashes`. Allow and block rules of
//! all three kinds share the one array, so a lookup costs one index probe and a search of a handful of entries
//! per suffix of the queried name, instead of a full binary search per kind and role.
//!
//! # Hash
//! FNV-1a (64-bit) over the name's bytes *from last to first*, finished with the MurmurHash3 `fmix64` bijection
//! so the top bits used by the bucket index are uniform. Hashing backwards means one pass over a queried name
//! `a.b.c` yields the hashes of `c`, `b.c` and `a.b.c` as it reaches each dot: no suffix is hashed twice, nothing
//! is copied, and bytes are lowercased as they are read. The hasher has fixed constants (no per-process keys), so
//! a table and its lookups always agree.
//!
//! Two different names with the same hash would be confused. For a table of `n` rules, a lookup of a name not in
//! it hits some entry by accident with probability about `n / 2^64` per suffix: 5·10⁻¹⁴ for a million rules. Two
//! rules colliding with each other (one would shadow the other) has probability about `n² / 2^65`: 3·10⁻⁸ for a
//! million rules. Lists are not adversarial inputs here, so these odds are accepted for the memory they save.

use super::parse::{NameKind, MAX_NAME_LEN};
use super::Loc;

/// A rule's payload next to its hash: 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    /// 1-based line in the list.
    line: u32,
    /// Index of the list in the policy.
    list: u16,
    /// What the rule covers.
    kind: NameKind,
    /// [`ALLOW`] and [`EXCEPTION`] bits.
    flags: u8,
}

/// The rule allows (from an allow list, or an `@@` line).
const ALLOW: u8 = 1;
/// The rule was written as an `@@` exception.
const EXCEPTION: u8 = 2;

impl Meta {
    /// Where the rule came from.
    pub(super) fn loc(self) -> Loc {
        Loc { list: self.list, line: self.line }
    }

    /// The rule text in canonical form, for the rule's own (canonical) `name`.
    pub(super) fn render(self, name: &str) -> Box<str> {
        let (prefix, suffix) = match (self.kind, self.flags & EXCEPTION != 0) {
            (NameKind::Exact, _) => ("", ""),
            (NameKind::Subdomains, _) => ("*.", ""),
            (NameKind::Subtree, false) => ("||", "^"),
            (NameKind::Subtree, true) => ("@@||", "^"),
        };
        // One allocation of exactly the final size (this runs for every matched DNS query and flow).
        let mut rule = String::with_capacity(prefix.len() + name.len() + suffix.len());
        rule.push_str(prefix);
        rule.extend(name.chars().map(|c| c.to_ascii_lowercase()));
        rule.push_str(suffix);
        rule.into_boxed_str()
    }

    fn is_allow(self) -> bool {
        self.flags & ALLOW != 0
    }

    /// Sort and deduplication key: rules equal on it are duplicates, the first (lowest list, line) is kept.
    fn key(self) -> (bool, NameKind) {
        (self.is_allow(), self.kind)
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv_step(h: u64, byte: u8) -> u64 {
    (h ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
}

/// MurmurHash3's 64-bit finaliser: a bijection, so it spreads bits without adding collisions.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Hash of a canonical (lowercase) name, as stored in the table.
fn hash_name(name: &str) -> u64 {
    fmix64(name.bytes().rev().fold(FNV_OFFSET, fnv_step))
}

/// Calls `visit(start, hash)` for each suffix `name[start..]` that starts at a label boundary, shortest first,
/// hashing bytes lowercased. Suffixes longer than [`MAX_NAME_LEN`] are skipped (no rule can be that long), which
/// bounds the work for any input. Empty suffixes (`a.b.` has one) are skipped.
fn for_each_suffix(name: &[u8], mut visit: impl FnMut(usize, u64)) {
    let mut h = FNV_OFFSET;
    for (i, &byte) in name.iter().enumerate().rev() {
        if name.len() - i > MAX_NAME_LEN {
            return;
        }
        if byte == b'.' && i + 1 < name.len() {
            visit(i + 1, fmix64(h));
        }
        h = fnv_step(h, byte.to_ascii_lowercase());
    }
    if !name.is_empty() {
        visit(0, fmix64(h));
    }
}

/// The best rule of one role found for a name: the rule and where its name starts in the queried name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Found {
    /// The rule.
    pub(super) meta: Meta,
    /// Byte offset in the queried name where the rule's name (the matched suffix) starts.
    pub(super) start: usize,
}

/// The most specific matching allow rule and block rule for a name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Matches {
    /// Best allow rule.
    pub(super) allow: Option<Found>,
    /// Best block rule.
    pub(super) block: Option<Found>,
}

/// Collects name rules, then sorts them into a [`NameTable`].
#[derive(Debug, Default)]
pub(super) struct NameTableBuilder {
    entries: Vec<(u64, Meta)>,
}

impl NameTableBuilder {
    /// Adds a rule for the canonical `name`.
    pub(super) fn push(&mut self, name: &str, kind: NameKind, allow: bool, exception: bool, loc: Loc) {
        let flags = if allow { ALLOW } else { 0 } | if exception { EXCEPTION } else { 0 };
        self.entries.push((hash_name(name), Meta { line: loc.line, list: loc.list, kind, flags }));
    }

    /// Number of rules pushed so far, duplicates included.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sorts, drops duplicates (keeping the earliest rule) and builds the index.
    pub(super) fn build(mut self) -> NameTable {
        self.entries.sort_unstable_by_key(|&(h, m)| (h, m.key(), m.list, m.line));
        self.entries.dedup_by_key(|&mut (h, m)| (h, m.key()));
        let (hashes, metas): (Vec<u64>, Vec<Meta>) = self.entries.into_iter().unzip();
        let bits = hashes.len().checked_ilog2().unwrap_or(0).saturating_sub(2).min(24);
        let index = (0..=1u64 << bits)
            .map(|bucket| {
                let first = hashes.partition_point(|&h| bucket_of(h, bits) < bucket);
                u32::try_from(first).unwrap_or(u32::MAX)
            })
            .collect();
        let allow = metas.iter().filter(|m| m.is_allow()).count();
        NameTable { hashes: hashes.into(), metas: metas.into(), index, bits, allow }
    }
}

/// The bucket of hash `h` in an index of `2^bits` buckets: its top `bits` bits.
fn bucket_of(h: u64, bits: u32) -> u64 {
    h.checked_shr(64 - bits).unwrap_or(0)
}

/// An immutable table of name rules; see the module docs.
#[derive(Debug, Default)]
pub(super) struct NameTable {
    /// Rule hashes, sorted.
    hashes: Box<[u64]>,
    /// The rule for each hash, same order.
    metas: Box<[Meta]>,
    /// `index[b]..index[b + 1]` is the range of `hashes` in bucket `b`; `2^bits + 1` entries.
    index: Box<[u32]>,
    /// Index size in bits.
    bits: u32,
    /// How many rules allow.
    allow: usize,
}

impl NameTable {
    /// Number of (allow, block) rules, after deduplication.
    pub(super) fn counts(&self) -> (usize, usize) {
        (self.allow, self.hashes.len().saturating_sub(self.allow))
    }

    /// Heap bytes used by the table.
    #[cfg(test)]
    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.hashes) + std::mem::size_of_val(&*self.metas) + std::mem::size_of_val(&*self.index)
    }

    /// Finds the most specific allow and block rule matching `name`, compared ASCII-case-insensitively; the
    /// caller strips a trailing dot. Never allocates.
    ///
    /// A rule's name matches a suffix of `name` at a label boundary; `Exact` rules need the whole name,
    /// `Subdomains` rules a proper suffix, `Subtree` rules either. The longest matching suffix wins per role; on
    /// the same suffix an `Exact` rule is preferred to a `Subtree` one.
    pub(super) fn lookup(&self, name: &str) -> Matches {
        let mut found = Matches::default();
        if self.hashes.is_empty() {
            return found;
        }
        for_each_suffix(name.as_bytes(), |start, h| {
            let whole = start == 0;
            let (mut allow, mut block) = (None, None);
            for &meta in self.candidates(h) {
                let applies = match meta.kind {
                    NameKind::Exact => whole,
                    NameKind::Subtree => true,
                    NameKind::Subdomains => !whole,
                };
                let slot = if meta.is_allow() { &mut allow } else { &mut block };
                if applies && slot.is_none() {
                    *slot = Some(Found { meta, start });
                }
            }
            // Suffixes come shortest first, so a later match is more specific.
            found.allow = allow.or(found.allow);
            found.block = block.or(found.block);
        });
        found
    }

    /// The rules whose hash is `h`, in key order.
    fn candidates(&self, h: u64) -> &[Meta] {
        let bucket = usize::try_from(bucket_of(h, self.bits)).unwrap_or(usize::MAX);
        let range = match (self.index.get(bucket), bucket.checked_add(1).and_then(|b| self.index.get(b))) {
            (Some(&lo), Some(&hi)) => lo as usize..hi as usize,
            _ => return &[],
        };
        let Some(slice) = self.hashes.get(range.clone()) else {
            return &[];
        };
        let first = range.start + slice.partition_point(|&x| x < h);
        let len = slice.get(first - range.start..).map_or(0, |rest| rest.iter().take_while(|&&x| x == h).count());
        self.metas.get(first..first + len).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(line: u32) -> Loc {
        Loc { list: 0, line }
    }

    #[test]
    fn suffix_hashes_match_stored_hashes() {
        let mut seen = Vec::new();
        for_each_suffix(b"Ads.Tracking.MIUI.com", |start, h| seen.push((start, h)));
        let want: Vec<(usize, u64)> =
            [(18, "com"), (13, "miui.com"), (4, "tracking.miui.com"), (0, "ads.tracking.miui.com")]
                .iter()
                .map(|&(s, n)| (s, hash_name(n)))
                .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn suffixes_skip_empty_and_overlong() {
        let mut seen = Vec::new();
        for_each_suffix(b"a.b.", |start, _| seen.push(start));
        assert_eq!(seen, [2, 0]);
        let long = format!("{}.{}.com", "x".repeat(200), "y".repeat(60));
        seen.clear();
        for_each_suffix(long.as_bytes(), |start, _| seen.push(start));
        assert_eq!(seen, [long.len() - 3, 201], "the whole 264-byte name is never hashed");
        seen.clear();
        for_each_suffix(b"", |start, _| seen.push(start));
        assert!(seen.is_empty());
    }

    #[test]
    fn hash_is_fixed() {
        // Fixed constants: the same on every run and platform.
        assert_eq!(hash_name(""), fmix64(FNV_OFFSET));
        // Published FNV-1a 64 test vectors; the name is hashed back to front.
        assert_eq!(hash_name("a"), fmix64(0xaf63_dc4c_8601_ec8c));
        assert_eq!(hash_name("raboof"), fmix64(0x8594_4171_f739_67e8));
        assert_ne!(hash_name("ab"), hash_name("ba"));
    }

    #[test]
    fn duplicates_keep_the_first_rule() {
        let mut b = NameTableBuilder::default();
        b.push("a.com", NameKind::Exact, false, false, Loc { list: 1, line: 1 });
        b.push("a.com", NameKind::Exact, false, false, Loc { list: 0, line: 9 });
        b.push("a.com", NameKind::Exact, false, false, Loc { list: 0, line: 5 });
        b.push("a.com", NameKind::Subtree, false, false, loc(7));
        b.push("a.com", NameKind::Exact, true, false, loc(8));
        assert_eq!(b.len(), 5);
        let t = b.build();
        assert_eq!(t.counts(), (1, 2));
        let m = t.lookup("a.com");
        assert_eq!(m.block.map(|f| f.meta.loc()), Some(Loc { list: 0, line: 5 }));
        assert_eq!(m.allow.map(|f| f.meta.loc()), Some(loc(8)));
    }

    #[test]
    fn most_specific_rule_per_role() {
        let mut b = NameTableBuilder::default();
        b.push("com", NameKind::Subtree, false, false, loc(1));
        b.push("b.com", NameKind::Subdomains, false, false, loc(2));
        b.push("a.b.com", NameKind::Subtree, false, false, loc(3));
        b.push("a.b.com", NameKind::Exact, false, false, loc(4));
        let t = b.build();
        let line = |n: &str| t.lookup(n).block.map(|f| (f.meta.line, f.start));
        assert_eq!(line("a.b.com"), Some((4, 0)));
        assert_eq!(line("x.a.b.com"), Some((3, 2)));
        assert_eq!(line("x.b.com"), Some((2, 2)));
        assert_eq!(line("b.com"), Some((1, 2)));
        assert_eq!(line("org"), None);
    }

    #[test]
    fn many_rules_all_found_through_the_index() {
        let mut b = NameTableBuilder::default();
        for i in 0..5000 {
            b.push(&format!("n{i}.test"), NameKind::Exact, false, false, loc(i + 1));
        }
        let t = b.build();
        assert_eq!(t.bits, 10);
        assert_eq!(t.index.len(), 1025);
        for i in 0..5000 {
            assert_eq!(t.lookup(&format!("N{i}.test")).block.map(|f| f.meta.line), Some(i + 1));
            assert_eq!(t.lookup(&format!("n{i}.test2")).block, None);
        }
    }

    #[test]
    fn meta_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Meta>(), 8);
    }
}
