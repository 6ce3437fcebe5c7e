//! `cargo xtask`: the repository's chores in Rust, so they run wherever cargo does.
//!
//!   cargo xtask test               every test (what scripts/test.sh runs after its installs)
//!   cargo xtask bindings           regenerate the uniffi bindings into bindings/ and ios/
//!   cargo xtask bindings --check   fail if the committed bindings differ from a fresh generation
//!   cargo xtask mesh               the demo (what scripts/mesh.sh runs)
//!
//! It only runs commands (cargo, the scripts that launch system daemons, pytest, Maven), with
//! std alone: installing packages stays in scripts/test.sh and scripts/with-secret-service.sh,
//! which need apt and root.

mod bindings;
mod mesh;
mod test;

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  test               fmt, clippy, the workspace's tests, the bindings check, pytest and Maven
  bindings           regenerate the Kotlin, Swift and Python bindings of jasper-ffi
  bindings --check   fail if the committed bindings differ from a fresh generation
  mesh               the demo: three relays, two daemons, a message each way, transparent mode";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ctx = Ctx::new();
    let result = match args.as_slice() {
        ["test"] => test::run(ctx),
        ["bindings"] => bindings::run(&ctx, false),
        ["bindings", "--check"] => bindings::run(&ctx, true),
        ["mesh"] => mesh::run(&ctx),
        ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("xtask: unknown command: {}\n\n{USAGE}", args.join(" "));
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// What every command shares: the workspace root (every command runs there, as the scripts
/// `cd` to it), the target directory and the cargo that runs this xtask.
pub struct Ctx {
    pub root: PathBuf,
    pub target: PathBuf,
    pub cargo: OsString,
    /// Set for every later command (the IPFS node's addresses, once it runs).
    env: Vec<(String, String)>,
}

impl Ctx {
    fn new() -> Ctx {
        // xtask/ is a direct member of the workspace, so its parent is the root. `cargo run`
        // sets CARGO_MANIFEST_DIR for the run too: read it then, not baked in at build time,
        // since a target directory shared by checkouts at other paths may run a binary built
        // in one of them.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .expect("xtask/ has a parent")
            .to_owned();
        // One target directory outside the checkout, so fresh clones reuse built dependencies
        // (the scripts' default too).
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            // Relative to where cargo was started, as cargo reads it; absolute from here on,
            // since every command runs in the root.
            Some(dir) if !dir.is_empty() => std::env::current_dir()
                .map(|cwd| cwd.join(&dir))
                .unwrap_or_else(|_| dir.into()),
            _ => home().join(".cache/jasper/target"),
        };
        // The cargo that runs `cargo xtask` (set by `cargo run`), so a rustup override or
        // `cargo +toolchain xtask` applies to every step.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        Ctx {
            root,
            target,
            cargo,
            env: Vec::new(),
        }
    }

    /// `program` in the workspace root with the environment the scripts gave it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(&self.root)
            .env("CARGO_TARGET_DIR", &self.target);
        // `cargo run` describes the xtask package to it in these; a shell running the same
        // commands has none, and the tests and tools below must not see xtask's.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || matches!(
                    &*key,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                )
            {
                command.env_remove(&*key);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn cargo(&self, args: &[&str]) -> Command {
        let mut command = self.command(&self.cargo);
        command.args(args);
        command
    }

    /// A file under the target directory's debug profile.
    pub fn debug(&self, name: &str) -> PathBuf {
        self.target.join("debug").join(name)
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// Runs `command` (one step) to its end; an error names the step and how it ended.
pub fn step(what: &str, command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", command.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// The cdylib uniffi-bindgen reads and the binding tests load, as cargo names it here.
pub fn ffi_lib_file() -> &'static str {
    if cfg!(target_os = "macos") {
        "libjasper_ffi.dylib"
    } else {
        "libjasper_ffi.so"
    }
}

/// Ctrl-C reaches the whole foreground process group: the running step dies of it, and xtask,
/// which only notes it, goes on to its cleanup (stopping the IPFS node) instead of dying with
/// the node left running. A handler, not SIG_IGN: ignored signals stay ignored in the children
/// a step execs, and a handler resets to the default there.
#[cfg(unix)]
pub mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};

    static HAPPENED: AtomicBool = AtomicBool::new(false);

    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;

    unsafe extern "C" {
        // libc's, which std links anyway: the one call that does not need a crate for it.
        fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    }

    extern "C" fn note(_: i32) {
        // Only an atomic store: async-signal-safe.
        HAPPENED.store(true, Ordering::SeqCst);
    }

    pub fn catch() {
        // SAFETY: `note` only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal(SIGINT, note);
            signal(SIGTERM, note);
        }
    }

    pub fn happened() -> bool {
        HAPPENED.load(Ordering::SeqCst)
    }
}

#[cfg(not(unix))]
pub mod interrupt {
    pub fn catch() {}
    pub fn happened() -> bool {
        false
    }
}
