//! HTTPS: the server's certificate, from configured files or from a private CA the
//! server creates in its data directory, re-read without a restart.
//!
//! Agents pin the CA (`--ca-sha256`, the SHA-256 of its DER certificate, which
//! `casefile enroll-token` prints); the CA certificate itself is public and served at
//! [`CA_PATH`] so that an agent can fetch it once and check it against its pin.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Where the server publishes the certificate agents pin (PEM).
pub const CA_PATH: &str = "/agent/v1/ca.pem";

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";
/// The names the generated server certificate was issued for, and when it expires.
const SERVER_NAMES: &str = "server.json";
const CA_NAME: &str = "casefile private CA";
/// A generated server certificate is issued again this long before it expires.
const RENEW_BEFORE_DAYS: i64 = 30;
const SERVER_CERT_DAYS: i64 = 397;
const CA_YEARS: i32 = 20;

/// Sets a certificate date from a chrono time (rcgen takes `time`'s type, which it does
/// not re-export).
macro_rules! ymd {
    ($at:expr) => {{
        use chrono::Datelike as _;
        let at = $at;
        rcgen::date_time_ymd(at.year(), at.month() as u8, at.day() as u8)
    }};
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("creating the private CA: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Config(String),
}

/// Installs the process's rustls crypto provider (aws-lc-rs, as reqwest and jsonwebtoken
/// use) once; later calls are no-ops.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// `sha256:HEX` of a DER certificate: what agents pin.
pub fn pin_of(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// This machine's host name (for the generated certificate and the default public URL).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate agents pin; `None`: the last certificate of `cert`.
    pub ca: Option<PathBuf>,
}

/// The server's TLS setup: a resolver that serves the current certificate and re-reads
/// its files when they change.
pub struct Tls {
    files: CertFiles,
    /// The configuration the certificate was generated from; `None` for configured files.
    generated_for: Option<Config>,
    current: RwLock<Loaded>,
    reloads: tokio::sync::watch::Sender<u64>,
}

#[derive(Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// The raw file contents it was loaded from: a reload that finds the same bytes is a no-op.
    source: (Vec<u8>, Vec<u8>),
    ca_pem: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl Tls {
    /// The configured certificate files, or the generated CA's (created on first start).
    pub fn prepare(config: &Config, now: chrono::DateTime<chrono::Utc>) -> Result<Arc<Self>, TlsError> {
        install_crypto_provider();
        let generated_for = config.tls.cert_file.is_none().then(|| config.clone());
        let files = match (&config.tls.cert_file, &config.tls.key_file) {
            (Some(cert), Some(key)) => {
                CertFiles { cert: cert.clone(), key: key.clone(), ca: config.tls.ca_file.clone() }
            }
            (None, None) => generated(config, now)?,
            _ => {
                return Err(TlsError::Config("tls.cert_file and tls.key_file go together: set both or neither".into()));
            }
        };
        let loaded = load(&files)?;
        Ok(Arc::new(Self {
            files,
            generated_for,
            current: RwLock::new(loaded),
            reloads: tokio::sync::watch::channel(0).0,
        }))
    }

    /// A rustls server configuration resolving through `self` (HTTP/1.1 only).
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder().with_no_client_auth().with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// The PEM certificate agents pin.
    pub fn ca_pem(&self) -> String {
        self.read().ca_pem
    }

    /// `sha256:HEX` of the certificate agents pin.
    pub fn ca_pin(&self) -> String {
        pin_of(&first_cert(self.ca_pem().as_bytes()).unwrap_or_default())
    }

    /// Counts successful reloads (tests wait on it).
    pub fn watch_reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Re-reads the files; `Ok(true)` when a new certificate is now served. A broken file
    /// leaves the last good certificate in place.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert, key) = (read(&self.files.cert)?, read(&self.files.key)?);
        if self.read().source == (cert.clone(), key.clone()) {
            return Ok(false);
        }
        let loaded = load(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        self.reloads.send_modify(|n| *n += 1);
        Ok(true)
    }

    /// [`Tls::reload`], after issuing the generated server certificate again if it nears
    /// its expiry at `now` (a server that runs for years keeps a valid certificate).
    pub fn renew_and_reload(&self, now: chrono::DateTime<chrono::Utc>) -> Result<bool, TlsError> {
        if let Some(config) = &self.generated_for {
            generated(config, now)?;
        }
        self.reload()
    }

    /// Reloads every `every` and on SIGHUP until the task is aborted.
    pub async fn run_reload(self: Arc<Self>, every: Duration, clock: Arc<dyn crate::clock::Clock>) {
        #[cfg(unix)]
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            #[cfg(unix)]
            {
                let hup = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = hup => tracing::info!("SIGHUP: checking the TLS certificate files"),
                }
            }
            #[cfg(not(unix))]
            tick.tick().await;
            match self.renew_and_reload(clock.now()) {
                Ok(true) => tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!("TLS certificate not reloaded, still serving the previous one: {e}"),
            }
        }
    }

    fn read(&self) -> Loaded {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for Tls {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().key)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io { path: path.to_owned(), error: source })
}

fn invalid(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::Invalid { path: path.to_owned(), message: message.into() }
}

fn first_cert(pem: &[u8]) -> Option<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem).next().and_then(Result::ok).map(|c| c.to_vec())
}

fn load(files: &CertFiles) -> Result<Loaded, TlsError> {
    let (cert_pem, key_pem) = (read(&files.cert)?, read(&files.key)?);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&files.cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(&files.cert, "holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| invalid(&files.key, format!("not a PEM private key: {e}")))?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let certified = CertifiedKey::from_der(chain.clone(), key, &provider)
        .map_err(|e| invalid(&files.key, format!("does not match the certificate: {e}")))?;
    let ca_pem = match &files.ca {
        Some(ca) => {
            let pem = read(ca)?;
            first_cert(&pem).ok_or_else(|| invalid(ca, "holds no PEM certificate"))?;
            String::from_utf8_lossy(&pem).into_owned()
        }
        None => pem_encode(chain.last().map(|c| c.as_ref()).unwrap_or_default()),
    };
    Ok(Loaded { key: Arc::new(certified), source: (cert_pem, key_pem), ca_pem })
}

fn pem_encode(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Issued {
    names: Vec<String>,
    not_after: i64,
}

/// The names the generated server certificate covers: the public URL's host, this
/// machine's names, the listen address and loopback.
pub fn certificate_names(config: &Config) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(host) = config.public_url.as_deref().and_then(|u| url::Url::parse(u).ok()).and_then(|u| {
        u.host().map(|h| match h {
            url::Host::Ipv6(ip) => ip.to_string(),
            other => other.to_string(),
        })
    }) {
        names.push(host);
    }
    names.push(hostname());
    if !config.listen.ip().is_unspecified() {
        names.push(config.listen.ip().to_string());
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    names
}

/// The generated CA and server certificate under `<data_dir>/tls/`: created on first
/// start, reused afterwards; the server certificate is issued again when the names it
/// must cover change or it nears expiry.
fn generated(config: &Config, now: chrono::DateTime<chrono::Utc>) -> Result<CertFiles, TlsError> {
    let dir = config.tls_dir();
    create_dir(&dir)?;
    let (ca_cert, ca_key) = (dir.join(CA_CERT), dir.join(CA_KEY));
    let ca_params = ca_params(now);
    let ca_keypair = if ca_cert.exists() && ca_key.exists() {
        let pem = String::from_utf8(read(&ca_key)?).map_err(|_| invalid(&ca_key, "not PEM"))?;
        rcgen::KeyPair::from_pem(&pem).map_err(|e| invalid(&ca_key, e.to_string()))?
    } else {
        let key = rcgen::KeyPair::generate()?;
        let cert = ca_params.self_signed(&key)?;
        write_private(&ca_key, key.serialize_pem().as_bytes())?;
        write_file(&ca_cert, cert.pem().as_bytes(), 0o644)?;
        // A new CA voids any server certificate of an old one.
        let _ = std::fs::remove_file(dir.join(SERVER_NAMES));
        tracing::info!(ca = %ca_cert.display(), "created a private CA for HTTPS");
        key
    };
    let names = certificate_names(config);
    let record = dir.join(SERVER_NAMES);
    let current: Option<Issued> = std::fs::read(&record).ok().and_then(|raw| serde_json::from_slice(&raw).ok());
    let fresh = current
        .is_some_and(|issued| issued.names == names && issued.not_after - RENEW_BEFORE_DAYS * 86_400 > now.timestamp());
    let (server_cert, server_key) = (dir.join(SERVER_CERT), dir.join(SERVER_KEY));
    if !fresh || !server_cert.exists() || !server_key.exists() {
        let issuer = rcgen::Issuer::new(ca_params, ca_keypair);
        let mut params = rcgen::CertificateParams::new(names.clone())?;
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0].clone());
        let not_after = now + chrono::Duration::days(SERVER_CERT_DAYS);
        params.not_before = ymd!(now - chrono::Duration::days(1));
        params.not_after = ymd!(not_after);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&server_key, key.serialize_pem().as_bytes())?;
        write_file(&server_cert, cert.pem().as_bytes(), 0o644)?;
        let issued = Issued { names, not_after: not_after.timestamp() };
        write_file(&record, &serde_json::to_vec(&issued).unwrap_or_default(), 0o644)?;
        tracing::info!(names = ?issued.names, "issued the server certificate from the private CA");
    }
    Ok(CertFiles { cert: server_cert, key: server_key, ca: Some(ca_cert) })
}

/// The CA's parameters, the same on every start so that the saved key keeps signing
/// certificates that chain to the saved CA certificate.
fn ca_params(now: chrono::DateTime<chrono::Utc>) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name.push(rcgen::DnType::CommonName, CA_NAME);
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "casefile");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = ymd!(now - chrono::Duration::days(1));
    params.not_after = rcgen::date_time_ymd(chrono::Datelike::year(&now) + CA_YEARS, 1, 1);
    params
}

fn create_dir(path: &Path) -> Result<(), TlsError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(|source| TlsError::Io { path: path.to_owned(), error: source })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    write_file(path, bytes, 0o600)
}

/// Writes to a temporary file and renames it over `path`: a kill mid-write leaves the
/// old file or the new one, never half of one.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write as _;
    let io = |source| TlsError::Io { path: path.to_owned(), error: source };
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Refuses plain HTTP on a non-loopback address unless explicitly allowed.
pub fn check_plain_http(config: &Config, listen: IpAddr) -> Result<(), TlsError> {
    if config.tls.plain_http && !listen.is_loopback() && !config.tls.plain_http_on_network {
        return Err(TlsError::Config(format!(
            "refusing to serve plain HTTP on {listen}, a non-loopback address: tokens and packages would cross \
             the network in the clear. Serve HTTPS (remove tls.plain_http), listen on 127.0.0.1 behind a \
             TLS-terminating proxy, or set tls.plain_http_on_network = true if a proxy on another host \
             terminates TLS"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ca_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().to_owned(), ..Default::default() };
        let first = Tls::prepare(&config, chrono::Utc::now()).unwrap();
        let second = Tls::prepare(&config, chrono::Utc::now()).unwrap();
        assert_eq!(first.ca_pin(), second.ca_pin(), "later starts reuse the CA");
        #[cfg(unix)]
        for key in [CA_KEY, SERVER_KEY] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(config.tls_dir().join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        // A new public host reissues the server certificate from the same CA.
        let moved = Config { public_url: Some("https://casefile.example.net".into()), ..config.clone() };
        let third = Tls::prepare(&moved, chrono::Utc::now()).unwrap();
        assert_eq!(third.ca_pin(), first.ca_pin());
        assert_ne!(third.read().source, first.read().source);
    }

    #[test]
    fn a_generated_certificate_is_renewed_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().to_owned(), ..Default::default() };
        let now = chrono::Utc::now();
        let tls = Tls::prepare(&config, now).unwrap();
        assert!(!tls.renew_and_reload(now + chrono::Duration::days(30)).unwrap(), "not due yet");
        let pin = tls.ca_pin();
        let late = now + chrono::Duration::days(SERVER_CERT_DAYS - RENEW_BEFORE_DAYS + 1);
        assert!(tls.renew_and_reload(late).unwrap(), "reissued and served");
        assert_eq!(tls.ca_pin(), pin, "by the same CA");
    }

    #[test]
    fn plain_http_only_on_loopback_unless_allowed() {
        let mut config = Config::default();
        config.tls.plain_http = true;
        assert!(check_plain_http(&config, "127.0.0.1".parse().unwrap()).is_ok());
        assert!(check_plain_http(&config, "::1".parse().unwrap()).is_ok());
        let refused = check_plain_http(&config, "0.0.0.0".parse().unwrap()).unwrap_err().to_string();
        assert!(refused.contains("refusing to serve plain HTTP"), "{refused}");
        config.tls.plain_http_on_network = true;
        assert!(check_plain_http(&config, "10.0.0.1".parse().unwrap()).is_ok());
    }
}
