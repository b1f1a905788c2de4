//! The address table: longest-prefix match over IPv4 and IPv6 ranges, one table per role.

use super::Loc;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use std::net::IpAddr;

/// Address ranges of one role, each with the rule it came from.
#[derive(Default)]
pub(super) struct CidrTable {
    v4: PrefixMap<Ipv4Net, Loc>,
    v6: PrefixMap<Ipv6Net, Loc>,
}

impl CidrTable {
    /// Adds `net` (host bits already cleared); a range already present keeps its first rule.
    pub(super) fn insert(&mut self, net: IpNet, loc: Loc) {
        match net {
            IpNet::V4(net) => {
                self.v4.entry(net).or_insert(loc);
            }
            IpNet::V6(net) => {
                self.v6.entry(net).or_insert(loc);
            }
        }
    }

    /// The most specific range containing `ip`, compared as given (the caller maps `::ffff:a.b.c.d`).
    /// Never allocates.
    pub(super) fn lookup(&self, ip: IpAddr) -> Option<(IpNet, Loc)> {
        match ip {
            IpAddr::V4(ip) => self.v4.get_lpm(&Ipv4Net::from(ip)).map(|(net, &loc)| (IpNet::V4(net), loc)),
            IpAddr::V6(ip) => self.v6.get_lpm(&Ipv6Net::from(ip)).map(|(net, &loc)| (IpNet::V6(net), loc)),
        }
    }

    /// Number of ranges.
    pub(super) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(line: u32) -> Loc {
        Loc { list: 0, line }
    }

    #[test]
    fn longest_prefix_wins_and_first_duplicate_kept() {
        let mut t = CidrTable::default();
        t.insert("10.0.0.0/8".parse().unwrap(), loc(1));
        t.insert("10.1.0.0/16".parse().unwrap(), loc(2));
        t.insert("10.1.0.0/16".parse().unwrap(), loc(3));
        t.insert("2001:db8::/32".parse().unwrap(), loc(4));
        assert_eq!(t.len(), 3);
        let hit = |ip: &str| t.lookup(ip.parse().unwrap()).map(|(net, l)| (net.to_string(), l.line));
        assert_eq!(hit("10.1.2.3"), Some(("10.1.0.0/16".into(), 2)));
        assert_eq!(hit("10.2.2.3"), Some(("10.0.0.0/8".into(), 1)));
        assert_eq!(hit("11.0.0.1"), None);
        assert_eq!(hit("2001:db8:ffff::1"), Some(("2001:db8::/32".into(), 4)));
        assert_eq!(hit("2001:db9::1"), None);
        assert_eq!(hit("::ffff:10.1.2.3"), None, "mapping is the caller's job");
    }
}
