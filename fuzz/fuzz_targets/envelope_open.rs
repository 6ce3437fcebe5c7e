//! `open`, the recipient's side of the envelope, on packets from outside: whole packets as
//! JSON, and packets built around arbitrary envelope bytes with a right hash and the right
//! recipient (so that the input reaches the private-key step and everything after it). It must
//! refuse what is not a sealed message for us, never panic; a message sealed for us opens.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use jasper_core::protocol::Packet;
use libfuzzer_sys::fuzz_target;

fn key() -> &'static jasper_core::PrivateKey {
    static K: OnceLock<jasper_core::PrivateKey> = OnceLock::new();
    K.get_or_init(|| jasper_core::PrivateKey::generate().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let me = key();
    if pick % 2 == 0 {
        if let Ok(packet) = serde_json::from_slice::<Packet>(rest) {
            let _ = jasper_core::open(me, &packet);
        }
        return;
    }
    // message envelope | 0xff 0xfe | signature envelope
    let split = rest
        .windows(2)
        .position(|w| w == [0xff, 0xfe])
        .unwrap_or(rest.len());
    let (message, signature) = (&rest[..split], rest.get(split + 2..).unwrap_or_default());
    let b64 = base64::engine::general_purpose::STANDARD;
    let message = b64.encode(message);
    let packet = Packet {
        recipient: me.public_key().to_text().to_owned(),
        hash: jasper_core::MessageHash::of_message(&message).to_string(),
        message,
        signature: b64.encode(signature),
        expires_at: None,
    };
    let _ = jasper_core::open(me, &packet);
});
