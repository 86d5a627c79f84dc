//! The agent's side of resumable uploads: tus 1.0.0 with `creation` and `checksum`
//! (the server's `routes/uploads.rs`). The package is sent from its file in chunks; each
//! chunk's SHA-256 is computed from the file first, then the chunk is streamed from the
//! file again, so memory stays a few small buffers whatever the package's size.

use std::io::SeekFrom;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use uuid::Uuid;

use super::Transport;
use crate::AgentError;

/// Bytes per chunk: what a connection lost mid-chunk costs to send again.
pub const CHUNK: u64 = 8 << 20;
/// The protocol version spoken.
const TUS_VERSION: &str = "1.0.0";
/// The server's answer that the package is stored (its SHA-256).
const STORED_HEADER: &str = "casefile-upload-stored";
/// Chunks sent again after a checksum mismatch (the bytes changed on the way) before the
/// upload gives up for this attempt.
const MISMATCHES_ALLOWED: u32 = 3;
/// Read buffer for hashing and sending.
const BUFFER: usize = 256 * 1024;

/// How an upload ended.
pub enum Outcome {
    /// The server verified and stored the package.
    Stored,
    /// The server does not offer resumable uploads.
    Unsupported,
}

/// Where the server's upload stands.
enum Standing {
    /// No upload for the action.
    Missing,
    /// The next chunk starts at this offset.
    At(u64),
    /// The package is stored, with this SHA-256.
    Stored(String),
}

/// One package's resumable upload.
pub struct Upload<'a> {
    transport: &'a Transport,
    action: Uuid,
    file: &'a Path,
    size: u64,
    sha256: &'a str,
    url: String,
    /// The highest offset the server confirmed.
    confirmed: u64,
    /// The last tenth of the package logged.
    logged_tenth: u64,
}

impl<'a> Upload<'a> {
    pub fn new(transport: &'a Transport, action: Uuid, file: &'a Path, size: u64, sha256: &'a str) -> Self {
        let url = transport.url(&format!("/actions/{action}/upload"));
        Self { transport, action, file, size, sha256, url, confirmed: 0, logged_tenth: 0 }
    }

    /// The highest offset the server confirmed so far.
    pub fn progress(&self) -> u64 {
        self.confirmed
    }

    /// Asks where the upload stands, creates it if there is none, and sends the chunks
    /// from there on.
    pub async fn run(&mut self) -> Result<Outcome, AgentError> {
        let mut offset = match self.standing().await? {
            Standing::Stored(sha256) => return self.stored(&sha256),
            Standing::At(offset) => offset,
            Standing::Missing => match self.create().await? {
                Some(offset) => offset,
                None => return Ok(Outcome::Unsupported),
            },
        };
        let mut file = tokio::fs::File::open(self.file)
            .await
            .map_err(|source| AgentError::State { path: self.file.to_owned(), source })?;
        let mut mismatches = 0;
        loop {
            self.confirm(offset);
            let length = CHUNK.min(self.size.saturating_sub(offset));
            let checksum = if length > 0 { self.checksum(&mut file, offset, length).await? } else { String::new() };
            match self.patch(&mut file, offset, length, &checksum).await? {
                Patched::Stored(sha256) => {
                    self.confirm(self.size);
                    return self.stored(&sha256);
                }
                Patched::At(next) => offset = next,
                Patched::ChecksumMismatch => {
                    mismatches += 1;
                    if mismatches > MISMATCHES_ALLOWED {
                        return Err(AgentError::Server {
                            status: 500,
                            message: format!("the chunk at {offset} arrived damaged {mismatches} times"),
                        });
                    }
                }
                Patched::Gone => match self.create().await? {
                    Some(at) => offset = at,
                    None => return Ok(Outcome::Unsupported),
                },
            }
        }
    }

    fn stored(&self, sha256: &str) -> Result<Outcome, AgentError> {
        if !sha256.eq_ignore_ascii_case(self.sha256) {
            return Err(AgentError::Server {
                status: 409,
                message: format!("the server stored another package for this action (SHA-256 {sha256})"),
            });
        }
        tracing::info!(action_id = %self.action, bytes = self.size, "upload complete: the server stored the package");
        Ok(Outcome::Stored)
    }

    /// Notes the server's offset, logging every tenth of the package.
    fn confirm(&mut self, offset: u64) {
        self.confirmed = self.confirmed.max(offset);
        let tenth = self.confirmed.saturating_mul(10) / self.size.max(1);
        if tenth > self.logged_tenth {
            self.logged_tenth = tenth;
            tracing::info!(
                action_id = %self.action,
                sent = self.confirmed,
                total = self.size,
                "upload progress: {}%",
                self.confirmed.saturating_mul(100) / self.size.max(1)
            );
        }
    }

    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        self.transport.authed(self.transport.http.request(method, &self.url)).header("tus-resumable", TUS_VERSION)
    }

    async fn standing(&self) -> Result<Standing, AgentError> {
        let builder = self.request(reqwest::Method::HEAD).timeout(self.transport.timeouts.request);
        let response = builder.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(Standing::Missing);
        }
        if !status.is_success() {
            return Err(error_of(response).await);
        }
        let headers = response.headers();
        if let Some(sha256) = header(headers, STORED_HEADER) {
            return Ok(Standing::Stored(sha256));
        }
        let length = number(headers, "upload-length")?;
        if length != self.size {
            // An upload of another package of this action (collected again): start anew.
            return Ok(Standing::Missing);
        }
        Ok(Standing::At(number(headers, "upload-offset")?))
    }

    /// Creates the upload (or finds the server's); its offset, or `None` when the server
    /// has no resumable uploads.
    async fn create(&self) -> Result<Option<u64>, AgentError> {
        let metadata = format!("sha256 {}", STANDARD.encode(self.sha256.to_ascii_lowercase()));
        let builder = self
            .request(reqwest::Method::POST)
            .header("upload-length", self.size)
            .header("upload-metadata", metadata)
            .header(CONTENT_LENGTH, 0)
            .timeout(self.transport.timeouts.request);
        let response = builder.send().await.map_err(|e| self.unreachable(e))?;
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            return Ok(None);
        }
        if !response.status().is_success() {
            let error = error_of(response).await;
            // An older server: the route is unknown (not the action: that is `ResourceNotFound`).
            if matches!(&error, AgentError::Server { status: 404, message } if message.starts_with("NotFound:")) {
                return Ok(None);
            }
            return Err(error);
        }
        tracing::info!(action_id = %self.action, bytes = self.size, "resumable upload created");
        Ok(Some(number(response.headers(), "upload-offset").unwrap_or(0)))
    }

    /// SHA-256 of `length` bytes of the file at `offset`, in base64.
    async fn checksum(&self, file: &mut tokio::fs::File, offset: u64, length: u64) -> Result<String, AgentError> {
        let state = |source| AgentError::State { path: self.file.to_owned(), source };
        file.seek(SeekFrom::Start(offset)).await.map_err(state)?;
        let mut hash = Sha256::new();
        let mut buffer = vec![0u8; BUFFER];
        let mut left = length;
        while left > 0 {
            let want = usize::try_from(left.min(BUFFER as u64)).unwrap_or(BUFFER);
            let n = file.read(&mut buffer[..want]).await.map_err(state)?;
            if n == 0 {
                return Err(state(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the package file is shorter than its recorded size",
                )));
            }
            hash.update(&buffer[..n]);
            left -= n as u64;
        }
        Ok(STANDARD.encode(hash.finalize()))
    }

    /// Sends `length` bytes of the file at `offset` (none: asks the server to finish an
    /// upload whose bytes are all in).
    async fn patch(
        &self,
        file: &mut tokio::fs::File,
        offset: u64,
        length: u64,
        checksum: &str,
    ) -> Result<Patched, AgentError> {
        let mut builder = self
            .request(reqwest::Method::PATCH)
            .header(CONTENT_TYPE, "application/offset+octet-stream")
            .header("upload-offset", offset)
            .header(CONTENT_LENGTH, length)
            // The last chunk is answered once the whole package is checked.
            .timeout(self.transport.timeouts.upload_answer + self.transport.timeouts.request);
        if length > 0 {
            let state = |source| AgentError::State { path: self.file.to_owned(), source };
            file.seek(SeekFrom::Start(offset)).await.map_err(state)?;
            let reader = file.try_clone().await.map_err(state)?.take(length);
            let body = tokio_util::io::ReaderStream::with_capacity(reader, BUFFER);
            builder =
                builder.header("upload-checksum", format!("sha256 {checksum}")).body(reqwest::Body::wrap_stream(body));
        } else {
            builder = builder.header("upload-checksum", format!("sha256 {}", STANDARD.encode(Sha256::digest(b""))));
        }
        let response = builder.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let headers = response.headers().clone();
        match status.as_u16() {
            204 | 200 => match header(&headers, STORED_HEADER) {
                Some(sha256) => Ok(Patched::Stored(sha256)),
                None => Ok(Patched::At(number(&headers, "upload-offset")?)),
            },
            409 => match number(&headers, "upload-offset") {
                Ok(at) => Ok(Patched::At(at)),
                Err(_) => Err(error_of(response).await),
            },
            460 => Ok(Patched::ChecksumMismatch),
            404 => Ok(Patched::Gone),
            _ => Err(error_of(response).await),
        }
    }

    fn unreachable(&self, source: reqwest::Error) -> AgentError {
        AgentError::Unreachable { url: self.transport.base.to_string(), source }
    }
}

/// What the server made of a `PATCH`.
enum Patched {
    /// The next chunk starts here.
    At(u64),
    /// The package is stored, with this SHA-256.
    Stored(String),
    /// The chunk's bytes did not match their checksum: send it again.
    ChecksumMismatch,
    /// The upload is gone (swept, or another package replaced it): create it again.
    Gone,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn number(headers: &HeaderMap, name: &str) -> Result<u64, AgentError> {
    header(headers, name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| AgentError::Server { status: 502, message: format!("the server's answer has no valid {name}") })
}

/// The error of a failed answer, as [`Transport::send`] makes it.
async fn error_of(response: reqwest::Response) -> AgentError {
    let status = response.status();
    let message = match response.json::<casefile_proto::ErrorBody>().await {
        Ok(body) => format!("{:?}: {}", body.error.code, body.error.message),
        Err(_) => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    if status == StatusCode::UNAUTHORIZED {
        return AgentError::Refused(message);
    }
    AgentError::Server { status: status.as_u16(), message }
}
