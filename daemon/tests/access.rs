//! Who can reach a daemon and how it starts and stops: the socket is 0600 and a connection
//! from another uid is dropped; TCP is loopback-only with a bearer token; reflection answers
//! (what grpcurl needs); a live socket is never taken over, a stale one is; SIGTERM is graceful.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use jasper_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn socket_is_0600_and_other_users_are_refused() {
    let root = tempfile::tempdir().unwrap();
    // Let other users traverse to the socket, so that only its mode and the daemon's peer
    // credential check stand in the way.
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let alice = Daemon::start_with(root.path(), "alice", DaemonOptions::default());
    let mode = std::fs::metadata(&alice.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    assert!(alice.ok(&["relays", "list"]).is_array());

    let have_setpriv = Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !is_root() || !have_setpriv {
        eprintln!("skipping the other-uid half: it needs root and setpriv (util-linux)");
        return;
    }
    // The CLI binary lives under the (private) target dir: give `nobody` a copy.
    let bin_dir = root.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let jasper = bin_dir.join("jasper");
    std::fs::copy(jasper_binary(), &jasper).unwrap();
    std::fs::set_permissions(&jasper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = || {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&jasper)
            .arg("--socket")
            .arg(&alice.socket)
            .args(["--json", "relays", "list"]);
        Cli::run(cmd, None)
    };

    // Mode 0600: the kernel refuses nobody.
    let out = as_nobody();
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.error()["code"], "unavailable", "{out:?}");

    // Even with the mode opened up, the daemon drops the connection on its peer uid.
    std::fs::set_permissions(&alice.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_nobody();
    assert_ne!(out.code(), 0, "nobody got through: {out:?}");
    assert_eq!(out.error()["code"], "unavailable", "{out:?}");
    wait_until(Duration::from_secs(10), "the refusal in the log", || {
        let log = alice.log();
        log.lines()
            .any(|l| l.contains("refused a connection from another user") && l.contains("65534"))
            .then_some(())
    });
    // The owner still gets in.
    assert!(alice.ok(&["relays", "list"]).is_array());
}

#[test]
fn tcp_is_loopback_only_and_needs_the_bearer_token() {
    let root = tempfile::tempdir().unwrap();
    let token_file = root.path().join("token");
    let token = "s3cret-token-for-the-tests-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let port = free_port();
    let opts = DaemonOptions {
        extra: vec![
            "--tcp".into(),
            format!("127.0.0.1:{port}"),
            "--token-file".into(),
            token_file.display().to_string(),
        ],
        ..DaemonOptions::default()
    };
    let _alice = Daemon::start_with(root.path(), "alice", opts);

    let rt = runtime();
    let channel = rt
        .block_on(
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .unwrap()
                .connect(),
        )
        .expect("TCP listener is up");
    let list = |bearer: Option<&str>| {
        let mut request = tonic::Request::new(pb::ListRelaysRequest {});
        if let Some(b) = bearer {
            request
                .metadata_mut()
                .insert("authorization", b.parse().unwrap());
        }
        let mut client = pb::relay_service_client::RelayServiceClient::new(channel.clone());
        rt.block_on(client.list(request))
    };
    for bad in [
        None,
        Some("Bearer wrong-token-wrong-token-wrong"),
        Some("Basic czNjcmV0"),
    ] {
        let status = list(bad).expect_err("refused without the right token");
        assert_eq!(status.code(), Code::Unauthenticated, "{bad:?}");
        assert_eq!(
            status.get_details_error_info().map(|i| i.reason),
            Some("unauthenticated".to_owned())
        );
    }
    assert!(list(Some(&format!("Bearer {token}"))).is_ok());

    // Anything but loopback is refused at start-up, as a configuration error.
    let mut open = Daemon::new(
        root.path(),
        "open",
        DaemonOptions {
            extra: vec![
                "--tcp".into(),
                format!("0.0.0.0:{}", free_port()),
                "--token-file".into(),
                token_file.display().to_string(),
            ],
            ..DaemonOptions::default()
        },
    );
    let err = open.try_spawn().expect_err("0.0.0.0 must be refused");
    assert!(err.contains("exit status: 2"), "{err}");
    assert!(open.log().contains("loopback"), "{}", open.log());
}

#[test]
fn reflection_lists_every_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let root = tempfile::tempdir().unwrap();
    let alice = Daemon::start_with(root.path(), "alice", DaemonOptions::default());
    let rt = runtime();
    let channel = rt
        .block_on(jasper_client::connect_unix(&alice.socket))
        .unwrap();
    let ask = |request: MessageRequest| -> ServerReflectionResponse {
        let mut client = ServerReflectionClient::new(channel.clone());
        rt.block_on(async {
            use futures::StreamExt;
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            };
            let mut answers = client
                .server_reflection_info(futures::stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            answers.next().await.unwrap().unwrap()
        })
    };
    let Some(MessageResponse::ListServicesResponse(list)) =
        ask(MessageRequest::ListServices(String::new())).message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "jasper.v1.IdentityService",
        "jasper.v1.ContactService",
        "jasper.v1.ConversationService",
        "jasper.v1.MessageService",
        "jasper.v1.RelayService",
        "jasper.v1.EventService",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} missing: {names:?}"
        );
    }
    let Some(MessageResponse::FileDescriptorResponse(files)) = ask(
        MessageRequest::FileContainingSymbol("jasper.v1.MessageService".into()),
    )
    .message_response
    else {
        panic!("no descriptor for jasper.v1.MessageService");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[test]
fn a_live_socket_is_kept_a_stale_one_replaced_and_sigterm_is_graceful() {
    let root = tempfile::tempdir().unwrap();
    let mut alice = Daemon::start_with(root.path(), "alice", DaemonOptions::default());
    alice.create_identity();

    // A second daemon on the same socket refuses to start and leaves the first alone.
    let mut intruder = Daemon::new(
        root.path(),
        "intruder",
        DaemonOptions {
            socket: Some(alice.socket.clone()),
            ..DaemonOptions::default()
        },
    );
    let err = intruder
        .try_spawn()
        .expect_err("the socket is taken by a live daemon");
    assert!(err.contains("exit status: 1"), "{err}");
    assert!(
        intruder.log().contains("already serving"),
        "{}",
        intruder.log()
    );
    assert!(alice.ok(&["identity", "show"])["public_key"].is_string());

    // SIGTERM with a subscriber attached: a prompt, clean exit that removes the socket.
    let watch = Watch::start(&alice, 0);
    watch
        .next(Duration::from_secs(10))
        .expect("the identity event");
    let started = Instant::now();
    let status = alice.stop();
    assert!(status.success(), "jasperd exited with {status}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(!alice.socket.exists(), "socket left behind after SIGTERM");
    drop(watch);

    // kill -9 leaves a stale socket; the next start replaces it and keeps the identity.
    alice.restart();
    let key = alice.public_key();
    alice.kill9();
    assert!(alice.socket.exists(), "kill -9 cannot remove the socket");
    alice.restart();
    assert_eq!(alice.public_key(), key);
}

/// `--metrics`: opt-in, loopback only, behind the bearer token; what it serves is valid
/// Prometheus text (read by `prometheus-parse`) with the daemon's figures.
#[test]
fn metrics_are_opt_in_behind_the_token_and_valid_prometheus_text() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 3);
    let token_file = root.path().join("token");
    let token = "metrics-token-for-the-tests-0123456789";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let port = free_port();
    let mut opts = DaemonOptions::for_mesh(&mesh);
    opts.extra = vec![
        "--metrics".into(),
        format!("127.0.0.1:{port}"),
        "--token-file".into(),
        token_file.display().to_string(),
    ];
    let alice = Daemon::start_with(root.path(), "alice", opts);
    let created = alice.jasper(&["identity", "create"]);
    assert!(created.status.success(), "{}", created.stderr);

    let rt = runtime();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let get = |bearer: Option<&str>| {
        rt.block_on(async {
            let mut req = reqwest::Client::new().get(&url);
            if let Some(b) = bearer {
                req = req.header("authorization", b);
            }
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    };
    for bad in [
        None,
        Some("Bearer wrong"),
        Some(format!("Basic {token}").as_str()),
    ] {
        assert_eq!(get(bad).0, 401, "{bad:?}");
    }
    let (status, text) = get(Some(&format!("Bearer {token}")));
    assert_eq!(status, 200, "{text}");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) => v,
                _ => f64::NAN,
            })
    };
    assert_eq!(value("jasperd_identity", &[]), Some(1.0), "{text}");
    assert_eq!(value("jasperd_relays", &[]), Some(3.0), "{text}");
    for state in [
        "pending",
        "waiting",
        "accepted",
        "visible",
        "unconfirmed",
        "failed",
    ] {
        assert_eq!(
            value("jasperd_outbox_copies", &[("state", state)]),
            Some(0.0),
            "{state}"
        );
    }
    assert!(
        scrape.docs.contains_key("jasperd_relay_requests_total"),
        "{text}"
    );

    // Without --token-file the flag is refused at start-up; so is a non-loopback address.
    for extra in [
        vec!["--metrics".to_owned(), format!("127.0.0.1:{}", free_port())],
        vec![
            "--metrics".to_owned(),
            format!("0.0.0.0:{}", free_port()),
            "--token-file".to_owned(),
            token_file.display().to_string(),
        ],
    ] {
        let mut d = Daemon::new(
            root.path(),
            "refused",
            DaemonOptions {
                extra: extra.clone(),
                ..DaemonOptions::default()
            },
        );
        assert!(d.try_spawn().is_err(), "{extra:?}");
        assert!(
            d.log().contains("--token-file") || d.log().contains("loopback"),
            "{}",
            d.log()
        );
    }
}
