//! Sending and downloading encrypted attachments: the file is encrypted to a temporary file in
//! the data directory, streamed to the IPFS node, and linked from the message's Markdown; a
//! download streams the ciphertext back, decrypts and verifies it, and only then renames the
//! plaintext into place. Built on the other parts' public API only.

use std::path::{Path, PathBuf};

use jasper_core::attachment::{self as format, AttachmentKey, HEADER_LEN};
use tokio::sync::mpsc;

use crate::engine::Engine;
use crate::error::{EngineError, Result};
pub mod ipfs;

use crate::model::{DownloadProgress, DownloadResult, Message};
use ipfs::IpfsClient;

/// A media type from the file name's extension (the link carries it; receivers show images).
pub fn media_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "avif" => "image/avif",
        "heic" => "image/heic",
        "txt" | "md" => "text/plain",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "json" => "application/json",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        _ => "application/octet-stream",
    }
}

/// Removes a temporary file when dropped, unless it was kept.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn io(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Protocol(jasper_core::Error::AttachmentIo(format!("{what}: {e}")))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io("worker", e))?
}

/// `engine.attachments()`: send files as encrypted attachments, and download them.
#[derive(Clone)]
pub struct Attachments {
    pub(crate) engine: Engine,
}

impl Attachments {
    fn ipfs(&self) -> Result<IpfsClient> {
        let c = self.engine.config();
        let api = c.ipfs_api.as_deref().ok_or_else(|| {
            EngineError::InvalidArgument("no IPFS node is configured (ipfs_api)".into())
        })?;
        Ok(IpfsClient::new(api, c.ipfs_gateway.as_deref()))
    }

    fn scratch_dir(&self) -> Result<PathBuf> {
        let dir = self.engine.config().data_dir.join("attachments.tmp");
        std::fs::create_dir_all(&dir).map_err(|e| io("scratch directory", e))?;
        Ok(dir)
    }

    /// Encrypts `file` with a fresh key, adds the ciphertext to IPFS and sends `text` followed
    /// by the attachment's Markdown link (an image link for `image/*`).
    pub async fn send(&self, target: &str, text: &str, file: &Path) -> Result<Message> {
        // Fail before the upload when the message could not be sent anyway.
        self.engine.conversations().resolve(target)?;
        let ipfs = self.ipfs()?;
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                EngineError::InvalidArgument(format!("{} has no file name", file.display()))
            })?
            .to_owned();
        let media_type = media_type_for(file).to_owned();
        let encrypted = TempFile(Some(
            self.scratch_dir()?
                .join(format!("{}.up", uuid::Uuid::new_v4().simple())),
        ));
        let (source, dest) = (file.to_path_buf(), encrypted.path().to_path_buf());
        let (key, stats) = blocking(move || {
            let input = std::fs::File::open(&source)
                .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", source.display())))?;
            let output = std::fs::File::create(&dest).map_err(|e| io("temporary file", e))?;
            let mut writer = std::io::BufWriter::with_capacity(256 * 1024, output);
            let result = format::encrypt_stream(std::io::BufReader::new(input), &mut writer)?;
            writer
                .into_inner()
                .map_err(|e| io("temporary file", e))?
                .sync_all()
                .map_err(|e| io("temporary file", e))?;
            Ok(result)
        })
        .await?;
        let cid = ipfs.add_file(encrypted.path()).await?;
        drop(encrypted);
        let link = format::Attachment {
            is_image: media_type.starts_with("image/"),
            name,
            cid,
            key,
            size: stats.plaintext_size,
            media_type,
            sha256: stats.plaintext_sha256,
        }
        .to_markdown();
        let content = if text.trim().is_empty() {
            link
        } else {
            format!("{text}\n\n{link}")
        };
        self.engine.messages().send(target, &content).await
    }

    /// Fetches attachment `index` of message `msg_id` from IPFS, decrypts and verifies it, and
    /// renames it to `dest` only when every check passed (a tampered, truncated or wrongly keyed
    /// file is an error and leaves nothing behind). Progress goes to `progress` when given.
    pub async fn download(
        &self,
        msg_id: &str,
        index: usize,
        dest: &Path,
        progress: Option<mpsc::UnboundedSender<DownloadProgress>>,
    ) -> Result<DownloadResult> {
        let message = self.engine.messages().get(msg_id)?;
        let parsed = format::parse_attachments(&message.content);
        let attachment = parsed.get(index).cloned().ok_or_else(|| {
            EngineError::InvalidArgument(format!(
                "message {msg_id} has {} attachment(s), no index {index}",
                parsed.len()
            ))
        })?;
        let ipfs = self.ipfs()?;
        // Ciphertext: header, plaintext, one tag per chunk (an empty file still has one chunk).
        let chunks = attachment
            .size
            .div_ceil(u64::from(format::DEFAULT_CHUNK_SIZE))
            .max(1);
        let expected = HEADER_LEN as u64 + attachment.size + 16 * chunks;
        let scratch = self.scratch_dir()?;
        let id = uuid::Uuid::new_v4().simple();
        let cipher = TempFile(Some(scratch.join(format!("{id}.down"))));
        let total = expected;
        ipfs.cat_to_file(&attachment.cid, cipher.path(), expected, |received| {
            if let Some(tx) = &progress {
                let _ = tx.send(DownloadProgress { received, total });
            }
        })
        .await?;
        // The plaintext is written beside the destination so the final rename stays on one
        // file system.
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let plain = TempFile(Some(
            parent.join(format!(".{}.jasper-part", uuid::Uuid::new_v4().simple())),
        ));
        let (cipher_path, plain_path) = (cipher.path().to_path_buf(), plain.path().to_path_buf());
        let (key, sha, size) = (
            AttachmentKey::clone(&attachment.key),
            attachment.sha256,
            attachment.size,
        );
        blocking(move || {
            let input = std::fs::File::open(&cipher_path).map_err(|e| io("downloaded file", e))?;
            let output = std::fs::File::create(&plain_path).map_err(|e| {
                EngineError::InvalidArgument(format!("{}: {e}", plain_path.display()))
            })?;
            let mut writer = std::io::BufWriter::with_capacity(256 * 1024, output);
            format::decrypt_stream(
                std::io::BufReader::with_capacity(256 * 1024, input),
                &mut writer,
                &key,
                &sha,
                size,
            )?;
            writer
                .into_inner()
                .map_err(|e| io("output file", e))?
                .sync_all()
                .map_err(|e| io("output file", e))?;
            Ok(())
        })
        .await?;
        drop(cipher);
        std::fs::rename(plain.path(), dest)
            .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", dest.display())))?;
        plain.keep();
        Ok(DownloadResult {
            path: dest.display().to_string(),
            size: attachment.size,
            sha256: hex::encode(attachment.sha256),
            media_type: attachment.media_type,
        })
    }
}
