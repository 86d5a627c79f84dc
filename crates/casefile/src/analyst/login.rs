//! `casefile login` and `casefile logout`.

use std::io::Write;

use casefile_agent::trust;

use super::LoginArgs;
use super::api::{self, ApiError};
use super::credentials::{self, Credentials, Identity, Trust};

/// Checks the credentials by getting a token, then saves them (and the token). Nothing
/// is saved when any step fails.
pub async fn login(args: LoginArgs, stdin: &mut dyn std::io::BufRead, out: &mut dyn Write) -> anyhow::Result<()> {
    let path = credentials::path()?;
    let base = api::parse_server(&args.server)?;
    let trust = if trust::needs_trust(&base)? {
        match (&args.ca_sha256, args.system_roots) {
            (Some(pin), _) => {
                let pem = trust::fetch_pinned_ca(&base, pin).await?;
                let pem =
                    String::from_utf8(pem).map_err(|_| ApiError::Invalid("the CA certificate is not text".into()))?;
                Trust::Pinned { ca_sha256: pin.to_string(), ca_pem: pem }
            }
            (None, true) => Trust::SystemRoots,
            (None, false) => return Err(casefile_agent::AgentError::NoTrust(base.to_string()).into()),
        }
    } else {
        Trust::None
    };
    let http = api::http_client(&base, &trust)?;
    let secret = read_secret(stdin)?;
    let (identity, token) = match (args.client_id, args.user) {
        (Some(client_id), _) => {
            let token =
                api::request_token(&http, &base, &args.tenant, &api::client_credentials(&client_id, &secret)).await?;
            (Identity::Application { client_id, client_secret: secret }, token)
        }
        (None, Some(name)) => {
            let token = api::request_token(&http, &base, &args.tenant, &api::password_grant(&name, &secret)).await?;
            // The password goes out of scope here: only the token is kept.
            (Identity::User { name }, token)
        }
        (None, None) => return Err(ApiError::Invalid("give --client-id or --user".into()).into()),
    };
    let who = match &identity {
        Identity::Application { client_id, .. } => format!("application {client_id}"),
        Identity::User { name } => format!("user {name}"),
    };
    let creds = Credentials {
        server: base.as_str().trim_end_matches('/').to_owned(),
        tenant: args.tenant,
        trust,
        identity,
        token: Some(token),
    };
    creds.save(&path)?;
    writeln!(
        out,
        "logged in to {} (tenant {}) as {who}; credentials in {}",
        creds.server,
        creds.tenant,
        path.display()
    )?;
    Ok(())
}

/// The secret on the first line of `stdin` (a trailing newline removed).
fn read_secret(stdin: &mut dyn std::io::BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    stdin.read_line(&mut line).map_err(|e| ApiError::Invalid(format!("cannot read the secret from stdin: {e}")))?;
    let secret = line.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        return Err(ApiError::Invalid("no secret on standard input".into()).into());
    }
    Ok(secret)
}

pub fn logout(out: &mut dyn Write) -> anyhow::Result<()> {
    let path = credentials::path()?;
    if credentials::remove(&path)? {
        writeln!(out, "logged out: removed {}", path.display())?;
    } else {
        writeln!(out, "not logged in (no {})", path.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_the_first_line_without_its_newline() {
        assert_eq!(read_secret(&mut &b"cfs_abc\r\nmore\n"[..]).unwrap(), "cfs_abc");
        assert_eq!(read_secret(&mut &b"cfs_abc"[..]).unwrap(), "cfs_abc");
        assert!(read_secret(&mut &b"\n"[..]).is_err());
        assert!(read_secret(&mut &b""[..]).is_err());
    }
}
