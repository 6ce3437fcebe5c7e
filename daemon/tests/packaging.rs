//! The systemd units in packaging/systemd: each passes `systemd-analyze verify` with its
//! ExecStart pointed at the binary this build made, and keeps the exposure score that
//! `systemd-analyze security` gives its hardening (a unit that loses options fails here).
//! And what every installed program says of itself: `--version` names the protocol.

mod common;

use std::path::Path;
use std::process::Command;

fn unit(name: &str, from: &str, binary: &Path, dir: &Path) -> std::path::PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(repo.join("packaging/systemd").join(name)).unwrap();
    assert!(text.contains(from), "{name} starts {from}");
    let path = dir.join(name);
    std::fs::write(&path, text.replace(from, &binary.display().to_string())).unwrap();
    path
}

/// `systemd-analyze security --offline=yes`'s overall exposure (0 best, 10 worst).
fn exposure(unit: &Path, user: bool, runtime: &Path) -> f64 {
    let mut cmd = Command::new("systemd-analyze");
    if user {
        cmd.arg("--user").env("XDG_RUNTIME_DIR", runtime);
    }
    let out = cmd
        .args(["security", "--offline=yes"])
        .arg(unit)
        .output()
        .expect("systemd-analyze (Debian's systemd package) is installed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"))
}

fn verify(unit: &Path, user: bool, runtime: &Path) {
    let mut cmd = Command::new("systemd-analyze");
    if user {
        cmd.arg("--user").env("XDG_RUNTIME_DIR", runtime);
    }
    let out = cmd.arg("verify").arg(unit).output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}: {}",
        unit.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_systemd_units_verify_and_keep_their_hardening() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let relay = unit(
        "jasper-relay.service",
        "/usr/local/bin/jasper-relay",
        &jasper_test::binary("jasper-relay"),
        dir.path(),
    );
    verify(&relay, false, &runtime);
    let relay_exposure = exposure(&relay, false, &runtime);
    // The relay runs as a dynamic user with no capabilities, a read-only system and a syscall
    // filter: 1.2 when written.
    assert!(
        relay_exposure <= 2.0,
        "jasper-relay.service exposure {relay_exposure}"
    );

    let daemon = unit(
        "jasperd.service",
        "%h/.local/bin/jasperd",
        &common::jasperd_binary(),
        dir.path(),
    );
    verify(&daemon, true, &runtime);
    // A user service cannot drop capabilities it never had or hide other users' processes:
    // 5.2 when written.
    let daemon_exposure = exposure(&daemon, true, &runtime);
    assert!(
        daemon_exposure <= 6.0,
        "jasperd.service exposure {daemon_exposure}"
    );
}

#[test]
fn every_program_names_its_version_and_the_protocol() {
    for (name, binary) in [
        ("jasperd", common::jasperd_binary()),
        ("jasper", common::jasper_binary()),
        ("jasper-relay", jasper_test::binary("jasper-relay")),
    ] {
        let out = Command::new(&binary).arg("--version").output().unwrap();
        assert!(out.status.success(), "{name} --version: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!(
                "{name} {} (Jasper protocol {})",
                env!("CARGO_PKG_VERSION"),
                jasper_core::protocol::PROTOCOL_VERSION
            )
        );
    }
}
