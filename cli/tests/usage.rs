//! What `jasper` answers without a daemon: usage errors, an absent daemon and `chat` without a
//! terminal, each with its exit status and stable code. (Everything that needs a daemon is
//! tested in jasper-daemon's tests, which run this binary against real `jasperd` processes.)

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
    // `chat` without a terminal (output captured here) says so, before any daemon is needed.
    let out = jasper(&["--socket", socket, "--json", "chat"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(error(&out)["code"], "failed_precondition");
    assert!(
        error(&out)["message"]
            .as_str()
            .unwrap()
            .contains("not a terminal"),
        "{out:?}"
    );
}

/// `jasper ARGS` must succeed; its stdout.
fn stdout_of(args: &[&str]) -> String {
    let out = jasper(args);
    assert!(out.status.success(), "jasper {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs `program args`, which must exist (scripts/test.sh installs it) and succeed; stdout.
fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed (scripts/test.sh installs it): {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_names_the_protocol() {
    let version = stdout_of(&["--version"]);
    assert_eq!(
        version.trim(),
        format!(
            "jasper {} (Jasper protocol {})",
            env!("CARGO_PKG_VERSION"),
            jasper_model::PROTOCOL_VERSION
        )
    );
}

#[test]
fn completions_complete_commands_in_bash_and_fish_and_parse_in_zsh() {
    let dir = tempfile::tempdir().unwrap();
    let script = |shell: &str| {
        let path = dir.path().join(shell);
        std::fs::write(&path, stdout_of(&["completions", shell])).unwrap();
        path.to_str().unwrap().to_owned()
    };

    // Bash: what the completion function offers for a partial command line.
    let bash = script("bash");
    let complete_bash = |words: &str| {
        let program = format!(
            "source \"$1\"; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _jasper jasper \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        run_tool("bash", &["-c", &program, "bash", &bash])
    };
    let offered = complete_bash("jasper ide");
    assert_eq!(offered.split_whitespace().collect::<Vec<_>>(), ["identity"]);
    let offered = complete_bash("jasper identity cr");
    assert_eq!(offered.split_whitespace().collect::<Vec<_>>(), ["create"]);
    let offered = complete_bash("jasper send --t");
    assert!(offered.split_whitespace().any(|w| w == "--to"), "{offered}");

    // Fish: `complete -C` asks for what a command line completes to.
    let fish = script("fish");
    let offered = run_tool(
        "fish",
        &[
            "--no-config",
            "-c",
            &format!("source {fish}; complete -C 'jasper ide'"),
        ],
    );
    assert!(offered.starts_with("identity\t"), "{offered}");
    let offered = run_tool(
        "fish",
        &[
            "--no-config",
            "-c",
            &format!("source {fish}; complete -C 'jasper transparent '"),
        ],
    );
    for sub in ["warning", "enable", "disable", "status", "open", "close"] {
        assert!(
            offered.lines().any(|l| l.starts_with(&format!("{sub}\t"))),
            "{sub}: {offered}"
        );
    }

    // Zsh: the function parses and names the commands (driving zsh's completion system needs
    // a terminal).
    let zsh = script("zsh");
    run_tool("zsh", &["-n", &zsh]);
    let text = std::fs::read_to_string(&zsh).unwrap();
    assert!(text.starts_with("#compdef jasper"), "{}", &text[..40]);
    assert!(text.contains("'identity:") && text.contains("'transparent:"));
}

#[test]
fn man_pages_cover_every_command_and_render_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    stdout_of(&["manpages", out.to_str().unwrap()]);
    let mut pages: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "jasper.1",
        "jasper-send.1",
        "jasper-identity-create.1",
        "jasper-manpages.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "{page} in {pages:?}");
    }
    assert!(!pages.iter().any(|p| p.contains("-help")), "{pages:?}");
    for page in &pages {
        let path = out.join(page);
        let path = path.to_str().unwrap();
        // groff's warnings go to stderr; -z formats without printing.
        let check = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z", path])
            .output()
            .expect("groff is needed (scripts/test.sh installs it)");
        assert!(
            check.status.success() && check.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    let man = |page: &str| {
        let out = Command::new("man")
            .args(["-l", "-P", "cat", out.join(page).to_str().unwrap()])
            .env("MANWIDTH", "100")
            .output()
            .expect("man is needed (scripts/test.sh installs it)");
        // groff typesets a hyphen as U+2010 and a minus as U+2212 in UTF-8 locales.
        String::from_utf8_lossy(&out.stdout).replace(['\u{2010}', '\u{2212}'], "-")
    };
    let send = man("jasper-send.1");
    assert!(
        send.contains("jasper send") && send.contains("--to"),
        "{send}"
    );
    let root = man("jasper.1");
    assert!(root.contains("jasper-identity(1)"), "{root}");
    assert!(root.contains("(Jasper protocol 1.0.0)"), "{root}");
}
