//! A client of an IPFS node's HTTP RPC API (Kubo's `/api/v0/add` and `/api/v0/cat`; js-ipfs
//! serves the same) and, optionally, of a gateway (`GET /ipfs/CID`). It only ever moves
//! ciphertext: attachments are encrypted before they reach it (see `jasper_core::attachment`).
//! Both directions stream between a file and the socket.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::error::{EngineError, Result};

/// How long the node may look for a CID it does not have before `cat` gives up (js-ipfs waits
/// forever without it).
const CAT_TIMEOUT: &str = "30s";

pub struct IpfsClient {
    http: reqwest::Client,
    api: String,
    gateway: Option<String>,
}

fn ipfs_err(what: &str, e: impl std::fmt::Display) -> EngineError {
    // No EngineError variant of its own yet (the FFI maps every variant): carried as an
    // attachment I/O failure, code `protocol`.
    EngineError::Protocol(jasper_core::Error::AttachmentIo(format!(
        "IPFS {what}: {e}"
    )))
}

impl IpfsClient {
    /// `api` is the RPC API's base URL (`http://127.0.0.1:5001`), `gateway` a gateway's.
    pub fn new(api: &str, gateway: Option<&str>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("jasperd/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("static client configuration is valid");
        Self {
            http,
            api: api.trim_end_matches('/').to_owned(),
            gateway: gateway.map(|g| g.trim_end_matches('/').to_owned()),
        }
    }

    /// Adds (and pins) a file, streamed as one multipart part; returns its CID (v1, base32).
    pub async fn add_file(&self, path: &Path) -> Result<String> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ipfs_err("add: open", e))?;
        let boundary = format!("jasper-{}", uuid::Uuid::new_v4().simple());
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"blob\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let body = futures::stream::once(async move { Ok(bytes::Bytes::from(head)) })
            .chain(tokio_util::io::ReaderStream::with_capacity(
                file,
                256 * 1024,
            ))
            .chain(futures::stream::once(async move {
                Ok(bytes::Bytes::from(tail))
            }));
        let response = self
            .http
            .post(format!(
                "{}/api/v0/add?cid-version=1&cid-base=base32&pin=true&progress=false",
                self.api
            ))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| ipfs_err("add", e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| ipfs_err("add", e))?;
        if !status.is_success() {
            return Err(ipfs_err("add", format!("{status}: {text}")));
        }
        // One JSON object per line (one per added file); `Size` is a string in Kubo and a
        // number in js-ipfs, and is not needed.
        let last = text
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default();
        let value: serde_json::Value =
            serde_json::from_str(last).map_err(|e| ipfs_err("add: answer", e))?;
        value
            .get("Hash")
            .and_then(|h| h.as_str())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric()))
            .map(str::to_owned)
            .ok_or_else(|| ipfs_err("add: answer", format!("no Hash in {last}")))
    }

    /// Streams the content of `cid` into `dest` (created or truncated), calling `progress`
    /// with the bytes received so far; stops past `max_bytes`. Returns the size.
    pub async fn cat_to_file(
        &self,
        cid: &str,
        dest: &Path,
        max_bytes: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<u64> {
        let request = match &self.gateway {
            Some(g) => self.http.get(format!("{g}/ipfs/{cid}")),
            None => self.http.post(format!(
                "{}/api/v0/cat?arg={cid}&timeout={CAT_TIMEOUT}",
                self.api
            )),
        };
        let response = request.send().await.map_err(|e| ipfs_err("cat", e))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(ipfs_err("cat", format!("{status}: {text}")));
        }
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| ipfs_err("cat: create", e))?;
        let mut stream = response.bytes_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ipfs_err("cat", e))?;
            total += chunk.len() as u64;
            if total > max_bytes {
                return Err(ipfs_err(
                    "cat",
                    format!("more than the {max_bytes} bytes expected"),
                ));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| ipfs_err("cat: write", e))?;
            progress(total);
        }
        file.flush().await.map_err(|e| ipfs_err("cat: write", e))?;
        file.sync_all()
            .await
            .map_err(|e| ipfs_err("cat: write", e))?;
        Ok(total)
    }
}
