//! `jasper chat`, the terminal frontend, used for real: two people, each in a tmux terminal
//! against a real daemon, over real relays, a real IPFS node and real WebRTC, typing what a
//! person types and reading what the screen shows. Unread counts, delivery states, reactions,
//! edits, an attachment both ways, a call, live updates in a conversation not on screen, and a
//! frontend that rides out its daemon's restart without losing a message.

mod common;

use std::time::Duration;

use common::*;
use jasper_test::stun::StunServer;
use jasper_test::tmux::{Terminal, row_with};
use serde_json::Value;

const DELIVERY: Duration = Duration::from_secs(45);
const SCREEN: Duration = Duration::from_secs(20);
const SIZE: (u16, u16) = (130, 40);

fn ipfs_api() -> String {
    std::env::var("JASPER_TEST_IPFS_API").unwrap_or_else(|_| {
        panic!(
            "JASPER_TEST_IPFS_API is not set: this test needs a real IPFS node. Run it through \
             scripts/test.sh, or `eval \"$(scripts/ipfs-node.sh start)\"` first"
        )
    })
}

fn chat(root: &std::path::Path, daemon: &Daemon) -> Terminal {
    let socket = daemon.socket.display().to_string();
    Terminal::start(
        &root.join("terminals"),
        &daemon.name,
        &jasper_binary(),
        &["--socket", &socket, "chat"],
        SIZE,
    )
}

/// `daemon`'s conversation named `name`, through the CLI (the API the frontend uses).
fn conversation(daemon: &Daemon, name: &str) -> Value {
    daemon
        .ok(&["conversations"])
        .as_array()
        .expect("a list")
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{} has no conversation {name}", daemon.name))
}

/// The list row of conversation `name` (the left column of the screen).
fn list_row(screen: &str, name: &str) -> String {
    screen
        .lines()
        .find_map(|l| {
            let left: String = l.chars().take(34).collect();
            left.contains(name).then_some(left)
        })
        .unwrap_or_default()
}

#[test]
fn two_people_chat_in_terminals_through_calls_attachments_and_a_daemon_restart() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 4);
    let stun = StunServer::start(root.path());
    let opts = DaemonOptions {
        extra: vec![
            "--ipfs-api".into(),
            ipfs_api(),
            "--stun".into(),
            stun.url.clone(),
            "--webrtc-bind".into(),
            "127.0.0.1:0".into(),
        ],
        ..DaemonOptions::for_mesh(&mesh)
    };
    let alice = Daemon::start_with(root.path(), "alice", opts.clone());
    let mut bob = Daemon::start_with(root.path(), "bob", opts);
    alice.create_identity();
    bob.create_identity();
    befriend(&alice, "alice", &bob, "bob");

    // Bob has mail before he opens the frontend: a DM, then a group message.
    let dm = alice.ok(&["send", "--to", "bob", "hello bob"]);
    bob.wait_for_message("alice", dm["id"].as_str().unwrap(), DELIVERY);
    alice.ok(&["group", "create", "team", "--member", "bob"]);
    let g = alice.ok(&["group", "send", "team", "team hello"]);
    bob.wait_for_message("team", g["id"].as_str().unwrap(), DELIVERY);
    assert_eq!(conversation(&bob, "alice")["unread"], 1);
    assert_eq!(conversation(&bob, "team")["unread"], 1);
    assert_eq!(
        conversation(&alice, "bob")["unread"],
        0,
        "own messages are read"
    );

    // The most recent conversation opens (and is read); the other shows its unread count.
    let bob_tty = chat(root.path(), &bob);
    bob_tty.wait_for(SCREEN, "the team's message and alice's unread count", |s| {
        s.contains("team hello") && list_row(s, "alice").contains("(1)")
    });
    wait_until(SCREEN, "bob's team conversation to be read", || {
        (conversation(&bob, "team")["unread"] == 0).then_some(())
    });
    // Tab goes to the next conversation with unread messages, which is then read.
    bob_tty.press("Tab");
    bob_tty.wait_for(SCREEN, "alice's DM, read", |s| {
        s.contains("hello bob") && !list_row(s, "alice").contains("(1)")
    });
    wait_until(SCREEN, "bob's DM with alice to be read", || {
        (conversation(&bob, "alice")["unread"] == 0).then_some(())
    });

    // Alice writes from her terminal; her screen follows the delivery state to ✓✓ (seen on
    // another relay than the one it went through).
    let alice_tty = chat(root.path(), &alice);
    alice_tty.wait_for_text(SCREEN, "● connected");
    alice_tty.enter("/open bob");
    alice_tty.wait_for_text(SCREEN, "hello bob");
    alice_tty.enter("hi from the terminal");
    bob_tty.wait_for_text(DELIVERY, "hi from the terminal");
    alice_tty.wait_for(DELIVERY, "✓✓ after the message", |s| {
        row_with(s, "hi from the terminal").is_some_and(|r| r.contains("✓✓"))
    });

    // A pasted text with two lines is one message of two lines (its newline is no Enter).
    bob_tty.paste("first pasted line\nsecond pasted line");
    bob_tty.press("Enter");
    let screen = alice_tty.wait_for_text(DELIVERY, "second pasted line");
    let first = screen
        .lines()
        .position(|l| l.contains("bob: first pasted line"))
        .unwrap_or_else(|| panic!("one message holds both lines:\n{screen}"));
    assert!(
        screen
            .lines()
            .nth(first + 1)
            .unwrap()
            .contains("second pasted line")
    );
    let pasted = bob.messages("alice");
    assert!(
        pasted
            .iter()
            .any(|m| m["content"] == "first pasted line\nsecond pasted line"),
        "{pasted:?}"
    );

    // Bob reacts to alice's message ([2]: his paste is [1]); alice edits hers; each sees the
    // other's change.
    bob_tty.enter("/react 2 :heart:");
    alice_tty.wait_for_text(DELIVERY, ":heart: bob");
    alice_tty.enter("/edit hi, edited in the terminal");
    bob_tty.wait_for(DELIVERY, "the edit, marked as one", |s| {
        row_with(s, "hi, edited in the terminal").is_some_and(|r| r.contains("(edited)"))
    });
    // A command that cannot be right is refused on screen, and nothing is sent.
    bob_tty.enter("/edit 3 not mine");
    bob_tty.wait_for_text(SCREEN, "/edit: [3] is not yours");

    // A file, encrypted onto IPFS by alice's daemon, saved by bob from his terminal.
    let report = root.path().join("report.txt");
    std::fs::write(&report, "quarterly figures\n".repeat(500)).unwrap();
    alice_tty.enter(&format!("/attach {} the report", report.display()));
    bob_tty.wait_for_text(DELIVERY, "📎 report.txt");
    let saved = root.path().join("saved");
    std::fs::create_dir_all(&saved).unwrap();
    bob_tty.enter(&format!("/save {}", saved.display()));
    bob_tty.wait_for_text(DELIVERY, "sha256 checked");
    assert_eq!(
        std::fs::read(saved.join("report.txt")).unwrap(),
        std::fs::read(&report).unwrap()
    );

    // Live: a group message while bob reads alice's DM raises the team's count on his screen.
    alice.ok(&["group", "send", "team", "while you read alice"]);
    bob_tty.wait_for(DELIVERY, "the team's unread count", |s| {
        list_row(s, "team").contains("(1)")
    });

    // A call over a transparent session: alice rings from her terminal, bob answers from his.
    alice.ok(&["transparent", "enable", "bob"]);
    bob.ok(&["transparent", "enable", "alice"]);
    wait_until(DELIVERY, "the transparent session", || {
        (alice.ok(&["transparent", "status", "bob"])[0]["state"] == "connected").then_some(())
    });
    alice_tty.enter("/call");
    bob_tty.wait_for_text(DELIVERY, "alice is calling: /accept /reject");
    bob_tty.enter("/accept");
    alice_tty.wait_for_text(SCREEN, "in a call with bob");
    bob_tty.wait_for_text(SCREEN, "in a call with alice");
    alice_tty.enter("/hangup");
    bob_tty.wait_for(SCREEN, "the call to end", |s| !s.contains("in a call"));
    let calls = bob.ok(&["call", "list"]);
    assert_eq!(calls[0]["state"], "ended", "{calls}");
    assert_eq!(calls[0]["end_reason"], "remote_hung_up", "{calls}");

    // Bob's daemon goes away: his frontend says so and keeps trying; a message sent meanwhile
    // is on his screen once the daemon is back, with nothing typed again.
    bob.stop();
    bob_tty.wait_for_text(SCREEN, "reconnecting");
    bob_tty.enter("typed while the daemon was down");
    bob_tty.wait_for_text(SCREEN, "daemon unreachable");
    let late = alice.ok(&["send", "--to", "bob", "sent while bob's daemon was down"]);
    bob.restart();
    bob_tty.wait_for(DELIVERY, "the late message, connected again", |s| {
        s.contains("sent while bob's daemon was down") && s.contains("● connected")
    });
    bob.wait_for_message("alice", late["id"].as_str().unwrap(), DELIVERY);
    // What could not be sent went back to the compose line: Enter sends it now.
    let screen = bob_tty.screen();
    let compose = screen
        .lines()
        .rev()
        .find(|l| l.contains("typed while the daemon was down"))
        .unwrap_or_default();
    assert!(
        !compose.contains("you:"),
        "the failed text is in the compose line, not the history:\n{screen}"
    );
    bob_tty.press("Enter");
    alice_tty.wait_for_text(DELIVERY, "typed while the daemon was down");

    // /quit leaves the terminal as it was.
    bob_tty.enter("/quit");
    wait_until(SCREEN, "bob's frontend to exit", || {
        bob_tty.exited().then_some(())
    });
    drop(stun);
}
