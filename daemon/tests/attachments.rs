//! Attachments between two real daemons through real relays and a real IPFS node (js-ipfs on
//! loopback, started by scripts/test.sh): `jasper send --attach` on one side, `jasper download`
//! and the streaming `MessageService.Download` (progress, then the result) on the other.

mod common;

use std::time::Duration;

use common::*;
use jasper_proto::v1 as pb;

const DELIVERY: Duration = Duration::from_secs(45);

fn ipfs_api() -> String {
    std::env::var("JASPER_TEST_IPFS_API").unwrap_or_else(|_| {
        panic!(
            "JASPER_TEST_IPFS_API is not set: these tests need a real IPFS node. Run them through \
             scripts/test.sh, or `eval \"$(scripts/ipfs-node.sh start)\"` first"
        )
    })
}

fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        out.extend_from_slice(&seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[test]
fn a_10_mib_file_from_one_daemon_downloads_byte_identical_on_the_other() {
    let api = ipfs_api();
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 2);
    let opts = DaemonOptions {
        extra: vec!["--ipfs-api".into(), api],
        ..DaemonOptions::for_mesh(&mesh)
    };
    let alice = Daemon::start_with(root.path(), "alice", opts.clone());
    let bob = Daemon::start_with(root.path(), "bob", opts);
    alice.create_identity();
    bob.create_identity();
    befriend(&alice, "alice", &bob, "bob");

    let plain = noise(10 * 1024 * 1024, 11);
    let file = root.path().join("report.pdf");
    std::fs::write(&file, &plain).unwrap();
    let sent = alice.ok(&[
        "send",
        "--to",
        "bob",
        "--attach",
        file.to_str().unwrap(),
        "the report",
    ]);
    let id = sent["id"].as_str().unwrap().to_owned();
    assert_eq!(sent["attachments"][0]["name"], "report.pdf");
    assert_eq!(sent["attachments"][0]["media_type"], "application/pdf");
    assert_eq!(sent["attachments"][0]["size"], plain.len() as u64);

    let got = bob.wait_for_message("alice", &id, DELIVERY);
    assert_eq!(got["attachments"], sent["attachments"]);
    assert!(
        got["content"]
            .as_str()
            .unwrap()
            .starts_with("the report\n\n[report.pdf](ipfs://")
    );

    // Through the CLI.
    let out = root.path().join("via-cli.pdf");
    let result = bob.ok(&["download", &id, "--out", out.to_str().unwrap()]);
    assert_eq!(result["size"], plain.len() as u64);
    assert!(
        std::fs::read(&out).unwrap() == plain,
        "CLI download differs"
    );

    // Through the gRPC stream: progress updates, then the result.
    let rt = runtime();
    let mut c = bob.client(&rt);
    let out = root.path().join("via-grpc.pdf");
    let updates: Vec<pb::DownloadUpdate> = rt.block_on(async {
        let mut stream = c
            .messages
            .download(pb::DownloadRequest {
                id: id.clone(),
                index: 0,
                out: out.display().to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut all = Vec::new();
        while let Some(u) = stream.message().await.unwrap() {
            all.push(u);
        }
        all
    });
    let progress = updates
        .iter()
        .filter(|u| matches!(u.update, Some(pb::download_update::Update::Progress(_))))
        .count();
    assert!(progress > 0, "no progress update");
    match updates.last().and_then(|u| u.update.clone()) {
        Some(pb::download_update::Update::Done(d)) => assert_eq!(d.size, plain.len() as u64),
        other => panic!("last update: {other:?}"),
    }
    assert!(
        std::fs::read(&out).unwrap() == plain,
        "gRPC download differs"
    );

    // A missing index is the caller's mistake.
    let (_, code, _) = bob.fails(&["download", &id, "--index", "3", "--out", "x"]);
    assert_eq!(code, "invalid_argument");
}
