//! The public API over real HTTP: the collection flow and every error path of it.

use std::io::Cursor;

use casefile_proto::ActionStatus;
use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn collect_succeeds_and_the_downloaded_package_verifies() {
    let server = TestServer::start().await;
    let mut agent = server.start_agent("host-flow").await;
    let token = server.token(ALL);

    let response = server.collect(&agent.identity.machine_id, &token).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["odata-version"], "4.0");
    assert!(
        response.headers()["content-type"].to_str().unwrap().starts_with("application/json; odata.metadata=minimal")
    );
    let created: Value = response.json().await.unwrap();
    let keys: Vec<&str> = created.as_object().unwrap().keys().map(String::as_str).collect();
    for key in [
        "@odata.context",
        "id",
        "type",
        "title",
        "requestor",
        "requestorComment",
        "status",
        "machineId",
        "computerDnsName",
        "creationDateTimeUtc",
        "lastUpdateDateTimeUtc",
        "cancellationRequestor",
        "cancellationComment",
        "cancellationDateTimeUtc",
        "errorHResult",
        "scope",
        "externalId",
        "requestSource",
        "relatedFileInfo",
        "commands",
        "troubleshootInfo",
    ] {
        assert!(keys.contains(&key), "201 body lacks {key}: {created}");
    }
    assert_eq!(created["@odata.context"], format!("{}/api/$metadata#MachineActions/$entity", server.base));
    assert_eq!(created["type"], "CollectInvestigationPackage");
    assert_eq!(created["status"], "Pending");
    assert_eq!(created["requestSource"], "PublicApi");
    assert_eq!(created["errorHResult"], 0);
    assert_eq!(created["commands"], serde_json::json!([]));
    assert_eq!(created["requestor"], "e2e tests");
    assert_eq!(created["requestorComment"], "e2e collection");
    assert_eq!(created["machineId"], agent.identity.machine_id.as_str());
    assert!(created["title"].is_null() && created["cancellationDateTimeUtc"].is_null());

    let id = created["id"].as_str().unwrap().to_owned();
    let done = server.wait_final(&id).await;
    assert_eq!(done.status, ActionStatus::Succeeded, "{:?}", done.troubleshoot_info);
    assert!(done.last_update_date_time_utc > done.creation_date_time_utc);

    // getPackageUri, with MDE's capitalisation and the versioned prefix.
    let response = server.get(&format!("/api/v1.0/machineactions/{id}/GetPackageUri"), &token).await;
    assert_eq!(response.status(), 200);
    let link: Value = response.json().await.unwrap();
    assert_eq!(link["@odata.context"], format!("{}/api/$metadata#Edm.String", server.base));
    let url = link["value"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/safedownload/WDATP_Investigation_Package.zip?token=", server.base)), "{url}");

    // The link needs no bearer token.
    let download = server.http.get(url).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "application/zip");
    let announced = download.headers()["x-casefile-sha256"].to_str().unwrap().to_owned();
    let bytes = download.bytes().await.unwrap();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), announced);

    let report = casefile_package::verify(Cursor::new(bytes.to_vec())).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.manifest.action_id.map(|a| a.to_string()), Some(id.clone()));
    let folders: Vec<&str> = report.manifest.collectors.iter().map(|c| c.folder.as_str()).collect();
    for folder in
        ["Processes", "Network connections", "Users and groups", "Disk volumes", "System information", "Open files"]
    {
        assert!(folders.contains(&folder), "package lacks {folder}: {folders:?}");
    }
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes.to_vec())).unwrap();
    assert!(zip.by_name("CollectionSummaryReport.html").is_ok());
    let processes = report.manifest.items.iter().find(|i| i.path.starts_with("Processes/")).unwrap();
    assert!(processes.size > 0);

    // The action list shows it, newest first.
    let list: Value = server.get("/api/machineactions/", &token).await.json().await.unwrap();
    assert_eq!(list["value"][0]["id"], id.as_str());
    agent.stop().await;
}

#[tokio::test]
async fn the_comment_must_be_present_in_exact_case_as_json() {
    let server = TestServer::start().await;
    let mut agent = server.start_agent("host-body").await;
    let url = format!("{}/api/machines/{}/collectInvestigationPackage", server.base, agent.identity.machine_id);
    let token = server.token(ALL);
    let post = |body: &'static str, content_type: &'static str| {
        server.http.post(&url).bearer_auth(&token).header("content-type", content_type).body(body).send()
    };

    let (status, error) = error_of(post("{}", "application/json").await.unwrap()).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "MissingRequiredParameter"));

    let (status, error) = error_of(post(r#"{"comment":"lower case"}"#, "application/json").await.unwrap()).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "MissingRequiredParameter"));
    assert!(error["message"].as_str().unwrap().contains("case-sensitive"));

    let (status, error) = error_of(post(r#"{"Comment":"x"}"#, "text/plain").await.unwrap()).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (415, "UnsupportedMediaType"));

    let (status, error) = error_of(post(r#"{"Comment": "#, "application/json").await.unwrap()).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidRequestBody"));

    let (status, error) = error_of(post(r#"{"Comment": 5}"#, "application/json").await.unwrap()).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidRequestBody"));

    let (status, error) = error_of(post(r#"{"Comment": "  "}"#, "application/json").await.unwrap()).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidInput"));

    // None of these created an action.
    let list: Value = server.get("/api/machineactions", &token).await.json().await.unwrap();
    assert_eq!(list["value"].as_array().unwrap().len(), 0);
    agent.stop().await;
}

#[tokio::test]
async fn unknown_machine_is_404_and_a_second_collection_is_refused() {
    let server = TestServer::start().await;
    let token = server.token(ALL);
    let (status, error) = error_of(server.collect("0123456789abcdef0123456789abcdef01234567", &token).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (404, "ResourceNotFound"));

    // An enrolled machine whose agent is stopped keeps the first action Pending.
    let mut agent = server.start_agent("host-dup").await;
    agent.stop().await;
    let first = server.collect(&agent.identity.machine_id, &token).await;
    assert_eq!(first.status(), 201);
    let response = server.collect(&agent.identity.machine_id, &token).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(status, 400);
    assert!(
        text.contains(r#""code":"ActiveRequestAlreadyExists","message":"Action is already in progress""#),
        "{text}"
    );
}

#[tokio::test]
async fn racing_collections_on_one_machine_create_exactly_one_action() {
    let server = TestServer::start().await;
    let mut agent = server.start_agent("host-race").await;
    agent.stop().await;
    let machine = agent.identity.machine_id.clone();
    let token = server.token(ALL);
    let requests = (0..16).map(|_| server.collect(&machine, &token));
    let statuses: Vec<u16> = futures::future::join_all(requests).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 15, "{statuses:?}");
    let list: Value = server.get("/api/machineactions", &token).await.json().await.unwrap();
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn get_package_uri_answers_404_before_success_and_400_for_bad_ids() {
    let server = TestServer::start().await;
    let mut agent = server.start_agent("host-early").await;
    agent.stop().await;
    let token = server.token(ALL);
    let created: Value = server.collect(&agent.identity.machine_id, &token).await.json().await.unwrap();
    let id = created["id"].as_str().unwrap();

    let (status, error) = error_of(server.get(&format!("/api/machineactions/{id}/getPackageUri"), &token).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (404, "ResourceNotFound"));

    let (status, error) = error_of(server.get("/api/machineactions/not-a-guid/getPackageUri", &token).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "BadRequest"));
    assert!(error["message"].as_str().unwrap().contains("Edm.Guid"));

    let (status, error) = error_of(server.get("/api/machineactions/not-a-guid", &token).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "BadRequest"));

    let unknown = uuid::Uuid::new_v4();
    let (status, _) = error_of(server.get(&format!("/api/machineactions/{unknown}"), &token).await).await;
    assert_eq!(status, 404);
    let (status, _) = error_of(server.get(&format!("/api/machineactions/{unknown}/getpackageuri"), &token).await).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn machines_are_listed_and_found_by_id_or_name() {
    let server = TestServer::start().await;
    let mut agent = server.start_agent("host-machines").await;
    let token = server.token(&[READ]);
    let list: Value = server.get("/api/machines", &token).await.json().await.unwrap();
    assert_eq!(list["@odata.context"], format!("{}/api/$metadata#Machines", server.base));
    let machine = &list["value"][0];
    let id = machine["id"].as_str().unwrap();
    assert_eq!(id, agent.identity.machine_id);
    assert!(id.len() == 40 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    for key in [
        "computerDnsName",
        "firstSeen",
        "lastSeen",
        "osPlatform",
        "osVersion",
        "osArchitecture",
        "version",
        "agentVersion",
        "lastIpAddress",
        "healthStatus",
        "machineTags",
        "onboardingStatus",
    ] {
        assert!(machine.get(key).is_some(), "machine lacks {key}: {machine}");
    }
    assert_eq!(machine["healthStatus"], "Active");
    assert_eq!(machine["onboardingStatus"], "Onboarded");
    assert_eq!(machine["osPlatform"], "Linux");
    assert_eq!(machine["lastIpAddress"], "127.0.0.1");

    let by_id: Value = server.get(&format!("/api/machines/{id}"), &token).await.json().await.unwrap();
    assert_eq!(by_id["@odata.context"], format!("{}/api/$metadata#Machines/$entity", server.base));
    assert_eq!(by_id["id"], id);
    let name = machine["computerDnsName"].as_str().unwrap().to_uppercase();
    let by_name: Value = server.get(&format!("/api/machines/{name}"), &token).await.json().await.unwrap();
    assert_eq!(by_name["id"], id);
    let (status, error) = error_of(server.get("/api/machines/no-such-host", &token).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (404, "ResourceNotFound"));
    agent.stop().await;
}

#[tokio::test]
async fn routing_quirks_of_mde_clients_are_tolerated() {
    let server = TestServer::start().await;
    let token = server.token(ALL);
    assert_eq!(server.get("/API/V1.0/MachineActions/", &token).await.status(), 200);
    assert_eq!(server.get("/api/machines/?$top=5", &token).await.status(), 200);

    let response =
        server.http.delete(format!("{}/api/machineactions", server.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.headers()["allow"].to_str().unwrap().contains("GET"));

    let (status, error) = error_of(server.get("/api/nothing-here", &token).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (404, "NotFound"));

    let (status, error) = error_of(server.get("/api/machineactions?$expand=machine", &token).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "ODataError"));
    let (status, _) = error_of(server.get("/api/machineactions?$top=10001", &token).await).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn download_links_refuse_tampering_and_expiry() {
    let server = TestServer::start().await;
    let Collected { mut agent, token, id, url } = server.succeeded_collection("host-links").await;

    // Flip one character of the signature.
    let mut tampered = url.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let (status, error) = error_of(server.http.get(String::from_utf8(tampered).unwrap()).send().await.unwrap()).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (403, "Forbidden"));
    assert!(error["message"].as_str().unwrap().contains("invalid"));

    // No token at all.
    let (status, _) = error_of(
        server.http.get(format!("{}/safedownload/WDATP_Investigation_Package.zip", server.base)).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 403);

    // An expired link for the very same package.
    let package = server
        .server()
        .state()
        .store
        .package(&casefile_proto::TenantId::default_tenant(), id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    let link = casefile_server::links::Link {
        tenant: "default",
        action: package.action_id,
        sha256: &package.sha256,
        requestor: "e2e tests",
    };
    let expired = casefile_server::links::issue_until(
        &server.server().state().keyring,
        &server.base,
        &link,
        chrono::Utc::now().timestamp() - 5,
    )
    .unwrap();
    let (status, error) = error_of(server.http.get(expired).send().await.unwrap()).await;
    assert_eq!(status, 403);
    assert!(error["message"].as_str().unwrap().contains("expired"));

    // An API access token is not a download token.
    let as_link = format!("{}/safedownload/WDATP_Investigation_Package.zip?token={token}", server.base);
    assert_eq!(server.http.get(as_link).send().await.unwrap().status(), 403);

    // The genuine link still works.
    assert_eq!(server.http.get(&url).send().await.unwrap().status(), 200);
    agent.stop().await;
}
