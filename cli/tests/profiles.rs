//! `hushwall check` with the built-in profiles: the Alibaba Singapore/Russia ranges only in strict, and the
//! DoH/DoT resolver rule set in strict or with `--block-doh`.

use serde_json::Value;
use std::process::Command;

fn verdict(args: &[&str], input: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hushwall"))
        .args(["check", "--no-store"])
        .args(args)
        .arg(input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (s(&v["verdict"]), s(&v["rule"]["list"]))
}

#[test]
fn strict_blocks_alibaba_singapore_and_russia_only() {
    let alibaba = ("block".to_owned(), "builtin:alibaba-cloud-sg-ru.txt".to_owned());
    let allowed = ("allow".to_owned(), String::new());
    // AS45102 Singapore and Russia, AS134963 Singapore.
    for ip in ["161.117.1.1", "8.209.130.1", "8.212.93.5"] {
        assert_eq!(verdict(&["--profile", "strict"], ip), alibaba, "{ip}");
        assert_eq!(verdict(&["--profile", "balanced"], ip), allowed, "{ip}");
    }
    // AS45102 Japan, US and Germany.
    for ip in ["8.209.200.1", "8.221.1.1", "8.209.65.1"] {
        assert_eq!(verdict(&["--profile", "strict"], ip), allowed, "{ip}");
    }
}

#[test]
fn doh_resolvers_are_blocked_in_strict_or_with_block_doh() {
    let doh = ("block".to_owned(), "builtin:doh-resolvers.txt".to_owned());
    assert_eq!(verdict(&["--profile", "balanced"], "dns.google"), ("allow".to_owned(), String::new()));
    assert_eq!(verdict(&["--profile", "balanced", "--block-doh"], "dns.google"), doh);
    assert_eq!(verdict(&["--profile", "strict"], "dns.google"), doh);
}
