//! `hushwall check`: explain the policy's verdict for names and addresses.

use crate::lists::PolicyArgs;
use clap::Args;
use hushwall_core::policy::{Decision, Policy};
use hushwall_core::verdict::{Action, AllowReason, BlockReason, Reason, RuleRef};
use serde::Serialize;
use std::io::{self, Write};
use std::net::IpAddr;

/// Arguments of `hushwall check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Host names or IP addresses to judge.
    #[arg(required = true, value_name = "NAME_OR_IP")]
    inputs: Vec<String>,
}

/// One line of output.
#[derive(Serialize)]
struct Explanation<'a> {
    input: &'a str,
    verdict: Action,
    reason: Reason,
    rule: Option<RuleRef>,
}

/// Prints one JSON object per input.
pub fn check(args: CheckArgs) -> Result<(), String> {
    let policy = args.policy.compile()?;
    let mut out = io::stdout().lock();
    for input in &args.inputs {
        let line = serde_json::to_string(&explain(&policy, input)).map_err(|e| e.to_string())?;
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The verdict for one input: an IP address is judged by CIDR rules, anything else as a host name (the reason
/// is then the one a DNS query for it would get).
fn explain<'a>(policy: &Policy, input: &'a str) -> Explanation<'a> {
    let (decision, block_reason) = match input.parse::<IpAddr>() {
        Ok(ip) => (policy.check_ip(ip), BlockReason::IpCidr),
        Err(_) => (policy.check_name(input), BlockReason::DnsQuery),
    };
    let (reason, rule) = match decision {
        Decision::Blocked(rule) => (Reason::Block(block_reason), Some(rule)),
        Decision::Allowed(rule) => (Reason::Allow(AllowReason::AllowRule), Some(rule)),
        Decision::NoMatch => (Reason::Allow(AllowReason::NoMatch), None),
    };
    Explanation { input, verdict: reason.action(), reason, rule }
}
