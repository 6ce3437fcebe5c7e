//! Rough timings of `seal` and `open` with the committed test keys, so the numbers quoted in
//! docs/protocol.md can be re-measured:
//!
//!     cargo run -p jasper-core --release --example envelope_timing
//!
//! (The dev profile also gives representative numbers: aws-lc is optimised there too.)

use std::time::{Duration, Instant};

use jasper_core::protocol::{InnerMessage, MessageKind};
use jasper_core::{PrivateKey, PublicKey, Result, open, seal};

const ALICE_PEM: &str = include_str!("../tests/vectors/alice.pem");
const BOB_PEM: &str = include_str!("../tests/vectors/bob.pem");

fn per_call(total: Duration, calls: u32) -> String {
    format!("{:.2} ms", total.as_secs_f64() * 1000.0 / f64::from(calls))
}

fn main() -> Result<()> {
    let alice = PrivateKey::from_pkcs8_pem(ALICE_PEM)?;
    let bob = PrivateKey::from_pkcs8_pem(BOB_PEM)?;
    let message = InnerMessage {
        sender: String::new(),
        channel_id: "1d6f0a52-3b7e-4a8c-9d21-6e5f4c3b2a10".into(),
        kind: MessageKind::Message,
        content: "a short chat message of about a hundred bytes, which is what most are like"
            .into(),
        id: "7a0c2e94-5b1d-4f36-8e7a-0c9b8d6f4e21".into(),
        timestamp: "2026-11-25T12:00:00Z".into(),
    };
    const ROUNDS: u32 = 200;

    let to_bob = [bob.public_key()];
    let start = Instant::now();
    let mut packets = Vec::new();
    for _ in 0..ROUNDS {
        packets.extend(seal(&alice, &to_bob, &message)?);
    }
    println!(
        "seal, 1 recipient:    {}",
        per_call(start.elapsed(), ROUNDS)
    );

    let start = Instant::now();
    for packet in &packets {
        open(&bob, packet)?;
    }
    println!(
        "open:                 {}",
        per_call(start.elapsed(), ROUNDS)
    );

    // A group: the signature is made once; each extra member costs one public-key OAEP.
    // Members other than Bob are his modulus with one byte changed: keys nobody holds, but
    // just as costly to encrypt to, and free to make.
    let der = bob.public_key().der().to_vec();
    let at = der.len() - 8;
    let mut group = vec![bob.public_key()];
    for i in 1..32u8 {
        let mut d = der.clone();
        d[at] = d[at].wrapping_add(i);
        group.push(PublicKey::from_der(&d)?);
    }
    let start = Instant::now();
    for _ in 0..20 {
        seal(&alice, &group, &message)?;
    }
    println!("seal, 32 recipients:  {}", per_call(start.elapsed(), 20));

    let start = Instant::now();
    let generated = 3;
    for _ in 0..generated {
        PrivateKey::generate()?;
    }
    println!(
        "generate RSA-4096:    {}",
        per_call(start.elapsed(), generated)
    );
    Ok(())
}
