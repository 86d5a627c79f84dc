//! Operating a server (issue 10): layered configuration, the admin layer's tokens,
//! explicit migrations, online backups and verified restores; on the real binary.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use casefile_proto::action::ActionStatus;
use serde_json::Value;
use sha2::Digest as _;

use crate::cli::casefile;
use crate::support::*;

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = casefile();
    command.args(args).env("RUST_LOG", "warn");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

async fn run_async(args: Vec<String>) -> Output {
    // The store of this test's server is known on this thread, not on the blocking one.
    let store = store_url_of_this_test();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = store.iter().map(|url| ("CASEFILE_STORE__URL", url.as_str())).collect();
        run(&args, &env)
    })
    .await
    .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn cli_tokens_carry_the_issuer_of_the_configuration_file() {
    const ISSUER: &str = "https://issuer.example/casefile";
    let server = TestServer::start_with(|c| c.auth.issuer = ISSUER.to_owned()).await;
    let data_dir = server.dir.path().join("data");
    let file = server.dir.path().join("casefile.toml");
    std::fs::write(&file, format!("data_dir = {:?}\n\n[auth]\nissuer = \"{ISSUER}\"\n", path(&data_dir))).unwrap();
    let token = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["token", "--roles", READ, "--config", path(&file)];
        args.extend_from_slice(extra);
        let out = run(&args, env);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).trim().to_owned()
    };
    // The file's issuer: accepted by the running server, over HTTPS.
    assert_eq!(server.get("/api/machines", &token(&[], &[])).await.status(), 200);
    // The environment beats the file, a flag beats the environment: the issuer is the
    // configuration's, not something the command guesses.
    let other = [("CASEFILE_AUTH__ISSUER", "https://other.example")];
    assert_eq!(server.get("/api/machines", &token(&[], &other)).await.status(), 401);
    let back = format!("auth.issuer={ISSUER}");
    assert_eq!(server.get("/api/machines", &token(&["--set", &back], &other)).await.status(), 200);
    // CASEFILE_CONFIG names the file as --config does.
    let out = run(&["token", "--roles", READ], &[("CASEFILE_CONFIG", path(&file))]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(server.get("/api/machines", stdout(&out).trim()).await.status(), 200);
    // Every management command reads the same configuration.
    let out = run(&["app", "create", "--name", "cfg-app", "--roles", READ, "--config", path(&file)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["keys", "list", "--config", path(&file)], &[]);
    assert!(out.status.success() && stdout(&out).contains("signing"), "{}", stderr(&out));
    let out = run(&["audit", "--config", path(&file), "--event", "token.issue"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn config_check_prints_the_effective_configuration_and_refuses_invalid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("casefile.toml");
    std::fs::write(&file, "[agents]\npoll_wait_seconds = 20\n").unwrap();
    let env = [
        ("CASEFILE_AUTH__ISSUER", "https://env.example"),
        ("CASEFILE_DATABASE_URL", "postgres://casefile:hunter2@db.example/casefile"),
        ("CASEFILE_DATA_DIR", "/srv/from-env"),
    ];
    let out = run(
        &[
            "config",
            "check",
            "--config",
            path(&file),
            "--set",
            "agents.claim_lease_seconds=7",
            "--data-dir",
            "/srv/flag",
        ],
        &env,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(!printed.contains("hunter2"), "{printed}");
    let effective: toml::Table = toml::from_str(&printed).unwrap();
    assert_eq!(effective["agents"]["poll_wait_seconds"].as_integer(), Some(20), "file");
    assert_eq!(effective["auth"]["issuer"].as_str(), Some("https://env.example"), "environment");
    assert_eq!(effective["agents"]["claim_lease_seconds"].as_integer(), Some(7), "flag");
    assert_eq!(effective["data_dir"].as_str(), Some("/srv/flag"), "the flag beats CASEFILE_DATA_DIR");
    assert_eq!(effective["agents"]["max_collection_seconds"].as_integer(), Some(3600), "default");
    // What it prints is a configuration file that checks.
    let printed_file = dir.path().join("effective.toml");
    std::fs::write(&printed_file, &printed).unwrap();
    let out = run(&["config", "check", "--config", path(&printed_file)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Invalid: refused naming the settings, by `config check` and by `server` alike.
    let bad = [("CASEFILE_AGENTS__SILENT_TIMEOUT_SECONDS", "10")];
    let checked = run(&["config", "check", "--config", path(&file)], &bad);
    assert!(!checked.status.success());
    let message = stderr(&checked);
    assert!(
        message.contains("agents.silent_timeout_seconds") && message.contains("agents.poll_wait_seconds"),
        "{message}"
    );
    let data = dir.path().join("data");
    let started = run(&["server", "--config", path(&file), "--data-dir", path(&data), "--listen", "127.0.0.1:0"], &bad);
    assert!(!started.status.success());
    assert!(stderr(&started).contains("agents.silent_timeout_seconds"), "{}", stderr(&started));
    assert!(!data.exists(), "a refused start touches nothing");

    for (env, expect) in [
        (("CASEFILE_AGENTS__POLL_WAIT_SECONDS", "soon"), "CASEFILE_AGENTS__POLL_WAIT_SECONDS"),
        (("CASEFILE_LISTEN", "everywhere"), "CASEFILE_LISTEN"),
        (("CASEFILE_AUTH__ISUER", "x"), "isuer"),
        (("CASEFILE_TLS__PLAIN_HTTP", "maybe"), "bool"),
    ] {
        let out = run(&["config", "check"], &[env]);
        assert!(!out.status.success(), "{env:?}");
        assert!(stderr(&out).contains(expect), "{env:?}: {}", stderr(&out));
    }
    let out = run(&["config", "check", "--listen", "nowhere"], &[]);
    assert!(!out.status.success() && stderr(&out).contains("--listen"), "{}", stderr(&out));
    let out = run(&["config", "check", "--set", "novalue"], &[]);
    assert!(!out.status.success() && stderr(&out).contains("KEY=VALUE"), "{}", stderr(&out));
    std::fs::write(&file, "[agents]\npoll_wait_secs = 20\n").unwrap();
    let out = run(&["config", "check", "--config", path(&file)], &[]);
    assert!(!out.status.success() && stderr(&out).contains("poll_wait_secs"), "{}", stderr(&out));
    // A variable that may be another program's is only warned about.
    let out = run(&["config", "check"], &[("CASEFILE_LISTN", "0.0.0.0:1")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("CASEFILE_LISTN"), "{}", stderr(&out));
}

const MIGRATIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../casefile-store/migrations/sqlite");

/// A database migrated by an older casefile: every migration but the newest. Returns its
/// version and the newest.
async fn older_database(database: &Path) -> (i64, i64) {
    let older = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(MIGRATIONS).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let newest = files.pop().unwrap();
    for file in &files {
        std::fs::copy(file, older.path().join(file.file_name().unwrap())).unwrap();
    }
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", database.display())).await.unwrap();
    sqlx::migrate::Migrator::new(older.path()).await.unwrap().run(&pool).await.unwrap();
    pool.close().await;
    let version = |p: &Path| p.file_name().unwrap().to_str().unwrap()[..4].parse().unwrap();
    (version(files.last().unwrap()), version(&newest))
}

#[tokio::test]
async fn the_server_refuses_a_schema_not_its_own_and_migrate_upgrades_after_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let (older, newest) = older_database(&data.join("casefile.db")).await;
    let server = |data: &Path| {
        // `timeout`: a server that wrongly starts must not hang the test.
        std::process::Command::new("timeout")
            .arg("60")
            .arg(env!("CARGO_BIN_EXE_casefile"))
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir", path(data)])
            .output()
            .unwrap()
    };
    let refused = server(&data);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("older") && stderr(&refused).contains("casefile migrate"),
        "{}",
        stderr(&refused)
    );
    // Management commands do not migrate behind the admin's back either.
    let out = run(&["keys", "list", "--data-dir", path(&data)], &[]);
    assert!(!out.status.success() && stderr(&out).contains("casefile migrate"), "{}", stderr(&out));

    let out = run(&["migrate", "--data-dir", path(&data)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("{newest:04}")), "{}", stdout(&out));
    let backups: Vec<_> = std::fs::read_dir(data.join("backups")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let name = backups[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(name.starts_with("casefile-") && name.ends_with(&format!("-schema-{older}.db")), "{name}");
    assert!(stdout(&out).contains(&name), "{}", stdout(&out));
    let again = run(&["migrate", "--data-dir", path(&data)], &[]);
    assert!(again.status.success() && stdout(&again).contains("up to date"), "{}", stdout(&again));
    let out = run(&["keys", "list", "--data-dir", path(&data)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A database a newer casefile migrated.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("casefile.db").display())).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let refused = server(&data);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("older than the database"), "{}", stderr(&refused));
    let out = run(&["migrate", "--data-dir", path(&data)], &[]);
    assert!(!out.status.success() && stderr(&out).contains("older than the database"), "{}", stderr(&out));

    // A brand-new data directory is not an older schema: the server creates it.
    let fresh = dir.path().join("fresh");
    let out = run(&["token", "--roles", READ, "--data-dir", path(&fresh)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn a_backup_of_a_running_server_restores_byte_identical_packages() {
    if sqlite_only("casefile backup and restore") {
        return;
    }
    let server = TestServer::start().await;
    let data = server.dir.path().join("data");
    let Collected { mut agent, token, id, url } = server.succeeded_collection("backup-host").await;
    let original = server.http.get(&url).send().await.unwrap().bytes().await.unwrap();
    assert!(!original.is_empty());

    // Uploads in flight while the backup runs: more collections on more agents.
    let mut busy = Vec::new();
    let mut pending = Vec::new();
    for host in ["busy-1", "busy-2"] {
        let agent = server.start_agent(host).await;
        let created: Value = server.collect(&agent.identity.machine_id, &token).await.json().await.unwrap();
        pending.push(created["id"].as_str().unwrap().to_owned());
        busy.push(agent);
    }
    let archive = server.dir.path().join("casefile-backup.zip");
    let out = run_async(vec![
        "backup".into(),
        "--data-dir".into(),
        path(&data).into(),
        "--output".into(),
        path(&archive).into(),
    ])
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let digest = printed.lines().find_map(|l| l.strip_prefix("sha256:")).unwrap().to_owned();
    assert_eq!(digest, sha256(&std::fs::read(&archive).unwrap()));
    for id in &pending {
        assert_eq!(server.wait_final(id).await.status, ActionStatus::Succeeded);
    }
    // A backup never replaces a file.
    let again = run(&["backup", "--data-dir", path(&data), "--output", path(&archive)], &[]);
    assert!(!again.status.success() && stderr(&again).contains("exists"), "{}", stderr(&again));

    // Hostile restores are refused before anything is written.
    let target = server.dir.path().join("restored-elsewhere");
    let out = run(&["restore", path(&archive), "--data-dir", path(&data)], &[]);
    assert!(!out.status.success() && stderr(&out).contains("not empty"), "{}", stderr(&out));
    let bytes = std::fs::read(&archive).unwrap();
    let damaged = server.dir.path().join("damaged.zip");
    for (what, copy) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("tampered", {
            let mut b = bytes.clone();
            let middle = b.len() / 2;
            b[middle] ^= 0x55;
            b
        }),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&damaged, copy).unwrap();
        let out = run(&["restore", path(&damaged), "--data-dir", path(&target)], &[]);
        assert!(!out.status.success(), "{what}");
        assert!(stderr(&out).contains("cannot be restored"), "{what}: {}", stderr(&out));
        assert!(!target.exists(), "{what}: nothing written");
    }
    let out = run(&["restore", path(&archive), "--data-dir", path(&target), "--sha256", &"0".repeat(64)], &[]);
    assert!(!out.status.success() && stderr(&out).contains("SHA-256"), "{}", stderr(&out));
    for (what, name) in
        [("parent", "data/../../escaped"), ("absolute", "/tmp/escaped"), ("outside data", "elsewhere/escaped")]
    {
        let crafted = crafted_archive(server.dir.path(), name);
        let out = run(&["restore", path(&crafted), "--data-dir", path(&target)], &[]);
        assert!(!out.status.success(), "{what}");
        assert!(stderr(&out).contains("not a name a backup writes"), "{what}: {}", stderr(&out));
        assert!(!target.exists() && !server.dir.path().join("escaped").exists(), "{what}");
    }

    // Wipe, restore, restart: the same package, byte for byte, through a new link.
    agent.stop().await;
    for mut agent in busy {
        agent.stop().await;
    }
    let dir = server.stop_keeping_dir().await;
    std::fs::remove_dir_all(&data).unwrap();
    let out = run(&["restore", path(&archive), "--data-dir", path(&data), "--sha256", &digest], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let restarted = TestServer::start_in(dir).await;
    let token = restarted.token(ALL);
    let link: Value =
        restarted.get(&format!("/api/machineactions/{id}/getPackageUri"), &token).await.json().await.unwrap();
    let url = link["value"].as_str().expect("a link for the restored package");
    let restored = restarted.http.get(url).send().await.unwrap();
    assert_eq!(restored.status(), 200);
    assert_eq!(sha256(&restored.bytes().await.unwrap()), sha256(&original));
    // --force moves the live directory aside instead of deleting it.
    let out = run(&["restore", path(&archive), "--data-dir", path(&target)], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(&["restore", path(&archive), "--data-dir", path(&target), "--force"], &[]);
    assert!(out.status.success() && stdout(&out).contains(".replaced-"), "{}", stderr(&out));
}

/// An archive with a valid manifest that also lists `hostile`.
fn crafted_archive(dir: &Path, hostile: &str) -> PathBuf {
    let path = dir.join(format!("crafted-{}.zip", sha256(hostile.as_bytes())));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    let mut entries = Vec::new();
    for (name, body) in [("data/casefile.db", &b"db"[..]), (hostile, &b"evil"[..])] {
        zip.start_file(name, options).unwrap();
        zip.write_all(body).unwrap();
        entries.push(serde_json::json!({"name": name, "size": body.len(), "sha256": sha256(body)}));
    }
    zip.start_file("casefile-backup.json", options).unwrap();
    let manifest =
        serde_json::json!({"format": "casefile-backup/1", "created_at": "2026-12-01T00:00:00Z", "entries": entries});
    zip.write_all(manifest.to_string().as_bytes()).unwrap();
    zip.finish().unwrap();
    path
}

/// `restore` wrote an SQLite database into the data directory of an installation whose
/// store is PostgreSQL, where nothing reads it. It is refused before anything is written.
#[test]
fn restore_into_an_installation_on_postgresql_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let archive = dir.path().join("backup.zip");
    std::fs::write(&archive, b"not read: refused first").unwrap();
    let out = run(
        &["restore", path(&archive), "--data-dir", path(&data), "--force"],
        &[("CASEFILE_STORE__URL", "postgres://casefile@127.0.0.1:1/casefile")],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pg_restore"), "{}", stderr(&out));
    assert!(!data.exists(), "nothing was written");

    // Nor an SQLite database outside the data directory: the restored one would be unread.
    let elsewhere = format!("sqlite://{}", dir.path().join("elsewhere.db").display());
    let out =
        run(&["restore", path(&archive), "--data-dir", path(&data), "--force"], &[("CASEFILE_STORE__URL", &elsewhere)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("outside the data directory"), "{}", stderr(&out));
    assert!(!data.exists(), "nothing was written");
}
