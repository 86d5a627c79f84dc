//! Which server the agent believes: only the CA pinned at installation (`--ca-sha256`,
//! the SHA-256 of the CA certificate that `casefile enroll-token` prints), or the
//! system's roots when told to (`--system-roots`, for a publicly trusted certificate).
//! Plain `http://` only to a loopback address.
//!
//! Bootstrap, as kubeadm's discovery hash: the first start fetches the CA certificate
//! from the server (over a connection that proves nothing yet), checks its hash against
//! the pin, saves it in the state directory and from then on trusts only that root.
//! Nothing but the public CA certificate crosses the unverified connection.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use sha2::{Digest, Sha256};

use crate::AgentError;

/// Where the saved CA certificate lives in the state directory.
pub const CA_FILE: &str = "server-ca.pem";
/// Where the server publishes its CA certificate (PEM).
pub const CA_PATH: &str = "/agent/v1/ca.pem";
/// A CA certificate is small; a larger answer is not one.
const MAX_CA_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Trust {
    /// The CA saved at the first start (its pin was checked then).
    #[default]
    Saved,
    /// The CA whose certificate has this SHA-256.
    Pinned(CaPin),
    /// The operating system's roots.
    SystemRoots,
}

/// `sha256:HEX` (the prefix is optional on input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPin([u8; 32]);

impl std::str::FromStr for CaPin {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let hex_part = raw.trim().strip_prefix("sha256:").unwrap_or(raw.trim());
        let bytes = hex::decode(hex_part).map_err(|_| format!("'{raw}' is not sha256:HEX"))?;
        bytes.try_into().map(Self).map_err(|_| format!("'{raw}' is not a SHA-256 (64 hex digits)"))
    }
}

impl std::fmt::Display for CaPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl CaPin {
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

/// A loopback host: `localhost`, `127.0.0.0/8`, `::1`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The agent's transport to `config.server`, trusting what `config.trust` says.
pub async fn transport(config: &crate::AgentConfig) -> Result<crate::transport::Transport, AgentError> {
    let url = Url::parse(config.server.trim_end_matches('/')).map_err(|_| AgentError::BadUrl(config.server.clone()))?;
    let builder = client_builder(&url, &config.trust, &config.state_dir).await?;
    crate::transport::Transport::with_client_builder(&config.server, builder)
}

/// A client builder that trusts what `trust` says for `server`, fetching and saving the
/// pinned CA on first use.
pub async fn client_builder(
    server: &Url,
    trust: &Trust,
    state_dir: &Path,
) -> Result<reqwest::ClientBuilder, AgentError> {
    let builder = reqwest::Client::builder();
    if !needs_trust(server)? {
        return Ok(builder);
    }
    let ca = match trust {
        Trust::SystemRoots => return Ok(builder),
        Trust::Pinned(pin) => match saved(state_dir, pin)? {
            Some(ca) => ca,
            None => fetch(server, pin, state_dir).await?,
        },
        Trust::Saved => {
            let path = state_dir.join(CA_FILE);
            let pem = std::fs::read(&path).map_err(|_| AgentError::NoTrust(server.to_string()))?;
            reqwest::Certificate::from_pem(&pem).map_err(|e| AgentError::Tls(format!("{}: {e}", path.display())))?
        }
    };
    Ok(builder.tls_certs_only([ca]))
}

/// Whether `server` is reached over TLS (and so needs a CA to trust): `https://`, or
/// `http://` to a loopback address (`false`); any other URL is refused.
pub fn needs_trust(server: &Url) -> Result<bool, AgentError> {
    match server.scheme() {
        "http" if is_loopback(server) => Ok(false),
        "http" => Err(AgentError::PlainHttp(server.to_string())),
        "https" => Ok(true),
        _ => Err(AgentError::BadUrl(server.to_string())),
    }
}

/// The saved CA, when it matches `pin` (a changed pin fetches again).
fn saved(state_dir: &Path, pin: &CaPin) -> Result<Option<reqwest::Certificate>, AgentError> {
    let Ok(pem) = std::fs::read(state_dir.join(CA_FILE)) else { return Ok(None) };
    pinned_certificate(&pem, pin)
}

/// The first certificate of `pem`, when it is the CA `pin` names.
pub fn pinned_certificate(pem: &[u8], pin: &CaPin) -> Result<Option<reqwest::Certificate>, AgentError> {
    match first_der(pem) {
        Some(der) if CaPin::of_der(&der) == *pin => Ok(Some(certificate(&der)?)),
        _ => Ok(None),
    }
}

async fn fetch(server: &Url, pin: &CaPin, state_dir: &Path) -> Result<reqwest::Certificate, AgentError> {
    let pem = fetch_pinned_ca(server, pin).await?;
    let path = state_dir.join(CA_FILE);
    save(&path, &pem).map_err(|source| AgentError::State { path, source })?;
    tracing::info!(ca = %pin, "pinned the server's CA");
    pinned_certificate(&pem, pin)?.ok_or_else(|| AgentError::Tls("the pinned CA certificate did not parse".into()))
}

/// The server's CA certificate (PEM, as served), fetched over a connection that proves
/// nothing and believed only because its SHA-256 is `pin`. The agent and the `casefile
/// login` of analysts bootstrap their trust with it.
pub async fn fetch_pinned_ca(server: &Url, pin: &CaPin) -> Result<Vec<u8>, AgentError> {
    let url = format!("{}{CA_PATH}", server.as_str().trim_end_matches('/'));
    // Unverified on purpose: the answer is checked against the pin before any use, and
    // nothing secret is sent on this connection.
    let unverified = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|source| AgentError::Unreachable { url: url.clone(), source })?;
    let response =
        unverified.get(&url).send().await.map_err(|source| AgentError::Unreachable { url: url.clone(), source })?;
    if !response.status().is_success() {
        return Err(AgentError::Tls(format!("{url} answered {}: the server has no CA to pin", response.status())));
    }
    let body = response.bytes().await.map_err(|source| AgentError::Unreachable { url: url.clone(), source })?;
    if body.len() > MAX_CA_BYTES {
        return Err(AgentError::Tls(format!("{url} is not a CA certificate ({} bytes)", body.len())));
    }
    let der = first_der(&body).ok_or_else(|| AgentError::Tls(format!("{url} is not a PEM certificate")))?;
    let got = CaPin::of_der(&der);
    if got != *pin {
        return Err(AgentError::CaMismatch { expected: pin.to_string(), got: got.to_string() });
    }
    Ok(body.to_vec())
}

fn certificate(der: &[u8]) -> Result<reqwest::Certificate, AgentError> {
    reqwest::Certificate::from_der(der).map_err(|e| AgentError::Tls(format!("the pinned CA certificate: {e}")))
}

/// The first certificate of a PEM text, as DER.
fn first_der(pem: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + text[start..].find("-----END CERTIFICATE-----")?;
    let body: String = text[start..end].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn save(path: &PathBuf, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_with_or_without_prefix() {
        let hex = "ab".repeat(32);
        let pin: CaPin = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(pin, hex.parse().unwrap());
        assert_eq!(pin.to_string(), format!("sha256:{hex}"));
        assert!("sha256:abcd".parse::<CaPin>().is_err());
        assert!("not hex".parse::<CaPin>().is_err());
    }

    #[tokio::test]
    async fn plain_http_only_to_loopback() {
        let dir = tempfile::tempdir().unwrap();
        for ok in ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:2", "http://127.9.9.9"] {
            assert!(client_builder(&ok.parse().unwrap(), &Trust::Saved, dir.path()).await.is_ok(), "{ok}");
        }
        for refused in ["http://10.0.0.1:8080", "http://casefile.example.com", "http://[2001:db8::1]"] {
            let err = client_builder(&refused.parse().unwrap(), &Trust::Saved, dir.path()).await.err().unwrap();
            assert!(matches!(err, AgentError::PlainHttp(_)), "{refused}: {err}");
        }
    }

    #[tokio::test]
    async fn https_without_a_pin_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = client_builder(&"https://casefile.example.com".parse().unwrap(), &Trust::Saved, dir.path())
            .await
            .err()
            .unwrap();
        assert!(matches!(err, AgentError::NoTrust(_)), "{err}");
    }
}
