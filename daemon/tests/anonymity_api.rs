//! The anonymity settings and report through the shells: `jasperd --anonymity` is validated at
//! start, `RelayService.GetAnonymity` / `jasper relays anonymity` report where an identity
//! stands (and `no_identity` before it has one), and in strict mode a message that would need a
//! relay shared with another key waits (`waiting`, with its reason) until a relay is added.

mod common;

use std::time::Duration;

use common::*;
use jasper_proto::v1 as pb;
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

const DELIVERY: Duration = Duration::from_secs(45);

#[test]
fn an_unknown_anonymity_mode_stops_jasperd_at_start_naming_the_allowed_ones() {
    let root = tempfile::tempdir().unwrap();
    let mut d = Daemon::new(
        root.path(),
        "bad",
        DaemonOptions {
            extra: vec!["--anonymity".into(), "nonsense".into()],
            ..DaemonOptions::default()
        },
    );
    let err = d
        .try_spawn()
        .expect_err("jasperd started with --anonymity nonsense");
    let log = d.log();
    assert!(
        log.contains("nonsense") && log.contains("strict") && log.contains("relaxed"),
        "the refusal does not name the value and the allowed ones ({err}): {log}"
    );
    assert!(!d.is_running());
}

/// Checks the exact JSON shape of one role (`roles`, `waiting`, a shared relay's `roles`).
fn assert_role_shape(role: &Value) {
    let obj = role.as_object().expect("a role is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["key", "kind", "name", "relay"], "{role:#}");
    assert!(
        ["rx", "tx_self", "tx_contact"].contains(&role["kind"].as_str().unwrap_or_default()),
        "{role:#}"
    );
    assert!(
        role["key"].as_str().is_some_and(|k| !k.is_empty()),
        "{role:#}"
    );
    assert!(
        role["name"].is_null() || role["name"].is_string(),
        "{role:#}"
    );
    assert!(
        role["relay"].is_null() || role["relay"].is_string(),
        "{role:#}"
    );
}

/// Checks the exact JSON shape of `jasper --json relays anonymity`.
fn assert_report_shape(report: &Value) {
    let obj = report.as_object().expect("the report is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "mode",
            "relays_known",
            "relays_needed",
            "roles",
            "shared",
            "summary",
            "waiting",
            "witness"
        ],
        "{report:#}"
    );
    assert!(report["relays_needed"].is_u64() && report["relays_known"].is_u64());
    assert!(report["summary"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(report["witness"].is_null() || report["witness"].is_string());
    for list in ["roles", "waiting"] {
        report[list]
            .as_array()
            .expect("a list")
            .iter()
            .for_each(assert_role_shape);
    }
    for shared in report["shared"].as_array().expect("shared is a list") {
        assert!(shared["relay"].is_string(), "{shared:#}");
        shared["roles"]
            .as_array()
            .expect("a shared relay's roles")
            .iter()
            .for_each(assert_role_shape);
    }
}

fn message(d: &Daemon, with: &str, id: &str) -> Option<Value> {
    d.messages(with).into_iter().find(|m| m["id"] == id)
}

#[test]
fn strict_mode_holds_a_message_that_needs_a_third_relay_until_one_is_added() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 3);
    let addrs = mesh.addrs();
    // Alice knows two of the three relays and learns none (they are on loopback).
    let alice = Daemon::start_with(
        root.path(),
        "alice",
        DaemonOptions {
            relays: addrs[..2].to_vec(),
            allow_private_relays: false,
            extra: vec!["--anonymity".into(), "strict".into()],
            ..DaemonOptions::default()
        },
    );
    let bob = Daemon::start(root.path(), "bob", &mesh);
    let rt = runtime();
    let mut c = alice.client(&rt);

    // ---- before an identity exists ---------------------------------------------------------
    let status = rt
        .block_on(c.relays.get_anonymity(pb::GetAnonymityRequest {}))
        .expect_err("GetAnonymity without an identity");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        (info.domain.as_str(), info.reason.as_str()),
        ("jasper", "no_identity")
    );
    let (exit, code, message_text) = alice.fails(&["relays", "anonymity"]);
    assert_eq!((exit, code.as_str()), (1, "no_identity"), "{message_text}");
    // Listing relays still works (human output has no summary yet).
    let human = std::process::Command::new(jasper_binary())
        .arg("--socket")
        .arg(&alice.socket)
        .arg("relays")
        .output()
        .unwrap();
    assert!(human.status.success(), "{human:?}");
    let listed = String::from_utf8_lossy(&human.stdout);
    assert!(listed.contains(&addrs[0]), "{listed}");

    // ---- an identity, a contact, a message ---------------------------------------------------
    bob.create_identity();
    alice.create_identity();
    befriend(&alice, "alice", &bob, "bob");
    let b_key = bob.public_key();
    // Both of alice's relays see her own key before she writes to bob: RX moves from the first
    // relay it took to the other, and the first comes back. A relay that has seen one key may
    // never carry another, so bob's key has no relay (the SENT copies take the free one). Left
    // alone, bob's copy and the SENT copy would race for the second relay.
    let rx = |d: &Daemon| {
        d.ok(&["relays", "rx"])["address"]
            .as_str()
            .map(str::to_owned)
    };
    let first = wait_until(DELIVERY, "alice's RX relay", || rx(&alice));
    let second = addrs[..2]
        .iter()
        .find(|a| **a != first)
        .expect("two relays")
        .clone();
    alice.ok(&["relays", "remove", &first]);
    wait_until(DELIVERY, "alice's RX relay moving", || {
        rx(&alice).filter(|r| *r == second)
    });
    alice.ok(&["relays", "add", &first]);
    let before = alice.ok(&["relays", "anonymity"]);
    assert_report_shape(&before);
    assert_eq!(before["mode"], "strict", "{before:#}");
    assert_eq!(before["relays_known"], 2, "{before:#}");

    // A watcher for the report's changes (from the end of the log as it is now).
    let watch = Watch::start(&alice, 0);

    let sent = alice.ok(&["send", "--to", "bob", "held back"]);
    let id = sent["id"].as_str().expect("a message id").to_owned();
    // RX, own copies and bob's TX need three relays; alice knows two: bob's copy waits.
    let waiting = wait_until(DELIVERY, "the message waiting", || {
        message(&alice, "bob", &id).filter(|m| m["state"] == "waiting")
    });
    let reason = waiting["failure"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "waiting without a reason: {waiting:#}");
    let report = alice.ok(&["relays", "anonymity"]);
    assert_report_shape(&report);
    assert_eq!(report["mode"], "strict", "{report:#}");
    assert_eq!(report["relays_needed"], 3, "{report:#}");
    assert_eq!(report["relays_known"], 2, "{report:#}");
    let waiting_roles = report["waiting"].as_array().unwrap();
    assert!(
        waiting_roles.iter().any(|r| r["kind"] == "tx_contact"
            && r["name"] == "bob"
            && r["key"] == b_key.as_str()
            && r["relay"].is_null()),
        "bob is not reported waiting: {report:#}"
    );
    assert!(
        report["shared"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    // The same report over gRPC.
    let grpc = rt
        .block_on(c.relays.get_anonymity(pb::GetAnonymityRequest {}))
        .expect("GetAnonymity")
        .into_inner()
        .report
        .expect("a report");
    assert_eq!(grpc.mode(), pb::AnonymityMode::Strict);
    assert_eq!((grpc.relays_needed, grpc.relays_known), (3, 2));
    assert_eq!(grpc.summary, report["summary"].as_str().unwrap());
    // Human output: the summary line first; `relays` ends with it.
    let human = std::process::Command::new(jasper_binary())
        .arg("--socket")
        .arg(&alice.socket)
        .args(["relays", "anonymity"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert_eq!(text.lines().next(), report["summary"].as_str(), "{text}");
    assert!(
        text.contains("waiting:") && text.contains("tx_contact bob"),
        "{text}"
    );
    let human = std::process::Command::new(jasper_binary())
        .arg("--socket")
        .arg(&alice.socket)
        .args(["relays", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert_eq!(text.lines().last(), report["summary"].as_str(), "{text}");
    // `relays list --json` is still the plain list.
    assert!(alice.ok(&["relays", "list"]).is_array());
    // `watch` shows the change: the report with bob waiting.
    watch.read_until(DELIVERY, |seen| {
        seen.iter().any(|e| {
            e["kind"]["type"] == "anonymity_changed"
                && e["kind"]["report"]["waiting"]
                    .as_array()
                    .is_some_and(|w| w.iter().any(|r| r["name"] == "bob"))
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        message(&bob, "alice", &id).is_none(),
        "the waiting message went out anyway"
    );

    // ---- a third relay: the message goes out --------------------------------------------------
    alice.ok(&["relays", "add", &addrs[2]]);
    let got = bob.wait_for_message("alice", &id, DELIVERY);
    assert_eq!(got["content"], "held back");
    wait_until(DELIVERY, "the message out of the outbox", || {
        message(&alice, "bob", &id).filter(|m| m["state"] != "waiting" && m["state"] != "queued")
    });
    let after = alice.ok(&["relays", "anonymity"]);
    assert_report_shape(&after);
    assert_eq!(after["relays_known"], 3, "{after:#}");
    assert!(after["waiting"].as_array().unwrap().is_empty(), "{after:#}");
    assert!(
        after["roles"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["relay"].is_string()),
        "{after:#}"
    );
}
