//! `casefile store copy` (issue 11): an embedded installation moves to PostgreSQL. A real
//! server on SQLite collects a package with a real agent, stops, the real binary copies
//! its database into PostgreSQL, and a server on the same data directory with
//! `[store] url = postgres://…` serves the same action, package and audit trail.

use std::path::Path;
use std::process::Output;

use casefile_proto::action::ActionStatus;
use casefile_store::AuditFilter;
use serde_json::Value;

use crate::cli::casefile;
use crate::support::*;

fn copy(from: &str, to: &str) -> Output {
    casefile().args(["store", "copy", "--from", from, "--to", to]).env("RUST_LOG", "warn").output().unwrap()
}

async fn copy_async(from: String, to: String) -> Output {
    tokio::task::spawn_blocking(move || copy(&from, &to)).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sqlite_url(data: &Path) -> String {
    format!("sqlite://{}", data.join("casefile.db").display())
}

#[tokio::test]
async fn an_embedded_installation_moves_to_postgres_and_serves_the_same_records() {
    if sqlite_only("copying out of the SQLite store") {
        return;
    }
    let Some(target) = casefile_testkit::pg::database() else { return };
    let server = TestServer::start().await;
    let data = server.dir.path().join("data");
    let Collected { mut agent, id, url, .. } = server.succeeded_collection("copy-host").await;
    let original = server.http.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert!(!original.is_empty());
    agent.stop().await;
    // More than two batches of 500 rows, with details PostgreSQL's jsonb would refuse
    // (`\u0000`) or reorder: the trail must arrive as written.
    for i in 0..1100 {
        let entry = casefile_store::AuditEntry {
            at: chrono::Utc::now(),
            tenant_id: Some("default".into()),
            actor_kind: "user".into(),
            actor: format!("analyst-{i}@example.com"),
            event: "e2e.bulk".into(),
            target: (i % 2 == 0).then(|| format!("target-{i}")),
            outcome: "ok".into(),
            http_status: Some(200),
            source_ip: None,
            correlation_id: None,
            detail: Some(serde_json::json!({"z": i, "a": "nul\u{0}byte", "nested": {"b": [1, 2.5, null]}})),
        };
        server.server().state().store.append_audit(&entry).await.unwrap();
    }
    let everything = AuditFilter { limit: 10_000, ..Default::default() };
    let trail = server.server().state().store.audit(&everything).await.unwrap();
    assert!(trail.len() > 3, "{trail:?}");
    let last_seq = trail.last().unwrap().seq;
    let dir = server.stop_keeping_dir().await;

    // While a server holds the data directory, nothing is copied.
    let held = casefile_server::admin::DataDirLock::acquire(&data).unwrap();
    let out = copy_async(sqlite_url(&data), target.url.clone()).await;
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("stop it first"), "{}", text(&out.stderr));
    drop(held);

    // Wrong directions and a missing source are refused with a reason.
    let out = copy_async(target.url.clone(), sqlite_url(&data)).await;
    assert!(!out.status.success() && text(&out.stderr).contains("sqlite://"), "{}", text(&out.stderr));
    let out = copy_async(sqlite_url(&data.join("nowhere")), target.url.clone()).await;
    assert!(!out.status.success() && text(&out.stderr).contains("no SQLite database"), "{}", text(&out.stderr));

    let out = copy_async(sqlite_url(&data), target.url.clone()).await;
    let printed = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", printed, text(&out.stderr));
    let row = |table: &str| -> Vec<String> {
        let line = printed.lines().find(|l| l.split_whitespace().next() == Some(table)).expect(table);
        line.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(row("machine_actions")[1], "1", "{printed}");
    assert_eq!(row("packages")[1], "1", "{printed}");
    assert_eq!(row("machines")[1], "1", "{printed}");
    assert_eq!(row("audit_log")[1], trail.len().to_string(), "{printed}");
    let sampled: usize = row("audit_log")[2].parse().unwrap();
    assert!(sampled >= trail.len().min(20), "first, last and a spread: {printed}");
    assert!(printed.contains("identical"), "{printed}");
    assert!(!printed.contains("rate_limit_windows"), "scratch counters are not copied: {printed}");

    // The same records, served from PostgreSQL on the same data directory (packages stay
    // in it).
    let pg_url = target.url.clone();
    let server = TestServer::start_in_with(dir, |c| c.store.url = Some(pg_url)).await;
    assert_eq!(server.action(&id).await.status, ActionStatus::Succeeded);
    let copied = server.server().state().store.audit(&everything).await.unwrap();
    assert_eq!(copied[..trail.len()], trail[..], "the audit trail, sequence numbers and all");
    let token = server.token(ALL);
    let link: Value =
        server.get(&format!("/api/machineactions/{id}/getPackageUri"), &token).await.json().await.unwrap();
    let fresh = link["value"].as_str().unwrap();
    assert_ne!(fresh, url);
    let downloaded = server.http.get(fresh).send().await.unwrap();
    assert_eq!(downloaded.status(), 200);
    assert_eq!(downloaded.bytes().await.unwrap(), original, "byte-identical");
    // New entries continue the sequence past the copied ones.
    let after = server.server().state().store.audit(&everything).await.unwrap();
    assert!(after.len() > trail.len());
    assert!(after[trail.len()..].iter().all(|r| r.seq > last_seq), "{:?}", &after[trail.len()..]);
    // A new collection works on the copied machine.
    let mut agent = server.start_agent("copy-host-2").await;
    let created: Value = server.collect(&agent.identity.machine_id, &token).await.json().await.unwrap();
    let second = server.wait_final(created["id"].as_str().unwrap()).await;
    assert_eq!(second.status, ActionStatus::Succeeded, "{:?}", second.troubleshoot_info);
    agent.stop().await;
    let dir = server.stop_keeping_dir().await;
    let data = dir.path().join("data");

    // A second copy into the now-used target is refused, naming a table with rows, and
    // writes nothing.
    let out = copy_async(sqlite_url(&data), target.url.clone()).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not empty: table signing_keys has rows"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn a_target_with_rows_is_refused_and_left_as_it_was() {
    if sqlite_only("copying out of the SQLite store") {
        return;
    }
    let Some(target) = casefile_testkit::pg::database() else { return };
    // A PostgreSQL database some server already used: it has keys, machines and actions.
    let pg_url = target.url.clone();
    let used = TestServer::start_with(|c| c.store.url = Some(pg_url)).await;
    let collected = used.succeeded_collection("pg-host").await;
    let before = used.server().state().store.audit(&AuditFilter { limit: 10_000, ..Default::default() }).await.unwrap();

    let source = TestServer::start().await;
    source.succeeded_collection("sqlite-host").await.agent.stop().await;
    let dir = source.stop_keeping_dir().await;
    let out = copy_async(sqlite_url(&dir.path().join("data")), target.url.clone()).await;
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let why = text(&out.stderr);
    assert!(why.contains("not empty") && why.contains("has rows") && why.contains("nothing was written"), "{why}");
    let after = used.server().state().store.audit(&AuditFilter { limit: 10_000, ..Default::default() }).await.unwrap();
    assert_eq!(before, after);
    assert_eq!(used.action(&collected.id).await.status, ActionStatus::Succeeded);
}

/// `kill -9` of `casefile store copy` half-way through: the copy is one transaction on
/// the target, so PostgreSQL rolls it back when the dead client's session ends; the target
/// is as empty as before, and the same copy run again completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_killed_half_way_leaves_the_target_empty_and_runs_again() {
    if sqlite_only("copying out of the SQLite store") {
        return;
    }
    let Some(target) = casefile_testkit::pg::database() else { return };
    let source = TestServer::start().await;
    source.succeeded_collection("kill-host").await.agent.stop().await;
    let dir = source.stop_keeping_dir().await;
    let data = dir.path().join("data");
    // Enough audit rows (hundreds of batches) that the copy is caught in the middle.
    let sqlite = sqlx::SqlitePool::connect(&sqlite_url(&data)).await.unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
         INSERT INTO audit_log (at, tenant_id, actor_kind, actor, event, outcome, detail) \
         SELECT (SELECT max(at) FROM audit_log), 'default', 'user', 'analyst-' || i, 'e2e.bulk', 'ok', \
                '{\"i\":' || i || '}' FROM n",
    )
    .execute(&sqlite)
    .await
    .unwrap();
    let in_source: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(&sqlite).await.unwrap();
    sqlite.close().await;

    let child = casefile()
        .args(["store", "copy", "--from", &sqlite_url(&data), "--to", &target.url])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = casefile_testkit::KillOnDrop(child);
    // Sessions are named `casefile/<pid>/<random>`.
    let session = format!("casefile/{}/%", child.0.id());
    let watcher = sqlx::PgPool::connect(&target.url).await.unwrap();
    let copying = |query: &'static str| {
        let (watcher, session) = (watcher.clone(), session.clone());
        async move { sqlx::query_scalar::<_, i64>(query).bind(session).fetch_one(&watcher).await.unwrap() }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // Its session is inserting audit rows: the transaction holds part of the copy.
    while copying(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1 AND query LIKE 'INSERT INTO audit_log%'",
    )
    .await
        == 0
    {
        assert!(child.0.try_wait().unwrap().is_none(), "the copy ended before it could be killed");
        assert!(std::time::Instant::now() < deadline, "the copy never reached the audit rows");
        tokio::task::yield_now().await;
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // The database notices the closed socket, ends the session and rolls back.
    while copying("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1").await > 0 {
        assert!(std::time::Instant::now() < deadline, "the killed copy's session lingers");
        tokio::task::yield_now().await;
    }
    for table in ["signing_keys", "machines", "machine_actions", "packages", "audit_log"] {
        // `table` is one of the names above.
        let count = sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"));
        let rows: i64 = sqlx::query_scalar(count).fetch_one(&watcher).await.unwrap();
        assert_eq!(rows, 0, "{table}: nothing of the killed copy remains");
    }
    watcher.close().await;

    let out = copy_async(sqlite_url(&data), target.url.clone()).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let watcher = sqlx::PgPool::connect(&target.url).await.unwrap();
    let in_target: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log").fetch_one(&watcher).await.unwrap();
    assert_eq!(in_target, in_source, "every audit row, once");
}
