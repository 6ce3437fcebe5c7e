//! Encrypted attachments: a file is encrypted with a fresh key in fixed-size AES-256-GCM chunks
//! (a STREAM construction: the nonce carries the chunk index and a last-chunk flag, so reordering,
//! truncation and extension are detected) before it goes to IPFS, whose content is public. The
//! key travels inside the end-to-end encrypted message, as a Markdown link (see docs/protocol.md,
//! "Attachments"). Both directions stream: no more than two chunks are ever in memory.

use std::io::{Read, Write};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// Leading bytes of every encrypted attachment.
pub const MAGIC: &[u8; 4] = b"JATT";
/// Format version in the header.
pub const VERSION: u8 = 1;
/// Plaintext bytes per chunk written by [`encrypt_stream`].
pub const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest chunk size a reader accepts (bounds the memory a hostile header can ask for).
pub const MAX_CHUNK_SIZE: u32 = 4 * 1024 * 1024;
/// magic (4) + version (1) + chunk size (4, big-endian) + key check (16).
pub const HEADER_LEN: usize = 25;
const TAG_LEN: usize = 16;
const KEY_CHECK_CONTEXT: &[u8] = b"jasper attachment key check v1";

/// The 256-bit key of one attachment. Wiped on drop; its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentKey([u8; 32]);

impl AttachmentKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::Crypto("random source".into()))?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as it appears in a link: base64url without padding (43 characters).
    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn from_base64url(text: &str) -> Result<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| Error::InvalidAttachmentLink("key is not base64url".into()))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::InvalidAttachmentLink("key is not 32 bytes".into()))?;
        Ok(Self(bytes))
    }

    /// 16 bytes in the header that tell a wrong key from a tampered chunk (and commit the
    /// ciphertext to one key, which GCM alone does not).
    fn check(&self) -> [u8; 16] {
        let digest = Sha256::new()
            .chain_update(KEY_CHECK_CONTEXT)
            .chain_update(self.0)
            .finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }

    fn aead(&self) -> Result<LessSafeKey> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, &self.0).map_err(|_| Error::Crypto("AES key".into()))?;
        Ok(LessSafeKey::new(unbound))
    }
}

impl Drop for AttachmentKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachmentKey(..)")
    }
}

/// What [`encrypt_stream`] learned about the plaintext and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedStats {
    pub plaintext_size: u64,
    pub plaintext_sha256: [u8; 32],
    pub ciphertext_size: u64,
}

/// Nonce of chunk `index`: 7 zero bytes, the index (4 bytes, big-endian), then 1 on the last
/// chunk and 0 otherwise. The key is fresh per file, so no nonce ever repeats under one key.
fn chunk_nonce(index: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[7..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn io_err(e: std::io::Error) -> Error {
    Error::AttachmentIo(e.to_string())
}

/// Reads until `buf` is full or the reader ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    Ok(filled)
}

fn header(key: &AttachmentKey, chunk_size: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = VERSION;
    h[5..9].copy_from_slice(&chunk_size.to_be_bytes());
    h[9..].copy_from_slice(&key.check());
    h
}

/// Encrypts `reader` to `writer` with a fresh key in 64 KiB chunks.
pub fn encrypt_stream(
    reader: impl Read,
    writer: impl Write,
) -> Result<(AttachmentKey, EncryptedStats)> {
    let key = AttachmentKey::generate()?;
    let stats = encrypt_stream_with(reader, writer, &key, DEFAULT_CHUNK_SIZE)?;
    Ok((key, stats))
}

/// Encrypts with a given key and chunk size (test vectors, tests with small chunks).
pub fn encrypt_stream_with(
    mut reader: impl Read,
    mut writer: impl Write,
    key: &AttachmentKey,
    chunk_size: u32,
) -> Result<EncryptedStats> {
    if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
        return Err(Error::MalformedAttachment(format!(
            "chunk size {chunk_size} outside 1..={MAX_CHUNK_SIZE}"
        )));
    }
    let aead = key.aead()?;
    let header = header(key, chunk_size);
    writer.write_all(&header).map_err(io_err)?;
    let size = chunk_size as usize;
    let mut hasher = Sha256::new();
    let mut plaintext_size = 0u64;
    let mut ciphertext_size = HEADER_LEN as u64;
    // One chunk is held back until the next read says whether it is the last.
    let mut current = vec![0u8; size + TAG_LEN];
    let mut next = vec![0u8; size + TAG_LEN];
    let mut current_len = read_full(&mut reader, &mut current[..size])?;
    let mut index: u32 = 0;
    loop {
        let next_len = if current_len == size {
            read_full(&mut reader, &mut next[..size])?
        } else {
            0
        };
        let last = next_len == 0;
        hasher.update(&current[..current_len]);
        plaintext_size += current_len as u64;
        let mut chunk = current[..current_len].to_vec();
        aead.seal_in_place_append_tag(chunk_nonce(index, last), Aad::from(&header), &mut chunk)
            .map_err(|_| Error::Crypto("AES-GCM seal".into()))?;
        writer.write_all(&chunk).map_err(io_err)?;
        ciphertext_size += chunk.len() as u64;
        if last {
            break;
        }
        std::mem::swap(&mut current, &mut next);
        current_len = next_len;
        index = index
            .checked_add(1)
            .ok_or_else(|| Error::MalformedAttachment("more than 2^32 chunks".into()))?;
    }
    writer.flush().map_err(io_err)?;
    Ok(EncryptedStats {
        plaintext_size,
        plaintext_sha256: hasher.finalize().into(),
        ciphertext_size,
    })
}

/// Decrypts `reader` to `writer`, checking every chunk, the end of the stream, and finally the
/// plaintext's size and SHA-256 against the link. Plaintext reaches `writer` before the whole
/// stream is verified: write to a temporary file and discard it on error.
pub fn decrypt_stream(
    mut reader: impl Read,
    mut writer: impl Write,
    key: &AttachmentKey,
    expected_sha256: &[u8; 32],
    expected_size: u64,
) -> Result<u64> {
    let mut head = [0u8; HEADER_LEN];
    if read_full(&mut reader, &mut head)? < HEADER_LEN || &head[..4] != MAGIC {
        return Err(Error::MalformedAttachment(
            "not an encrypted Jasper attachment".into(),
        ));
    }
    if head[4] != VERSION {
        return Err(Error::MalformedAttachment(format!(
            "unknown version {}",
            head[4]
        )));
    }
    let chunk_size = u32::from_be_bytes([head[5], head[6], head[7], head[8]]);
    if chunk_size == 0 || chunk_size > MAX_CHUNK_SIZE {
        return Err(Error::MalformedAttachment(format!(
            "chunk size {chunk_size} outside 1..={MAX_CHUNK_SIZE}"
        )));
    }
    if head[9..] != key.check() {
        return Err(Error::AttachmentWrongKey);
    }
    let aead = key.aead()?;
    let full = chunk_size as usize + TAG_LEN;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    let mut current = vec![0u8; full];
    let mut next = vec![0u8; full];
    let mut current_len = read_full(&mut reader, &mut current)?;
    let mut index: u32 = 0;
    loop {
        let next_len = if current_len == full {
            read_full(&mut reader, &mut next)?
        } else {
            0
        };
        let last = next_len == 0;
        if current_len < TAG_LEN {
            return Err(Error::AttachmentTruncated);
        }
        // A failed open may leave the buffer overwritten: keep the last chunk to retry it.
        let last_copy = last.then(|| current[..current_len].to_vec());
        let chunk = &mut current[..current_len];
        let plain_len = match aead.open_in_place(chunk_nonce(index, last), Aad::from(&head), chunk)
        {
            Ok(plain) => plain.len(),
            Err(_) if last => {
                // A chunk that opens as a middle chunk at the end means chunks were cut off.
                let mut copy = last_copy.unwrap_or_default();
                let as_middle =
                    aead.open_in_place(chunk_nonce(index, false), Aad::from(&head), &mut copy);
                return Err(if as_middle.is_ok() {
                    Error::AttachmentTruncated
                } else {
                    Error::AttachmentTampered {
                        chunk: u64::from(index),
                    }
                });
            }
            Err(_) => {
                return Err(Error::AttachmentTampered {
                    chunk: u64::from(index),
                });
            }
        };
        written += plain_len as u64;
        if written > expected_size {
            return Err(Error::AttachmentSizeMismatch {
                expected: expected_size,
                actual: written,
            });
        }
        hasher.update(&current[..plain_len]);
        writer.write_all(&current[..plain_len]).map_err(io_err)?;
        if last {
            break;
        }
        std::mem::swap(&mut current, &mut next);
        current_len = next_len;
        index = index
            .checked_add(1)
            .ok_or_else(|| Error::MalformedAttachment("more than 2^32 chunks".into()))?;
    }
    writer.flush().map_err(io_err)?;
    if written != expected_size {
        return Err(Error::AttachmentSizeMismatch {
            expected: expected_size,
            actual: written,
        });
    }
    let actual: [u8; 32] = hasher.finalize().into();
    if &actual != expected_sha256 {
        return Err(Error::AttachmentHashMismatch);
    }
    Ok(written)
}

/// An attachment as a message carries it: where the ciphertext is and how to open and check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub name: String,
    /// IPFS CID of the ciphertext (CIDv1, base32, as the node returned it).
    pub cid: String,
    pub key: AttachmentKey,
    /// Plaintext size in bytes.
    pub size: u64,
    /// Media type without parameters, e.g. `image/png`.
    pub media_type: String,
    /// SHA-256 of the plaintext.
    pub sha256: [u8; 32],
    /// Written as `![...]` (an image); true for `image/*` when created here.
    pub is_image: bool,
}

fn is_media_type(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    matches!(t.split_once('/'), Some((a, b)) if token(a) && token(b))
}

/// Keeps a media type that is safe in the link (`type/subtype`, lower case, no parameters);
/// anything else becomes `application/octet-stream`.
pub fn normalize_media_type(t: &str) -> String {
    let bare = t
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if is_media_type(&bare) {
        bare
    } else {
        "application/octet-stream".into()
    }
}

/// Escapes a file name for Markdown link text: one line, every character Markdown could read as
/// syntax backslash-escaped (CommonMark allows a backslash before any ASCII punctuation).
fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '\r' | '\n' | '\t' => out.push(' '),
            '\\' | '[' | ']' | '(' | ')' | '*' | '_' | '`' | '<' | '>' | '!' | '&' | '#' | '~'
            | '|' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn unescape_name(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n) = chars.peek()
            && n.is_ascii_punctuation()
        {
            out.push(n);
            chars.next();
            continue;
        }
        out.push(c);
    }
    out
}

fn is_cid(cid: &str) -> bool {
    !cid.is_empty() && cid.len() <= 128 && cid.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl Attachment {
    /// The link's destination: `ipfs://CID#jasper=v1;k=KEY;s=SIZE;t=TYPE;h=SHA256`.
    pub fn url(&self) -> String {
        format!(
            "ipfs://{}#jasper=v1;k={};s={};t={};h={}",
            self.cid,
            self.key.to_base64url(),
            self.size,
            self.media_type,
            hex::encode(self.sha256)
        )
    }

    /// The Markdown link: `![name](url)` for an image, `[name](url)` otherwise.
    pub fn to_markdown(&self) -> String {
        format!(
            "{}[{}]({})",
            if self.is_image { "!" } else { "" },
            escape_name(&self.name),
            self.url()
        )
    }

    /// Parses a destination written by [`Attachment::url`]; `None` for any other link.
    fn from_url(name: String, url: &str, is_image: bool) -> Option<Self> {
        let rest = url.strip_prefix("ipfs://")?;
        let (cid, fragment) = rest.split_once('#')?;
        if !is_cid(cid) {
            return None;
        }
        let mut fields = fragment.split(';');
        if fields.next()? != "jasper=v1" {
            return None;
        }
        let (mut key, mut size, mut media, mut sha) = (None, None, None, None);
        for field in fields {
            let (k, v) = field.split_once('=')?;
            match k {
                "k" => key = Some(AttachmentKey::from_base64url(v).ok()?),
                "s" if v.bytes().all(|b| b.is_ascii_digit()) => size = Some(v.parse().ok()?),
                "t" if is_media_type(v) => media = Some(v.to_string()),
                "h" => {
                    let bytes = hex::decode(v).ok()?;
                    sha = Some(<[u8; 32]>::try_from(bytes).ok()?);
                }
                // Unknown fields are for later versions of the fragment; ignore them.
                "s" | "t" => return None,
                _ => {}
            }
        }
        Some(Self {
            name,
            cid: cid.to_string(),
            key: key?,
            size: size?,
            media_type: media?,
            sha256: sha?,
            is_image,
        })
    }
}

/// The Jasper attachments linked in Markdown content, in order. Lenient: other links, broken
/// links and links of unknown fragment versions are skipped, never an error.
pub fn parse_attachments(markdown: &str) -> Vec<Attachment> {
    let bytes = markdown.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                i += 2;
                continue;
            }
            b'[' => {}
            _ => {
                i += 1;
                continue;
            }
        }
        let is_image = i > 0 && bytes[i - 1] == b'!' && (i < 2 || bytes[i - 2] != b'\\');
        // The link text runs to the first unescaped `]` on the same line.
        let mut j = i + 1;
        let mut close = None;
        while j < bytes.len() {
            match bytes[j] {
                b'\\' => j += 2,
                b']' => {
                    close = Some(j);
                    break;
                }
                b'\n' | b'[' => break,
                _ => j += 1,
            }
        }
        let Some(close) = close else {
            i += 1;
            continue;
        };
        let after = &markdown[close + 1..];
        if let Some(dest) = after.strip_prefix("(ipfs://")
            && let Some(end) = dest.find(')')
        {
            let url = &after[1..1 + "ipfs://".len() + end];
            let name = unescape_name(&markdown[i + 1..close]);
            if let Some(a) = Attachment::from_url(name, url, is_image) {
                found.push(a);
                i = close + 1 + url.len() + 2;
                continue;
            }
        }
        i = close + 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn vector_key() -> AttachmentKey {
        AttachmentKey::from_bytes(std::array::from_fn(|i| i as u8))
    }

    fn encrypt(plain: &[u8], key: &AttachmentKey, chunk: u32) -> (Vec<u8>, EncryptedStats) {
        let mut out = Vec::new();
        let stats = encrypt_stream_with(plain, &mut out, key, chunk).expect("encrypt");
        (out, stats)
    }

    fn decrypt(ct: &[u8], key: &AttachmentKey, stats: &EncryptedStats) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        decrypt_stream(
            ct,
            &mut out,
            key,
            &stats.plaintext_sha256,
            stats.plaintext_size,
        )?;
        Ok(out)
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        let key = AttachmentKey::generate().expect("key");
        for len in [0, 1, 15, 16, 17, 32, 33, 100] {
            let plain = pattern(len);
            let (ct, stats) = encrypt(&plain, &key, 16);
            assert_eq!(stats.plaintext_size, len as u64);
            assert_eq!(stats.ciphertext_size, ct.len() as u64);
            assert_eq!(
                decrypt(&ct, &key, &stats).expect("decrypt"),
                plain,
                "len {len}"
            );
        }
    }

    #[test]
    fn vector() {
        // docs/protocol.md, "Attachments": key 00 01 .. 1f, plaintext byte i = i mod 251,
        // 150000 bytes, 64 KiB chunks.
        let plain = pattern(150_000);
        let (ct, stats) = encrypt(&plain, &vector_key(), DEFAULT_CHUNK_SIZE);
        assert_eq!(ct.len(), 25 + 150_000 + 3 * 16);
        assert_eq!(
            hex::encode(&ct[..25]),
            "4a41545401000100000aa1afc25a9208e75335e21ed4a5f25a"
        );
        assert_eq!(
            hex::encode(Sha256::digest(&ct)),
            "da8bd1802da1184019c58f2da54a5411a9526c46bdf5242f1b52c044278f4920"
        );
        assert_eq!(
            hex::encode(stats.plaintext_sha256),
            "02675bf9284bd74223e98ceea96ebee4c9a469272ead358f462d89753f8c909b"
        );
        let a = Attachment {
            name: "photo [1].png".into(),
            cid: "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq".into(),
            key: vector_key(),
            size: stats.plaintext_size,
            media_type: "image/png".into(),
            sha256: stats.plaintext_sha256,
            is_image: true,
        };
        let md = a.to_markdown();
        assert_eq!(
            md,
            "![photo \\[1\\].png](ipfs://bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq\
             #jasper=v1;k=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8;s=150000;t=image/png;\
             h=02675bf9284bd74223e98ceea96ebee4c9a469272ead358f462d89753f8c909b)"
        );
        assert_eq!(parse_attachments(&md), vec![a]);
    }

    #[test]
    fn flipped_byte_is_refused() {
        let key = vector_key();
        let plain = pattern(100);
        let (ct, stats) = encrypt(&plain, &key, 16);
        for pos in [HEADER_LEN, HEADER_LEN + 40, ct.len() - 1] {
            let mut bad = ct.clone();
            bad[pos] ^= 1;
            assert!(
                matches!(
                    decrypt(&bad, &key, &stats),
                    Err(Error::AttachmentTampered { .. })
                ),
                "flip at {pos}"
            );
        }
        // The chunk size is bound into every chunk's AAD too.
        let mut bad = ct.clone();
        bad[8] ^= 1;
        assert!(decrypt(&bad, &key, &stats).is_err());
    }

    #[test]
    fn truncation_is_refused() {
        let key = vector_key();
        let plain = pattern(100); // chunks of 16: six full, one of 4
        let (ct, stats) = encrypt(&plain, &key, 16);
        let without_last = &ct[..ct.len() - (4 + 16)];
        assert_eq!(
            decrypt(without_last, &key, &stats),
            Err(Error::AttachmentTruncated)
        );
        let without_two = &ct[..ct.len() - (4 + 16) - 32];
        assert_eq!(
            decrypt(without_two, &key, &stats),
            Err(Error::AttachmentTruncated)
        );
        assert!(decrypt(&ct[..ct.len() - 1], &key, &stats).is_err());
        assert!(matches!(
            decrypt(&ct[..10], &key, &stats),
            Err(Error::MalformedAttachment(_))
        ));
    }

    #[test]
    fn reordered_chunks_are_refused() {
        let key = vector_key();
        let plain = pattern(100);
        let (ct, stats) = encrypt(&plain, &key, 16);
        let mut bad = ct.clone();
        let (a, b) = (HEADER_LEN, HEADER_LEN + 32);
        let first = ct[a..a + 32].to_vec();
        bad.copy_within(b..b + 32, a);
        bad[b..b + 32].copy_from_slice(&first);
        assert_eq!(
            decrypt(&bad, &key, &stats),
            Err(Error::AttachmentTampered { chunk: 0 })
        );
    }

    #[test]
    fn wrong_key_and_wrong_hash_are_refused() {
        let plain = pattern(100);
        let (ct, stats) = encrypt(&plain, &vector_key(), 16);
        let other = AttachmentKey::generate().expect("key");
        assert_eq!(decrypt(&ct, &other, &stats), Err(Error::AttachmentWrongKey));
        let mut wrong = stats.clone();
        wrong.plaintext_sha256[0] ^= 1;
        assert_eq!(
            decrypt(&ct, &vector_key(), &wrong),
            Err(Error::AttachmentHashMismatch)
        );
        wrong = stats.clone();
        wrong.plaintext_size = 99;
        assert!(matches!(
            decrypt(&ct, &vector_key(), &wrong),
            Err(Error::AttachmentSizeMismatch { .. })
        ));
    }

    #[test]
    fn parse_is_lenient_and_keeps_order() {
        let a = Attachment {
            name: "notes (final)\\v2].txt".into(),
            cid: "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi".into(),
            key: vector_key(),
            size: 3,
            media_type: normalize_media_type("Text/Plain; charset=utf-8"),
            sha256: [7; 32],
            is_image: false,
        };
        assert_eq!(a.media_type, "text/plain");
        let md = format!(
            "see [a site](https://example.com) and {} and [x](ipfs://bafy#other) \
             ![bad](ipfs://bafy#jasper=v1;k=short;s=1;t=a/b;h=00) [\\[",
            a.to_markdown()
        );
        assert_eq!(parse_attachments(&md), vec![a.clone()]);
        let two = format!("{}\n\n{}", a.to_markdown(), a.to_markdown());
        assert_eq!(parse_attachments(&two).len(), 2);
        assert_eq!(normalize_media_type("x y/z"), "application/octet-stream");
    }
}
