//! Transport (issue 9, "Transport: HTTPS, pinned" and item 14 "Slow clients"): HTTPS
//! with a pinned CA, plain HTTP only where allowed, certificate reload, forwarded
//! headers only from trusted proxies, and connections that cannot hold the server.

use std::time::Duration;

use casefile_agent::trust::{CaPin, Trust};
use casefile_agent::{AgentConfig, AgentError};
use casefile_server::tls::Tls;
use casefile_server::{Server, ServerConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Upper bound on a wait for the server to act; a hang fails instead of blocking.
const LIMIT: Duration = Duration::from_secs(60);

/// Reads until the server closes the connection (EOF or reset); fails after [`LIMIT`].
async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(LIMIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection");
    received
}

fn plain(config: &mut ServerConfig) {
    config.tls.plain_http = true;
}

async fn run_agent(server: &TestServer, host: &str, trust: Trust) -> Result<(), AgentError> {
    let state_dir = server.dir.path().join(format!("agent-{host}"));
    let mut config = AgentConfig::new(server.base.clone(), Some(server.enroll_token().await), state_dir);
    config.host_id = Some(host.to_owned());
    config.trust = trust;
    // A refused start returns at once; a started agent would run until stopped.
    let stop = CancellationToken::new();
    let (ready, online) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(casefile_agent::run_with_ready(config, stop.clone(), Some(ready)));
    let outcome = tokio::time::timeout(LIMIT, online).await.expect("the agent started or failed in time");
    stop.cancel();
    let result = task.await.unwrap();
    match outcome {
        Ok(_) => result,
        Err(_) => Err(result.expect_err("an agent that never came online failed")),
    }
}

#[tokio::test]
async fn agents_enroll_over_https_and_save_the_pinned_ca() {
    let server = TestServer::start().await;
    assert!(server.base.starts_with("https://"), "the harness serves HTTPS by default");
    let mut agent = server.start_agent("pinned-host").await;
    let saved = std::fs::read_to_string(agent.state_dir.join(casefile_agent::trust::CA_FILE)).unwrap();
    assert_eq!(saved, server.server().tls().unwrap().ca_pem());
    agent.stop().await;

    // Later starts need no pin: the saved CA is the only root.
    let restarted =
        server.start_agent_with("pinned-host", agent.state_dir.clone(), None, |c| c.trust = Trust::Saved).await;
    assert_eq!(restarted.identity.machine_id, agent.identity.machine_id);
}

#[tokio::test]
async fn a_wrong_ca_pin_is_refused() {
    let server = TestServer::start().await;
    let wrong: CaPin = format!("sha256:{}", "00".repeat(32)).parse().unwrap();
    let refused = run_agent(&server, "wrong-pin", Trust::Pinned(wrong)).await.unwrap_err();
    assert!(matches!(refused, AgentError::CaMismatch { .. }), "{refused}");
    let saved = server.dir.path().join("agent-wrong-pin").join(casefile_agent::trust::CA_FILE);
    assert!(!saved.exists(), "a CA that fails its pin is never saved");
}

#[tokio::test]
async fn an_agent_trusts_only_its_pinned_ca_not_another_server_s() {
    // The agent pinned server A's CA; server B (another CA, e.g. an impostor on A's
    // address) is refused at the TLS handshake, even with a valid enrollment token.
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let state_dir = a.dir.path().join("agent-moved");
    let mut agent = a.start_agent_in("moved", state_dir.clone(), Some(a.enroll_token().await)).await;
    agent.stop().await;
    let mut config = AgentConfig::new(b.base.clone(), Some(b.enroll_token().await), state_dir);
    config.host_id = Some("moved".into());
    let refused = casefile_agent::run(config, CancellationToken::new()).await.unwrap_err();
    assert!(matches!(refused, AgentError::Unreachable { .. }), "{refused}");
}

#[tokio::test]
async fn https_without_a_pin_or_system_roots_is_refused() {
    let server = TestServer::start().await;
    let refused = run_agent(&server, "no-pin", Trust::Saved).await.unwrap_err();
    assert!(matches!(refused, AgentError::NoTrust(_)), "{refused}");
    // The system roots do not know the private CA either.
    let refused = run_agent(&server, "system", Trust::SystemRoots).await.unwrap_err();
    assert!(matches!(refused, AgentError::Unreachable { .. }), "{refused}");
}

#[test]
fn the_agent_binary_refuses_plain_http_to_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::cli::agent_binary())
        .args(["run", "--server", "http://192.0.2.10:8080", "--enroll-token", "cfe_x", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing plain HTTP to http://192.0.2.10:8080"), "{stderr}");
}

#[tokio::test]
async fn plain_http_serves_agents_on_loopback_when_configured() {
    let server = TestServer::start_with(plain).await;
    assert!(server.base.starts_with("http://127.0.0.1:"));
    let agent = server.start_agent("loopback-plain").await;
    assert!(!agent.state_dir.join(casefile_agent::trust::CA_FILE).exists());
}

#[tokio::test]
async fn the_server_refuses_plain_http_on_a_non_loopback_listener() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig { data_dir: dir.path().join("data"), ..Default::default() };
    config.tls.plain_http = true;
    let server = Server::open(config.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = server.serve(listener, async {}).await.unwrap_err().to_string();
    assert!(refused.contains("refusing to serve plain HTTP on 0.0.0.0"), "{refused}");

    // Explicitly allowed (a TLS-terminating proxy on another host), it serves.
    config.tls.plain_http_on_network = true;
    let server = Server::open(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move { server.serve(listener, async move { stopped.cancelled().await }).await });
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    stop.cancel();
    task.await.unwrap().unwrap();
}

/// The certificate a fresh connection is served (trusting anything: only its identity
/// matters here).
async fn served_certificate(base: &str) -> Vec<u8> {
    let client = reqwest::Client::builder().tls_danger_accept_invalid_certs(true).tls_info(true).build().unwrap();
    let response = client.get(format!("{base}/healthz")).send().await.unwrap();
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().unwrap();
    info.peer_certificate().unwrap().to_vec()
}

fn der_of(pem_file: &std::path::Path) -> Vec<u8> {
    use base64::Engine as _;
    let pem = std::fs::read_to_string(pem_file).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

#[tokio::test]
async fn a_running_server_serves_a_renewed_certificate_and_keeps_the_last_good_one() {
    // Two certificates, as a renewal would bring: generated in two scratch data dirs.
    let scratch = tempfile::tempdir().unwrap();
    let mut issued = Vec::new();
    for name in ["old", "new"] {
        let config = ServerConfig { data_dir: scratch.path().join(name), ..Default::default() };
        Tls::prepare(&config, chrono::Utc::now()).unwrap();
        issued.push(config.tls_dir());
    }
    let live = scratch.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    std::fs::copy(issued[0].join("server.pem"), &cert).unwrap();
    std::fs::copy(issued[0].join("server.key"), &key).unwrap();
    let (cert_file, key_file) = (cert.clone(), key.clone());
    let server = TestServer::start_with(move |c| {
        c.tls.cert_file = Some(cert_file);
        c.tls.key_file = Some(key_file);
        c.tls.reload_seconds = 1;
    })
    .await;
    assert_eq!(served_certificate(&server.base).await, der_of(&issued[0].join("server.pem")));

    let tls = server.server().tls().unwrap().clone();
    let mut reloads = tls.watch_reloads();
    reloads.borrow_and_update();
    // Key first, then certificate: a check between the two sees a mismatch and keeps the old pair.
    std::fs::copy(issued[1].join("server.key"), &key).unwrap();
    std::fs::copy(issued[1].join("server.pem"), &cert).unwrap();
    tokio::time::timeout(LIMIT, reloads.changed()).await.expect("the periodic check reloaded").unwrap();
    let renewed = der_of(&issued[1].join("server.pem"));
    assert_eq!(served_certificate(&server.base).await, renewed, "the new certificate is served without a restart");

    // A broken file is refused and the last good certificate stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").unwrap();
    assert!(tls.reload().is_err());
    assert_eq!(served_certificate(&server.base).await, renewed);
}

#[tokio::test]
async fn forwarded_headers_count_only_from_trusted_proxies() {
    let forwarded = |request: reqwest::RequestBuilder| {
        request
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "casefile.example.com")
    };
    for trusted in [true, false] {
        let server = TestServer::start_with(move |c| {
            if trusted {
                c.trusted_proxies = vec!["127.0.0.0/8".into()];
            }
        })
        .await;
        let token = server.token(ALL);
        let machine = server.seed_machine("proxied.example").await;
        let response =
            forwarded(server.http.post(format!("{}/api/machines/{machine}/collectInvestigationPackage", server.base)))
                .bearer_auth(&token)
                .json(&serde_json::json!({"Comment": "through the proxy"}))
                .send()
                .await
                .unwrap();
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        let discovery: Value =
            forwarded(server.http.get(format!("{}/default/v2.0/.well-known/openid-configuration", server.base)))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let trail = server
            .server()
            .state()
            .store
            .audit(&casefile_store::AuditFilter { event: Some("collect".into()), limit: 10, ..Default::default() })
            .await
            .unwrap();
        let ip = trail[0].entry.source_ip.clone();
        let context = created["@odata.context"].as_str().unwrap();
        let token_endpoint = discovery["token_endpoint"].as_str().unwrap();
        if trusted {
            assert_eq!(ip.as_deref(), Some("203.0.113.7"), "the audit trail records the real client");
            assert!(context.starts_with("https://casefile.example.com/api/"), "{context}");
            assert!(token_endpoint.starts_with("https://casefile.example.com/default/"), "{token_endpoint}");
        } else {
            assert_eq!(ip.as_deref(), Some("127.0.0.1"), "a forged X-Forwarded-For is ignored");
            assert!(context.starts_with(&format!("{}/api/", server.base)), "{context}");
            assert!(token_endpoint.starts_with(&server.base), "{token_endpoint}");
        }
    }
}

/// issue 9 item 14: 2,000 half-open connections (silent, or stopped mid-header) while a
/// normal request is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_half_open_connections_do_not_starve_a_normal_request() {
    let server = TestServer::start().await;
    let addr = server.base.trim_start_matches("https://").to_owned();
    let mut held = Vec::with_capacity(2000);
    for i in 0..2000 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 0 {
            // A TLS ClientHello's first bytes, then nothing.
            stream.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
        }
        held.push(stream);
    }
    let response = server.get("/api/machines", &server.token(ALL)).await;
    assert_eq!(response.status(), 200);
    drop(held);
}

#[tokio::test]
async fn a_partial_header_is_cut_off_by_the_header_read_timeout() {
    let server = TestServer::start_with(|c| {
        plain(c);
        c.connections.header_read_timeout_seconds = 1;
        c.connections.idle_timeout_seconds = 3600;
    })
    .await;
    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    closed_by_server(&mut stream).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_by_the_idle_timeout() {
    let server = TestServer::start_with(|c| {
        plain(c);
        c.connections.idle_timeout_seconds = 1;
    })
    .await;
    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    // A first request is answered; the connection is then kept alive, until idle too long.
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = closed_by_server(&mut stream).await;
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
}

#[tokio::test]
async fn a_silent_tls_client_is_cut_off_by_the_handshake_timeout() {
    let server = TestServer::start_with(|c| {
        c.connections.tls_handshake_timeout_seconds = 1;
        c.connections.idle_timeout_seconds = 3600;
        c.connections.header_read_timeout_seconds = 3600;
    })
    .await;
    let mut stream = TcpStream::connect(server.base.trim_start_matches("https://")).await.unwrap();
    stream.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    closed_by_server(&mut stream).await;
}

#[tokio::test]
async fn a_stalled_request_body_is_cut_off() {
    let server = TestServer::start_with(|c| {
        plain(c);
        c.connections.body_timeout_seconds = 1;
        c.connections.idle_timeout_seconds = 2;
    })
    .await;
    let machine = server.seed_machine("stalled.example").await;
    let mut stream = TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /api/machines/{machine}/collectInvestigationPackage HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"Comment\": ",
        server.token(ALL)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = String::from_utf8_lossy(&closed_by_server(&mut stream).await).into_owned();
    assert!(!answer.starts_with("HTTP/1.1 201"), "{answer}");
    let actions = server.get("/api/machineactions", &server.token(ALL)).await.json::<Value>().await.unwrap();
    assert_eq!(actions["value"].as_array().unwrap().len(), 0, "nothing was created from half a body");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let server = TestServer::start_with(|c| {
        plain(c);
        c.connections.max_connections = 3;
        c.connections.idle_timeout_seconds = 3600;
    })
    .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        // A full exchange proves the connection holds a slot.
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(stream);
    }
    let mut beyond = TcpStream::connect(&addr).await.unwrap();
    let _ = beyond.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(closed_by_server(&mut beyond).await.is_empty(), "closed without an answer");
}

#[tokio::test]
async fn the_default_issuer_is_the_public_url_and_old_casefile_tokens_stay_valid() {
    let server = TestServer::start().await;
    assert_eq!(server.server().state().config.auth.issuer, server.base, "URL-shaped, as msal's OIDC mode wants");
    // Minted before the default changed: `iss` "casefile", signed by the server's key.
    let old = server.sign(&casefile_server::auth::AccessClaims {
        iss: casefile_server::LEGACY_ISSUER.into(),
        ..server.claims(&[READ])
    });
    assert_eq!(server.get("/api/machines", &old).await.status(), 200);
    let other =
        server.sign(&casefile_server::auth::AccessClaims { iss: "someone-else".into(), ..server.claims(&[READ]) });
    assert_eq!(server.get("/api/machines", &other).await.status(), 401);
}
