//! A real terminal for testing a terminal program: a detached tmux session on a private tmux
//! server, driven with `send-keys` and read with `capture-pane`, as a person would use it.
//! (scripts/test.sh installs tmux.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One program running in a tmux pane of its own server (killed with the server on drop).
pub struct Terminal {
    socket: PathBuf,
    name: String,
}

impl Terminal {
    /// Starts `program args` in a `cols`×`rows` pane. The pane stays after the program exits
    /// (`remain-on-exit`), so a crash leaves its last screen to read.
    pub fn start(dir: &Path, name: &str, program: &Path, args: &[&str], size: (u16, u16)) -> Self {
        std::fs::create_dir_all(dir).expect("terminal dir");
        let config = dir.join(format!("{name}.tmux.conf"));
        std::fs::write(
            &config,
            "set -g remain-on-exit on\nset -g history-limit 0\n",
        )
        .expect("tmux config");
        let terminal = Terminal {
            socket: dir.join(format!("{name}.tmux")),
            name: name.to_owned(),
        };
        let (cols, rows) = (size.0.to_string(), size.1.to_string());
        let mut command: Vec<&str> = vec![
            "-f",
            config.to_str().expect("UTF-8 path"),
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            &cols,
            "-y",
            &rows,
            "--",
            program.to_str().expect("UTF-8 path"),
        ];
        command.extend_from_slice(args);
        terminal.tmux(&command);
        terminal
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            // UTF-8 in and out, whatever the test's locale.
            .arg("-u")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("tmux is needed (scripts/test.sh installs it): {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally (no key names).
    pub fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", &self.name, "-l", text]);
    }

    /// Presses keys by tmux name: `Enter`, `Tab`, `Up`, `PageUp`, `C-c`, ...
    pub fn press(&self, key: &str) {
        self.tmux(&["send-keys", "-t", &self.name, key]);
    }

    /// Pastes `text` as a terminal does (bracketed, when the program asked for it).
    pub fn paste(&self, text: &str) {
        let buffer = format!("{}-paste", self.name);
        self.tmux(&["set-buffer", "-b", &buffer, "--", text]);
        self.tmux(&["paste-buffer", "-p", "-d", "-b", &buffer, "-t", &self.name]);
    }

    /// Types `line` and presses Enter.
    pub fn enter(&self, line: &str) {
        self.type_text(line);
        self.press("Enter");
    }

    /// What the pane shows now, one string per row.
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", &self.name])
    }

    /// Whether the program has exited (the pane is dead).
    pub fn exited(&self) -> bool {
        self.tmux(&["display-message", "-p", "-t", &self.name, "#{pane_dead}"])
            .trim()
            == "1"
    }

    /// Waits until the screen satisfies `check`; returns that screen, or panics with the last
    /// one seen and `what` was awaited.
    pub fn wait_for(&self, timeout: Duration, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "{}'s terminal never showed {what} in {timeout:?}; it shows:\n{screen}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Waits until the screen contains `text`.
    pub fn wait_for_text(&self, timeout: Duration, text: &str) -> String {
        self.wait_for(timeout, &format!("{text:?}"), |s| s.contains(text))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The row of `screen` that contains `text`, if any.
pub fn row_with<'a>(screen: &'a str, text: &str) -> Option<&'a str> {
    screen.lines().find(|l| l.contains(text))
}
