//! The test bed's addresses and names: one place, so tests, servers and the demo agree.
//!
//! All addresses are in 198.18.0.0/15 (RFC 2544 benchmarking) or fd00:6877::/32 (ULA), except the phone's tun
//! address 10.111.0.1, which never leaves the phone namespace (the engine terminates every flow).

/// The internet side of the veth pair (also the DNS server the engine forwards to).
pub const INTERNET_VETH_V4: &str = "198.18.0.1";
/// The internet side of the veth pair, IPv6.
pub const INTERNET_VETH_V6: &str = "fd00:6877::1";
/// The phone side of the veth pair: the source of the engine's (marked) upstream sockets.
pub const PHONE_VETH_V4: &str = "198.18.0.2";
/// The phone side of the veth pair, IPv6.
pub const PHONE_VETH_V6: &str = "fd00:6877::2";
/// The phone's address on the tun device (what apps' sockets are bound to).
pub const PHONE_TUN_V4: &str = "10.111.0.1";
/// The phone's IPv6 address on the tun device.
pub const PHONE_TUN_V6: &str = "fd00:6877:f::1";
/// The "outside" resolver in the phone's resolv.conf. Only reachable through the engine's interception (in
/// no-engine mode the internet namespace answers on it, so the topology can be checked without the engine).
pub const OUTSIDE_RESOLVER_V4: &str = "198.18.53.53";
/// The "outside" IPv6 resolver.
pub const OUTSIDE_RESOLVER_V6: &str = "fd00:6877:53::53";
/// The DNS upstream given to the engine.
pub const DNS_UPSTREAM: &str = "198.18.0.1:53";
/// The name of the tun device in the phone namespace.
pub const TUN: &str = "hw0";
/// The name of the veth end in each namespace.
pub const VETH: &str = "veth0";
/// The routing table for marked (protected) upstream sockets in the phone namespace.
pub const PROTECT_TABLE: &str = "100";
/// The fwmark the engine puts on upstream sockets (its default).
pub const FWMARK: &str = "0x6877";
/// Port of the server-speaks-first banner service (any TCP service without SNI or Host).
pub const BANNER_PORT: u16 = 7777;
/// Port of the UDP echo service.
pub const ECHO_PORT: u16 = 7;

/// A name that is allowed and served by the "normal" server.
pub const NORMAL_NAME: &str = "www.example.org";
/// A blocked telemetry name (AdBlock-style rule in the test list).
pub const TELEMETRY_NAME: &str = "tracking.intl.miui.com";
/// A second blocked telemetry name (plain-domain rule), same server.
pub const TELEMETRY_NAME_2: &str = "data.mistat.intl.xiaomi.com";
/// An allowed name on the shared server.
pub const SHARED_GOOD_NAME: &str = "shared-good.example.org";
/// A blocked name on the shared server.
pub const SHARED_BAD_NAME: &str = "sa.api.intl.miui.com";
/// An allowed name that is a CNAME for [`TELEMETRY_NAME`] (CNAME cloaking).
pub const CLOAKED_NAME: &str = "collect.example.org";
/// An allowed name that resolves into the blocked ranges.
pub const CIDR_NAME: &str = "cidr.example.org";

/// The test list's entries, as written in `tests/data/test-blocklist.txt`.
pub mod rules {
    /// Blocks [`super::TELEMETRY_NAME`] and its subdomains.
    pub const TELEMETRY: &str = "||tracking.intl.miui.com^";
    /// Blocks [`super::TELEMETRY_NAME_2`].
    pub const TELEMETRY_2: &str = "data.mistat.intl.xiaomi.com";
    /// Blocks [`super::SHARED_BAD_NAME`].
    pub const SHARED_BAD: &str = "sa.api.intl.miui.com";
    /// The blocked IPv4 range.
    pub const CIDR_V4: &str = "198.19.0.0/24";
    /// The blocked IPv6 range.
    pub const CIDR_V6: &str = "fd00:6877:bad::/48";
}

/// The test list's text (written into each test bed's directory).
pub const TEST_BLOCKLIST: &str = include_str!("../data/test-blocklist.txt");

/// IP version of a test case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both families, for loops.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    fn pick(self, v4: &'static str, v6: &'static str) -> &'static str {
        match self {
            Family::V4 => v4,
            Family::V6 => v6,
        }
    }

    /// The "normal" server ([`NORMAL_NAME`]).
    pub fn normal(self) -> &'static str {
        self.pick("198.18.1.1", "fd00:6877:1::1")
    }
    /// The telemetry server ([`TELEMETRY_NAME`], [`TELEMETRY_NAME_2`]).
    pub fn telemetry(self) -> &'static str {
        self.pick("198.18.1.2", "fd00:6877:1::2")
    }
    /// The shared server ([`SHARED_GOOD_NAME`] and [`SHARED_BAD_NAME`]).
    pub fn shared(self) -> &'static str {
        self.pick("198.18.1.3", "fd00:6877:1::3")
    }
    /// The server inside the blocked range ([`CIDR_NAME`]).
    pub fn cidr(self) -> &'static str {
        self.pick("198.19.0.10", "fd00:6877:bad::10")
    }
    /// The blocked range's rule.
    pub fn cidr_rule(self) -> &'static str {
        self.pick(rules::CIDR_V4, rules::CIDR_V6)
    }
    /// The outside resolver of this family.
    pub fn outside_resolver(self) -> &'static str {
        self.pick(OUTSIDE_RESOLVER_V4, OUTSIDE_RESOLVER_V6)
    }
    /// The phone's tun address of this family.
    pub fn phone_tun(self) -> &'static str {
        self.pick(PHONE_TUN_V4, PHONE_TUN_V6)
    }
    /// The DNS record type of this family's addresses.
    pub fn rtype(self) -> &'static str {
        self.pick("A", "AAAA")
    }
    /// curl's / dig's flag for this family.
    pub fn flag(self) -> &'static str {
        self.pick("-4", "-6")
    }
    /// `ip` / `host` in a URL or `ip:port` (brackets for IPv6).
    pub fn bracket(self, ip: &str) -> String {
        match self {
            Family::V4 => ip.to_string(),
            Family::V6 => format!("[{ip}]"),
        }
    }
    /// Short name for messages: "IPv4" / "IPv6".
    pub fn name(self) -> &'static str {
        self.pick("IPv4", "IPv6")
    }
}

/// Every server address in the internet namespace, both families.
pub fn server_addresses() -> Vec<&'static str> {
    let mut v = Vec::new();
    for f in Family::ALL {
        v.extend([f.normal(), f.telemetry(), f.shared(), f.cidr()]);
    }
    v
}

/// Addresses that must never see a packet from the phone: telemetry and the blocked ranges.
pub fn forbidden_addresses() -> Vec<&'static str> {
    let mut v = Vec::new();
    for f in Family::ALL {
        v.extend([f.telemetry(), f.cidr()]);
    }
    v
}

/// A tcpdump filter matching every packet to or from a forbidden address or range.
pub const FORBIDDEN_FILTER: &str =
    "host 198.18.1.2 or host fd00:6877:1::2 or net 198.19.0.0/24 or net fd00:6877:bad::/48";

/// DNS host records (name → addresses) served by the internet namespace's dnsmasq.
pub fn host_records() -> Vec<(&'static str, Vec<&'static str>)> {
    let both = |f: fn(Family) -> &'static str| vec![f(Family::V4), f(Family::V6)];
    vec![
        (NORMAL_NAME, both(Family::normal)),
        (TELEMETRY_NAME, both(Family::telemetry)),
        (TELEMETRY_NAME_2, both(Family::telemetry)),
        (SHARED_GOOD_NAME, both(Family::shared)),
        (SHARED_BAD_NAME, both(Family::shared)),
        (CIDR_NAME, both(Family::cidr)),
    ]
}

/// DNS CNAME records (alias → target).
pub fn cname_records() -> Vec<(&'static str, &'static str)> {
    vec![(CLOAKED_NAME, TELEMETRY_NAME)]
}

/// The 1-based line of `entry` in the test list (the first line whose trimmed text equals it).
///
/// # Panics
/// If the list has no such line.
pub fn test_list_line(entry: &str) -> u32 {
    line_of(TEST_BLOCKLIST, entry).unwrap_or_else(|| panic!("{entry:?} is not a line of tests/data/test-blocklist.txt"))
}

/// The 1-based line of `entry` in `text`, if present.
pub fn line_of(text: &str, entry: &str) -> Option<u32> {
    text.lines().position(|l| l.trim() == entry).map(|i| u32::try_from(i + 1).unwrap_or(u32::MAX))
}
