//! The packet hash: lowercase hex SHA-256 of the UTF-8 bytes of the `message` field exactly
//! as sent. Relays recompute it on every packet they accept, so nobody can overwrite a stored
//! message by reusing its hash.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A SHA-256 message hash. Displays and serialises as 64 lowercase hex characters; parses
/// either case (lenient in what we accept) and normalises to lowercase.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageHash([u8; 32]);

impl MessageHash {
    /// The hash of a packet's `message` field.
    pub fn of_message(message: &str) -> Self {
        Self(Sha256::digest(message.as_bytes()).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses a hash given in the field `field` (named in the error).
    pub fn parse(text: &str, field: &'static str) -> Result<Self> {
        if text.len() != 64 {
            return Err(Error::InvalidHash { field });
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).map_err(|_| Error::InvalidHash { field })?;
        Ok(Self(out))
    }

    /// Checks that `claimed` is the hash of `message`.
    pub fn verify(message: &str, claimed: &str) -> Result<Self> {
        let claimed = Self::parse(claimed, "hash")?;
        let actual = Self::of_message(message);
        if actual != claimed {
            return Err(Error::HashMismatch {
                claimed: claimed.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(actual)
    }

    /// The lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for MessageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MessageHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageHash({})", self.to_hex())
    }
}

impl FromStr for MessageHash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s, "hash")
    }
}

impl Serialize for MessageHash {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for MessageHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&text, "hash").map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_of_message_is_sha256_of_its_utf8_bytes() {
        // SHA-256("abc") from FIPS 180-2.
        assert_eq!(
            MessageHash::of_message("abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parse_accepts_either_case_and_prints_lowercase() {
        let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        let h = MessageHash::parse(upper, "hash").unwrap();
        assert_eq!(h, MessageHash::of_message("abc"));
        assert_eq!(h.to_string(), upper.to_lowercase());
    }

    #[test]
    fn parse_rejects_wrong_length_and_non_hex() {
        assert_eq!(
            MessageHash::parse("abc", "hashes[0]"),
            Err(Error::InvalidHash { field: "hashes[0]" })
        );
        let bad = "zz7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert!(MessageHash::parse(bad, "hash").is_err());
    }

    #[test]
    fn verify_reports_mismatch_with_both_hashes() {
        let other = MessageHash::of_message("abd").to_string();
        match MessageHash::verify("abc", &other) {
            Err(Error::HashMismatch { claimed, actual }) => {
                assert_eq!(claimed, other);
                assert_eq!(actual, MessageHash::of_message("abc").to_string());
            }
            r => panic!("expected mismatch, got {r:?}"),
        }
    }
}
