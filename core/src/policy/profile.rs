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

/// Lists of the balanced profile, in order.
const BALANCED: &[(Builtin, ListRole)] = &[
    (XIAOMI_TELEMETRY, ListRole::Block),
    (XIAOMI_ADS, ListRole::Block),
    (SENSORSDATA, ListRole::Block),
    (ESSENTIALS_ALLOW, ListRole::Allow),
];

/// Lists the strict profile adds to the balanced ones.
const STRICT_EXTRAS: &[(Builtin, ListRole)] =
    &[(STRICT_EXTRA, ListRole::Block), (ALIBABA_CLOUD_SG_RU, ListRole::Block)];

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
        let extras = match self {
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
        assert_eq!(names(Profile::Strict), strict);
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
}
