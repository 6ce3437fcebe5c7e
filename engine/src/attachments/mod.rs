//! Sending and downloading encrypted attachments: the file is encrypted to a temporary file in
//! the data directory, streamed to the IPFS node, and linked from the message's Markdown; a
//! download streams the ciphertext back, decrypts and verifies it, and only then renames the
//! plaintext into place. Built on the other parts' public API only.

use std::path::{Path, PathBuf};

use jasper_core::attachment::{self as format, AttachmentKey, HEADER_LEN};

use crate::engine::Engine;
use crate::error::{EngineError, Result};
pub mod ipfs;

use crate::model::{DownloadProgress, DownloadResult, Message};
use ipfs::IpfsClient;

/// A media type from the file name's extension (the link carries it; receivers show images);
/// `application/octet-stream` when the extension is unknown.
pub fn media_type_for(path: &Path) -> &'static str {
    mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream")
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
        // Through normalize_media_type: the link wants `type/subtype` in lower case, and a few
        // of mime_guess's types have upper-case letters.
        let media_type = format::normalize_media_type(media_type_for(file));
        let (source, scratch) = (file.to_path_buf(), self.scratch_dir()?);
        // The ciphertext lives in a temporary file that is removed when `encrypted` drops, on
        // success and on every error path alike.
        let (encrypted, (key, stats)) = blocking(move || {
            let input = std::fs::File::open(&source)
                .map_err(|e| EngineError::InvalidArgument(format!("{}: {e}", source.display())))?;
            let mut encrypted = tempfile::Builder::new()
                .suffix(".up")
                .tempfile_in(&scratch)
                .map_err(|e| io("temporary file", e))?;
            let mut writer = std::io::BufWriter::with_capacity(256 * 1024, encrypted.as_file_mut());
            let result = format::encrypt_stream(std::io::BufReader::new(input), &mut writer)?;
            writer
                .into_inner()
                .map_err(|e| io("temporary file", e))?
                .sync_all()
                .map_err(|e| io("temporary file", e))?;
            Ok((encrypted, result))
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
    /// file is an error and leaves nothing behind). `progress` is called as ciphertext arrives
    /// (`|_| ()` when nobody is interested); it must not block: a shell that forwards progress
    /// somewhere slow drops or queues there.
    pub async fn download(
        &self,
        msg_id: &str,
        index: usize,
        dest: &Path,
        mut progress: impl FnMut(DownloadProgress) + Send,
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
        let cipher = tempfile::Builder::new()
            .suffix(".down")
            .tempfile_in(self.scratch_dir()?)
            .map_err(|e| io("temporary file", e))?;
        let total = expected;
        ipfs.cat_to_file(&attachment.cid, cipher.path(), expected, |received| {
            progress(DownloadProgress { received, total })
        })
        .await?;
        // The plaintext is written beside the destination so the final rename (`persist`) stays
        // on one file system. Until then it is a temporary file, removed on any error.
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let (key, sha, size) = (
            AttachmentKey::clone(&attachment.key),
            attachment.sha256,
            attachment.size,
        );
        let plain = blocking(move || {
            let input = std::fs::File::open(cipher.path()).map_err(|e| io("downloaded file", e))?;
            let mut builder = tempfile::Builder::new();
            builder.prefix(".").suffix(".jasper-part");
            // The file becomes the user's download: give it the mode File::create would (0o666
            // less the umask), not a temporary file's owner-only 0o600.
            #[cfg(unix)]
            builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
            let mut plain = builder
                .tempfile_in(&parent)
                // tempfile's error names the path it tried.
                .map_err(|e| EngineError::InvalidArgument(e.to_string()))?;
            let mut writer = std::io::BufWriter::with_capacity(256 * 1024, plain.as_file_mut());
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
            // `cipher` drops here: the ciphertext is gone before the plaintext is in place.
            Ok(plain)
        })
        .await?;
        plain.persist(dest).map_err(|e| {
            EngineError::InvalidArgument(format!("{}: {}", dest.display(), e.error))
        })?;
        Ok(DownloadResult {
            path: dest.display().to_string(),
            size: attachment.size,
            sha256: hex::encode(attachment.sha256),
            media_type: attachment.media_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_type_comes_from_the_extension_and_defaults_to_octet_stream() {
        for (name, want) in [
            ("cat [1].png", "image/png"),
            ("PHOTO.JPG", "image/jpeg"),
            ("report.pdf", "application/pdf"),
            ("big.bin", "application/octet-stream"),
            ("archive.unknown-ext", "application/octet-stream"),
            ("no-extension", "application/octet-stream"),
        ] {
            assert_eq!(media_type_for(Path::new(name)), want, "{name}");
        }
    }
}
