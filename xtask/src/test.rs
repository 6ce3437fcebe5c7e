//! `cargo xtask test`: every test, in the order scripts/test.sh ran them (which now installs
//! what they need and hands over to this): formatting, clippy with warnings as errors, the
//! whole workspace's tests (unit, real relay processes, real Redis, a real Secret Service and
//! keyutils, real WebRTC peers, a real IPFS node); faults between hosts in network namespaces
//! (one seed); then the uniffi bindings: the committed ones
//! must match a fresh generation, and the Python (pytest) and Kotlin-on-the-JVM (Maven, JUnit)
//! tests run them against real relays. The first step that fails stops the run and is named.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::{Ctx, interrupt, step};

pub fn run(mut ctx: Ctx) -> Result<(), String> {
    interrupt::catch();

    header("cargo fmt --check");
    step(
        "cargo fmt --check",
        &mut ctx.cargo(&["fmt", "--all", "--", "--check"]),
    )?;
    checkpoint()?;

    header("cargo clippy -D warnings");
    step(
        "cargo clippy -D warnings",
        &mut ctx.cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    checkpoint()?;

    header("IPFS node (js-ipfs on loopback, for the attachment tests)");
    // Installed once into ~/.cache/jasper/jsipfs (2-4 minutes the first time), then ~5 s to
    // start. Stopped when `_ipfs` drops: at the end, after a failed step, and after Ctrl-C
    // (caught, see `interrupt`), since the node runs in a session of its own.
    let _ipfs = IpfsNode::start(&mut ctx)?;
    checkpoint()?;

    header("cargo test");
    // Next to a throwaway gnome-keyring on a private session bus. Not under `keyctl session -`:
    // the keyutils tests (and the daemon) join their own session keyring with
    // prepare_process_for_keyutils(), and a wrapper would hide a missing call.
    step(
        "cargo test",
        ctx.command("scripts/with-secret-service.sh")
            .arg(&ctx.cargo)
            .args(["test", "--workspace", "--locked"]),
    )?;
    checkpoint()?;

    header("faults between hosts (network namespaces, one seed)");
    // daemon/tests/faults.rs is ignored by `cargo test` (it needs root and a minute);
    // scripts/faults.sh runs it with three seeds.
    step(
        "faults between hosts",
        ctx.cargo(&[
            "test",
            "--locked",
            "-p",
            "jasper-daemon",
            "--test",
            "faults",
            "--",
            "--ignored",
        ])
        .env("JASPER_FAULT_SEEDS", "1"),
    )?;
    checkpoint()?;

    header("bindings: committed bindings match the library");
    // Builds jasper-ffi and uniffi-bindgen (debug) on their own: the cdylib the binding tests
    // load is that build's target/debug/libjasper_ffi.so (cargo test builds only the crate's
    // test harness).
    crate::bindings::run(&ctx, true).map_err(|e| format!("bindings check: {e}"))?;
    let ffi_lib = ctx.debug(crate::ffi_lib_file());
    // jasper-relay and jasper-mesh: built for the relay's and the kit's integration tests
    // above; here only if those were skipped.
    let relay_bin = built(&ctx, "jasper-relay", "jasper-relay")?;
    let mesh_bin = built(&ctx, "jasper-test", "jasper-mesh")?;
    checkpoint()?;

    header("bindings: Python (pytest)");
    // pytest itself is installed by scripts/test.sh (pip), with the system packages.
    step(
        "bindings: Python (pytest)",
        pytest(&ctx, Path::new("python3"), &["bindings/python"])
            .env("JASPER_FFI_LIB", &ffi_lib)
            .env("JASPER_RELAY_BIN", &relay_bin)
            .env("JASPER_MESH_BIN", &mesh_bin),
    )?;
    checkpoint()?;

    header("bindings: the Python wheel, installed in a fresh virtual environment");
    // What a user does: `pip install ./bindings/python` (setup.py builds jasper-ffi with cargo
    // and packs the library; the dev profile here, so the build above is reused), then the
    // exchange test and the installed-package checks run from that environment, with no
    // JASPER_FFI_LIB.
    let venv = ctx.target.join("python-wheel-venv");
    match std::fs::remove_dir_all(&venv) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("{}: {e}", venv.display()));
        }
        _ => {}
    }
    step(
        "python3 -m venv",
        ctx.command("python3").args(["-m", "venv"]).arg(&venv),
    )?;
    let python = venv.join("bin/python");
    step(
        "pip install ./bindings/python (and pytest, mypy)",
        ctx.command(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "pytest",
                "mypy",
                "./bindings/python",
            ])
            .env("JASPER_CARGO_PROFILE", "dev")
            .env_remove("JASPER_FFI_LIB"),
    )?;
    step(
        "bindings: Python from the installed wheel (pytest)",
        pytest(
            &ctx,
            &python,
            &[
                "bindings/python/tests/test_installed.py",
                "bindings/python/tests/test_exchange.py",
            ],
        )
        .env("JASPER_TEST_INSTALLED", "1")
        .env_remove("JASPER_FFI_LIB")
        .env("JASPER_RELAY_BIN", &relay_bin)
        .env("JASPER_MESH_BIN", &mesh_bin),
    )?;
    checkpoint()?;

    header("bindings: Kotlin on the JVM (Maven, JUnit), the jar installed and used by coordinates");
    // -q hides Surefire's summary, so it is printed from the reports afterwards. The first run
    // downloads Kotlin, JNA, coroutines and JUnit from Maven Central into ~/.m2. `install`
    // runs jasper-jvm's tests and puts the jar (native library inside, as a JNA resource) and
    // its test jar into ~/.m2; the consumer project then depends on them by coordinates only.
    let ffi_dir = ffi_lib.parent().expect("the library is in target/debug");
    let mut projects = Vec::new();
    for (project, goal) in [
        ("bindings/kotlin/jasper-jvm", "install"),
        ("bindings/kotlin/jasper-jvm-consumer", "test"),
    ] {
        let reports = ctx.root.join(project).join("target/surefire-reports");
        match std::fs::remove_dir_all(&reports) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {e}", reports.display()));
            }
            _ => {}
        }
        step(
            &format!("bindings: mvn {goal} ({project})"),
            ctx.command("mvn")
                .args(["-B", "-q", "-f"])
                .arg(Path::new(project).join("pom.xml"))
                .arg(goal)
                .arg(define("jasper.ffi.dir", ffi_dir))
                .arg(define("jasper.relay.bin", &relay_bin))
                .arg(define("jasper.mesh.bin", &mesh_bin))
                // `cargo xtask` runs with cargo's LD_LIBRARY_PATH, target/debug included: JNA
                // would load the build's library from there instead of the jar's.
                .env_remove("LD_LIBRARY_PATH"),
        )?;
        projects.push(reports);
    }
    for reports in &projects {
        surefire_summary(reports)?;
    }
    Ok(())
}

/// `PYTHON -m pytest -q` on `paths`, without pytest's cache directory in the checkout.
fn pytest(ctx: &Ctx, python: &Path, paths: &[&str]) -> std::process::Command {
    let mut command = ctx.command(python);
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(paths);
    command
}

fn header(name: &str) {
    println!("== {name}");
}

/// After Ctrl-C the interrupted step usually fails by itself; this stops the run between steps
/// when it did not (one that ignores SIGINT, or SIGTERM sent to xtask alone).
fn checkpoint() -> Result<(), String> {
    if interrupt::happened() {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

/// The debug binary `bin` of `package`, built first if missing.
fn built(ctx: &Ctx, package: &str, bin: &str) -> Result<PathBuf, String> {
    let path = ctx.debug(bin);
    if !is_executable(&path) {
        step(
            &format!("cargo build -p {package} --bin {bin}"),
            &mut ctx.cargo(&["build", "--locked", "-p", package, "--bin", bin]),
        )?;
    }
    Ok(path)
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

fn define(property: &str, value: &Path) -> String {
    format!("-D{property}={}", value.display())
}

/// Surefire's "Tests run:" lines from every report, in file-name order.
fn surefire_summary(reports: &Path) -> Result<(), String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(reports)
        .map_err(|e| format!("no Surefire reports in {}: {e}", reports.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    files.sort();
    let mut lines = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for line in text.lines().filter(|l| l.starts_with("Tests run:")) {
            println!("{line}");
            lines += 1;
        }
    }
    if lines == 0 {
        return Err(format!("no \"Tests run:\" line in {}", reports.display()));
    }
    Ok(())
}

/// The js-ipfs node of scripts/ipfs-node.sh: started with its addresses exported to every
/// later command, stopped on drop.
struct IpfsNode {
    root: PathBuf,
}

impl IpfsNode {
    fn start(ctx: &mut Ctx) -> Result<IpfsNode, String> {
        let output = ctx
            .command("scripts/ipfs-node.sh")
            .arg("start")
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("IPFS node: cannot run scripts/ipfs-node.sh: {e}"))?;
        // Stopped even when `start` failed half-way: `stop` removes whatever it left.
        let node = IpfsNode {
            root: ctx.root.clone(),
        };
        if !output.status.success() {
            return Err(format!("IPFS node failed ({})", output.status));
        }
        // `start` prints shell: `export JASPER_TEST_IPFS_API=...` and the gateway's line.
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let assignment = line.strip_prefix("export ").unwrap_or(line);
            if let Some((key, value)) = assignment.split_once('=') {
                ctx.env
                    .push((key.trim().to_owned(), value.trim().to_owned()));
            }
        }
        if !ctx.env.iter().any(|(key, _)| key == "JASPER_TEST_IPFS_API") {
            return Err(
                "IPFS node: scripts/ipfs-node.sh start printed no JASPER_TEST_IPFS_API".into(),
            );
        }
        Ok(node)
    }
}

impl Drop for IpfsNode {
    fn drop(&mut self) {
        let stopped = std::process::Command::new("scripts/ipfs-node.sh")
            .arg("stop")
            .current_dir(&self.root)
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!("xtask: scripts/ipfs-node.sh stop failed; the node may still run");
        }
    }
}
