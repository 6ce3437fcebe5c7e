//! RSA-4096 public keys in Jasper's one canonical text form: standard base64 (with padding, no
//! line breaks) of the DER X.509 SubjectPublicKeyInfo. Keys are addresses (`recipient`,
//! `sender`), so exactly one spelling is accepted: anything else (PEM, whitespace, URL-safe
//! base64, PKCS#1, another size) is rejected with a precise reason.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::PublicEncryptingKey;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Size of every Jasper key.
pub const KEY_BITS: usize = 4096;

/// Length of the canonical text form of an RSA-4096 key with exponent 65537 (550 DER bytes).
/// Other exponents change the length slightly, so this is a hint, not a check.
pub const TYPICAL_KEY_TEXT_LEN: usize = 736;

/// Upper bound on the text form we even try to parse (a 4096-bit SPKI is ~550 bytes).
pub const MAX_KEY_TEXT_LEN: usize = 1024;

/// A validated RSA-4096 public key.
#[derive(Clone)]
pub struct PublicKey {
    inner: Arc<Inner>,
}

struct Inner {
    text: String,
    der: Vec<u8>,
    fingerprint: [u8; 32],
    encrypting: PublicEncryptingKey,
}

impl PublicKey {
    /// Parses the canonical text form. `field` names the field in errors (`recipient`, ...).
    pub fn from_text_field(text: &str, field: &'static str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidPublicKey { field, reason: reason.to_owned() };
        if text.is_empty() {
            return Err(Error::EmptyField { field });
        }
        if text.len() > MAX_KEY_TEXT_LEN {
            return Err(Error::FieldTooLong { field, len: text.len(), max: MAX_KEY_TEXT_LEN });
        }
        if text.starts_with("-----BEGIN") {
            return Err(invalid("PEM is not accepted; send base64 of the DER SubjectPublicKeyInfo"));
        }
        if text.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(invalid("contains whitespace; the key is one line of base64"));
        }
        let der = STANDARD
            .decode(text)
            .map_err(|_| invalid("not standard base64 with padding"))?;
        Self::from_der_field(&der, field)
    }

    /// Parses the canonical text form of a key given in the field `recipient`/`sender`/...
    pub fn from_text(text: &str) -> Result<Self> {
        Self::from_text_field(text, "key")
    }

    /// Builds a key from DER SubjectPublicKeyInfo bytes.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        Self::from_der_field(der, "key")
    }

    fn from_der_field(der: &[u8], field: &'static str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidPublicKey { field, reason: reason.to_owned() };
        let encrypting = PublicEncryptingKey::from_der(der)
            .map_err(|_| invalid("not a DER SubjectPublicKeyInfo holding an RSA key"))?;
        let bits = encrypting.key_size_bits();
        if bits != KEY_BITS {
            return Err(Error::WrongKeySize { field, bits });
        }
        // Re-encoding must give back the same bytes: this rejects non-minimal DER, trailing
        // data and PKCS#1 that a lenient parser might take, so one key has one address.
        let canonical = encrypting
            .as_der()
            .map_err(|_| invalid("cannot be re-encoded"))?;
        if canonical.as_ref() != der {
            return Err(invalid("DER is not in canonical form"));
        }
        let fingerprint = Sha256::digest(der).into();
        Ok(Self {
            inner: Arc::new(Inner {
                text: STANDARD.encode(der),
                der: der.to_vec(),
                fingerprint,
                encrypting,
            }),
        })
    }

    /// The canonical text form (what goes into `recipient` and `sender`).
    pub fn to_text(&self) -> &str {
        &self.inner.text
    }

    /// DER SubjectPublicKeyInfo.
    pub fn der(&self) -> &[u8] {
        &self.inner.der
    }

    /// SHA-256 of the DER: a short, fixed-size identifier for indexes and logs.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.inner.fingerprint
    }

    /// First 16 hex characters of the fingerprint, for logs and UIs.
    pub fn short_id(&self) -> String {
        hex::encode(&self.inner.fingerprint[..8])
    }

    pub(crate) fn encrypting_key(&self) -> &PublicEncryptingKey {
        &self.inner.encrypting
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.inner.der == other.inner.der
    }
}
impl Eq for PublicKey {}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.fingerprint.hash(state)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short_id())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.to_text())
    }
}
