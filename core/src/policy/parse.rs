//! The list line parser: one line of text in, zero or more rules out.
//!
//! Every format is recognised per line, so one file may mix them:
//!
//! | Line                               | Rule                                          |
//! |------------------------------------|-----------------------------------------------|
//! | blank, `# …`, `! …`, `[Adblock …]` | none                                          |
//! | `example.com`                      | exactly `example.com`                         |
//! | `0.0.0.0 a.com b.com` (hosts)      | exactly `a.com`, exactly `b.com`              |
//! | `*.example.com`                    | every subdomain, not `example.com` itself     |
//! | `\|\|example.com^`                 | `example.com` and every subdomain             |
//! | `@@\|\|example.com^`               | the same, always as an allow rule             |
//! | `203.0.113.0/24`, `2001:db8::/32`  | an address range                              |
//! | `203.0.113.7`                      | that one address (`/32` or `/128`)            |
//!
//! Text after whitespace and `#` is a comment. Anything else is an error whose message quotes the offending text.
//! The parser never panics and allocates only to lowercase or punycode-convert a name or to build an error message.

use ipnet::{IpNet, Ipv4Net};
use std::borrow::Cow;
use std::net::IpAddr;

/// Which names a name rule covers, relative to its own name `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum NameKind {
    /// `n` only.
    Exact,
    /// `n` and every name below it (`||n^`).
    Subtree,
    /// Every name below `n`, not `n` itself (`*.n`).
    Subdomains,
}

/// One rule produced by a list line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Rule<'a> {
    /// A name rule.
    Name {
        /// Canonical name: lowercase ASCII (punycode), no trailing dot.
        name: Cow<'a, str>,
        /// What the rule covers.
        kind: NameKind,
        /// The line was an `@@` exception: an allow rule whatever the list's role.
        force_allow: bool,
    },
    /// An address range, host bits cleared.
    Cidr(IpNet),
}

/// Names that hosts files carry for the machine itself; skipped on hosts lines, never turned into rules.
const HOSTS_BOILERPLATE: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

/// Longest name in DNS presentation form, without the trailing dot (RFC 1035 §2.3.4).
pub(super) const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// Parses one line (without its line terminator), handing each rule to `emit`.
///
/// On error returns a message for the user; rules emitted before the error should be discarded by the caller.
pub(super) fn parse_line<'a>(line: &'a str, mut emit: impl FnMut(Rule<'a>)) -> Result<(), String> {
    let line = strip_comment(line.trim_start_matches('\u{feff}')).trim_ascii();
    if line.is_empty() || line.starts_with('#') || line.starts_with('!') || is_header(line) {
        return Ok(());
    }
    if let Some(rest) = line.strip_prefix("@@") {
        let Some(body) = rest.strip_prefix("||") else {
            return Err(format!("unsupported exception rule \"{line}\": only \"@@||domain^\" is supported"));
        };
        let name = adblock_name(body, line)?;
        emit(Rule::Name { name, kind: NameKind::Subtree, force_allow: true });
        return Ok(());
    }
    if let Some(body) = line.strip_prefix("||") {
        let name = adblock_name(body, line)?;
        emit(Rule::Name { name, kind: NameKind::Subtree, force_allow: false });
        return Ok(());
    }
    let cosmetic = ["##", "#@#", "#?#", "#$#"];
    if line.contains('#') && cosmetic.iter().any(|c| line.contains(c)) {
        return Err(format!("cosmetic (element hiding) rules are not supported: \"{line}\""));
    }
    if let Some((_, option)) = line.split_once('$') {
        return Err(format!("unsupported rule option \"${option}\" in \"{line}\""));
    }
    if let Some(base) = line.strip_prefix("*.") {
        let name = canonical_name(base).map_err(|why| format!("invalid domain name \"{line}\": {why}"))?;
        emit(Rule::Name { name, kind: NameKind::Subdomains, force_allow: false });
        return Ok(());
    }

    let mut tokens = line.split_ascii_whitespace();
    let first = tokens.next().unwrap_or_default();
    let mut names = tokens.peekable();
    if names.peek().is_none() {
        // One token: an address, a range or a plain name.
        if let Some(net) = parse_cidr(first)? {
            emit(Rule::Cidr(net));
        } else {
            let name = canonical_name(first).map_err(|why| format!("invalid domain name \"{first}\": {why}"))?;
            emit(Rule::Name { name, kind: NameKind::Exact, force_allow: false });
        }
        return Ok(());
    }
    if first.parse::<IpAddr>().is_err() {
        return Err(format!(
            "invalid domain name \"{line}\": contains whitespace (hosts lines start with an IP address)"
        ));
    }
    for token in names {
        let bare = token.strip_suffix('.').unwrap_or(token);
        if HOSTS_BOILERPLATE.iter().any(|b| b.eq_ignore_ascii_case(bare)) {
            continue;
        }
        let name = canonical_name(token).map_err(|why| format!("invalid domain name \"{token}\": {why}"))?;
        emit(Rule::Name { name, kind: NameKind::Exact, force_allow: false });
    }
    Ok(())
}

/// Cuts a trailing comment: `#` preceded by whitespace, up to the end of the line.
fn strip_comment(line: &str) -> &str {
    let mut from = 0;
    while let Some(at) = line.get(from..).and_then(|rest| rest.find('#')).map(|pos| from + pos) {
        let before = at.checked_sub(1).and_then(|i| line.as_bytes().get(i));
        if before.is_some_and(u8::is_ascii_whitespace) {
            return line.get(..at).unwrap_or(line);
        }
        from = at + 1;
    }
    line
}

/// `[Adblock Plus 2.0]`, `[AdGuard]` and the like: a bracketed header starting with a letter.
fn is_header(line: &str) -> bool {
    line.ends_with(']')
        && line.strip_prefix('[').and_then(|rest| rest.chars().next()).is_some_and(|c| c.is_ascii_alphabetic())
}

/// The domain of an AdBlock `||domain^` rule body (the text after `||`), with `^|` and `$important` accepted.
fn adblock_name<'a>(body: &'a str, line: &str) -> Result<Cow<'a, str>, String> {
    let body = match body.split_once('$') {
        None => body,
        Some((body, "important")) => body,
        Some((_, option)) => return Err(format!("unsupported rule option \"${option}\" in \"{line}\"")),
    };
    let Some(domain) = body.strip_suffix("^|").or_else(|| body.strip_suffix('^')) else {
        return Err(if body.contains('/') {
            format!("path rules are not supported: \"{line}\"")
        } else {
            format!("expected \"||domain^\" in \"{line}\"")
        });
    };
    if domain.contains('/') || domain.contains('^') {
        return Err(format!("path rules are not supported: \"{line}\""));
    }
    canonical_name(domain).map_err(|why| format!("invalid domain name \"{domain}\" in \"{line}\": {why}"))
}

/// An address or range, if `token` looks like one (it contains `:` or starts with a digit and parses).
///
/// Host bits are accepted and cleared (`203.0.113.7/24` becomes `203.0.113.0/24`), as many published lists
/// write ranges that way. IPv4-mapped IPv6 ranges of length 96 or more (`::ffff:203.0.113.0/120`) become the
/// IPv4 range, since lookups treat mapped addresses as IPv4.
fn parse_cidr(token: &str) -> Result<Option<IpNet>, String> {
    let net = if token.contains('/') {
        match token.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) if token.contains(':') || token.starts_with(|c: char| c.is_ascii_digit()) => {
                return Err(format!("invalid address range \"{token}\""));
            }
            Err(_) => return Ok(None),
        }
    } else {
        match token.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => return Ok(None),
        }
    };
    Ok(Some(unmap_v4(net)))
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) → `a.b.c.d/(n-96)`; everything else unchanged.
fn unmap_v4(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(v4net);
            }
        }
    }
    net
}

/// Canonical form of a rule's name: lowercase ASCII, Unicode labels as punycode, one trailing dot dropped.
///
/// Accepted: labels of 1..=63 ASCII letters, digits, `-` and `_`; at most 253 characters; the last label not
/// all digits (that would be an IP address, which belongs in an address rule). Single-label names are accepted.
pub(super) fn canonical_name(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    if trimmed.is_ascii() {
        return Ok(if check_ascii_name(trimmed)? {
            Cow::Owned(trimmed.to_ascii_lowercase())
        } else {
            Cow::Borrowed(trimmed)
        });
    }
    let converted = idna::domain_to_ascii_cow(trimmed.as_bytes(), idna::AsciiDenyList::EMPTY)
        .map_err(|_| "not a valid internationalised domain name")?
        .into_owned();
    let converted = match converted.strip_suffix('.') {
        Some(stripped) => stripped.to_owned(),
        None => converted,
    };
    check_ascii_name(&converted)?;
    Ok(Cow::Owned(converted))
}

/// Checks an ASCII name against the rules of [`canonical_name`], letters of either case allowed, in one pass.
/// Returns whether it has uppercase letters.
fn check_ascii_name(name: &str) -> Result<bool, &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("longer than 253 characters");
    }
    let (mut label_len, mut all_digits, mut upper) = (0, true, false);
    for &b in name.as_bytes() {
        if b == b'.' {
            if label_len == 0 {
                return Err("empty label");
            }
            (label_len, all_digits) = (0, true);
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err("only letters, digits, '-' and '_' are allowed");
        }
        label_len += 1;
        if label_len > MAX_LABEL_LEN {
            return Err("label longer than 63 characters");
        }
        all_digits &= b.is_ascii_digit();
        upper |= b.is_ascii_uppercase();
    }
    if label_len == 0 {
        return Err("empty label");
    }
    if all_digits {
        return Err("the last label is all digits (write IP addresses without \"||\" or \"*.\")");
    }
    Ok(upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Vec<Rule<'_>>, String> {
        let mut out = Vec::new();
        parse_line(line, |r| out.push(r))?;
        Ok(out)
    }

    fn exact(n: &str) -> Rule<'_> {
        Rule::Name { name: Cow::Borrowed(n), kind: NameKind::Exact, force_allow: false }
    }

    fn net(s: &str) -> Rule<'static> {
        Rule::Cidr(s.parse().unwrap())
    }

    #[test]
    fn skips_blank_comment_and_header_lines() {
        for line in
            ["", "   ", "\t", "# comment", "  # indented", "! adblock comment", "[Adblock Plus 2.0]", "[AdGuard]"]
        {
            assert_eq!(parse(line), Ok(vec![]), "{line:?}");
        }
    }

    #[test]
    fn plain_domain_with_trailing_comment() {
        assert_eq!(parse("tracking.miui.com   # src: [1][3]"), Ok(vec![exact("tracking.miui.com")]));
        assert_eq!(parse("a.com\t#x"), Ok(vec![exact("a.com")]));
        assert_eq!(parse("\u{feff}a.com"), Ok(vec![exact("a.com")]));
    }

    #[test]
    fn plain_domain_is_lowercased_and_loses_trailing_dot() {
        assert_eq!(parse("Tracking.MIUI.com."), Ok(vec![exact("tracking.miui.com")]));
        assert_eq!(parse("router"), Ok(vec![exact("router")]));
        assert_eq!(parse("_dmarc.a.com"), Ok(vec![exact("_dmarc.a.com")]));
    }

    #[test]
    fn unicode_names_become_punycode() {
        assert_eq!(parse("bücher.example"), Ok(vec![exact("xn--bcher-kva.example")]));
        assert_eq!(
            parse("||BÜCHER.example^"),
            Ok(vec![Rule::Name {
                name: Cow::Borrowed("xn--bcher-kva.example"),
                kind: NameKind::Subtree,
                force_allow: false
            }])
        );
    }

    #[test]
    fn hosts_lines() {
        assert_eq!(parse("0.0.0.0 a.com B.com"), Ok(vec![exact("a.com"), exact("b.com")]));
        assert_eq!(parse("127.0.0.1\ta.com"), Ok(vec![exact("a.com")]));
        assert_eq!(parse(":: a.com"), Ok(vec![exact("a.com")]));
        assert_eq!(parse("::1 localhost ip6-localhost ip6-loopback"), Ok(vec![]));
        assert_eq!(parse("127.0.0.1 localhost localhost.localdomain local"), Ok(vec![]));
        assert_eq!(parse("255.255.255.255 broadcasthost"), Ok(vec![]));
        assert_eq!(parse("ff02::1 ip6-allnodes"), Ok(vec![]));
        assert_eq!(parse("0.0.0.0 0.0.0.0"), Ok(vec![]));
        assert_eq!(parse("0.0.0.0 a.com # x"), Ok(vec![exact("a.com")]));
    }

    #[test]
    fn wildcard_and_adblock() {
        let name = |n, kind, force_allow| Rule::Name { name: Cow::Borrowed(n), kind, force_allow };
        assert_eq!(parse("*.Ad.com"), Ok(vec![name("ad.com", NameKind::Subdomains, false)]));
        for l in ["||ad.com^", "||ad.com^|", "||ad.com^$important", "||ad.com^|$important"] {
            assert_eq!(parse(l), Ok(vec![name("ad.com", NameKind::Subtree, false)]), "{l}");
        }
        for l in ["@@||ok.com^", "@@||ok.com^|", "@@||ok.com^$important"] {
            assert_eq!(parse(l), Ok(vec![name("ok.com", NameKind::Subtree, true)]), "{l}");
        }
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse("203.0.113.0/24"), Ok(vec![net("203.0.113.0/24")]));
        assert_eq!(parse("203.0.113.7/24"), Ok(vec![net("203.0.113.0/24")]), "host bits cleared");
        assert_eq!(parse("203.0.113.7"), Ok(vec![net("203.0.113.7/32")]));
        assert_eq!(parse("2001:DB8::/32"), Ok(vec![net("2001:db8::/32")]));
        assert_eq!(parse("2001:db8::1"), Ok(vec![net("2001:db8::1/128")]));
        assert_eq!(parse("::ffff:203.0.113.0/120"), Ok(vec![net("203.0.113.0/24")]));
        assert_eq!(parse("10.0.0.0/8 # private"), Ok(vec![net("10.0.0.0/8")]));
    }

    #[test]
    fn errors_quote_the_offending_text() {
        let cases = [
            ("exa mple.com", "invalid domain name \"exa mple.com\""),
            ("ex!ample.com", "invalid domain name \"ex!ample.com\""),
            ("a..com", "invalid domain name \"a..com\": empty label"),
            ("0.0.0.0 good.com bad!.com", "invalid domain name \"bad!.com\""),
            ("||a.com^$third-party", "unsupported rule option \"$third-party\""),
            ("a.com$script", "unsupported rule option \"$script\""),
            ("||a.com/ads^", "path rules are not supported"),
            ("||a.com/ads", "path rules are not supported"),
            ("||a.com", "expected \"||domain^\" in \"||a.com\""),
            ("example.com##.banner", "cosmetic (element hiding) rules are not supported"),
            ("@@|a.com^", "unsupported exception rule \"@@|a.com^\""),
            ("||1.2.3.4^", "the last label is all digits"),
            ("*.a.com/x", "invalid domain name \"*.a.com/x\""),
            ("*.*.a.com", "invalid domain name \"*.*.a.com\""),
            ("300.1.1.0/24", "invalid address range \"300.1.1.0/24\""),
            ("10.0.0.0/33", "invalid address range \"10.0.0.0/33\""),
            ("2001:db8::/129", "invalid address range \"2001:db8::/129\""),
            ("2001:db8:::1", "invalid domain name \"2001:db8:::1\""),
            ("[::1]", "invalid domain name \"[::1]\""),
            ("/ads[0-9]+/", "invalid domain name \"/ads[0-9]+/\""),
            ("ünïcode\u{0}.com", "invalid domain name"),
        ];
        for (line, want) in cases {
            match parse(line) {
                Err(msg) => assert!(msg.contains(want), "{line:?}: {msg:?} lacks {want:?}"),
                Ok(rules) => panic!("{line:?} parsed as {rules:?}"),
            }
        }
    }

    #[test]
    fn name_length_limits() {
        let label63 = "a".repeat(63);
        assert!(canonical_name(&format!("{label63}.com")).is_ok());
        assert_eq!(canonical_name(&format!("a{label63}.com")), Err("label longer than 63 characters"));
        let name253 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        assert_eq!(name253.len(), 253);
        assert!(canonical_name(&name253).is_ok());
        assert!(canonical_name(&format!("{name253}.")).is_ok(), "trailing dot does not count");
        assert_eq!(canonical_name(&format!("c{name253}")), Err("longer than 253 characters"));
        assert_eq!(canonical_name(""), Err("empty name"));
        assert_eq!(canonical_name("."), Err("empty name"));
    }
}
