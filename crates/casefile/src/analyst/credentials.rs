//! What `casefile login` saves: the server, the tenant, whom to trust, and either an
//! application's client id and secret (a new token can be fetched whenever the cached one
//! expires) or a user's cached token alone (never the password: when it expires the user
//! signs in again). One JSON file, private to its owner.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Overrides the file's path (tests, several servers).
pub const CONFIG_ENV: &str = "CASEFILE_CLI_CONFIG";
const FILE_NAME: &str = "credentials.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The server's base URL, e.g. `https://casefile.example.com:8443`.
    pub server: String,
    pub tenant: String,
    pub trust: Trust,
    pub identity: Identity,
    /// The access token in use and when it expires; absent until the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<CachedToken>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Trust {
    /// `http://` to a loopback address: nothing to trust.
    None,
    /// Only this CA (its PEM as the server published it, checked against the pin at login).
    Pinned { ca_sha256: String, ca_pem: String },
    /// The operating system's roots (a publicly trusted certificate).
    SystemRoots,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Identity {
    /// An application registration (`casefile app create`): client credentials.
    Application { client_id: String, client_secret: String },
    /// A local user signed in with a password: only the token is kept.
    User { name: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedToken {
    pub access_token: String,
    /// Seconds since the Unix epoch.
    pub expires_at: i64,
}

impl CachedToken {
    /// Still good for at least `margin` seconds at `now`.
    pub fn fresh_at(&self, now: i64, margin: i64) -> bool {
        self.expires_at - margin > now
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("not logged in (no {0}): run `casefile login --server URL ...` first")]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a casefile credentials file ({source}): run `casefile login` again")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("{path} can be read by other users (mode {mode:o}): `chmod 600` it, or `casefile logout` and log in again")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("neither CASEFILE_CLI_CONFIG, XDG_CONFIG_HOME nor HOME is set: cannot tell where credentials live")]
    NoHome,
}

/// Where the credentials live: `$CASEFILE_CLI_CONFIG`, else
/// `$XDG_CONFIG_HOME/casefile/credentials.json`, else `$HOME/.config/casefile/credentials.json`.
pub fn path() -> Result<PathBuf, CredentialsError> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(file) = non_empty(CONFIG_ENV) {
        return Ok(file);
    }
    // The XDG base directory spec: a relative XDG_CONFIG_HOME is invalid and ignored.
    if let Some(dir) = non_empty("XDG_CONFIG_HOME").filter(|d| d.is_absolute()) {
        return Ok(dir.join("casefile").join(FILE_NAME));
    }
    let home = non_empty("HOME").ok_or(CredentialsError::NoHome)?;
    Ok(home.join(".config").join("casefile").join(FILE_NAME))
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let io = |source| CredentialsError::Io { path: path.to_owned(), source };
        let file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CredentialsError::Missing(path.to_owned()));
            }
            Err(e) => return Err(io(e)),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            // A secret others could read is refused, as ssh refuses such a key.
            let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(CredentialsError::Exposed { path: path.to_owned(), mode });
            }
        }
        serde_json::from_reader(std::io::BufReader::new(file))
            .map_err(|source| CredentialsError::Corrupt { path: path.to_owned(), source })
    }

    /// Writes the file atomically: a private temporary file (0600 from its creation) in the
    /// same directory, synced, then renamed over the old one. The directory is made 0700.
    pub fn save(&self, path: &Path) -> Result<(), CredentialsError> {
        let io = |source| CredentialsError::Io { path: path.to_owned(), source };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt as _;
                builder.mode(0o700);
            }
            builder.create(&dir).map_err(io)?;
        } else if dir.file_name().is_some_and(|n| n == "casefile") {
            // Our own directory (the default location), made by someone else or an older
            // umask: tightened. A directory named by CASEFILE_CLI_CONFIG is left as it is.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
            }
        }
        // tempfile creates the file with mode 0600 (O_EXCL), so the secret is never
        // readable by others, not even before the rename.
        let mut tmp = tempfile::Builder::new().prefix(".credentials-").suffix(".tmp").tempfile_in(&dir).map_err(io)?;
        serde_json::to_writer_pretty(&mut tmp, self).map_err(|e| io(std::io::Error::other(e)))?;
        tmp.write_all(b"\n").map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        // The rename itself must survive a crash too.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// `casefile logout`: removes the file; `Ok(false)` when there was none.
pub fn remove(path: &Path) -> Result<bool, CredentialsError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(CredentialsError::Io { path: path.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credentials {
        Credentials {
            server: "https://casefile.example.com".into(),
            tenant: "default".into(),
            trust: Trust::SystemRoots,
            identity: Identity::Application { client_id: "id".into(), client_secret: "cfs_secret".into() },
            token: Some(CachedToken { access_token: "t".into(), expires_at: 100 }),
        }
    }

    #[cfg(unix)]
    #[test]
    fn saved_private_in_a_private_directory_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/casefile/credentials.json");
        sample().save(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let back = Credentials::load(&path).unwrap();
        assert_eq!(back.server, "https://casefile.example.com");
        // Saved again over itself: still one file, no temporaries left.
        back.save(&path).unwrap();
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        sample().save(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Credentials::load(&path).unwrap_err();
        assert!(matches!(err, CredentialsError::Exposed { mode: 0o644, .. }), "{err}");
    }

    #[test]
    fn a_token_is_fresh_until_the_margin_before_its_expiry() {
        let token = CachedToken { access_token: "t".into(), expires_at: 1000 };
        assert!(token.fresh_at(900, 60));
        assert!(!token.fresh_at(940, 60));
        assert!(!token.fresh_at(2000, 60));
    }
}
