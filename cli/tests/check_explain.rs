//! `hushwall check` explanations: which list and line decided, and for allowed inputs the winning allow rule.

use hushwall_driver::lists::{self, ListConfig, Prefetched, Role, Store};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

fn check(args: &[&str], input: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_hushwall")).arg("check").args(args).arg(input).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn rule(v: &Value) -> (String, String, String, u64, String) {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let r = &v["rule"];
    let list = r["list"].as_str().unwrap_or_default().to_owned();
    (s("verdict"), s("reason"), list, r["line"].as_u64().unwrap_or(0), r["rule"].as_str().unwrap_or_default().into())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn allowed_input_names_the_winning_allow_rule() {
    let dir = tempfile::tempdir().unwrap();
    let block = write(dir.path(), "block.txt", "# blocks\n||vendor.example^\n");
    let allow = write(dir.path(), "allow.txt", "# essentials\nother.example\n||update.vendor.example^\n");
    let args = ["--no-store", "--profile", "none", "--blocklist", &block, "--allowlist", &allow];
    let got = rule(&check(&args, "cdn.update.vendor.example"));
    assert_eq!(got, ("allow".into(), "allow_rule".into(), allow.clone(), 3, "||update.vendor.example^".into()));
    let got = rule(&check(&args, "stats.vendor.example"));
    assert_eq!(got, ("block".into(), "dns_query".into(), block, 2, "||vendor.example^".into()));

    // The built-in essentials: balanced blocks miui.com telemetry but lets system updates through.
    let got = rule(&check(&["--no-store"], "update.miui.com"));
    assert_eq!(
        (got.0.as_str(), got.1.as_str(), got.2.as_str()),
        ("allow", "allow_rule", "builtin:essentials-allow.txt")
    );
    assert_eq!(got.4, "update.miui.com");
}

#[test]
fn store_lists_are_named_by_store_name_and_url() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path().join("store"));
    let (block_url, allow_url) = ("https://lists.test/block.txt", "https://lists.test/allow.txt");
    store.add(ListConfig { name: "blk".into(), url: block_url.into(), role: Role::Block }).unwrap();
    store.add(ListConfig { name: "ok".into(), url: allow_url.into(), role: Role::Allow }).unwrap();
    let mut fetched = Prefetched::new();
    fetched.insert(block_url, Ok(b"# remote\n||tracker.test^\n".to_vec()));
    fetched.insert(allow_url, Ok(b"good.tracker.test\n".to_vec()));
    assert!(lists::update(&store, &mut fetched, &[], SystemTime::now()).unwrap().ok);

    let store_arg = store.dir().display().to_string();
    let args = ["--profile", "none", "--store", &store_arg];
    let got = rule(&check(&args, "x.tracker.test"));
    assert_eq!(
        got,
        ("block".into(), "dns_query".into(), format!("store:blk ({block_url})"), 2, "||tracker.test^".into())
    );
    let got = rule(&check(&args, "good.tracker.test"));
    assert_eq!(
        got,
        ("allow".into(), "allow_rule".into(), format!("store:ok ({allow_url})"), 1, "good.tracker.test".into())
    );
    // --no-store leaves the store out.
    let v = check(&["--profile", "none", "--no-store"], "x.tracker.test");
    assert_eq!(v["reason"], "no_match");
}
