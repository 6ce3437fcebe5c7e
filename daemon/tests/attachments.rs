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

#[test]
fn a_10_mib_file_from_one_daemon_downloads_byte_identical_on_the_other() {
    let api = ipfs_api();
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 3);
    let opts = DaemonOptions {
        extra: vec!["--ipfs-api".into(), api],
        ..DaemonOptions::for_mesh(&mesh)
    };
    let alice = Daemon::start_with(root.path(), "alice", opts.clone());
    let bob = Daemon::start_with(root.path(), "bob", opts);
    alice.create_identity();
    bob.create_identity();
    befriend(&alice, "alice", &bob, "bob");

    let plain = jasper_test::noise(10 * 1024 * 1024, 11);
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

    // A modified copy of the ciphertext, linked with the real key, is refused with its reason
    // and leaves no file.
    let cid = sent["attachments"][0]["cid"].as_str().unwrap().to_owned();
    let api = ipfs_api();
    let modified_cid = rt.block_on(async {
        let http = reqwest::Client::new();
        let mut stored = http
            .post(format!("{api}/api/v0/cat?arg={cid}&timeout=10s"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        assert!(stored.len() > plain.len());
        stored[1_000_000] ^= 1;
        let mut body = b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; \
                         filename=\"x\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            .to_vec();
        body.extend_from_slice(&stored);
        body.extend_from_slice(b"\r\n--b0undary--\r\n");
        let answer: serde_json::Value = http
            .post(format!("{api}/api/v0/add?cid-version=1&cid-base=base32"))
            .header("content-type", "multipart/form-data; boundary=b0undary")
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["Hash"].as_str().unwrap().to_owned()
    });
    let content = sent["content"].as_str().unwrap();
    let link = &content[content.find('[').unwrap()..];
    let crafted = alice.ok(&["send", "--to", "bob", &link.replace(&cid, &modified_cid)]);
    let crafted_id = crafted["id"].as_str().unwrap().to_owned();
    bob.wait_for_message("alice", &crafted_id, DELIVERY);
    let refused = root.path().join("refused.pdf");
    let (_, code, message) =
        bob.fails(&["download", &crafted_id, "--out", refused.to_str().unwrap()]);
    assert_eq!(code, "attachment_tampered", "{message}");
    assert!(!refused.exists());

    // A missing index is the caller's mistake.
    let (_, code, _) = bob.fails(&["download", &id, "--index", "3", "--out", "x"]);
    assert_eq!(code, "invalid_argument");
}
