//! Policy: block and allow lists compiled into a compact, immutable matcher for names and addresses.
//!
//! Lists are text in any of the common formats (plain domains, hosts files, `*.wildcards`, AdBlock `||domain^`
//! and `@@||domain^`, CIDR ranges and bare addresses; see the `parse` module for the per-line grammar).
//! [`Policy::compile`] turns a set of [`ListSource`]s into a [`Policy`], refusing the whole set on the first bad
//! line with a [`ListError`] naming file and line, so a caller always keeps its last good policy.
//!
//! Matching is allow-wins: if any allow rule matches, the name or address is allowed whatever block rules say.
//! Names compare ASCII-case-insensitively and ignore one trailing dot. [`Policy::check_name`] and
//! [`Policy::check_ip`] sit on the packet path: they never allocate unless a rule matched (to build the
//! [`RuleRef`]), never panic, and take time bounded by the name's length (at most 253 bytes are hashed).
//!
//! Names live in a table of sorted 64-bit hashes (see the `names` module for the layout and the collision odds),
//! addresses in longest-prefix-match tries from `prefix-trie`.

mod cidr;
mod names;
mod parse;
mod profile;

pub use profile::{Profile, ProfileOptions, UnknownProfile};

use crate::verdict::RuleRef;
use cidr::CidrTable;
use names::{Found, NameTable, NameTableBuilder};
use parse::{parse_line, Rule};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

/// Whether a list's rules block or allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListRole {
    /// Matching names and addresses are blocked (unless an allow rule also matches).
    Block,
    /// Matching names and addresses are allowed, whatever any block rule says.
    Allow,
}

/// One list's text with its display name (a path, or `builtin:<file>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSource {
    /// Display name used in errors and [`RuleRef`]s.
    pub name: String,
    /// The role of the list's rules (`@@` lines are always allow rules).
    pub role: ListRole,
    /// The list's text.
    pub text: String,
}

impl ListSource {
    /// Reads a list file; its display name is the path as given.
    ///
    /// A file that cannot be read gives an error at line 0; text that is not UTF-8 gives an error at the line of
    /// the first bad byte.
    pub fn from_file(path: &Path, role: ListRole) -> Result<ListSource, ListError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ListError {
            list: name.clone(),
            line: 0,
            message: format!("cannot read the file: {e}"),
        })?;
        match String::from_utf8(bytes) {
            Ok(text) => Ok(ListSource { name, role, text }),
            Err(e) => {
                let valid = e.as_bytes().get(..e.utf8_error().valid_up_to()).unwrap_or_default();
                let newlines = valid.iter().filter(|&&b| b == b'\n').count();
                let line = u32::try_from(newlines).unwrap_or(u32::MAX - 1) + 1;
                Err(ListError { list: name, line, message: "the text is not valid UTF-8".to_owned() })
            }
        }
    }
}

/// A list that failed to load: file, 1-based line (0 = whole file), and what is wrong.
///
/// Displays as `FILE:LINE: MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    /// The list's display name.
    pub list: String,
    /// 1-based line number; 0 when the error concerns the whole file.
    pub line: u32,
    /// What is wrong, quoting the offending text.
    pub message: String,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.list, self.line, self.message)
    }
}

impl std::error::Error for ListError {}

/// The outcome of matching one name or address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// An allow rule matched; it wins over any block rule.
    Allowed(RuleRef),
    /// A block rule matched and no allow rule did.
    Blocked(RuleRef),
    /// No rule matched.
    NoMatch,
}

impl Decision {
    /// True if a block rule decided.
    pub fn is_blocked(&self) -> bool {
        matches!(self, Decision::Blocked(_))
    }

    /// The deciding rule, if any.
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            Decision::Allowed(rule) | Decision::Blocked(rule) => Some(rule),
            Decision::NoMatch => None,
        }
    }
}

/// Rule counts of a compiled policy, after duplicate rules are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyStats {
    /// Number of lists compiled.
    pub lists: usize,
    /// Name rules that block.
    pub block_names: usize,
    /// Name rules that allow.
    pub allow_names: usize,
    /// Address ranges that block.
    pub block_cidrs: usize,
    /// Address ranges that allow.
    pub allow_cidrs: usize,
}

/// Where a rule came from: index of its list in the policy and 1-based line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Loc {
    list: u16,
    line: u32,
}

/// A compiled, immutable policy. `Send + Sync`: engines share it through `Arc` and swap it atomically.
pub struct Policy {
    /// List display names, indexed by [`Loc::list`].
    lists: Box<[Arc<str>]>,
    names: NameTable,
    allow_cidrs: CidrTable,
    block_cidrs: CidrTable,
}

impl Policy {
    /// Compiles lists into a policy. The first bad line aborts with its file and line; nothing is half-loaded.
    ///
    /// A rule that appears more than once (same name and kind, same role; or the same range and role) is kept
    /// once, with the earliest list and line. At most 65,536 lists.
    pub fn compile(sources: &[ListSource]) -> Result<Policy, ListError> {
        let mut names = NameTableBuilder::default();
        let mut allow_cidrs = CidrTable::default();
        let mut block_cidrs = CidrTable::default();
        for (index, source) in sources.iter().enumerate() {
            let fail = |line: u32, message: String| ListError { list: source.name.clone(), line, message };
            let list = u16::try_from(index).map_err(|_| fail(0, "too many lists (at most 65536)".to_owned()))?;
            let list_allows = source.role == ListRole::Allow;
            for (n, text) in source.text.lines().enumerate() {
                let line = n
                    .checked_add(1)
                    .and_then(|l| u32::try_from(l).ok())
                    .ok_or_else(|| fail(u32::MAX, "too many lines".to_owned()))?;
                if names.len() >= u32::MAX as usize {
                    return Err(fail(line, "too many name rules".to_owned()));
                }
                let loc = Loc { list, line };
                parse_line(text, |rule| match rule {
                    Rule::Name { name, kind, force_allow } => {
                        names.push(&name, kind, list_allows || force_allow, force_allow, loc);
                    }
                    Rule::Cidr(net) if list_allows => allow_cidrs.insert(net, loc),
                    Rule::Cidr(net) => block_cidrs.insert(net, loc),
                })
                .map_err(|message| fail(line, message))?;
            }
        }
        let lists = sources.iter().map(|s| Arc::from(s.name.as_str())).collect();
        Ok(Policy { lists, names: names.build(), allow_cidrs, block_cidrs })
    }

    /// A policy without rules: everything is [`Decision::NoMatch`].
    pub fn empty() -> Policy {
        Policy {
            lists: Box::default(),
            names: NameTable::default(),
            allow_cidrs: CidrTable::default(),
            block_cidrs: CidrTable::default(),
        }
    }

    /// Matches a DNS name (ASCII case-insensitive; one trailing dot ignored). Allow rules win over block rules;
    /// among rules of the deciding role, the most specific (longest matching name) is reported.
    ///
    /// Does not allocate unless a rule matches. Names are compared as bytes: a name with non-ASCII characters
    /// matches nothing (lists hold punycode), and only the last 253 bytes of an overlong name are considered.
    pub fn check_name(&self, name: &str) -> Decision {
        let name = name.strip_suffix('.').unwrap_or(name);
        let found = self.names.lookup(name);
        match (found.allow, found.block) {
            (Some(allow), _) => Decision::Allowed(self.name_rule(name, allow)),
            (None, Some(block)) => Decision::Blocked(self.name_rule(name, block)),
            (None, None) => Decision::NoMatch,
        }
    }

    /// Matches a destination address against the address ranges; allow ranges win over block ranges whatever
    /// their prefix lengths. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is matched as `a.b.c.d`; a NAT64
    /// address (`64:ff9b::a.b.c.d`, see [`nat64_ipv4`]) both as itself and as `a.b.c.d`.
    ///
    /// Does not allocate unless a rule matches.
    pub fn check_ip(&self, ip: IpAddr) -> Decision {
        let ip = ip.to_canonical();
        let embedded = nat64_ipv4(ip).map(IpAddr::V4);
        let lookup = |table: &CidrTable| table.lookup(ip).or_else(|| embedded.and_then(|v4| table.lookup(v4)));
        if let Some((net, loc)) = lookup(&self.allow_cidrs) {
            Decision::Allowed(self.rule_ref(loc, net.to_string().into_boxed_str()))
        } else if let Some((net, loc)) = lookup(&self.block_cidrs) {
            Decision::Blocked(self.rule_ref(loc, net.to_string().into_boxed_str()))
        } else {
            Decision::NoMatch
        }
    }

    /// Rule counts.
    pub fn stats(&self) -> PolicyStats {
        let (allow_names, block_names) = self.names.counts();
        PolicyStats {
            lists: self.lists.len(),
            block_names,
            allow_names,
            block_cidrs: self.block_cidrs.len(),
            allow_cidrs: self.allow_cidrs.len(),
        }
    }

    /// The [`RuleRef`] of a name rule found in `name` (trailing dot already stripped).
    fn name_rule(&self, name: &str, found: Found) -> RuleRef {
        let matched = name.get(found.start..).unwrap_or(name);
        self.rule_ref(found.meta.loc(), found.meta.render(matched))
    }

    fn rule_ref(&self, loc: Loc, rule: Box<str>) -> RuleRef {
        let list = self.lists.get(usize::from(loc.list)).cloned().unwrap_or_else(|| Arc::from("?"));
        RuleRef { list, line: loc.line, rule }
    }
}

/// The IPv4 address a NAT64 gateway reaches for `ip`, if `ip` is in the well-known prefix `64:ff9b::/96`
/// (RFC 6052 §2.1: the IPv4 address is the last 32 bits). The local-use prefix `64:ff9b:1::/48` (RFC 8215) is not
/// mapped: where the IPv4 address sits in it depends on a prefix length the network chose and we cannot know.
pub fn nat64_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            ([a, b, c, d, e, f] == [0x64, 0xff9b, 0, 0, 0, 0])
                .then(|| Ipv4Addr::from((u32::from(g) << 16) | u32::from(h)))
        }
        IpAddr::V4(_) => None,
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy").field("lists", &self.lists).field("stats", &self.stats()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn source(name: &str, role: ListRole, text: &str) -> ListSource {
        ListSource { name: name.to_owned(), role, text: text.to_owned() }
    }

    fn policy(block: &str, allow: &str) -> Policy {
        Policy::compile(&[source("block.txt", ListRole::Block, block), source("allow.txt", ListRole::Allow, allow)])
            .unwrap()
    }

    /// `(list, line, rule)` of a decision, prefixed `+` for allowed and `-` for blocked.
    fn describe(d: Decision) -> Option<String> {
        let sign = if d.is_blocked() { '-' } else { '+' };
        d.rule().map(|r| format!("{sign}{}:{}:{}", r.list, r.line, r.rule))
    }

    fn name(p: &Policy, n: &str) -> Option<String> {
        describe(p.check_name(n))
    }

    fn ip(p: &Policy, a: &str) -> Option<String> {
        describe(p.check_ip(a.parse().unwrap()))
    }

    const EVERY_FORMAT: &str = "\
[Adblock Plus 2.0]
! adblock comment
# hash comment

plain.example
0.0.0.0 hosts-a.example Hosts-B.example   # two names
127.0.0.1 localhost
:: hosts-v6.example
*.wild.example
||sub.example^
||pipe.example^|
||imp.example^$important
@@||except.example^
203.0.113.0/24
198.51.100.7
2001:db8::/32
tracking.miui.com   # src: [1][3]
";

    /// Before: `64:ff9b::198.51.100.7` skipped every IPv4 rule (only `::ffff:0:0/96` was mapped).
    #[test]
    fn nat64_addresses_are_checked_against_ipv4_ranges() {
        let p = policy("198.51.100.0/24\n2001:db8::/32\n", "198.51.100.9\n");
        assert_eq!(ip(&p, "64:ff9b::198.51.100.7").as_deref(), Some("-block.txt:1:198.51.100.0/24"));
        assert_eq!(ip(&p, "64:ff9b::c633:6407").as_deref(), Some("-block.txt:1:198.51.100.0/24"));
        assert_eq!(ip(&p, "64:ff9b::198.51.100.9").as_deref(), Some("+allow.txt:1:198.51.100.9/32"));
        assert_eq!(ip(&p, "64:ff9b::203.0.113.1"), None);
        assert_eq!(ip(&p, "64:ff9b:0:0:1::198.51.100.7"), None, "outside the /96");
        assert_eq!(nat64_ipv4("64:ff9b::1.2.3.4".parse().unwrap()), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(nat64_ipv4("64:ff9b:1::1.2.3.4".parse().unwrap()), None);
        assert_eq!(nat64_ipv4("1.2.3.4".parse().unwrap()), None);
    }

    #[test]
    fn every_format() {
        let p = policy(EVERY_FORMAT, "");
        let cases = [
            ("plain.example", Some("-block.txt:5:plain.example")),
            ("x.plain.example", None),
            ("hosts-a.example", Some("-block.txt:6:hosts-a.example")),
            ("hosts-b.example", Some("-block.txt:6:hosts-b.example")),
            ("localhost", None),
            ("hosts-v6.example", Some("-block.txt:8:hosts-v6.example")),
            ("wild.example", None),
            ("a.wild.example", Some("-block.txt:9:*.wild.example")),
            ("a.b.wild.example", Some("-block.txt:9:*.wild.example")),
            ("sub.example", Some("-block.txt:10:||sub.example^")),
            ("deep.x.sub.example", Some("-block.txt:10:||sub.example^")),
            ("pipe.example", Some("-block.txt:11:||pipe.example^")),
            ("imp.example", Some("-block.txt:12:||imp.example^")),
            ("except.example", Some("+block.txt:13:@@||except.example^")),
            ("a.except.example", Some("+block.txt:13:@@||except.example^")),
            ("tracking.miui.com", Some("-block.txt:17:tracking.miui.com")),
        ];
        for (n, want) in cases {
            assert_eq!(name(&p, n).as_deref(), want, "{n}");
        }
        assert_eq!(ip(&p, "203.0.113.200").as_deref(), Some("-block.txt:14:203.0.113.0/24"));
        assert_eq!(ip(&p, "198.51.100.7").as_deref(), Some("-block.txt:15:198.51.100.7/32"));
        assert_eq!(ip(&p, "198.51.100.8"), None);
        assert_eq!(ip(&p, "2001:db8:1::5").as_deref(), Some("-block.txt:16:2001:db8::/32"));
        assert_eq!(ip(&p, "2001:db9::5"), None);
        let stats = p.stats();
        assert_eq!(stats, PolicyStats { lists: 2, block_names: 9, allow_names: 1, block_cidrs: 3, allow_cidrs: 0 });
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                "exa mple.com",
                "invalid domain name \"exa mple.com\": contains whitespace (hosts lines start with an IP address)",
            ),
            ("bad_@.com", "invalid domain name \"bad_@.com\": only letters, digits, '-' and '_' are allowed"),
            ("||a.com^$third-party", "unsupported rule option \"$third-party\" in \"||a.com^$third-party\""),
            ("||a.com/ads.js", "path rules are not supported: \"||a.com/ads.js\""),
            ("a.com##.ad", "cosmetic (element hiding) rules are not supported: \"a.com##.ad\""),
            ("@@a.com", "unsupported exception rule \"@@a.com\": only \"@@||domain^\" is supported"),
            ("10.0.0.0/40", "invalid address range \"10.0.0.0/40\""),
        ];
        for (bad, message) in cases {
            let good = source("good.txt", ListRole::Block, "a.com\n");
            let text = format!("# header\nok.com\r\n{bad}\nnever-reached!\n");
            let err = Policy::compile(&[good, source("lists/bad.txt", ListRole::Allow, &text)]).unwrap_err();
            assert_eq!(err, ListError { list: "lists/bad.txt".into(), line: 3, message: message.into() });
            assert_eq!(err.to_string(), format!("lists/bad.txt:3: {message}"));
        }
    }

    #[test]
    fn allow_beats_block_for_names() {
        let block = "a.com\n||b.com^\nx.c.com\n*.d.com\n||e.com^\n||f.com^\n";
        let allow = "a.com\nb.com\n||c.com^\n||d.com^\n*.e.com\nz.y.f.com\n";
        let p = policy(block, allow);
        assert_eq!(name(&p, "a.com").as_deref(), Some("+allow.txt:1:a.com"));
        assert_eq!(name(&p, "b.com").as_deref(), Some("+allow.txt:2:b.com"));
        assert_eq!(name(&p, "x.b.com").as_deref(), Some("-block.txt:2:||b.com^"), "allow is exact only");
        assert_eq!(name(&p, "x.c.com").as_deref(), Some("+allow.txt:3:||c.com^"), "subtree allow beats exact block");
        assert_eq!(name(&p, "q.d.com").as_deref(), Some("+allow.txt:4:||d.com^"));
        assert_eq!(name(&p, "e.com").as_deref(), Some("-block.txt:5:||e.com^"), "*. allow excludes the apex");
        assert_eq!(name(&p, "w.e.com").as_deref(), Some("+allow.txt:5:*.e.com"));
        assert_eq!(name(&p, "y.f.com").as_deref(), Some("-block.txt:6:||f.com^"));
        assert_eq!(name(&p, "z.y.f.com").as_deref(), Some("+allow.txt:6:z.y.f.com"));
        // An allow rule written in a later list or earlier line makes no difference.
        let p = Policy::compile(&[
            source("allow.txt", ListRole::Allow, "||g.com^"),
            source("block.txt", ListRole::Block, "x.g.com"),
        ])
        .unwrap();
        assert_eq!(name(&p, "x.g.com").as_deref(), Some("+allow.txt:1:||g.com^"));
        // `@@` in a block list.
        let p = policy("||h.com^\n@@||ok.h.com^\n", "");
        assert_eq!(name(&p, "a.ok.h.com").as_deref(), Some("+block.txt:2:@@||ok.h.com^"));
        assert_eq!(name(&p, "bad.h.com").as_deref(), Some("-block.txt:1:||h.com^"));
    }

    #[test]
    fn allow_beats_block_for_addresses() {
        let p = policy("10.0.0.0/8\n192.0.2.0/24\n2001:db8::/32\n", "10.1.2.0/24\n192.0.0.0/16\n2001:db8:1::/48\n");
        assert_eq!(ip(&p, "10.1.2.3").as_deref(), Some("+allow.txt:1:10.1.2.0/24"));
        assert_eq!(ip(&p, "10.1.3.3").as_deref(), Some("-block.txt:1:10.0.0.0/8"));
        assert_eq!(ip(&p, "192.0.2.1").as_deref(), Some("+allow.txt:2:192.0.0.0/16"), "a wider allow still wins");
        assert_eq!(ip(&p, "2001:db8:1::1").as_deref(), Some("+allow.txt:3:2001:db8:1::/48"));
        assert_eq!(ip(&p, "2001:db8:2::1").as_deref(), Some("-block.txt:3:2001:db8::/32"));
    }

    #[test]
    fn names_ignore_case_and_trailing_dot() {
        let p = policy("Ads.Example.COM\n||Track.Example^\n", "");
        for n in ["ads.example.com", "ADS.EXAMPLE.COM.", "aDs.ExAmPlE.cOm"] {
            assert_eq!(name(&p, n).as_deref(), Some("-block.txt:1:ads.example.com"), "{n}");
        }
        assert_eq!(name(&p, "X.TRACK.Example.").as_deref(), Some("-block.txt:2:||track.example^"));
        assert_eq!(name(&p, "ads.example.com.."), None, "only one trailing dot is ignored");
    }

    #[test]
    fn match_only_at_label_boundaries() {
        let p = policy("exact.com\n*.wild.com\n||tree.com^\n", "");
        for n in ["x.exact.com", "notexact.com", "wild.com", "xwild.com", "xtree.com", "tree.com.evil", "com", ""] {
            assert_eq!(name(&p, n), None, "{n}");
        }
        assert_eq!(name(&p, "exact.com").as_deref(), Some("-block.txt:1:exact.com"));
        assert_eq!(name(&p, "a.wild.com").as_deref(), Some("-block.txt:2:*.wild.com"));
        assert_eq!(name(&p, "tree.com").as_deref(), Some("-block.txt:3:||tree.com^"));
    }

    #[test]
    fn unicode_rules_match_punycode_queries() {
        let p = policy("||bücher.example^\n", "");
        assert_eq!(name(&p, "www.xn--bcher-kva.example").as_deref(), Some("-block.txt:1:||xn--bcher-kva.example^"));
        assert_eq!(name(&p, "www.bücher.example"), None, "queries arrive as punycode");
    }

    #[test]
    fn v4_mapped_v6_is_matched_as_v4() {
        let p = policy("203.0.113.0/24\n::ffff:198.51.100.0/120\n", "203.0.113.9\n");
        assert_eq!(ip(&p, "::ffff:203.0.113.5").as_deref(), Some("-block.txt:1:203.0.113.0/24"));
        assert_eq!(ip(&p, "::ffff:203.0.113.9").as_deref(), Some("+allow.txt:1:203.0.113.9/32"));
        assert_eq!(ip(&p, "198.51.100.1").as_deref(), Some("-block.txt:2:198.51.100.0/24"));
        assert_eq!(ip(&p, "::203.0.113.5"), None, "v4-compatible addresses are plain IPv6");
    }

    #[test]
    fn stats_count_after_dedup() {
        let block = "a.com\na.com\n||a.com^\n*.a.com\n0.0.0.0 a.com b.com\n10.0.0.0/8\n10.1.0.0/8\n::/0\n";
        let allow = "a.com\n@@||a.com^\n||a.com^\n192.0.2.1\n";
        let p = policy(block, allow);
        assert_eq!(p.stats(), PolicyStats { lists: 2, block_names: 4, allow_names: 2, block_cidrs: 2, allow_cidrs: 1 });
        // The first of the duplicates is reported.
        assert_eq!(name(&p, "b.com").as_deref(), Some("-block.txt:5:b.com"));
        assert_eq!(name(&p, "x.a.com").as_deref(), Some("+allow.txt:2:@@||a.com^"));
        assert_eq!(ip(&p, "10.200.0.1").as_deref(), Some("-block.txt:6:10.0.0.0/8"));
        assert_eq!(Policy::empty().stats(), PolicyStats::default());
    }

    #[test]
    fn empty_policy_matches_nothing() {
        let p = Policy::empty();
        assert_eq!(p.check_name("a.com"), Decision::NoMatch);
        assert_eq!(p.check_ip("10.0.0.1".parse().unwrap()), Decision::NoMatch);
        let p = policy("# nothing\n", "");
        assert_eq!(p.check_name("a.com"), Decision::NoMatch);
    }

    #[test]
    fn from_file_reads_and_reports() {
        let dir = std::env::temp_dir().join(format!("hushwall-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.txt");
        std::fs::write(&good, "a.com\n").unwrap();
        let s = ListSource::from_file(&good, ListRole::Allow).unwrap();
        assert_eq!(s, source(&good.display().to_string(), ListRole::Allow, "a.com\n"));

        let bad = dir.join("latin1.txt");
        std::fs::write(&bad, b"a.com\nb.com\n# caf\xe9\n").unwrap();
        let err = ListSource::from_file(&bad, ListRole::Block).unwrap_err();
        assert_eq!((err.line, err.message.as_str()), (3, "the text is not valid UTF-8"));

        let missing = dir.join("missing.txt");
        let err = ListSource::from_file(&missing, ListRole::Block).unwrap_err();
        assert_eq!((err.list, err.line), (missing.display().to_string(), 0));
        assert!(err.message.starts_with("cannot read the file: "), "{}", err.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn policy_is_send_and_sync() {
        fn shared<T: Send + Sync>() {}
        shared::<Policy>();
        shared::<Arc<Policy>>();
    }

    /// Synthetic list of `n` names, one per line: `h<i>.s<i % 1000>.example`.
    fn synthetic(n: u32) -> String {
        let mut text = String::with_capacity(n as usize * 24);
        for i in 0..n {
            text.push_str(&format!("h{i}.s{}.example\n", i % 1000));
        }
        text
    }

    #[test]
    fn a_million_names() {
        const N: u32 = 1_000_000;
        let p = policy(&synthetic(N), "h77.s77.example\n");
        assert_eq!(p.stats().block_names, N as usize);
        for i in (0..N).step_by(9973) {
            let n = format!("H{i}.s{}.example.", i % 1000);
            assert_eq!(name(&p, &n), Some(format!("-block.txt:{}:h{i}.s{}.example", i + 1, i % 1000)));
            assert_eq!(name(&p, &format!("h{i}.s{}.example", (i + 1) % 1000)), None);
            assert_eq!(name(&p, &format!("x.h{i}.s{}.example", i % 1000)), None);
        }
        assert_eq!(name(&p, "h77.s77.example").as_deref(), Some("+allow.txt:1:h77.s77.example"));
        assert_eq!(name(&p, &format!("h{N}.s0.example")), None);
    }

    /// Prints memory use and lookup speed for a million names. Run with
    /// `cargo test -p hushwall-core --lib policy::tests::measure -- --ignored --nocapture` (best in release).
    #[test]
    #[ignore = "measurement, prints numbers"]
    fn measure() {
        const N: u32 = 1_000_000;
        let text = synthetic(N);
        let start = std::time::Instant::now();
        let p = policy(&text, "");
        let compile = start.elapsed();
        let bytes = p.names.heap_bytes();
        let queries: Vec<String> =
            (0..100_000u32).map(|i| format!("h{}.s{}.example", i * 7, (i * 7 + i % 2) % 1000)).collect();
        let start = std::time::Instant::now();
        let hits = queries.iter().filter(|q| p.check_name(q).is_blocked()).count();
        let per_lookup = start.elapsed() / 100_000;
        println!(
            "{N} names: compile {compile:?}, table {bytes} bytes ({:.1} B/name), {per_lookup:?}/lookup ({hits} hits)",
            bytes as f64 / f64::from(N)
        );
    }

    proptest! {
        #[test]
        fn any_list_text_compiles_or_errors(text in "(?s).{0,400}", allow in any::<bool>()) {
            let role = if allow { ListRole::Allow } else { ListRole::Block };
            match Policy::compile(&[source("p.txt", role, &text)]) {
                Ok(p) => { p.check_name("a.com"); }
                Err(e) => prop_assert!(e.line >= 1 && e.list == "p.txt"),
            }
        }

        #[test]
        fn list_like_text_compiles_or_errors(
            lines in prop::collection::vec("(@@)?(\\|\\|)?(\\*\\.)?[a-zA-Z0-9._ü*/:$^|#! -]{0,30}", 0..20)
        ) {
            let text = lines.join("\n");
            let _ = Policy::compile(&[source("p.txt", ListRole::Block, &text)]);
        }

        #[test]
        fn any_name_is_checked_without_panic(n in "(?s).{0,300}", m in "[a-zA-Z0-9.]{0,300}") {
            let p = policy("||com^\n*.b.c\nexact.org\n10.0.0.0/8\n", "@@||ok.com^\n");
            p.check_name(&n);
            p.check_name(&m);
        }

        #[test]
        fn subtree_rules_match_every_subdomain(labels in prop::collection::vec("[a-z0-9-]{1,10}", 1..6)) {
            let p = policy("||blocked.test^\n", "");
            let n = format!("{}.blocked.test", labels.join("."));
            prop_assert_eq!(name(&p, &n), Some("-block.txt:1:||blocked.test^".to_owned()));
        }
    }
}
