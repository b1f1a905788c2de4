//! The gateway's configuration file (`/etc/hushwall/hushwall.toml`).
//!
//! Every key is a long option of `hushwall gateway` written without its dashes (`lan = ["eth1"]`,
//! `dns-upstream = "9.9.9.9:53"`, `peek = true`), so the file and the command line cannot drift apart: the file
//! is turned into arguments placed before the command line's, each value checked by the option's own parser, and
//! an option given on the command line replaces the file's value entirely (for repeatable options too). An
//! unknown key, a value of the wrong type or one the option rejects is an error naming the file and line.

use clap::builder::ArgAction;
use clap::{Arg, Command};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use toml::{Spanned, Value};

/// The option naming the configuration file.
pub const CONFIG_FLAG: &str = "config";

/// If `args` (the whole command line, program name first) run `gateway` with `--config PATH`, returns them with
/// the file's settings inserted before the command line's own options; otherwise returns them unchanged.
/// `gateway` is the clap definition of the subcommand (for option names and value parsers).
pub fn expand(args: Vec<OsString>, gateway: &Command) -> Result<Vec<OsString>, String> {
    if args.get(1).and_then(|a| a.to_str()) != Some("gateway") {
        return Ok(args);
    }
    let given = given_options(&args[2..]);
    let Some(path) = config_path(&args[2..]) else { return Ok(args) };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let from_file = file_args(&path, &text, gateway, &given)?;
    let mut out = args[..2].to_vec();
    out.extend(from_file);
    out.extend_from_slice(&args[2..]);
    Ok(out)
}

/// The long options present on the command line (`--name` or `--name=value`), up to a `--`.
fn given_options(args: &[OsString]) -> BTreeSet<String> {
    args.iter()
        .filter_map(|a| a.to_str())
        .take_while(|a| *a != "--")
        .filter_map(|a| a.strip_prefix("--").map(|rest| rest.split('=').next().unwrap_or(rest).to_owned()))
        .collect()
}

/// The value of `--config PATH` or `--config=PATH`, if given.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let flag = format!("--{CONFIG_FLAG}");
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_str()?;
        if text == "--" {
            return None;
        }
        if text == flag {
            return iter.next().map(PathBuf::from);
        }
        if let Some(value) = text.strip_prefix(&format!("{flag}=")) {
            return Some(PathBuf::from(value));
        }
    }
    None
}

/// The arguments the file's settings stand for, skipping options in `given` (the command line overrides them).
fn file_args(path: &Path, text: &str, gateway: &Command, given: &BTreeSet<String>) -> Result<Vec<OsString>, String> {
    let at = |span: Option<std::ops::Range<usize>>| {
        let line = span.map_or(1, |s| text.get(..s.start).map_or(1, |before| before.matches('\n').count() + 1));
        format!("{}:{line}", path.display())
    };
    let table: BTreeMap<Spanned<String>, Spanned<Value>> =
        toml::from_str(text).map_err(|e| format!("{}: {}", at(e.span()), e.message().trim_end()))?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let name = key.get_ref();
        let arg = gateway
            .get_arguments()
            .find(|a| a.get_long() == Some(name.as_str()) && name != CONFIG_FLAG && name != "help")
            .ok_or_else(|| format!("{}: unknown key `{name}`", at(Some(key.span()))))?;
        let here = at(Some(value.span()));
        let values = flag_values(arg, name, value.get_ref()).map_err(|e| format!("{here}: `{name}`: {e}"))?;
        for v in values.iter().flatten() {
            check_value(arg, v).map_err(|e| format!("{here}: `{name}`: {e}"))?;
        }
        if given.contains(name.as_str()) {
            continue;
        }
        for v in values {
            out.push(OsString::from(format!("--{name}")));
            if let Some(v) = v {
                out.push(OsString::from(v));
            }
        }
    }
    Ok(out)
}

/// One entry per occurrence of the option: `None` for a flag without a value, `Some(text)` for a value.
fn flag_values(arg: &Arg, name: &str, value: &Value) -> Result<Vec<Option<String>>, String> {
    match arg.get_action() {
        ArgAction::SetTrue => match value {
            Value::Boolean(true) => Ok(vec![None]),
            Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("expected true or false".into()),
        },
        ArgAction::Count => match value {
            Value::Integer(n) if (0..=3).contains(n) => Ok((0..*n).map(|_| None).collect()),
            _ => Err("expected a number from 0 to 3".into()),
        },
        ArgAction::Append => match value {
            Value::Array(items) => items.iter().map(|v| scalar(v).map(Some)).collect(),
            other => Ok(vec![Some(scalar(other)?)]),
        },
        ArgAction::Set => Ok(vec![Some(scalar(value)?)]),
        _ => Err(format!("`{name}` cannot be set in the file")),
    }
}

/// A string, integer or boolean as the text the command line would carry.
fn scalar(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("expected a string, a number or a list of them".into()),
    }
}

/// Runs the option's own value parser (the same check the command line gets), on a command holding only it.
fn check_value(arg: &Arg, value: &str) -> Result<(), String> {
    let alone = Command::new("hushwall").no_binary_name(true).arg(arg.clone().required(false));
    let long = format!("--{}", arg.get_long().unwrap_or_default());
    alone.try_get_matches_from([long.as_str(), value]).map(|_| ()).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("invalid value");
        first.strip_prefix("error: ").unwrap_or(first).to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn gateway() -> Command {
        crate::Cli::command().find_subcommand("gateway").expect("gateway subcommand").clone()
    }

    fn expand_with(file: &str, cli: &[&str]) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hushwall.toml");
        std::fs::write(&path, file).expect("write");
        let mut args: Vec<OsString> = ["hushwall", "gateway", "--config"].iter().map(OsString::from).collect();
        args.push(path.clone().into());
        args.extend(cli.iter().map(OsString::from));
        let out = expand(args, &gateway()).map_err(|e| e.replace(&path.display().to_string(), "FILE"))?;
        Ok(out.into_iter().map(|a| a.to_string_lossy().into_owned()).collect())
    }

    #[test]
    fn settings_become_arguments_before_the_command_line() {
        let out = expand_with(
            "lan = [\"eth1\", \"wlan0\"]\ndns-upstream = \"9.9.9.9:53\"\npeek = true\nlog-allowed = false\nmtu = 1400\n",
            &["--quiet"],
        )
        .expect("valid");
        let expected = "hushwall gateway --dns-upstream 9.9.9.9:53 --lan eth1 --lan wlan0 --mtu 1400 --peek --config";
        assert!(out.join(" ").starts_with(expected), "{out:?}");
        assert_eq!(out.last().map(String::as_str), Some("--quiet"));
    }

    #[test]
    fn command_line_overrides_the_file_for_single_and_repeatable_options() {
        let out = expand_with("lan = [\"eth1\"]\nmtu = 1400\n", &["--lan", "eth9", "--mtu=1500"]).expect("valid");
        assert!(!out.contains(&"eth1".to_owned()) && !out.contains(&"1400".to_owned()), "{out:?}");
        assert!(out.contains(&"eth9".to_owned()) && out.contains(&"--mtu=1500".to_owned()), "{out:?}");
    }

    #[test]
    fn errors_name_file_and_line() {
        let unknown = expand_with("lan = [\"eth1\"]\n\nlna = [\"eth2\"]\n", &[]).expect_err("unknown key");
        assert_eq!(unknown, "FILE:3: unknown key `lna`");
        let bad = expand_with("lan = [\"eth1\"]\nmtu = 100\n", &[]).expect_err("bad value");
        assert!(bad.starts_with("FILE:2: `mtu`: invalid value '100'"), "{bad}");
        let bad = expand_with("lan = [\"eth1\"]\ndns-upstream = \"nine\"\n", &[]).expect_err("bad address");
        assert!(bad.starts_with("FILE:2: `dns-upstream`: invalid value 'nine'"), "{bad}");
        let wrong_type = expand_with("peek = \"yes\"\n", &[]).expect_err("wrong type");
        assert_eq!(wrong_type, "FILE:1: `peek`: expected true or false");
        let syntax = expand_with("lan = [\"eth1\"\nmtu = 1400\n", &[]).expect_err("syntax");
        assert!(syntax.starts_with("FILE:"), "{syntax}");
        // Even a value the command line overrides must be valid.
        let overridden = expand_with("mtu = 1\n", &["--mtu", "1500"]).expect_err("bad value");
        assert!(overridden.starts_with("FILE:1: `mtu`"), "{overridden}");
    }

    #[test]
    fn the_shipped_default_config_is_valid() {
        let out = expand_with(include_str!("../../packaging/hushwall.toml"), &[]).expect("valid");
        assert!(out.contains(&"--lan".to_owned()), "{out:?}");
    }

    #[test]
    fn without_config_or_for_other_commands_nothing_changes() {
        let args: Vec<OsString> = ["hushwall", "run", "--config", "/nonexistent"].iter().map(OsString::from).collect();
        assert_eq!(expand(args.clone(), &gateway()), Ok(args));
        let args: Vec<OsString> = ["hushwall", "gateway", "--lan", "eth1"].iter().map(OsString::from).collect();
        assert_eq!(expand(args.clone(), &gateway()), Ok(args));
    }
}
