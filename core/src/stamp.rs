//! Proof-of-work stamps (extension `send.stamp`, docs/protocol.md "Stamps"): what a relay may
//! ask of a `/send` when it is flooded, so that a flood costs the flooder more than the relays
//! and the recipient it is aimed at.
//!
//! A stamp is a nonce (a u64, sent as 16 lowercase hex digits in the `/send` body's `stamp`
//! field) such that `SHA-256("jasper-stamp-v1" || packet hash (32 bytes) || SHA-256 of the
//! recipient key's DER (32 bytes) || nonce (8 bytes, big-endian))` starts with at least `bits`
//! zero bits. It is bound to the packet and its recipient, so one stamp cannot be reused for
//! another packet or another key; finding one takes 2^bits hashes on average, checking it one.

use sha2::{Digest, Sha256};

use crate::hash::MessageHash;

const DOMAIN: &[u8] = b"jasper-stamp-v1";

/// Most bits a relay may ask (and a client will compute): 2^24 hashes are seconds on a phone.
pub const MAX_BITS: u32 = 24;

/// Why a stamp is not good enough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StampError {
    /// Not 16 hexadecimal digits.
    Malformed,
    /// A valid nonce with fewer zero bits than asked.
    TooWeak { has: u32, needs: u32 },
}

impl std::fmt::Display for StampError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StampError::Malformed => write!(f, "`stamp` must be 16 hexadecimal digits"),
            StampError::TooWeak { has, needs } => {
                write!(
                    f,
                    "the stamp has {has} leading zero bits; this relay asks {needs}"
                )
            }
        }
    }
}

/// The digest a stamp's zero bits are counted in.
pub fn digest(hash: &MessageHash, recipient_fp: &[u8; 32], nonce: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(hash.as_bytes());
    h.update(recipient_fp);
    h.update(nonce.to_be_bytes());
    h.finalize().into()
}

/// Leading zero bits of a digest.
pub fn zero_bits(d: &[u8; 32]) -> u32 {
    let mut bits = 0;
    for byte in d {
        if *byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

/// The text form of a nonce: 16 lowercase hex digits.
pub fn format(nonce: u64) -> String {
    format!("{nonce:016x}")
}

/// Reads the text form (either case; exactly 16 digits).
pub fn parse(text: &str) -> Result<u64, StampError> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StampError::Malformed);
    }
    u64::from_str_radix(text, 16).map_err(|_| StampError::Malformed)
}

/// Checks a stamp against `bits`.
pub fn check(
    hash: &MessageHash,
    recipient_fp: &[u8; 32],
    stamp: &str,
    bits: u32,
) -> Result<(), StampError> {
    let has = zero_bits(&digest(hash, recipient_fp, parse(stamp)?));
    if has < bits {
        return Err(StampError::TooWeak { has, needs: bits });
    }
    Ok(())
}

/// Finds a stamp of at least `bits` (capped at [`MAX_BITS`]), trying nonces from `from` up.
/// CPU-bound: run it off the async threads.
pub fn solve(hash: &MessageHash, recipient_fp: &[u8; 32], bits: u32, from: u64) -> u64 {
    let bits = bits.min(MAX_BITS);
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(hash.as_bytes());
    h.update(recipient_fp);
    let mut nonce = from;
    loop {
        let mut attempt = h.clone();
        attempt.update(nonce.to_be_bytes());
        if zero_bits(&attempt.finalize().into()) >= bits {
            return nonce;
        }
        nonce = nonce.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector in docs/protocol.md, "Stamps".
    #[test]
    fn the_documented_vector() {
        let hash = MessageHash::of_message("aGVsbG8=");
        let fp = [7u8; 32];
        let nonce = solve(&hash, &fp, 12, 0);
        assert_eq!(format(nonce), "0000000000000060");
        let d = digest(&hash, &fp, nonce);
        assert!(zero_bits(&d) >= 12);
        assert_eq!(
            hex::encode(d),
            "000a4d8771187bbbb5de8ad7923b7e01d662553d316322bba3f3a5d546efb82f"
        );
        assert_eq!(check(&hash, &fp, &format(nonce), 12), Ok(()));
    }

    #[test]
    fn a_stamp_is_bound_to_its_packet_and_recipient_and_checked_for_strength() {
        let hash = MessageHash::of_message("cGFja2V0");
        let fp = [1u8; 32];
        let nonce = solve(&hash, &fp, 10, 0);
        let stamp = format(nonce);
        check(&hash, &fp, &stamp, 10).unwrap();
        check(&hash, &fp, &stamp.to_ascii_uppercase(), 10).unwrap();
        // Another packet or another recipient: almost surely not a stamp for them.
        let other = MessageHash::of_message("b3RoZXI=");
        assert!(check(&other, &fp, &stamp, 10).is_err());
        assert!(check(&hash, &[2u8; 32], &stamp, 10).is_err());
        let has = zero_bits(&digest(&hash, &fp, nonce));
        assert_eq!(
            check(&hash, &fp, &stamp, has + 1),
            Err(StampError::TooWeak {
                has,
                needs: has + 1
            })
        );
        for bad in [
            "",
            "123",
            "zzzzzzzzzzzzzzzz",
            "00000000000000000",
            "+000000000000001",
        ] {
            assert_eq!(
                check(&hash, &fp, bad, 1),
                Err(StampError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn zero_bits_are_counted_across_bytes() {
        let mut d = [0xffu8; 32];
        assert_eq!(zero_bits(&d), 0);
        d[0] = 0;
        d[1] = 0x1f;
        assert_eq!(zero_bits(&d), 11);
        assert_eq!(zero_bits(&[0u8; 32]), 256);
    }
}
