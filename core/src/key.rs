//! RSA-4096 keys. Public keys have one canonical text form: standard base64 (with padding, no
//! line breaks) of the DER X.509 SubjectPublicKeyInfo. Keys are addresses (`recipient`,
//! `sender`), so exactly one spelling is accepted: anything else (PEM, whitespace, URL-safe
//! base64, PKCS#1, another size) is rejected with a precise reason. A [`PrivateKey`] is the
//! user's identity: it signs what they send and decrypts what they receive.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeyPair, KeySize, OaepPrivateDecryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

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
        let invalid = |reason: &str| Error::InvalidPublicKey {
            field,
            reason: reason.to_owned(),
        };
        if text.is_empty() {
            return Err(Error::EmptyField { field });
        }
        if text.len() > MAX_KEY_TEXT_LEN {
            return Err(Error::FieldTooLong {
                field,
                len: text.len(),
                max: MAX_KEY_TEXT_LEN,
            });
        }
        if text.starts_with("-----BEGIN") {
            return Err(invalid(
                "PEM is not accepted; send base64 of the DER SubjectPublicKeyInfo",
            ));
        }
        if text.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(invalid(
                "contains whitespace; the key is one line of base64",
            ));
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
        let invalid = |reason: &str| Error::InvalidPublicKey {
            field,
            reason: reason.to_owned(),
        };
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

/// The only PEM label [`PrivateKey::from_pkcs8_pem`] accepts (RFC 7468 unencrypted PKCS#8).
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// An RSA-4096 private key: the signing key and the OAEP decrypting key, both built from the
/// same PKCS#8 document, plus the matching [`PublicKey`]. Cheap to clone (shared).
///
/// Private key material never appears in `Debug` output; only the public key's short id does.
#[derive(Clone)]
pub struct PrivateKey {
    inner: Arc<PrivateInner>,
}

struct PrivateInner {
    signing: KeyPair,
    decrypting: OaepPrivateDecryptingKey,
    public: PublicKey,
    /// Normalised PKCS#8 v1 DER as aws-lc marshals it, wiped on drop. Kept so that export
    /// cannot fail and always gives the same bytes.
    pkcs8: Zeroizing<Vec<u8>>,
}

impl PrivateKey {
    /// Generates a fresh RSA-4096 key (e = 65537) from the system's random source.
    /// Takes about a second or more: RSA prime generation is slow.
    pub fn generate() -> Result<Self> {
        let pair = KeyPair::generate(KeySize::Rsa4096)
            .map_err(|_| Error::Crypto("RSA-4096 key generation failed".into()))?;
        let der = pair
            .as_der()
            .map_err(|_| Error::Crypto("cannot encode the generated key as PKCS#8".into()))?;
        Self::from_pkcs8_der(der.as_ref())
    }

    /// Parses an unencrypted PKCS#8 (RFC 5208) DER RSA private key. Anything but RSA-4096 is
    /// rejected: Jasper keys are RSA-4096 only.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        const FIELD: &str = "private key";
        // Parsed twice on purpose: aws-lc-rs keeps its signing and decrypting key types apart,
        // and both must come from the same document so they are one identity.
        let decrypting = PrivateDecryptingKey::from_pkcs8(der).map_err(|e| {
            Error::InvalidPrivateKey(format!("not an unencrypted PKCS#8 RSA private key ({e})"))
        })?;
        let bits = decrypting.key_size_bits();
        if bits != KEY_BITS {
            return Err(Error::WrongKeySize { field: FIELD, bits });
        }
        let signing = KeyPair::from_pkcs8(der).map_err(|e| {
            Error::InvalidPrivateKey(format!("not an unencrypted PKCS#8 RSA private key ({e})"))
        })?;
        let spki = decrypting
            .public_key()
            .as_der()
            .map_err(|_| Error::Crypto("cannot encode the public key".into()))?;
        let public = PublicKey::from_der_field(spki.as_ref(), FIELD)?;
        let pkcs8 = signing
            .as_der()
            .map_err(|_| Error::Crypto("cannot encode the private key as PKCS#8".into()))?;
        let decrypting = OaepPrivateDecryptingKey::new(decrypting)
            .map_err(|_| Error::Crypto("cannot set up RSA-OAEP decryption".into()))?;
        Ok(Self {
            inner: Arc::new(PrivateInner {
                signing,
                decrypting,
                public,
                pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
            }),
        })
    }

    /// Parses a PEM `-----BEGIN PRIVATE KEY-----` document (unencrypted PKCS#8, as written by
    /// [`Self::to_pkcs8_pem`] or `openssl genpkey`). Line breaks (LF or CRLF) and surrounding
    /// whitespace are tolerated; other PEM labels are rejected with a hint.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self> {
        let text = pem.trim();
        if text.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
            return Err(Error::InvalidPrivateKey(
                "PKCS#1 'RSA PRIVATE KEY' PEM is not accepted; convert it to PKCS#8 with \
                 `openssl pkcs8 -topk8 -nocrypt`"
                    .into(),
            ));
        }
        if text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err(Error::InvalidPrivateKey(
                "encrypted PKCS#8 is not supported; decrypt it first".into(),
            ));
        }
        let body = text
            .strip_prefix(PEM_BEGIN)
            .and_then(|rest| rest.strip_suffix(PEM_END))
            .ok_or_else(|| {
                Error::InvalidPrivateKey(format!(
                    "not a PEM document between {PEM_BEGIN} and {PEM_END}"
                ))
            })?;
        // The base64 body and the DER are the secret itself: keep them in wiped buffers.
        let mut b64 = Zeroizing::new(String::with_capacity(body.len()));
        b64.extend(body.chars().filter(|c| !c.is_ascii_whitespace()));
        let der = Zeroizing::new(STANDARD.decode(b64.as_bytes()).map_err(|_| {
            Error::InvalidPrivateKey("PEM body is not standard base64 with padding".into())
        })?);
        Self::from_pkcs8_der(&der)
    }

    /// The key as PEM (unencrypted PKCS#8, 64-character lines, LF line ends, final LF).
    ///
    /// This is the secret key in the clear. It is returned as a plain `String` for ease of use
    /// (keyrings and files take strings); callers that care should wipe it after use, for
    /// example by wrapping it in `zeroize::Zeroizing`.
    pub fn to_pkcs8_pem(&self) -> String {
        let b64 = Zeroizing::new(STANDARD.encode(self.inner.pkcs8.as_slice()));
        let mut pem = String::with_capacity(b64.len() + b64.len() / 64 + 64);
        pem.push_str(PEM_BEGIN);
        pem.push('\n');
        // Base64 is ASCII, so splitting the bytes at any point splits at a char boundary.
        for line in b64.as_bytes().chunks(64) {
            pem.extend(line.iter().map(|&b| char::from(b)));
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        pem
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.public.clone()
    }

    pub(crate) fn signing_key(&self) -> &KeyPair {
        &self.inner.signing
    }

    pub(crate) fn decrypting_key(&self) -> &OaepPrivateDecryptingKey {
        &self.inner.decrypting
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public: {})", self.inner.public.short_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::KeyPair as _;
    use base64::engine::general_purpose::URL_SAFE;

    const ALICE_PEM: &str = include_str!("../tests/vectors/alice.pem");
    const BOB_PEM: &str = include_str!("../tests/vectors/bob.pem");

    fn alice() -> PrivateKey {
        PrivateKey::from_pkcs8_pem(ALICE_PEM).expect("committed test key parses")
    }

    #[test]
    fn canonical_text_round_trips_and_fingerprint_is_sha256_of_der() {
        let public = alice().public_key();
        let text = public.to_text();
        assert_eq!(text.len(), TYPICAL_KEY_TEXT_LEN);
        let again = PublicKey::from_text(text).unwrap();
        assert_eq!(again, public);
        assert_eq!(again.to_text(), text);
        assert_eq!(again.der(), STANDARD.decode(text).unwrap());
        let expected: [u8; 32] = Sha256::digest(public.der()).into();
        assert_eq!(public.fingerprint(), expected);
        assert_eq!(public.short_id(), hex::encode(&expected[..8]));
        assert_eq!(
            format!("{public:?}"),
            format!("PublicKey({})", public.short_id())
        );
    }

    #[test]
    fn distinct_keys_have_distinct_texts_and_fingerprints() {
        let a = alice().public_key();
        let b = PrivateKey::from_pkcs8_pem(BOB_PEM).unwrap().public_key();
        assert_ne!(a, b);
        assert_ne!(a.to_text(), b.to_text());
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn pem_public_key_is_rejected() {
        let public = alice().public_key();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            public.to_text()
        );
        assert!(matches!(
            PublicKey::from_text_field(&pem, "recipient"),
            Err(Error::InvalidPublicKey {
                field: "recipient",
                ..
            })
        ));
    }

    #[test]
    fn whitespace_anywhere_is_rejected() {
        let text = alice().public_key().to_text().to_owned();
        for bad in [
            format!(" {text}"),
            format!("{text}\n"),
            format!("{}\n{}", &text[..64], &text[64..]),
            format!("{}\t{}", &text[..10], &text[10..]),
        ] {
            assert!(
                matches!(
                    PublicKey::from_text(&bad),
                    Err(Error::InvalidPublicKey { .. })
                ),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn url_safe_base64_is_rejected() {
        let public = alice().public_key();
        let url = URL_SAFE.encode(public.der());
        // Only meaningful if the key's base64 uses '+' or '/', which the alphabets differ in.
        assert_ne!(
            url,
            public.to_text(),
            "test key must exercise the differing characters"
        );
        assert!(matches!(
            PublicKey::from_text(&url),
            Err(Error::InvalidPublicKey { .. })
        ));
    }

    #[test]
    fn unpadded_base64_is_rejected() {
        let text = alice()
            .public_key()
            .to_text()
            .trim_end_matches('=')
            .to_owned();
        assert!(matches!(
            PublicKey::from_text(&text),
            Err(Error::InvalidPublicKey { .. })
        ));
    }

    #[test]
    fn rsa_2048_is_rejected_with_its_size() {
        let small = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let spki = small.public_key().as_der().unwrap();
        let text = STANDARD.encode(spki.as_ref());
        assert_eq!(
            PublicKey::from_text_field(&text, "sender"),
            Err(Error::WrongKeySize {
                field: "sender",
                bits: 2048
            })
        );
        let pkcs8 = small.as_der().unwrap();
        assert_eq!(
            PrivateKey::from_pkcs8_der(pkcs8.as_ref()).map(|_| ()),
            Err(Error::WrongKeySize {
                field: "private key",
                bits: 2048
            })
        );
    }

    #[test]
    fn pkcs1_and_trailing_bytes_and_garbage_are_rejected() {
        let public = alice().public_key();
        // PKCS#1 RSAPublicKey: the SPKI's inner BIT STRING, which aws-lc would also parse.
        let pkcs1 = alice().signing_key().public_key().as_ref().to_vec();
        assert!(PublicKey::from_der(&pkcs1).is_err());
        let mut trailing = public.der().to_vec();
        trailing.push(0);
        assert!(PublicKey::from_der(&trailing).is_err());
        assert!(PublicKey::from_text("AAAA").is_err());
        assert_eq!(
            PublicKey::from_text(""),
            Err(Error::EmptyField { field: "key" })
        );
        let long = "A".repeat(MAX_KEY_TEXT_LEN + 4);
        assert!(matches!(
            PublicKey::from_text(&long),
            Err(Error::FieldTooLong { .. })
        ));
    }

    #[test]
    fn private_key_pem_round_trips_byte_for_byte() {
        let key = alice();
        // The committed file was written by `openssl genpkey`; aws-lc marshals the same bytes.
        assert_eq!(key.to_pkcs8_pem(), ALICE_PEM);
        let again = PrivateKey::from_pkcs8_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let crlf = ALICE_PEM.replace('\n', "\r\n");
        assert_eq!(
            PrivateKey::from_pkcs8_pem(&crlf).unwrap().public_key(),
            key.public_key()
        );
    }

    #[test]
    fn keys_can_be_shared_across_threads() {
        // The daemon and the bindings hold one identity and use it from many tasks.
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PrivateKey>();
        assert_send_sync::<PublicKey>();
    }

    #[test]
    fn private_key_debug_shows_no_secret() {
        let key = alice();
        let debug = format!("{key:?}");
        assert_eq!(
            debug,
            format!("PrivateKey(public: {})", key.public_key().short_id())
        );
    }

    #[test]
    fn wrong_private_key_documents_are_rejected() {
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            PrivateKey::from_pkcs8_pem(pkcs1),
            Err(Error::InvalidPrivateKey(_))
        ));
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----";
        assert!(matches!(
            PrivateKey::from_pkcs8_pem(enc),
            Err(Error::InvalidPrivateKey(_))
        ));
        assert!(matches!(
            PrivateKey::from_pkcs8_pem("hello"),
            Err(Error::InvalidPrivateKey(_))
        ));
        let bad_b64 = format!("{PEM_BEGIN}\n!!!!\n{PEM_END}\n");
        assert!(matches!(
            PrivateKey::from_pkcs8_pem(&bad_b64),
            Err(Error::InvalidPrivateKey(_))
        ));
        assert!(matches!(
            PrivateKey::from_pkcs8_der(b"\x30\x00"),
            Err(Error::InvalidPrivateKey(_))
        ));
    }
}
