//! Which lists make up the policy: a built-in profile, the list store's downloaded lists, and the user's block
//! and allow lists.

use clap::{Args, ValueEnum};
use hushwall_core::policy::{ListRole, ListSource, Policy, Profile, ProfileOptions};
use hushwall_driver::lists::Store;
use std::path::PathBuf;

/// Where `hushwall lists` keeps downloaded lists unless `--store` says otherwise.
pub const DEFAULT_STORE: &str = "/var/lib/hushwall/lists";

/// The built-in profile to start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// Telemetry and ads; never breaks updates, Mi Account, push or Find My Device.
    Balanced,
    /// Balanced plus more aggressive lists and Alibaba Cloud Singapore/Russia ranges.
    Strict,
    /// No built-in lists: only the lists given on the command line.
    None,
}

/// Policy options shared by `run` and `check`.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Built-in profile.
    #[arg(long, value_enum, default_value_t = ProfileArg::Balanced)]
    pub profile: ProfileArg,
    /// Extra block list (hosts file, plain domains, AdBlock `||domain^`, `*.domain`, CIDRs). Repeatable.
    #[arg(long = "blocklist", value_name = "PATH")]
    pub blocklists: Vec<PathBuf>,
    /// Extra allow list (same formats); allow rules win over every block rule. Repeatable.
    #[arg(long = "allowlist", value_name = "PATH")]
    pub allowlists: Vec<PathBuf>,
    /// List store whose downloaded lists (`hushwall lists update`) are added; a missing directory adds none.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STORE)]
    pub store: PathBuf,
    /// Do not load the list store.
    #[arg(long, conflicts_with = "store")]
    pub no_store: bool,
    /// Also block known public DNS-over-HTTPS/TLS resolvers (`blocklists/doh-resolvers.txt`; strict always does).
    #[arg(long)]
    pub block_doh: bool,
}

impl PolicyArgs {
    /// Reads and compiles every list; the error names the file and line.
    pub fn compile(&self) -> Result<Policy, String> {
        let options = ProfileOptions { block_doh: self.block_doh };
        let mut sources = match self.profile {
            ProfileArg::Balanced => Profile::Balanced.sources_with(options),
            ProfileArg::Strict => Profile::Strict.sources_with(options),
            ProfileArg::None => Vec::new(),
        };
        if !self.no_store {
            let store = Store::new(&self.store);
            let lists = store.load().map_err(|e| format!("list store {}: {e}", store.dir().display()))?;
            sources.extend(lists);
        }
        for (paths, role) in [(&self.blocklists, ListRole::Block), (&self.allowlists, ListRole::Allow)] {
            for path in paths {
                sources.push(ListSource::from_file(path, role).map_err(|e| e.to_string())?);
            }
        }
        Policy::compile(&sources).map_err(|e| e.to_string())
    }
}
