//! The JSON configuration Kotlin hands to `start` and `replacePolicy`, and its translation into engine types.
//!
//! Kotlin's `EngineConfig.toJson()` writes exactly this shape (unknown fields are refused, so a typo in either
//! language fails loudly instead of silently falling back to a default):
//!
//! ```json
//! {"policy": {"profile": "balanced", "blockDoh": false,
//!             "lists": [{"name": "user-block.txt", "role": "block", "text": "||ads.example^\n"},
//!                       {"path": "/data/user/0/app.hushwall/files/extra.txt", "role": "allow"}]},
//!  "dnsUpstreams": ["192.168.1.1:53"], "dnsFallbacks": ["1.1.1.1:53"], "logAllowed": false, "blockAnswer": "nxdomain", "mtu": 1500,
//!  "uids": "callback", "randomSeed": 0}
//! ```
//!
//! Every field but `policy` may be left out (defaults as in [`EngineConfig::default`], `uids` = `callback`);
//! in `policy`, `lists` may be left out (none) and `blockDoh` too (off: configs written before it keep their
//! meaning).
//! `dnsUpstreams` are the network's own resolvers (the app reads them from the default network's
//! `LinkProperties`; `networkChanged` replaces them), `dnsFallbacks` are tried after them (absent: the engine's
//! default, Cloudflare's unfiltered resolver). A capture file stops growing at [`CAPTURE_MAX_BYTES`].
//!
//! Not configurable from Kotlin: budgets count by app wherever a UID source is configured (all apps share the
//! tun address, so by address there would be no budgets at all), each app guaranteed [`APP_SHARE_PERCENT`] of
//! the flow caps and pending DNS queries, with [`APP_TCP_BUFFER_BUDGET`] of full-size TCP buffers (see the
//! engine's `budget` module).
//!
//! `networkChanged` takes Kotlin's `NetworkInfo.toJson()` ([`parse_network`]):
//!
//! ```json
//! {"ipv4": true, "ipv6": false, "dnsServers": ["192.168.1.1", "fe80::1%wlan0"], "privateDns": null, "mtu": 1500}
//! ```

use hushwall_core::engine::{EngineConfig, NetworkInfo};
use hushwall_core::inspect::dns::BlockAnswer;
use hushwall_core::policy::{ListRole, ListSource, Policy, Profile, ProfileOptions};
use hushwall_driver::capture::CaptureFile;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Where flow → app (UID) attribution comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UidSource {
    /// Kotlin's `Callbacks.uidOf` (Android 10+: `ConnectivityManager.getConnectionOwnerUid`).
    #[default]
    Callback,
    /// `/proc/net/{tcp,tcp6,udp,udp6}` read in Rust (Android 9, where `getConnectionOwnerUid` does not exist).
    ProcNet,
    /// No attribution: every event has uid -1.
    None,
}

/// The built-in profile a policy starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ProfileName {
    Balanced,
    Strict,
    None,
}

/// A list's role as written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Role {
    Block,
    Allow,
}

/// One extra list: inline text (with a display name) or a file path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListJson {
    name: Option<String>,
    text: Option<String>,
    path: Option<String>,
    role: Role,
}

/// The policy part: a profile plus extra lists. This alone is what `replacePolicy` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyJson {
    profile: ProfileName,
    /// Add the known public DoH/DoT resolvers (`doh-resolvers.txt`) to `balanced`; `strict` always has them,
    /// `none` has no built-in list at all. Absent: off.
    #[serde(default, rename = "blockDoh")]
    block_doh: bool,
    #[serde(default)]
    lists: Vec<ListJson>,
}

/// How blocked names are answered, as written in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BlockAnswerJson {
    Nxdomain,
    Unspecified,
}

/// The whole `start` configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigJson {
    policy: PolicyJson,
    #[serde(default)]
    dns_upstreams: Vec<String>,
    dns_fallbacks: Option<Vec<String>>,
    #[serde(default)]
    log_allowed: bool,
    /// Payload peek (issue 8): read refused plain-HTTP requests and attach a redacted summary to the event.
    #[serde(default)]
    payload_peek: bool,
    /// Record every tun packet as pcapng (verdicts as packet comments) to this file, truncated at start.
    capture_path: Option<String>,
    block_answer: Option<BlockAnswerJson>,
    mtu: Option<u32>,
    #[serde(default)]
    uids: UidSource,
    /// 0 or absent: a seed from the OS.
    #[serde(default)]
    random_seed: u64,
}

/// The app's capture file stops growing here (later packets are counted, not written): phones have little room.
pub const CAPTURE_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Each app's guaranteed share of the flow caps and pending DNS queries, in percent: four apps flooding at once
/// still leave room (as `hushwall gateway` gives each LAN host).
pub const APP_SHARE_PERCENT: u8 = 25;

/// Bytes of full-size TCP buffers one app's flows may hold; its further flows get small ones. 64 MiB is 128 busy
/// flows at the app's 9000-byte MTU (2 × 256 KiB each), far more than an app keeps busy at once.
pub const APP_TCP_BUFFER_BUDGET: usize = 64 * 1024 * 1024;

/// Resolver addresses as `IP:PORT` (`[v6]:port`); the error names the field.
fn parse_resolvers(field: &str, list: &[String]) -> Result<Vec<SocketAddr>, String> {
    list.iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .map_err(|_| format!("{field}: \"{s}\" is not an IP:PORT address (IPv6 as [addr]:port)"))
        })
        .collect()
}

/// A parsed and validated `start` configuration.
pub struct StartConfig {
    /// The engine's settings.
    pub engine: EngineConfig,
    /// The compiled policy.
    pub policy: Policy,
    /// Where UIDs come from.
    pub uids: UidSource,
    /// The packet capture file, if one was asked for (written by the driver's capture thread).
    pub capture: Option<CaptureFile>,
}

/// Parses and validates a `start` configuration; the error is a message for an `IllegalArgumentException`.
pub fn parse_start(json: &str) -> Result<StartConfig, String> {
    let config: ConfigJson = serde_json::from_str(json).map_err(|e| format!("bad engine config JSON: {e}"))?;
    let mut engine =
        EngineConfig { dns_upstreams: parse_resolvers("dnsUpstreams", &config.dns_upstreams)?, ..Default::default() };
    if let Some(fallbacks) = &config.dns_fallbacks {
        engine.dns_fallbacks = parse_resolvers("dnsFallbacks", fallbacks)?;
    }
    engine.log_allowed = config.log_allowed;
    engine.peek = config.payload_peek;
    let mut capture = None;
    if let Some(path) = &config.capture_path {
        let file = std::fs::File::create(path).map_err(|e| format!("capturePath {path}: {e}"))?;
        let (file, _) = CaptureFile::new(std::io::BufWriter::new(file), CAPTURE_MAX_BYTES)
            .map_err(|e| format!("capturePath {path}: {e}"))?;
        capture = Some(file);
    }
    engine.block_answer = match config.block_answer {
        None | Some(BlockAnswerJson::Nxdomain) => BlockAnswer::NxDomain,
        Some(BlockAnswerJson::Unspecified) => BlockAnswer::Unspecified,
    };
    if let Some(mtu) = config.mtu {
        if !(1280..=65535).contains(&mtu) {
            return Err(format!("mtu {mtu} is outside 1280..=65535"));
        }
        engine.mtu = mtu as usize;
    }
    engine.random_seed = if config.random_seed == 0 { random_seed() } else { config.random_seed };
    if config.uids != UidSource::None {
        engine.budget_by_app = true;
        engine.client_share_percent = APP_SHARE_PERCENT;
        engine.client_tcp_buffer_budget = APP_TCP_BUFFER_BUDGET;
    }
    let policy = compile_policy(&config.policy)?;
    Ok(StartConfig { engine, policy, uids: config.uids, capture })
}

/// The network the app reports from its default-network callback, as written in JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NetworkJson {
    ipv4: bool,
    ipv6: bool,
    #[serde(default)]
    dns_servers: Vec<String>,
    private_dns: Option<String>,
    /// 0 or absent: not known.
    #[serde(default)]
    mtu: u32,
}

/// Parses a `networkChanged` argument. A DNS server with a zone (`fe80::1%wlan0`, as `InetAddress` prints a
/// link-local resolver) is left out: the engine's addresses carry no zone, and the network's other resolvers
/// (or the fallback) serve instead.
pub fn parse_network(json: &str) -> Result<NetworkInfo, String> {
    let network: NetworkJson = serde_json::from_str(json).map_err(|e| format!("bad network JSON: {e}"))?;
    let mut dns_servers = Vec::new();
    for server in &network.dns_servers {
        if server.contains('%') {
            log::info!("network DNS server {server} has a zone; left out");
            continue;
        }
        let ip = server.parse::<IpAddr>().map_err(|_| format!("dnsServers: \"{server}\" is not an IP address"))?;
        dns_servers.push(ip);
    }
    let mtu = match network.mtu {
        0 => None,
        mtu => Some(u16::try_from(mtu).map_err(|_| format!("mtu {mtu} is outside 0..=65535"))?),
    };
    let private_dns = network.private_dns.filter(|name| !name.is_empty());
    Ok(NetworkInfo { ipv4: network.ipv4, ipv6: network.ipv6, dns_servers, private_dns, mtu })
}

/// Parses and compiles a `replacePolicy` argument.
pub fn parse_policy(json: &str) -> Result<Policy, String> {
    let policy: PolicyJson = serde_json::from_str(json).map_err(|e| format!("bad policy JSON: {e}"))?;
    compile_policy(&policy)
}

/// Reads the listed files and compiles everything; errors name the list and line.
fn compile_policy(policy: &PolicyJson) -> Result<Policy, String> {
    let options = ProfileOptions { block_doh: policy.block_doh };
    let mut sources = match policy.profile {
        ProfileName::Balanced => Profile::Balanced.sources_with(options),
        ProfileName::Strict => Profile::Strict.sources_with(options),
        ProfileName::None => Vec::new(),
    };
    for (index, list) in policy.lists.iter().enumerate() {
        let role = match list.role {
            Role::Block => ListRole::Block,
            Role::Allow => ListRole::Allow,
        };
        let source = match (&list.text, &list.path) {
            (Some(text), None) => {
                let name = list.name.clone().unwrap_or_else(|| format!("list{index}"));
                ListSource { name, role, text: text.clone() }
            }
            (None, Some(path)) => {
                let mut source = ListSource::from_file(Path::new(path), role).map_err(|e| e.to_string())?;
                if let Some(name) = &list.name {
                    source.name.clone_from(name);
                }
                source
            }
            _ => return Err(format!("list {index}: give exactly one of \"text\" and \"path\"")),
        };
        sources.push(source);
    }
    Policy::compile(&sources).map_err(|e| format!("cannot load lists: {e}"))
}

/// A seed that differs between runs (initial sequence numbers, DNS ids).
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)) {
        Ok(()) => u64::from_ne_bytes(bytes),
        Err(_) => u64::from(std::process::id()) ^ 0x6877_6877_6877_6877,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_json_reaches_network_info() {
        let json = r#"{"ipv4":true,"ipv6":false,"dnsServers":["192.168.1.1","fe80::1%wlan0","2001:db8::53"],
                       "privateDns":"dns.example","mtu":1500}"#;
        let info = parse_network(json).expect("parses");
        assert!(info.ipv4 && !info.ipv6);
        let want: Vec<IpAddr> = vec!["192.168.1.1".parse().unwrap(), "2001:db8::53".parse().unwrap()];
        assert_eq!(info.dns_servers, want, "the zoned link-local resolver is left out");
        assert_eq!((info.private_dns.as_deref(), info.mtu), (Some("dns.example"), Some(1500)));
        let minimal = parse_network(r#"{"ipv4":false,"ipv6":true}"#).expect("parses");
        assert_eq!((minimal.dns_servers.len(), minimal.private_dns, minimal.mtu), (0, None, None));
        assert!(parse_network(r#"{"ipv4":true,"ipv6":true,"dnsServers":["nope"]}"#).is_err());
        assert!(parse_network(r#"{"ipv4":true}"#).is_err(), "both families are required");
        assert!(parse_network(r#"{"ipv4":true,"ipv6":true,"typo":1}"#).is_err());
    }

    #[test]
    fn peek_and_capture_reach_the_engine_config() {
        let dir = std::env::temp_dir().join(format!("hushwall-capture-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("capture.pcapng");
        let json = format!(
            r#"{{"policy":{{"profile":"none"}},"payloadPeek":true,"capturePath":{}}}"#,
            serde_json::to_string(&path.to_string_lossy()).unwrap()
        );
        let config = parse_start(&json).unwrap();
        assert!(config.engine.peek);
        assert!(config.capture.is_some(), "capture configured");
        let header = std::fs::read(&path).unwrap();
        assert_eq!(header.get(..4), Some(&[0x0a, 0x0d, 0x0d, 0x0a][..]), "pcapng section header block");
        let bad = r#"{"policy":{"profile":"none"},"capturePath":"/nonexistent-dir/x.pcapng"}"#;
        assert!(parse_start(bad).err().unwrap().contains("capturePath"));
        let off = parse_start(r#"{"policy":{"profile":"none"}}"#).unwrap();
        assert!(!off.engine.peek && off.capture.is_none(), "both off by default");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn full_config_parses() {
        let json = r#"{"policy":{"profile":"none","lists":[{"name":"mine","role":"block","text":"||ads.example^\n"}]},
            "dnsUpstreams":["[fd00:6877::53]:53","192.168.1.1:53"],"dnsFallbacks":["9.9.9.10:53"],"logAllowed":true,"blockAnswer":"unspecified","mtu":1400,
            "uids":"proc_net","randomSeed":7}"#;
        let config = parse_start(json).unwrap();
        let upstreams: Vec<SocketAddr> = vec!["[fd00:6877::53]:53".parse().unwrap(), "192.168.1.1:53".parse().unwrap()];
        assert_eq!(config.engine.dns_upstreams, upstreams);
        assert_eq!(config.engine.dns_fallbacks, vec!["9.9.9.10:53".parse::<SocketAddr>().unwrap()]);
        assert!(config.engine.log_allowed);
        assert_eq!(config.engine.block_answer, BlockAnswer::Unspecified);
        assert_eq!(config.engine.mtu, 1400);
        assert_eq!(config.engine.random_seed, 7);
        assert_eq!(config.uids, UidSource::ProcNet);
        let decision = config.policy.check_name("x.ads.example");
        assert!(decision.is_blocked());
        assert_eq!(&*decision.rule().unwrap().list, "mine");
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let config = parse_start(r#"{"policy":{"profile":"balanced"}}"#).unwrap();
        assert_eq!(config.engine.dns_upstreams, EngineConfig::default().dns_upstreams);
        assert_eq!(config.engine.dns_fallbacks, EngineConfig::default().dns_fallbacks);
        assert_eq!(config.uids, UidSource::Callback);
        assert_ne!(config.engine.random_seed, 0);
        assert!(config.engine.budget_by_app, "budgets by app");
        assert_eq!(config.engine.client_share_percent, APP_SHARE_PERCENT);
        assert_eq!(config.engine.client_tcp_buffer_budget, APP_TCP_BUFFER_BUDGET);
        let unattributed = parse_start(r#"{"policy":{"profile":"none"},"uids":"none"}"#).unwrap();
        assert!(!unattributed.engine.budget_by_app, "no UIDs: nothing to count by");
        assert_eq!(unattributed.engine.client_share_percent, 100);
        assert!(config.policy.check_name("tracking.intl.miui.com").is_blocked());
    }

    #[test]
    fn bad_configs_are_refused_with_a_message() {
        for (json, needle) in [
            ("", "bad engine config JSON"),
            ("{", "bad engine config JSON"),
            ("[]", "bad engine config JSON"),
            (r#"{"policy":{"profile":"paranoid"}}"#, "unknown variant"),
            (
                r#"{"policy":{"profile":"none"},"dnsUpstreams":["1.1.1.1"]}"#,
                "dnsUpstreams: \"1.1.1.1\" is not an IP:PORT",
            ),
            (r#"{"policy":{"profile":"none"},"dnsFallbacks":["x:53"]}"#, "dnsFallbacks"),
            (r#"{"policy":{"profile":"none"},"dnsUpstream":"1.1.1.1:53"}"#, "unknown field"),
            (r#"{"policy":{"profile":"none"},"mtu":20}"#, "outside"),
            (r#"{"policy":{"profile":"none"},"typo":1}"#, "unknown field"),
            (r#"{"policy":{"profile":"none","lists":[{"role":"block"}]}}"#, "exactly one"),
            (r#"{"policy":{"profile":"none","lists":[{"role":"block","text":"a","path":"/b"}]}}"#, "exactly one"),
            (r#"{"policy":{"profile":"none","lists":[{"role":"block","path":"/nonexistent/x"}]}}"#, "cannot read"),
            (
                r#"{"policy":{"profile":"none","lists":[{"name":"u","role":"block","text":"ok.example\n|||bad"}]}}"#,
                "u:2",
            ),
        ] {
            let error = parse_start(json).err().unwrap_or_else(|| panic!("accepted {json}"));
            assert!(error.contains(needle), "{json}: {error}");
        }
    }

    #[test]
    fn policy_alone_parses() {
        let policy = parse_policy(r#"{"profile":"none","lists":[{"role":"allow","text":"good.example"}]}"#).unwrap();
        assert!(!policy.check_name("good.example").is_blocked());
        assert!(parse_policy(r#"{"profile":"none","dnsUpstreams":["1.1.1.1:53"]}"#).is_err());
    }

    #[test]
    fn block_doh_adds_the_resolver_list_to_balanced() {
        let doh = "dns.google";
        let list = |policy: &Policy| policy.check_name(doh).rule().map(|r| r.list.to_string());
        let on = parse_start(r#"{"policy":{"profile":"balanced","blockDoh":true}}"#).unwrap().policy;
        assert!(on.check_name(doh).is_blocked());
        assert_eq!(list(&on).as_deref(), Some("builtin:doh-resolvers.txt"));
        for off in [r#"{"profile":"balanced","blockDoh":false}"#, r#"{"profile":"balanced"}"#] {
            assert!(!parse_policy(off).unwrap().check_name(doh).is_blocked(), "{off}");
        }
        assert!(parse_policy(r#"{"profile":"balanced","blockDoh":true}"#).unwrap().check_name(doh).is_blocked());
        assert!(parse_policy(r#"{"profile":"strict","blockDoh":false}"#).unwrap().check_name(doh).is_blocked());
        assert!(parse_policy(r#"{"profile":"balanced","blockDoh":"yes"}"#).is_err());
    }
}
