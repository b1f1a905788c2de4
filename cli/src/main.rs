//! `hushwall`: the Hushwall firewall engine on a Linux tun device.
//!
//! The same engine the Android app runs, here for testing end to end and for protecting a whole home network
//! from a Linux gateway (Xiaomi TVs, vacuums and other IoT devices that cannot run the app).

mod check;
mod https;
mod lists;
mod lists_cmd;
mod run;

use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::check(args),
        Command::Lists(args) => lists_cmd::lists(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("hushwall: error: {message}");
            ExitCode::FAILURE
        }
    }
}
