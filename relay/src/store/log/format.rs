//! The log store's files: segments of framed records, and the index file written beside a
//! segment when it is sealed.
//!
//! A segment (`<id as 16 hex digits>.seg`) is a 16-byte header (`JSPRSEG1`, then the arrival
//! sequence number already assigned when it was created, u64 LE, so that the counter survives
//! every packet of the older segments expiring) followed by frames:
//!
//! ```text
//! frame  = body_len u32 LE | crc32c(body) u32 LE | body
//! body   = 1 | seq u64 LE | expires_at u64 LE | hash [32] | recipient_fp [32]
//!              | len u32 LE | recipient | len u32 LE | message | len u32 LE | signature
//!        | 2 | expires_at u64 LE | hash [32]          (an expired packet still remembered)
//! ```
//!
//! Frames are only appended. After a crash the active segment may end in a torn frame (short,
//! or failing its checksum); recovery truncates it there. Nothing after that point was
//! acknowledged: a put is answered only after an `fdatasync` that started after its write,
//! and that sync made every earlier byte of the file durable too.
//!
//! An index file (`<id>.idx`) lists a sealed segment's records without their payload, so that
//! opening a store of 10^7 packets reads about 1 GB of index rather than 30 GB of segments:
//! `JSPRIDX1 | count u64 LE | entries | crc32c(everything before) u32 LE`, each entry
//! `kind u8 | seq u64 | expires_at u64 | hash [32] | recipient_fp [32] | offset u64 | len u32`
//! (LE). It is written only after its segment is synced; one that is missing or fails its
//! checksum is rebuilt from the segment.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use jasper_core::MessageHash;

use crate::error::RelayError;
use crate::store::{NewPacket, StoreResult, StoredPacket};

pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"JSPRSEG1";
pub(super) const INDEX_MAGIC: &[u8; 8] = b"JSPRIDX1";
pub(super) const SEGMENT_HEADER_LEN: u64 = 16;
const FRAME_HEADER_LEN: usize = 8;
const KIND_PACKET: u8 = 1;
const KIND_TOMBSTONE: u8 = 2;
/// Fixed part of a packet body: kind, seq, expires_at, hash, fingerprint, three lengths.
const PACKET_FIXED: usize = 1 + 8 + 8 + 32 + 32 + 12;
const TOMBSTONE_BODY: usize = 1 + 8 + 32;
const INDEX_ENTRY_LEN: usize = 1 + 8 + 8 + 32 + 32 + 8 + 4;
/// Larger bodies are corrupt: no packet a relay accepts comes near it.
const MAX_BODY: usize = 64 << 20;

/// A record's place and keys, without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RecordMeta {
    pub tombstone: bool,
    /// 0 for a tombstone.
    pub seq: u64,
    pub expires_at: u64,
    pub hash: MessageHash,
    pub recipient_fp: [u8; 32],
    /// Of the frame, from the start of the segment file.
    pub offset: u64,
    /// Of the whole frame.
    pub len: u32,
}

pub(super) fn segment_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:016x}.seg"))
}

pub(super) fn index_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id:016x}.idx"))
}

/// The segment ids in `dir`, ascending.
pub(super) fn segment_ids(dir: &Path) -> StoreResult<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = entry.map_err(io(dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".seg")
            && let Ok(id) = u32::from_str_radix(stem, 16)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

pub(super) fn io(path: &Path) -> impl Fn(std::io::Error) -> RelayError + '_ {
    move |e| RelayError::Storage(format!("{}: {e}", path.display()))
}

/// A packet's frame with seq 0 and no checksum yet: built by the caller, off the writer.
pub(super) fn packet_frame(p: &NewPacket) -> Vec<u8> {
    let body_len = PACKET_FIXED + p.recipient.len() + p.message.len() + p.signature.len();
    let mut f = Vec::with_capacity(FRAME_HEADER_LEN + body_len);
    f.extend_from_slice(&(body_len as u32).to_le_bytes());
    f.extend_from_slice(&[0u8; 4]);
    f.push(KIND_PACKET);
    f.extend_from_slice(&[0u8; 8]);
    f.extend_from_slice(&p.expires_at.to_le_bytes());
    f.extend_from_slice(p.hash.as_bytes());
    f.extend_from_slice(&p.recipient_fp);
    for field in [&p.recipient, &p.message, &p.signature] {
        f.extend_from_slice(&(field.len() as u32).to_le_bytes());
        f.extend_from_slice(field.as_bytes());
    }
    f
}

/// Fills in the seq and the checksum of a frame from [`packet_frame`].
pub(super) fn seal_frame(frame: &mut [u8], seq: u64) {
    frame[FRAME_HEADER_LEN + 1..FRAME_HEADER_LEN + 9].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&frame[FRAME_HEADER_LEN..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

pub(super) fn tombstone_frame(hash: &MessageHash, expires_at: u64) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_HEADER_LEN + TOMBSTONE_BODY);
    f.extend_from_slice(&(TOMBSTONE_BODY as u32).to_le_bytes());
    f.extend_from_slice(&[0u8; 4]);
    f.push(KIND_TOMBSTONE);
    f.extend_from_slice(&expires_at.to_le_bytes());
    f.extend_from_slice(hash.as_bytes());
    let crc = crc32c::crc32c(&f[FRAME_HEADER_LEN..]);
    f[4..8].copy_from_slice(&crc.to_le_bytes());
    f
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn hash_at(b: &[u8], at: usize) -> [u8; 32] {
    b[at..at + 32].try_into().expect("32 bytes")
}

/// The frame at the start of `bytes`: its checked body and whole length, or `None` if it is
/// short, oversized or fails its checksum (a torn write, or corruption).
fn frame_at(bytes: &[u8]) -> Option<(&[u8], usize)> {
    if bytes.len() < FRAME_HEADER_LEN {
        return None;
    }
    let len = u32_at(bytes, 0) as usize;
    if len == 0 || len > MAX_BODY || bytes.len() < FRAME_HEADER_LEN + len {
        return None;
    }
    let body = &bytes[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
    (crc32c::crc32c(body) == u32_at(bytes, 4)).then_some((body, FRAME_HEADER_LEN + len))
}

fn meta_of(body: &[u8], offset: u64, len: usize) -> Option<RecordMeta> {
    match *body.first()? {
        KIND_PACKET if body.len() >= PACKET_FIXED => Some(RecordMeta {
            tombstone: false,
            seq: u64_at(body, 1),
            expires_at: u64_at(body, 9),
            hash: MessageHash::from_bytes(hash_at(body, 17)),
            recipient_fp: hash_at(body, 49),
            offset,
            len: len as u32,
        }),
        KIND_TOMBSTONE if body.len() == TOMBSTONE_BODY => Some(RecordMeta {
            tombstone: true,
            seq: 0,
            expires_at: u64_at(body, 1),
            hash: MessageHash::from_bytes(hash_at(body, 9)),
            recipient_fp: [0; 32],
            offset,
            len: len as u32,
        }),
        _ => None,
    }
}

/// The records of a segment's bytes (header included) and where the valid part ends.
pub(super) fn scan(bytes: &[u8]) -> StoreResult<(u64, Vec<RecordMeta>, u64)> {
    if bytes.len() < SEGMENT_HEADER_LEN as usize || &bytes[..8] != SEGMENT_MAGIC {
        return Err(RelayError::Storage("not a Jasper log segment".into()));
    }
    let seq_base = u64_at(bytes, 8);
    let mut at = SEGMENT_HEADER_LEN as usize;
    let mut records = Vec::new();
    while let Some((body, len)) = frame_at(&bytes[at..]) {
        let Some(meta) = meta_of(body, at as u64, len) else {
            break;
        };
        records.push(meta);
        at += len;
    }
    Ok((seq_base, records, at as u64))
}

/// The three strings of a packet frame read back from disk.
pub(super) struct PacketFields {
    pub recipient: String,
    pub message: String,
    pub signature: String,
}

fn packet_fields(body: &[u8]) -> Option<PacketFields> {
    let mut at = PACKET_FIXED - 12;
    let mut field = || {
        let len = u32_at(body, at) as usize;
        let s = body.get(at + 4..at + 4 + len)?;
        at += 4 + len;
        String::from_utf8(s.to_vec()).ok()
    };
    Some(PacketFields {
        recipient: field()?,
        message: field()?,
        signature: field()?,
    })
}

/// Reads and checks one packet record.
pub(super) fn read_packet(file: &File, meta: &RecordMeta) -> StoreResult<PacketFields> {
    let mut buf = vec![0u8; meta.len as usize];
    file.read_exact_at(&mut buf, meta.offset)
        .map_err(|e| RelayError::Storage(format!("cannot read record {}: {e}", meta.hash)))?;
    frame_at(&buf)
        .filter(|(body, _)| body.first() == Some(&KIND_PACKET))
        .and_then(|(body, _)| packet_fields(body))
        .ok_or_else(|| RelayError::Storage(format!("corrupt record {}", meta.hash)))
}

pub(super) fn stored_packet(fields: PacketFields, meta: &RecordMeta) -> StoredPacket {
    StoredPacket {
        recipient: fields.recipient,
        message: fields.message,
        hash: meta.hash,
        signature: fields.signature,
        expires_at: meta.expires_at,
        seq: meta.seq,
    }
}

/// Writes a sealed segment's index file (synced), through a temporary name.
pub(super) fn write_index(dir: &Path, id: u32, records: &[RecordMeta]) -> StoreResult<()> {
    let mut buf = Vec::with_capacity(20 + records.len() * INDEX_ENTRY_LEN);
    buf.extend_from_slice(INDEX_MAGIC);
    buf.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for r in records {
        buf.push(if r.tombstone {
            KIND_TOMBSTONE
        } else {
            KIND_PACKET
        });
        buf.extend_from_slice(&r.seq.to_le_bytes());
        buf.extend_from_slice(&r.expires_at.to_le_bytes());
        buf.extend_from_slice(r.hash.as_bytes());
        buf.extend_from_slice(&r.recipient_fp);
        buf.extend_from_slice(&r.offset.to_le_bytes());
        buf.extend_from_slice(&r.len.to_le_bytes());
    }
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let path = index_path(dir, id);
    let tmp = path.with_extension("idx.tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&buf).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(())
}

/// A sealed segment's records from its index file, or `None` if it is missing or damaged.
pub(super) fn read_index(dir: &Path, id: u32) -> Option<Vec<RecordMeta>> {
    let bytes = std::fs::read(index_path(dir, id)).ok()?;
    if bytes.len() < 20 || &bytes[..8] != INDEX_MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32_at(crc, 0) {
        return None;
    }
    let count = u64_at(body, 8) as usize;
    if body.len() != 16 + count.checked_mul(INDEX_ENTRY_LEN)? {
        return None;
    }
    Some(
        body[16..]
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(|e| RecordMeta {
                tombstone: e[0] == KIND_TOMBSTONE,
                seq: u64_at(e, 1),
                expires_at: u64_at(e, 9),
                hash: MessageHash::from_bytes(hash_at(e, 17)),
                recipient_fp: hash_at(e, 49),
                offset: u64_at(e, 81),
                len: u32_at(e, 89),
            })
            .collect(),
    )
}

/// Creates a segment (header synced, directory entry synced) and opens it for appending.
pub(super) fn create_segment(dir: &Path, id: u32, seq_base: u64) -> StoreResult<File> {
    let path = segment_path(dir, id);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io(&path))?;
    let mut header = Vec::with_capacity(SEGMENT_HEADER_LEN as usize);
    header.extend_from_slice(SEGMENT_MAGIC);
    header.extend_from_slice(&seq_base.to_le_bytes());
    f.write_all_at(&header, 0).map_err(io(&path))?;
    f.sync_all().map_err(io(&path))?;
    sync_dir(dir)?;
    Ok(f)
}

pub(super) fn sync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(text: &str) -> NewPacket {
        NewPacket {
            recipient: "MIIB-recipient".into(),
            recipient_fp: [7; 32],
            message: text.into(),
            hash: MessageHash::of_message(text),
            signature: "sig".into(),
            expires_at: 1_900_000_000,
        }
    }

    fn segment(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut bytes = SEGMENT_MAGIC.to_vec();
        bytes.extend_from_slice(&41u64.to_le_bytes());
        for f in frames {
            bytes.extend_from_slice(f);
        }
        bytes
    }

    #[test]
    fn frames_scan_back_and_a_torn_tail_ends_the_valid_part() {
        let mut a = packet_frame(&packet("one"));
        seal_frame(&mut a, 42);
        let mut b = packet_frame(&packet("two"));
        seal_frame(&mut b, 43);
        let t = tombstone_frame(&MessageHash::of_message("gone"), 5);
        let bytes = segment(&[a.clone(), t.clone(), b.clone()]);
        let (base, records, end) = scan(&bytes).unwrap();
        assert_eq!(base, 41);
        assert_eq!(end, bytes.len() as u64);
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].seq, 42);
        assert_eq!(records[0].hash, MessageHash::of_message("one"));
        assert_eq!(records[0].recipient_fp, [7; 32]);
        assert!(records[1].tombstone && records[1].expires_at == 5);
        assert_eq!(records[2].offset, 16 + (a.len() + t.len()) as u64);
        for cut in 1..b.len() {
            let torn = &bytes[..bytes.len() - cut];
            let (_, records, end) = scan(torn).unwrap();
            assert_eq!(records.len(), 2, "cut {cut}");
            assert_eq!(end, 16 + (a.len() + t.len()) as u64);
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(scan(&flipped).unwrap().1.len(), 2);
        assert!(scan(b"not a segment at all").is_err());
    }

    #[test]
    fn a_record_reads_back_and_an_index_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let f = create_segment(dir.path(), 3, 0).unwrap();
        let mut a = packet_frame(&packet("hello"));
        seal_frame(&mut a, 1);
        f.write_all_at(&a, SEGMENT_HEADER_LEN).unwrap();
        let bytes = std::fs::read(segment_path(dir.path(), 3)).unwrap();
        let (_, records, _) = scan(&bytes).unwrap();
        let fields = read_packet(&f, &records[0]).unwrap();
        assert_eq!(fields.message, "hello");
        assert_eq!(fields.recipient, "MIIB-recipient");
        assert_eq!(fields.signature, "sig");
        write_index(dir.path(), 3, &records).unwrap();
        assert_eq!(read_index(dir.path(), 3).unwrap(), records);
        let idx = index_path(dir.path(), 3);
        let mut damaged = std::fs::read(&idx).unwrap();
        damaged[20] ^= 0xff;
        std::fs::write(&idx, damaged).unwrap();
        assert!(read_index(dir.path(), 3).is_none());
        assert_eq!(segment_ids(dir.path()).unwrap(), vec![3]);
    }
}
