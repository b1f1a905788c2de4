//! End-to-end tests of issue 8: QUIC SNI blocking against a real QUIC client and server (aioquic), the payload
//! peek of a blocked Sensors Analytics upload, and the pcapng export read back with tshark.
//!
//! Needs root, the `hushwall` binary (see `e2e.rs`), Python's `aioquic` (QUIC tests) and `tshark` (export test);
//! `tests/install-deps.sh` installs them.

use hushwall_tests::evidence::{finish, server_saw};
use hushwall_tests::proc::{command, run, run_ok, Background};
use hushwall_tests::topology::*;
use hushwall_tests::{Family, Options, Testbed};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const QUIC_PY: &str = include_str!("../scripts/quic.py");

/// Starts the QUIC servers on the normal and telemetry addresses; returns the server process and its log path.
fn start_quic_servers(tb: &Testbed) -> (Background, std::path::PathBuf) {
    let script = tb.dir.join("quic.py");
    std::fs::write(&script, QUIC_PY).expect("write quic.py");
    let log = tb.dir.join("quic.jsonl");
    let mut cmd = tb.internet_command("python3", &["-u"]);
    cmd.arg(&script).arg("server");
    cmd.arg("--cert").arg(&tb.pki.server_cert).arg("--key").arg(&tb.pki.server_key).arg("--log").arg(&log);
    for a in [Family::V4.normal(), Family::V4.telemetry()] {
        cmd.args(["--addr", a]);
    }
    let mut server = Background::spawn("quic", cmd, &tb.dir.join("quic.log"));
    server.wait_for_log("quic: ready", Duration::from_secs(20));
    (server, log)
}

fn quic_client(tb: &Testbed, name: &str, ip: &str) -> Value {
    let script = tb.dir.join("quic.py");
    let mut cmd = tb.phone_command("python3", &[]);
    cmd.arg(&script).args(["client", name, ip, "4"]);
    let r = run(cmd, Duration::from_secs(20));
    serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("quic client output ({e}): {r}"))
}

fn read_json_lines(path: &Path) -> Vec<Value> {
    hushwall_tests::testbed::read_json_lines(path)
}

/// A blocked name over QUIC is refused and the server receives no datagram at all; an allowed name completes a
/// real handshake through the engine, the server seeing the SNI. Both QUIC versions the client speaks by default
/// (v1) are covered here; v2 and split ClientHellos are covered by the engine and vector tests.
#[test]
fn quic_sni_blocks_by_name_and_lets_allowed_handshakes_through() {
    let mut tb = Testbed::start(Options::engine());
    let (_server, quic_log) = start_quic_servers(&tb);
    let (normal, telemetry) = (Family::V4.normal(), Family::V4.telemetry());

    let allowed = quic_client(&tb, NORMAL_NAME, normal);
    assert_eq!(allowed["result"], "connected", "allowed QUIC handshake: {allowed}");
    let blocked = quic_client(&tb, TELEMETRY_NAME, telemetry);
    assert_ne!(blocked["result"], "connected", "blocked QUIC handshake: {blocked}");

    let seen = read_json_lines(&quic_log);
    let handshakes: Vec<&Value> = seen.iter().filter(|e| e["event"] == "quic_handshake").collect();
    assert!(handshakes.iter().any(|e| e["local"] == format!("{normal}:443")), "allowed handshake: {seen:?}");
    let to_telemetry: Vec<&Value> = seen.iter().filter(|e| e["local"] == format!("{telemetry}:443")).collect();
    assert!(to_telemetry.is_empty(), "the blocked server received QUIC datagrams: {to_telemetry:?}");

    let events = finish(&mut tb);
    let quic_blocks: Vec<&Value> = events.iter().filter(|e| e["reason"] == "quic_sni").collect();
    assert_eq!(quic_blocks.len(), 1, "one quic_sni block event for the refused flow; events: {events:?}");
    for e in &quic_blocks {
        assert_eq!((e["protocol"].as_str(), e["host"].as_str()), (Some("udp"), Some(TELEMETRY_NAME)), "{e}");
        assert_eq!(e["dst"], format!("{telemetry}:443"));
        assert_eq!(e["rule"]["rule"], rules::TELEMETRY);
    }
    assert!(events.iter().all(|e| e["action"] != "block" || e["reason"] == "quic_sni"), "{events:?}");
    let udp443 = tb.captured(&format!("udp and host {telemetry} and port 443"));
    assert!(udp443.is_empty(), "server-side capture: {udp443:?}");
}

/// With `--peek`, a Sensors Analytics upload (gzip + base64 `data_list`) to a blocked host gets a 403 at once, the
/// block event carries the decoded (and redacted) events, and the server saw nothing.
#[test]
fn peek_decodes_a_blocked_sensors_upload() {
    let mut tb = Testbed::start(Options::engine().engine_arg("--peek"));
    let telemetry = Family::V4.telemetry();
    let script = r#"
import base64, gzip, http.client, json, sys, urllib.parse
events = [{"event": "$AppStart", "distinct_id": "a1b2c3d4e5f60718", "time": 1700000000123,
           "properties": {"$model": "Redmi Note 8", "$manufacturer": "Xiaomi", "imei": "861234567890123"}},
          {"event": "$AppViewScreen", "distinct_id": "a1b2c3d4e5f60718",
           "properties": {"$screen_name": "com.miui.home.Launcher"}}]
body = urllib.parse.urlencode({"crc": "-1", "gzip": "1",
    "data_list": base64.b64encode(gzip.compress(json.dumps(events).encode())).decode()})
c = http.client.HTTPConnection(sys.argv[1], 80, timeout=5)
c.request("POST", "/sa?project=production", body=body,
          headers={"Host": sys.argv[2], "Content-Type": "application/x-www-form-urlencoded"})
r = c.getresponse()
print(json.dumps({"status": r.status, "body": r.read().decode()}))
"#;
    let mut cmd = tb.phone_command("python3", &["-c", script, telemetry, TELEMETRY_NAME_2]);
    cmd.env("PYTHONUNBUFFERED", "1");
    let r = run_ok(cmd, Duration::from_secs(20));
    assert!(r.elapsed < Duration::from_secs(2), "the refusal should be fast: {r}");
    let answer: Value = serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {r}"));
    assert_eq!(answer["status"], 403, "{answer}");

    assert!(server_saw(&tb, "accept", telemetry).is_empty(), "the blocked server accepted a connection");
    let events = finish(&mut tb);
    let blocks: Vec<&Value> = events.iter().filter(|e| e["action"] == "block").collect();
    assert_eq!(blocks.len(), 1, "{events:?}");
    let ev = blocks[0];
    assert_eq!((ev["reason"].as_str(), ev["host"].as_str()), (Some("http_host"), Some(TELEMETRY_NAME_2)));
    let peek = &ev["peek"];
    assert_eq!((peek["method"].as_str(), peek["path"].as_str()), (Some("POST"), Some("/sa")), "{ev}");
    assert_eq!(peek["kind"], "sensors_analytics");
    let data = peek["form"].as_array().and_then(|f| f.iter().find(|x| x["name"] == "data_list")).expect("data_list");
    let decoded = &data["decoded"]["json"];
    assert_eq!(decoded[0]["event"], "$AppStart", "{data}");
    assert_eq!(decoded[0]["properties"]["$model"], "Redmi Note 8");
    assert_eq!(decoded[1]["properties"]["$screen_name"], "com.miui.home.Launcher");
    assert_eq!(decoded[0]["properties"]["imei"], "86***********23", "identifiers masked");
    assert!(!ev.to_string().contains("861234567890123"));
}

/// `--pcap` writes a capture tshark reads: packets of blocked and allowed flows, comments on the deciding ones.
#[test]
fn pcap_export_reads_back_with_tshark() {
    let pcap_dir = hushwall_tests::testbed::TempDir::create();
    let pcap = pcap_dir.path.join("hushwall.pcapng");
    let mut tb = Testbed::start(Options::engine().engine_arg("--log-allowed").engine_arg("--pcap").engine_arg(&pcap));
    let f = Family::V4;
    let blocked = tb.curl_resolved("https", TELEMETRY_NAME, f.telemetry(), "/", f);
    assert!(!blocked.run.success(), "blocked: {}", blocked.run);
    let allowed = tb.curl_resolved("http", NORMAL_NAME, f.normal(), "/", f);
    assert!(allowed.run.success(), "allowed: {}", allowed.run);
    finish(&mut tb);

    let r = run_ok(
        command("tshark", &["-r", pcap.to_str().expect("utf-8 path"), "-T", "fields", "-e", "ip.dst"]),
        Duration::from_secs(60),
    );
    let packets = r.stdout.lines().count();
    assert!(packets >= 10, "packets in the capture: {packets}\n{r}");
    assert!(r.stdout.lines().any(|l| l == f.telemetry()) && r.stdout.lines().any(|l| l == f.normal()), "{r}");
    let comments = run_ok(
        command(
            "tshark",
            &["-r", pcap.to_str().expect("utf-8 path"), "-Y", "frame.comment", "-T", "fields", "-e", "frame.comment"],
        ),
        Duration::from_secs(60),
    );
    let lines: Vec<&str> = comments.stdout.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("hushwall: block tls_sni host=tracking.intl.miui.com")),
        "block comment: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("hushwall: allow no_match host=www.example.org")),
        "allow comment: {lines:?}"
    );
}
