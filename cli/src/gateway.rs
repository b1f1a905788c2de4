//! `hushwall gateway`: the engine as a whole-network gateway. It creates the tun, routes the given LAN
//! interfaces' traffic (IPv4 and IPv6) into it, keeps the engine's own marked sockets out of it, runs the engine,
//! and removes exactly what it added when it stops (SIGTERM/SIGINT) or fails to start.
//!
//! Routing is changed with the `ip` command (iproute2) rather than a netlink crate: the commands are the ones the
//! README's manual recipe shows and an administrator reads in `ip rule`, every step's error is iproute2's own
//! message, and it adds no dependency (the Rust rtnetlink crates are async, on tokio, for four rules and two
//! routes). What was added is written to a state file before the next step, so an instance that was killed
//! outright (SIGKILL, power loss of a persistent /run) has its leftovers removed by the next start; a lock on
//! `RUN_DIR/gateway.lock` keeps a second instance from starting.

use crate::run::RunArgs;
use crate::status::DEFAULT_SOCKET;
use clap::Args;
use hushwall_driver::lists::{create_private, Existing};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Arguments of `hushwall gateway`.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// A LAN interface whose traffic (IPv4 and IPv6) goes through the engine. Repeatable; at least one.
    #[arg(long = "lan", value_name = "IFACE", required = true)]
    lans: Vec<String>,
    /// Routing table that sends LAN traffic into the tun.
    #[arg(long, value_name = "N", default_value_t = 6877, value_parser = clap::value_parser!(u32).range(1..=0xFFFF_FFFE))]
    route_table: u32,
    /// Priority of the rule that keeps the engine's marked sockets on the normal routes; the LAN rules take the
    /// next one.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..32000))]
    rule_priority: u32,
    /// Directory for the lock, the state file and (unless --control-socket) the control socket; created 0700.
    #[arg(long, value_name = "DIR", default_value = "/run/hushwall")]
    run_dir: PathBuf,
    /// Read settings from this TOML file (keys are this command's long options); the command line overrides it.
    #[arg(long = crate::config::CONFIG_FLAG, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

/// The tun device a gateway uses unless `--tun` says otherwise.
pub const DEFAULT_TUN: &str = "hw0";

/// Arguments a gateway gets unless given: its tun device, and no `/proc/net` lookups (clients are other
/// machines). Inserted after the subcommand name, before the user's arguments.
pub fn default_args(args: &[std::ffi::OsString]) -> Vec<std::ffi::OsString> {
    let given =
        |flag: &str| args.iter().any(|a| a.to_str().is_some_and(|a| a == flag || a.starts_with(&format!("{flag}="))));
    let mut out = Vec::new();
    if !given("--tun") && !given("--tun-fd") {
        out.extend(["--tun".into(), DEFAULT_TUN.into()]);
    }
    if !given("--uid-lookup") {
        out.extend(["--uid-lookup".into(), "none".into()]);
    }
    out
}

/// Each LAN host's guaranteed share of the flow caps, in percent, unless `--client-share` says otherwise.
const GATEWAY_CLIENT_SHARE: u8 = 25;
/// Each LAN host's full-size TCP buffers, in MiB, unless `--client-buffer-mb` says otherwise.
const GATEWAY_CLIENT_BUFFER_MB: u32 = 64;

/// Runs the gateway until SIGINT/SIGTERM.
pub fn gateway(mut args: GatewayArgs) -> Result<(), String> {
    let _ = &args.config; // Already merged into the arguments by `config::expand`.
    if args.run.tun_fd.is_some() {
        return Err("a gateway creates its own tun device: give --tun NAME, not --tun-fd".into());
    }
    if args.run.fwmark == 0 {
        return Err("a gateway needs a non-zero --fwmark to keep the engine's own sockets out of the tun".into());
    }
    for lan in &args.lans {
        if !Path::new("/sys/class/net").join(lan).exists() {
            return Err(format!("--lan {lan}: no such network interface"));
        }
    }
    check_forwarding()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.run_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.run_dir.display()))?;
    let _lock = lock(&args.run_dir)?;
    let state = args.run_dir.join("gateway.state");
    remove_leftovers(&state)?;
    if args.run.status.control_socket.is_none() {
        let default = Path::new(DEFAULT_SOCKET);
        let name = default.file_name().unwrap_or(default.as_os_str());
        args.run.status.control_socket = Some(args.run_dir.join(name));
    }
    // Many LAN hosts share one engine: none may take every flow or buffer (see `--client-share`).
    args.run.client_share.get_or_insert(GATEWAY_CLIENT_SHARE);
    args.run.client_buffer_mb.get_or_insert(GATEWAY_CLIENT_BUFFER_MB);
    let plan = plan(&args, args.run.tun.as_deref().unwrap_or(DEFAULT_TUN));
    let mut routing: Option<Routing> = None;
    let result = crate::run::run_with(args.run, |_tun| {
        let mut added = Routing { state: state.clone(), undo: Vec::new() };
        let outcome = added.apply(&plan);
        routing = Some(added);
        outcome
    });
    // Whether the engine stopped cleanly, failed or never started: remove what was added.
    drop(routing);
    result
}

/// One `ip` command and the one that undoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    add: Vec<String>,
    undo: Vec<String>,
}

/// The rules and routes a gateway adds, both families: marked sockets use the main table; LAN traffic uses a
/// table whose default route is the tun.
fn plan(args: &GatewayArgs, tun: &str) -> Vec<Step> {
    let mark = format!("{:#x}", args.run.fwmark);
    let table = args.route_table.to_string();
    let mut steps = Vec::new();
    for family in ["-4", "-6"] {
        let ip = |verb: &str, rest: &[&str]| -> Vec<String> {
            let (object, tail) = rest.split_first().expect("object");
            [family, object, verb].iter().chain(tail).map(|s| (*s).to_owned()).collect()
        };
        let prio = args.rule_priority.to_string();
        let rule = ["rule", "fwmark", &mark, "lookup", "main", "priority", &prio];
        steps.push(Step { add: ip("add", &rule), undo: ip("del", &rule) });
        let route = ["route", "default", "dev", tun, "table", &table];
        steps.push(Step { add: ip("add", &route), undo: ip("del", &route) });
        let lan_prio = (args.rule_priority + 1).to_string();
        for lan in &args.lans {
            let rule = ["rule", "iif", lan, "lookup", &table, "priority", &lan_prio];
            steps.push(Step { add: ip("add", &rule), undo: ip("del", &rule) });
        }
    }
    steps
}

/// What this instance added, undone in reverse order on drop.
struct Routing {
    state: PathBuf,
    undo: Vec<Vec<String>>,
}

impl Routing {
    /// Adds every step, recording each undo in the state file first; stops at the first failure.
    fn apply(&mut self, plan: &[Step]) -> Result<(), String> {
        for step in plan {
            self.undo.push(step.undo.clone());
            self.save()?;
            if let Err(e) = ip(&step.add) {
                self.undo.pop();
                self.save()?;
                return Err(e);
            }
        }
        log::info!("gateway routing in place ({} rules and routes)", plan.len());
        Ok(())
    }

    fn save(&self) -> Result<(), String> {
        let text: String = self.undo.iter().map(|argv| argv.join(" ") + "\n").collect();
        let mut file = create_private(&self.state, Existing::Truncate)
            .map_err(|e| format!("cannot write {}: {e}", self.state.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", self.state.display()))
    }
}

impl Drop for Routing {
    fn drop(&mut self) {
        undo_all(self.undo.drain(..).rev());
        let _ = std::fs::remove_file(&self.state);
    }
}

/// Runs each undo command; one that finds nothing to remove (a route that left with the tun) is fine.
fn undo_all(commands: impl Iterator<Item = Vec<String>>) {
    for argv in commands {
        if let Err(e) = ip(&argv) {
            let gone = ["No such file", "No such process", "Cannot find device", "does not exist"];
            if !gone.iter().any(|g| e.contains(g)) {
                eprintln!("hushwall: while removing the gateway routing: {e}");
            }
        }
    }
}

/// Removes what an instance that did not stop cleanly left behind, as recorded in its state file.
fn remove_leftovers(state: &Path) -> Result<(), String> {
    let text = match std::fs::read_to_string(state) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", state.display())),
    };
    let commands: Vec<Vec<String>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    if !commands.iter().all(|argv| is_undo(argv)) {
        return Err(format!("{}: not a state file written by hushwall; remove it by hand", state.display()));
    }
    eprintln!("hushwall: removing the routing a previous gateway left ({} steps)", commands.len());
    undo_all(commands.into_iter().rev());
    std::fs::remove_file(state).map_err(|e| format!("cannot remove {}: {e}", state.display()))
}

/// True for the only commands a state file may hold: `ip -4|-6 rule|route del …`.
fn is_undo(argv: &[String]) -> bool {
    matches!(argv, [family, object, verb, ..]
        if (family == "-4" || family == "-6") && (object == "rule" || object == "route") && verb == "del")
}

/// Runs `ip ARGS`; the error carries the command and iproute2's message.
fn ip(args: &[String]) -> Result<(), String> {
    let output = Command::new("ip").args(args).output().map_err(|e| format!("cannot run ip (iproute2): {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

/// A gateway forwards: both families' forwarding must be on (it is not switched on behind the user's back, as
/// IPv6 forwarding also stops the box from accepting router advertisements).
fn check_forwarding() -> Result<(), String> {
    for (path, sysctl) in [
        ("/proc/sys/net/ipv4/ip_forward", "net.ipv4.ip_forward"),
        ("/proc/sys/net/ipv6/conf/all/forwarding", "net.ipv6.conf.all.forwarding"),
    ] {
        let value = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        if value.trim() != "1" {
            return Err(format!("{sysctl} is off; a gateway forwards: `sysctl -w {sysctl}=1` (and in /etc/sysctl.d)"));
        }
    }
    Ok(())
}

/// Takes `RUN_DIR/gateway.lock` (held until exit) and writes this process's id into it.
fn lock(run_dir: &Path) -> Result<Flock<File>, String> {
    let path = run_dir.join("gateway.lock");
    let shown = path.display();
    let file = create_private(&path, Existing::Append).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.seek(std::io::SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut pid));
            return Err(format!("another hushwall gateway is running (pid {}, lock {shown})", pid.trim()));
        }
    };
    file.set_len(0)
        .and_then(|()| writeln!(*file, "{}", std::process::id()))
        .map_err(|e| format!("cannot write {shown}: {e}"))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn plan_routes_both_families_and_undoes_exactly_what_it_adds() {
        let cli =
            crate::Cli::try_parse_from(["hushwall", "gateway", "--lan", "eth1", "--lan", "wlan0", "--tun", "hw0"])
                .expect("parse");
        let crate::Command::Gateway(args) = cli.command else { panic!("not gateway") };
        let steps = plan(&args, "hw0");
        let adds: Vec<String> = steps.iter().map(|s| s.add.join(" ")).collect();
        assert_eq!(
            adds,
            [
                "-4 rule add fwmark 0x6877 lookup main priority 100",
                "-4 route add default dev hw0 table 6877",
                "-4 rule add iif eth1 lookup 6877 priority 101",
                "-4 rule add iif wlan0 lookup 6877 priority 101",
                "-6 rule add fwmark 0x6877 lookup main priority 100",
                "-6 route add default dev hw0 table 6877",
                "-6 rule add iif eth1 lookup 6877 priority 101",
                "-6 rule add iif wlan0 lookup 6877 priority 101",
            ]
        );
        for step in &steps {
            assert_eq!(step.add.join(" ").replace(" add ", " del "), step.undo.join(" "));
            assert!(is_undo(&step.undo));
        }
        assert!(!is_undo(&["-4".into(), "link".into(), "del".into(), "eth0".into()]));
    }

    #[test]
    fn defaults_fill_in_only_what_is_missing() {
        let none: Vec<std::ffi::OsString> = vec!["--lan".into(), "eth1".into()];
        assert_eq!(default_args(&none), ["--tun", "hw0", "--uid-lookup", "none"].map(std::ffi::OsString::from));
        let given: Vec<std::ffi::OsString> = vec!["--tun=hw1".into(), "--uid-lookup".into(), "proc-net".into()];
        assert!(default_args(&given).is_empty());
    }
}
