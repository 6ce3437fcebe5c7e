//! The relay's and jasperd's TOML configuration files: whatever is in the file, the program
//! starts with a validated configuration or stops with an error naming the problem; never a
//! panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| tempfile::tempdir().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let path = dir().path().join("config.toml");
    std::fs::write(&path, rest).unwrap();
    if pick % 2 == 0 {
        let r = jasper_relay::RelayConfig::from_args(jasper_relay::config::Args {
            config: Some(path),
            ..Default::default()
        });
        if let Err(e) = r {
            assert!(!e.to_string().is_empty());
        }
    } else {
        let r = jasper_daemon::config::DaemonConfig::from_args(jasper_daemon::config::Args {
            config: Some(path),
            ..Default::default()
        });
        if let Err(e) = r {
            assert!(!e.to_string().is_empty());
        }
    }
});
