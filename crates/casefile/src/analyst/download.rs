//! `casefile download`: `getPackageUri`, then the link, streamed to a temporary file
//! beside the target while its SHA-256 is computed; the file takes the target's name only
//! when every byte arrived and the hash is the one the server announced
//! (`x-casefile-sha256`). A cut or altered download leaves nothing under that name.

use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt as _;
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::api::{ApiError, Session};
use super::{DownloadArgs, output, progress};

/// The header the download (and its redirect) carries the package's SHA-256 in.
const SHA256_HEADER: &str = "x-casefile-sha256";
/// Redirects followed at most (the server answers one `307` to a bucket, if any).
const MAX_REDIRECTS: usize = 3;

pub struct Saved {
    pub action: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// How the bytes were checked.
    pub verified: Verified,
}

pub enum Verified {
    /// Against the SHA-256 the server announced.
    Announced,
    /// No SHA-256 was announced: every file against the package's signed manifest.
    Manifest,
}

impl Saved {
    pub fn to_json(&self) -> Value {
        json!({
            "action": self.action,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "verified": match self.verified { Verified::Announced => "sha256", Verified::Manifest => "manifest" },
        })
    }

    pub fn print(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let check = match self.verified {
            Verified::Announced => "matches the server's",
            Verified::Manifest => "not announced by the server; every file matches the package's manifest",
        };
        writeln!(out, "saved {} ({} bytes)", self.path.display(), self.size)?;
        writeln!(out, "sha256 {} ({check})", self.sha256)
    }
}

pub async fn download(args: DownloadArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut session = Session::open()?;
    // The default name is the id's canonical form; anything else is refused by the server
    // before a byte is written.
    let name = uuid::Uuid::parse_str(&args.action).map_or_else(|_| args.action.clone(), |id| id.to_string());
    let target = args.output.unwrap_or_else(|| PathBuf::from(format!("{name}.zip")));
    let saved = save(&mut session, &args.action, &target).await?;
    if args.json {
        return Ok(output::json(out, &saved.to_json())?);
    }
    saved.print(out)?;
    Ok(())
}

/// Downloads the package of `action` into `target`, which must not exist yet.
pub async fn save(session: &mut Session, action: &str, target: &Path) -> Result<Saved, ApiError> {
    if target.exists() {
        return Err(ApiError::Invalid(format!("{} already exists: not overwritten", target.display())));
    }
    let link = session.get_json("getPackageUri", &["machineactions", action, "getPackageUri"]).await?;
    let link = link["value"]
        .as_str()
        .and_then(|v| Url::parse(v).ok())
        .ok_or_else(|| ApiError::Invalid("getPackageUri answered no link".into()))?;
    let (response, announced) = fetch(session, link).await?;
    let total = response.content_length();
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let io = |what: &str, e: std::io::Error| ApiError::Invalid(format!("{what} {}: {e}", dir.display()));
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Beside the target (same file system: the rename is atomic); removed when dropped,
    // so an error or a cut connection leaves nothing behind.
    let part = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        .tempfile_in(&dir)
        .map_err(|e| io("cannot write in", e))?;
    let mut file = tokio::fs::File::from_std(part.reopen().map_err(|e| io("cannot write in", e))?);
    let bar = progress::bytes(total, format!("{action}.zip"));
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| {
            bar.abandon();
            cut(action, size, total, Some(source.without_url()))
        })?;
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| {
            bar.abandon();
            io("cannot write in", e)
        })?;
        size += chunk.len() as u64;
        bar.set_position(size);
    }
    bar.finish_and_clear();
    if total.is_some_and(|t| t != size) {
        return Err(cut(action, size, total, None));
    }
    file.sync_all().await.map_err(|e| io("cannot write in", e))?;
    drop(file);
    let sha256 = hex::encode(hasher.finalize());
    let verified = match announced {
        Some(expected) if expected.eq_ignore_ascii_case(&sha256) => Verified::Announced,
        Some(expected) => {
            return Err(ApiError::Invalid(format!(
                "the package of {action} has SHA-256 {sha256}, not the {expected} the server announced: nothing saved"
            )));
        }
        None => {
            verify_manifest(part.path(), action)?;
            Verified::Manifest
        }
    };
    // No clobbering, even of a file that appeared meanwhile.
    part.persist_noclobber(target)
        .map_err(|e| ApiError::Invalid(format!("cannot save {}: {}", target.display(), e.error)))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(Saved { action: action.to_owned(), path: target.to_owned(), size, sha256, verified })
}

fn cut(action: &str, size: u64, total: Option<u64>, source: Option<reqwest::Error>) -> ApiError {
    let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
    let why = source.map(|e| format!(" ({})", chain(&e))).unwrap_or_default();
    ApiError::Invalid(format!("the download of {action} was cut off after {size}{of} bytes{why}: nothing saved"))
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// GETs the link (no bearer token: it is signed), following a redirect to the bucket by
/// hand; returns the answer and the SHA-256 the server announced for it.
async fn fetch(session: &Session, link: Url) -> Result<(reqwest::Response, Option<String>), ApiError> {
    let mut url = link;
    let mut announced = None;
    let mut http = session.http.clone();
    for _ in 0..=MAX_REDIRECTS {
        let response = http
            .get(url.clone())
            .send()
            .await
            // Without the URL: its query is the link's signed token.
            .map_err(|source| ApiError::Unreachable { url: origin(&url), source: source.without_url() })?;
        if let Some(sha) = response.headers().get(SHA256_HEADER).and_then(|v| v.to_str().ok()) {
            announced = Some(sha.to_owned());
        }
        let status = response.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let next = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| ApiError::Invalid(format!("the download answered {status} without a location")))?;
            if next.origin() != url.origin() {
                // A presigned bucket URL: another service, trusted as the system trusts it.
                casefile_agent::trust::needs_trust(&next)?;
                http = reqwest::Client::builder()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .read_timeout(std::time::Duration::from_secs(120))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|source| ApiError::Unreachable { url: origin(&next), source: source.without_url() })?;
            }
            url = next;
            continue;
        }
        if !status.is_success() {
            return Err(super::api::error_of("download", response).await);
        }
        return Ok((response, announced));
    }
    Err(ApiError::Invalid(format!("the download was redirected more than {MAX_REDIRECTS} times")))
}

/// The link without its query (the signed token stays out of error messages).
fn origin(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

/// Without an announced SHA-256, the package's own manifest is the check.
fn verify_manifest(path: &Path, action: &str) -> Result<(), ApiError> {
    let file = std::fs::File::open(path).map_err(|e| ApiError::Invalid(format!("{}: {e}", path.display())))?;
    let report = casefile_package::verify_with(std::io::BufReader::new(file), None)
        .map_err(|e| ApiError::Invalid(format!("the package of {action} is not a readable package: {e}")))?;
    if !report.is_ok() {
        return Err(ApiError::Invalid(format!(
            "the package of {action} does not match its manifest ({} problems): nothing saved",
            report.problems.len()
        )));
    }
    Ok(())
}
