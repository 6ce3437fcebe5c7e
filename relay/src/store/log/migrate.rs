//! Migration of a data directory of the fjall store (the embedded store until 2026-12) into
//! the log, once, on the first open: every live packet with its arrival seq, every tombstone,
//! and the arrival counter, so that peers' cursors and the TTL-never-resurrected guarantee
//! hold across the upgrade.
//!
//! Crash-safe by order: the log is written in `log.migrating`, synced, renamed to `log` (the
//! commit point) and the directory synced; only then are fjall's files removed. A crash before
//! the rename redoes the migration from the untouched fjall store; a crash after it only
//! leaves fjall files, removed on the next open.

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{self, RecordMeta, SEGMENT_HEADER_LEN};
use crate::store::StoreResult;
use crate::store::embedded::{self, Exported};

/// What fjall keeps in a data directory: its journals (`*.jnl`) and these.
const FJALL_ENTRIES: [&str; 3] = ["keyspaces", "version", "lock"];

fn holds_fjall(data_dir: &Path) -> bool {
    data_dir.join("keyspaces").is_dir() && data_dir.join("version").is_file()
}

/// Migrates `data_dir`'s fjall store into `log_dir` if there is one and no log yet; removes
/// fjall's files once the log is committed.
pub(super) fn from_fjall(
    data_dir: &Path,
    log_dir: &Path,
    retention: u64,
    segment_bytes: u64,
) -> StoreResult<()> {
    if !holds_fjall(data_dir) {
        return Ok(());
    }
    if !log_dir.exists() {
        let tmp = data_dir.join("log.migrating");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(format::io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(format::io(&tmp))?;
        let mut out = SegmentsOut::new(&tmp, segment_bytes)?;
        let mut packets = 0u64;
        let mut tombstones = 0u64;
        let seq = embedded::export(data_dir, &mut |item| {
            match item {
                Exported::Tombstone { hash, forget_at } => {
                    tombstones += 1;
                    let frame = format::tombstone_frame(&hash, forget_at.saturating_sub(retention));
                    out.append(frame, |offset, len| RecordMeta {
                        tombstone: true,
                        seq: 0,
                        expires_at: forget_at.saturating_sub(retention),
                        hash,
                        recipient_fp: [0; 32],
                        offset,
                        len,
                    })?;
                }
                Exported::Live { packet, seq } => {
                    packets += 1;
                    let mut frame = format::packet_frame(&packet);
                    format::seal_frame(&mut frame, seq);
                    out.seq = out.seq.max(seq);
                    out.append(frame, |offset, len| RecordMeta {
                        tombstone: false,
                        seq,
                        expires_at: packet.expires_at,
                        hash: packet.hash,
                        recipient_fp: packet.recipient_fp,
                        offset,
                        len,
                    })?;
                }
            }
            Ok(())
        })?;
        out.finish(seq)?;
        std::fs::rename(&tmp, log_dir).map_err(format::io(log_dir))?;
        format::sync_dir(data_dir)?;
        tracing::info!(
            packets,
            tombstones,
            seq,
            "migrated the fjall store into the log"
        );
    }
    for name in FJALL_ENTRIES {
        let path = data_dir.join(name);
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format::io(&path)(e)),
        }
    }
    for entry in std::fs::read_dir(data_dir).map_err(format::io(data_dir))? {
        let path = entry.map_err(format::io(data_dir))?.path();
        if path.extension().is_some_and(|e| e == "jnl") {
            std::fs::remove_file(&path).map_err(format::io(&path))?;
        }
    }
    format::sync_dir(data_dir)
}

/// Segments written in one go (the migration), sealed as they fill up.
struct SegmentsOut<'a> {
    dir: &'a Path,
    id: u32,
    file: std::fs::File,
    len: u64,
    records: Vec<RecordMeta>,
    segment_bytes: u64,
    /// The highest seq written so far (the next segment's header).
    seq: u64,
}

impl<'a> SegmentsOut<'a> {
    fn new(dir: &'a Path, segment_bytes: u64) -> StoreResult<Self> {
        Ok(Self {
            dir,
            id: 1,
            file: format::create_segment(dir, 1, 0)?,
            len: SEGMENT_HEADER_LEN,
            records: Vec::new(),
            segment_bytes,
            seq: 0,
        })
    }

    fn append(
        &mut self,
        frame: Vec<u8>,
        meta: impl FnOnce(u64, u32) -> RecordMeta,
    ) -> StoreResult<()> {
        let path = format::segment_path(self.dir, self.id);
        self.file
            .write_all_at(&frame, self.len)
            .map_err(format::io(&path))?;
        self.records.push(meta(self.len, frame.len() as u32));
        self.len += frame.len() as u64;
        if self.len >= self.segment_bytes {
            self.file.sync_data().map_err(format::io(&path))?;
            format::write_index(self.dir, self.id, &self.records)?;
            self.records.clear();
            self.id += 1;
            self.file = format::create_segment(self.dir, self.id, self.seq)?;
            self.len = SEGMENT_HEADER_LEN;
        }
        Ok(())
    }

    /// Syncs the last segment. The arrival counter goes in a segment header of its own, so
    /// that it survives even if no packet came along.
    fn finish(mut self, seq: u64) -> StoreResult<()> {
        let path = format::segment_path(self.dir, self.id);
        self.file.sync_data().map_err(format::io(&path))?;
        if seq > self.seq {
            format::write_index(self.dir, self.id, &self.records)?;
            self.id += 1;
            self.file = format::create_segment(self.dir, self.id, seq)?;
        }
        format::sync_dir(self.dir)
    }
}
