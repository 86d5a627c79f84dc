//! Server configuration: a TOML file (`--config`), with every field defaulted so that
//! no file at all runs on embedded defaults under the data directory.
//!
//! Every setting also comes from the environment and from flags, with one precedence:
//! flag > environment > file > default ([`Config::layered`]). The environment variable of
//! a setting is derived from its place in these structs, so that a section added later
//! gets its variables with no list to keep: `CASEFILE_` and the key's path, upper case,
//! sections joined by `__` (`[auth] issuer` is `CASEFILE_AUTH__ISSUER`, `data_dir` is
//! `CASEFILE_DATA_DIR`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::Api;
use crate::ratelimit::Window;

const DAY: u64 = 24 * 3600;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the database, packages and keys live.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Base URL clients reach the server at (`https://casefile.example.com`); used for
    /// download links and `@odata.context`. Unset: taken from each request's `Host`.
    pub public_url: Option<String>,
    /// Deprecated: the old name of `store.url` (accepted, with a warning at start).
    #[serde(serialize_with = "redact::url", skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Where the records live (`[store]`): SQLite in the data directory, or PostgreSQL.
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub agents: AgentConfig,
    pub packages: PackageConfig,
    /// Where package bytes are stored (`[blobs]`): the data directory, another local
    /// directory, or an S3-compatible bucket.
    pub blobs: BlobsConfig,
    pub rate_limits: RateLimitConfig,
    /// HTTPS: certificate files, or a private CA the server creates (`[tls]`).
    pub tls: TlsConfig,
    /// Timeouts and the cap of client connections (`[connections]`).
    pub connections: ConnectionConfig,
    /// Reverse proxies (addresses or CIDRs) whose `X-Forwarded-For/-Proto/-Host` are
    /// believed; from any other peer those headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// How a stop (SIGTERM, SIGINT) drains the server (`[shutdown]`).
    pub shutdown: ShutdownConfig,
    /// `GET /metrics` (Prometheus) and who may read it (`[metrics]`).
    pub metrics: MetricsConfig,
    /// The web console at `/console` and how people sign in to it (`[console]`).
    pub console: ConsoleConfig,
    /// Collection profiles (`[profiles]`): the default, per device group, and the
    /// administrator's own.
    pub profiles: ProfilesConfig,
}

/// Collection profiles (`[profiles]`). `standard` and `triage` are built in; more are
/// defined under `[profiles.define.NAME]` from the same collectors (see docs/PACKAGE.md).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfilesConfig {
    /// The profile of a collection whose request names none and whose device group has
    /// no default of its own.
    pub default: String,
    /// Default profile by device group name (`"Web servers" = "triage"`).
    pub groups: BTreeMap<String, String>,
    /// The administrator's profiles, by name.
    pub define: BTreeMap<String, casefile_proto::profile::ProfileDefinition>,
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        Self { default: casefile_proto::profile::STANDARD.to_owned(), groups: BTreeMap::new(), define: BTreeMap::new() }
    }
}

impl ProfilesConfig {
    /// Every profile, built in and defined, resolved and checked.
    pub fn resolved(&self) -> Result<BTreeMap<String, casefile_proto::profile::Profile>, String> {
        let mut definitions = casefile_proto::profile::builtin_definitions();
        for (name, definition) in &self.define {
            if definitions.contains_key(name) {
                return Err(format!(
                    "profiles.define.{name}: {name} is built in; define a profile of another name \
                     (it may extend {name})"
                ));
            }
            definitions.insert(name.clone(), definition.clone());
        }
        casefile_proto::profile::resolve(&definitions).map_err(|e| format!("profiles: {e}"))
    }

    fn validate(&self) -> Result<(), String> {
        let profiles = self.resolved()?;
        let known = || profiles.keys().cloned().collect::<Vec<_>>().join(", ");
        if !profiles.contains_key(&self.default) {
            return Err(format!(
                "profiles.default: no profile is named {:?}; the profiles are {}",
                self.default,
                known()
            ));
        }
        for (group, profile) in &self.groups {
            if !profiles.contains_key(profile) {
                return Err(format!(
                    "profiles.groups.{group:?}: no profile is named {profile:?}; the profiles are {}",
                    known()
                ));
            }
        }
        Ok(())
    }
}

/// The web console (`[console]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve `/console` (the API is served either way).
    pub enabled: bool,
    /// The tenant local users sign in to when the sign-in page names none (`?tenant=`).
    pub tenant: String,
    /// A session unused this long ends.
    pub idle_minutes: u64,
    /// A session ends this long after sign-in, however much it is used.
    pub absolute_hours: u64,
    /// Single sign-on through OpenID Connect (`[[console.sso]]`): each provider must also be
    /// a trusted issuer (`[[auth.trusted_issuers]]`), whose keys verify its ID tokens and
    /// whose `tenant` the users sign in to.
    pub sso: Vec<SsoConfig>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tenant: casefile_proto::DEFAULT_TENANT.to_owned(),
            idle_minutes: 30,
            absolute_hours: 12,
            sso: Vec::new(),
        }
    }
}

/// An OpenID Connect provider users sign in with (authorization code flow with PKCE).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SsoConfig {
    /// What the sign-in button says ("Sign in with {name}").
    pub name: String,
    /// The provider's issuer (`iss`); its discovery document is
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The console's client id at the provider (the ID token's `aud`).
    pub client_id: String,
    /// A file holding the client secret, for a confidential client; unset: a public client
    /// (PKCE only).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Scopes asked for besides `openid`.
    #[serde(default = "default_sso_scopes")]
    pub scopes: Vec<String>,
}

fn default_sso_scopes() -> Vec<String> {
    vec!["profile".to_owned(), "email".to_owned()]
}

/// The database (`[store]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite:///PATH` or `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (`?sslmode=require`
    /// for TLS); unset: the SQLite file `casefile.db` in the data directory.
    /// Secret-bearing (a password in the URL): redacted when printed.
    #[serde(serialize_with = "redact::url")]
    pub url: Option<String>,
}

/// Prometheus metrics at `GET /metrics`. Readable from loopback and `allow_from` only: the
/// figures describe the server's load and its callers' mistakes, not for the internet.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Off: nothing is recorded and `/metrics` answers `404`.
    pub enabled: bool,
    /// Loopback clients may read `/metrics`. Turn off when a reverse proxy on this host
    /// forwards internet traffic without being listed in `trusted_proxies` (its requests
    /// would all come from loopback).
    pub allow_loopback: bool,
    /// Addresses or CIDR blocks (the Prometheus servers) that may read `/metrics`,
    /// besides loopback; the client's address as resolved through `trusted_proxies`.
    pub allow_from: Vec<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true, allow_loopback: true, allow_from: Vec::new() }
    }
}

/// A stop answers parked agent polls at once and lets requests in flight (uploads
/// included) finish for up to `grace_seconds`; what still runs then is cut.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    pub grace_seconds: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_seconds: 30 }
    }
}

/// Longest grace period of a stop: systemd's own stop timeout is 90 seconds by default,
/// and an hour already outlasts any sane `TimeoutStopSec`.
pub const MAX_SHUTDOWN_GRACE_SECONDS: u64 = 3600;

/// How the server speaks TLS. No certificate files: the first start creates a private
/// CA and a server certificate under `<data_dir>/tls/` (agents pin the CA).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first (with `key_file`). Re-read when it changes.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the leaf certificate.
    pub key_file: Option<PathBuf>,
    /// PEM certificate agents pin (`casefile-agent --ca-sha256`); unset: the last
    /// certificate of `cert_file`.
    pub ca_file: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS: allowed on a loopback listen address (e.g.
    /// behind a proxy on the same host).
    pub plain_http: bool,
    /// Also allow `plain_http` on a non-loopback address (a TLS-terminating proxy on
    /// another host): traffic, tokens and packages then cross the network in the clear.
    pub plain_http_on_network: bool,
    /// How often the certificate files are checked for a change (SIGHUP checks at once).
    pub reload_seconds: u64,
}

/// Bounds on client connections, so that slow or silent clients cannot hold the
/// server's file descriptors (issue 9 item 14).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionConfig {
    /// Connections served at once; beyond it new connections are closed at accept.
    pub max_connections: usize,
    /// A TLS handshake must finish within this.
    pub tls_handshake_timeout_seconds: u64,
    /// A request's header must arrive within this from its first byte.
    pub header_read_timeout_seconds: u64,
    /// A connection silent this long between requests (or before its first) is closed.
    pub idle_timeout_seconds: u64,
    /// A request body that sends nothing this long, or a response the client stops
    /// reading this long, is cut off (measured per read or write, not in total).
    pub body_timeout_seconds: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            ca_file: None,
            plain_http: false,
            plain_http_on_network: false,
            reload_seconds: 60,
        }
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            tls_handshake_timeout_seconds: 10,
            header_read_timeout_seconds: 30,
            idle_timeout_seconds: 60,
            body_timeout_seconds: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `iss` of the tokens this server signs and accepts; empty (the default): the public
    /// URL ([`Config::public_base`]), as OIDC clients such as msal expect.
    pub issuer: String,
    /// Audiences accepted besides the MDE ones (`auth::MDE_AUDIENCES`).
    pub extra_audiences: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Lifetime of the access tokens the token endpoint issues.
    pub token_ttl_seconds: u64,
    /// How often a running server reloads its signing keys from the store, so that a
    /// rotation or retirement made with the CLI applies without a restart.
    pub key_refresh_seconds: u64,
    /// External identity providers whose access tokens are accepted besides the server's
    /// own (`[[auth.trusted_issuers]]`): Entra ID, Keycloak, any OIDC provider.
    pub trusted_issuers: Vec<TrustedIssuerConfig>,
}

/// Placeholder in a trusted issuer for the token's `tid`, as Entra ID writes its
/// multi-tenant issuers (`https://login.microsoftonline.com/{tenantid}/v2.0`).
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// An identity provider whose tokens are accepted: its `iss`, the audiences its tokens
/// may carry, where its public keys (JWKS) are, and which casefile tenant its tokens
/// belong to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    /// The token's `iss`, exactly; may hold [`TENANT_PLACEHOLDER`] once, which must then
    /// be the token's `tid`.
    pub issuer: String,
    /// Accepted `aud` values; unset: the MDE audiences and `auth.extra_audiences`.
    #[serde(default)]
    pub audiences: Option<Vec<String>>,
    /// The provider's JWKS in a file (read at start, re-read like a URL).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The provider's JWKS URL (`https://`, or `http://` on a loopback host only).
    #[serde(default)]
    /// Printed by `config check` without a password (`https://user:pass@…`).
    #[serde(serialize_with = "redact::url")]
    pub jwks_url: Option<String>,
    /// The casefile tenant every token of this issuer belongs to; unset: the token's
    /// `tid`, which must then be a valid tenant id.
    #[serde(default)]
    pub tenant: Option<String>,
    /// When set, only tokens whose `tid` is listed are accepted (e.g. the customer
    /// tenants of an Entra multi-tenant issuer).
    #[serde(default)]
    pub allowed_tids: Option<Vec<String>>,
    /// How often the JWKS is fetched again (a key the provider rotated in is also
    /// fetched at once, at most once a minute, when a token names it).
    #[serde(default = "default_issuer_refresh_seconds")]
    pub refresh_seconds: u64,
}

fn default_issuer_refresh_seconds() -> u64 {
    3600
}

impl Default for TrustedIssuerConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audiences: None,
            jwks_file: None,
            jwks_url: None,
            tenant: None,
            allowed_tids: None,
            refresh_seconds: default_issuer_refresh_seconds(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// A `Pending` action no agent picked up within this window ends `TimeOut`.
    pub pending_timeout_seconds: u64,
    /// How long a poll is held open waiting for work.
    pub poll_wait_seconds: u64,
    /// An action handed to an agent that does not confirm receipt within this window is
    /// offered again on its next poll (the answer may have been lost).
    pub claim_lease_seconds: u64,
    /// An `InProgress` action whose agent is silent this long ends `TimeOut`.
    pub silent_timeout_seconds: u64,
    /// An `InProgress` action running longer than this ends `TimeOut`, even if its agent
    /// still polls (a hung collector).
    pub max_collection_seconds: u64,
    /// A machine not seen for this long is `Inactive`.
    pub inactive_after_seconds: u64,
    /// Default lifetime of enrollment tokens.
    pub enrollment_token_ttl_seconds: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackageConfig {
    /// Lifetime of a `getPackageUri` link.
    pub link_ttl_seconds: u64,
    /// Largest package the server accepts.
    pub max_bytes: u64,
    /// Packages are deleted this long after they were stored.
    pub retention_seconds: u64,
}

/// Package storage. Unset `url`: `<data_dir>/packages`. Credentials for `s3://` come from
/// the environment only (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// or any other source `object_store` reads from `AWS_*`), never from this file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobsConfig {
    /// `file:///absolute/dir` or `s3://bucket/optional/prefix`.
    #[serde(serialize_with = "redact::url")]
    pub url: Option<String>,
    /// The S3 API's base URL (`https://s3.eu-west-1.amazonaws.com`, a MinIO or Ceph
    /// gateway); unset: AWS's own for the region (or `AWS_ENDPOINT`).
    #[serde(serialize_with = "redact::url")]
    pub endpoint: Option<String>,
    /// The bucket's region; unset: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Allow an `http://` endpoint: only on a loopback host (a local gateway), since
    /// request signatures and package bytes would otherwise cross the network in the clear.
    pub allow_http: bool,
    /// The download link answers with a redirect to a short-lived presigned URL of the
    /// bucket, so package bytes do not pass through casefile (`s3://` only).
    pub redirect_downloads: bool,
    /// Lifetime of such a presigned URL; never longer than the link's remaining life.
    pub redirect_ttl_seconds: u64,
    /// The `AWS_*` variables an `s3://` store is built from; `None`: the process
    /// environment. Not a setting (no file, variable or flag sets it, nothing prints it):
    /// for embedders and tests, which cannot change their own process's environment safely.
    #[serde(skip)]
    pub aws_env: Option<Vec<(String, String)>>,
}

impl Default for BlobsConfig {
    fn default() -> Self {
        Self {
            url: None,
            endpoint: None,
            region: None,
            allow_http: false,
            redirect_downloads: false,
            redirect_ttl_seconds: 60,
            aws_env: None,
        }
    }
}

/// Longest lifetime of a presigned download URL (it cannot be revoked once handed out).
pub const MAX_REDIRECT_TTL_SECONDS: u64 = 3600;

/// Where packages are stored, as [`BlobsConfig::url`] names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// A local directory.
    Dir(PathBuf),
    /// A bucket, and the key prefix below which packages go (empty, or ending in `/`).
    S3 { bucket: String, prefix: String },
}

impl std::fmt::Display for BlobLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(dir) => write!(f, "{}", dir.display()),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

impl BlobsConfig {
    /// Where packages go, checked: a readable URL of a known scheme, a bucket name S3
    /// accepts, a prefix without `.`/`..`/empty segments, no credentials in the URL, and
    /// settings that only make sense for a bucket refused for a directory.
    pub fn location(&self, data_dir: &Path) -> Result<BlobLocation, String> {
        let Some(raw) = self.url.as_deref() else {
            return self.check_dir(data_dir.join("packages"));
        };
        // Shown in messages without any credentials the URL might carry.
        let shown = || match url::Url::parse(raw) {
            Ok(mut u) => {
                let _ = u.set_password(None);
                let _ = u.set_username("");
                u.to_string()
            }
            Err(_) => "the value".to_owned(),
        };
        let url = url::Url::parse(raw)
            .map_err(|e| format!("blobs.url: {e}: expected file:///absolute/directory or s3://bucket/prefix"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "blobs.url ({}) must not carry credentials: they come from the environment \
                 (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)",
                shown()
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("blobs.url ({}) must not have a query or a fragment", shown()));
        }
        match url.scheme() {
            "file" => {
                if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                    return Err(format!(
                        "blobs.url ({raw}) names a host: a directory is file:///absolute/path (three slashes)"
                    ));
                }
                let dir =
                    url.to_file_path().map_err(|()| format!("blobs.url ({raw}) is not an absolute directory path"))?;
                // `url` has already resolved `..` (also `%2e%2e`): read the segments from the text.
                let text = raw.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
                if text.split('/').any(|seg| {
                    let seg = seg.to_ascii_lowercase().replace("%2e", ".");
                    seg == ".." || seg == "."
                }) {
                    return Err(format!("blobs.url ({raw}) must not contain '.' or '..' segments"));
                }
                // The data directory holds the database, keys and staging: packages beside them
                // would be taken for them (and they for packages) by clean-up and backups.
                let data = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
                if data.starts_with(&dir)
                    || dir.starts_with(data.join("staging"))
                    || dir.starts_with(data.join("incoming"))
                {
                    return Err(format!(
                        "blobs.url ({raw}) must not be the data directory, contain it or lie in its staging area: \
                         use a directory of its own (the default is <data_dir>/packages)"
                    ));
                }
                self.check_dir(dir)
            }
            "s3" => {
                let bucket = url.host_str().unwrap_or_default().to_owned();
                check_bucket(&bucket)?;
                // `url` has already resolved `.` and `..` segments: read them from the text.
                let path = raw.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
                let path = path.split_once('/').map(|(_, p)| p).unwrap_or_default();
                let path = path.trim_end_matches('/');
                let mut prefix = String::new();
                if !path.is_empty() {
                    for segment in path.split('/') {
                        if segment.is_empty() || segment == "." || segment == ".." {
                            return Err(format!(
                                "blobs.url ({}): the prefix must not have empty, '.' or '..' segments",
                                shown()
                            ));
                        }
                        if segment.contains(['\\', '#', '%', '*', '?']) || segment.chars().any(char::is_control) {
                            return Err(format!(
                                "blobs.url ({}): the prefix may not contain '\\', '#', '%', '*', '?' or control characters",
                                shown()
                            ));
                        }
                    }
                    prefix = format!("{path}/");
                }
                self.check_s3()?;
                Ok(BlobLocation::S3 { bucket, prefix })
            }
            other => Err(format!(
                "blobs.url: unknown scheme '{other}': use file:///absolute/directory or s3://bucket/prefix"
            )),
        }
    }

    fn check_dir(&self, dir: PathBuf) -> Result<BlobLocation, String> {
        for (set, name) in [
            (self.redirect_downloads, "blobs.redirect_downloads"),
            (self.endpoint.is_some(), "blobs.endpoint"),
            (self.region.is_some(), "blobs.region"),
            (self.allow_http, "blobs.allow_http"),
        ] {
            if set {
                return Err(format!(
                    "{name} applies to an s3:// bucket only, and packages are stored in the directory {}",
                    dir.display()
                ));
            }
        }
        Ok(BlobLocation::Dir(dir))
    }

    fn check_s3(&self) -> Result<(), String> {
        if let Some(raw) = &self.endpoint {
            let url = url::Url::parse(raw).map_err(|e| format!("blobs.endpoint: {e}"))?;
            if !url.username().is_empty() || url.password().is_some() {
                return Err("blobs.endpoint must not carry credentials: they come from the environment".to_owned());
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(format!("blobs.endpoint ({raw}) must not have a query or a fragment"));
            }
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            match url.scheme() {
                "https" if self.allow_http => {
                    return Err(format!("blobs.allow_http is set but blobs.endpoint ({raw}) is https: unset it"));
                }
                "https" => {}
                "http" if !loopback => {
                    return Err(format!(
                        "blobs.endpoint ({raw}) must be https: plain http only to a loopback host, where signed requests and packages do not cross the network"
                    ));
                }
                "http" if !self.allow_http => {
                    return Err(format!("blobs.endpoint ({raw}) is plain http: set blobs.allow_http = true"));
                }
                "http" => {}
                other => return Err(format!("blobs.endpoint: unknown scheme '{other}': use https://")),
            }
        } else if self.allow_http {
            return Err("blobs.allow_http needs an http:// blobs.endpoint on a loopback host".to_owned());
        }
        if let Some(region) = &self.region
            && (region.is_empty() || !region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(format!("blobs.region '{region}' is not a region name (letters, digits and '-')"));
        }
        if self.redirect_downloads && !(1..=MAX_REDIRECT_TTL_SECONDS).contains(&self.redirect_ttl_seconds) {
            return Err(format!(
                "blobs.redirect_ttl_seconds must be between 1 and {MAX_REDIRECT_TTL_SECONDS}, not {}",
                self.redirect_ttl_seconds
            ));
        }
        Ok(())
    }
}

/// S3's bucket naming rules (3–63 lower-case letters, digits, `-` and `.`, starting and
/// ending with a letter or digit), so a typo is refused at start, not at the first upload.
fn check_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("blobs.url names no bucket: use s3://bucket/prefix".to_owned());
    }
    let valid = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bucket.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        && !bucket.contains("..");
    match valid {
        true => Ok(()),
        false => Err(format!(
            "blobs.url: '{bucket}' is not a valid bucket name (3 to 63 lower-case letters, digits, '-' and '.')"
        )),
    }
}

/// Call quotas per tenant, caller and API (`../shared/spec/mde-api.md` §1, §3, §4).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Off: no quotas at all (tests and benchmarks).
    pub enabled: bool,
    /// Quota of every API not listed in `apis`.
    pub default: Quota,
    /// Per-API quotas, keyed by API name (`GetPackageUri`, `ListMachineActions`, ...).
    pub apis: BTreeMap<String, Quota>,
    /// Calls refused for missing or bad credentials one source address may make in a
    /// minute; past it, its calls are answered `429` without being looked at.
    pub refusals_per_source_per_minute: u32,
    /// Token requests one source address may make in a minute.
    pub token_requests_per_source_per_minute: u32,
    /// Token requests naming one client id in a minute, from anywhere: bounds the secret
    /// checks an outsider can make a client's id cost.
    pub token_requests_per_client_per_minute: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub per_minute: u32,
    pub per_hour: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("casefile-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            database_url: None,
            store: StoreConfig::default(),
            auth: AuthConfig::default(),
            agents: AgentConfig::default(),
            packages: PackageConfig::default(),
            blobs: BlobsConfig::default(),
            rate_limits: RateLimitConfig::default(),
            tls: TlsConfig::default(),
            connections: ConnectionConfig::default(),
            trusted_proxies: Vec::new(),
            metrics: MetricsConfig::default(),
            shutdown: ShutdownConfig::default(),
            console: ConsoleConfig::default(),
            profiles: ProfilesConfig::default(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            extra_audiences: Vec::new(),
            leeway_seconds: 60,
            token_ttl_seconds: 3600,
            key_refresh_seconds: 5,
            trusted_issuers: Vec::new(),
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            pending_timeout_seconds: 3 * DAY,
            poll_wait_seconds: 25,
            claim_lease_seconds: 30,
            silent_timeout_seconds: 10 * 60,
            max_collection_seconds: 3600,
            inactive_after_seconds: 7 * DAY,
            enrollment_token_ttl_seconds: 7 * DAY,
        }
    }
}

impl Default for PackageConfig {
    fn default() -> Self {
        Self { link_ttl_seconds: 10 * 60, max_bytes: 64 << 30, retention_seconds: 30 * DAY }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default: Quota { per_minute: 100, per_hour: 1500 },
            apis: BTreeMap::from([(Api::GetPackageUri.name().to_owned(), Quota { per_minute: 2, per_hour: 120 })]),
            refusals_per_source_per_minute: 60,
            token_requests_per_source_per_minute: 60,
            token_requests_per_client_per_minute: 120,
        }
    }
}

impl RateLimitConfig {
    /// The windows `api` is limited by; empty when limits are off.
    pub fn windows(&self, api: Api) -> Vec<Window> {
        if !self.enabled {
            return Vec::new();
        }
        let quota = self.apis.get(api.name()).copied().unwrap_or(self.default);
        vec![
            Window { length: Duration::from_secs(60), limit: quota.per_minute },
            Window { length: Duration::from_secs(3600), limit: quota.per_hour },
        ]
    }

    /// Refuses quota entries for APIs that do not exist: a typo must not silently leave
    /// an API on the default quota.
    pub fn validate(&self) -> Result<(), String> {
        match self.apis.keys().find(|name| !Api::ALL.iter().any(|api| api.name() == name.as_str())) {
            Some(unknown) => Err(format!(
                "rate_limits.apis has an unknown API '{unknown}'; known APIs: {}",
                Api::ALL.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
            )),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    /// An environment variable or a flag that names no setting, or whose value does not
    /// fit the setting's type.
    #[error("{source_name} (setting {key}): {message}")]
    Override { source_name: String, key: String, message: String },
    /// Settings that contradict each other or break a bound.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Prefix of the environment variables that carry settings.
pub const ENV_PREFIX: &str = "CASEFILE_";

/// `CASEFILE_*` variables that are not settings: the `--config` flag's own, and those of
/// the client commands and the log setup.
pub const ENV_NOT_SETTINGS: &[&str] = &[
    "CASEFILE_CONFIG",
    "CASEFILE_SERVER",
    "CASEFILE_CACERT",
    "CASEFILE_TOKEN",
    "CASEFILE_LOG",
    "CASEFILE_LOG_FORMAT",
    "CASEFILE_ENROLL_TOKEN",
    "CASEFILE_CLI_CONFIG",
];

/// Prefixes of other programs' variables that share the `CASEFILE_` namespace: the agent's
/// (a host may run both) and the test suite's.
pub const ENV_NOT_SETTINGS_PREFIXES: &[&str] = &["CASEFILE_AGENT_", "CASEFILE_TEST_"];

/// Where a configuration comes from, lowest precedence first after the defaults.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    /// The TOML file (`--config` / `CASEFILE_CONFIG`).
    pub file: Option<PathBuf>,
    /// The process environment (`std::env::vars()`); only `CASEFILE_*` is looked at.
    pub env: Vec<(String, String)>,
    /// Flags, as (flag name for messages, dotted key, raw value), in command-line order.
    pub flags: Vec<(String, String, String)>,
}

/// A configuration and what was noticed while layering it (unknown variables).
#[derive(Debug)]
pub struct Layered {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// The environment variable of a dotted key (`auth.issuer` → `CASEFILE_AUTH__ISSUER`).
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.split('.').map(str::to_ascii_uppercase).collect::<Vec<_>>().join("__"))
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&raw).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
    }

    /// The configuration from defaults, then the file, then `CASEFILE_*` variables, then
    /// flags, each overriding the one before; validated ([`Config::check`]).
    ///
    /// A value that does not fit its setting's type is refused naming the variable or
    /// flag, the key and the expected type; a variable with a section (`__`) that names
    /// no setting is refused; one without is warned about and ignored (it may belong to
    /// another program).
    pub fn layered(layers: &Layers) -> Result<Layered, ConfigError> {
        let mut table = toml::Table::new();
        if let Some(path) = &layers.file {
            let raw =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            // Parsed as the struct first: toml's own errors name the line and the key.
            toml::from_str::<Config>(&raw)
                .map_err(|source| ConfigError::Parse { path: path.clone(), source: Box::new(source) })?;
            table = toml::from_str(&raw)
                .map_err(|source| ConfigError::Parse { path: path.clone(), source: Box::new(source) })?;
        }
        let mut warnings = Vec::new();
        let mut env: Vec<_> = layers
            .env
            .iter()
            .filter(|(name, _)| {
                name.starts_with(ENV_PREFIX)
                    && !ENV_NOT_SETTINGS.contains(&name.as_str())
                    && !ENV_NOT_SETTINGS_PREFIXES.iter().any(|p| name.starts_with(p))
            })
            .collect();
        env.sort();
        for (name, raw) in env {
            let path: Vec<String> =
                name[ENV_PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect::<Vec<_>>();
            let key = path.join(".");
            match overlay(&mut table, &path, raw) {
                Ok(()) => {}
                Err(Refused::Unknown(message)) if path.len() == 1 => {
                    warnings.push(format!("{name} is not a casefile setting ({message}); ignored"));
                }
                Err(Refused::Unknown(message) | Refused::Bad(message)) => {
                    return Err(ConfigError::Override { source_name: name.clone(), key, message });
                }
            }
        }
        for (flag, key, raw) in &layers.flags {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            overlay(&mut table, &path, raw).map_err(|(Refused::Unknown(message) | Refused::Bad(message))| {
                ConfigError::Override { source_name: flag.clone(), key: key.clone(), message }
            })?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
        config.check().map_err(ConfigError::Invalid)?;
        if config.database_url.is_some() {
            warnings.push("database_url is deprecated: use [store] url (environment CASEFILE_STORE__URL)".to_owned());
        }
        Ok(Layered { config, warnings })
    }

    /// The effective configuration as TOML, secrets redacted (`casefile config check`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    /// Every check a server makes of its configuration before it starts: bounds and
    /// combinations ([`Config::validate`]), certificate files, plain HTTP on the listen
    /// address, trusted proxies. `casefile config check` runs the same.
    pub fn check(&self) -> Result<(), String> {
        self.validate()?;
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err("tls.cert_file and tls.key_file go together: set both or neither".to_owned());
        }
        crate::tls::check_plain_http(self, self.listen.ip()).map_err(|e| e.to_string())?;
        crate::proxy::TrustedProxies::parse(&self.trusted_proxies).map_err(|e| format!("trusted_proxies: {e}"))?;
        self.blobs.location(&self.data_dir)?;
        for (i, issuer) in self.auth.trusted_issuers.iter().enumerate() {
            if issuer.jwks_file.is_some() == issuer.jwks_url.is_some() {
                return Err(format!(
                    "auth.trusted_issuers[{i}] ({}): set exactly one of jwks_file and jwks_url",
                    issuer.issuer
                ));
            }
        }
        self.check_console()
    }

    fn check_console(&self) -> Result<(), String> {
        let console = &self.console;
        if casefile_proto::TenantId::parse(&console.tenant).is_none() {
            return Err(format!("console.tenant: '{}' is not a valid tenant id", console.tenant));
        }
        if console.idle_minutes == 0 || console.absolute_hours == 0 {
            return Err("console.idle_minutes and console.absolute_hours must be at least 1".to_owned());
        }
        if console.absolute_hours > 24 * 30 || console.idle_minutes > 24 * 60 {
            return Err("console.absolute_hours is at most 720 and console.idle_minutes at most 1440".to_owned());
        }
        for (i, sso) in console.sso.iter().enumerate() {
            if sso.name.trim().is_empty() || sso.client_id.is_empty() {
                return Err(format!("console.sso[{i}]: name and client_id are required"));
            }
            if !self.auth.trusted_issuers.iter().any(|t| t.issuer == sso.issuer) {
                return Err(format!(
                    "console.sso[{i}] ({}): its issuer must also be in [[auth.trusted_issuers]] (its keys verify the ID tokens)",
                    sso.issuer
                ));
            }
            crate::auth::issuers::check_fetch_url(&sso.issuer).map_err(|e| format!("console.sso[{i}].issuer: {e}"))?;
        }
        Ok(())
    }

    /// The base URL clients reach the server at: `public_url`, else `https://` (or
    /// `http://` with `tls.plain_http`) and the listen address, with this machine's
    /// host name for an unspecified address.
    pub fn public_base(&self) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let scheme = if self.tls.plain_http { "http" } else { "https" };
        let port = self.listen.port();
        match self.listen.ip() {
            ip if ip.is_unspecified() => format!("{scheme}://{}:{port}", crate::tls::hostname()),
            _ => format!("{scheme}://{}", self.listen),
        }
    }

    /// The issuer of this server's tokens (see [`AuthConfig::issuer`]).
    pub fn issuer(&self) -> String {
        if self.auth.issuer.is_empty() { self.public_base() } else { self.auth.issuer.clone() }
    }

    /// Where the generated CA and server certificate live.
    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    /// The database's URL: `store.url`, else the deprecated `database_url`, else the
    /// SQLite file `casefile.db` in the data directory.
    pub fn database_url(&self) -> String {
        self.store
            .url
            .clone()
            .or_else(|| self.database_url.clone())
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("casefile.db").display()))
    }

    pub fn packages_dir(&self) -> PathBuf {
        self.data_dir.join("packages")
    }

    /// Where uploads wait while they are checked, before they are published.
    pub fn staging_dir(&self) -> PathBuf {
        self.data_dir.join("incoming")
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.packages.retention_seconds)
    }

    pub fn link_ttl(&self) -> Duration {
        Duration::from_secs(self.packages.link_ttl_seconds)
    }

    /// Refuses settings that would break the server's promises rather than letting it start
    /// and misbehave.
    pub fn validate(&self) -> Result<(), String> {
        self.rate_limits.validate()?;
        self.profiles.validate()?;
        if self.store.url.is_some() && self.database_url.is_some() {
            return Err("set store.url only: database_url is its deprecated name".to_owned());
        }
        casefile_store::Backend::of(&self.database_url()).map_err(|e| format!("store.url: {e}"))?;
        crate::metrics::parse_nets(&self.metrics.allow_from)?;
        let a = &self.agents;
        // A poll parks for up to poll_wait_seconds between two signs of life: a silent
        // window not well above it would time out healthy agents.
        if a.silent_timeout_seconds < a.poll_wait_seconds.saturating_mul(2) {
            return Err(format!(
                "agents.silent_timeout_seconds ({}) must be at least twice agents.poll_wait_seconds ({}): \
                 agents that are waiting on a poll would be taken for silent",
                a.silent_timeout_seconds, a.poll_wait_seconds
            ));
        }
        if a.claim_lease_seconds == 0 {
            return Err(
                "agents.claim_lease_seconds must be at least 1: with 0, every poll offers the action again".to_owned()
            );
        }
        for (name, value, max) in [
            ("auth.token_ttl_seconds", self.auth.token_ttl_seconds, MAX_TOKEN_TTL_SECONDS),
            ("packages.link_ttl_seconds", self.packages.link_ttl_seconds, MAX_LINK_TTL_SECONDS),
            (
                "agents.enrollment_token_ttl_seconds",
                a.enrollment_token_ttl_seconds,
                crate::enrollment::MAX_TOKEN_TTL.as_secs(),
            ),
        ] {
            if value == 0 || value > max {
                return Err(format!("{name} must be between 1 and {max} seconds, not {value}"));
            }
        }
        // 0 is allowed: cut everything at once.
        if self.shutdown.grace_seconds > MAX_SHUTDOWN_GRACE_SECONDS {
            return Err(format!(
                "shutdown.grace_seconds must be at most {MAX_SHUTDOWN_GRACE_SECONDS}, not {}",
                self.shutdown.grace_seconds
            ));
        }
        Ok(())
    }
}

/// Longest lifetime of an access token (Entra ID's own tokens live at most a day).
pub const MAX_TOKEN_TTL_SECONDS: u64 = DAY;
/// Longest lifetime of a download link: a link is a bearer credential for evidence.
pub const MAX_LINK_TTL_SECONDS: u64 = DAY;

enum Refused {
    /// The key names no setting.
    Unknown(String),
    /// The value does not fit the setting.
    Bad(String),
}

/// Sets `path` in `table` to `raw` if the result still describes a valid [`Config`]
/// (checked at once, so that the error names this variable or flag). `raw` is read as a
/// TOML value (`25`, `true`, `["a", "b"]`, `{ per_minute = 1, per_hour = 2 }`), else,
/// or when the setting wants text, as a string.
fn overlay(table: &mut toml::Table, path: &[String], raw: &str) -> Result<(), Refused> {
    if path.iter().any(|p| p.is_empty()) {
        return Err(Refused::Unknown("an empty section or key".to_owned()));
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"));
    let text = toml::Value::String(raw.to_owned());
    let mut first: Option<String> = None;
    for value in parsed.into_iter().chain([text]) {
        let mut candidate = table.clone();
        set(&mut candidate, path, value).map_err(Refused::Unknown)?;
        match toml::Value::Table(candidate.clone()).try_into::<Config>() {
            Ok(_) => {
                *table = candidate;
                return Ok(());
            }
            // The first reading's complaint is the telling one (`-1` for a count).
            Err(e) => _ = first.get_or_insert_with(|| e.message().to_owned()),
        }
    }
    let message = first.unwrap_or_default();
    Err(match message.contains("unknown field") {
        true => Refused::Unknown(message),
        false => Refused::Bad(message),
    })
}

fn set(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, sections) = path.split_last().ok_or("an empty key")?;
    let mut at = table;
    for section in sections {
        let entry = at.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry.as_table_mut().ok_or_else(|| format!("{section} is a value, not a section"))?;
    }
    at.insert(last.clone(), value);
    Ok(())
}

/// Serializers that keep secrets out of printed configurations. A setting that carries a
/// secret gets `#[serde(serialize_with = "redact::...")]`.
pub mod redact {
    use serde::Serializer;

    pub const REDACTED: &str = "<redacted>";

    /// A URL with its password (`scheme://user:password@host`) replaced.
    pub fn url<S: Serializer>(value: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_none(),
            Some(raw) => match url::Url::parse(raw) {
                Ok(mut url) if url.password().is_some() => {
                    // Brackets would be percent-encoded in a URL.
                    let _ = url.set_password(Some("REDACTED"));
                    s.serialize_str(url.as_str())
                }
                Ok(_) => s.serialize_str(raw),
                // Not a URL we can take apart: it may still hold a secret.
                Err(_) if raw.contains('@') => s.serialize_str(REDACTED),
                Err(_) => s.serialize_str(raw),
            },
        }
    }

    /// A value that is secret as a whole.
    pub fn secret<S: Serializer, T>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_none(),
            Some(_) => s.serialize_str(REDACTED),
        }
    }
}

#[cfg(test)]
mod layering_tests {
    use super::*;

    fn layered(file: Option<&str>, env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<Layered, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = file.map(|text| {
            let path = dir.path().join("casefile.toml");
            std::fs::write(&path, text).unwrap();
            path
        });
        Config::layered(&Layers {
            file: path,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            flags: flags.iter().map(|(k, v)| (format!("--set {k}"), k.to_string(), v.to_string())).collect(),
        })
    }

    #[test]
    fn profiles_are_defined_in_the_file_and_checked_at_start() {
        let file = "[profiles]\ndefault = \"web\"\n[profiles.groups]\n\"Web servers\" = \"triage\"\n\
                    [profiles.define.web]\nextends = \"standard\"\n\
                    [[profiles.define.web.collector]]\nname = \"var_log\"\nmax_total_bytes = 1048576\n";
        let config = layered(Some(file), &[], &[]).unwrap().config;
        config.validate().unwrap();
        let web = &config.profiles.resolved().unwrap()["web"];
        assert_eq!(web.collectors.len(), 11);
        assert_eq!(web.collectors[10].max_total_bytes, Some(1 << 20));

        for (bad, expected) in [
            ("[profiles]\ndefault = \"nope\"\n", "profiles.default: no profile is named \"nope\""),
            ("[profiles.groups]\nWeb = \"nope\"\n", "profiles.groups.\"Web\": no profile is named"),
            ("[profiles.define.triage]\nextends = \"standard\"\n", "triage is built in"),
            ("[profiles.define.x]\n[[profiles.define.x.collector]]\nname = \"sh\"\n", "names the collector \"sh\""),
            ("[profiles.define.Bad]\nextends = \"standard\"\n", "profile name \"Bad\""),
        ] {
            let err = format!("{:?}", layered(Some(bad), &[], &[]).expect_err("refused"));
            assert!(err.contains(&expected.replace('"', "\\\"")), "{bad}: {err}");
        }
        // A command is no building block: the key does not exist.
        let command = "[profiles.define.x]\n[[profiles.define.x.collector]]\nname = \"logs\"\ncommand = \"sh\"\n";
        assert!(layered(Some(command), &[], &[]).is_err());
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let file = "[agents]\npoll_wait_seconds = 11\nclaim_lease_seconds = 12\nsilent_timeout_seconds = 600\n";
        let env = [("CASEFILE_AGENTS__POLL_WAIT_SECONDS", "21"), ("CASEFILE_AGENTS__CLAIM_LEASE_SECONDS", "22")];
        let flags = [("agents.poll_wait_seconds", "31")];
        let config = layered(Some(file), &env, &flags).unwrap().config;
        assert_eq!(config.agents.poll_wait_seconds, 31, "flag");
        assert_eq!(config.agents.claim_lease_seconds, 22, "environment");
        assert_eq!(config.agents.silent_timeout_seconds, 600, "file");
        assert_eq!(config.agents.max_collection_seconds, 3600, "default");
    }

    #[test]
    fn every_kind_of_setting_comes_from_the_environment() {
        let env = [
            ("CASEFILE_DATA_DIR", "/srv/casefile"),
            ("CASEFILE_LISTEN", "127.0.0.1:9443"),
            ("CASEFILE_PUBLIC_URL", "https://casefile.example.com"),
            ("CASEFILE_AUTH__ISSUER", "https://issuer.example"),
            // A text setting whose value reads as a number stays text.
            ("CASEFILE_AUTH__EXTRA_AUDIENCES", "[\"api://casefile\", \"1234\"]"),
            ("CASEFILE_TLS__PLAIN_HTTP", "true"),
            ("CASEFILE_TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
            ("CASEFILE_RATE_LIMITS__APIS", "{ GetPackageUri = { per_minute = 5, per_hour = 50 } }"),
            ("CASEFILE_CONNECTIONS__MAX_CONNECTIONS", "10"),
            (
                "CASEFILE_AUTH__TRUSTED_ISSUERS",
                "[{ issuer = \"https://idp.example\", jwks_url = \"https://idp.example/jwks\" }]",
            ),
            // Not settings: left alone, no warning.
            ("CASEFILE_TOKEN", "x"),
            ("CASEFILE_CONFIG", "/nowhere"),
            ("CASEFILE_AGENT_SERVER", "https://elsewhere"),
            ("CASEFILE_TEST_PYTHON", "/usr/bin/python3"),
            ("CASEFILE_ENROLL_TOKEN", "cfe_x"),
            ("HOME", "/root"),
        ];
        let layered = layered(None, &env, &[]).unwrap();
        let c = layered.config;
        assert!(layered.warnings.is_empty(), "{:?}", layered.warnings);
        assert_eq!(c.data_dir, PathBuf::from("/srv/casefile"));
        assert_eq!(c.listen.port(), 9443);
        assert_eq!(c.issuer(), "https://issuer.example");
        assert_eq!(c.auth.extra_audiences, ["api://casefile", "1234"]);
        assert!(c.tls.plain_http);
        assert_eq!(c.trusted_proxies, ["10.0.0.0/8"]);
        assert_eq!(c.rate_limits.apis["GetPackageUri"], Quota { per_minute: 5, per_hour: 50 });
        assert_eq!(c.connections.max_connections, 10);
        assert_eq!(c.auth.trusted_issuers[0].refresh_seconds, 3600);
        assert_eq!(
            env_name("rate_limits.token_requests_per_source_per_minute"),
            "CASEFILE_RATE_LIMITS__TOKEN_REQUESTS_PER_SOURCE_PER_MINUTE"
        );
    }

    #[test]
    fn hostile_values_name_the_variable_the_key_and_the_type() {
        let e = layered(None, &[("CASEFILE_AGENTS__POLL_WAIT_SECONDS", "soon")], &[]).unwrap_err().to_string();
        assert!(e.contains("CASEFILE_AGENTS__POLL_WAIT_SECONDS") && e.contains("agents.poll_wait_seconds"), "{e}");
        assert!(e.contains("u64") || e.contains("integer"), "{e}");
        for hostile in ["-1", "1e99", "99999999999999999999999", "", "1\n[auth]\nissuer = 'x'", "[1, 2]"] {
            let e = layered(None, &[("CASEFILE_AGENTS__POLL_WAIT_SECONDS", hostile)], &[]).unwrap_err();
            assert!(e.to_string().contains("CASEFILE_AGENTS__POLL_WAIT_SECONDS"), "{hostile:?}: {e}");
        }
        let e = layered(None, &[("CASEFILE_LISTEN", "not-an-address")], &[]).unwrap_err().to_string();
        assert!(e.contains("CASEFILE_LISTEN") && e.contains("listen"), "{e}");
        let e = layered(None, &[("CASEFILE_TLS__PLAIN_HTTP", "yes")], &[]).unwrap_err().to_string();
        assert!(e.contains("CASEFILE_TLS__PLAIN_HTTP") && e.contains("bool"), "{e}");
        // A section that exists with a key that does not: refused, naming both.
        let e = layered(None, &[("CASEFILE_AUTH__ISUER", "x")], &[]).unwrap_err().to_string();
        assert!(e.contains("CASEFILE_AUTH__ISUER") && e.contains("isuer"), "{e}");
        // A section that does not exist.
        let e = layered(None, &[("CASEFILE_NOPE__KEY", "x")], &[]).unwrap_err().to_string();
        assert!(e.contains("CASEFILE_NOPE__KEY"), "{e}");
        // A key that is a value, used as a section.
        let e = layered(None, &[("CASEFILE_LISTEN__PORT", "1")], &[]).unwrap_err().to_string();
        assert!(e.contains("CASEFILE_LISTEN__PORT"), "{e}");
        let e = layered(None, &[("CASEFILE_AUTH____ISSUER", "x")], &[]).unwrap_err().to_string();
        assert!(e.contains("CASEFILE_AUTH____ISSUER"), "{e}");
        // A section replaced by a value.
        let e = layered(None, &[("CASEFILE_AUTH", "1")], &[]).unwrap_err();
        assert!(e.to_string().contains("CASEFILE_AUTH"), "{e}");
        // Without a section it may be another program's: warned about, ignored.
        let layered_ok = layered(None, &[("CASEFILE_LISTN", "0.0.0.0:1")], &[]).unwrap();
        assert!(layered_ok.warnings[0].contains("CASEFILE_LISTN"), "{:?}", layered_ok.warnings);
        assert_eq!(layered_ok.config.listen, Config::default().listen);
        // Flags are held to the same rules.
        let e = layered(None, &[], &[("agents.poll_wait_seconds", "x")]).unwrap_err().to_string();
        assert!(e.contains("--set agents.poll_wait_seconds"), "{e}");
        let e = layered(None, &[], &[("nope", "1")]).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn the_file_refuses_unknown_keys_and_bad_types_naming_them() {
        let e = layered(Some("[auth]\nisuer = \"x\"\n"), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("isuer"), "{e}");
        let e = layered(Some("[agents]\npoll_wait_seconds = \"soon\"\n"), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("poll_wait_seconds") && (e.contains("u64") || e.contains("integer")), "{e}");
        let e = layered(Some("bogus = 1\n"), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn invalid_combinations_name_the_settings() {
        let e = layered(None, &[("CASEFILE_AGENTS__SILENT_TIMEOUT_SECONDS", "10")], &[]).unwrap_err().to_string();
        assert!(e.contains("agents.silent_timeout_seconds") && e.contains("agents.poll_wait_seconds"), "{e}");
        let e = layered(None, &[("CASEFILE_TLS__CERT_FILE", "/etc/cert.pem")], &[]).unwrap_err().to_string();
        assert!(e.contains("tls.cert_file") && e.contains("tls.key_file"), "{e}");
        let env = [("CASEFILE_TLS__PLAIN_HTTP", "true"), ("CASEFILE_LISTEN", "0.0.0.0:8080")];
        let e = layered(None, &env, &[]).unwrap_err().to_string();
        assert!(e.contains("tls.plain_http"), "{e}");
    }

    #[test]
    fn the_printed_configuration_reads_back_and_hides_secrets() {
        let env = [("CASEFILE_STORE__URL", "postgres://casefile:hunter2@db.example/casefile")];
        let config = layered(None, &env, &[]).unwrap().config;
        let printed = config.to_redacted_toml();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("postgres://casefile:REDACTED@db.example/casefile"), "{printed}");
        assert_eq!(config.database_url(), "postgres://casefile:hunter2@db.example/casefile");
        // The old name still works, with a warning; both at once is refused.
        let old = [("CASEFILE_DATABASE_URL", "postgres://casefile:hunter2@db.example/casefile")];
        let layered_old = layered(None, &old, &[]).unwrap();
        assert_eq!(layered_old.config.database_url(), config.database_url());
        assert!(layered_old.warnings.iter().any(|w| w.contains("deprecated")), "{:?}", layered_old.warnings);
        assert!(!layered_old.config.to_redacted_toml().contains("hunter2"));
        assert!(layered(None, &[old[0], env[0]], &[]).is_err());
        let e = layered(None, &[("CASEFILE_STORE__URL", "mysql://db/casefile")], &[]).unwrap_err().to_string();
        assert!(e.contains("store.url"), "{e}");
        // Everything else round-trips: the output is a valid configuration file.
        let plain = Config { store: StoreConfig::default(), ..config };
        let back: Config = toml::from_str(&plain.to_redacted_toml()).unwrap();
        assert_eq!(back.to_redacted_toml(), plain.to_redacted_toml());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration the `casefile` package installs parses and validates, and so does
    /// every commented default in it once uncommented (they are real keys and values).
    #[test]
    fn the_packaged_configuration_and_its_commented_defaults_are_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/casefile/casefile.toml");
        let packaged = Config::load(&path).unwrap();
        packaged.validate().unwrap();
        assert_eq!(packaged.data_dir, Path::new("/var/lib/casefile"));
        assert_eq!(packaged.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(packaged.shutdown.grace_seconds, ShutdownConfig::default().grace_seconds);
        let raw = std::fs::read_to_string(&path).unwrap();
        // `#key = value` lines are defaults; `#[[...]]` and the lines after it an example.
        let example_from = raw.find("#[[auth.trusted_issuers]]").unwrap();
        let (defaults, example) = raw.split_at(example_from);
        let uncommented: String = defaults
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => rest,
                _ => l,
            })
            .chain(example.lines())
            .map(|l| format!("{l}\n"))
            .collect();
        let config: Config = toml::from_str(&uncommented).unwrap();
        config.validate().unwrap();
        assert_eq!(config.public_url.as_deref(), Some("https://casefile.example:8443"));
        assert_eq!(config.rate_limits.apis.len(), 1);
    }

    #[test]
    fn grace_periods_beyond_an_hour_are_refused() {
        let mut config = Config::default();
        config.shutdown.grace_seconds = 0;
        config.validate().unwrap();
        config.shutdown.grace_seconds = MAX_SHUTDOWN_GRACE_SECONDS;
        config.validate().unwrap();
        config.shutdown.grace_seconds = MAX_SHUTDOWN_GRACE_SECONDS + 1;
        assert!(config.validate().unwrap_err().contains("shutdown.grace_seconds"));
        for bad in ["[shutdown]\ngrace_seconds = -1", "[shutdown]\ngrace_seconds = \"30\"", "[shutdown]\ngrace = 1"] {
            assert!(toml::from_str::<Config>(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod blobs_tests {
    use super::*;

    fn location(toml_text: &str) -> Result<BlobLocation, String> {
        let config: Config = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        config.check()?;
        config.blobs.location(&config.data_dir)
    }

    #[test]
    fn the_default_is_the_data_directory_and_file_urls_name_other_directories() {
        assert_eq!(location("data_dir = \"/srv/cf\"").unwrap(), BlobLocation::Dir(PathBuf::from("/srv/cf/packages")));
        let dir = location("[blobs]\nurl = \"file:///mnt/evidence/packages\"").unwrap();
        assert_eq!(dir, BlobLocation::Dir(PathBuf::from("/mnt/evidence/packages")));
        let dir = location("[blobs]\nurl = \"file://localhost/mnt/x\"").unwrap();
        assert_eq!(dir, BlobLocation::Dir(PathBuf::from("/mnt/x")));
        let e = location("[blobs]\nurl = \"file://mnt/x\"").unwrap_err();
        assert!(e.contains("names a host") && e.contains("three slashes"), "{e}");
    }

    #[test]
    fn file_urls_refuse_dot_segments_and_the_data_directory_itself() {
        for hostile in
            ["file:///var/lib/casefile/../../etc", "file:///mnt/%2e%2e/etc", "file:///mnt/./x", "file:///mnt/%2E%2E"]
        {
            let e = location(&format!("[blobs]\nurl = \"{hostile}\"")).unwrap_err();
            assert!(e.contains("'..'"), "{hostile}: {e}");
        }
        for overlapping in ["file:///srv/cf", "file:///srv", "file:///", "file:///srv/cf/incoming/x"] {
            let e = location(&format!("data_dir = \"/srv/cf\"\n[blobs]\nurl = \"{overlapping}\"")).unwrap_err();
            assert!(e.contains("data directory"), "{overlapping}: {e}");
        }
        let beside = location("data_dir = \"/srv/cf\"\n[blobs]\nurl = \"file:///srv/cf-packages\"").unwrap();
        assert_eq!(beside, BlobLocation::Dir(PathBuf::from("/srv/cf-packages")));
    }

    #[test]
    fn s3_urls_give_a_bucket_and_a_clean_prefix() {
        let s3 = |url: &str| location(&format!("[blobs]\nurl = \"{url}\""));
        let bucket = |b: &str, p: &str| BlobLocation::S3 { bucket: b.to_owned(), prefix: p.to_owned() };
        assert_eq!(s3("s3://evidence").unwrap(), bucket("evidence", ""));
        assert_eq!(s3("s3://evidence/").unwrap(), bucket("evidence", ""));
        assert_eq!(s3("s3://evidence/site-a").unwrap(), bucket("evidence", "site-a/"));
        assert_eq!(s3("s3://my.evidence-1/a/b/").unwrap(), bucket("my.evidence-1", "a/b/"));
        assert_eq!(s3("s3://evidence/site-a").unwrap().to_string(), "s3://evidence/site-a/");
        for (url, expected) in [
            ("s3://", "names no bucket"),
            ("s3:///x", "names no bucket"),
            ("s3://ab/x", "not a valid bucket name"),
            ("s3://UPPER/x", "not a valid bucket name"),
            ("s3://-dash/x", "not a valid bucket name"),
            ("s3://a..b/x", "not a valid bucket name"),
            (&format!("s3://{}/x", "a".repeat(64)), "not a valid bucket name"),
            ("s3://evidence/../x", "'..'"),
            ("s3://evidence/a/./b", "'.'"),
            ("s3://evidence/a//b", "empty"),
            ("s3://evidence/a%2F..", "may not contain"),
            ("s3://evidence/a?x=1", "query"),
            ("s3://evidence/a#frag", "fragment"),
            ("s3://key:secret@evidence/a", "must not carry credentials"),
            ("gs://evidence/a", "unknown scheme 'gs'"),
            ("evidence/a", "blobs.url"),
        ] {
            let e = s3(url).unwrap_err();
            assert!(e.contains(expected), "{url}: {e}");
            assert!(!e.contains("secret"), "{url}: {e}");
        }
    }

    #[test]
    fn endpoints_need_tls_off_loopback_and_bucket_settings_need_a_bucket() {
        let with = |extra: &str| location(&format!("[blobs]\nurl = \"s3://evidence/a\"\n{extra}"));
        with("endpoint = \"https://s3.eu-west-1.amazonaws.com\"\nregion = \"eu-west-1\"").unwrap();
        with("endpoint = \"http://127.0.0.1:9000\"\nallow_http = true").unwrap();
        with("endpoint = \"http://localhost:9000\"\nallow_http = true").unwrap();
        with("endpoint = \"http://[::1]:9000\"\nallow_http = true").unwrap();
        for (extra, expected) in [
            ("endpoint = \"http://127.0.0.1:9000\"", "set blobs.allow_http = true"),
            ("endpoint = \"http://minio.internal:9000\"\nallow_http = true", "must be https"),
            ("endpoint = \"http://10.1.2.3:9000\"\nallow_http = true", "must be https"),
            ("endpoint = \"https://s3.example\"\nallow_http = true", "is https: unset it"),
            ("allow_http = true", "needs an http:// blobs.endpoint"),
            ("endpoint = \"ftp://s3.example\"", "unknown scheme 'ftp'"),
            ("endpoint = \"https://user:pw@s3.example\"", "must not carry credentials"),
            ("region = \"eu west\"", "not a region name"),
            ("redirect_downloads = true\nredirect_ttl_seconds = 0", "blobs.redirect_ttl_seconds"),
            ("redirect_downloads = true\nredirect_ttl_seconds = 3601", "blobs.redirect_ttl_seconds"),
        ] {
            let e = with(extra).unwrap_err();
            assert!(e.contains(expected), "{extra}: {e}");
        }
        with("redirect_downloads = true").unwrap();
        assert_eq!(BlobsConfig::default().redirect_ttl_seconds, 60);
        for set in ["redirect_downloads = true", "endpoint = \"https://s3.example\"", "region = \"eu-west-1\""] {
            let e = location(&format!("[blobs]\n{set}")).unwrap_err();
            assert!(e.contains("applies to an s3:// bucket only"), "{set}: {e}");
            let e = location(&format!("[blobs]\nurl = \"file:///srv/p\"\n{set}")).unwrap_err();
            assert!(e.contains("applies to an s3:// bucket only"), "{set}: {e}");
        }
        assert!(location("[blobs]\naws_env = []").unwrap_err().contains("unknown field"), "not a setting");
    }

    #[test]
    fn blob_settings_come_from_the_environment_and_print_without_credentials() {
        let layers = Layers {
            env: [
                ("CASEFILE_BLOBS__URL", "s3://evidence/site-a"),
                ("CASEFILE_BLOBS__ENDPOINT", "http://127.0.0.1:9000"),
                ("CASEFILE_BLOBS__ALLOW_HTTP", "true"),
                ("CASEFILE_BLOBS__REDIRECT_DOWNLOADS", "true"),
                ("CASEFILE_BLOBS__REDIRECT_TTL_SECONDS", "30"),
                ("AWS_SECRET_ACCESS_KEY", "hunter2"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..Default::default()
        };
        let config = Config::layered(&layers).unwrap().config;
        assert_eq!(config.blobs.url.as_deref(), Some("s3://evidence/site-a"));
        assert!(config.blobs.allow_http && config.blobs.redirect_downloads);
        assert_eq!(config.blobs.redirect_ttl_seconds, 30);
        let printed = config.to_redacted_toml();
        assert!(
            printed.contains("[blobs]") && !printed.contains("hunter2") && !printed.contains("aws_env"),
            "{printed}"
        );
        let back: Config = toml::from_str(&printed).unwrap();
        assert_eq!(back.blobs.url, config.blobs.url);
        let e = Config::layered(&Layers {
            env: vec![("CASEFILE_BLOBS__URL".into(), "s3://x".into())],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a valid bucket name"), "{e}");
    }
}
