//! Envelope tests that need the deterministic building blocks: the committed test vector,
//! reproduced byte for byte from fixed inputs, and hand-built forgeries that `seal` refuses to
//! make (a signature by the wrong key, a forwarded packet, malformed signature plaintexts).
//! There are two committed vectors: `envelope-v1.json`, sealed without padding (as clients
//! before padding did, so it also pins that such packets still open), and
//! `envelope-v1-padded.json`, the same message padded as [`seal`] pads it now.
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
/// Where `JASPER_WRITE_VECTORS=1` writes the padding vector.
const PADDED_VECTOR_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/vectors/envelope-v1-padded.json"
);
/// The committed padding vector, compiled in.
const COMMITTED_PADDED_VECTOR: &str = include_str!("../../tests/vectors/envelope-v1-padded.json");
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

/// The padding vector: the padding rule as a table, then the envelope vector's message sealed
/// padded (same keys, same injected randomness). Its `inputs.inner_json` is the JSON before
/// padding; every intermediate from `inner_json_sha256_hex` on is over the padded plaintext.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PaddedVector {
    description: String,
    padding: Padding,
    inputs: Inputs,
    intermediates: Intermediates,
    outputs: Outputs,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Padding {
    /// The size classes, ascending, in bytes.
    classes: Vec<usize>,
    /// The byte the padding is made of.
    padding_byte_hex: String,
    /// `padded_len` at and around every class boundary.
    padded_len: Vec<PaddedLen>,
    /// Length of `inputs.inner_json` in bytes (UTF-8).
    inner_json_len: usize,
    /// Length of the sealed plaintext: the inner JSON and its padding.
    plaintext_len: usize,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PaddedLen {
    len: usize,
    padded_len: usize,
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
/// two randomised RSA steps done by the `rsa` crate with injected bytes. Sealed without
/// padding, the way clients before padding did (the committed vector predates padding).
fn build_vector() -> Vector {
    let inner_json = vector_message().to_json();
    build_vector_sealing(
        &inner_json,
        &inner_json,
        "Jasper envelope v1: alice seals one message to {bob, alice} (one \
         signature); this is bob's packet. Keys are test-only. Regenerate with \
         JASPER_WRITE_VECTORS=1 cargo test -p jasper-core envelope_vector.",
    )
}

/// Lengths the padding vector tabulates: 0 and 1, and each class, one less and one more (the
/// limit's "one more" is refused by `seal`, so it is not part of the rule).
fn padding_table_lengths() -> Vec<usize> {
    let mut lens = vec![0, 1];
    for class in PADDING_CLASSES {
        lens.extend([class - 1, class]);
        if class < MAX_INNER_JSON_LEN {
            lens.push(class + 1);
        }
    }
    lens
}

/// The padding vector: the table, and the envelope vector's message sealed padded, as `seal`
/// does it, with the same fixed inputs.
fn build_padded_vector() -> PaddedVector {
    let inner_json = vector_message().to_json();
    let plaintext = pad_inner_json(inner_json.clone());
    let v = build_vector_sealing(
        &inner_json,
        &plaintext,
        "Jasper envelope v1 with padding: the message of envelope-v1.json, padded with \
         spaces (0x20) to its size class and then sealed as there (same keys, K, OAEP seed \
         and PSS salt). inputs.inner_json is the JSON before padding; inner_json_sha256_hex, \
         the signed bytes and the ciphertext are over the padded plaintext. padding.padded_len \
         tabulates the rule. Keys are test-only. Regenerate with JASPER_WRITE_VECTORS=1 cargo \
         test -p jasper-core envelope_vector.",
    );
    PaddedVector {
        description: v.description,
        padding: Padding {
            classes: PADDING_CLASSES.to_vec(),
            padding_byte_hex: hex::encode([PADDING_BYTE]),
            padded_len: padding_table_lengths()
                .into_iter()
                .map(|len| PaddedLen {
                    len,
                    padded_len: padded_len(len),
                })
                .collect(),
            inner_json_len: inner_json.len(),
            plaintext_len: plaintext.len(),
        },
        inputs: v.inputs,
        intermediates: v.intermediates,
        outputs: v.outputs,
    }
}

/// The vector machinery: seals `plaintext` (the inner JSON `inner_json`, padded or not) from
/// alice to {bob, alice} with the fixed randomness, and records bob's packet.
fn build_vector_sealing(inner_json: &[u8], plaintext: &[u8], description: &str) -> Vector {
    let (alice, bob) = (alice(), bob());
    let k = counting_bytes(0x00);
    let oaep_seed = counting_bytes(0x20);
    let pss_salt = counting_bytes(0x40);
    let addressed = [bob.public_key(), alice.public_key()];
    let set = recipient_set(addressed.iter());
    let signed = signed_bytes(plaintext, &set);

    let signature = pss_sign_with_salt(ALICE_PEM, &signed, &pss_salt);
    // The production verifier must accept what the reference signer made.
    verify(&alice.public_key(), &signed, &signature).expect("aws-lc verifies the rsa signature");
    let wrapped = oaep_encrypt_with_seed(&bob.public_key(), &k, &oaep_seed);
    // And the production decrypter must recover K from the reference ciphertext.
    assert_eq!(*unwrap_content_key(bob, &wrapped).unwrap(), k);

    let keys = derive_keys(&k).unwrap();
    let packet =
        assemble_packet(&bob.public_key(), &k, &wrapped, plaintext, &signature, &set).unwrap();

    Vector {
        description: description.into(),
        inputs: Inputs {
            sender_key_file: "alice.pem".into(),
            recipient_key_file: "bob.pem".into(),
            addressed_key_files: vec!["bob.pem".into(), "alice.pem".into()],
            inner_json: String::from_utf8(inner_json.to_vec()).unwrap(),
            content_key_hex: hex::encode(k),
            oaep_seed_hex: hex::encode(oaep_seed),
            pss_salt_hex: hex::encode(pss_salt),
        },
        intermediates: Intermediates {
            sender_public_key: alice.public_key().to_text().to_owned(),
            recipient_public_key: bob.public_key().to_text().to_owned(),
            inner_json_sha256_hex: hex::encode(Sha256::digest(plaintext)),
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

/// With `JASPER_WRITE_VECTORS=1`, writes `built` to `path`; then parses the committed text.
fn write_if_asked_then_parse<T: Serialize + serde::de::DeserializeOwned>(
    built: &T,
    path: &str,
    committed: &str,
) -> T {
    if std::env::var(WRITE_ENV).is_ok_and(|v| v == "1") {
        let mut text = serde_json::to_string_pretty(built).unwrap();
        text.push('\n');
        std::fs::write(path, text).unwrap();
    }
    serde_json::from_str(committed)
        .unwrap_or_else(|e| panic!("{path}: {e}; run with {WRITE_ENV}=1 to rewrite it"))
}

#[test]
fn envelope_vector_is_reproduced_byte_for_byte() {
    let built = build_vector();
    let committed: Vector = write_if_asked_then_parse(&built, VECTOR_PATH, COMMITTED_VECTOR);
    // Field by field first, for a readable failure; then the whole.
    assert_eq!(built.inputs, committed.inputs);
    assert_eq!(built.intermediates, committed.intermediates);
    assert_eq!(built.outputs, committed.outputs);
    assert_eq!(built, committed);
}

#[test]
fn envelope_vector_padded_is_reproduced_byte_for_byte() {
    let built = build_padded_vector();
    let committed: PaddedVector =
        write_if_asked_then_parse(&built, PADDED_VECTOR_PATH, COMMITTED_PADDED_VECTOR);
    assert_eq!(built.padding, committed.padding);
    assert_eq!(built.inputs, committed.inputs);
    assert_eq!(built.intermediates, committed.intermediates);
    assert_eq!(built.outputs, committed.outputs);
    assert_eq!(built, committed);
}

#[test]
fn padded_vector_signs_and_encrypts_the_padding() {
    let v = build_padded_vector();
    let (p, i) = (&v.padding, &v.intermediates);
    let inner_json = v.inputs.inner_json.as_bytes();
    assert_eq!(p.inner_json_len, inner_json.len());
    assert_eq!(p.plaintext_len, PADDING_CLASSES[0]);
    let mut plaintext = inner_json.to_vec();
    plaintext.resize(p.plaintext_len, b' ');
    assert_eq!(
        i.inner_json_sha256_hex,
        hex::encode(Sha256::digest(&plaintext))
    );
    let signed = hex::decode(&i.signed_bytes_hex).unwrap();
    assert_eq!(hex::encode(&signed[16..48]), i.inner_json_sha256_hex);

    let message = STANDARD.decode(&v.outputs.packet.message).unwrap();
    assert_eq!(message.len(), 1 + 512 + p.plaintext_len + 16);
    let opened = open(bob(), &v.outputs.packet).unwrap();
    assert_eq!(opened.raw_json, plaintext);
    assert_eq!(opened.message, vector_message());

    // Same inputs as the unpadded vector except the padding: same K and wrapped key, so the
    // ciphertexts share their first bytes (CTR mode) and only the signature differs.
    let unpadded = build_vector();
    assert_eq!(v.inputs, unpadded.inputs);
    assert_eq!(i.wrapped_key_hex, unpadded.intermediates.wrapped_key_hex);
    assert_ne!(i.signature_hex, unpadded.intermediates.signature_hex);
    let old = STANDARD.decode(&unpadded.outputs.packet.message).unwrap();
    assert_eq!(
        message[..513 + inner_json.len()],
        old[..513 + inner_json.len()]
    );
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

#[test]
fn padded_len_at_every_class_boundary() {
    assert_eq!(
        PADDING_CLASSES,
        [4096, 8192, 16_384, 32_768, 65_536],
        "docs/protocol.md and the padding vector name these"
    );
    assert_eq!(padded_len(0), 4096);
    assert_eq!(padded_len(1), 4096);
    for (i, &class) in PADDING_CLASSES.iter().enumerate() {
        assert_eq!(padded_len(class - 1), class);
        assert_eq!(
            padded_len(class),
            class,
            "a class-sized JSON gets no padding"
        );
        match PADDING_CLASSES.get(i + 1) {
            Some(&next) => assert_eq!(padded_len(class + 1), next),
            // Past the limit (seal refuses it): no class, the length stays.
            None => assert_eq!(padded_len(class + 1), class + 1),
        }
    }
    // Longer than the largest class below the limit: padded to the limit itself.
    assert_eq!(padded_len(32 * 1024 + 1), MAX_INNER_JSON_LEN);
    assert_eq!(padded_len(MAX_INNER_JSON_LEN), MAX_INNER_JSON_LEN);
    // Every length up to the limit lands in a class, never below itself.
    for len in (0..=MAX_INNER_JSON_LEN).step_by(97) {
        let padded = padded_len(len);
        assert!(PADDING_CLASSES.contains(&padded) && padded >= len, "{len}");
    }
}

#[test]
fn padding_is_spaces_after_the_json() {
    for len in [0, 1, 4095, 4096, 4097, 32_769, MAX_INNER_JSON_LEN] {
        let padded = pad_inner_json(vec![b'x'; len]);
        assert_eq!(padded.len(), padded_len(len), "{len}");
        assert!(padded[..len].iter().all(|&b| b == b'x'));
        assert!(padded[len..].iter().all(|&b| b == b' '), "{len}");
    }
}

/// Seals the way clients before padding did: the same checks and steps as [`seal`], with the
/// inner JSON sealed and signed unpadded.
fn seal_unpadded(
    sender: &PrivateKey,
    recipients: &[PublicKey],
    message: &InnerMessage,
) -> Vec<Packet> {
    let (inner_json, distinct) = checked_inputs(sender, recipients, message).unwrap();
    seal_plaintext(sender, &distinct, &inner_json).unwrap()
}

#[test]
fn unpadded_packet_from_an_older_client_still_opens() {
    let message = vector_message();
    let old = seal_unpadded(
        alice(),
        &[bob().public_key(), carol().public_key()],
        &message,
    );
    for (key, packet) in [bob(), carol()].into_iter().zip(&old) {
        let opened = open(key, packet).unwrap();
        assert_eq!(opened.sender, alice().public_key());
        assert_eq!(opened.message, message);
        assert_eq!(
            opened.raw_json,
            message.to_json(),
            "no padding added on opening"
        );
        let decoded = STANDARD.decode(&packet.message).unwrap();
        assert_eq!(decoded.len(), 529 + message.to_json().len());
    }
    // The padded packet of the same message is longer: the padding is what changed.
    let new = seal(alice(), &[bob().public_key()], &message).unwrap();
    assert_eq!(
        STANDARD.decode(&new[0].message).unwrap().len(),
        529 + PADDING_CLASSES[0]
    );
}

#[test]
fn padded_json_opens_with_the_unchanged_parser() {
    // What an older client does with the plaintext: `from_json`, then the signature over the
    // bytes as received. Both are what `open` still does; here the parser alone, at the limit.
    let json = vector_message().to_json();
    for len in [json.len(), PADDING_CLASSES[0], MAX_INNER_JSON_LEN] {
        let mut padded = json.clone();
        padded.resize(len, b' ');
        assert_eq!(InnerMessage::from_json(&padded).unwrap(), vector_message());
    }
}

#[test]
fn changed_padding_breaks_the_signature() {
    let packet = seal(alice(), &[bob().public_key()], &vector_message())
        .unwrap()
        .remove(0);
    let opened = open(bob(), &packet).unwrap();
    let (signature, set) = signature_and_set(bob(), &packet);
    let to = bob().public_key();
    // Control: the plaintext re-sealed as it was, with its signature, opens.
    let same = forge(&to, &opened.raw_json, &signature, &set);
    assert_eq!(open(bob(), &same).unwrap().message, vector_message());

    let json_len = vector_message().to_json().len();
    let stripped = opened.raw_json[..json_len].to_vec();
    let mut newline = opened.raw_json.clone();
    *newline.last_mut().unwrap() = b'\n';
    let mut longer = opened.raw_json.clone();
    longer.push(b' ');
    let mut shorter = opened.raw_json.clone();
    shorter.pop();
    for (what, plaintext) in [
        ("stripped", stripped),
        ("a newline for a space", newline),
        ("one space more", longer),
        ("one space less", shorter),
    ] {
        // Each still parses as the same message, so only the signature can catch it.
        assert_eq!(
            InnerMessage::from_json(&plaintext).unwrap(),
            vector_message()
        );
        let forged = forge(&to, &plaintext, &signature, &set);
        assert_eq!(open(bob(), &forged), Err(Error::BadSignature), "{what}");
    }
}
