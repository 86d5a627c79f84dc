//! What `casefile enroll-token` prints: the token, and the whole agent command that
//! uses it, with the server's public URL and the CA the agent must pin.

use casefile_server::Endpoint;

/// Where agents reach the server and which CA they pin (`recorded`: what the server
/// recorded, see [`casefile_server::admin::Admin::endpoint`]), with `server` overriding
/// the URL.
pub fn endpoint_for(recorded: Endpoint, server: Option<String>) -> Endpoint {
    let mut endpoint = recorded;
    if let Some(url) = server {
        endpoint.public_url = url.trim_end_matches('/').to_owned();
    }
    endpoint
}

/// The command an endpoint runs to enroll with `token`.
pub fn agent_command(endpoint: &Endpoint, token: &str) -> String {
    let trust = match &endpoint.ca_sha256 {
        Some(pin) => format!(" --ca-sha256 {pin}"),
        // Plain HTTP (loopback) or a public certificate: nothing to pin.
        None if endpoint.public_url.starts_with("https://") => " --system-roots".to_owned(),
        None => String::new(),
    };
    format!(
        "casefile-agent run --server {}{trust} --enroll-token {token} --state-dir /var/lib/casefile-agent",
        endpoint.public_url
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_pins_the_ca() {
        let endpoint = Endpoint {
            public_url: "https://casefile.example.com:8443".into(),
            issuer: String::new(),
            ca_sha256: Some(format!("sha256:{}", "0f".repeat(32))),
        };
        let command = agent_command(&endpoint, "cfe_token");
        assert_eq!(
            command,
            format!(
                "casefile-agent run --server https://casefile.example.com:8443 --ca-sha256 sha256:{} \
                 --enroll-token cfe_token --state-dir /var/lib/casefile-agent",
                "0f".repeat(32)
            )
        );
    }
}
