//! Packages in an S3-compatible bucket (issue 11), against a real one: moto's server on a
//! free port (`casefile_testkit::s3`). Collections land in the bucket, downloads stream
//! from it or redirect to it, retention deletes from it, large packages go up in parts,
//! and no upload that failed, was cut or was cancelled leaves an object or a pending
//! multipart upload behind.

use std::time::Duration;

use casefile_package::corpus::{self, RawEntry};
use casefile_package::writer::PackageMeta;
use casefile_proto::ActionStatus;
use casefile_proto::agent::AgentTask;
use casefile_server::ServerConfig;
use casefile_server::blobs::{Blobs, Staged};
use casefile_testkit::s3::S3Server;
use ed25519_dalek::SigningKey;
use futures::StreamExt as _;
use serde_json::Value;
use sha2::Digest as _;

use crate::agent::RawAgent;
use crate::cli::casefile;
use crate::support::*;

const PREFIX: &str = "evidence";
const DAY: Duration = Duration::from_secs(24 * 3600);
/// Longest wait for moto to show a change another task makes.
const SETTLE: Duration = Duration::from_secs(60);

/// The configuration tweak that stores packages in `moto`'s bucket below [`PREFIX`].
fn in_bucket(moto: &S3Server, redirect: bool) -> impl FnOnce(&mut ServerConfig) + use<> {
    let (url, endpoint, env) = (moto.url(PREFIX), moto.endpoint(), moto.aws_env());
    move |c| {
        c.blobs.url = Some(url);
        c.blobs.endpoint = Some(endpoint);
        c.blobs.allow_http = true;
        c.blobs.aws_env = Some(env);
        c.blobs.redirect_downloads = redirect;
    }
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// `len` bytes that do not compress (SHA-256 in counter mode).
fn incompressible(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        out.extend_from_slice(&sha2::Sha256::digest(counter.to_le_bytes()));
        counter += 1;
    }
    out.truncate(len);
    out
}

/// The stored package record of an action.
async fn package_of(server: &TestServer, id: &str) -> casefile_store::PackageRecord {
    server
        .server()
        .state()
        .store
        .package(&casefile_proto::TenantId::default_tenant(), id.parse().unwrap())
        .await
        .unwrap()
        .unwrap()
}

/// The bucket key of an action's stored package.
async fn key_of(server: &TestServer, id: &str) -> String {
    format!("{PREFIX}/{}", package_of(server, id).await.blob_key)
}

/// Waits until `done` holds for what moto reports (another task changes the bucket).
async fn settle(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !tokio::task::block_in_place(&mut done) {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {SETTLE:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_collects_into_the_bucket_and_the_link_streams_it_back() {
    let Some(moto) = S3Server::start() else { return };
    let server = TestServer::start_with(in_bucket(&moto, false)).await;
    let Collected { mut agent, id, url, .. } = server.succeeded_collection("bucketed").await;
    agent.stop().await;

    let key = key_of(&server, &id).await;
    assert_eq!(moto.keys(""), std::slice::from_ref(&key), "the package, and nothing else, is in the bucket");
    assert!(moto.pending_uploads().is_empty());
    assert!(!server.dir.path().join("data/packages").exists(), "nothing is stored locally");
    let stored = moto.object(&key).unwrap();

    let response = server.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let announced = response.headers()["x-casefile-sha256"].to_str().unwrap().to_owned();
    let downloaded = response.bytes().await.unwrap();
    assert_eq!(&downloaded[..], &stored[..], "byte for byte what the bucket holds");
    assert_eq!(sha256(&downloaded), announced);

    // Readiness writes and removes a probe object in the bucket.
    let ready = server.http.get(format!("{}/readyz", server.base)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(moto.keys(""), [key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redirect_downloads_the_link_answers_a_short_lived_presigned_url_and_is_audited() {
    let Some(moto) = S3Server::start() else { return };
    let server = TestServer::start_with(in_bucket(&moto, true)).await;
    let Collected { mut agent, id, url, .. } = server.succeeded_collection("redirected").await;
    agent.stop().await;
    let key = key_of(&server, &id).await;
    let stored = moto.object(&key).unwrap();

    let manual = server.client_builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = manual.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.origin(), url::Url::parse(&moto.endpoint()).unwrap().origin(), "{location}");
    assert_eq!(location.path(), format!("/{}/{key}", moto.bucket));
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["X-Amz-Expires"], "60", "blobs.redirect_ttl_seconds, the default");
    assert!(query.contains_key("X-Amz-Signature") && query.contains_key("X-Amz-Date"), "{location}");
    // Signed into the URL, so S3 names the file as the link does (moto ignores it).
    assert_eq!(query["response-content-disposition"], "attachment; filename=\"WDATP_Investigation_Package.zip\"");
    let direct = reqwest::get(location.as_str()).await.unwrap();
    assert_eq!(direct.status(), 200);
    assert_eq!(&direct.bytes().await.unwrap()[..], &stored[..]);

    // A client that follows redirects (as MDE scripts do) gets the bytes in one call.
    let followed = server.http.get(&url).send().await.unwrap();
    assert_eq!(followed.status(), 200);
    assert_eq!(&followed.bytes().await.unwrap()[..], &stored[..]);

    // A link about to expire never yields a presigned URL that outlives it.
    let package = package_of(&server, &id).await;
    let link = casefile_server::links::Link {
        tenant: "default",
        action: package.action_id,
        sha256: &package.sha256,
        requestor: "e2e tests",
    };
    let expires = chrono::Utc::now().timestamp() + 5;
    let short =
        casefile_server::links::issue_until(&server.server().state().keyring, &server.base, &link, expires).unwrap();
    let response = manual.get(&short).send().await.unwrap();
    assert_eq!(response.status(), 307);
    let location = url::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
    let seconds: u64 = location.query_pairs().find(|(k, _)| k == "X-Amz-Expires").unwrap().1.parse().unwrap();
    assert!((1..=5).contains(&seconds), "{seconds}");

    // Every download through the link, redirected or not, is in the trail.
    let filter =
        casefile_store::AuditFilter { event: Some("package.download".to_owned()), limit: 100, ..Default::default() };
    let trail = server.server().state().store.audit(&filter).await.unwrap();
    assert_eq!(trail.len(), 3, "{trail:?}");
    for record in &trail {
        assert_eq!(record.entry.outcome, "ok");
        assert_eq!(record.entry.http_status, Some(307));
        assert_eq!(record.entry.actor_kind, "link");
        assert_eq!(record.entry.detail.as_ref().unwrap()["redirect"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_the_object_from_the_bucket() {
    let Some(moto) = S3Server::start() else { return };
    let server = TestServer::start_with_clock(in_bucket(&moto, false)).await;
    let Collected { mut agent, id, url, .. } = server.succeeded_collection("expiring").await;
    agent.stop().await;
    let key = key_of(&server, &id).await;
    assert_eq!(moto.keys(""), std::slice::from_ref(&key));

    server.advance(30 * DAY - Duration::from_secs(1));
    server.server().sweep_now().await.unwrap();
    assert_eq!(moto.keys(""), [key], "kept until the retention ends");

    server.advance(Duration::from_secs(2));
    assert_eq!(server.server().sweep_now().await.unwrap().packages_deleted, 1);
    assert!(moto.keys("").is_empty(), "the object is gone from the bucket");
    let (status, _) = error_of(server.http.get(&url).send().await.unwrap()).await;
    assert_eq!(status, 404);
}

/// 12 MiB of incompressible data: three parts of 5 MiB, 5 MiB and 2 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_larger_than_one_part_round_trips_byte_identical() {
    let Some(moto) = S3Server::start() else { return };
    let server = TestServer::start_with(in_bucket(&moto, false)).await;
    let machine = server.seed_machine("large.example").await;
    let mut meta = PackageMeta::detached("s3");
    meta.host.machine_id = Some(machine.clone());
    let files = vec![RawEntry::file("Large/random.bin", &incompressible(12 << 20))];
    let package = corpus::signed_with(&SigningKey::from_bytes(&[3; 32]), &meta, files, vec![]);
    assert!(package.len() > 12 << 20);

    let response = server
        .http
        .post(format!("{}/api/machines/{machine}/importInvestigationPackage", server.base))
        .bearer_auth(server.token(ALL))
        .header("content-type", "application/zip")
        .header("x-casefile-sha256", sha256(&package))
        .body(package.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = created["id"].as_str().unwrap();

    let key = key_of(&server, id).await;
    assert_eq!(moto.keys(""), std::slice::from_ref(&key));
    assert!(moto.pending_uploads().is_empty());
    assert_eq!(moto.object(&key).unwrap(), package, "the bucket holds the package whole");
    let link: Value =
        server.get(&format!("/api/machineactions/{id}/getPackageUri"), &server.token(ALL)).await.json().await.unwrap();
    let downloaded = server.http.get(link["value"].as_str().unwrap()).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(sha256(&downloaded), sha256(&package));
}

/// An agent's upload cut mid-body leaves nothing in the bucket; its retry is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_mid_body_leaves_no_object_and_no_pending_upload() {
    let Some(moto) = S3Server::start() else { return };
    let server = TestServer::start_with(in_bucket(&moto, false)).await;
    let key = SigningKey::from_bytes(&[5; 32]);
    let agent = RawAgent::enroll_with_key(&server, "cut", Some(&key)).await;
    let created = server.collect(&agent.machine_id, &server.token(ALL)).await;
    assert_eq!(created.status(), 201);
    let action = match agent.poll(0).await {
        Some(AgentTask::CollectInvestigationPackage { action_id, .. }) => action_id,
        other => panic!("expected the collection, got {other:?}"),
    };
    let mut meta = PackageMeta::detached("s3");
    meta.action_id = Some(action);
    meta.host.machine_id = Some(agent.machine_id.clone());
    let files = vec![RawEntry::file("Large/random.bin", &incompressible(8 << 20))];
    let package = corpus::signed_with(&key, &meta, files, vec![]);

    // Half the body, then the sender fails: the connection is cut mid-body.
    let half = package[..package.len() / 2].to_vec();
    let body = futures::stream::iter([Ok::<_, std::io::Error>(half)])
        .chain(futures::stream::iter([Err(std::io::Error::other("the agent's disk failed"))]));
    let cut = agent
        .http
        .put(format!("{}/agent/v1/actions/{action}/package", agent.base))
        .bearer_auth(&agent.credential)
        .header("x-casefile-sha256", sha256(&package))
        .header("content-length", package.len())
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await;
    assert!(cut.is_err(), "the upload was cut: {cut:?}");
    // The server has dropped the cut body once its staging area is empty again.
    let staging = server.dir.path().join("data/incoming");
    settle("the cut upload's staging file removed", || std::fs::read_dir(&staging).unwrap().next().is_none()).await;
    assert!(moto.keys("").is_empty(), "nothing visible under any key");
    assert!(moto.pending_uploads().is_empty(), "no multipart upload started");
    assert_eq!(server.action(&action.to_string()).await.status, ActionStatus::InProgress, "open for the retry");

    let retry = agent.upload(&action.to_string(), package.clone(), &sha256(&package)).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(server.action(&action.to_string()).await.status, ActionStatus::Succeeded);
    let stored = key_of(&server, &action.to_string()).await;
    assert_eq!(moto.keys(""), std::slice::from_ref(&stored), "stored once");
    assert_eq!(moto.object(&stored).unwrap(), package);
    assert!(moto.pending_uploads().is_empty());
}

/// A publish that fails between parts, and one whose task is cancelled mid-upload, abort
/// their multipart uploads: no parts stay in the bucket and nothing appears under the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_cancelled_multipart_publish_is_aborted() {
    let Some(moto) = S3Server::start() else { return };
    let server = TestServer::start_with(in_bucket(&moto, false)).await;
    let blobs = server.server().state().blobs.clone();
    let scratch = server.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();

    // Reading the staged "file" fails after the multipart upload was created (it is a
    // directory: opening works, reading does not).
    let key = Blobs::package_key("default", uuid::Uuid::new_v4());
    let unreadable = Staged { path: scratch.clone(), size: 12 << 20, sha256: String::new() };
    let failed = blobs.publish(unreadable, &key).await;
    assert!(failed.is_err());
    assert!(moto.pending_uploads().is_empty(), "aborted: {:?}", moto.pending_uploads());
    assert!(moto.keys("").is_empty());

    // A publish whose task is dropped while its first part is still being read (from a
    // FIFO the test feeds): the multipart upload exists, then is aborted.
    let fifo = scratch.join("staged.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let (release, released) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            use std::io::Write as _;
            let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            // The publish may be aborted before it read all of it: a closed pipe is expected.
            let _ = pipe.write_all(&incompressible(1 << 20));
            let _ = released.recv();
        }
    });
    let key = Blobs::package_key("default", uuid::Uuid::new_v4());
    let staged = Staged { path: fifo, size: 12 << 20, sha256: String::new() };
    let publishing = tokio::spawn({
        let (blobs, key) = (blobs.clone(), key.clone());
        async move { blobs.publish(staged, &key).await }
    });
    settle("the multipart upload created", || moto.pending_uploads().len() == 1).await;
    publishing.abort();
    assert!(publishing.await.unwrap_err().is_cancelled());
    settle("the cancelled multipart upload aborted", || moto.pending_uploads().is_empty()).await;
    assert!(moto.keys("").is_empty(), "nothing under the key");
    release.send(()).unwrap();
    writer.join().unwrap();
}

/// Blob settings that cannot work are refused by `config check` (and so by `server`),
/// naming the setting; credentials never appear in the printed configuration.
#[test]
fn bad_blob_settings_are_refused_with_clear_messages() {
    let check = |env: &[(&str, &str)]| {
        let mut command = casefile();
        command.args(["config", "check", "--data-dir", "/srv/casefile"]);
        for (k, v) in env {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    for (env, expected) in [
        (vec![("CASEFILE_BLOBS__URL", "ftp://bucket/x")], "unknown scheme 'ftp'"),
        (vec![("CASEFILE_BLOBS__URL", "s3:///prefix")], "names no bucket"),
        (vec![("CASEFILE_BLOBS__URL", "s3://Bad_Bucket/x")], "not a valid bucket name"),
        (vec![("CASEFILE_BLOBS__URL", "s3://bucket/a/../b")], "'..'"),
        (vec![("CASEFILE_BLOBS__URL", "s3://bucket/a//b")], "empty"),
        (vec![("CASEFILE_BLOBS__URL", "file://relative/dir")], "names a host"),
        (vec![("CASEFILE_BLOBS__URL", "not a url")], "blobs.url"),
        (
            vec![("CASEFILE_BLOBS__REDIRECT_DOWNLOADS", "true")],
            "blobs.redirect_downloads applies to an s3:// bucket only",
        ),
        (
            vec![("CASEFILE_BLOBS__URL", "s3://bucket/x"), ("CASEFILE_BLOBS__ENDPOINT", "http://10.0.0.5:9000")],
            "must be https",
        ),
        (
            vec![("CASEFILE_BLOBS__URL", "s3://bucket/x"), ("CASEFILE_BLOBS__ENDPOINT", "http://127.0.0.1:9000")],
            "set blobs.allow_http = true",
        ),
        (
            vec![
                ("CASEFILE_BLOBS__URL", "s3://bucket/x"),
                ("CASEFILE_BLOBS__REDIRECT_DOWNLOADS", "true"),
                ("CASEFILE_BLOBS__REDIRECT_TTL_SECONDS", "86400"),
            ],
            "blobs.redirect_ttl_seconds",
        ),
    ] {
        let (ok, text) = check(&env);
        assert!(!ok, "{env:?} was accepted: {text}");
        assert!(text.contains(expected), "{env:?}: {text}");
    }
    // Credentials in the URL: refused, and not repeated in the message.
    let (ok, text) = check(&[("CASEFILE_BLOBS__URL", "s3://AKIAEXAMPLE:hunter2@bucket/x")]);
    assert!(!ok && text.contains("must not carry credentials"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    // A good bucket configuration prints back, with no credentials anywhere in it.
    let (ok, text) = check(&[
        ("CASEFILE_BLOBS__URL", "s3://casefile-evidence/site-a"),
        ("CASEFILE_BLOBS__REGION", "eu-west-1"),
        ("CASEFILE_BLOBS__REDIRECT_DOWNLOADS", "true"),
        ("AWS_SECRET_ACCESS_KEY", "hunter2"),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("[blobs]") && text.contains("url = \"s3://casefile-evidence/site-a\""), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// `casefile backup` with packages in a bucket archives the data directory and says, as
/// does `restore`, that the package objects are not in the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_say_that_packages_stay_in_the_bucket() {
    if sqlite_only("casefile backup (PostgreSQL is backed up with pg_dump)") {
        return;
    }
    let Some(moto) = S3Server::start() else { return };
    let server = TestServer::start_with(in_bucket(&moto, false)).await;
    let Collected { mut agent, .. } = server.succeeded_collection("backed-up").await;
    agent.stop().await;
    let data = server.dir.path().join("data");
    let archive = server.dir.path().join("backup.zip");
    let env = [
        ("CASEFILE_BLOBS__URL", moto.url(PREFIX)),
        ("CASEFILE_BLOBS__ENDPOINT", moto.endpoint()),
        ("CASEFILE_BLOBS__ALLOW_HTTP", "true".to_owned()),
    ];
    let run = |args: &[&str]| {
        let mut command = casefile();
        command.args(args).envs(env.iter().map(|(k, v)| (k, v)));
        let out = command.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let (ok, text) = tokio::task::block_in_place(|| {
        run(&["backup", "--data-dir", data.to_str().unwrap(), "--output", archive.to_str().unwrap()])
    });
    assert!(ok, "{text}");
    assert!(text.contains("(0 packages,"), "{text}");
    assert!(text.contains("NOT in this archive") && text.contains(&moto.url(PREFIX)), "{text}");
    let names: Vec<String> = {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&archive).unwrap()).unwrap();
        (0..zip.len()).map(|i| zip.by_index(i).unwrap().name().unwrap().into_owned()).collect()
    };
    assert!(!names.iter().any(|n| n.starts_with("data/packages")), "{names:?}");
    assert_eq!(moto.keys("").len(), 1, "the bucket is left as it was");

    let target = server.dir.path().join("restored");
    let (ok, text) = run(&["restore", archive.to_str().unwrap(), "--data-dir", target.to_str().unwrap()]);
    assert!(ok, "{text}");
    assert!(text.contains("NOT in the archive") && text.contains(&moto.url(PREFIX)), "{text}");
}

/// Figures for issue 11, not a test of speed: the peak RSS of a `casefile server` process
/// importing one large package (incompressible, stored), with packages in a local directory
/// and in moto's bucket, in the same run. `CASEFILE_BENCH_PACKAGE_MIB` sets the size
/// (default 512). Run with
/// `cargo test -p casefile --test e2e -- --ignored --nocapture figures_peak_server_rss`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn figures_peak_server_rss_importing_a_large_package_directory_vs_bucket() {
    let Some(moto) = S3Server::start() else { return };
    let mib: usize = std::env::var("CASEFILE_BENCH_PACKAGE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(512);
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut figures = Vec::new();
    for (run, bucket) in [("directory", false), ("bucket", true)] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let port = casefile_testkit::free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut config = "[tls]\nplain_http = true\n[rate_limits]\nenabled = false\n".to_owned();
        if bucket {
            config += &format!(
                "[blobs]\nurl = \"{}\"\nendpoint = \"{}\"\nallow_http = true\n",
                moto.url(&format!("rss-{run}")),
                moto.endpoint()
            );
        }
        let config_file = dir.path().join("casefile.toml");
        std::fs::write(&config_file, config).unwrap();
        let server = casefile_testkit::KillOnDrop(
            casefile()
                .args(["server", "--listen", &format!("127.0.0.1:{port}"), "--config"])
                .arg(&config_file)
                .arg("--data-dir")
                .arg(&data)
                .envs(moto.aws_env())
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pid = server.0.id();
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + SETTLE;
        while !http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            assert!(tokio::time::Instant::now() < deadline, "the server did not answer");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cli = |args: &[&str]| {
            let out = casefile().args(args).arg("--data-dir").arg(&data).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().lines().next().unwrap().trim().to_owned()
        };
        let token = cli(&["token", "--roles", "Machine.CollectForensics,Machine.Read.All"]);
        let enroll = cli(&["enroll-token"]);
        let enrolled: Value = http
            .post(format!("{base}/agent/v1/enroll"))
            .bearer_auth(enroll)
            .json(&RawAgent::enroll_request("rss-host", Some(&key)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let machine = enrolled["machine_id"].as_str().unwrap().to_owned();

        let package_file = dir.path().join("large.zip");
        let (size, digest) = {
            let mut meta = PackageMeta::detached("s3-bench");
            meta.host.machine_id = Some(machine.clone());
            let files = vec![RawEntry::file("Large/random.bin", &incompressible(mib << 20))];
            let package = corpus::signed_with(&key, &meta, files, vec![]);
            std::fs::write(&package_file, &package).unwrap();
            (package.len(), sha256(&package))
        };
        let before = proc_status(pid, "VmRSS:");
        let started = std::time::Instant::now();
        let body = tokio_util::io::ReaderStream::new(tokio::fs::File::open(&package_file).await.unwrap());
        let response = http
            .post(format!("{base}/api/machines/{machine}/importInvestigationPackage"))
            .bearer_auth(&token)
            .header("content-type", "application/zip")
            .header("content-length", size)
            .header("x-casefile-sha256", &digest)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(status, 201, "{}", response.text().await.unwrap());
        let seconds = started.elapsed().as_secs_f64();
        let peak = proc_status(pid, "VmHWM:");
        if bucket {
            assert_eq!(moto.keys(&format!("rss-{run}/")).len(), 1);
            assert!(moto.pending_uploads().is_empty());
        }
        figures.push(format!(
            "{run:<10} package {:>6.1} MiB  server RSS before {:>7.1} MiB  peak {:>7.1} MiB  import {seconds:>6.1} s",
            size as f64 / 1048576.0,
            before as f64 / 1024.0,
            peak as f64 / 1024.0
        ));
        drop(server);
    }
    println!("peak RSS of `casefile server` (debug build) importing one package:");
    for line in figures {
        println!("  {line}");
    }
}

/// A `kB` figure of `/proc/PID/status`.
fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
