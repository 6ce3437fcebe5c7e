//! The sealed envelope: how an inner message becomes a packet's `message` and `signature`
//! fields, and back. RSA-OAEP wraps a fresh content key per packet, AES-256-GCM carries the
//! inner JSON and, separately, one RSA-PSS signature that covers the message and the set of
//! recipients. Every byte is specified in `docs/protocol.md` ("The envelope").
//!
//! The plaintext of the message AEAD is the inner JSON padded with spaces to a size class
//! ([`padded_len`], [`PADDING_CLASSES`]), so that a relay cannot tell kinds of traffic apart by
//! a packet's length. Trailing spaces are JSON whitespace: a receiver parses the padded
//! plaintext as it is, and packets without padding (from clients before it) open unchanged.
//!
//! [`seal`] and [`open`] are the only entry points. The steps that involve no randomness are
//! separate functions so the test vectors can drive them with fixed inputs.

use std::collections::HashSet;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use aws_lc_rs::rand::{SystemRandom, fill};
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey};
use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA256, RSA_PSS_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::hash::MessageHash;
use crate::key::{PrivateKey, PublicKey};
use crate::protocol::{InnerMessage, Packet};

/// The envelope format version: the first byte of both decoded fields.
pub const VERSION: u8 = 0x01;

/// Largest inner message JSON that [`seal`] accepts, in bytes. Chosen so the largest packet
/// stays under a relay's 100,000-byte body limit (see [`MAX_PACKET_JSON_LEN`]).
pub const MAX_INNER_JSON_LEN: usize = 64 * 1024;

/// The sizes, in bytes, that [`seal`] pads every inner message plaintext to: 4, 8, 16, 32 and
/// 64 KiB (the last is [`MAX_INNER_JSON_LEN`]). See [`padded_len`] for the rule.
///
/// Why these: one key text is 736 bytes, so the smallest inner message (a reaction, an RTC
/// consent signal, a short DM) is already 0.9-1 KB, and the `SENT` copy of a short DM, which
/// carries the original message and the peer's key, is about 2.7 KB. 4 KiB is the smallest
/// power of two that holds all of these, so the everyday traffic of a conversation (texts up
/// to about a kilobyte, reactions, edits, deletes, transparent-mode consent and reconnect
/// signals, self-copies, small group operations) is one size to a relay. Doubling above that
/// bounds the overhead of any larger message to under 2x with only five classes in all. The
/// cost is paid on small messages: a 100-byte DM (about 1 KB of inner JSON) grows by about
/// 3 KB, its packet from about 3.6 kB to 7.8 kB.
pub const PADDING_CLASSES: [usize; 5] =
    [4 * 1024, 8 * 1024, 16 * 1024, 32 * 1024, MAX_INNER_JSON_LEN];

/// What the padding is made of: ASCII space, which is JSON whitespace.
pub const PADDING_BYTE: u8 = b' ';

const _: () = {
    let mut i = 1;
    while i < PADDING_CLASSES.len() {
        assert!(PADDING_CLASSES[i - 1] < PADDING_CLASSES[i]);
        i += 1;
    }
    assert!(PADDING_CLASSES[PADDING_CLASSES.len() - 1] == MAX_INNER_JSON_LEN);
};

/// The length that an inner JSON of `len` bytes is padded to: the smallest of the
/// [`PADDING_CLASSES`] that is at least `len`. So a JSON longer than the largest class below
/// the limit (32 KiB) pads to the limit itself, and one of exactly a class's size gets no
/// padding. Lengths above [`MAX_INNER_JSON_LEN`], which [`seal`] refuses, are returned as
/// they are.
pub const fn padded_len(len: usize) -> usize {
    let mut i = 0;
    while i < PADDING_CLASSES.len() {
        if len <= PADDING_CLASSES[i] {
            return PADDING_CLASSES[i];
        }
        i += 1;
    }
    len
}

/// Most distinct recipients one signature may cover. Every packet of a message carries the
/// whole recipient set (32 bytes each), so this bounds the `signature` field (to 6,176
/// characters, under the 8 KiB a relay may allow it).
pub const MAX_RECIPIENTS: usize = 128;

/// Length of the per-packet content key K.
pub const CONTENT_KEY_LEN: usize = 32;

/// An RSA-4096 OAEP ciphertext and an RSA-4096 PSS signature are both one modulus long.
const RSA_LEN: usize = 512;
const TAG_LEN: usize = 16;
const FINGERPRINT_LEN: usize = 32;
const AES_KEY_LEN: usize = 32;

/// Smallest decoded `message`: version, wrapped key, tag (the inner JSON is never empty, but
/// the length check does not need to know that).
const MIN_MESSAGE_ENVELOPE_LEN: usize = 1 + RSA_LEN + TAG_LEN;
/// Smallest decoded `signature`: version, tag.
const MIN_SIGNATURE_ENVELOPE_LEN: usize = 1 + TAG_LEN;

/// Longest `message` field [`seal`] produces (and [`open`] accepts): base64 of
/// 1 + 512 + 65,536 + 16 bytes.
pub const MAX_MESSAGE_FIELD_LEN: usize = base64_len(1 + RSA_LEN + MAX_INNER_JSON_LEN + TAG_LEN);

/// Longest `signature` field [`seal`] produces (and [`open`] accepts): base64 of
/// 1 + 2 + 512 + 4 + 32 × 128 + 16 bytes.
pub const MAX_SIGNATURE_FIELD_LEN: usize =
    base64_len(1 + 2 + RSA_LEN + 4 + FINGERPRINT_LEN * MAX_RECIPIENTS + TAG_LEN);

/// Upper bound on a sealed packet serialised as JSON (the `/send` body), with the
/// `expires_at` extension and a recipient key of up to 740 characters: under 100,000 bytes.
pub const MAX_PACKET_JSON_LEN: usize = PACKET_JSON_OVERHEAD
    + 740
    + MAX_MESSAGE_FIELD_LEN
    + 64
    + MAX_SIGNATURE_FIELD_LEN
    + EXPIRES_AT_OVERHEAD;
/// `{"recipient":"","message":"","hash":"","signature":""}`
const PACKET_JSON_OVERHEAD: usize = 52;
/// `,"expires_at":` and 20 digits.
const EXPIRES_AT_OVERHEAD: usize = 14 + 20;

const _: () = assert!(MAX_PACKET_JSON_LEN < 100_000);

/// HKDF `info` for the message AEAD key and nonce; also the message AAD prefix.
pub(crate) const LABEL_MESSAGE: &[u8] = b"jasper/1 message";
/// HKDF `info` for the signature AEAD key and nonce; also the signature AAD prefix.
pub(crate) const LABEL_SIGNATURE: &[u8] = b"jasper/1 signature";
/// Domain-separation prefix of the bytes the sender signs.
pub(crate) const LABEL_SIGNED: &[u8] = b"jasper/1 signed\0";

const fn base64_len(bytes: usize) -> usize {
    bytes.div_ceil(3) * 4
}

/// A packet opened and fully verified: the signature checks out for `sender`, and the sender
/// addressed the message to the key that opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The verified sender (parsed from the inner message's `sender`).
    pub sender: PublicKey,
    /// The inner message.
    pub message: InnerMessage,
    /// The decrypted plaintext exactly as the sender sealed it, which is what the signature
    /// covers: the inner JSON as the sender serialised it, followed by its padding (spaces, see
    /// [`padded_len`]; none from clients before padding). Parse it, do not compare it with a
    /// re-serialisation of [`Opened::message`], and keep the padding when forwarding it with
    /// its signature.
    pub raw_json: Vec<u8>,
    /// The packet hash (of the `message` field), for de-duplication.
    pub hash: MessageHash,
}

/// Seals `message` from `sender` to each of `recipients`: one signature for all of them, then
/// one [`Packet`] per distinct recipient, in the order given (duplicates are dropped).
///
/// The inner message's `sender` must be the sealing key's canonical text; if it is empty, it
/// is filled in. The inner JSON is padded with spaces to [`padded_len`] of its length before
/// it is signed and encrypted; the limit [`MAX_INNER_JSON_LEN`] applies to it unpadded.
pub fn seal(
    sender: &PrivateKey,
    recipients: &[PublicKey],
    message: &InnerMessage,
) -> Result<Vec<Packet>> {
    let (inner_json, distinct) = checked_inputs(sender, recipients, message)?;
    seal_plaintext(sender, &distinct, &pad_inner_json(inner_json))
}

/// The checks of [`seal`], in order. Returns the inner JSON (sender filled in, not padded) and
/// the distinct recipients in the caller's order.
fn checked_inputs<'a>(
    sender: &PrivateKey,
    recipients: &'a [PublicKey],
    message: &InnerMessage,
) -> Result<(Vec<u8>, Vec<&'a PublicKey>)> {
    if recipients.is_empty() {
        return Err(Error::EmptyField {
            field: "recipients",
        });
    }
    let own = sender.public_key();
    let inner_json = if message.sender.is_empty() {
        let mut filled = message.clone();
        filled.sender = own.to_text().to_owned();
        filled.to_json()
    } else if message.sender == own.to_text() {
        message.to_json()
    } else {
        return Err(Error::SenderMismatch);
    };
    if inner_json.len() > MAX_INNER_JSON_LEN {
        return Err(Error::FieldTooLong {
            field: "message",
            len: inner_json.len(),
            max: MAX_INNER_JSON_LEN,
        });
    }

    // First occurrence wins, so packets come back in the caller's order.
    let mut seen = HashSet::with_capacity(recipients.len());
    let distinct: Vec<&PublicKey> = recipients
        .iter()
        .filter(|r| seen.insert(r.fingerprint()))
        .collect();
    if distinct.len() > MAX_RECIPIENTS {
        return Err(Error::TooManyRecipients {
            count: distinct.len(),
            max: MAX_RECIPIENTS,
        });
    }
    Ok((inner_json, distinct))
}

/// Pads the inner JSON with [`PADDING_BYTE`] to [`padded_len`] of its length. Deterministic.
pub(crate) fn pad_inner_json(mut inner_json: Vec<u8>) -> Vec<u8> {
    inner_json.resize(padded_len(inner_json.len()), PADDING_BYTE);
    inner_json
}

/// Signs `plaintext` once for the whole recipient set, then seals one packet per recipient.
/// The plaintext is sealed as given: [`seal`] passes the padded inner JSON (the tests also
/// pass it unpadded, to make packets the way clients before padding did).
pub(crate) fn seal_plaintext(
    sender: &PrivateKey,
    distinct: &[&PublicKey],
    plaintext: &[u8],
) -> Result<Vec<Packet>> {
    let set = recipient_set(distinct.iter().copied());
    let signature = sign(sender, &signed_bytes(plaintext, &set))?;

    distinct
        .iter()
        .map(|recipient| {
            let k = random_content_key()?;
            let wrapped = wrap_content_key(recipient, &k)?;
            assemble_packet(recipient, &k, &wrapped, plaintext, &signature, &set)
        })
        .collect()
}

/// Opens a packet addressed to `recipient` and verifies it. Nothing is returned unless the
/// hash matches, the envelope decrypts and authenticates, the signature verifies for the
/// claimed sender, and the sender addressed this message to `recipient`.
pub fn open(recipient: &PrivateKey, packet: &Packet) -> Result<Opened> {
    // Public checks first: a relay-facing client sees junk, and junk should cost no
    // private-key operation.
    let hash = MessageHash::verify(&packet.message, &packet.hash)?;
    let own = recipient.public_key();
    if packet.recipient != own.to_text() {
        return Err(Error::WrongRecipient);
    }
    let message_env = decode_field(&packet.message, "message", MAX_MESSAGE_FIELD_LEN)?;
    let signature_env = decode_field(&packet.signature, "signature", MAX_SIGNATURE_FIELD_LEN)?;
    let (wrapped, message_ct) = split_message_envelope(&message_env)?;
    let signature_ct = split_signature_envelope(&signature_env)?;

    let k = unwrap_content_key(recipient, wrapped)?;
    let keys = derive_keys(&k)?;
    let raw_json = aead_open(&keys.message, &message_aad(), message_ct)?;
    let signature_plain = aead_open(&keys.signature, &signature_aad(), signature_ct)?;
    let (signature, set) = parse_signature_plaintext(&signature_plain)?;

    // The padding is trailing JSON whitespace, which the parser skips; the signature covers
    // the plaintext as received, padding included (and unpadded packets just as well).
    let message = InnerMessage::from_json(&raw_json)?;
    let sender = PublicKey::from_text_field(&message.sender, "sender")?;
    verify(&sender, &signed_bytes(&raw_json, &set), signature)?;
    // A valid signature over a set without us: someone re-sealed a message meant for others.
    if set.binary_search(&own.fingerprint()).is_err() {
        return Err(Error::NotAddressedToRecipient);
    }
    Ok(Opened {
        sender,
        message,
        raw_json,
        hash,
    })
}

fn decode_field(text: &str, field: &'static str, max: usize) -> Result<Vec<u8>> {
    // Bound the length before decoding so an oversized field allocates nothing.
    if text.len() > max {
        return Err(Error::FieldTooLong {
            field,
            len: text.len(),
            max,
        });
    }
    STANDARD
        .decode(text)
        .map_err(|_| Error::InvalidBase64 { field })
}

/// An AES-256-GCM key and nonce derived from K. Used once each: K is fresh per packet.
pub(crate) struct AeadKeyNonce {
    pub(crate) key: Zeroizing<[u8; AES_KEY_LEN]>,
    pub(crate) nonce: [u8; NONCE_LEN],
}

/// The two key/nonce pairs of a packet.
pub(crate) struct DerivedKeys {
    pub(crate) message: AeadKeyNonce,
    pub(crate) signature: AeadKeyNonce,
}

/// HKDF output length: a 32-byte AES key followed by a 12-byte nonce.
struct KeyAndNonceLen;

impl KeyType for KeyAndNonceLen {
    fn len(&self) -> usize {
        AES_KEY_LEN + NONCE_LEN
    }
}

/// HKDF-SHA256 with an empty salt and K as input keying material, expanded under the two
/// labels. Deterministic.
pub(crate) fn derive_keys(k: &[u8; CONTENT_KEY_LEN]) -> Result<DerivedKeys> {
    let prk = Salt::new(HKDF_SHA256, &[]).extract(k);
    let expand = |info: &[u8]| -> Result<AeadKeyNonce> {
        let mut okm = Zeroizing::new([0u8; AES_KEY_LEN + NONCE_LEN]);
        let info = [info];
        prk.expand(&info, KeyAndNonceLen)
            .and_then(|okm_ref| okm_ref.fill(okm.as_mut_slice()))
            .map_err(|_| Error::Crypto("HKDF-SHA256 expansion failed".into()))?;
        let mut key = Zeroizing::new([0u8; AES_KEY_LEN]);
        key.copy_from_slice(&okm[..AES_KEY_LEN]);
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&okm[AES_KEY_LEN..]);
        Ok(AeadKeyNonce { key, nonce })
    };
    Ok(DerivedKeys {
        message: expand(LABEL_MESSAGE)?,
        signature: expand(LABEL_SIGNATURE)?,
    })
}

/// AAD of the message AEAD: the label and the version byte.
pub(crate) fn message_aad() -> Vec<u8> {
    [LABEL_MESSAGE, &[VERSION]].concat()
}

/// AAD of the signature AEAD: the label and the version byte.
pub(crate) fn signature_aad() -> Vec<u8> {
    [LABEL_SIGNATURE, &[VERSION]].concat()
}

fn aead_key(kn: &AeadKeyNonce) -> Result<LessSafeKey> {
    // LessSafeKey because the nonce comes from HKDF, not a counter: uniqueness is guaranteed
    // by K being fresh per packet, which aws-lc's nonce-sequence types cannot express.
    UnboundKey::new(&AES_256_GCM, kn.key.as_slice())
        .map(LessSafeKey::new)
        .map_err(|_| Error::Crypto("cannot set up AES-256-GCM".into()))
}

/// AES-256-GCM encryption: ciphertext followed by the 16-byte tag. Deterministic.
pub(crate) fn aead_seal(kn: &AeadKeyNonce, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let key = aead_key(kn)?;
    let mut in_out = Vec::with_capacity(plaintext.len() + TAG_LEN);
    in_out.extend_from_slice(plaintext);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(kn.nonce),
        Aad::from(aad),
        &mut in_out,
    )
    .map_err(|_| Error::Crypto("AES-256-GCM encryption failed".into()))?;
    Ok(in_out)
}

/// AES-256-GCM decryption of ciphertext-and-tag. Any failure is [`Error::DecryptionFailed`].
pub(crate) fn aead_open(kn: &AeadKeyNonce, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    let key = aead_key(kn)?;
    let mut in_out = sealed.to_vec();
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(kn.nonce),
            Aad::from(aad),
            &mut in_out,
        )
        .map_err(|_| Error::DecryptionFailed)?
        .len();
    in_out.truncate(len);
    Ok(in_out)
}

/// The fingerprints (SHA-256 of the DER) of the recipients, sorted ascending, deduplicated.
pub(crate) fn recipient_set<'a>(
    recipients: impl IntoIterator<Item = &'a PublicKey>,
) -> Vec<[u8; FINGERPRINT_LEN]> {
    let mut set: Vec<_> = recipients.into_iter().map(PublicKey::fingerprint).collect();
    set.sort_unstable();
    set.dedup();
    set
}

/// `"jasper/1 signed\0" || SHA-256(plaintext) || u32_be(n) || fp_1 || ... || fp_n`: what the
/// sender signs. The plaintext is exactly what the message AEAD encrypts: the inner JSON with
/// its padding. Deterministic.
pub(crate) fn signed_bytes(plaintext: &[u8], set: &[[u8; FINGERPRINT_LEN]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(LABEL_SIGNED.len() + 32 + 4 + FINGERPRINT_LEN * set.len());
    out.extend_from_slice(LABEL_SIGNED);
    out.extend_from_slice(&Sha256::digest(plaintext));
    push_set(&mut out, set);
    out
}

fn push_set(out: &mut Vec<u8>, set: &[[u8; FINGERPRINT_LEN]]) {
    // The set is at most MAX_RECIPIENTS long when we build it, so the count always fits.
    let n = u32::try_from(set.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    for fp in set {
        out.extend_from_slice(fp);
    }
}

/// `u16_be(sig_len) || signature || u32_be(n) || fp_1 || ... || fp_n`: the plaintext of the
/// signature AEAD. Deterministic.
pub(crate) fn signature_plaintext(signature: &[u8], set: &[[u8; FINGERPRINT_LEN]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + signature.len() + 4 + FINGERPRINT_LEN * set.len());
    // Signatures are one RSA-4096 modulus (512 bytes), so the length always fits.
    let sig_len = u16::try_from(signature.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&sig_len.to_be_bytes());
    out.extend_from_slice(signature);
    push_set(&mut out, set);
    out
}

/// Parses the signature plaintext. Version 1 admits only 512-byte signatures and a recipient
/// set of 1..=MAX_RECIPIENTS fingerprints in strictly ascending order (one encoding per set).
pub(crate) fn parse_signature_plaintext(
    plain: &[u8],
) -> Result<(&[u8], Vec<[u8; FINGERPRINT_LEN]>)> {
    let malformed = |reason: &str| Error::MalformedEnvelope(format!("signature: {reason}"));
    let (len_bytes, rest) = plain
        .split_first_chunk::<2>()
        .ok_or_else(|| malformed("truncated before the signature length"))?;
    let sig_len = usize::from(u16::from_be_bytes(*len_bytes));
    if sig_len != RSA_LEN {
        return Err(malformed(&format!(
            "signature length {sig_len}, expected {RSA_LEN}"
        )));
    }
    let (signature, rest) = rest
        .split_at_checked(sig_len)
        .ok_or_else(|| malformed("truncated inside the signature"))?;
    let (n_bytes, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| malformed("truncated before the recipient count"))?;
    let n = u32::from_be_bytes(*n_bytes);
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if n == 0 || n > MAX_RECIPIENTS {
        return Err(malformed(&format!(
            "recipient count {n} is not in 1..={MAX_RECIPIENTS}"
        )));
    }
    if rest.len() != n * FINGERPRINT_LEN {
        return Err(malformed(&format!(
            "{} bytes of fingerprints for {n} recipients, expected {}",
            rest.len(),
            n * FINGERPRINT_LEN
        )));
    }
    let set: Vec<[u8; FINGERPRINT_LEN]> = rest
        .chunks_exact(FINGERPRINT_LEN)
        .map(|c| {
            let mut fp = [0u8; FINGERPRINT_LEN];
            fp.copy_from_slice(c);
            fp
        })
        .collect();
    if set.windows(2).any(|w| w[0] >= w[1]) {
        return Err(malformed(
            "recipient fingerprints are not strictly ascending",
        ));
    }
    Ok((signature, set))
}

/// `0x01 || wrapped K || AES-GCM(message)`. Deterministic.
pub(crate) fn message_envelope(wrapped_key: &[u8], message_ct: &[u8]) -> Vec<u8> {
    [&[VERSION], wrapped_key, message_ct].concat()
}

/// `0x01 || AES-GCM(signature plaintext)`. Deterministic.
pub(crate) fn signature_envelope(signature_ct: &[u8]) -> Vec<u8> {
    [&[VERSION], signature_ct].concat()
}

fn check_version(envelope: &[u8], field: &str) -> Result<()> {
    match envelope.first() {
        Some(&VERSION) => Ok(()),
        Some(other) => Err(Error::MalformedEnvelope(format!(
            "{field}: unknown version 0x{other:02x} (expected 0x{VERSION:02x})"
        ))),
        None => Err(Error::MalformedEnvelope(format!("{field}: empty"))),
    }
}

/// Splits a decoded `message` into the wrapped key and the AEAD ciphertext-and-tag.
pub(crate) fn split_message_envelope(envelope: &[u8]) -> Result<(&[u8], &[u8])> {
    check_version(envelope, "message")?;
    if envelope.len() < MIN_MESSAGE_ENVELOPE_LEN {
        return Err(Error::MalformedEnvelope(format!(
            "message: {} bytes, shorter than the minimum of {MIN_MESSAGE_ENVELOPE_LEN}",
            envelope.len()
        )));
    }
    Ok(envelope[1..].split_at(RSA_LEN))
}

/// Returns the AEAD ciphertext-and-tag of a decoded `signature`.
pub(crate) fn split_signature_envelope(envelope: &[u8]) -> Result<&[u8]> {
    check_version(envelope, "signature")?;
    if envelope.len() < MIN_SIGNATURE_ENVELOPE_LEN {
        return Err(Error::MalformedEnvelope(format!(
            "signature: {} bytes, shorter than the minimum of {MIN_SIGNATURE_ENVELOPE_LEN}",
            envelope.len()
        )));
    }
    Ok(&envelope[1..])
}

/// Builds one recipient's packet from K, its wrapped form, the plaintext (the inner JSON,
/// padded by [`seal`]) and the signature. Deterministic: all randomness (K, the OAEP seed, the
/// PSS salt) is already in the inputs.
pub(crate) fn assemble_packet(
    recipient: &PublicKey,
    k: &[u8; CONTENT_KEY_LEN],
    wrapped_key: &[u8],
    plaintext: &[u8],
    signature: &[u8],
    set: &[[u8; FINGERPRINT_LEN]],
) -> Result<Packet> {
    let keys = derive_keys(k)?;
    let message_ct = aead_seal(&keys.message, &message_aad(), plaintext)?;
    let signature_ct = aead_seal(
        &keys.signature,
        &signature_aad(),
        &signature_plaintext(signature, set),
    )?;
    let message = STANDARD.encode(message_envelope(wrapped_key, &message_ct));
    let signature = STANDARD.encode(signature_envelope(&signature_ct));
    Ok(Packet {
        recipient: recipient.to_text().to_owned(),
        hash: MessageHash::of_message(&message).to_string(),
        message,
        signature,
        expires_at: None,
    })
}

fn random_content_key() -> Result<Zeroizing<[u8; CONTENT_KEY_LEN]>> {
    let mut k = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
    fill(k.as_mut_slice()).map_err(|_| Error::Crypto("system random source failed".into()))?;
    Ok(k)
}

/// RSA-OAEP-SHA256 (MGF1-SHA256, empty label) encryption of K to the recipient.
fn wrap_content_key(recipient: &PublicKey, k: &[u8; CONTENT_KEY_LEN]) -> Result<Vec<u8>> {
    let key = OaepPublicEncryptingKey::new(recipient.encrypting_key().clone())
        .map_err(|_| Error::Crypto("cannot set up RSA-OAEP encryption".into()))?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let len = key
        .encrypt(&OAEP_SHA256_MGF1SHA256, k, &mut out, None)
        .map_err(|_| Error::Crypto("RSA-OAEP encryption failed".into()))?
        .len();
    out.truncate(len);
    Ok(out)
}

/// RSA-OAEP-SHA256 decryption of the wrapped K, in aws-lc's constant-time code.
///
/// Implicit rejection: if the OAEP padding is invalid we go on with a random K, so the AEAD
/// fails next and the caller sees the same [`Error::DecryptionFailed`] after the same steps,
/// whichever of the two checks failed.
fn unwrap_content_key(
    recipient: &PrivateKey,
    wrapped: &[u8],
) -> Result<Zeroizing<[u8; CONTENT_KEY_LEN]>> {
    let mut out = Zeroizing::new([0u8; RSA_LEN]);
    let decrypted = recipient
        .decrypting_key()
        .decrypt(&OAEP_SHA256_MGF1SHA256, wrapped, out.as_mut_slice(), None)
        .ok()
        .filter(|k| k.len() == CONTENT_KEY_LEN)
        .map(|k| {
            let mut key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
            key.copy_from_slice(k);
            key
        });
    match decrypted {
        Some(k) => Ok(k),
        None => random_content_key(),
    }
}

/// RSA-PSS-SHA256 (MGF1-SHA256, 32-byte salt) signature by the sender.
fn sign(sender: &PrivateKey, signed: &[u8]) -> Result<Vec<u8>> {
    let pair = sender.signing_key();
    let mut signature = vec![0u8; pair.public_modulus_len()];
    pair.sign(
        &RSA_PSS_SHA256,
        &SystemRandom::new(),
        signed,
        &mut signature,
    )
    .map_err(|_| Error::Crypto("RSA-PSS signing failed".into()))?;
    Ok(signature)
}

/// Verifies an RSA-PSS-SHA256 signature with a 32-byte salt (no other salt length passes).
pub(crate) fn verify(sender: &PublicKey, signed: &[u8], signature: &[u8]) -> Result<()> {
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, sender.der())
        .verify(signed, signature)
        .map_err(|_| Error::BadSignature)
}

#[cfg(test)]
mod tests;
