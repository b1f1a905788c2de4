//! The device's own addresses, for refusing dials to them (issue 18.6: a connection to one would reach the
//! device's own services as a local client rather than the network).
//!
//! The set is read from the interfaces (`getifaddrs`) and re-read when the network may have changed, instead of
//! asking the kernel's routing with a probe socket on every dial (four system calls per dial: BENCHMARKS.md,
//! "Where the tail comes from"). Where the driver follows rtnetlink address events, each event marks the set
//! stale before the loop reads the tun, so the first dial after an address appears or goes re-reads it. Where it
//! does not (Android, whose apps may not bind netlink route sockets), the app's network callback marks it stale,
//! and a set older than [`UNWATCHED_MAX_AGE`] is re-read as well, since the callback only covers the default
//! network (not, say, a hotspot's address).
//!
//! Loopback and unspecified destinations (`0.0.0.0` and `::` reach this device) are always own. The kernel's
//! routing would also call local an address inside a `local` route that no interface has (Linux "AnyIP",
//! `ip route add local PREFIX dev lo`); interfaces do not list those, so configure such prefixes as addresses
//! if a gateway uses them.

use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How old the set may be where no rtnetlink watch reports changes.
pub(crate) const UNWATCHED_MAX_AGE: Duration = Duration::from_secs(1);

/// Reads the addresses assigned to this device's interfaces.
pub(crate) type AddressReader = fn() -> io::Result<HashSet<IpAddr>>;

/// The device's own addresses, re-read when stale.
pub(crate) struct OwnAddresses {
    addresses: HashSet<IpAddr>,
    /// When the set was read; `None` if it must be read before the next answer.
    read_at: Option<Instant>,
    /// Whether an rtnetlink watch marks the set stale on every address change.
    watched: bool,
    read: AddressReader,
}

impl OwnAddresses {
    /// An empty set, read from the interfaces on first use.
    pub(crate) fn new() -> Self {
        Self::with_reader(interface_addresses)
    }

    /// An empty set read by `read` (tests stand in for the interfaces).
    pub(crate) fn with_reader(read: AddressReader) -> Self {
        OwnAddresses { addresses: HashSet::new(), read_at: None, watched: false, read }
    }

    /// Says whether an rtnetlink watch reports every address change (then the set is only re-read after one).
    pub(crate) fn set_watched(&mut self, watched: bool) {
        self.watched = watched;
    }

    /// The network may have changed: the next answer re-reads the set.
    pub(crate) fn network_changed(&mut self) {
        self.read_at = None;
    }

    /// Whether `ip` is this device's own address at `now`.
    pub(crate) fn contains(&mut self, ip: IpAddr, now: Instant) -> bool {
        if ip.is_loopback() || ip.is_unspecified() {
            return true;
        }
        let fresh =
            self.read_at.is_some_and(|at| self.watched || now.saturating_duration_since(at) < UNWATCHED_MAX_AGE);
        if !fresh {
            match (self.read)() {
                Ok(addresses) => {
                    self.addresses = addresses;
                    self.read_at = Some(now);
                }
                // Out of descriptors, say: keep the last set and try again at the next dial.
                Err(e) => log::debug!("reading this device's addresses: {e}"),
            }
        }
        self.addresses.contains(&ip)
    }
}

/// The addresses of every interface (both families; a link-local IPv6 address without its scope).
fn interface_addresses() -> io::Result<HashSet<IpAddr>> {
    let interfaces = nix::ifaddrs::getifaddrs()?;
    Ok(interfaces
        .filter_map(|i| {
            let a = i.address?;
            match (a.as_sockaddr_in(), a.as_sockaddr_in6()) {
                (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
                (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
                _ => None,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Socket, Type};
    use std::net::SocketAddr;
    use std::sync::Mutex;

    /// What the fake reader returns, and how often it was asked.
    static FAKE: Mutex<(Vec<&str>, usize)> = Mutex::new((Vec::new(), 0));

    fn fake_reader() -> io::Result<HashSet<IpAddr>> {
        let mut fake = FAKE.lock().expect("fake");
        fake.1 += 1;
        Ok(fake.0.iter().map(|a| a.parse().expect("ip")).collect())
    }

    fn set_fake(addresses: &[&'static str]) {
        FAKE.lock().expect("fake").0 = addresses.to_vec();
    }

    fn reads() -> usize {
        FAKE.lock().expect("fake").1
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// One test drives the shared fake, so nothing runs beside it.
    #[test]
    fn the_set_follows_network_changes_and_ages_when_unwatched() {
        let t0 = Instant::now();
        set_fake(&["192.0.2.10", "2001:db8::10"]);
        let mut own = OwnAddresses::with_reader(fake_reader);
        own.set_watched(true);
        assert!(own.contains(ip("192.0.2.10"), t0));
        assert!(own.contains(ip("2001:db8::10"), t0));
        assert!(!own.contains(ip("192.0.2.11"), t0));
        assert_eq!(reads(), 1, "read once, then answered from the set");

        // An address appears and one goes (on a watched network the watch reports it).
        set_fake(&["192.0.2.11", "2001:db8::11"]);
        own.network_changed();
        let later = t0 + Duration::from_secs(60);
        assert!(own.contains(ip("192.0.2.11"), later), "a new IPv4 address is own after the change");
        assert!(own.contains(ip("2001:db8::11"), later), "a new IPv6 address is own after the change");
        assert!(!own.contains(ip("192.0.2.10"), later), "a removed address is no longer own");
        assert!(!own.contains(ip("2001:db8::10"), later));
        assert_eq!(reads(), 2);

        // Unwatched (Android): a change the app's callback did not report is seen once the set is too old.
        own.set_watched(false);
        set_fake(&["192.0.2.12"]);
        assert!(!own.contains(ip("192.0.2.12"), later + UNWATCHED_MAX_AGE / 2));
        assert!(own.contains(ip("192.0.2.12"), later + UNWATCHED_MAX_AGE));
        assert_eq!(reads(), 3);

        // Loopback and unspecified destinations reach this device whatever the interfaces say.
        set_fake(&[]);
        own.network_changed();
        for always in ["127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "::"] {
            assert!(own.contains(ip(always), later), "{always}");
        }
    }

    #[test]
    fn this_machines_addresses_are_own() {
        let mut own = OwnAddresses::new();
        let now = Instant::now();
        assert!(own.contains(ip("127.0.0.1"), now));
        assert!(!own.contains(ip("192.0.2.1"), now), "TEST-NET-1 is nobody's address");
        // The address this machine would use towards TEST-NET-1, if it has a route there, is its own.
        let probe = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("socket");
        if probe.connect(&SocketAddr::from(([192, 0, 2, 1], 9)).into()).is_ok() {
            let local = probe.local_addr().expect("local").as_socket().expect("inet");
            assert!(own.contains(local.ip(), now), "{local}");
        }
    }
}
