//! Built-in profiles: the lists shipped in the binary from the repository's `blocklists/` directory.

use super::{ListRole, ListSource};
use std::fmt;
use std::str::FromStr;

/// A built-in list: file name and contents.
type Builtin = (&'static str, &'static str);

const XIAOMI_TELEMETRY: Builtin = ("xiaomi-telemetry.txt", include_str!("../../../blocklists/xiaomi-telemetry.txt"));
const XIAOMI_ADS: Builtin = ("xiaomi-ads.txt", include_str!("../../../blocklists/xiaomi-ads.txt"));
const SENSORSDATA: Builtin = ("sensorsdata.txt", include_str!("../../../blocklists/sensorsdata.txt"));
const ESSENTIALS_ALLOW: Builtin = ("essentials-allow.txt", include_str!("../../../blocklists/essentials-allow.txt"));
const STRICT_EXTRA: Builtin = ("strict-extra.txt", include_str!("../../../blocklists/strict-extra.txt"));
const ALIBABA_CLOUD_SG_RU: Builtin =
    ("alibaba-cloud-sg-ru.txt", include_str!("../../../blocklists/alibaba-cloud-sg-ru.txt"));
const DOH_RESOLVERS: Builtin = ("doh-resolvers.txt", include_str!("../../../blocklists/doh-resolvers.txt"));

/// Lists of the balanced profile, in order.
const BALANCED: &[(Builtin, ListRole)] = &[
    (XIAOMI_TELEMETRY, ListRole::Block),
    (XIAOMI_ADS, ListRole::Block),
    (SENSORSDATA, ListRole::Block),
    (ESSENTIALS_ALLOW, ListRole::Allow),
];

/// Lists the strict profile adds to the balanced ones.
const STRICT_EXTRAS: &[(Builtin, ListRole)] =
    &[(STRICT_EXTRA, ListRole::Block), (ALIBABA_CLOUD_SG_RU, ListRole::Block), (DOH_RESOLVERS, ListRole::Block)];

/// Rule sets that are always on in `strict` and that `balanced` adds only when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProfileOptions {
    /// Block the known public DNS-over-HTTPS/TLS resolvers (`doh-resolvers.txt`), so that apps cannot resolve
    /// names around Hushwall. The user's own Private DNS server is allowed by the engine before any list.
    pub block_doh: bool,
}

/// A built-in set of lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Profile {
    /// Telemetry and ads, never breaking updates, Mi Account, push, Find My Device or security-app updates.
    #[default]
    Balanced,
    /// Balanced plus more names and the Alibaba Cloud Singapore/Russia address ranges.
    Strict,
}

impl Profile {
    /// The profile's lists, named `builtin:<file>`, ready for [`Policy::compile`](super::Policy::compile).
    pub fn sources(self) -> Vec<ListSource> {
        self.sources_with(ProfileOptions::default())
    }

    /// The profile's lists plus the optional rule sets `options` turns on (strict has them all already).
    pub fn sources_with(self, options: ProfileOptions) -> Vec<ListSource> {
        let extras = match self {
            Profile::Balanced if options.block_doh => &[(DOH_RESOLVERS, ListRole::Block)][..],
            Profile::Balanced => &[][..],
            Profile::Strict => STRICT_EXTRAS,
        };
        BALANCED
            .iter()
            .chain(extras)
            .map(|&((file, text), role)| ListSource { name: format!("builtin:{file}"), role, text: text.to_owned() })
            .collect()
    }

    /// The profile's name as accepted by [`FromStr`]: `balanced` or `strict`.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Balanced => "balanced",
            Profile::Strict => "strict",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A profile name that is neither `balanced` nor `strict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProfile(pub String);

impl fmt::Display for UnknownProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown profile \"{}\" (expected \"balanced\" or \"strict\")", self.0)
    }
}

impl std::error::Error for UnknownProfile {}

impl FromStr for Profile {
    type Err = UnknownProfile;

    /// Parses `balanced` or `strict`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Profile::Balanced, Profile::Strict]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownProfile(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse_line, NameKind, Rule};
    use super::super::{Decision, Policy};
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in [Profile::Balanced, Profile::Strict] {
            assert_eq!(p.to_string().parse::<Profile>(), Ok(p));
        }
        assert_eq!("STRICT".parse::<Profile>(), Ok(Profile::Strict));
        assert_eq!(Profile::default(), Profile::Balanced);
        let err = "paranoid".parse::<Profile>().unwrap_err();
        assert_eq!(err.to_string(), "unknown profile \"paranoid\" (expected \"balanced\" or \"strict\")");
    }

    #[test]
    fn profile_lists() {
        let names = |p: Profile| p.sources().into_iter().map(|s| (s.name, s.role)).collect::<Vec<_>>();
        let balanced = vec![
            ("builtin:xiaomi-telemetry.txt".to_owned(), ListRole::Block),
            ("builtin:xiaomi-ads.txt".to_owned(), ListRole::Block),
            ("builtin:sensorsdata.txt".to_owned(), ListRole::Block),
            ("builtin:essentials-allow.txt".to_owned(), ListRole::Allow),
        ];
        assert_eq!(names(Profile::Balanced), balanced);
        let mut strict = balanced;
        strict.push(("builtin:strict-extra.txt".to_owned(), ListRole::Block));
        strict.push(("builtin:alibaba-cloud-sg-ru.txt".to_owned(), ListRole::Block));
        strict.push(("builtin:doh-resolvers.txt".to_owned(), ListRole::Block));
        assert_eq!(names(Profile::Strict), strict);
        let with_doh = |p: Profile| {
            p.sources_with(ProfileOptions { block_doh: true }).into_iter().map(|s| s.name).collect::<Vec<_>>()
        };
        assert_eq!(with_doh(Profile::Balanced).last().map(String::as_str), Some("builtin:doh-resolvers.txt"));
        assert_eq!(with_doh(Profile::Strict), names(Profile::Strict).into_iter().map(|(n, _)| n).collect::<Vec<_>>());
    }

    #[test]
    fn every_profile_compiles() {
        for p in [Profile::Balanced, Profile::Strict] {
            let sources = p.sources();
            let policy = Policy::compile(&sources).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(policy.stats().lists, sources.len());
        }
    }

    const APEXES: [&str; 4] = ["xiaomi.com", "miui.com", "xiaomi.net", "mi.com"];

    #[test]
    fn balanced_never_blocks_an_apex_or_its_whole_subtree() {
        let policy = Policy::compile(&Profile::Balanced.sources()).unwrap();
        for apex in APEXES {
            // The apex itself, and a made-up subdomain only a suffix rule on the apex (or above) could block.
            for name in [apex.to_owned(), format!("hushwall-probe-7f3a9c.{apex}")] {
                let d = policy.check_name(&name);
                assert!(!matches!(d, Decision::Blocked(_)), "{name}: {d:?}");
            }
            // A real subdomain may have its own exact rule, but not be blocked through the apex.
            if let Decision::Blocked(r) = policy.check_name(&format!("account.{apex}")) {
                assert!(![format!("||{apex}^"), format!("*.{apex}")].contains(&r.rule.to_string()), "{r}");
            }
        }
    }

    #[test]
    fn balanced_has_no_suffix_rule_on_an_apex_or_above() {
        for source in Profile::Balanced.sources() {
            if source.role == ListRole::Allow {
                continue;
            }
            for (n, line) in source.text.lines().enumerate() {
                parse_line(line, |rule| {
                    if let Rule::Name { name, kind: NameKind::Subtree | NameKind::Subdomains, force_allow: false } =
                        rule
                    {
                        for apex in APEXES {
                            let covers_apex = apex == name || apex.ends_with(&format!(".{name}"));
                            assert!(!covers_apex, "{}:{}: suffix rule on {name} covers {apex}", source.name, n + 1);
                        }
                    }
                })
                .unwrap_or_else(|e| panic!("{}:{}: {e}", source.name, n + 1));
            }
        }
    }

    /// Samples from the generator's inputs (blocklists/gen): Alibaba addresses in Singapore and Russia, and in its
    /// Japan, US and Germany ranges, by ASN.
    const ALIBABA_SG_RU: [&str; 8] = [
        "161.117.1.1",   // AS45102 SG
        "8.219.10.10",   // AS45102 SG
        "8.212.93.5",    // AS134963 SG
        "8.135.48.1",    // AS37963 SG
        "8.209.130.1",   // AS45102 RU
        "185.218.177.1", // AS45102 RU
        "47.246.132.1",  // AS45102 RU
        "2a0b:da40::1",  // AS45102 RU
    ];
    const ALIBABA_ELSEWHERE: [&str; 7] = [
        "8.209.200.1", // AS45102 JP
        "8.211.130.1", // AS45102 JP
        "8.221.1.1",   // AS45102 US
        "47.90.172.1", // AS134963 US
        "8.209.65.1",  // AS45102 DE
        "8.209.122.1", // AS134963 DE
        "47.87.24.1",  // AS134963 DE
    ];

    #[test]
    fn strict_blocks_alibaba_singapore_and_russia_and_no_other_region() {
        let strict = Policy::compile(&Profile::Strict.sources()).unwrap();
        for ip in ALIBABA_SG_RU {
            let d = strict.check_ip(ip.parse().unwrap());
            assert!(d.is_blocked(), "{ip}: {d:?}");
            assert_eq!(&*d.rule().unwrap().list, "builtin:alibaba-cloud-sg-ru.txt", "{ip}");
        }
        for ip in ALIBABA_ELSEWHERE {
            assert_eq!(strict.check_ip(ip.parse().unwrap()), Decision::NoMatch, "{ip}");
        }
    }

    #[test]
    fn balanced_blocks_no_address_range() {
        for options in [ProfileOptions::default(), ProfileOptions { block_doh: true }] {
            let balanced = Policy::compile(&Profile::Balanced.sources_with(options)).unwrap();
            assert_eq!(balanced.stats().block_cidrs, 0);
            for ip in ALIBABA_SG_RU.iter().chain(&ALIBABA_ELSEWHERE) {
                assert_eq!(balanced.check_ip(ip.parse().unwrap()), Decision::NoMatch, "{ip}");
            }
        }
    }

    /// Essentials (OTA, Mi Account, Find device, Mi Push, Security-app virus/anti-spam database updates, app
    /// updates, connectivity checks): no profile, with or without the DoH rule set, may block them.
    #[test]
    fn no_profile_blocks_an_essential() {
        const ESSENTIALS: [&str; 14] = [
            "update.intl.miui.com",
            "ultimateota.d.miui.com",
            "bkt-sgp-miui-ota-update-alisgp.oss-ap-southeast-1.aliyuncs.com",
            "account.xiaomi.com",
            "findapi.micloud.xiaomi.net",
            "register.xmpush.xiaomi.com",
            "resolver.msg.xiaomi.net",
            "api.sec.miui.com",
            "api.sec.intl.miui.com",
            "api.miui.security.xiaomi.com",
            "update.avlyun.sec.miui.com",
            "global.market.xiaomi.com",
            "connect.rom.miui.com",
            "connect.intl.rom.miui.com",
        ];
        let allow_list = ESSENTIALS_ALLOW.1;
        for profile in [Profile::Balanced, Profile::Strict] {
            for options in [ProfileOptions::default(), ProfileOptions { block_doh: true }] {
                let policy = Policy::compile(&profile.sources_with(options)).unwrap();
                for name in ESSENTIALS.iter().copied().chain(allow_list.lines().filter_map(|l| {
                    let entry = l.split('#').next()?.trim();
                    (!entry.is_empty()).then_some(entry)
                })) {
                    let d = policy.check_name(name);
                    assert!(!d.is_blocked(), "{profile}: essential {name} blocked by {d:?}");
                }
            }
        }
    }

    /// The names issue 14 lists as newer MiStat/tracking variants, their specific CDN CNAME targets, the browser
    /// collection host and MIUI's HTTPDNS resolver are blocked in balanced; the CDN apexes themselves are not.
    #[test]
    fn balanced_blocks_newer_telemetry_names_but_no_cdn_apex() {
        let balanced = Policy::compile(&Profile::Balanced.sources()).unwrap();
        for name in [
            "tracking.eu.miui.com",
            "fcanr.tracking.miui.com",
            "data.mistat.us.xiaomi.com",
            "abtest.mistat.xiaomi.com",
            "abtest.mistat.intl.xiaomi.com",
            "storeconfig.mistat.xiaomi.com",
            "storeconfig.mistat.intl.xiaomi.com",
            "ident.mistat.xiaomi.com",
            "mistat.intl.xiaomi.com.edgesuite.net",
            "mistat.rus.xiaomi.com.ksyna.net",
            "mistat.xiaomi.com.download.ks-cdn.com",
            "data-mistat-india-xiaomi-com-1248219176.ap-south-1.elb.amazonaws.com",
            "api.collect.data.intl.miui.com",
            "resolver.gslb.mi-idc.com",
        ] {
            assert!(balanced.check_name(name).is_blocked(), "{name}");
        }
        let strict = Policy::compile(&Profile::Strict.sources()).unwrap();
        for name in [
            "edgesuite.net",
            "www.example.com.edgesuite.net",
            "ksyna.net",
            "ks-cdn.com",
            "download.ks-cdn.com",
            "amazonaws.com",
            "ap-south-1.elb.amazonaws.com",
            "other-1.ap-south-1.elb.amazonaws.com",
        ] {
            assert_eq!(balanced.check_name(name), Decision::NoMatch, "{name}");
            assert_eq!(strict.check_name(name), Decision::NoMatch, "{name}");
        }
    }

    #[test]
    fn doh_resolvers_only_in_strict_or_when_asked() {
        let resolvers = ["dns.google", "cloudflare-dns.com", "mozilla.cloudflare-dns.com", "dns.quad9.net", "doh.pub"];
        let balanced = Policy::compile(&Profile::Balanced.sources()).unwrap();
        let asked = Policy::compile(&Profile::Balanced.sources_with(ProfileOptions { block_doh: true })).unwrap();
        let strict = Policy::compile(&Profile::Strict.sources()).unwrap();
        for name in resolvers {
            assert_eq!(balanced.check_name(name), Decision::NoMatch, "{name}");
            for policy in [&asked, &strict] {
                let d = policy.check_name(name);
                assert_eq!(d.rule().map(|r| &*r.list), Some("builtin:doh-resolvers.txt"), "{name}: {d:?}");
                assert!(d.is_blocked(), "{name}");
            }
        }
        // The services beside the resolvers stay reachable.
        for name in ["google.com", "www.google.com", "cloudflare.com", "quad9.net", "nextdns.io", "my.nextdns.io"] {
            assert_eq!(strict.check_name(name), Decision::NoMatch, "{name}");
        }
    }

    const CONSENSUS: &str = include_str!("../../../blocklists/consensus-xiaomi.txt");
    const README: &str = include_str!("../../../blocklists/README.md");

    /// One row of README's consensus coverage table.
    struct CoverageRow<'a> {
        name: &'a str,
        balanced: &'a str,
        strict: &'a str,
        breaks: &'a str,
        source: &'a str,
    }

    /// Rows of the table under "## Consensus coverage" in blocklists/README.md.
    fn coverage_rows() -> Vec<CoverageRow<'static>> {
        let start = README.find("\n## Consensus coverage").expect("README has a consensus coverage section");
        let section = &README[start + 1..];
        let section = &section[..section[1..].find("\n## ").map_or(section.len(), |end| end + 1)];
        section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
                assert_eq!(cells.len(), 6, "README row: {l}");
                CoverageRow {
                    name: cells[0].trim_matches('`'),
                    balanced: cells[2],
                    strict: cells[3],
                    breaks: cells[4],
                    source: cells[5],
                }
            })
            .collect()
    }

    /// Every name three or more public Xiaomi lists block is blocked in balanced, or README's coverage table says
    /// why not (and, when strict allows it too, which source reports the breakage); the table matches the
    /// profiles; strict covers at least 90 % of the set.
    #[test]
    fn consensus_names_are_blocked_or_explained() {
        let consensus: Vec<&str> =
            CONSENSUS.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_whitespace().next()).collect();
        assert!(consensus.len() > 100, "{}", consensus.len());
        let rows = coverage_rows();
        let balanced = Policy::compile(&Profile::Balanced.sources()).unwrap();
        let strict = Policy::compile(&Profile::Strict.sources()).unwrap();
        let verdict = |d: Decision| if d.is_blocked() { "block" } else { "allow" };
        for name in &consensus {
            let row = rows.iter().find(|r| r.name == *name);
            let (b, s) = (verdict(balanced.check_name(name)), verdict(strict.check_name(name)));
            match row {
                None => assert_eq!(b, "block", "{name}: not blocked in balanced and no README row"),
                Some(row) => {
                    assert_eq!((row.balanced, row.strict), (b, s), "{name}: README row disagrees with the profiles");
                    assert_ne!(b, "block", "{name}: blocked in balanced, README row is stale");
                    assert!(!row.breaks.is_empty(), "{name}: README row names no feature");
                    if s == "allow" {
                        assert!(row.source.contains('S'), "{name}: allowed in strict without a source");
                    }
                }
            }
        }
        for row in &rows {
            assert!(consensus.contains(&row.name), "README row {} is not in the consensus set", row.name);
        }
        let in_strict = consensus.iter().filter(|n| strict.check_name(n).is_blocked()).count();
        assert!(in_strict * 10 >= consensus.len() * 9, "strict blocks {in_strict} of {}", consensus.len());
    }
}
