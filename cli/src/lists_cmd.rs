//! `hushwall lists`: configure, download and inspect the list store.

use crate::https::HttpsFetcher;
use crate::lists::DEFAULT_STORE;
use crate::run::{parse_mark, Fwmark};
use clap::{Args, Subcommand};
use hushwall_core::policy::Profile;
use hushwall_driver::lists::{self, ListConfig, Role, Store};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Arguments of `hushwall lists`.
#[derive(Debug, Args)]
pub struct ListsArgs {
    #[command(subcommand)]
    command: ListsCommand,
}

#[derive(Debug, Subcommand)]
enum ListsCommand {
    /// Configure a list URL; it is downloaded by the next `update`.
    Add {
        #[command(flatten)]
        store: StoreArg,
        /// Short name (letters, digits, '.', '_', '-'), shown in verdicts as `store:NAME (URL)`.
        name: String,
        /// Where to download it (https:// only).
        url: String,
        /// The list allows instead of blocking (its rules win over every block rule).
        #[arg(long)]
        allow: bool,
    },
    /// Remove a configured list; its copy stays in force until the next `update`.
    Remove {
        #[command(flatten)]
        store: StoreArg,
        /// The list's name.
        name: String,
    },
    /// Print the configured lists, the copies in force and the last update's result as JSON.
    Show {
        #[command(flatten)]
        store: StoreArg,
    },
    /// Download every configured list, validate it, and swap the new set in atomically. A list that fails keeps
    /// its last good copy; the command then exits non-zero.
    Update(UpdateArgs),
}

/// The store directory option.
#[derive(Debug, Args)]
struct StoreArg {
    /// List store directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE)]
    store: PathBuf,
}

/// Arguments of `hushwall lists update`.
#[derive(Debug, Args)]
struct UpdateArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Trust only the CA certificates in this PEM file instead of the bundled Mozilla roots.
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
    /// SO_MARK put on the download sockets, as `hushwall run` does on its own, so policy routing keeps them out
    /// of the tun (0: none).
    #[arg(long, value_name = "MARK", default_value = "0x6877", value_parser = parse_mark)]
    fwmark: u32,
    /// Seconds allowed for connecting and for each read; a whole download gets ten times that.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
}

/// Runs a `lists` subcommand.
pub fn lists(args: ListsArgs) -> Result<(), String> {
    match args.command {
        ListsCommand::Add { store, name, url, allow } => {
            let role = if allow { Role::Allow } else { Role::Block };
            Store::new(store.store).add(ListConfig { name, url, role }).map_err(|e| e.to_string())
        }
        ListsCommand::Remove { store, name } => Store::new(store.store).remove(&name).map_err(|e| e.to_string()),
        ListsCommand::Show { store } => show(&Store::new(store.store)),
        ListsCommand::Update(args) => update(args),
    }
}

fn show(store: &Store) -> Result<(), String> {
    let err = |e: lists::StoreError| e.to_string();
    let report = json!({
        "store": store.dir(),
        "lists": store.config().map_err(err)?,
        "current": store.current().map_err(err)?,
        "last_update": store.status().map_err(err)?,
    });
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

fn update(args: UpdateArgs) -> Result<(), String> {
    let store = Store::new(args.store.store);
    let mut fetcher =
        HttpsFetcher::new(args.ca_file.as_deref(), Box::new(Fwmark(args.fwmark)), Duration::from_secs(args.timeout))?;
    // The new set must compile together with every built-in list (strict holds all of them).
    let base = Profile::Strict.sources();
    let status = lists::update(&store, &mut fetcher, &base, SystemTime::now()).map_err(|e| e.to_string())?;
    let current = store.current().ok().flatten();
    for outcome in &status.lists {
        if outcome.ok {
            let copy = current.as_ref().and_then(|g| g.lists.iter().find(|c| c.name == outcome.name));
            match copy {
                Some(c) => {
                    println!("{}: updated, {} entries, {} bytes, sha256 {}", c.name, c.entries, c.size, c.sha256)
                }
                None => println!("{}: updated", outcome.name),
            }
        } else {
            let kept = if outcome.kept_last_good { "last good copy kept" } else { "no copy yet" };
            println!("{}: FAILED ({kept})", outcome.name);
        }
    }
    if status.ok {
        return Ok(());
    }
    Err(format!("update failed; the last good lists stay in force:\n  {}", status.errors().join("\n  ")))
}
