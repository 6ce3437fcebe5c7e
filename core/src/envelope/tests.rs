//! Envelope tests that need the deterministic building blocks: the committed test vector,
//! reproduced byte for byte from fixed inputs, and hand-built forgeries that `seal` refuses to
//! make (a signature by the wrong key, a forwarded packet, malformed signature plaintexts).
//!
//! aws-lc-rs takes no injected randomness, so the vector's two randomised RSA steps (the OAEP
//! seed, the PSS salt) are reproduced here with the RustCrypto `rsa` crate, a dev-dependency
//! only. Everything else runs through the library's own code.

use std::sync::OnceLock;

use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::rand_core::{CryptoRng, RngCore};
use rsa::signature::{RandomizedSigner, SignatureEncoding};
use serde::{Deserialize, Serialize};

use super::*;
use crate::protocol::MessageKind;

const ALICE_PEM: &str = include_str!("../../tests/vectors/alice.pem");
const BOB_PEM: &str = include_str!("../../tests/vectors/bob.pem");
/// Where `JASPER_WRITE_VECTORS=1` writes the vector.
const VECTOR_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/envelope-v1.json"
);
/// The committed vector, compiled in: the test never depends on where the build happened.
const COMMITTED_VECTOR: &str = include_str!("../../tests/vectors/envelope-v1.json");
/// Set to 1 to rewrite the committed vector from the fixed inputs below (then review the diff).
const WRITE_ENV: &str = "JASPER_WRITE_VECTORS";

fn alice() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::from_pkcs8_pem(ALICE_PEM).expect("alice.pem parses"))
}

fn bob() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::from_pkcs8_pem(BOB_PEM).expect("bob.pem parses"))
}

/// A third party, generated once per test run (RSA-4096 generation takes a second or more).
fn carol() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate().expect("key generation"))
}

/// An `rsa` RNG that hands out exactly the injected bytes and panics if asked for more, so
/// the test also proves the crate drew only the OAEP seed or the PSS salt from it.
struct InjectedRandomness {
    bytes: Vec<u8>,
    pos: usize,
}

impl InjectedRandomness {
    fn new(bytes: &[u8]) -> Self {
        Self {
            bytes: bytes.to_vec(),
            pos: 0,
        }
    }

    fn assert_used_up(&self) {
        assert_eq!(
            self.pos,
            self.bytes.len(),
            "injected randomness not fully consumed"
        );
    }
}

impl RngCore for InjectedRandomness {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let end = self.pos + dest.len();
        assert!(
            end <= self.bytes.len(),
            "rsa asked for more randomness than was injected"
        );
        dest.copy_from_slice(&self.bytes[self.pos..end]);
        self.pos = end;
    }

    fn try_fill_bytes(
        &mut self,
        dest: &mut [u8],
    ) -> std::result::Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for InjectedRandomness {}

/// RSA-OAEP-SHA256 (MGF1-SHA256, empty label) with a given seed, by the `rsa` crate.
fn oaep_encrypt_with_seed(recipient: &PublicKey, k: &[u8], seed: &[u8; 32]) -> Vec<u8> {
    let key = rsa::RsaPublicKey::from_public_key_der(recipient.der()).unwrap();
    let mut rng = InjectedRandomness::new(seed);
    let out = key
        .encrypt(&mut rng, rsa::Oaep::new::<Sha256>(), k)
        .unwrap();
    rng.assert_used_up();
    out
}

/// RSA-PSS-SHA256 (MGF1-SHA256) with a given 32-byte salt, by the `rsa` crate.
fn pss_sign_with_salt(sender_pem: &str, msg: &[u8], salt: &[u8; 32]) -> Vec<u8> {
    // Without the `pem` feature of `rsa`: strip the armour and decode the base64 by hand.
    let body: String = sender_pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(body).unwrap();
    let key = rsa::RsaPrivateKey::from_pkcs8_der(&der).unwrap();
    let signer = rsa::pss::SigningKey::<Sha256>::new_with_salt_len(key, 32);
    let mut rng = InjectedRandomness::new(salt);
    let signature = signer.sign_with_rng(&mut rng, msg).to_vec();
    rng.assert_used_up();
    signature
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Vector {
    description: String,
    inputs: Inputs,
    intermediates: Intermediates,
    outputs: Outputs,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Inputs {
    /// PKCS#8 PEM file of the sender, beside the vector.
    sender_key_file: String,
    /// PKCS#8 PEM file of the recipient whose packet this is.
    recipient_key_file: String,
    /// Key files of every recipient the sender addressed (the signed set), in seal order.
    addressed_key_files: Vec<String>,
    /// The inner message JSON exactly as sealed (UTF-8).
    inner_json: String,
    content_key_hex: String,
    oaep_seed_hex: String,
    pss_salt_hex: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Intermediates {
    sender_public_key: String,
    recipient_public_key: String,
    inner_json_sha256_hex: String,
    /// SHA-256 of each addressed key's DER, sorted ascending.
    recipient_set_hex: Vec<String>,
    signed_bytes_hex: String,
    signature_hex: String,
    wrapped_key_hex: String,
    k_msg_hex: String,
    n_msg_hex: String,
    k_sig_hex: String,
    n_sig_hex: String,
    message_aad_hex: String,
    signature_aad_hex: String,
    signature_plaintext_hex: String,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Outputs {
    packet: Packet,
}

fn vector_message() -> InnerMessage {
    InnerMessage {
        sender: alice().public_key().to_text().to_owned(),
        channel_id: "5f0c6a2e-8d3b-4c1a-9e7f-2b4d6a8c0e13".into(),
        kind: MessageKind::Message,
        // Non-ASCII, a quote and a newline pin the JSON escaping rules too.
        content: "Hello Bob! Ünïcödé ✓, \"quoted\"\nand a second line.".into(),
        id: "0b9e2d55-6a61-4f0e-8a7c-3c1d2e4f5a6b".into(),
        timestamp: "2026-11-25T12:00:00Z".into(),
    }
}

/// Fixed, recognisable "randomness": 0x00..0x1f, 0x20..0x3f, 0x40..0x5f.
fn counting_bytes(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start + i as u8)
}

/// Builds the whole vector from the fixed inputs: the library's deterministic steps plus the
/// two randomised RSA steps done by the `rsa` crate with injected bytes.
fn build_vector() -> Vector {
    let (alice, bob) = (alice(), bob());
    let k = counting_bytes(0x00);
    let oaep_seed = counting_bytes(0x20);
    let pss_salt = counting_bytes(0x40);
    let inner_json = vector_message().to_json();
    let addressed = [bob.public_key(), alice.public_key()];
    let set = recipient_set(addressed.iter());
    let signed = signed_bytes(&inner_json, &set);

    let signature = pss_sign_with_salt(ALICE_PEM, &signed, &pss_salt);
    // The production verifier must accept what the reference signer made.
    verify(&alice.public_key(), &signed, &signature).expect("aws-lc verifies the rsa signature");
    let wrapped = oaep_encrypt_with_seed(&bob.public_key(), &k, &oaep_seed);
    // And the production decrypter must recover K from the reference ciphertext.
    assert_eq!(*unwrap_content_key(bob, &wrapped).unwrap(), k);

    let keys = derive_keys(&k).unwrap();
    let packet = assemble_packet(
        &bob.public_key(),
        &k,
        &wrapped,
        &inner_json,
        &signature,
        &set,
    )
    .unwrap();

    Vector {
        description: "Jasper envelope v1: alice seals one message to {bob, alice} (one \
                      signature); this is bob's packet. Keys are test-only. Regenerate with \
                      JASPER_WRITE_VECTORS=1 cargo test -p jasper-core envelope_vector."
            .into(),
        inputs: Inputs {
            sender_key_file: "alice.pem".into(),
            recipient_key_file: "bob.pem".into(),
            addressed_key_files: vec!["bob.pem".into(), "alice.pem".into()],
            inner_json: String::from_utf8(inner_json.clone()).unwrap(),
            content_key_hex: hex::encode(k),
            oaep_seed_hex: hex::encode(oaep_seed),
            pss_salt_hex: hex::encode(pss_salt),
        },
        intermediates: Intermediates {
            sender_public_key: alice.public_key().to_text().to_owned(),
            recipient_public_key: bob.public_key().to_text().to_owned(),
            inner_json_sha256_hex: hex::encode(Sha256::digest(&inner_json)),
            recipient_set_hex: set.iter().map(hex::encode).collect(),
            signed_bytes_hex: hex::encode(&signed),
            signature_hex: hex::encode(&signature),
            wrapped_key_hex: hex::encode(&wrapped),
            k_msg_hex: hex::encode(keys.message.key.as_slice()),
            n_msg_hex: hex::encode(keys.message.nonce),
            k_sig_hex: hex::encode(keys.signature.key.as_slice()),
            n_sig_hex: hex::encode(keys.signature.nonce),
            message_aad_hex: hex::encode(message_aad()),
            signature_aad_hex: hex::encode(signature_aad()),
            signature_plaintext_hex: hex::encode(signature_plaintext(&signature, &set)),
        },
        outputs: Outputs { packet },
    }
}

#[test]
fn envelope_vector_is_reproduced_byte_for_byte() {
    let built = build_vector();
    if std::env::var(WRITE_ENV).is_ok_and(|v| v == "1") {
        let mut text = serde_json::to_string_pretty(&built).unwrap();
        text.push('\n');
        std::fs::write(VECTOR_PATH, text).unwrap();
    }
    let committed: Vector = serde_json::from_str(COMMITTED_VECTOR)
        .unwrap_or_else(|e| panic!("{VECTOR_PATH}: {e}; run with {WRITE_ENV}=1 to rewrite it"));
    // Field by field first, for a readable failure; then the whole.
    assert_eq!(built.inputs, committed.inputs);
    assert_eq!(built.intermediates, committed.intermediates);
    assert_eq!(built.outputs, committed.outputs);
    assert_eq!(built, committed);
}

#[test]
fn vector_signature_plaintext_and_envelopes_have_the_documented_layout() {
    let v = build_vector();
    let i = &v.intermediates;
    let signed = hex::decode(&i.signed_bytes_hex).unwrap();
    assert_eq!(&signed[..16], b"jasper/1 signed\0");
    assert_eq!(hex::encode(&signed[16..48]), i.inner_json_sha256_hex);
    assert_eq!(signed[48..52], [0, 0, 0, 2]);
    assert_eq!(hex::encode(&signed[52..84]), i.recipient_set_hex[0]);
    assert_eq!(hex::encode(&signed[84..]), i.recipient_set_hex[1]);
    assert!(i.recipient_set_hex[0] < i.recipient_set_hex[1]);

    let plain = hex::decode(&i.signature_plaintext_hex).unwrap();
    assert_eq!(plain.len(), 2 + 512 + 4 + 64);
    assert_eq!(plain[..2], [0x02, 0x00]);
    assert_eq!(hex::encode(&plain[2..514]), i.signature_hex);
    assert_eq!(plain[514..], signed[48..]);

    let message = STANDARD.decode(&v.outputs.packet.message).unwrap();
    assert_eq!(message[0], 0x01);
    assert_eq!(hex::encode(&message[1..513]), i.wrapped_key_hex);
    assert_eq!(message.len(), 1 + 512 + v.inputs.inner_json.len() + 16);
    let signature = STANDARD.decode(&v.outputs.packet.signature).unwrap();
    assert_eq!(signature[0], 0x01);
    assert_eq!(signature.len(), 1 + plain.len() + 16);
    assert_eq!(
        v.outputs.packet.hash,
        MessageHash::of_message(&v.outputs.packet.message).to_string()
    );
}

/// HMAC-SHA256 and HKDF (RFC 2104, RFC 5869) written out with `sha2`, as an independent
/// check of the aws-lc HKDF call (in particular what "empty salt" means).
fn reference_hkdf(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> Vec<u8> {
    fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new()
            .chain_update(&ipad)
            .chain_update(data)
            .finalize();
        Sha256::new()
            .chain_update(&opad)
            .chain_update(inner)
            .finalize()
            .into()
    }
    let salt = if salt.is_empty() {
        &[0u8; 32][..]
    } else {
        salt
    };
    let prk = hmac(salt, ikm);
    let mut okm = Vec::new();
    let mut t: Vec<u8> = Vec::new();
    for counter in 1u8.. {
        if okm.len() >= len {
            break;
        }
        t = hmac(&prk, &[&t[..], info, &[counter]].concat()).to_vec();
        okm.extend_from_slice(&t);
    }
    okm.truncate(len);
    okm
}

#[test]
fn hkdf_derivation_matches_rfc5869() {
    // RFC 5869 test case 3 (empty salt, empty info) validates the reference itself.
    let okm = reference_hkdf(&[], &[0x0b; 22], &[], 42);
    assert_eq!(
        hex::encode(okm),
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    );
    let k = counting_bytes(0x00);
    let keys = derive_keys(&k).unwrap();
    let msg = reference_hkdf(&[], &k, b"jasper/1 message", 44);
    let sig = reference_hkdf(&[], &k, b"jasper/1 signature", 44);
    assert_eq!(keys.message.key.as_slice(), &msg[..32]);
    assert_eq!(keys.message.nonce, msg[32..]);
    assert_eq!(keys.signature.key.as_slice(), &sig[..32]);
    assert_eq!(keys.signature.nonce, sig[32..]);
}

/// Hand-assembles a packet to `to` with a fresh K: lets a test put any inner JSON, signature
/// and recipient set into an otherwise well-formed envelope.
fn forge(to: &PublicKey, inner_json: &[u8], signature: &[u8], set: &[[u8; 32]]) -> Packet {
    let k = random_content_key().unwrap();
    let wrapped = wrap_content_key(to, &k).unwrap();
    assemble_packet(to, &k, &wrapped, inner_json, signature, set).unwrap()
}

/// What a recipient learns by opening: the signature and signed set (via the deterministic
/// pieces, since `Opened` deliberately does not hand out the signature).
fn signature_and_set(recipient: &PrivateKey, packet: &Packet) -> (Vec<u8>, Vec<[u8; 32]>) {
    let message_env = STANDARD.decode(&packet.message).unwrap();
    let signature_env = STANDARD.decode(&packet.signature).unwrap();
    let (wrapped, _) = split_message_envelope(&message_env).unwrap();
    let k = unwrap_content_key(recipient, wrapped).unwrap();
    let keys = derive_keys(&k).unwrap();
    let plain = aead_open(
        &keys.signature,
        &signature_aad(),
        split_signature_envelope(&signature_env).unwrap(),
    )
    .unwrap();
    let (signature, set) = parse_signature_plaintext(&plain).unwrap();
    (signature.to_vec(), set)
}

#[test]
fn group_seal_makes_one_signature_for_all_recipients() {
    let recipients = [
        bob().public_key(),
        carol().public_key(),
        alice().public_key(),
    ];
    let packets = seal(alice(), &recipients, &vector_message()).unwrap();
    assert_eq!(packets.len(), 3);
    let keys = [bob(), carol(), alice()];
    let opened: Vec<_> = keys
        .iter()
        .zip(&packets)
        .map(|(k, p)| signature_and_set(k, p))
        .collect();
    // Identical signature bytes in every packet: one private-key operation per message.
    assert!(opened.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(opened[0].1, recipient_set(recipients.iter()));
}

#[test]
fn forwarded_packet_is_not_addressed_to_the_new_recipient() {
    // Alice writes to Bob alone. Bob re-seals her exact JSON and signature to Carol.
    let packet = seal(alice(), &[bob().public_key()], &vector_message())
        .unwrap()
        .remove(0);
    let opened = open(bob(), &packet).unwrap();
    let (signature, set) = signature_and_set(bob(), &packet);

    let forwarded = forge(&carol().public_key(), &opened.raw_json, &signature, &set);
    assert_eq!(
        open(carol(), &forwarded),
        Err(Error::NotAddressedToRecipient)
    );

    // Claiming Carol was in the set instead breaks Alice's signature.
    let mut widened = set.clone();
    widened.push(carol().public_key().fingerprint());
    widened.sort_unstable();
    let forwarded = forge(
        &carol().public_key(),
        &opened.raw_json,
        &signature,
        &widened,
    );
    assert_eq!(open(carol(), &forwarded), Err(Error::BadSignature));
}

#[test]
fn signature_by_another_key_than_the_claimed_sender_is_rejected() {
    // The JSON says Alice sent it, but Bob signed it.
    let inner_json = vector_message().to_json();
    let set = recipient_set([carol().public_key()].iter());
    let bobs_signature = sign(bob(), &signed_bytes(&inner_json, &set)).unwrap();
    let packet = forge(&carol().public_key(), &inner_json, &bobs_signature, &set);
    assert_eq!(open(carol(), &packet), Err(Error::BadSignature));
}

#[test]
fn corrupted_signature_inside_a_valid_envelope_is_bad_signature() {
    let inner_json = vector_message().to_json();
    let set = recipient_set([bob().public_key()].iter());
    let mut signature = sign(alice(), &signed_bytes(&inner_json, &set)).unwrap();
    let good = forge(&bob().public_key(), &inner_json, &signature, &set);
    assert!(open(bob(), &good).is_ok());
    signature[100] ^= 0x01;
    let bad = forge(&bob().public_key(), &inner_json, &signature, &set);
    assert_eq!(open(bob(), &bad), Err(Error::BadSignature));
    // A signature over different JSON does not carry over either.
    let other_json = InnerMessage {
        content: "changed".into(),
        ..vector_message()
    }
    .to_json();
    signature[100] ^= 0x01;
    let swapped = forge(&bob().public_key(), &other_json, &signature, &set);
    assert_eq!(open(bob(), &swapped), Err(Error::BadSignature));
}

#[test]
fn authenticated_but_invalid_contents_are_rejected_precisely() {
    let to = bob().public_key();
    let set = recipient_set([to.clone()].iter());
    let sig = [0u8; 512];

    let not_json = forge(&to, b"not json", &sig, &set);
    assert!(matches!(
        open(bob(), &not_json),
        Err(Error::MalformedMessage(_))
    ));

    let bad_sender = InnerMessage {
        sender: "bm90IGEga2V5".into(),
        ..vector_message()
    };
    let packet = forge(&to, &bad_sender.to_json(), &sig, &set);
    assert!(matches!(
        open(bob(), &packet),
        Err(Error::InvalidPublicKey {
            field: "sender",
            ..
        })
    ));

    let unsorted = {
        let mut s = recipient_set([to.clone(), alice().public_key()].iter());
        s.reverse();
        s
    };
    let packet = forge(&to, &vector_message().to_json(), &sig, &unsorted);
    assert!(matches!(
        open(bob(), &packet),
        Err(Error::MalformedEnvelope(_))
    ));
}

#[test]
fn signature_plaintext_parser_rejects_every_malformation() {
    let set = recipient_set([alice().public_key(), bob().public_key()].iter());
    let good = signature_plaintext(&[7u8; 512], &set);
    let (sig, parsed) = parse_signature_plaintext(&good).unwrap();
    assert_eq!(sig, &[7u8; 512][..]);
    assert_eq!(parsed, set);

    let malformed = |bytes: &[u8]| {
        assert!(
            matches!(
                parse_signature_plaintext(bytes),
                Err(Error::MalformedEnvelope(_))
            ),
            "accepted {} bytes",
            bytes.len()
        )
    };
    malformed(&[]);
    malformed(&good[..1]);
    malformed(&good[..300]);
    malformed(&good[..516]);
    malformed(&good[..good.len() - 1]);
    malformed(&[&good[..], &[0]].concat());
    malformed(&signature_plaintext(&[7u8; 511], &set));
    malformed(&signature_plaintext(&[7u8; 512], &[]));
    malformed(&signature_plaintext(&[7u8; 512], &[set[0], set[0]]));
    malformed(&signature_plaintext(&[7u8; 512], &[set[1], set[0]]));
    malformed(&signature_plaintext(
        &[7u8; 512],
        &vec![[0u8; 32]; MAX_RECIPIENTS + 1],
    ));
}

#[test]
fn oaep_failure_goes_on_with_a_random_key() {
    // Implicit rejection: a bad wrapped key yields some K (not an early error)...
    let garbage = [0x5au8; 512];
    let k1 = unwrap_content_key(bob(), &garbage).unwrap();
    let k2 = unwrap_content_key(bob(), &garbage).unwrap();
    assert_ne!(*k1, *k2);
    // ...and wrong-length input the same way.
    assert!(unwrap_content_key(bob(), &garbage[..511]).is_ok());
}

#[test]
fn size_limits_fit_a_relay_body() {
    assert_eq!(MAX_MESSAGE_FIELD_LEN, 88_088);
    assert_eq!(MAX_SIGNATURE_FIELD_LEN, 6_176);
    assert_eq!(MAX_PACKET_JSON_LEN, 95_154);
}
