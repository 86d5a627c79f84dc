//! Issue 10, "what real MDE client libraries showed": every error anywhere has a JSON body
//! (MDE's shape under `/api` and `/agent`, Entra's on the login routes), and the
//! `ExternalId`/`Title` of an action request are kept, returned and filterable.

use reqwest::Method;
use serde_json::{Value, json};

use crate::identity::{assert_oauth_error, oauth_error};
use crate::support::*;

const GUID: &str = "7b1f4967-d972-4e5a-a3c0-6a9e617a22a4";

fn is_login(path: &str) -> bool {
    path.starts_with("/{tenant}/") || path.starts_with("/discovery/")
}

/// Every route of the route table, with every method it does not take: `405`, an `Allow`
/// header naming the methods it takes, and a JSON body in the shape of its API.
#[tokio::test]
async fn every_wrong_method_on_every_route_answers_json_with_allow() {
    let server = TestServer::start().await;
    let token = server.token(ALL);
    let paths = casefile_server::route_paths();
    assert!(paths.len() > 40, "{paths:?}");
    let (mut refused, mut entra) = (0, 0);
    for path in &paths {
        let concrete = path.replace("{id}", GUID).replace("{tenant}", "contoso").replace("{name}", "Analysts");
        let mut allowed = None;
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
            let response = server
                .http
                .request(method.clone(), format!("{}{concrete}", server.base))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            if response.status() != 405 {
                continue;
            }
            refused += 1;
            let allow = response.headers().get("allow").unwrap_or_else(|| panic!("{method} {path}: no Allow"));
            let allow = allow.to_str().unwrap().to_owned();
            assert!(!allow.is_empty() && !allow.split(',').any(|m| m == method.as_str()), "{method} {path}: {allow}");
            assert_eq!(allowed.get_or_insert_with(|| allow.clone()), &allow, "{path}: one Allow for every method");
            if is_login(path) {
                entra += 1;
                let (_, body) = oauth_error(response).await;
                assert_eq!(body["error"], "invalid_request", "{method} {path}");
                assert_eq!(body["error_codes"][0], 900561, "{method} {path}");
            } else {
                let (status, error) = error_of(response).await;
                assert_eq!((status, error["code"].as_str().unwrap()), (405, "MethodNotAllowed"), "{method} {path}");
                assert!(error["message"].as_str().unwrap().contains(method.as_str()), "{error}");
            }
        }
        assert!(allowed.is_some(), "{path} takes every method?");
    }
    assert!(entra > 0 && refused > entra, "{refused} refusals, {entra} on login routes");

    // Entra's wording on its token endpoint, and the routes added beside the table.
    let get = server.http.get(format!("{}/contoso/oauth2/v2.0/token", server.base)).send().await.unwrap();
    assert_eq!(get.headers()["allow"], "POST");
    let body = assert_oauth_error(get, 405, "invalid_request", 900561).await;
    assert!(body["error_description"].as_str().unwrap().contains("The endpoint only accepts POST requests"), "{body}");
    let post_ca = server.http.post(format!("{}{}", server.base, casefile_server::tls::CA_PATH)).send().await.unwrap();
    assert_eq!(post_ca.headers()["allow"], "GET,HEAD");
    let (status, error) = error_of(post_ca).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (405, "MethodNotAllowed"));
}

/// Errors that come from no handler: unknown paths, axum's own rejections, bodies that
/// are too large or not JSON, and the download link.
#[tokio::test]
async fn errors_from_no_handler_answer_json() {
    let server = TestServer::start().await;
    let token = server.token(ALL);
    for unknown in ["/nothing", "/api/nothing", "/api/v1.0/machines/x/y/z", "/agent/v1/nothing", "/.env", "/%00"] {
        let (status, error) = error_of(server.get(unknown, &token).await).await;
        assert_eq!((status, error["code"].as_str().unwrap()), (404, "NotFound"), "{unknown}");
    }
    for unknown in ["/contoso/oauth2/v2.0/nothing", "/contoso/oauth2/token/extra"] {
        let response = server.http.post(format!("{}{unknown}", server.base)).send().await.unwrap();
        let (status, _) = error_of(response).await;
        assert_eq!(status, 404, "{unknown}");
    }
    let machine = server.seed_machine("contract.example").await;
    let collect = format!("{}/api/machines/{machine}/collectInvestigationPackage", server.base);
    let huge = json!({"Comment": "x".repeat(100 * 1024)});
    let (status, error) =
        error_of(server.http.post(&collect).bearer_auth(&token).json(&huge).send().await.unwrap()).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (413, "PayloadTooLarge"));
    let text = server.http.post(&collect).bearer_auth(&token).body("Comment=x").send().await.unwrap();
    let (status, error) = error_of(text).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (415, "UnsupportedMediaType"));
    // axum's JSON, query and path rejections, through the API's own extractors.
    let admin = server.token(&["Casefile.Admin"]);
    let bad_json = server
        .http
        .post(format!("{}/api/admin/applications", server.base))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, error) = error_of(bad_json).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidRequestBody"));
    let (status, _) = error_of(server.get("/api/admin/audit?after=many", &admin).await).await;
    assert_eq!(status, 400);
    let (status, _) = error_of(server.get("/api/machineactions/%FF%FE", &token).await).await;
    assert_eq!(status, 400);
    // The download link: missing, forged, and a wrong method.
    let download = format!("{}/safedownload/WDATP_Investigation_Package.zip", server.base);
    for url in [download.clone(), format!("{download}?token=forged")] {
        let (status, _) = error_of(server.http.get(&url).send().await.unwrap()).await;
        assert!(matches!(status, 400 | 401 | 403 | 404), "{url}: {status}");
    }
    let (status, _) = error_of(server.http.delete(&download).send().await.unwrap()).await;
    assert_eq!(status, 405);
}

/// A playbook tags an action with its case number and title, and finds it again by filter.
#[tokio::test]
async fn a_playbook_finds_its_action_by_external_id() {
    let server = TestServer::start().await;
    let token = server.token(ALL);
    let mut created = Vec::new();
    // Every documented spelling of the keys is accepted.
    for (i, (external, title)) in
        [("ExternalID", "Title"), ("ExternalId", "title"), ("externalId", "Title"), ("externalID", "title")]
            .into_iter()
            .enumerate()
    {
        let machine = server.seed_machine(&format!("case-{i}.example")).await;
        let case = if i < 2 { "INC-4711".to_owned() } else { format!("INC-{i}") };
        let body = json!({"Comment": "playbook", external: case, title: format!("Ransomware triage {i}")});
        let response =
            server.post_json(&format!("/api/machines/{machine}/collectInvestigationPackage"), &token, &body).await;
        assert_eq!(response.status(), 201, "{external}/{title}");
        let action: Value = response.json().await.unwrap();
        assert_eq!(action["externalId"], case.as_str());
        assert_eq!(action["title"], format!("Ransomware triage {i}"));
        created.push(action["id"].as_str().unwrap().to_owned());
    }
    let untagged = server.seed_machine("untagged.example").await;
    assert_eq!(server.collect(&untagged, &token).await.status(), 201);

    let mut tagged = found(&server, &token, "externalId eq 'INC-4711'").await;
    tagged.sort();
    let mut expected = vec![created[0].clone(), created[1].clone()];
    expected.sort();
    assert_eq!(tagged, expected);
    assert_eq!(
        found(&server, &token, "ExternalId eq 'INC-2'").await,
        vec![created[2].clone()],
        "property names ignore case"
    );
    assert_eq!(found(&server, &token, "externalId in ('INC-3','INC-9')").await, vec![created[3].clone()]);
    assert_eq!(found(&server, &token, "startswith(externalId,'INC-4')").await.len(), 2);
    assert_eq!(found(&server, &token, "externalId eq null").await.len(), 1);
    assert_eq!(
        found(&server, &token, "title eq 'Ransomware triage 3' and externalId eq 'INC-3'").await,
        vec![created[3].clone()]
    );
    let one: Value = server.get(&format!("/api/machineactions/{}", created[0]), &token).await.json().await.unwrap();
    assert_eq!((one["externalId"].as_str(), one["title"].as_str()), (Some("INC-4711"), Some("Ransomware triage 0")));

    // Cancel checks the labels but keeps the requester's.
    let cancel = format!("/api/machineactions/{}/cancel", created[0]);
    let (status, error) = error_of(server.post_json(&cancel, &token, &json!({"ExternalId": "a\u{7}b"})).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidInput"));
    let cancelled = server.post_json(&cancel, &token, &json!({"Comment": "done", "ExternalId": "OTHER"})).await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(cancelled.json::<Value>().await.unwrap()["externalId"], "INC-4711");
}

/// The ids `$filter` finds.
async fn found(server: &TestServer, token: &str, filter: &str) -> Vec<String> {
    let url = format!("/api/machineactions?$filter={}", filter.replace(' ', "%20").replace('\'', "%27"));
    let response = server.get(&url, token).await;
    assert_eq!(response.status(), 200, "{filter}");
    let listed: Value = response.json().await.unwrap();
    listed["value"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_owned()).collect()
}

/// Hostile labels: control characters, huge values, wrong types, two spellings at once.
#[tokio::test]
async fn hostile_external_ids_and_titles_are_refused_naming_the_field() {
    let server = TestServer::start().await;
    let token = server.token(ALL);
    let machine = server.seed_machine("hostile-labels.example").await;
    let path = format!("/api/machines/{machine}/collectInvestigationPackage");
    let cases = [
        (json!({"Comment": "c", "ExternalId": "INC-1\nInjected: yes"}), "InvalidInput", "ExternalId"),
        (json!({"Comment": "c", "ExternalID": "\u{1b}[31mred"}), "InvalidInput", "ExternalId"),
        (json!({"Comment": "c", "Title": "a\u{0}b"}), "InvalidInput", "Title"),
        (json!({"Comment": "c", "externalId": "x".repeat(257)}), "InvalidInput", "ExternalId"),
        (json!({"Comment": "c", "title": "é".repeat(1001)}), "InvalidInput", "Title"),
        (json!({"Comment": "c", "ExternalId": 4711}), "InvalidRequestBody", "ExternalId"),
        (json!({"Comment": "c", "Title": ["a"]}), "InvalidRequestBody", "Title"),
        (json!({"Comment": "c", "ExternalId": "a", "externalId": "b"}), "InvalidRequestBody", "ExternalId"),
    ];
    for (body, code, field) in cases {
        let (status, error) = error_of(server.post_json(&path, &token, &body).await).await;
        assert_eq!((status, error["code"].as_str().unwrap()), (400, code), "{body}");
        assert!(error["message"].as_str().unwrap().contains(field), "{body}: {error}");
    }
    // The longest accepted values, a null, and blanks (no label) are fine.
    let body = json!({"Comment": "c", "ExternalId": "x".repeat(256), "Title": "é".repeat(1000)});
    let response = server.post_json(&path, &token, &body).await;
    assert_eq!(response.status(), 201);
    let action: Value = response.json().await.unwrap();
    assert_eq!(action["externalId"].as_str().unwrap().len(), 256);
    let other = server.seed_machine("blank-labels.example").await;
    let body = json!({"Comment": "c", "ExternalId": "  ", "Title": null});
    let action: Value = server
        .post_json(&format!("/api/machines/{other}/collectInvestigationPackage"), &token, &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((action["externalId"].clone(), action["title"].clone()), (Value::Null, Value::Null));
}
