//! Starting and stopping the processes tests drive. `jasper-relay` and `jasperd` print one
//! `... listening on ADDRESS` line on stdout once they serve (their logs go to stderr), so that
//! line is the readiness signal; SIGTERM is their graceful stop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Spawns `cmd` with stdout piped and waits up to `timeout` for a stdout line containing
/// `listening on`; returns the child and that line. The rest of stdout is drained in the
/// background, so the child never blocks on a full pipe. `Err` says why it did not get there:
/// it could not run, it exited first (with its status and what it printed), or the time ran
/// out (then it is killed).
pub fn spawn_until_listening(
    mut cmd: Command,
    timeout: Duration,
) -> Result<(Child, String), String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout).lines();
        for line in reader.by_ref().map_while(Result::ok) {
            let listening = line.contains("listening on");
            if tx.send(line).is_err() || listening {
                break;
            }
        }
        for _ in reader {}
    });
    let deadline = Instant::now() + timeout;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("listening on") => return Ok((child, line)),
            Ok(line) => before.push(line),
            Err(RecvTimeoutError::Disconnected) => {
                let status = child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
                return Err(format!(
                    "it exited ({status}) before printing a `listening on` line (stdout: {before:?})"
                ));
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "it printed no `listening on` line within {timeout:?} (stdout: {before:?})"
                ));
            }
        }
    }
}

/// Sends SIGTERM and waits up to `grace` for the exit; `None` (the child still running) when it
/// did not exit in time.
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    signal(child, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, at most `grace` to exit, then SIGKILL; the exit status either way.
pub fn stop(child: &mut Child, grace: Duration) -> ExitStatus {
    terminate(child, grace).unwrap_or_else(|| {
        let _ = child.kill();
        child.wait().expect("wait for a killed child")
    })
}

/// Sends `signal` to `child` unless it has already been reaped (its pid may then be another
/// process's).
fn signal(child: &mut Child, signal: libc::c_int) {
    if matches!(child.try_wait(), Ok(None)) {
        // SAFETY: kill(2) takes no pointers; the pid is our own child's, not yet reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, signal);
        }
    }
}
