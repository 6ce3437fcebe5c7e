//! What `jasper` answers without a daemon: usage errors and an absent daemon, each with its
//! exit status and stable code. (Everything that needs a daemon is tested in jasper-daemon's
//! tests, which run this binary against real `jasperd` processes.)

use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn jasper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jasper"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("jasper runs")
}

/// The `error` object of a `--json` failure (on stderr).
fn error(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stderr);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("stderr is not a JSON error ({e}): {out:?}"));
    v["error"].clone()
}

#[test]
fn usage_errors_and_an_absent_daemon_are_reported_with_codes() {
    let root = tempfile::tempdir().unwrap();
    let socket = root.path().join("nobody-home.sock");
    let socket = socket.to_str().unwrap();
    // Usage errors: exit 2, a JSON error with --json.
    let out = jasper(&["--socket", socket, "--json", "send", "text"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(error(&out)["code"], "invalid_argument");
    // No daemon on the socket: unavailable, exit 1, naming the socket.
    let out = jasper(&["--socket", socket, "identity", "show", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(error(&out)["code"], "unavailable");
    assert!(
        error(&out)["message"]
            .as_str()
            .unwrap()
            .contains("nobody-home.sock"),
        "{out:?}"
    );
}
