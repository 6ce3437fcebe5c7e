//! `cargo xtask bindings [--check]`: the Kotlin, Swift and Python bindings of jasper-ffi from
//! the built library (uniffi library mode, with the workspace's own uniffi-bindgen: nothing to
//! install). Without `--check` they are written into bindings/ (and the iOS package); with it
//! they are generated into a temporary directory and any committed file that differs fails.
//!
//! A debug build is enough: the bindings depend only on the interface metadata in the library.
//! JASPER_FFI_LIB=path uses a library already built instead of building jasper-ffi (not a
//! stripped one: the metadata is read from the symbol table, which `--profile mobile` strips).
//! The two packages are built one after the other, not together: together, cargo would unify
//! uniffi's `cli` feature into jasper-ffi's dependencies and make a third configuration of it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::{Ctx, step};

/// Generated file -> where it is committed. The Swift source lives once, in the Swift package
/// (SwiftPM takes no sources from outside the package directory); its C header and module map
/// stay in bindings/swift, where ios/build-xcframework.sh packs them into the xcframework.
const FILES: [(&str, &str); 5] = [
    (
        "kotlin/org/jasper/jasper.kt",
        "bindings/kotlin/generated/org/jasper/jasper.kt",
    ),
    ("swift/JasperFFI.h", "bindings/swift/JasperFFI.h"),
    (
        "swift/JasperFFI.modulemap",
        "bindings/swift/JasperFFI.modulemap",
    ),
    ("swift/Jasper.swift", "ios/Sources/Jasper/Jasper.swift"),
    ("python/jasper.py", "bindings/python/src/jasper/jasper.py"),
];

pub fn run(ctx: &Ctx, check: bool) -> Result<(), String> {
    step(
        "cargo build -p uniffi-bindgen",
        &mut ctx.cargo(&["build", "--locked", "--quiet", "-p", "uniffi-bindgen"]),
    )?;
    let bindgen = ctx.debug("uniffi-bindgen");
    let lib = match std::env::var_os("JASPER_FFI_LIB").filter(|l| !l.is_empty()) {
        Some(lib) => PathBuf::from(lib),
        None => {
            step(
                "cargo build -p jasper-ffi",
                &mut ctx.cargo(&["build", "--locked", "--quiet", "-p", "jasper-ffi"]),
            )?;
            ctx.debug(crate::ffi_lib_file())
        }
    };

    let out = TempDir::new()?;
    for lang in ["kotlin", "swift", "python"] {
        // --no-format: the output must not depend on which formatters a machine has.
        let mut generate = ctx.command(&bindgen);
        generate
            .args(["generate", "--no-format", "--language", lang, "--out-dir"])
            .arg(out.0.join(lang))
            .arg(&lib)
            .stdout(Stdio::null());
        step(
            &format!("uniffi-bindgen generate --language {lang}"),
            &mut generate,
        )?;
    }

    // Every file the generator wrote must have a place above (a new one means FILES is stale).
    let expected: BTreeSet<String> = FILES.iter().map(|(src, _)| src.to_string()).collect();
    let mut actual = BTreeSet::new();
    list_files(&out.0, "", &mut actual)?;
    if expected != actual {
        eprintln!("uniffi-bindgen wrote other files than xtask/src/bindings.rs expects:");
        for missing in expected.difference(&actual) {
            eprintln!("  not written: {missing}");
        }
        for extra in actual.difference(&expected) {
            eprintln!("  not expected: {extra}");
        }
        return Err("the list of generated files in xtask/src/bindings.rs is stale".into());
    }

    let mut stale = false;
    for (src, dst) in FILES {
        let src = out.0.join(src);
        let dst_path = ctx.root.join(dst);
        let generated = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        if check {
            if std::fs::read(&dst_path).ok().as_deref() != Some(&generated[..]) {
                eprintln!("stale: {dst}");
                show_diff(ctx, dst, &src);
                stale = true;
            }
        } else {
            if let Some(dir) = dst_path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::write(&dst_path, &generated).map_err(|e| format!("{dst}: {e}"))?;
            println!("wrote {dst}");
        }
    }

    if stale {
        return Err(
            "the committed bindings are stale: run `cargo xtask bindings` and commit".into(),
        );
    }
    if check {
        println!("bindings are up to date");
    }
    Ok(())
}

/// The first lines of `diff -u committed generated`, as a hint; nothing when diff is missing.
fn show_diff(ctx: &Ctx, committed: &str, generated: &Path) {
    let Ok(output) = ctx
        .command("diff")
        .arg("-u")
        .arg(committed)
        .arg(generated)
        .stderr(Stdio::inherit())
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines().take(20) {
        eprintln!("{line}");
    }
}

/// Every file under `dir`, as paths relative to the generator's output directory.
fn list_files(dir: &Path, prefix: &str, files: &mut BTreeSet<String>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let kind = entry
            .file_type()
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        if kind.is_dir() {
            list_files(&entry.path(), &format!("{name}/"), files)?;
        } else {
            files.insert(name);
        }
    }
    Ok(())
}

/// A fresh directory under the system's temporary directory, removed when dropped (also when
/// a step fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("jasper-bindings.{}.{nanos}", std::process::id()));
        // create_dir, not create_dir_all: fails rather than reuse a directory that exists.
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
