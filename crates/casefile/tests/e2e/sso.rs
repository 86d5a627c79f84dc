//! Single sign-on to the console through OpenID Connect (authorization code with PKCE),
//! against the testkit's provider on its own port: the whole flow over real HTTP, a
//! browser played by hand (redirects followed one by one, cookies kept here), the IdP's
//! groups driving RBAC, and every way an answer can be forged or replayed refused,
//! without a session, and in the audit trail.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use casefile_server::ServerConfig;
use casefile_server::config::{SsoConfig, TrustedIssuerConfig};
use casefile_testkit::oidc::{Faults, OidcClient, OidcProvider, OidcUser};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::support::*;

const CLIENT: &str = "casefile-console";
const SESSION: &str = "__Host-casefile-session";
const FLOW: &str = "__Host-casefile-sso";
const ANA: &str = "ana@corp.example";

/// A server whose console signs in through `idp`, and the provider.
struct Sso {
    server: TestServer,
    idp: OidcProvider,
}

impl Sso {
    /// Moves the server's clock to the next minute. Refusals of unauthenticated callers
    /// are written singly only for the first of a source's minute (the rest are counted
    /// into one summary), so each refusal below starts a minute of its own to be seen
    /// in the trail with its reason.
    fn next_minute(&self) {
        self.server.advance(std::time::Duration::from_secs(60));
    }
}

async fn start(users: Vec<OidcUser>) -> Sso {
    start_confidential(users, None).await
}

/// With `secrets`: a confidential client whose secret at the provider is the first, and
/// in the console's `client_secret_file` the second.
async fn start_confidential(users: Vec<OidcUser>, secrets: Option<(&str, &str)>) -> Sso {
    let mut idp = None;
    let server = TestServer::start_with_clock(|config| {
        let callback = format!("https://{}/console/signin/callback", config.listen);
        let client = match secrets {
            None => OidcClient::public(CLIENT, &callback),
            Some((at_provider, _)) => OidcClient::confidential(CLIENT, &callback, at_provider),
        };
        let provider = OidcProvider::start(vec![client], users);
        trust(config, &provider);
        if let Some((_, in_file)) = secrets {
            std::fs::create_dir_all(&config.data_dir).unwrap();
            let path = config.data_dir.join("sso-client-secret");
            std::fs::write(&path, format!("{in_file}\n")).unwrap();
            config.console.sso[0].client_secret_file = Some(path);
        }
        idp = Some(provider);
    })
    .await;
    Sso { server, idp: idp.unwrap() }
}

/// `[[console.sso]]` and its `[[auth.trusted_issuers]]`, mapped to the default tenant.
fn trust(config: &mut ServerConfig, provider: &OidcProvider) {
    config.auth.trusted_issuers.push(TrustedIssuerConfig {
        issuer: provider.issuer().to_owned(),
        jwks_url: Some(provider.jwks_url()),
        tenant: Some("default".to_owned()),
        ..Default::default()
    });
    config.console.sso.push(SsoConfig {
        name: "Test IdP".to_owned(),
        issuer: provider.issuer().to_owned(),
        client_id: CLIENT.to_owned(),
        client_secret_file: None,
        scopes: vec!["profile".to_owned(), "email".to_owned()],
    });
}

/// A browser: follows nothing by itself, keeps the server's cookies.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new(server: &TestServer) -> Self {
        let http = server.client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http, base: server.base.clone(), cookies: HashMap::new() }
    }

    /// A GET, with the server's cookies when it goes to the server.
    async fn get(&mut self, url: &str) -> reqwest::Response {
        let url = if url.starts_with('/') { format!("{}{url}", self.base) } else { url.to_owned() };
        let mut request = self.http.get(&url);
        if url.starts_with(&self.base) && !self.cookies.is_empty() {
            let header: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header(COOKIE, header.join("; "));
        }
        let response = request.send().await.unwrap();
        if url.starts_with(&self.base) {
            for set in set_cookies(&response) {
                let (pair, attributes) = set.split_once(';').unwrap_or((&set, ""));
                let (name, value) = pair.split_once('=').unwrap();
                if attributes.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        response
    }

    /// `GET /console/signin/sso/0?next=..`: the provider's authorization URL.
    async fn start_sign_in(&mut self, next: &str) -> String {
        let started = self.get(&format!("/console/signin/sso/0?next={}", escape(next))).await;
        assert_eq!(started.status(), StatusCode::SEE_OTHER);
        let flow = set_cookies(&started).into_iter().find(|c| c.starts_with(FLOW)).expect("the flow cookie");
        for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=600"] {
            assert!(flow.split("; ").any(|a| a == attribute), "{attribute} in {flow}");
        }
        location(&started)
    }

    /// The provider's answer as the browser would be sent back with it.
    async fn at_provider(&mut self, authorize: &str, user: &str) -> String {
        let form = self.get(authorize).await;
        assert_eq!(form.status(), StatusCode::OK, "{authorize}");
        assert!(form.text().await.unwrap().contains("id=\"oidc-user\""));
        // What the form posts: the request's parameters, the user's name and the button.
        let url = url::Url::parse(authorize).unwrap();
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        body.extend_pairs(url.query_pairs());
        body.append_pair("username", user).append_pair("decision", "allow");
        let mut action = url.clone();
        action.set_query(None);
        let posted = self
            .http
            .post(action.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.finish())
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), StatusCode::SEE_OTHER);
        location(&posted)
    }

    /// The whole flow for `user`; the callback's answer.
    async fn sign_in(&mut self, user: &str, next: &str) -> reqwest::Response {
        let authorize = self.start_sign_in(next).await;
        let callback = self.at_provider(&authorize, user).await;
        self.get(&callback).await
    }

    fn flow_cookie(&self) -> String {
        self.cookies[FLOW].clone()
    }
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()[LOCATION].to_str().unwrap().to_owned()
}

fn escape(raw: &str) -> String {
    url::form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

/// `url` with its query parameter `name` set to `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .map(|(k, v)| if k == name { (k, value.to_owned()) } else { (k, v) })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// The flow cookie with its part `index` (0 provider, 1 state, 2 nonce, 3 verifier, 4 next)
/// replaced.
fn tampered_flow(flow: &str, index: usize, value: &str) -> String {
    let mut parts: Vec<String> = flow.split('.').map(str::to_owned).collect();
    parts[index] = value.to_owned();
    parts.join(".")
}

/// The console's `console.signin` entries, oldest first.
async fn sign_in_trail(server: &TestServer) -> Vec<casefile_store::AuditEntry> {
    let filter =
        casefile_store::AuditFilter { event: Some("console.signin".into()), limit: 1000, ..Default::default() };
    server.server().state().store.audit(&filter).await.unwrap().into_iter().map(|r| r.entry).collect()
}

/// A refused callback: an error page with `status`, no session, and a refused entry with
/// `reason` (when given) in the trail.
async fn assert_refused(sso: &Sso, response: reqwest::Response, status: u16, reason: Option<&str>, what: &str) {
    assert_eq!(response.status().as_u16(), status, "{what}");
    assert!(set_cookies(&response).iter().all(|c| !c.starts_with(&format!("{SESSION}="))), "{what}: no session");
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{what}");
    let page = response.text().await.unwrap();
    assert!(page.contains("role=\"alert\""), "{what}: {page}");
    let trail = sign_in_trail(&sso.server).await;
    let last = trail.last().unwrap_or_else(|| panic!("{what}: nothing in the trail"));
    assert_eq!(last.outcome, format!("refused ({status})"), "{what}: {last:?}");
    if let Some(reason) = reason {
        let noted = last.detail.as_ref().and_then(|d| d["reason"].as_str()).unwrap_or_default();
        assert!(noted.contains(reason), "{what}: '{reason}' in {last:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_through_the_provider() {
    let sso = start(vec![OidcUser::new(ANA).oid("oid-ana").groups(&["soc-analysts"])]).await;
    let admin = sso.server.token(&["Casefile.Admin"]);
    let role = json!({"name": "analysts", "permissions": ["ViewData"], "users": [], "groups": ["soc-analysts"]});
    let put = sso
        .server
        .http
        .put(format!("{}/api/admin/roles/analysts", sso.server.base))
        .bearer_auth(&admin)
        .json(&role)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    sso.server.seed_machine("web-01.corp.example").await;

    // The sign-in page offers the provider.
    let mut browser = Browser::new(&sso.server);
    let page = browser.get("/console/signin").await.text().await.unwrap();
    assert!(page.contains("/console/signin/sso/0") && page.contains("Test IdP"), "{page}");

    let authorize = browser.start_sign_in("/console/devices?q=web").await;
    let asked = url::Url::parse(&authorize).unwrap();
    assert!(authorize.starts_with(&sso.idp.authorization_endpoint()), "{authorize}");
    let asked: HashMap<String, String> = asked.query_pairs().into_owned().collect();
    assert_eq!(asked["client_id"], CLIENT);
    assert_eq!(asked["redirect_uri"], format!("{}/console/signin/callback", sso.server.base));
    assert_eq!(asked["scope"], "openid profile email");
    assert_eq!((asked["response_type"].as_str(), asked["code_challenge_method"].as_str()), ("code", "S256"));
    // Nothing of the flow's secrets is in the URL: the verifier stays in the cookie.
    let flow = browser.flow_cookie();
    let verifier = flow.split('.').nth(3).unwrap();
    assert_eq!(asked["code_challenge"], casefile_testkit::oidc::s256(verifier));
    assert!(!authorize.contains(verifier));
    assert_eq!(asked["state"], flow.split('.').nth(1).unwrap());

    let callback = browser.at_provider(&authorize, ANA).await;
    assert!(callback.starts_with(&format!("{}/console/signin/callback?", sso.server.base)), "{callback}");
    let done = browser.get(&callback).await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&done), "/console/devices?q=web");
    let cookies = set_cookies(&done);
    let session = cookies.iter().find(|c| c.starts_with(&format!("{SESSION}="))).expect("a session cookie");
    for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Lax"] {
        assert!(session.split("; ").any(|a| a == attribute), "{attribute} in {session}");
    }
    assert!(cookies.iter().any(|c| c.starts_with(&format!("{FLOW}=;")) && c.contains("Max-Age=0")), "{cookies:?}");
    assert!(!browser.cookies.contains_key(FLOW));

    let devices = browser.get("/console/devices").await;
    assert_eq!(devices.status(), StatusCode::OK);
    let page = devices.text().await.unwrap();
    assert!(page.contains(&format!("id=\"signed-in-user\">{ANA}<")), "{page}");
    assert!(page.contains("web-01.corp.example"));

    // The session is the provider's user, as a delegated API user of that name would be.
    let secret = &browser.cookies[SESSION];
    let record =
        casefile_server::auth::sessions::find(sso.server.server().state(), secret, false).await.unwrap().unwrap();
    assert_eq!(record.identity.issuer, sso.idp.issuer());
    assert_eq!(record.identity.subject, format!("sub-{ANA}"));
    assert_eq!(record.identity.upn.as_deref(), Some(ANA));
    assert_eq!(record.identity.oid.as_deref(), Some("oid-ana"));
    assert_eq!(record.identity.groups, ["soc-analysts"]);
    assert_eq!(record.local_user, None);

    // Audited as the user, in the tenant, readable by its administrators.
    let trail: Value = sso.server.get("/api/admin/audit?event=console.signin", &admin).await.json().await.unwrap();
    let entries = trail["value"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{trail}");
    assert_eq!((entries[0]["actor"].as_str(), entries[0]["outcome"].as_str()), (Some(ANA), Some("ok")));

    // The ID token is no API access token (its audience is the console's client id).
    assert_eq!(sso.idp.token_answers(), [Ok(ANA.to_owned())]);
    let id_token = sso.idp.id_tokens().pop().unwrap();
    let (status, _) = error_of(sso.server.get("/api/machines", &id_token).await).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_providers_groups_decide_what_a_console_user_sees() {
    let sso = start(vec![
        OidcUser::new(ANA).groups(&["soc-analysts", "web-team"]),
        OidcUser::new("pat@corp.example").groups(&["pci-team"]),
    ])
    .await;
    let server = &sso.server;
    let web = server.seed_machine("web-01.corp.example").await;
    let pay = server.seed_machine("pay-01.corp.example").await;
    let admin = server.token(&["Casefile.Admin", COLLECT, READ]);

    // No role names pat or pat's group yet: nothing to see.
    let mut pat = Browser::new(server);
    assert_eq!(pat.sign_in("pat@corp.example", "/console/devices").await.status(), StatusCode::SEE_OTHER);
    let refused = pat.get("/console/devices").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(!refused.text().await.unwrap().contains("pay-01"));

    let role =
        json!({"name": "analysts", "permissions": ["ViewData"], "users": [], "groups": ["soc-analysts", "pci-team"]});
    let put = server
        .http
        .put(format!("{}/api/admin/roles/analysts", server.base))
        .bearer_auth(&admin)
        .json(&role)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let group = json!({"name": "PCI", "rank": 1, "rules": [{"property": "Name", "values": ["pay-*"]}], "userGroups": ["pci-team"]});
    assert_eq!(server.post_json("/api/admin/devicegroups", &admin, &group).await.status(), 201);

    // Ana (soc-analysts, web-team): the ungrouped web-01, not the PCI group's pay-01.
    let mut ana = Browser::new(server);
    assert_eq!(ana.sign_in(ANA, "/console/devices").await.status(), StatusCode::SEE_OTHER);
    let list = ana.get("/console/devices").await;
    assert_eq!(list.status(), StatusCode::OK);
    let page = list.text().await.unwrap();
    assert!(page.contains("web-01.corp.example") && !page.contains("pay-01"), "{page}");
    assert_eq!(ana.get(&format!("/console/devices/{web}")).await.status(), StatusCode::OK);
    let hidden = ana.get(&format!("/console/devices/{pay}")).await;
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    assert!(!hidden.text().await.unwrap().contains("pay-01"));

    // Pat's role now holds through the group, and pat's session sees pay-01.
    let page = pat.get("/console/devices").await.text().await.unwrap();
    assert!(page.contains("pay-01.corp.example"), "{page}");
    assert_eq!(pat.get(&format!("/console/devices/{pay}")).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_refused_answers_start_no_session() {
    let sso = start(vec![OidcUser::new(ANA).groups(&["soc-analysts"])]).await;
    let callback_path = "/console/signin/callback";

    // The provider's answer for another browser's sign-in (state mismatch).
    let mut browser = Browser::new(&sso.server);
    let authorize = browser.start_sign_in("/console/devices").await;
    let callback = browser.at_provider(&authorize, ANA).await;
    sso.next_minute();
    let forged = browser.get(&with_param(&callback, "state", "someone-elses-state")).await;
    assert_refused(&sso, forged, 401, Some("state"), "state mismatch").await;

    // The answer in a browser that never started a sign-in (no flow cookie).
    let mut stranger = Browser::new(&sso.server);
    sso.next_minute();
    assert_refused(&sso, stranger.get(&callback).await, 401, Some("flow cookie"), "no flow cookie").await;
    let garbled = {
        stranger.cookies.insert(FLOW.to_owned(), "not-a-flow".to_owned());
        sso.next_minute();
        stranger.get(&callback).await
    };
    assert_refused(&sso, garbled, 401, Some("flow cookie"), "a garbled flow cookie").await;
    assert_eq!(sso.idp.token_answers(), [], "none of these reached the provider");

    // A code used twice: the second use is refused by the provider, and no session starts.
    let mut browser = Browser::new(&sso.server);
    let authorize = browser.start_sign_in("/console/devices").await;
    let flow = browser.flow_cookie();
    let callback = browser.at_provider(&authorize, ANA).await;
    assert_eq!(browser.get(&callback).await.status(), StatusCode::SEE_OTHER);
    let mut replayer = Browser::new(&sso.server);
    replayer.cookies.insert(FLOW.to_owned(), flow);
    sso.next_minute();
    assert_refused(&sso, replayer.get(&callback).await, 401, Some("invalid_grant"), "a replayed code").await;
    assert_eq!(sso.idp.token_answers().last(), Some(&Err("invalid_grant".to_owned())));

    // A verifier that is not the challenge's (the flow cookie tampered with).
    let mut browser = Browser::new(&sso.server);
    let authorize = browser.start_sign_in("/console/devices").await;
    let callback = browser.at_provider(&authorize, ANA).await;
    let wrong = URL_SAFE_NO_PAD.encode([7u8; 32]);
    let tampered = tampered_flow(&browser.flow_cookie(), 3, &wrong);
    browser.cookies.insert(FLOW.to_owned(), tampered);
    sso.next_minute();
    assert_refused(&sso, browser.get(&callback).await, 401, Some("invalid_grant"), "a wrong PKCE verifier").await;

    // ID tokens the console must not believe.
    let forged_tokens = [
        (Faults { aud: Some("another-client".into()), ..Faults::default() }, "InvalidAudience"),
        (Faults { nonce: Some("another-sign-in".into()), ..Faults::default() }, "nonce is not this sign-in's"),
        // A key not in the JWKS, under the published key's kid: only the signature tells.
        (Faults { unpublished_key: true, ..Faults::default() }, "InvalidSignature"),
        (Faults { unknown_kid: true, ..Faults::default() }, "UnknownKey"),
        (Faults { iss: Some("https://evil.example".into()), ..Faults::default() }, "UntrustedIssuer"),
        (Faults { expired: true, ..Faults::default() }, "ExpiredSignature"),
    ];
    for (faults, reason) in forged_tokens {
        sso.idp.set_faults(faults);
        sso.next_minute();
        let mut browser = Browser::new(&sso.server);
        assert_refused(&sso, browser.sign_in(ANA, "/console/devices").await, 401, Some(reason), reason).await;
        assert!(!browser.cookies.contains_key(SESSION), "{reason}");
    }
    assert_eq!(sso.idp.id_tokens().len(), 1 + 6, "each forged ID token was issued, and refused by the console");

    // The provider refuses (the user cancelled, or consent was denied).
    sso.idp.set_faults(Faults { deny: true, ..Faults::default() });
    let mut browser = Browser::new(&sso.server);
    let authorize = browser.start_sign_in("/console/devices").await;
    let denied = browser.get(&authorize).await;
    assert_eq!(denied.status(), StatusCode::SEE_OTHER);
    let back = location(&denied);
    assert!(back.contains("error=access_denied") && back.contains(callback_path), "{back}");
    sso.next_minute();
    let answer = browser.get(&back).await;
    assert_eq!(answer.status(), 401);
    assert!(answer.text().await.unwrap().contains("access_denied"));
    let last = sign_in_trail(&sso.server).await.pop().unwrap();
    assert_eq!(last.outcome, "refused (401)");
    assert_eq!(last.detail.unwrap()["error"], "access_denied");
    sso.idp.set_faults(Faults::default());

    // Every refusal above is in the trail; no session was ever made but the one good sign-in.
    let trail = sign_in_trail(&sso.server).await;
    let refused = trail.iter().filter(|e| e.outcome.starts_with("refused")).count();
    let ok = trail.iter().filter(|e| e.outcome == "ok").count();
    assert_eq!((refused, ok), (12, 1), "{trail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confidential_client_sends_its_secret_from_its_file() {
    let sso = start_confidential(vec![OidcUser::new(ANA)], Some(("s3cret", "s3cret"))).await;
    let mut browser = Browser::new(&sso.server);
    assert_eq!(browser.sign_in(ANA, "/console/devices").await.status(), StatusCode::SEE_OTHER);
    assert!(browser.cookies.contains_key(SESSION));

    // A secret the provider does not know is the configuration's fault: the page says the
    // provider answered wrongly (the log says how), and no session starts.
    let sso = start_confidential(vec![OidcUser::new(ANA)], Some(("s3cret", "stale"))).await;
    let mut browser = Browser::new(&sso.server);
    let answer = browser.sign_in(ANA, "/console/devices").await;
    assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
    assert!(set_cookies(&answer).iter().all(|c| !c.starts_with(SESSION)));
    assert_eq!(sso.idp.token_answers(), [Err("invalid_client".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_provider_is_an_error_page_not_a_hang() {
    let Sso { server, idp } = start(vec![OidcUser::new(ANA)]).await;
    let mut browser = Browser::new(&server);
    let authorize = browser.start_sign_in("/console/devices").await;
    let callback = browser.at_provider(&authorize, ANA).await;
    drop(idp);
    // Between the provider's answer and the exchange of its code.
    let answer = browser.get(&callback).await;
    assert_eq!(answer.status(), StatusCode::BAD_GATEWAY);
    assert!(set_cookies(&answer).iter().all(|c| !c.starts_with(SESSION)));
    assert!(answer.text().await.unwrap().contains("could not be reached"));
    // And before a sign-in starts: no flow is started.
    let mut browser = Browser::new(&server);
    let start = browser.get("/console/signin/sso/0").await;
    assert_eq!(start.status(), StatusCode::BAD_GATEWAY);
    assert!(set_cookies(&start).iter().all(|c| !c.starts_with(FLOW)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sign_in_the_browser_never_leaves_the_console() {
    let sso = start(vec![OidcUser::new(ANA)]).await;
    for next in
        ["//evil.example", "https://evil.example/console", "/\\evil.example", "/api/machines", "/console\r\nX: y"]
    {
        let mut browser = Browser::new(&sso.server);
        let done = browser.sign_in(ANA, next).await;
        assert_eq!(done.status(), StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(location(&done), "/console/devices", "{next:?}");
    }
    // Nor when the flow cookie itself names another site.
    let mut browser = Browser::new(&sso.server);
    let authorize = browser.start_sign_in("/console/actions").await;
    let callback = browser.at_provider(&authorize, ANA).await;
    let evil = URL_SAFE_NO_PAD.encode("//evil.example/console");
    let tampered = tampered_flow(&browser.flow_cookie(), 4, &evil);
    browser.cookies.insert(FLOW.to_owned(), tampered);
    let done = browser.get(&callback).await;
    assert_eq!((done.status(), location(&done)), (StatusCode::SEE_OTHER, "/console/devices".to_owned()));
    // A provider that is not configured.
    let missing = browser.get("/console/signin/sso/7").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[test]
fn a_provider_must_be_a_trusted_issuer() {
    let toml_text = |issuer: &str| {
        format!(
            r#"
[console]
tenant = "default"

[[console.sso]]
name = "Keycloak"
issuer = "https://sso.corp.example/realms/soc"
client_id = "casefile-console"

[[auth.trusted_issuers]]
issuer = "{issuer}"
jwks_url = "https://sso.corp.example/realms/soc/protocol/openid-connect/certs"
tenant = "default"
"#
        )
    };
    let config: ServerConfig = toml::from_str(&toml_text("https://sso.corp.example/realms/soc")).unwrap();
    config.check().unwrap();
    // The README's example passes the same check.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("### Single sign-on for the console").nth(1).unwrap();
    let example = section.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
    let config: ServerConfig = toml::from_str(example).unwrap();
    assert_eq!(config.console.sso.len(), 2);
    config.check().unwrap();

    let config: ServerConfig = toml::from_str(&toml_text("https://sso.corp.example/realms/other")).unwrap();
    let error = config.check().unwrap_err();
    assert!(
        error.contains("console.sso[0]")
            && error.contains("https://sso.corp.example/realms/soc")
            && error.contains("[[auth.trusted_issuers]]"),
        "{error}"
    );
}

/// The same sign-in in a real browser: the console's button, the provider's own page,
/// back to the console signed in (the flow cookie crosses from the provider's site on a
/// top-level navigation, as SameSite=Lax allows).
#[tokio::test]
async fn a_user_signs_in_through_the_provider_in_a_real_browser() {
    let Some(browser) = crate::browser::start("sso").await else { return };
    let sso = start(vec![OidcUser::new(ANA).oid("oid-ana").groups(&["soc-analysts"])]).await;
    let role = json!({"name": "analysts", "permissions": ["ViewData"], "users": [], "groups": ["soc-analysts"]});
    let put = sso
        .server
        .http
        .put(format!("{}/api/admin/roles/analysts", sso.server.base))
        .bearer_auth(sso.server.token(&["Casefile.Admin"]))
        .json(&role)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    sso.server.seed_machine("sso-visible.example").await;

    browser.goto(&format!("{}/console/devices", sso.server.base)).await;
    browser.wait_path(|p| p == "/console/signin").await;
    browser.shot("signin-with-sso").await;
    browser.click(".sso a").await;
    browser.wait_for("#oidc-user").await;
    browser.fill("#oidc-user", ANA).await;
    browser.click("#oidc-sign-in").await;
    browser.wait_path(|p| p == "/console/devices").await;
    assert_eq!(browser.text("#signed-in-user").await, ANA);
    assert!(browser.text("#devices").await.contains("sso-visible.example"), "the role from the IdP group applies");
    browser.shot("devices-after-sso").await;
    browser.close().await;
}

/// A provider's user may not take a local user's name: roles name both alike, so it
/// would take the local user's roles (review of issue 12).
#[tokio::test]
async fn a_providers_user_cannot_take_a_local_users_name() {
    let sso = start(vec![OidcUser::new("admin").oid("oid-mallory")]).await;
    let state = sso.server.server().state();
    let tenant = casefile_proto::TenantId::default_tenant();
    casefile_server::auth::users::create(&*state.store, &tenant, "admin", "local admin password", state.now())
        .await
        .unwrap();
    let mut browser = Browser::new(&sso.server);
    let answer = browser.sign_in("admin", "/console/devices").await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(!browser.cookies.contains_key(SESSION));
    assert!(answer.text().await.unwrap().contains("local user"));
}
