//! Delegated users under RBAC (§6.3): a token's delegated permission and the user's role
//! permission are both needed; device groups decide which machines a user sees (reads of
//! others answer 404, actions 403); lists show only visible machines and their actions;
//! applications stay tenant-wide. Managed through the admin API and the CLI.

use serde_json::{Value, json};

use crate::support::*;

const ALL_SCOPES: &str = "Machine.Read Machine.ReadWrite Machine.CollectForensics";

/// A user's token: `scp` makes it delegated.
fn user_token(server: &TestServer, upn: &str, scp: &str, groups: &[&str]) -> String {
    let mut claims = server.claims(&[]);
    claims.appid = Some("soc-portal".into());
    claims.app_displayname = None;
    claims.upn = Some(upn.into());
    claims.oid = Some(format!("oid-{upn}"));
    claims.scp = Some(scp.into());
    claims.groups = groups.iter().map(|g| g.to_string()).collect();
    server.sign(&claims)
}

async fn names(server: &TestServer, token: &str) -> Vec<String> {
    let response = server.get("/api/machines?$orderby=computerDnsName", token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["value"].as_array().unwrap().iter().map(|m| m["computerDnsName"].as_str().unwrap().to_owned()).collect()
}

async fn put(server: &TestServer, path: &str, token: &str, body: &Value) -> reqwest::Response {
    server.http.put(format!("{}{path}", server.base)).bearer_auth(token).json(body).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_and_act_only_where_their_roles_and_device_groups_allow() {
    let server = TestServer::start().await;
    let web = server.seed_machine("web-01.corp.example").await;
    let pci = server.seed_machine("pay-01.corp.example").await;
    let _db = server.seed_machine("db-01.corp.example").await;
    let admin = server.token(&["Casefile.Admin", COLLECT, READ, "Machine.ReadWrite.All"]);

    // Roles through the admin API.
    for (name, permissions, users, groups) in [
        ("analysts", json!(["ViewData", "AlertsInvestigation"]), json!([]), json!(["soc-analysts"])),
        ("viewers", json!(["ViewData"]), json!(["reader@corp.example"]), json!([])),
        ("admins", json!(["Administrator"]), json!(["boss@corp.example"]), json!([])),
    ] {
        let body = json!({"name": name, "permissions": permissions, "users": users, "groups": groups});
        assert_eq!(put(&server, &format!("/api/admin/roles/{name}"), &admin, &body).await.status(), 200);
    }
    let (status, error) = error_of(
        put(&server, "/api/admin/roles/bad", &admin, &json!({"name": "bad", "permissions": ["Everything"]})).await,
    )
    .await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "InvalidInput"));

    // A tag puts pay-01 into the PCI group; web-01 is in Web; db-01 in no group.
    let tagged =
        server.post_json(&format!("/api/machines/{pci}/tags"), &admin, &json!({"Value": "PCI", "Action": "Add"})).await;
    assert_eq!(tagged.status(), 200);
    let groups = [
        json!({"name": "PCI", "rank": 1, "rules": [{"property": "Tag", "values": ["pci"]}], "userGroups": ["pci-team"]}),
        json!({"name": "Web", "rank": 2, "rules": [{"property": "Name", "values": ["web-*"]}], "userGroups": ["web-team"]}),
    ];
    for group in &groups {
        assert_eq!(server.post_json("/api/admin/devicegroups", &admin, group).await.status(), 201);
    }
    let machine: Value = server.get(&format!("/api/machines/{pci}"), &admin).await.json().await.unwrap();
    assert_eq!(machine["rbacGroupName"], "PCI");
    assert_eq!(machine["machineTags"], json!(["PCI"]));

    // An analyst of the web team: web-01 and the ungrouped db-01, not pay-01.
    let analyst = user_token(&server, "ana@corp.example", ALL_SCOPES, &["soc-analysts", "web-team"]);
    assert_eq!(names(&server, &analyst).await, ["db-01.corp.example", "web-01.corp.example"]);
    assert_eq!(server.collect(&web, &analyst).await.status(), 201);
    let (status, _) = error_of(server.get(&format!("/api/machines/{pci}"), &analyst).await).await;
    assert_eq!(status, 404, "a machine outside the user's groups reads as missing");
    let (status, error) = error_of(server.collect(&pci, &analyst).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (403, "Forbidden"), "acting on it is refused");
    // Actions follow their machines.
    let pci_action: Value = server.collect(&pci, &admin).await.json().await.unwrap();
    let pci_id = pci_action["id"].as_str().unwrap();
    let (status, _) = error_of(server.get(&format!("/api/machineactions/{pci_id}"), &analyst).await).await;
    assert_eq!(status, 404);
    let listed: Value = server.get("/api/machineactions", &analyst).await.json().await.unwrap();
    assert!(listed["value"].as_array().unwrap().iter().all(|a| a["machineId"] == web.as_str()), "{listed}");
    let (status, _) =
        error_of(server.post_json(&format!("/api/machineactions/{pci_id}/cancel"), &analyst, &json!({})).await).await;
    assert_eq!(status, 403);

    // The token's delegated permission is needed too.
    let read_only_token = user_token(&server, "ana@corp.example", "Machine.Read", &["soc-analysts", "web-team"]);
    let (status, error) = error_of(server.collect(&web, &read_only_token).await).await;
    assert_eq!(status, 403);
    assert!(error["message"].as_str().unwrap().contains("Machine.CollectForensics"));

    // A viewer may read what it sees but not collect; no role at all, nothing.
    let viewer = user_token(&server, "reader@corp.example", ALL_SCOPES, &[]);
    assert_eq!(names(&server, &viewer).await, ["db-01.corp.example"]);
    let (status, error) = error_of(server.collect(&_db, &viewer).await).await;
    assert_eq!(status, 403);
    assert!(error["message"].as_str().unwrap().contains("AlertsInvestigation"));
    let nobody = user_token(&server, "nobody@corp.example", ALL_SCOPES, &["web-team"]);
    let (status, _) = error_of(server.get("/api/machines", &nobody).await).await;
    assert_eq!(status, 403, "a user without a role gets nothing");

    // An administrator and an application see everything.
    let boss = user_token(&server, "BOSS@corp.example", ALL_SCOPES, &[]);
    assert_eq!(names(&server, &boss).await.len(), 3);
    assert_eq!(names(&server, &server.token(ALL)).await.len(), 3);

    // Tags move machines between groups: web-01 tagged PCI joins the better-ranked PCI.
    let retag = json!({"Value": "pci", "Action": "Add"});
    assert_eq!(server.post_json(&format!("/api/machines/{web}/tags"), &admin, &retag).await.status(), 200);
    assert_eq!(names(&server, &analyst).await, ["db-01.corp.example"]);
    let untag = json!({"Value": "PCI", "Action": "Remove"});
    assert_eq!(server.post_json(&format!("/api/machines/{web}/tags"), &admin, &untag).await.status(), 200);
    assert_eq!(names(&server, &analyst).await, ["db-01.corp.example", "web-01.corp.example"]);

    // Deleting a group regroups its machines (pay-01 becomes ungrouped, visible to all).
    let groups: Value = server.get("/api/admin/devicegroups", &admin).await.json().await.unwrap();
    let pci_group =
        groups["value"].as_array().unwrap().iter().find(|g| g["name"] == "PCI").unwrap()["id"].as_i64().unwrap();
    let deleted = server
        .http
        .delete(format!("{}/api/admin/devicegroups/{pci_group}", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(names(&server, &analyst).await.len(), 3);

    // The ungrouped machines can be kept for some user groups too.
    let restricted = json!({"userGroups": ["ops"]});
    assert_eq!(put(&server, "/api/admin/devicegroups/ungrouped", &admin, &restricted).await.status(), 200);
    assert_eq!(names(&server, &analyst).await, ["web-01.corp.example"]);
    let listed: Value = server.get("/api/admin/devicegroups", &admin).await.json().await.unwrap();
    assert_eq!(listed["ungroupedUserGroups"], json!(["ops"]));

    // The admin API itself needs Casefile.Admin.
    let (status, _) = error_of(server.get("/api/admin/roles", &server.token(ALL)).await).await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_roles_and_device_groups() {
    let server = TestServer::start().await;
    server.seed_machine("web-02.corp.example").await;
    let data = server.dir.path().join("data");
    let run = |args: &[&str]| {
        let out = tokio::task::block_in_place(|| {
            crate::cli::casefile().args(args).arg("--data-dir").arg(&data).output().unwrap()
        });
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["rbac", "role-put", "--name", "web", "--permissions", "ViewData", "--groups", "web-team"]);
    run(&["rbac", "group-create", "--name", "Web", "--rank", "1", "--rule", "Name=web-*", "--user-groups", "web-team"]);
    let groups: Value = serde_json::from_str(&run(&["rbac", "groups", "--json"])).unwrap();
    assert_eq!(groups[0]["name"], "Web");
    let member = user_token(&server, "w@corp.example", ALL_SCOPES, &["web-team"]);
    assert_eq!(names(&server, &member).await, ["web-02.corp.example"]);
    let outsider = user_token(&server, "o@corp.example", ALL_SCOPES, &["other-team"]);
    run(&["rbac", "role-put", "--name", "others", "--permissions", "ViewData", "--groups", "other-team"]);
    assert!(names(&server, &outsider).await.is_empty(), "the Web group is for the web team only");

    let out = tokio::task::block_in_place(|| {
        crate::cli::casefile()
            .args(["rbac", "group-create", "--name", "Bad", "--rank", "0", "--rule", "Colour=red", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap()
    });
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Colour"));
}

#[tokio::test]
async fn concurrent_tag_changes_are_all_kept() {
    let server = TestServer::start().await;
    let machine = server.seed_machine("tagged.example").await;
    let token = server.token(&["Machine.ReadWrite.All", READ]);
    let adds = (0..10).map(|i| {
        let body = json!({"Value": format!("tag-{i}"), "Action": "Add"});
        let (server, token, machine) = (&server, &token, &machine);
        async move { server.post_json(&format!("/api/machines/{machine}/tags"), token, &body).await.status() }
    });
    for status in futures::future::join_all(adds).await {
        assert_eq!(status, 200);
    }
    let got: Value = server.get(&format!("/api/machines/{machine}"), &token).await.json().await.unwrap();
    let mut tags: Vec<String> = serde_json::from_value(got["machineTags"].clone()).unwrap();
    tags.sort();
    assert_eq!(tags, (0..10).map(|i| format!("tag-{i}")).collect::<Vec<_>>());
    let again = json!({"Value": "TAG-3", "Action": "Add"});
    let after: Value =
        server.post_json(&format!("/api/machines/{machine}/tags"), &token, &again).await.json().await.unwrap();
    assert_eq!(after["machineTags"].as_array().unwrap().len(), 10, "a tag differing only in case is the same tag");
}
