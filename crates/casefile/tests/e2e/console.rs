//! Issue 12: the web console. A real browser walks the analyst's flow; plain HTTP checks
//! the session's cookie, CSRF, expiry, backoff and the trail.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use sha2::Digest;

use crate::browser;
use crate::support::*;

const PASSWORD: &str = "correct horse battery";
const SESSION: &str = "__Host-casefile-session";

/// A local user of the default tenant holding `permissions` through a role of its own.
async fn user_with_role(server: &TestServer, name: &str, permissions: &[&str]) {
    let state = server.server().state();
    let tenant = casefile_proto::TenantId::default_tenant();
    casefile_server::auth::users::create(&*state.store, &tenant, name, PASSWORD, state.now()).await.unwrap();
    if permissions.is_empty() {
        return;
    }
    let admin = server.token(&["Casefile.Admin"]);
    let role = json!({"name": format!("role-{name}"), "permissions": permissions, "users": [name], "groups": []});
    let put = server
        .http
        .put(format!("{}/api/admin/roles/role-{name}", server.base))
        .bearer_auth(&admin)
        .json(&role)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
}

/// A console session over plain HTTP: cookies kept by hand, redirects not followed.
struct Console<'a> {
    server: &'a TestServer,
    http: reqwest::Client,
    cookies: std::collections::BTreeMap<String, String>,
}

impl<'a> Console<'a> {
    fn new(server: &'a TestServer) -> Self {
        let http = server.client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { server, http, cookies: Default::default() }
    }

    fn keep(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let value = value.to_str().unwrap();
            let (pair, _) = value.split_once(';').unwrap_or((value, ""));
            let (name, v) = pair.split_once('=').unwrap();
            if value.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), v.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn get(&mut self, path: &str) -> reqwest::Response {
        let response = self
            .http
            .get(format!("{}{path}", self.server.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&response);
        response
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let response = self
            .http
            .post(format!("{}{path}", self.server.base))
            .header(COOKIE, self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.keep(&response);
        response
    }

    /// Signs in; returns the sign-in answer.
    async fn sign_in(&mut self, name: &str, password: &str) -> reqwest::Response {
        let page = self.get("/console/signin?next=/console/actions").await.text().await.unwrap();
        let token = hidden(&page, "form_token");
        self.post(
            "/console/signin",
            &[("form_token", &token), ("name", name), ("password", password), ("next", "/console/actions")],
        )
        .await
    }

    /// The CSRF token the pages carry.
    async fn csrf(&mut self) -> String {
        let page = self.get("/console/devices").await.text().await.unwrap();
        hidden(&page, "csrf")
    }
}

/// The value of the hidden input `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no {name} in the page")) + marker.len();
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

fn location(response: &reqwest::Response) -> String {
    response.headers().get(LOCATION).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

async fn audit(server: &TestServer, event: &str) -> Vec<Value> {
    let admin = server.token(&["Casefile.Admin"]);
    let list: Value = server.get(&format!("/api/admin/audit?event={event}"), &admin).await.json().await.unwrap();
    list["value"].as_array().unwrap().clone()
}

#[tokio::test]
async fn signing_in_sets_a_hardened_cookie_and_wrong_passwords_back_off() {
    let server = TestServer::start_with_clock(|_| {}).await;
    user_with_role(&server, "alice", &["ViewData"]).await;
    let mut console = Console::new(&server);

    // Without a session every page sends the browser to sign in, and comes back after.
    let page = console.get("/console/devices?q=x").await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&page), "/console/signin?next=/console/devices%3Fq%3Dx");

    let wrong = console.sign_in("alice", "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(!console.cookies.contains_key(SESSION));
    assert!(wrong.text().await.unwrap().contains("The name or the password is wrong."));
    let unknown = console.sign_in("mallory", PASSWORD).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED, "an unknown name reads like a wrong password");

    // A form without the sign-in page's token is refused (login CSRF).
    let forged = console.post("/console/signin", &[("name", "alice"), ("password", PASSWORD)]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);

    // Three more failures: the next attempt waits, even with the right password, and is
    // answered as a wrong password (a wait would tell that the name exists).
    for _ in 0..3 {
        console.sign_in("alice", "still wrong").await;
    }
    let waiting = console.sign_in("alice", PASSWORD).await;
    assert_eq!(waiting.status(), StatusCode::UNAUTHORIZED);
    assert!(waiting.text().await.unwrap().contains("The name or the password is wrong."));
    server.advance(Duration::from_secs(2));
    let ok = console.sign_in("alice", PASSWORD).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER, "after the wait the right password works");
    assert_eq!(location(&ok), "/console/actions");
    let set: Vec<String> = ok.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
    let session = set.iter().find(|c| c.starts_with(SESSION)).expect("a session cookie");
    for flag in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(flag), "{session} lacks {flag}");
    }
    let devices = console.get("/console/devices").await;
    assert_eq!(devices.status(), 200);
    let csp = devices.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(devices.text().await.unwrap().contains("alice"));

    // The trail has the sign-ins as `console.signin`: refused ones of one source are
    // written at once for the first, then summed per minute (`refusals.rs`).
    let entries = audit(&server, "console.signin").await;
    let refused = entries.iter().filter(|e| e["outcome"].as_str().unwrap().starts_with("refused")).count();
    assert!(refused >= 1, "{entries:?}");
    assert!(entries.iter().any(|e| e["outcome"] == "ok" && e["actor"] == "alice"));

    // Guesses sent all at once are each counted before any is checked: a burst of 20
    // wrong ones leaves the user waiting, however they interleave.
    let burst = (0..20).map(|_| {
        let mut c = Console::new(&server);
        async move { c.sign_in("alice", "guess in a burst").await.status() }
    });
    let statuses = futures::future::join_all(burst).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    let user = server
        .server()
        .state()
        .store
        .user_by_name(&casefile_proto::TenantId::default_tenant(), "alice")
        .await
        .unwrap()
        .unwrap();
    assert!(user.failed_logins >= 4, "the burst was counted: {}", user.failed_logins);
    assert_eq!(console.sign_in("alice", PASSWORD).await.status(), StatusCode::UNAUTHORIZED, "and it waits");

    // Another site is never where sign-in leads.
    let page = console.get("/console/signin?next=//evil.example/x").await.text().await.unwrap();
    assert_eq!(hidden(&page, "next"), "/console/devices");
}

#[tokio::test]
async fn sessions_end_when_idle_at_their_end_when_signed_out_or_disabled() {
    let server = TestServer::start_with_clock(|config| {
        config.console.idle_minutes = 30;
        config.console.absolute_hours = 2;
    })
    .await;
    user_with_role(&server, "alice", &["ViewData"]).await;
    let signed_in = |console: &mut Console| console.cookies.contains_key(SESSION);

    // Idle: 29 minutes keep it, 31 more end it.
    let mut console = Console::new(&server);
    console.sign_in("alice", PASSWORD).await;
    assert!(signed_in(&mut console));
    server.advance(Duration::from_secs(29 * 60));
    assert_eq!(console.get("/console/devices").await.status(), 200);
    server.advance(Duration::from_secs(31 * 60));
    assert_eq!(console.get("/console/devices").await.status(), StatusCode::SEE_OTHER);

    // A page's live refresh is not the user: an unattended Action center still goes idle.
    let mut console = Console::new(&server);
    console.sign_in("alice", PASSWORD).await;
    for _ in 0..4 {
        server.advance(Duration::from_secs(10 * 60));
        let poll = console.get("/console/actions?fragment=rows").await;
        assert!(poll.status() == 200 || poll.status() == StatusCode::SEE_OTHER);
    }
    assert_eq!(console.get("/console/devices").await.status(), StatusCode::SEE_OTHER, "idle for 40 minutes");

    // Absolute: used every 20 minutes, it still ends after 2 hours.
    let mut console = Console::new(&server);
    console.sign_in("alice", PASSWORD).await;
    for _ in 0..5 {
        server.advance(Duration::from_secs(20 * 60));
        assert_eq!(console.get("/console/devices").await.status(), 200);
    }
    server.advance(Duration::from_secs(21 * 60));
    assert_eq!(console.get("/console/devices").await.status(), StatusCode::SEE_OTHER);

    // Signing out ends it on the server, not only in this browser.
    let mut console = Console::new(&server);
    console.sign_in("alice", PASSWORD).await;
    let stolen = console.cookie_header();
    let csrf = console.csrf().await;
    let out = console.post("/console/signout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status(), location(&out)), (StatusCode::SEE_OTHER, "/console/signin?signed_out=1".to_owned()));
    let replay =
        console.http.get(format!("{}/console/devices", server.base)).header(COOKIE, stolen).send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::SEE_OTHER, "a signed-out session's cookie is worthless");

    // Disabling the user ends its live sessions at once.
    let mut console = Console::new(&server);
    console.sign_in("alice", PASSWORD).await;
    let state = server.server().state();
    let tenant = casefile_proto::TenantId::default_tenant();
    casefile_server::auth::users::set_disabled(&*state.store, &tenant, "alice", true, state.now()).await.unwrap();
    assert_eq!(console.get("/console/devices").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(console.sign_in("alice", PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn console_actions_are_the_apis_with_its_checks_csrf_and_trail() {
    let server = TestServer::start().await;
    user_with_role(&server, "ana", &["ViewData", "AlertsInvestigation"]).await;
    user_with_role(&server, "viewer", &["ViewData"]).await;
    user_with_role(&server, "nobody", &[]).await;
    let host = server.seed_machine("idle-01").await;
    let evil = server.seed_machine("<script>alert(1)</script>").await;

    let mut ana = Console::new(&server);
    ana.sign_in("ana", PASSWORD).await;
    let csrf = ana.csrf().await;
    let path = format!("/console/devices/{host}/collect");

    // Without the session's CSRF token, or from another origin: refused, nothing created.
    assert_eq!(ana.post(&path, &[("comment", "no token")]).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(ana.post(&path, &[("csrf", "guess"), ("comment", "bad token")]).await.status(), StatusCode::FORBIDDEN);
    let cross = ana
        .http
        .post(format!("{}{path}", server.base))
        .header(COOKIE, ana.cookie_header())
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&comment=cross-site"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
    let listed: Value = server.get("/api/machineactions", &server.token(ALL)).await.json().await.unwrap();
    assert_eq!(listed["value"].as_array().unwrap().len(), 0);

    // The collection: the API's action, requested by the user, in the trail as "collect".
    let created = ana.post(&path, &[("csrf", &csrf), ("comment", "suspected intrusion (INC-42)")]).await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let id = location(&created).rsplit('/').next().unwrap().to_owned();
    let action = server.action(&id).await;
    assert_eq!((action.requestor.as_str(), action.requestor_comment.as_str()), ("ana", "suspected intrusion (INC-42)"));
    assert_eq!(action.profile, "standard", "no profile chosen: the default");
    let page = ana.get(&format!("/console/actions/{id}")).await.text().await.unwrap();
    assert!(page.contains("<dt>Profile</dt><dd>standard</dd>"), "{page}");
    let entries = audit(&server, "collect").await;
    let (ok, refused): (Vec<&Value>, Vec<&Value>) = entries.iter().partition(|e| e["outcome"] == "ok");
    assert_eq!(ok.len(), 1, "one entry, written with the change: {entries:?}");
    assert_eq!((ok[0]["actor"].as_str(), ok[0]["actorKind"].as_str()), (Some("ana"), Some("user")));
    assert_eq!(ok[0]["target"].as_str(), Some(id.as_str()));
    assert_eq!(refused.len(), 3, "the forged forms are in the trail too");
    assert!(refused.iter().all(|e| e["httpStatus"] == 403));

    // The form offers the profiles, and an unknown one is the API's refusal, shown inline.
    let device = ana.get(&format!("/console/devices/{evil}")).await.text().await.unwrap();
    assert!(device.contains("<option value=\"triage\">triage"), "{device}");
    let evil_path = format!("/console/devices/{evil}/collect");
    let unknown = ana.post(&evil_path, &[("csrf", &csrf), ("comment", "c"), ("profile", "nope")]).await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert!(unknown.text().await.unwrap().contains("no profile is named"));
    let triage = ana.post(&evil_path, &[("csrf", &csrf), ("comment", "deep look"), ("profile", "triage")]).await;
    assert_eq!(triage.status(), StatusCode::SEE_OTHER);
    let triage_id = location(&triage).rsplit('/').next().unwrap().to_owned();
    assert_eq!(server.action(&triage_id).await.profile, "triage");
    let cancel = format!("/console/actions/{triage_id}/cancel");
    assert_eq!(ana.post(&cancel, &[("csrf", &csrf), ("comment", "done")]).await.status(), StatusCode::SEE_OTHER);

    // A second one: MDE's ActiveRequestAlreadyExists, shown on the device page with a link.
    let again = ana.post(&path, &[("csrf", &csrf), ("comment", "again")]).await;
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let page = again.text().await.unwrap();
    assert!(page.contains("ActiveRequestAlreadyExists"), "{page}");
    assert!(page.contains(&format!("/console/actions/{id}")), "links to the running collection");

    // A viewer may read but not collect: the API's 403, recorded as the API records it.
    let mut viewer = Console::new(&server);
    viewer.sign_in("viewer", PASSWORD).await;
    let token = viewer.csrf().await;
    let refused = viewer.post(&path, &[("csrf", &token), ("comment", "not allowed")]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("AlertsInvestigation"));
    assert!(audit(&server, "collect").await.iter().any(|e| e["actor"] == "viewer" && e["outcome"] == "refused (403)"));
    // A user without any role sees nothing at all.
    let mut nobody = Console::new(&server);
    nobody.sign_in("nobody", PASSWORD).await;
    assert_eq!(nobody.get("/console/devices").await.status(), StatusCode::FORBIDDEN);

    // Cancel with a reason, through the API's cancel.
    let cancelled =
        ana.post(&format!("/console/actions/{id}/cancel"), &[("csrf", &csrf), ("comment", "wrong host")]).await;
    assert_eq!(cancelled.status(), StatusCode::SEE_OTHER);
    let action = server.action(&id).await;
    assert_eq!(action.status, casefile_proto::action::ActionStatus::Cancelled);
    assert_eq!(action.cancellation_comment.as_deref(), Some("wrong host"));
    assert_eq!(audit(&server, "cancel").await.iter().filter(|e| e["target"] == id.as_str()).count(), 1);

    // What an endpoint reports is text, never markup.
    let page = ana.get(&format!("/console/devices/{evil}")).await.text().await.unwrap();
    assert!(!page.contains("<script>alert(1)</script>"), "{page}");
    assert!(page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "escaped: {page}");

    // Hostile query strings are answered, never with a 5xx.
    for hostile in [
        "/console/devices?page=18446744073709551615",
        "/console/actions?page=18446744073709551615&tab=history",
        "/console/devices?q=%27%20or%201%3D1%20--&os=%00&tag=%27&sort=..%2F&dir=%0d%0a",
        "/console/actions?requestor=%27)&device=%27&window=forever&type=Nope",
        "/console/admin?tab=audit&since=yesterday",
        &format!("/console/actions/{id}/package/view?path=..%2F..%2Fetc%2Fpasswd&page=18446744073709551615"),
    ] {
        let answer = ana.get(hostile).await;
        assert!(answer.status().as_u16() < 500, "{hostile}: {}", answer.status());
    }
    let quoted = ana.get("/console/devices?q=it%27s").await;
    assert_eq!(quoted.status(), 200, "a quote in a search is a literal");

    // The CSV export holds the filtered actions, formula-safe.
    let csv = ana.get("/console/actions.csv?tab=history&window=day").await;
    assert_eq!(csv.status(), 200);
    assert!(csv.headers()["content-disposition"].to_str().unwrap().contains("attachment"));
    let text = csv.text().await.unwrap();
    assert!(text.starts_with("Action id,Type,Status") && text.contains(&id) && text.contains("Cancelled"), "{text}");
}

/// The flow in a real browser: sign in → find the device → collect with a reason →
/// watch it reach `Succeeded` without reloading → open the package viewer and read a CSV
/// → download and compare with the API's download → cancel a pending collection → a user
/// outside the device group sees no such device and gets no page for it → sign out.
#[tokio::test]
async fn the_analysts_flow_in_a_real_browser() {
    let Some(browser) = browser::start("analyst-flow").await else { return };
    let server = TestServer::start().await;
    user_with_role(&server, "ana", &["ViewData", "AlertsInvestigation"]).await;
    user_with_role(&server, "outsider", &["ViewData", "AlertsInvestigation"]).await;
    let agent = server.start_agent("browser-host").await;
    let machine = agent.identity.machine_id.clone();
    let idle = server.seed_machine("idle-browser-host").await;
    let admin = server.token(&["Casefile.Admin", "Machine.ReadWrite.All"]);
    let tagged = server
        .post_json(&format!("/api/machines/{machine}/tags"), &admin, &json!({"Value": "crown-jewels", "Action": "Add"}))
        .await;
    assert_eq!(tagged.status(), 200);
    let b = &server.base;

    // Sign in.
    browser.goto(&format!("{b}/console/devices")).await;
    assert_eq!(browser.path().await, "/console/signin");
    browser.shot("signin").await;
    browser.fill("#name", "ana").await;
    browser.fill("#password", PASSWORD).await;
    browser.click("#signin").await;
    browser.wait_path(|p| p == "/console/devices").await;
    assert_eq!(browser.text("#signed-in-user").await, "ana");
    // Find the device and collect with a reason.
    browser.goto(&format!("{b}/console/devices")).await;
    browser.fill("#q", "").await;
    browser.shot("devices").await;
    browser.goto(&format!("{b}/console/devices/{machine}")).await;
    browser.shot("device").await;
    browser.fill("#comment", "Suspicious outbound traffic (INC-1042)").await;
    browser.click("#collect").await;
    let path = browser.wait_path(|p| p.starts_with("/console/actions/")).await;
    let action_id = path.rsplit('/').next().unwrap().to_owned();
    // A marker the page loses if it reloads: the status must change in place.
    browser.client.execute("window.casefileNoReload = 42;", vec![]).await.unwrap();
    browser.wait_text("#action-status", |s| s == "Succeeded").await;
    let still: Value = browser.client.execute("return window.casefileNoReload;", vec![]).await.unwrap();
    assert_eq!(still, json!(42), "the status changed without a reload");
    assert!(!browser.has("#cancel").await, "a finished action offers no cancel");
    browser.shot("action-succeeded").await;

    // The package: verified, signed by the device's key, with its custody and files.
    browser.click("#open-package").await;
    browser.wait_path(|p| p == format!("/console/actions/{action_id}/package")).await;
    assert!(browser.text("#verdict").await.starts_with("Verified now"), "{}", browser.text("#verdict").await);
    assert!(!browser.text("#signer").await.is_empty());
    let custody = browser.text("#custody").await;
    assert!(custody.contains("collect") && custody.contains("package.upload"), "{custody}");
    browser.shot("package").await;

    // A CSV file in the viewer: a table, sortable and filterable.
    let csv_link = browser
        .client
        .find(fantoccini::Locator::Css("#files a[href*='.csv']"))
        .await
        .expect("the package has a CSV file");
    csv_link.click().await.unwrap();
    browser.wait_path(|p| p.ends_with("/package/view")).await;
    assert!(browser.text("#csv-count").await.contains("matching"));
    browser.shot("viewer-csv").await;
    browser.click("#csv thead th:nth-child(2) a").await;
    browser.wait_for("#csv thead th[aria-sort='ascending']").await;
    browser.shot("viewer-csv-sorted").await;

    // Download with the button and compare with the API's download.
    browser.goto(&format!("{b}/console/actions/{action_id}/package")).await;
    browser.click("#download").await;
    let downloaded = std::fs::read(browser.downloaded().await).unwrap();
    let token = server.token(ALL);
    let link: Value =
        server.get(&format!("/api/machineactions/{action_id}/getPackageUri"), &token).await.json().await.unwrap();
    let api_bytes = server.http.get(link["value"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha2::Sha256::digest(&downloaded), sha2::Sha256::digest(&api_bytes), "the same package bytes");

    // Cancel a pending collection on a device no agent serves.
    browser.goto(&format!("{b}/console/devices/{idle}")).await;
    browser.fill("#comment", "Collect from the idle host").await;
    browser.click("#collect").await;
    browser.wait_path(|p| p.starts_with("/console/actions/") && !p.ends_with(&action_id)).await;
    assert_eq!(browser.text("#action-status").await, "Pending");
    browser.fill("#cancel-comment", "Host is being reimaged").await;
    browser.shot("action-pending").await;
    browser.click("#cancel").await;
    browser.wait_text("#action-status", |s| s == "Cancelled").await;

    // The Action center: history holds both, pending holds none.
    browser.goto(&format!("{b}/console/actions?tab=history&window=day")).await;
    let rows = browser.text("#actions tbody").await;
    assert!(rows.contains("Succeeded") && rows.contains("Cancelled"), "{rows}");
    browser.shot("action-center").await;

    // Sign out.
    browser.click(".signout button").await;
    browser.wait_path(|p| p == "/console/signin").await;
    assert!(browser.body().await.contains("You are signed out."));
    browser.goto(&format!("{b}/console/devices")).await;
    assert_eq!(browser.path().await, "/console/signin");

    // A user outside a device group: no such device in the list, no page by URL.
    // The tagged device goes into a group only the IdP group "secops" sees.
    let group = json!({"name": "Jewels", "rank": 1, "rules": [{"property": "Tag", "values": ["crown-jewels"]}], "userGroups": ["secops"]});
    assert_eq!(server.post_json("/api/admin/devicegroups", &admin, &group).await.status(), 201);
    browser.fill("#name", "outsider").await;
    browser.fill("#password", PASSWORD).await;
    browser.click("#signin").await;
    browser.wait_path(|p| p != "/console/signin").await;
    browser.goto(&format!("{b}/console/devices")).await;
    let list = browser.text("#devices").await;
    assert!(list.contains("idle-browser-host") && !list.contains(&agent.identity.machine_id), "{list}");
    browser.goto(&format!("{b}/console/devices/{machine}")).await;
    assert!(browser.body().await.contains("NotFound"));
    browser.shot("outsider-no-device").await;
    browser.goto(&format!("{b}/console/actions/{action_id}/package")).await;
    assert!(browser.body().await.contains("NotFound"), "nor its package");

    // An administrator: the Admin pages, a user created there, the audit log filtered.
    browser.goto(&format!("{b}/console/devices")).await;
    assert!(!browser.has("nav a[href='/console/admin']").await, "no Admin for an analyst");
    browser.click(".signout button").await;
    browser.wait_path(|p| p == "/console/signin").await;
    user_with_role(&server, "boss", &["Administrator"]).await;
    browser.fill("#name", "boss").await;
    browser.fill("#password", PASSWORD).await;
    browser.click("#signin").await;
    browser.wait_path(|p| p != "/console/signin").await;
    browser.click("nav a[href='/console/admin']").await;
    browser.wait_path(|p| p == "/console/admin").await;
    browser.shot("admin-applications").await;
    browser.goto(&format!("{b}/console/admin?tab=users")).await;
    browser.fill("#user-name", "newcomer").await;
    browser.fill("#user-password", "a long enough password").await;
    browser.click("#create-user").await;
    browser.wait_text("#admin-table", |t| t.contains("newcomer")).await;
    browser.shot("admin-users").await;
    browser.goto(&format!("{b}/console/admin?tab=tokens")).await;
    browser.click("#create-token").await;
    let secret = browser.wait_text("#new-token", |t| t.starts_with("cfe_")).await;
    browser.shot("admin-tokens").await;
    assert!(browser.text("#admin-table").await.contains("usable"));
    let enrolled =
        server.start_agent_in("enrolled-from-console", server.dir.path().join("agent-console"), Some(secret)).await;
    assert!(!enrolled.identity.machine_id.is_empty(), "the token from the console enrolls an agent");
    browser.goto(&format!("{b}/console/admin?tab=audit&event=collect")).await;
    let trail = browser.text("#admin-table").await;
    assert!(trail.contains("collect") && trail.contains("ana"), "{trail}");
    browser.shot("admin-audit").await;
    browser.close().await;
}

/// `casefile login --user`: the CLI's password grant gives a local user a delegated token
/// whose rights are the user's roles, as on the console.
#[tokio::test]
async fn local_users_get_delegated_tokens_for_the_cli_only() {
    let server = TestServer::start().await;
    user_with_role(&server, "ana", &["ViewData"]).await;
    let host = server.seed_machine("cli-host").await;
    let grant = |user: &str, password: &str, client: &str| {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("grant_type", "password"),
                ("client_id", client),
                ("username", user),
                ("password", password),
                ("scope", "https://api.securitycenter.microsoft.com/.default"),
            ])
            .finish();
        server
            .http
            .post(format!("{}/default/oauth2/v2.0/token", server.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let answer: Value = grant("ana", PASSWORD, "casefile-cli").await.unwrap().json().await.unwrap();
    let token = answer["access_token"].as_str().expect("a token").to_owned();
    let machine = server.get(&format!("/api/machines/{host}"), &token).await;
    assert_eq!(machine.status(), 200, "ViewData reads machines");
    let (status, error) = error_of(server.collect(&host, &token).await).await;
    assert_eq!((status, error["code"].as_str()), (403, Some("Forbidden")), "but may not collect: {error}");

    let wrong = grant("ana", "wrong password!", "casefile-cli").await.unwrap();
    assert_eq!(wrong.status(), 400);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!((body["error"].as_str(), body["error_codes"][0].as_u64()), (Some("invalid_grant"), Some(50126)));
    let unknown = grant("nobody", PASSWORD, "casefile-cli").await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(unknown["error_codes"][0], 50126, "an unknown name reads like a wrong password");
    let other_client = grant("ana", PASSWORD, "some-app").await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(other_client["error"], "unauthorized_client");

    // A new password stops the tokens issued before it, at once.
    let state = server.server().state();
    let tenant = casefile_proto::TenantId::default_tenant();
    casefile_server::auth::users::reset_password(&*state.store, &tenant, "ana", "a brand new password", state.now())
        .await
        .unwrap();
    assert_eq!(server.get(&format!("/api/machines/{host}"), &token).await.status(), 401, "revoked by the reset");
    let answer: Value = grant("ana", "a brand new password", "casefile-cli").await.unwrap().json().await.unwrap();
    let token = answer["access_token"].as_str().expect("a token").to_owned();
    assert_eq!(server.get(&format!("/api/machines/{host}"), &token).await.status(), 200);
    let state = server.server().state();
    casefile_server::auth::users::set_disabled(
        &*state.store,
        &casefile_proto::TenantId::default_tenant(),
        "ana",
        true,
        state.now(),
    )
    .await
    .unwrap();
    let disabled = grant("ana", PASSWORD, "casefile-cli").await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(disabled["error_codes"][0], 50126);
}

/// `[console] enabled = false`: no console route answers (review of issue 12).
#[tokio::test]
async fn a_disabled_console_serves_nothing() {
    let server = TestServer::start_with(|config| config.console.enabled = false).await;
    for path in ["/console/signin", "/console/devices", "/console/assets/console.js"] {
        let answer = server.http.get(format!("{}{path}", server.base)).send().await.unwrap();
        assert_eq!(answer.status(), 404, "{path}");
    }
    let posted = server.http.post(format!("{}/console/signin", server.base)).send().await.unwrap();
    assert_eq!(posted.status(), 404);
}
