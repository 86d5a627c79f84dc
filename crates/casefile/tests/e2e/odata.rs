//! OData on the list endpoints, with the query strings real MDE clients send: every
//! filter operator, the spelling quirks, ordering, counting, projection and paging.

use casefile_proto::action::{ActionStatus, ActionType};
use casefile_proto::time::Timestamp;
use serde_json::Value;

use crate::support::*;

fn t0() -> Timestamp {
    "2026-01-01T00:00:00Z".parse().unwrap()
}

fn hours(n: i64) -> Timestamp {
    t0() + chrono::Duration::hours(n)
}

/// Five actions on three machines, one hour apart (a1 oldest).
struct Seeded {
    server: TestServer,
    token: String,
    m1: String,
    m2: String,
    a: Vec<String>,
}

/// A server whose lifecycle never ends the seeded live actions (they were created long ago).
async fn patient_server() -> TestServer {
    TestServer::start_with(|c| {
        c.agents.pending_timeout_seconds = u64::MAX;
        c.agents.max_collection_seconds = u64::MAX;
        c.agents.silent_timeout_seconds = u64::MAX;
    })
    .await
}

async fn seeded() -> Seeded {
    let server = patient_server().await;
    let m1 = server.seed_machine("alpha.example").await;
    let m2 = server.seed_machine("beta.example").await;
    let m3 = server.seed_machine("alphabet.example").await;
    use ActionStatus::*;
    use ActionType::*;
    let rows = [
        (&m1, Succeeded, CollectInvestigationPackage, "Analyst@contoso.com"),
        (&m1, Failed, CollectInvestigationPackage, "automation"),
        (&m2, Pending, CollectInvestigationPackage, "Analyst@contoso.com"),
        (&m2, Cancelled, RunAntiVirusScan, "automation"),
        (&m3, InProgress, CollectInvestigationPackage, "analyst@contoso.com"),
    ];
    let mut a = Vec::new();
    for (i, (machine, status, kind, requestor)) in rows.into_iter().enumerate() {
        a.push(server.seed_action(machine, status, kind, requestor, hours(i as i64)).await);
    }
    let token = server.token(ALL);
    Seeded { server, token, m1, m2, a }
}

impl Seeded {
    async fn body(&self, path: &str) -> Value {
        let response = self.server.get(path, &self.token).await;
        assert_eq!(response.status(), 200, "{path}: {}", response.text().await.unwrap());
        response.json().await.unwrap()
    }

    /// The ids a list answers, in order.
    async fn ids(&self, path: &str) -> Vec<String> {
        let body = self.body(path).await;
        body["value"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_owned()).collect()
    }

    /// The seeded actions with these indexes (1-based), newest first.
    fn newest_first(&self, which: &[usize]) -> Vec<String> {
        let mut picked: Vec<usize> = which.to_vec();
        picked.sort_unstable_by(|a, b| b.cmp(a));
        picked.into_iter().map(|i| self.a[i - 1].clone()).collect()
    }
}

#[tokio::test]
async fn every_filter_operator_and_client_quirk_is_understood() {
    let s = seeded().await;
    let (m1, m2) = (s.m1.clone(), s.m2.clone());
    let cases: Vec<(String, Vec<usize>)> = vec![
        ("".into(), vec![1, 2, 3, 4, 5]),
        (format!("$filter=machineId eq '{m1}'&$top=2"), vec![1, 2]),
        (format!("$filter=machineId+eq+'{m1}'"), vec![1, 2]),
        (format!("$filter=machineId eq '{}'", m1.to_uppercase()), vec![1, 2]),
        ("$filter=requestor eq 'Analyst@contoso.com' and type eq 'RunAntiVirusScan'".into(), vec![]),
        ("$filter=requestor eq 'automation' and type eq 'RunAntiVirusScan'".into(), vec![4]),
        ("$filter=requestor eq 'analyst@CONTOSO.com'".into(), vec![1, 3, 5]),
        ("$filter=requestor in ('ANALYST@contoso.com','nobody')".into(), vec![1, 3, 5]),
        ("$filter=Status eq 'Pending' AND Type eq 'CollectInvestigationPackage'".into(), vec![3]),
        (format!("$filter=machineId eq '{m2}'and type eq 'CollectInvestigationPackage'"), vec![3]),
        ("$filter=status ne 'Succeeded'".into(), vec![2, 3, 4, 5]),
        ("$filter=creationDateTimeUtc gt 2026-01-01T02:00:00Z".into(), vec![4, 5]),
        ("$filter=creationDateTimeUtc ge 2026-01-01T02:00:00Z".into(), vec![3, 4, 5]),
        ("$filter=creationDateTimeUtc lt 2026-01-01T01:00:00.000Z".into(), vec![1]),
        ("$filter=creationDateTimeUtc le '2026-01-01T01:00:00Z'".into(), vec![1, 2]),
        ("$filter=creationDateTimeUtc ge 2026-01-01T03:00:00+01:00".into(), vec![3, 4, 5]),
        ("$filter=status in ('Pending','InProgress')".into(), vec![3, 5]),
        ("$filter=startswith(computerDnsName,'alpha')".into(), vec![1, 2, 5]),
        ("$filter=not (status eq 'Failed')".into(), vec![1, 3, 4, 5]),
        (format!("$filter=(status eq 'Failed' or status eq 'Cancelled') and machineId eq '{m2}'"), vec![4]),
        ("$filter=(status eq 'Failed')or(status eq 'Cancelled')".into(), vec![2, 4]),
        (format!("$filter=id eq {}", s.a[2].to_uppercase()), vec![3]),
        ("$filter=cancellationRequestor eq null and status eq 'Pending'".into(), vec![3]),
    ];
    for (query, expected) in cases {
        let got = s.ids(&format!("/api/machineactions?{query}")).await;
        assert_eq!(got, s.newest_first(&expected), "{query}");
    }
    // The same under the versioned prefix, with a trailing slash.
    let got = s.ids("/api/v1.0/machineactions/?$filter=status eq 'Failed'").await;
    assert_eq!(got, s.newest_first(&[2]));
}

#[tokio::test]
async fn ordering_counting_projection_and_machine_scoped_lists() {
    let s = seeded().await;
    let ascending = s.ids("/api/machineactions?$orderby=creationDateTimeUtc asc").await;
    assert_eq!(ascending, s.a);
    let by_status = s.ids("/api/machineactions?$orderby=status desc,creationDateTimeUtc&$top=2").await;
    assert_eq!(by_status, vec![s.a[0].clone(), s.a[2].clone()], "Succeeded, then the Pending one");

    let page = s.body("/api/machineactions?$count=true&$top=2&$skip=1").await;
    assert_eq!(page["@odata.count"], 5);
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
    let next = page["@odata.nextLink"].as_str().unwrap();
    assert!(next.starts_with(&format!("{}/api/machineactions?", s.server.base)), "{next}");
    assert!(next.contains("%24skip=3") || next.contains("$skip=3"), "{next}");

    let counted_only = s.body("/api/machineactions?$top=0&$count=true").await;
    assert_eq!((counted_only["@odata.count"].as_u64(), counted_only["value"].as_array().unwrap().len()), (Some(5), 0));
    assert!(counted_only.get("@odata.nextLink").is_none(), "no endless chain of empty pages");

    let projected = s.body("/api/machineactions?$select=id,Status&$filter=status eq 'Failed'").await;
    assert_eq!(projected["@odata.context"], format!("{}/api/$metadata#MachineActions(id,status)", s.server.base));
    let row = projected["value"][0].as_object().unwrap();
    assert_eq!(row.keys().collect::<Vec<_>>(), ["id", "status"]);
    assert_eq!(row["status"], "Failed");

    let of_machine = s.ids(&format!("/api/machines/{}/machineactions?$filter=status eq 'Cancelled'", s.m2)).await;
    assert_eq!(of_machine, s.newest_first(&[4]));
    let by_name = s.ids("/api/machines/BETA.example/MachineActions").await;
    assert_eq!(by_name, s.newest_first(&[3, 4]));
    let (status, error) = error_of(s.server.get("/api/machines/nope/machineactions", &s.token).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (404, "ResourceNotFound"));
}

#[tokio::test]
async fn machine_lists_filter_on_stored_computed_and_constant_properties() {
    let s = seeded().await;
    let names = |body: Value| -> Vec<String> {
        let mut names: Vec<String> = body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["computerDnsName"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let all = ["alpha.example", "alphabet.example", "beta.example"];
    let cases: &[(&str, &[&str])] = &[
        ("$filter=startswith(computerDnsName,'alpha')", &["alpha.example", "alphabet.example"]),
        ("$filter=computerDnsName eq 'BETA.example'", &["beta.example"]),
        ("$filter=healthStatus eq 'Active'", &all),
        ("$filter=healthStatus ne 'Active'", &[]),
        ("$filter=healthStatus in ('Inactive','Active')", &all),
        ("$filter=onboardingStatus eq 'Onboarded' and osPlatform eq 'linux'", &all),
        ("$filter=riskScore eq 'High'", &[]),
        ("$filter=riskScore eq null and exposureLevel ne 'High'", &all),
        ("$filter=lastSeen gt 2099-01-01Z", &[]),
        ("$filter=lastSeen gt 2020-01-01", &all),
        ("$filter=machineTags/any(tag: tag eq 'Test Tag')", &[]),
        ("$filter=computerDnsName in ('BETA.EXAMPLE')", &["beta.example"]),
    ];
    for (query, expected) in cases {
        assert_eq!(names(s.body(&format!("/api/machines?{query}")).await), *expected, "{query}");
    }
    // A long list of the two health states stays a short query.
    let many = vec!["'Active'"; 1000].join(",");
    assert_eq!(names(s.body(&format!("/api/machines?$filter=healthStatus in ({many})")).await), all);
    let counted = s.body("/api/machines?$count=true&$top=1&$orderby=computerDnsName").await;
    assert_eq!(counted["@odata.count"], 3);
    assert_eq!(counted["value"][0]["computerDnsName"], "alpha.example");
    assert!(counted["@odata.nextLink"].is_string());
}

#[tokio::test]
async fn invalid_queries_get_an_odata_error_that_names_the_problem() {
    let s = seeded().await;
    let cases = [
        ("$filter=colour eq 'red'", "colour"),
        ("$filter=status eq 'Done'", "Done"),
        ("$filter=status eq", "literal"),
        ("$filter=statuseq 'Pending'", "statuseq"),
        ("$filter=(status eq 'Pending'", ")"),
        ("$filter=creationDateTimeUtc gt 'yesterday'", "yesterday"),
        ("$filter=requestorComment eq 'x'", "requestorComment"),
        ("$orderby=nothing desc", "nothing"),
        ("$select=id,nothing", "nothing"),
        ("$top=10001", "10000"),
        ("$top=-1", "$top"),
        ("$skip=many", "$skip"),
        ("$count=maybe", "$count"),
        ("$expand=machine", "$expand"),
        ("$filter=status eq 'Pending'&$filter=status eq 'Failed'", "$filter"),
    ];
    for (query, named) in cases {
        let (status, error) = error_of(s.server.get(&format!("/api/machineactions?{query}"), &s.token).await).await;
        assert_eq!((status, error["code"].as_str().unwrap()), (400, "ODataError"), "{query}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(named), "{query}: '{message}' should name '{named}'");
    }
    let (status, error) =
        error_of(s.server.get("/api/machines?$filter=healthStatus gt 'Active'", &s.token).await).await;
    assert_eq!((status, error["code"].as_str().unwrap()), (400, "ODataError"));
}

#[tokio::test]
async fn next_links_page_through_thousands_of_actions_exactly_once() {
    let server = patient_server().await;
    let machine = server.seed_machine("busy.example").await;
    const SUCCEEDED: usize = 2_500;
    for i in 0..SUCCEEDED {
        let created = t0() + chrono::Duration::seconds(i as i64);
        server
            .seed_action(&machine, ActionStatus::Succeeded, ActionType::CollectInvestigationPackage, "a", created)
            .await;
    }
    // Failed ones interleave with them and must never appear in the filtered pages.
    for i in 0..10 {
        let created = t0() + chrono::Duration::milliseconds(i * 250_500);
        server.seed_action(&machine, ActionStatus::Failed, ActionType::CollectInvestigationPackage, "a", created).await;
    }
    let token = server.token(ALL);
    let mut url = format!("{}/api/machineactions?$filter=status eq 'Succeeded'&$top=1000&$count=true", server.base);
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut pages = 0;
    loop {
        let response = server.http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let page: Value = response.json().await.unwrap();
        pages += 1;
        assert_eq!(page["@odata.count"], SUCCEEDED, "the count is of every match, on every page");
        for action in page["value"].as_array().unwrap() {
            assert_eq!(action["status"], "Succeeded");
            seen.push((
                action["creationDateTimeUtc"].as_str().unwrap().to_owned(),
                action["id"].as_str().unwrap().to_owned(),
            ));
        }
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), SUCCEEDED);
    let unique: std::collections::HashSet<_> = seen.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), SUCCEEDED, "no action twice");
    assert!(seen.windows(2).all(|w| w[0].0 > w[1].0), "newest first across pages");
}
