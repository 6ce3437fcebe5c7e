//! The envelope through the public API only, as the daemon and the bindings use it: the
//! committed vector opens with the production (aws-lc-rs) code, packets round-trip, and every
//! class of bad packet fails with its own error. Padding: what `seal` pads to, that padded
//! packets open and authenticate their padding, and that the committed unpadded vector (a packet
//! as clients before padding made it) still opens.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use jasper_core::envelope::{
    MAX_INNER_JSON_LEN, MAX_MESSAGE_FIELD_LEN, MAX_PACKET_JSON_LEN, MAX_RECIPIENTS,
    MAX_SIGNATURE_FIELD_LEN, PADDING_BYTE, PADDING_CLASSES, padded_len,
};
use jasper_core::protocol::{InnerMessage, MessageKind, Packet, timestamp_now};
use jasper_core::{Error, MessageHash, PrivateKey, PublicKey, open, seal};

const ALICE_PEM: &str = include_str!("vectors/alice.pem");
const BOB_PEM: &str = include_str!("vectors/bob.pem");
const VECTOR_JSON: &str = include_str!("vectors/envelope-v1.json");
const PADDED_VECTOR_JSON: &str = include_str!("vectors/envelope-v1-padded.json");

fn alice() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::from_pkcs8_pem(ALICE_PEM).unwrap())
}

fn bob() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::from_pkcs8_pem(BOB_PEM).unwrap())
}

/// Generated once per run: exercises `PrivateKey::generate` and gives a third party.
fn carol() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate().unwrap())
}

fn message(content: &str) -> InnerMessage {
    InnerMessage {
        sender: String::new(),
        channel_id: "1d6f0a52-3b7e-4a8c-9d21-6e5f4c3b2a10".into(),
        kind: MessageKind::Message,
        content: content.into(),
        id: "7a0c2e94-5b1d-4f36-8e7a-0c9b8d6f4e21".into(),
        timestamp: "2026-11-25T12:00:00Z".into(),
    }
}

fn alice_to_bob() -> Packet {
    seal(alice(), &[bob().public_key()], &message("hi bob"))
        .unwrap()
        .remove(0)
}

/// Decodes `field`, lets `edit` change the bytes, re-encodes, and fixes up the hash so that the
/// packet gets past the public checks and the edit is caught where it should be.
fn edit_field(packet: &Packet, field: &str, edit: impl FnOnce(&mut Vec<u8>)) -> Packet {
    let mut p = packet.clone();
    let text = if field == "message" {
        &mut p.message
    } else {
        &mut p.signature
    };
    let mut bytes = STANDARD.decode(&*text).unwrap();
    edit(&mut bytes);
    *text = STANDARD.encode(bytes);
    p.hash = MessageHash::of_message(&p.message).to_string();
    p
}

/// Distinct, well-formed RSA-4096 public keys nobody holds: bob's modulus with one byte
/// changed (the last byte, which keeps it odd, and the exponent stay as they are).
fn unheld_keys(count: usize) -> Vec<PublicKey> {
    let der = bob().public_key().der().to_vec();
    let at = der.len() - 8;
    (0..count)
        .map(|i| {
            let mut d = der.clone();
            d[at] = d[at].wrapping_add(1 + i as u8);
            PublicKey::from_der(&d).unwrap()
        })
        .collect()
}

/// Length of `message(content)` as sealed by alice (sender filled in), before padding.
fn json_len(content: &str) -> usize {
    message(content).to_json().len() + alice().public_key().to_text().len()
}

/// A message whose inner JSON, as alice seals it, is exactly `len` bytes.
fn message_of_len(len: usize) -> InnerMessage {
    let message = message(&"x".repeat(len - json_len("")));
    assert_eq!(json_len(&message.content), len);
    message
}

/// The decoded `message` field's length: 529 + the plaintext length.
fn envelope_len(packet: &Packet) -> usize {
    STANDARD.decode(&packet.message).unwrap().len()
}

/// Checks that `raw_json` is `message`'s JSON followed by spaces up to its class.
fn assert_padded(raw_json: &[u8], message: &InnerMessage) {
    let json = message.to_json();
    assert_eq!(raw_json.len(), padded_len(json.len()));
    assert_eq!(raw_json[..json.len()], json[..]);
    assert!(raw_json[json.len()..].iter().all(|&b| b == PADDING_BYTE));
}

/// The committed vector was sealed without padding, as clients before padding did: it opens,
/// and `raw_json` is the JSON as sent, with nothing added.
#[test]
fn committed_vector_opens_with_the_production_code() {
    let v: serde_json::Value = serde_json::from_str(VECTOR_JSON).unwrap();
    let packet: Packet = serde_json::from_value(v["outputs"]["packet"].clone()).unwrap();
    let inner_json = v["inputs"]["inner_json"].as_str().unwrap();

    let opened = open(bob(), &packet).unwrap();
    assert_eq!(opened.sender, alice().public_key());
    assert_eq!(opened.raw_json, inner_json.as_bytes());
    assert_eq!(
        opened.message,
        InnerMessage::from_json(inner_json.as_bytes()).unwrap()
    );
    assert_eq!(
        opened.message.content,
        "Hello Bob! Ünïcödé ✓, \"quoted\"\nand a second line."
    );
    assert_eq!(opened.hash.to_string(), packet.hash);
    // Alice was in the signed set, but this packet was wrapped for Bob.
    assert_eq!(open(alice(), &packet), Err(Error::WrongRecipient));
}

#[test]
fn seal_then_open_round_trips_and_fills_in_the_sender() {
    let packet = alice_to_bob();
    assert_eq!(packet.recipient, bob().public_key().to_text());
    assert_eq!(packet.expires_at, None);
    let opened = open(bob(), &packet).unwrap();
    assert_eq!(opened.sender, alice().public_key());
    assert_eq!(opened.message.sender, alice().public_key().to_text());
    assert_eq!(
        opened.message,
        InnerMessage {
            sender: opened.message.sender.clone(),
            ..message("hi bob")
        }
    );
    assert_padded(&opened.raw_json, &opened.message);

    // An explicit, correct sender is kept; someone else's is refused.
    let mut explicit = message("again");
    explicit.sender = alice().public_key().to_text().to_owned();
    let p = seal(alice(), &[bob().public_key()], &explicit)
        .unwrap()
        .remove(0);
    assert_eq!(open(bob(), &p).unwrap().message, explicit);
    explicit.sender = bob().public_key().to_text().to_owned();
    assert_eq!(
        seal(alice(), &[bob().public_key()], &explicit),
        Err(Error::SenderMismatch)
    );
}

#[test]
fn sealing_the_same_message_twice_gives_unrelated_packets() {
    let (a, b) = (alice_to_bob(), alice_to_bob());
    assert_ne!(a.message, b.message);
    assert_ne!(a.signature, b.signature);
    assert_ne!(a.hash, b.hash);
}

#[test]
fn group_seal_gives_one_packet_per_distinct_recipient_and_each_opens() {
    let recipients = [
        bob().public_key(),
        carol().public_key(),
        alice().public_key(),
        bob().public_key(),
    ];
    let packets = seal(alice(), &recipients, &message("hello group")).unwrap();
    assert_eq!(packets.len(), 3, "the duplicate bob is dropped");
    for (key, packet) in [bob(), carol(), alice()].into_iter().zip(&packets) {
        assert_eq!(packet.recipient, key.public_key().to_text());
        let opened = open(key, packet).unwrap();
        assert_eq!(opened.sender, alice().public_key());
        assert_eq!(opened.message.content, "hello group");
    }
    // Each packet has its own content key: another member's signature field does not fit.
    let mut mixed = packets[0].clone();
    mixed.signature = packets[1].signature.clone();
    assert_eq!(open(bob(), &mixed), Err(Error::DecryptionFailed));
}

#[test]
fn seal_enforces_its_limits() {
    assert_eq!(
        seal(alice(), &[], &message("x")),
        Err(Error::EmptyField {
            field: "recipients"
        })
    );
    let too_many = unheld_keys(MAX_RECIPIENTS + 1);
    assert_eq!(
        seal(alice(), &too_many, &message("x")),
        Err(Error::TooManyRecipients {
            count: MAX_RECIPIENTS + 1,
            max: MAX_RECIPIENTS
        })
    );
    let huge = message(&"x".repeat(MAX_INNER_JSON_LEN));
    assert!(matches!(
        seal(alice(), &[bob().public_key()], &huge),
        Err(Error::FieldTooLong {
            field: "message",
            max: MAX_INNER_JSON_LEN,
            ..
        })
    ));
}

#[test]
fn largest_packet_fits_the_documented_bounds_and_opens() {
    // Inner JSON of exactly the limit, to the most recipients: the worst case for size.
    let base = message("").to_json().len() + alice().public_key().to_text().len();
    let biggest = message(&"x".repeat(MAX_INNER_JSON_LEN - base));
    let mut recipients = unheld_keys(MAX_RECIPIENTS - 1);
    recipients.insert(0, bob().public_key());
    let packets = seal(alice(), &recipients, &biggest).unwrap();
    assert_eq!(packets.len(), MAX_RECIPIENTS);
    let p = &packets[0];
    assert_eq!(p.message.len(), MAX_MESSAGE_FIELD_LEN);
    assert_eq!(p.signature.len(), MAX_SIGNATURE_FIELD_LEN);
    let body = serde_json::to_string(&Packet {
        expires_at: Some(u64::MAX),
        ..p.clone()
    })
    .unwrap();
    assert!(
        body.len() <= MAX_PACKET_JSON_LEN,
        "{} > {MAX_PACKET_JSON_LEN}",
        body.len()
    );
    assert_eq!(open(bob(), p).unwrap().raw_json.len(), MAX_INNER_JSON_LEN);
}

#[test]
fn tampered_message_byte_fails_decryption() {
    let packet = alice_to_bob();
    for at in [600, 1 + 512 + 3] {
        let bad = edit_field(&packet, "message", |b| b[at] ^= 0x01);
        assert_eq!(open(bob(), &bad), Err(Error::DecryptionFailed), "byte {at}");
    }
    // The last byte is in the GCM tag.
    let bad = edit_field(&packet, "message", |b| *b.last_mut().unwrap() ^= 0x80);
    assert_eq!(open(bob(), &bad), Err(Error::DecryptionFailed));
}

#[test]
fn tampered_wrapped_key_fails_decryption() {
    let packet = alice_to_bob();
    let bad = edit_field(&packet, "message", |b| b[40] ^= 0x01);
    assert_eq!(open(bob(), &bad), Err(Error::DecryptionFailed));
}

#[test]
fn tampered_signature_byte_fails_decryption() {
    let packet = alice_to_bob();
    for at in [1, 300, 530] {
        let bad = edit_field(&packet, "signature", |b| b[at] ^= 0x01);
        assert_eq!(open(bob(), &bad), Err(Error::DecryptionFailed), "byte {at}");
    }
}

#[test]
fn wrong_recipient_key_is_refused() {
    let packet = alice_to_bob();
    assert_eq!(open(carol(), &packet), Err(Error::WrongRecipient));
    // Relabelling the packet does not help: the content key was wrapped for Bob.
    let relabelled = Packet {
        recipient: carol().public_key().to_text().to_owned(),
        ..packet
    };
    assert_eq!(open(carol(), &relabelled), Err(Error::DecryptionFailed));
}

#[test]
fn hash_mismatch_and_invalid_hash_are_refused() {
    let packet = alice_to_bob();
    let other = Packet {
        hash: MessageHash::of_message("other").to_string(),
        ..packet.clone()
    };
    assert!(matches!(
        open(bob(), &other),
        Err(Error::HashMismatch { .. })
    ));
    let garbage = Packet {
        hash: "not a hash".into(),
        ..packet.clone()
    };
    assert_eq!(
        open(bob(), &garbage),
        Err(Error::InvalidHash { field: "hash" })
    );
    // A changed message with the old hash is caught before any decryption.
    let edited = Packet {
        message: format!("AAAA{}", packet.message),
        ..packet
    };
    assert!(matches!(
        open(bob(), &edited),
        Err(Error::HashMismatch { .. })
    ));
}

#[test]
fn truncated_envelopes_are_malformed() {
    let packet = alice_to_bob();
    for keep in [0, 1, 100, 1 + 512, 1 + 512 + 15] {
        let short = edit_field(&packet, "message", |b| b.truncate(keep));
        assert!(
            matches!(open(bob(), &short), Err(Error::MalformedEnvelope(_))),
            "message cut to {keep}: {:?}",
            open(bob(), &short)
        );
    }
    for keep in [0, 1, 16] {
        let short = edit_field(&packet, "signature", |b| b.truncate(keep));
        assert!(
            matches!(open(bob(), &short), Err(Error::MalformedEnvelope(_))),
            "cut to {keep}"
        );
    }
    // Cut short but still long enough to be an envelope: the GCM tag no longer matches.
    let short = edit_field(&packet, "signature", |b| b.truncate(b.len() - 1));
    assert_eq!(open(bob(), &short), Err(Error::DecryptionFailed));
}

#[test]
fn unknown_versions_are_malformed() {
    let packet = alice_to_bob();
    for field in ["message", "signature"] {
        for version in [0x00, 0x02, 0xff] {
            let bad = edit_field(&packet, field, |b| b[0] = version);
            match open(bob(), &bad) {
                Err(Error::MalformedEnvelope(reason)) => {
                    assert!(reason.contains("unknown version"), "{reason}")
                }
                other => panic!("{field} version {version}: {other:?}"),
            }
        }
    }
}

#[test]
fn bad_base64_and_oversized_fields_are_refused_before_decoding() {
    let packet = alice_to_bob();
    let mut p = packet.clone();
    p.message = format!("{}!", &p.message[..p.message.len() - 1]);
    p.hash = MessageHash::of_message(&p.message).to_string();
    assert_eq!(
        open(bob(), &p),
        Err(Error::InvalidBase64 { field: "message" })
    );

    let url_safe = Packet {
        signature: packet.signature.replace('+', "-").replace('/', "_"),
        ..packet.clone()
    };
    if url_safe.signature != packet.signature {
        assert_eq!(
            open(bob(), &url_safe),
            Err(Error::InvalidBase64 { field: "signature" })
        );
    }

    let mut p = packet.clone();
    p.message = "A".repeat(MAX_MESSAGE_FIELD_LEN + 4);
    p.hash = MessageHash::of_message(&p.message).to_string();
    assert!(matches!(
        open(bob(), &p),
        Err(Error::FieldTooLong {
            field: "message",
            ..
        })
    ));
    let p = Packet {
        signature: "A".repeat(MAX_SIGNATURE_FIELD_LEN + 4),
        ..packet
    };
    assert!(matches!(
        open(bob(), &p),
        Err(Error::FieldTooLong {
            field: "signature",
            ..
        })
    ));
}

#[test]
fn private_key_generation_and_pem_export_round_trip() {
    let carol = carol();
    let pem = carol.to_pkcs8_pem();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(pem.ends_with("\n-----END PRIVATE KEY-----\n"));
    assert!(pem.lines().all(|l| l.len() <= 64));
    let again = PrivateKey::from_pkcs8_pem(&pem).unwrap();
    assert_eq!(again.public_key(), carol.public_key());
    assert_eq!(again.to_pkcs8_pem(), pem);
    // A packet sealed to the original opens with the re-imported key.
    let packet = seal(alice(), &[carol.public_key()], &message("to carol"))
        .unwrap()
        .remove(0);
    assert_eq!(open(&again, &packet).unwrap().message.content, "to carol");
}

#[test]
fn committed_padded_vector_opens_with_the_production_code() {
    let v: serde_json::Value = serde_json::from_str(PADDED_VECTOR_JSON).unwrap();
    let padding = &v["padding"];
    let classes: Vec<usize> = serde_json::from_value(padding["classes"].clone()).unwrap();
    assert_eq!(classes, PADDING_CLASSES);
    assert_eq!(padding["padding_byte_hex"], "20");
    let table = padding["padded_len"].as_array().unwrap();
    assert!(table.len() >= 2 * PADDING_CLASSES.len());
    for row in table {
        let len = row["len"].as_u64().unwrap() as usize;
        assert_eq!(
            row["padded_len"].as_u64().unwrap() as usize,
            padded_len(len),
            "{len}"
        );
    }

    let packet: Packet = serde_json::from_value(v["outputs"]["packet"].clone()).unwrap();
    let inner_json = v["inputs"]["inner_json"].as_str().unwrap().as_bytes();
    let plaintext_len = padding["plaintext_len"].as_u64().unwrap() as usize;
    assert_eq!(
        padding["inner_json_len"].as_u64().unwrap() as usize,
        inner_json.len()
    );
    assert_eq!(plaintext_len, padded_len(inner_json.len()));

    let opened = open(bob(), &packet).unwrap();
    assert_eq!(opened.sender, alice().public_key());
    let mut expected = inner_json.to_vec();
    expected.resize(plaintext_len, b' ');
    assert_eq!(opened.raw_json, expected);
    assert_eq!(opened.message, InnerMessage::from_json(inner_json).unwrap());
    assert_eq!(envelope_len(&packet), 529 + plaintext_len);
}

#[test]
fn seal_pads_to_the_class_at_every_boundary() {
    for (len, class) in [
        (json_len(""), 4096),
        (4095, 4096),
        (4096, 4096),
        (4097, 8192),
        (8192, 8192),
        (8193, 16_384),
        (16_385, 32_768),
        (32_768, 32_768),
        (32_769, MAX_INNER_JSON_LEN),
        (MAX_INNER_JSON_LEN, MAX_INNER_JSON_LEN),
    ] {
        let m = message_of_len(len);
        let packet = seal(alice(), &[bob().public_key()], &m).unwrap().remove(0);
        assert_eq!(envelope_len(&packet), 529 + class, "inner JSON of {len}");
        let opened = open(bob(), &packet).unwrap();
        assert_eq!(opened.raw_json.len(), class, "inner JSON of {len}");
        assert_padded(&opened.raw_json, &opened.message);
        assert_eq!(opened.message.content, m.content);
    }
    // The limit still applies to the JSON before padding.
    let over = message_of_len(MAX_INNER_JSON_LEN + 1);
    assert_eq!(
        seal(alice(), &[bob().public_key()], &over),
        Err(Error::FieldTooLong {
            field: "message",
            len: MAX_INNER_JSON_LEN + 1,
            max: MAX_INNER_JSON_LEN
        })
    );
}

#[test]
fn messages_of_different_lengths_in_one_class_look_the_same() {
    let short = message("ok");
    let long = message(&"a longer message, still in the first class. ".repeat(60));
    assert!(json_len(&long.content) > json_len(&short.content) + 2500);
    let to = [bob().public_key(), carol().public_key()];
    let a = seal(alice(), &to, &short).unwrap();
    let b = seal(alice(), &to, &long).unwrap();
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(a.message.len(), b.message.len());
        assert_eq!(a.signature.len(), b.signature.len());
        assert_eq!(
            serde_json::to_string(a).unwrap().len(),
            serde_json::to_string(b).unwrap().len(),
            "whole packets differ in length"
        );
    }
}

#[test]
fn padding_in_the_ciphertext_is_authenticated() {
    let packet = alice_to_bob();
    let json_len = json_len("hi bob");
    // Ciphertext bytes over the padding: the first, one in the middle, the last.
    for at in [513 + json_len, 513 + 3000, 513 + PADDING_CLASSES[0] - 1] {
        let bad = edit_field(&packet, "message", |b| b[at] ^= 0x01);
        assert_eq!(open(bob(), &bad), Err(Error::DecryptionFailed), "byte {at}");
    }
    // Cutting the padding off (with the tag moved along) fails too.
    let cut = edit_field(&packet, "message", |b| {
        let tag = b.split_off(b.len() - 16);
        b.truncate(513 + json_len);
        b.extend_from_slice(&tag);
    });
    assert_eq!(open(bob(), &cut), Err(Error::DecryptionFailed));
}

/// Typical inner messages, built the way the engine builds them (its `SentCopy`, RTC
/// `SignalEnvelope`; the engine is not a dependency of core, so their JSON shapes are written
/// out here): all in the smallest class. `--nocapture` prints the measured sizes.
#[test]
fn typical_messages_share_the_smallest_class() {
    let me = alice().public_key().to_text().to_owned();
    let peer = bob().public_key().to_text().to_owned();
    let inner = |channel: &str, kind: MessageKind, content: String| InnerMessage {
        sender: me.clone(),
        channel_id: channel.into(),
        kind,
        content,
        id: uuid::Uuid::new_v4().to_string(),
        timestamp: timestamp_now(),
    };
    let channel = uuid::Uuid::new_v4().to_string();
    let dm = inner(
        &channel,
        MessageKind::Message,
        "a short chat message of about a hundred bytes, which is what most are like".into(),
    );
    let dm_100 = inner(&channel, MessageKind::Message, "x".repeat(100));
    let reaction = inner(&channel, MessageKind::React, ":thumbsup:".into());
    let signal = |body: serde_json::Value| {
        let mut content = serde_json::json!({"v": 1, "expires_at": 1_764_635_340_123_i64});
        content
            .as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        inner("", MessageKind::Other("RTC".into()), content.to_string())
    };
    let consent =
        signal(serde_json::json!({"type": "consent", "enabled": true, "yours_known": true}));
    let reconnect = signal(serde_json::json!({"type": "reconnect"}));
    let sent = |to: Vec<&str>, m: &InnerMessage| {
        let content = serde_json::json!({"to": to, "message": m}).to_string();
        inner(&channel, MessageKind::Other("SENT".into()), content)
    };
    let sent_dm = sent(vec![&peer], &dm);
    let sent_reaction = sent(vec![&peer], &reaction);
    let group_add = inner(
        &channel,
        MessageKind::Other("GROUP".into()),
        serde_json::json!({"op": "add", "name": "family", "members": [peer]}).to_string(),
    );
    let members = [me.as_str(), &peer, &peer, &peer];
    let group_create = inner(
        &channel,
        MessageKind::Other("GROUP".into()),
        serde_json::json!({"op": "create", "name": "family", "members": members}).to_string(),
    );
    for (what, m) in [
        ("DM, 73-byte text", &dm),
        ("DM, 100-byte text", &dm_100),
        ("reaction", &reaction),
        ("RTC consent", &consent),
        ("RTC reconnect", &reconnect),
        ("SENT copy of the DM", &sent_dm),
        ("SENT copy of the reaction", &sent_reaction),
        ("GROUP add of one member", &group_add),
        ("GROUP create of a group of four", &group_create),
    ] {
        let len = m.to_json().len();
        let packet = seal(alice(), &[bob().public_key()], m).unwrap().remove(0);
        let body = serde_json::to_string(&packet).unwrap().len();
        println!(
            "{what}: inner JSON {len} bytes, padded {}, message field {} chars, packet {body} bytes",
            padded_len(len),
            packet.message.len()
        );
        assert_eq!(padded_len(len), PADDING_CLASSES[0], "{what}: {len} bytes");
    }
}
