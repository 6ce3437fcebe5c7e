//! Bad input on every API call gets its gRPC code and its stable reason (`ErrorInfo`, domain
//! `jasper`), and the CLI reports the same reason in `--json` with exit status 2 for invalid
//! input and 1 otherwise.

mod common;

use std::time::Duration;

use common::*;
use jasper_proto::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

/// Checks a gRPC result's status code and `ErrorInfo`.
fn expect_status<T: std::fmt::Debug>(
    what: &str,
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    reason: &str,
) {
    let status = match result {
        Ok(r) => panic!("{what}: expected {code:?}/{reason}, got {r:?}"),
        Err(s) => s,
    };
    assert_eq!(status.code(), code, "{what}: {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("{what}: no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "jasper", "{what}");
    assert_eq!(info.reason, reason, "{what}: {}", status.message());
    assert!(!status.message().is_empty(), "{what}: no message");
}

/// Checks a CLI failure's `--json` error code and exit status.
fn expect_cli(d: &Daemon, args: &[&str], reason: &str, exit: i32) {
    let (code, got, message) = d.fails(args);
    assert_eq!(got, reason, "jasper {args:?}: {message}");
    assert_eq!(code, exit, "jasper {args:?} exit status ({reason})");
    assert!(!message.is_empty(), "jasper {args:?}: empty message");
}

#[test]
fn bad_input_on_every_call_gets_its_code() {
    let root = tempfile::tempdir().unwrap();
    let mesh = Mesh::start(root.path(), 3);
    let alice = Daemon::start(root.path(), "alice", &mesh);
    let bob = Daemon::start(root.path(), "bob", &mesh);
    let b_key = bob.create_identity();
    let rt = runtime();
    let mut c = alice.client(&rt);

    // ---- before any identity exists -----------------------------------------------------
    expect_status(
        "Show",
        rt.block_on(c.identity.show(pb::ShowIdentityRequest {})),
        Code::FailedPrecondition,
        "no_identity",
    );
    expect_cli(&alice, &["identity", "show"], "no_identity", 1);
    expect_status(
        "Export",
        rt.block_on(c.identity.export(pb::ExportIdentityRequest {})),
        Code::FailedPrecondition,
        "no_identity",
    );
    expect_cli(&alice, &["identity", "export"], "no_identity", 1);
    expect_status(
        "RxRelay",
        rt.block_on(c.relays.rx_relay(pb::RxRelayRequest {})),
        Code::FailedPrecondition,
        "no_identity",
    );
    expect_cli(&alice, &["relays", "rx"], "no_identity", 1);
    expect_status(
        "Send without identity",
        rt.block_on(c.messages.send(pb::SendMessageRequest {
            to: b_key.clone(),
            text: "hi".into(),
            attach: None,
        })),
        Code::FailedPrecondition,
        "no_identity",
    );
    expect_cli(&alice, &["send", "--to", &b_key, "hi"], "no_identity", 1);
    expect_status(
        "CreateGroup without identity",
        rt.block_on(c.conversations.create_group(pb::CreateGroupRequest {
            name: "team".into(),
            members: vec![b_key.clone()],
        })),
        Code::FailedPrecondition,
        "no_identity",
    );
    // Human output: `error: <code>: <message>` on stderr, nothing on stdout.
    let human = std::process::Command::new(jasper_binary())
        .arg("--socket")
        .arg(&alice.socket)
        .args(["identity", "show"])
        .output()
        .unwrap();
    assert_eq!(human.status.code(), Some(1));
    assert!(human.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(
        stderr.starts_with("error: no_identity: "),
        "human error: {stderr:?}"
    );

    expect_status(
        "Import garbage",
        rt.block_on(c.identity.import(pb::ImportIdentityRequest {
            pkcs8_pem: "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n".into(),
        })),
        Code::InvalidArgument,
        "invalid_key",
    );
    let garbage = alice.jasper_with_stdin(&["identity", "import", "-"], Some("not a key"));
    assert_eq!(garbage.code(), 2, "{garbage:?}");
    assert_eq!(garbage.error()["code"], "invalid_key");
    expect_cli(
        &alice,
        &["identity", "import", "/nonexistent/key.pem"],
        "invalid_argument",
        2,
    );

    // ---- with an identity ---------------------------------------------------------------
    let a_key = alice.create_identity();
    expect_status(
        "Create twice",
        rt.block_on(c.identity.create(pb::CreateIdentityRequest {})),
        Code::AlreadyExists,
        "identity_exists",
    );
    expect_cli(&alice, &["identity", "create"], "identity_exists", 1);
    let bob_pem = bob.ok(&["identity", "export"])["pkcs8_pem"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_status(
        "Import another key",
        rt.block_on(c.identity.import(pb::ImportIdentityRequest {
            pkcs8_pem: bob_pem.clone(),
        })),
        Code::AlreadyExists,
        "identity_exists",
    );
    let other = alice.jasper_with_stdin(&["identity", "import"], Some(&bob_pem));
    assert_eq!(other.code(), 1, "{other:?}");
    assert_eq!(other.error()["code"], "identity_exists");

    // Contacts.
    expect_status(
        "Add malformed key",
        rt.block_on(c.contacts.add(pb::AddContactRequest {
            key: "not-a-key".into(),
            name: "x".into(),
            avatar: None,
        })),
        Code::InvalidArgument,
        "invalid_key",
    );
    expect_cli(
        &alice,
        &["contact", "add", "not-a-key", "--name", "x"],
        "invalid_key",
        2,
    );
    expect_status(
        "Add with an empty name",
        rt.block_on(c.contacts.add(pb::AddContactRequest {
            key: b_key.clone(),
            name: " ".into(),
            avatar: None,
        })),
        Code::InvalidArgument,
        "invalid_argument",
    );
    expect_cli(
        &alice,
        &["contact", "add", &b_key, "--name", ""],
        "invalid_argument",
        2,
    );
    befriend(&alice, "alice", &bob, "bob");
    expect_status(
        "Add a second key under a taken name",
        rt.block_on(c.contacts.add(pb::AddContactRequest {
            key: a_key.clone(),
            name: "bob".into(),
            avatar: None,
        })),
        Code::AlreadyExists,
        "name_taken",
    );
    expect_cli(
        &alice,
        &["contact", "add", &a_key, "--name", "bob"],
        "name_taken",
        1,
    );

    // Sending.
    expect_status(
        "Send to an unknown name",
        rt.block_on(c.messages.send(pb::SendMessageRequest {
            to: "nobody".into(),
            text: "hi".into(),
            attach: None,
        })),
        Code::NotFound,
        "unknown_conversation",
    );
    expect_cli(
        &alice,
        &["send", "--to", "nobody", "hi"],
        "unknown_conversation",
        1,
    );
    let too_big = "x".repeat(48 * 1024 + 1);
    expect_status(
        "Send oversize",
        rt.block_on(c.messages.send(pb::SendMessageRequest {
            to: "bob".into(),
            text: too_big.clone(),
            attach: None,
        })),
        Code::InvalidArgument,
        "message_too_large",
    );
    expect_cli(
        &alice,
        &["send", "--to", "bob", &too_big],
        "message_too_large",
        2,
    );
    expect_status(
        "Send empty",
        rt.block_on(c.messages.send(pb::SendMessageRequest {
            to: "bob".into(),
            text: String::new(),
            attach: None,
        })),
        Code::InvalidArgument,
        "invalid_argument",
    );
    expect_cli(&alice, &["send", "--to", "bob", ""], "invalid_argument", 2);
    expect_status(
        "Send to one's own key",
        rt.block_on(c.messages.send(pb::SendMessageRequest {
            to: a_key.clone(),
            text: "me".into(),
            attach: None,
        })),
        Code::InvalidArgument,
        "invalid_argument",
    );

    // Messages that do not exist.
    let ghost = "00000000-0000-4000-8000-000000000000";
    expect_status(
        "Edit unknown",
        rt.block_on(c.messages.edit(pb::EditMessageRequest {
            id: ghost.into(),
            text: "x".into(),
        })),
        Code::NotFound,
        "unknown_message",
    );
    expect_cli(&alice, &["edit", ghost, "x"], "unknown_message", 1);
    expect_status(
        "Delete unknown",
        rt.block_on(
            c.messages
                .delete(pb::DeleteMessageRequest { id: ghost.into() }),
        ),
        Code::NotFound,
        "unknown_message",
    );
    expect_cli(&alice, &["delete", ghost], "unknown_message", 1);
    expect_status(
        "React unknown",
        rt.block_on(c.messages.react(pb::ReactRequest {
            id: ghost.into(),
            reaction: ":ok:".into(),
        })),
        Code::NotFound,
        "unknown_message",
    );
    expect_cli(&alice, &["react", ghost, ":ok:"], "unknown_message", 1);
    expect_status(
        "Routes unknown",
        rt.block_on(
            c.messages
                .routes(pb::MessageRoutesRequest { id: ghost.into() }),
        ),
        Code::NotFound,
        "unknown_message",
    );
    expect_cli(&alice, &["routes", ghost], "unknown_message", 1);

    // Bad edits and reactions on a real message.
    let mine = alice.ok(&["send", "--to", "bob", "mine"]);
    let mine = mine["id"].as_str().unwrap();
    expect_status(
        "Edit oversize",
        rt.block_on(c.messages.edit(pb::EditMessageRequest {
            id: mine.into(),
            text: too_big.clone(),
        })),
        Code::InvalidArgument,
        "message_too_large",
    );
    expect_cli(&alice, &["edit", mine, &too_big], "message_too_large", 2);
    expect_status(
        "Edit to empty",
        rt.block_on(c.messages.edit(pb::EditMessageRequest {
            id: mine.into(),
            text: String::new(),
        })),
        Code::InvalidArgument,
        "invalid_argument",
    );
    expect_status(
        "React without colons",
        rt.block_on(c.messages.react(pb::ReactRequest {
            id: mine.into(),
            reaction: "smile".into(),
        })),
        Code::InvalidArgument,
        "invalid_argument",
    );
    expect_cli(&alice, &["react", mine, "smile"], "invalid_argument", 2);

    // History.
    expect_status(
        "List an unknown conversation",
        rt.block_on(c.messages.list(pb::ListMessagesRequest {
            with: "nobody".into(),
            before: None,
            limit: 10,
        })),
        Code::NotFound,
        "unknown_conversation",
    );
    expect_cli(
        &alice,
        &["messages", "--with", "nobody"],
        "unknown_conversation",
        1,
    );
    expect_status(
        "List with a bad cursor",
        rt.block_on(c.messages.list(pb::ListMessagesRequest {
            with: "bob".into(),
            before: Some("not a cursor".into()),
            limit: 10,
        })),
        Code::InvalidArgument,
        "invalid_argument",
    );
    expect_cli(
        &alice,
        &["messages", "--with", "bob", "--before", "not a cursor"],
        "invalid_argument",
        2,
    );

    // Conversations and groups.
    expect_status(
        "Get unknown",
        rt.block_on(c.conversations.get(pb::GetConversationRequest {
            target: "nobody".into(),
        })),
        Code::NotFound,
        "unknown_conversation",
    );
    expect_status(
        "MarkRead unknown",
        rt.block_on(c.conversations.mark_read(pb::MarkReadRequest {
            target: "nobody".into(),
            through: None,
        })),
        Code::NotFound,
        "unknown_conversation",
    );
    expect_cli(&alice, &["read", "nobody"], "unknown_conversation", 1);
    expect_status(
        "MarkRead without a target",
        rt.block_on(c.conversations.mark_read(pb::MarkReadRequest {
            target: String::new(),
            through: None,
        })),
        Code::InvalidArgument,
        "invalid_argument",
    );
    expect_status(
        "MarkRead through an unknown message",
        rt.block_on(c.conversations.mark_read(pb::MarkReadRequest {
            target: "bob".into(),
            through: Some("no-such-message".into()),
        })),
        Code::NotFound,
        "unknown_message",
    );
    expect_cli(
        &alice,
        &["read", "bob", "--through", "no-such-message"],
        "unknown_message",
        1,
    );
    expect_status(
        "SendToGroup unknown",
        rt.block_on(c.conversations.send_to_group(pb::SendToGroupRequest {
            group: "nobody".into(),
            text: "hi".into(),
        })),
        Code::NotFound,
        "unknown_conversation",
    );
    expect_status(
        "SendToGroup to a contact",
        rt.block_on(c.conversations.send_to_group(pb::SendToGroupRequest {
            group: "bob".into(),
            text: "hi".into(),
        })),
        Code::InvalidArgument,
        "invalid_argument",
    );
    expect_cli(
        &alice,
        &["group", "send", "nobody", "hi"],
        "unknown_conversation",
        1,
    );
    expect_cli(
        &alice,
        &["group", "send", "bob", "hi"],
        "invalid_argument",
        2,
    );
    expect_status(
        "CreateGroup with an unknown member",
        rt.block_on(c.conversations.create_group(pb::CreateGroupRequest {
            name: "team".into(),
            members: vec!["nobody".into()],
        })),
        Code::NotFound,
        "unknown_contact",
    );
    expect_cli(
        &alice,
        &["group", "create", "team", "--member", "nobody"],
        "unknown_contact",
        1,
    );
    let long_garbage = "k".repeat(300);
    expect_status(
        "CreateGroup with a malformed key",
        rt.block_on(c.conversations.create_group(pb::CreateGroupRequest {
            name: "team".into(),
            members: vec![long_garbage.clone()],
        })),
        Code::InvalidArgument,
        "invalid_key",
    );
    expect_cli(
        &alice,
        &["group", "create", "team", "--member", &long_garbage],
        "invalid_key",
        2,
    );
    expect_status(
        "CreateGroup without a name",
        rt.block_on(c.conversations.create_group(pb::CreateGroupRequest {
            name: String::new(),
            members: vec!["bob".into()],
        })),
        Code::InvalidArgument,
        "invalid_argument",
    );
    expect_status(
        "AddMembers to an unknown group",
        rt.block_on(c.conversations.add_members(pb::AddMembersRequest {
            group: "nobody".into(),
            members: vec!["bob".into()],
        })),
        Code::NotFound,
        "unknown_conversation",
    );
    expect_cli(
        &alice,
        &["group", "add", "nobody", "--member", "bob"],
        "unknown_conversation",
        1,
    );
    expect_status(
        "AddMembers to a direct conversation",
        rt.block_on(c.conversations.add_members(pb::AddMembersRequest {
            group: "bob".into(),
            members: vec!["bob".into()],
        })),
        Code::InvalidArgument,
        "invalid_argument",
    );
    expect_status(
        "RemoveMembers from an unknown group",
        rt.block_on(c.conversations.remove_members(pb::RemoveMembersRequest {
            group: "nobody".into(),
            members: vec!["bob".into()],
        })),
        Code::NotFound,
        "unknown_conversation",
    );
    expect_cli(
        &alice,
        &["group", "remove", "nobody", "--member", "bob"],
        "unknown_conversation",
        1,
    );

    // Relays.
    expect_status(
        "Add a malformed relay",
        rt.block_on(c.relays.add(pb::AddRelayRequest {
            address: "not an address".into(),
        })),
        Code::InvalidArgument,
        "invalid_argument",
    );
    expect_cli(
        &alice,
        &["relays", "add", "not an address"],
        "invalid_argument",
        2,
    );
    expect_status(
        "Remove an unknown relay",
        rt.block_on(c.relays.remove(pb::RemoveRelayRequest {
            address: "127.0.0.1:1".into(),
        })),
        Code::NotFound,
        "unknown_relay",
    );
    expect_cli(
        &alice,
        &["relays", "remove", "127.0.0.1:1"],
        "unknown_relay",
        1,
    );

    // Only the author may edit or delete: bob's message, received by alice.
    let theirs = bob.ok(&["send", "--to", "alice", "theirs"]);
    let theirs = theirs["id"].as_str().unwrap().to_owned();
    alice.wait_for_message("bob", &theirs, Duration::from_secs(45));
    expect_status(
        "Edit someone else's message",
        rt.block_on(c.messages.edit(pb::EditMessageRequest {
            id: theirs.clone(),
            text: "forged".into(),
        })),
        Code::PermissionDenied,
        "not_author",
    );
    expect_cli(&alice, &["edit", &theirs, "forged"], "not_author", 1);
    expect_status(
        "Delete someone else's message",
        rt.block_on(
            c.messages
                .delete(pb::DeleteMessageRequest { id: theirs.clone() }),
        ),
        Code::PermissionDenied,
        "not_author",
    );
    expect_cli(&alice, &["delete", &theirs], "not_author", 1);
    // Reacting to it is fine.
    let reacted = alice.ok(&["react", &theirs, ":thumbsup:"]);
    assert_eq!(reacted["reactions"][0]["reaction"], ":thumbsup:");
}
