//! The command line and configuration errors, through the real binary: every bad configuration
//! gives one clear line naming the key, and exit status 2. No Asterisk is involved (none of these
//! runs gets far enough to connect).

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_voicebot1"))
}

/// Writes `text` to a fresh config file for test `name` (in the temporary directory, named by
/// process and test so parallel runs do not meet).
fn config(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("vb1-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `voicebot1 CONFIG` (not --check: the service itself must refuse to start) and asserts
/// exit status 2 with one line naming `key` and containing `fragment`.
fn refuses(name: &str, text: &str, key: &str, fragment: &str) {
    let path = config(name, text);
    let out = bin().arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{name}: exit status {:?}, stderr:\n{err}",
        out.status
    );
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{name}: expected one line, got:\n{err}");
    assert!(lines[0].starts_with("config error in "), "{name}: {err}");
    assert!(lines[0].contains(key), "{name}: {err} does not name {key}");
    assert!(
        lines[0].contains(fragment),
        "{name}: {err} does not say {fragment:?}"
    );
}

const PW: &str = "[ari]\npassword = \"x\"\n";

#[test]
fn missing_file_exits_2_naming_the_file() {
    let out = bin().arg("/nonexistent/voicebot1.toml").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/voicebot1.toml") && err.contains("cannot read the file"),
        "{err}"
    );
}

#[test]
fn toml_syntax_error_exits_2_with_the_line() {
    refuses(
        "syntax",
        "[ari\npassword = 1\n",
        "TOML syntax error",
        "line 1",
    );
}

#[test]
fn wrong_type_exits_2_naming_the_key() {
    refuses(
        "type",
        &format!("{PW}[media]\nport_min = \"26500\"\n"),
        "media.port_min",
        "must be an integer",
    );
}

#[test]
fn unknown_key_exits_2_naming_the_key() {
    refuses(
        "unknown",
        &format!("{PW}[media]\nport_minimum = 1\n"),
        "media.port_minimum",
        "unknown key",
    );
}

#[test]
fn empty_or_inverted_port_range_exits_2() {
    refuses(
        "inverted",
        &format!("{PW}[media]\nport_min = 27000\nport_max = 26000\n"),
        "media.port_min",
        "empty or inverted",
    );
}

#[test]
fn port_range_beyond_the_open_file_limit_exits_2() {
    let path = config(
        "nofile",
        &format!("{PW}[media]\nport_min = 20000\nport_max = 29999\n"),
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 1024 && exec {} {}",
            env!("CARGO_BIN_EXE_voicebot1"),
            path.display()
        ))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("media.port_max") && err.contains("limit is 1024"),
        "{err}"
    );
}

#[test]
fn malformed_ari_url_exits_2() {
    refuses(
        "url",
        "[ari]\npassword = \"x\"\nurl = \"localhost:8088\"\n",
        "ari.url",
        "not a URL",
    );
}

#[test]
fn missing_password_env_exits_2() {
    refuses(
        "pwenv",
        "[ari]\npassword_env = \"VB1_TEST_SURELY_UNSET\"\n",
        "ari.password_env",
        "not set",
    );
}

#[test]
fn check_reports_every_error_not_just_the_first() {
    let path = config(
        "many",
        "[ari]\npassword = \"x\"\nurl = \"ftp://x\"\n[media]\nformat = \"gsm\"\nport_min = 9\nport_max = 8\n[service]\nlog_level = \"loud\"\n",
    );
    let out = bin().arg("--check").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for key in [
        "ari.url",
        "media.format",
        "media.port_min",
        "service.log_level",
    ] {
        assert!(
            err.contains(&format!(": {key}: ")),
            "{key} missing in:\n{err}"
        );
    }
    assert_eq!(err.lines().count(), 4, "{err}");
}

#[test]
fn check_accepts_the_shipped_config() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/voicebot1.toml");
    let out = bin().arg("--check").arg(shipped).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"));
}

#[test]
fn version_help_and_bad_usage() {
    let out = bin().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("voicebot1 "));
    let out = bin().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--check"));
    let out = bin().arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown option --frobnicate"));
}

#[test]
fn unwritable_log_file_exits_2_naming_the_key() {
    refuses(
        "logfile",
        &format!("{PW}[service]\nlog_file = \"/nonexistent/dir/vb1.log\"\n"),
        "service.log_file",
        "cannot open",
    );
}

#[test]
fn password_never_appears_in_config_errors() {
    let path = config(
        "secret",
        "[ari]\npassword = \"hunter2-secret\"\nurl = 8088\n",
    );
    let out = bin().arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains("hunter2-secret"), "{}", stderr(&out));
}

#[test]
fn metrics_address_in_use_stops_voicebot1_at_start_up_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    // Nothing else is reached: the endpoint is bound before the port pool and Asterisk.
    let path = config(
        "metrics-in-use",
        &format!("{PW}[metrics]\nlisten = \"{addr}\"\n"),
    );
    let out = bin().arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("[ERROR]"))
        .unwrap_or_else(|| panic!("no error line:\n{err}"));
    assert!(
        line.contains(&format!(
            "metrics.listen: cannot listen on {addr}: Address already in use"
        )),
        "{line}"
    );
    assert!(
        !err.contains("media:"),
        "the port pool was bound before the metrics address:\n{err}"
    );
    drop(taken);
}
