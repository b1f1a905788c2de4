//! `hushwall`: the Hushwall firewall engine on a Linux tun device.
//!
//! The same engine the Android app runs, here for testing end to end and for protecting a whole home network
//! from a Linux gateway (Xiaomi TVs, vacuums and other IoT devices that cannot run the app).

mod check;
mod config;
mod gateway;
mod https;
mod lists;
mod lists_cmd;
mod notify;
mod run;
mod status;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Hushwall: stops Xiaomi/MIUI telemetry at the network level.
#[derive(Parser)]
#[command(name = "hushwall", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the firewall on a tun device until SIGINT or SIGTERM.
    Run(run::RunArgs),
    /// Show how the policy judges names or IP addresses (one JSON object per input).
    Check(check::CheckArgs),
    /// Manage downloaded lists: add URLs, update them (atomically, keeping the last good copies), show them.
    Lists(lists_cmd::ListsArgs),
    /// Protect a whole network: create the tun (default hw0), route the LAN interfaces' IPv4 and IPv6 through the
    /// engine, run it, and remove exactly that routing on SIGINT/SIGTERM. Takes every option of `run`.
    Gateway(gateway::GatewayArgs),
    /// Show a running engine's counters (over its control socket; root only).
    Status(status::StatusCmdArgs),
}

fn main() -> ExitCode {
    let cli = match gateway_args(std::env::args_os().collect()) {
        Ok(args) => Cli::parse_from(args),
        Err(message) => {
            eprintln!("hushwall: error: {message}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::check(args),
        Command::Lists(args) => lists_cmd::lists(args),
        Command::Gateway(args) => gateway::gateway(args),
        Command::Status(args) => status::status(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hushwall: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// For `gateway`: the configuration file's settings and the gateway's defaults merged into the command line.
fn gateway_args(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, String> {
    let command = Cli::command();
    let Some(gateway) = command.find_subcommand("gateway") else { return Ok(args) };
    let mut args = config::expand(args, gateway)?;
    if args.get(1).and_then(|a| a.to_str()) == Some("gateway") {
        let defaults = gateway::default_args(args.get(2..).unwrap_or_default());
        args.splice(2..2, defaults);
    }
    Ok(args)
}
