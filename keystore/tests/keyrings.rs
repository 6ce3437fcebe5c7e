//! The key store against real keyrings: a gnome-keyring Secret Service on a private session bus
//! (started by scripts/with-secret-service.sh, which scripts/test.sh uses) and the kernel's
//! keyutils. Every stored value is checked with an independent client (`secret-tool`, `keyctl`).

use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use jasper_core::PrivateKey;
use jasper_keystore::{KeyStore, KeyStoreError, KeyStoreKind, prepare_process_for_keyutils};

/// A real RSA-4096 key in PKCS#8 PEM (about 3.3 KB), generated once per test run.
fn pem() -> &'static str {
    static PEM: OnceLock<String> = OnceLock::new();
    PEM.get_or_init(|| {
        let pem = PrivateKey::generate()
            .expect("RSA-4096 key generation")
            .to_pkcs8_pem();
        assert!(
            (3000..3500).contains(&pem.len()),
            "PEM is {} bytes",
            pem.len()
        );
        pem
    })
}

/// An account name no other test, run or daemon uses.
fn account(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("test-{test}-{}-{nanos}", std::process::id())
}

/// Deletes the test's entries even when an assertion fails, so no key outlives a test run.
struct Cleanup<'a> {
    store: &'a KeyStore,
    accounts: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        for account in &self.accounts {
            let _ = self.store.delete(account);
        }
    }
}

fn secret_service() -> KeyStore {
    if std::env::var_os("JASPER_TEST_SECRET_SERVICE").is_none() {
        panic!(
            "this test needs a real Secret Service and JASPER_TEST_SECRET_SERVICE is not set: run \
             scripts/test.sh, or `scripts/with-secret-service.sh cargo test -p jasper-keystore`, \
             which start gnome-keyring on a private session bus"
        );
    }
    KeyStore::open(Some(KeyStoreKind::SecretService))
        .expect("opening the Secret Service started by scripts/with-secret-service.sh")
}

fn keyutils() -> KeyStore {
    // Each test runs on its own thread and the session keyring is per thread: prepare this one.
    prepare_process_for_keyutils().expect("joining a session keyring");
    KeyStore::open(Some(KeyStoreKind::Keyutils)).expect("opening keyutils")
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}); scripts/with-secret-service.sh installs it \
             (Debian packages libsecret-tools, keyutils)"
            )
        })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// What `secret-tool` (libsecret, not our code) finds for the account, if anything.
fn secret_tool_lookup(account: &str) -> Option<String> {
    let out = run(
        "secret-tool",
        &["lookup", "service", "jasper", "username", account],
    );
    out.status.success().then(|| text(&out.stdout))
}

/// What `keyctl` finds for the account, from a brand-new session keyring that only reaches the
/// key through the per-user persistent keyring: what a restarted daemon would see.
fn keyctl_lookup_from_new_session(account: &str) -> Option<String> {
    let description = format!("keyring:{account}@jasper");
    let script = "keyctl get_persistent @s >/dev/null && id=$(keyctl search @s user \"$1\") \
                  && keyctl pipe \"$id\"";
    let out = run(
        "keyctl",
        &["session", "-", "sh", "-c", script, "sh", &description],
    );
    out.status.success().then(|| text(&out.stdout))
}

fn assert_round_trip(
    store: &KeyStore,
    account: &str,
    independent: impl Fn(&str) -> Option<String>,
) {
    let pem = pem();
    assert_eq!(
        store.load(account).unwrap(),
        None,
        "fresh account not empty"
    );
    store.save(account, pem).unwrap();

    let loaded = store.load(account).unwrap().expect("saved key is there");
    assert_eq!(loaded, pem);
    let original = PrivateKey::from_pkcs8_pem(pem).unwrap().public_key();
    let reparsed = PrivateKey::from_pkcs8_pem(&loaded).unwrap().public_key();
    assert_eq!(
        reparsed, original,
        "the stored key is not the same identity"
    );
    assert_eq!(
        independent(account).as_deref(),
        Some(pem),
        "independent lookup"
    );

    // Saving again replaces the entry instead of adding a second one.
    let replacement = format!("{pem}replaced\n");
    store.save(account, &replacement).unwrap();
    assert_eq!(
        store.load(account).unwrap().as_deref(),
        Some(replacement.as_str())
    );
    assert_eq!(independent(account).as_deref(), Some(replacement.as_str()));

    store.delete(account).unwrap();
    assert_eq!(store.load(account).unwrap(), None);
    assert_eq!(independent(account), None, "still visible after delete");
    store
        .delete(account)
        .expect("deleting an absent entry is not an error");
}

fn assert_accounts_are_separate(store: &KeyStore, test: &str) {
    let (a, b) = (account(&format!("{test}-a")), account(&format!("{test}-b")));
    let _cleanup = Cleanup {
        store,
        accounts: vec![a.clone(), b.clone()],
    };
    store.save(&a, pem()).unwrap();
    assert_eq!(store.load(&b).unwrap(), None, "b sees a's key");
    store.save(&b, "the other daemon's key").unwrap();
    assert_eq!(store.load(&a).unwrap().as_deref(), Some(pem()));
    assert_eq!(
        store.load(&b).unwrap().as_deref(),
        Some("the other daemon's key")
    );
    store.delete(&a).unwrap();
    assert_eq!(store.load(&a).unwrap(), None);
    assert_eq!(
        store.load(&b).unwrap().as_deref(),
        Some("the other daemon's key"),
        "deleting a removed b"
    );
}

#[test]
fn secret_service_round_trips_an_rsa_4096_pem() {
    let store = secret_service();
    assert_eq!(store.kind(), KeyStoreKind::SecretService);
    let account = account("ss-round-trip");
    let _cleanup = Cleanup {
        store: &store,
        accounts: vec![account.clone()],
    };
    assert_round_trip(&store, &account, secret_tool_lookup);
}

#[test]
fn secret_service_reads_an_item_written_by_secret_tool() {
    let store = secret_service();
    let account = account("ss-written-by-secret-tool");
    let _cleanup = Cleanup {
        store: &store,
        accounts: vec![account.clone()],
    };
    let mut child = Command::new("secret-tool")
        .args(["store", "--label=jasper test", "service", "jasper"])
        .args(["username", &account])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("secret-tool");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pem().as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "secret-tool store failed");
    assert_eq!(store.load(&account).unwrap().as_deref(), Some(pem()));
}

#[test]
fn secret_service_keeps_accounts_apart() {
    assert_accounts_are_separate(&secret_service(), "ss");
}

#[test]
fn default_is_the_secret_service_when_one_is_running() {
    secret_service();
    assert_eq!(
        KeyStore::open(None).unwrap().kind(),
        KeyStoreKind::SecretService
    );
}

#[test]
fn keyutils_round_trips_an_rsa_4096_pem() {
    let store = keyutils();
    assert_eq!(store.kind(), KeyStoreKind::Keyutils);
    let account = account("ku-round-trip");
    let _cleanup = Cleanup {
        store: &store,
        accounts: vec![account.clone()],
    };
    assert_round_trip(&store, &account, keyctl_lookup_from_new_session);
}

#[test]
fn keyutils_keeps_accounts_apart() {
    assert_accounts_are_separate(&keyutils(), "ku");
}

#[test]
fn preparing_for_keyutils_is_idempotent() {
    let session = || {
        let out = run("keyctl", &["rdescribe", "@s"]);
        assert!(out.status.success(), "keyctl rdescribe @s failed");
        let id = text(&run("keyctl", &["show", "@s"]).stdout);
        (text(&out.stdout), id)
    };
    prepare_process_for_keyutils().unwrap();
    let first = session();
    prepare_process_for_keyutils().unwrap();
    assert_eq!(
        session(),
        first,
        "a second call joined another session keyring"
    );
    // Our own session keyring (`_ses`), not the user-session keyring shared by every process
    // of the user that has none (`_uid_ses.UID`).
    let description = first.0.trim_end().rsplit(';').next().unwrap().to_owned();
    assert_eq!(description, "_ses", "{first:?}");
}

#[test]
fn bad_input_is_refused_before_reaching_the_store() {
    let store = keyutils();
    assert!(matches!(
        store.save(&account("empty"), ""),
        Err(KeyStoreError::EmptySecret)
    ));
    for bad in ["", "line\nbreak", &"x".repeat(300)] {
        let err = store.load(bad).unwrap_err();
        assert!(
            matches!(err, KeyStoreError::InvalidAccount { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(!err.to_string().contains('\n'), "multi-line message: {err}");
    }
}

/// Runs this test binary again, filtered to one test, with the environment changed; `role` tells
/// the child which assertions to make. Environment variables cannot be changed safely inside a
/// multi-threaded test process, so the unreachable bus lives in a child process.
fn run_child(test: &str, role: &str, env: &[(&str, &str)]) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env("JASPER_KEYSTORE_CHILD", role)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success() && text(&out.stdout).contains("1 passed"),
        "child {role} failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn explicit_secret_service_without_a_bus_is_unavailable_and_default_falls_back() {
    const TEST: &str =
        "explicit_secret_service_without_a_bus_is_unavailable_and_default_falls_back";
    match std::env::var("JASPER_KEYSTORE_CHILD").as_deref() {
        Ok("no-bus") => {
            let err = KeyStore::open(Some(KeyStoreKind::SecretService)).unwrap_err();
            assert!(
                matches!(
                    err,
                    KeyStoreError::Unavailable {
                        kind: KeyStoreKind::SecretService,
                        ..
                    }
                ),
                "{err:?}"
            );
            let message = err.to_string();
            assert!(!message.contains('\n'), "multi-line message: {message}");
            assert!(message.contains("org.freedesktop.secrets"), "{message}");
            eprintln!("explicit Secret Service without a bus: {message}");

            prepare_process_for_keyutils().unwrap();
            let store = KeyStore::open(None).expect("the default falls back to keyutils");
            assert_eq!(store.kind(), KeyStoreKind::Keyutils);
        }
        Ok(other) => panic!("unknown child role {other}"),
        Err(_) => run_child(
            TEST,
            "no-bus",
            &[
                (
                    "DBUS_SESSION_BUS_ADDRESS",
                    "unix:path=/nonexistent/jasper/bus",
                ),
                ("XDG_RUNTIME_DIR", "/nonexistent/jasper"),
            ],
        ),
    }
}
