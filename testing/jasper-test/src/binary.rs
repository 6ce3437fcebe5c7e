//! Where a workspace binary is: the one lookup every test, bench and tool uses, so that a
//! binary moved to another package, or built into another profile, is found (or reported) the
//! same way everywhere.

use std::path::{Path, PathBuf};

/// The workspace binary `name` (`jasper-relay`, `jasperd`, `jasper`, `jasper-mesh`).
///
/// `<NAME>_BIN` (upper case, `-` as `_`: `JASPER_RELAY_BIN`, `JASPERD_BIN`, `JASPER_BIN`,
/// `JASPER_MESH_BIN`) names it explicitly; else it is `target/<profile>/<name>` beside the
/// running executable (a test or bench in `target/<profile>/deps/`, a tool such as
/// `jasper-mesh` in `target/<profile>/`). Cargo builds a package's binaries only for that
/// package's own tests, so another package's binary may be missing: then this panics naming
/// the `cargo build` command that makes it. It never builds anything itself: a build started
/// from inside a test resolves features differently from the build around it and fights it
/// for the target directory.
pub fn binary(name: &str) -> PathBuf {
    let var = env_var(name);
    if let Some(path) = std::env::var_os(&var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{var}={} is not a file: build {name} or unset {var}",
            path.display()
        );
        return path;
    }
    let dir = profile_dir();
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build it with `{}` (or name it in {var})",
        path.display(),
        build_command(name, &dir)
    );
    path
}

/// `jasper-relay` → `JASPER_RELAY_BIN`.
fn env_var(name: &str) -> String {
    format!("{}_BIN", name.to_uppercase().replace('-', "_"))
}

/// `target/<profile>/` of the running executable.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let dir = exe.parent().expect("the executable is in a directory");
    // Tests and benches are in target/<profile>/deps, examples in target/<profile>/examples.
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("deps" | "examples") => dir.parent().unwrap_or(dir).to_owned(),
        _ => dir.to_owned(),
    }
}

/// `cargo build -p <package> --bin <name>` with the flag of the profile `dir` belongs to.
fn build_command(name: &str, dir: &Path) -> String {
    let package = package_of(name)
        .map(|p| format!(" -p {p}"))
        .unwrap_or_default();
    // Cargo marks a target directory with CACHEDIR.TAG; a binary elsewhere (copied to a
    // directory of its own) says nothing about the profile.
    let in_target = dir
        .parent()
        .is_some_and(|t| t.join("CACHEDIR.TAG").is_file());
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("release") if in_target => " --release".to_owned(),
        Some(other) if in_target && other != "debug" => format!(" --profile {other}"),
        _ => String::new(),
    };
    format!("cargo build{package} --bin {name}{profile}")
}

/// The workspace package whose binary `name` is, read from the manifests (only when a binary
/// is missing), so the message stays right when a binary moves to another package.
fn package_of(name: &str) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = read_toml(&root.join("Cargo.toml"))?;
    let members = workspace.get("workspace")?.get("members")?.as_array()?;
    members
        .iter()
        .filter_map(toml::Value::as_str)
        .find_map(|member| {
            let dir = root.join(member);
            let manifest = read_toml(&dir.join("Cargo.toml"))?;
            let package = manifest.get("package")?.get("name")?.as_str()?.to_owned();
            let declared = manifest
                .get("bin")
                .and_then(toml::Value::as_array)
                .is_some_and(|bins| {
                    bins.iter()
                        .any(|b| b.get("name").and_then(toml::Value::as_str) == Some(name))
                });
            // Cargo's automatic targets: src/main.rs is the package's name, src/bin/X.rs is X.
            let implicit = (package == name && dir.join("src/main.rs").is_file())
                || dir.join("src/bin").join(format!("{name}.rs")).is_file()
                || dir.join("src/bin").join(name).join("main.rs").is_file();
            (declared || implicit).then_some(package)
        })
}

fn read_toml(path: &Path) -> Option<toml::Table> {
    std::fs::read_to_string(path).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_binary_has_its_own_variable() {
        assert_eq!(env_var("jasper-relay"), "JASPER_RELAY_BIN");
        assert_eq!(env_var("jasperd"), "JASPERD_BIN");
        assert_eq!(env_var("jasper-mesh"), "JASPER_MESH_BIN");
    }

    #[test]
    fn the_package_of_a_binary_is_read_from_the_manifests() {
        assert_eq!(package_of("jasper-relay").as_deref(), Some("jasper-relay"));
        assert_eq!(package_of("jasperd").as_deref(), Some("jasper-daemon"));
        assert_eq!(package_of("jasper-mesh").as_deref(), Some("jasper-test"));
        assert_eq!(package_of("no-such-binary"), None);
    }

    #[test]
    fn the_build_command_names_package_binary_and_profile() {
        let target = tempfile::tempdir().unwrap();
        std::fs::write(target.path().join("CACHEDIR.TAG"), "").unwrap();
        assert_eq!(
            build_command("jasper-relay", &target.path().join("debug")),
            "cargo build -p jasper-relay --bin jasper-relay"
        );
        assert_eq!(
            build_command("jasperd", &target.path().join("release")),
            "cargo build -p jasper-daemon --bin jasperd --release"
        );
        assert_eq!(
            build_command("jasper-mesh", &target.path().join("mobile")),
            "cargo build -p jasper-test --bin jasper-mesh --profile mobile"
        );
        // Outside a target directory the directory's name is no profile.
        assert_eq!(
            build_command("jasper-relay", Path::new("/opt/release")),
            "cargo build -p jasper-relay --bin jasper-relay"
        );
    }
}
