//! Encrypted attachments through a real IPFS node (js-ipfs on loopback, started by
//! scripts/test.sh through scripts/ipfs-node.sh) and real relays: a 10 MiB file round-trips
//! byte for byte, IPFS only ever holds ciphertext, modified, truncated and wrongly keyed
//! attachments are refused, and an image link renders as an image.

mod common;

use jasper_test::engine::befriend;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use jasper_core::attachment::{Attachment as Link, AttachmentKey};
use jasper_engine::attachments::ipfs::IpfsClient;
use jasper_engine::{Engine, EphemeralSecretStore, Message};

fn ipfs_api() -> String {
    std::env::var("JASPER_TEST_IPFS_API").unwrap_or_else(|_| {
        panic!(
            "JASPER_TEST_IPFS_API is not set: these tests need a real IPFS node. Run them through \
             scripts/test.sh, or `eval \"$(scripts/ipfs-node.sh start)\"` first"
        )
    })
}

/// Whether any 64-byte window of `plain` occurs in `haystack`. Every 64-byte window contains a
/// whole 32-byte block at an offset that is a multiple of 32, so it is enough to look for those
/// blocks at every offset of `haystack` (rolling hash, then an exact comparison).
fn shares_a_64_byte_window(plain: &[u8], haystack: &[u8]) -> bool {
    const W: usize = 32;
    const B: u64 = 1_000_003;
    let hash = |s: &[u8]| {
        s.iter()
            .fold(0u64, |h, &b| h.wrapping_mul(B).wrapping_add(b as u64))
    };
    let mut blocks: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, block) in plain.chunks_exact(W).enumerate() {
        blocks.entry(hash(block)).or_default().push(i * W);
    }
    if haystack.len() < W {
        return false;
    }
    let top = (0..W - 1).fold(1u64, |p, _| p.wrapping_mul(B));
    let mut h = hash(&haystack[..W]);
    for start in 0..=haystack.len() - W {
        if start > 0 {
            h = h
                .wrapping_sub((haystack[start - 1] as u64).wrapping_mul(top))
                .wrapping_mul(B)
                .wrapping_add(haystack[start + W - 1] as u64);
        }
        if let Some(offsets) = blocks.get(&h)
            && offsets
                .iter()
                .any(|&o| plain[o..o + W] == haystack[start..start + W])
        {
            return true;
        }
    }
    false
}

async fn cat(api: &str, cid: &str) -> Vec<u8> {
    let response = reqwest::Client::new()
        .post(format!("{api}/api/v0/cat?arg={cid}&timeout=10s"))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "cat {cid}: {}",
        response.status()
    );
    response.bytes().await.unwrap().to_vec()
}

async fn add(ipfs: &IpfsClient, dir: &Path, bytes: &[u8]) -> String {
    let path = dir.join(format!("{}.bin", uuid::Uuid::new_v4()));
    std::fs::write(&path, bytes).unwrap();
    ipfs.add_file(&path).await.unwrap()
}

async fn received(engine: &Engine, from: &str, id: &str) -> Message {
    let mut found = None;
    let ok = eventually(Duration::from_secs(20), || {
        found = engine
            .conversations()
            .messages(from, None, 100)
            .ok()
            .and_then(|p| p.messages.into_iter().find(|m| m.id == id));
        found.is_some()
    })
    .await;
    assert!(ok, "message {id} never arrived");
    found.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mib_file_and_an_image_through_ipfs_and_tampered_copies_refused() {
    let api = ipfs_api();
    let dir = tempfile::tempdir().unwrap();
    let relays = mesh(3, dir.path());
    let secrets = Arc::new(EphemeralSecretStore::default());
    // Bob fetches through the node's gateway (GET /ipfs/CID); the daemon test covers `cat`.
    let gateway = std::env::var("JASPER_TEST_IPFS_GATEWAY")
        .expect("JASPER_TEST_IPFS_GATEWAY is not set (scripts/ipfs-node.sh start prints it)");
    let open = |name: &str, gateway: Option<String>| {
        let mut c = config(&dir.path().join(name), &relays);
        c.ipfs_api = Some(api.clone());
        c.ipfs_gateway = gateway;
        Engine::open(c, secrets.clone())
    };
    let alice = open("alice", None).await.unwrap();
    let bob = open("bob", Some(gateway)).await.unwrap();
    befriend(&alice, "alice", &bob, "bob").await;

    // 10 MiB, sent and downloaded on the other side, byte for byte.
    let plain = jasper_test::noise(10 * 1024 * 1024, 7);
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &plain).unwrap();
    let started = Instant::now();
    let sent = alice
        .attachments()
        .send("bob", "the dump", &file)
        .await
        .unwrap();
    let attach_time = started.elapsed();
    assert!(sent.content.starts_with("the dump\n\n[big.bin](ipfs://"));
    assert_eq!(sent.attachments.len(), 1);
    let meta = sent.attachments[0].clone();
    assert_eq!((meta.size, meta.is_image), (plain.len() as u64, false));
    assert_eq!(meta.media_type, "application/octet-stream");

    let got = received(&bob, "alice", &sent.id).await;
    assert_eq!(got.attachments, sent.attachments);
    let out = dir.path().join("out.bin");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let result = bob
        .attachments()
        .download(&got.id, 0, &out, move |p| {
            let _ = tx.send(p);
        })
        .await
        .unwrap();
    let download_time = started.elapsed();
    assert_eq!(result.size, plain.len() as u64);
    assert!(
        std::fs::read(&out).unwrap() == plain,
        "downloaded file differs"
    );
    let mut last = None;
    let mut updates = 0;
    while let Ok(p) = rx.try_recv() {
        updates += 1;
        last = Some(p);
    }
    let last = last.expect("no progress reported");
    assert_eq!(last.received, last.total);
    assert!(updates > 1, "progress came once");
    eprintln!(
        "10 MiB: attach (encrypt + add) {attach_time:?}, download (cat + decrypt + verify) {download_time:?}"
    );

    // What IPFS holds is ciphertext: no 64-byte window of the plaintext occurs in it.
    let stored = cat(&api, &meta.cid).await;
    assert!(stored.len() > plain.len());
    assert!(!shares_a_64_byte_window(&plain, &stored));
    assert!(
        shares_a_64_byte_window(&plain, &plain[1000..2000]),
        "the check itself works"
    );

    // A modified block, a truncated copy and a wrong key are refused, and leave no file.
    let ipfs = IpfsClient::new(&api, None);
    let link = Link {
        name: "copy.bin".into(),
        cid: meta.cid.clone(),
        key: AttachmentKey::from_base64url(&meta.key).unwrap(),
        size: meta.size,
        media_type: meta.media_type.clone(),
        sha256: hex::decode(&meta.sha256).unwrap().try_into().unwrap(),
        is_image: false,
    };
    let mut modified = stored.clone();
    // Ciphertext chunks are 65552 bytes after a 25-byte header: this byte is in chunk 79.
    modified[5 * 1024 * 1024] ^= 0x20;
    let modified_cid = add(&ipfs, dir.path(), &modified).await;
    let truncated_cid = add(&ipfs, dir.path(), &stored[..stored.len() - (65536 + 16)]).await;
    let links = [
        Link {
            cid: modified_cid,
            ..link.clone()
        },
        Link {
            cid: truncated_cid,
            ..link.clone()
        },
        Link {
            key: AttachmentKey::generate().unwrap(),
            ..link.clone()
        },
    ];
    let content = links
        .iter()
        .map(Link::to_markdown)
        .collect::<Vec<_>>()
        .join("\n");
    let crafted = alice.messages().send("bob", &content).await.unwrap();
    let crafted = received(&bob, "alice", &crafted.id).await;
    assert_eq!(crafted.attachments.len(), 3);
    let expected = [
        jasper_core::Error::AttachmentTampered { chunk: 79 },
        jasper_core::Error::AttachmentTruncated,
        jasper_core::Error::AttachmentWrongKey,
    ];
    for (i, want) in expected.iter().enumerate() {
        let dest = dir.path().join(format!("refused{i}"));
        match bob
            .attachments()
            .download(&crafted.id, i, &dest, |_| ())
            .await
        {
            Err(jasper_engine::EngineError::Protocol(e)) => assert_eq!(&e, want, "link {i}"),
            other => panic!("link {i}: {other:?}"),
        }
        assert!(!dest.exists());
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jasper-part"))
        .collect();
    assert!(leftovers.is_empty(), "partial files left: {leftovers:?}");
    // Nor any ciphertext in the scratch directories, after the send, the download and the
    // refusals alike.
    for who in ["alice", "bob"] {
        let scratch = dir.path().join(who).join("attachments.tmp");
        let left: Vec<_> = std::fs::read_dir(&scratch)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{who}'s scratch files left: {left:?}");
    }

    // An image is linked as a Markdown image and renders as one, its name as the alt text.
    let png = dir.path().join("cat [1].png");
    std::fs::write(&png, jasper_test::noise(3000, 9)).unwrap();
    let image = alice.attachments().send("bob", "", &png).await.unwrap();
    let image = received(&bob, "alice", &image.id).await;
    assert!(image.attachments[0].is_image);
    assert_eq!(image.attachments[0].media_type, "image/png");
    assert_eq!(image.attachments[0].name, "cat [1].png");
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, pulldown_cmark::Parser::new(&image.content));
    assert!(
        html.contains(&format!(
            "<img src=\"ipfs://{}#jasper=v1;k=",
            image.attachments[0].cid
        )) && html.contains("alt=\"cat [1].png\""),
        "{html}"
    );
    let out = dir.path().join("cat.png");
    bob.attachments()
        .download(&image.id, 0, &out, |_| ())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&png).unwrap());

    alice.shutdown();
    bob.shutdown();
}
