//! The analysts' CLI (`casefile login`, `machines`, `collect`, `actions`, `download`,
//! `cancel`), as the real binary, against the real server over HTTPS with its own CA and
//! a real agent. Each test keeps its credentials in a temporary config directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::identity::cli_app;
use crate::support::*;

/// The binary, with a private config location (`CASEFILE_CLI_CONFIG`) and nothing from
/// the developer's environment deciding where it goes or what it trusts.
struct Analyst {
    home: TempDir,
    config: PathBuf,
}

impl Analyst {
    fn new() -> Self {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("cli/credentials.json");
        Self { home, config }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_casefile"));
        command
            .args(args)
            .env("CASEFILE_CLI_CONFIG", &self.config)
            .env("HOME", self.home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("CASEFILE_SERVER")
            .env_remove("HTTPS_PROXY")
            .env_remove("https_proxy")
            .env_remove("RUST_LOG");
        command
    }

    /// Runs `casefile ARGS` with `stdin`, off the runtime's thread (the server answers it).
    async fn run_with(&self, mut command: Command, stdin: Option<&str>) -> Output {
        let input = stdin.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            command.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut child = command.spawn().unwrap();
            if let Some(input) = input {
                use std::io::Write as _;
                child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            }
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(self.command(args), None).await
    }

    /// Runs and expects success; returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args).await;
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// `casefile login` with an application's client credentials, pinning the server's CA.
    async fn login_at(&self, server: &TestServer, url: &str, client_id: &str, secret: &str) -> Output {
        let pin = server.ca_pin.clone().unwrap();
        let args = ["login", "--server", url, "--ca-sha256", &pin, "--client-id", client_id, "--client-secret-stdin"];
        self.run_with(self.command(&args), Some(&format!("{secret}\n"))).await
    }

    async fn login(&self, server: &TestServer) -> (String, String) {
        let (client_id, secret) = cli_app(server, "default", "Analyst CLI", &format!("{COLLECT},{READ}"));
        let out = self.login_at(server, &server.base, &client_id, &secret).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (client_id, secret)
    }

    fn saved(&self) -> Value {
        serde_json::from_slice(&std::fs::read(&self.config).unwrap()).unwrap()
    }
}

/// A failure: a nonzero exit and exactly one line on stderr, `casefile: ...`; returns it.
fn one_line_error(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected a failure; stdout: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("casefile: "), "{stderr}");
    stderr.trim_end().to_owned()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The package of `action` as the API serves it to a script.
async fn api_download(server: &TestServer, action: &str) -> Vec<u8> {
    let token = server.token(ALL);
    let link: Value =
        server.get(&format!("/api/machineactions/{action}/getPackageUri"), &token).await.json().await.unwrap();
    let response = server.http.get(link["value"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn login_with_a_wrong_secret_or_pin_saves_nothing_and_says_why_in_one_line() {
    let server = TestServer::start().await;
    let analyst = Analyst::new();
    let (client_id, _) = cli_app(&server, "default", "Analyst CLI", READ);

    let out = analyst.login_at(&server, &server.base, &client_id, "cfs_not-the-secret").await;
    let line = one_line_error(&out);
    assert!(line.starts_with("casefile: invalid_client: AADSTS"), "{line}");
    assert!(!analyst.config.exists() && !analyst.config.parent().unwrap().exists());

    // The CA of another server: refused before any secret is sent.
    let other = TestServer::start().await;
    let args = [
        "login",
        "--server",
        &server.base,
        "--ca-sha256",
        other.ca_pin.as_deref().unwrap(),
        "--client-id",
        &client_id,
        "--client-secret-stdin",
    ];
    let line = one_line_error(&analyst.run_with(analyst.command(&args), Some("cfs_whatever\n")).await);
    assert!(line.contains("not the pinned"), "{line}");

    // HTTPS without a pin or --system-roots; plain HTTP to a remote address.
    let args = ["login", "--server", &server.base, "--client-id", &client_id, "--client-secret-stdin"];
    let line = one_line_error(&analyst.run_with(analyst.command(&args), Some("cfs_whatever\n")).await);
    assert!(line.contains("--ca-sha256"), "{line}");
    let args = ["login", "--server", "http://192.0.2.1:8080", "--client-id", &client_id, "--client-secret-stdin"];
    let line = one_line_error(&analyst.run_with(analyst.command(&args), Some("cfs_whatever\n")).await);
    assert!(line.contains("refusing plain HTTP"), "{line}");
    assert!(!analyst.config.exists());

    // A user sign-in the server does not grant (no such user; or, before the password
    // grant, no such grant): one line, nothing saved, and the password nowhere.
    let pin = server.ca_pin.clone().unwrap();
    let args = ["login", "--server", &server.base, "--ca-sha256", &pin, "--user", "nobody", "--password-stdin"];
    let out = analyst.run_with(analyst.command(&args), Some("hunter2-password\n")).await;
    let line = one_line_error(&out);
    assert!(
        line.starts_with("casefile: invalid_grant: ") || line.starts_with("casefile: unsupported_grant_type: "),
        "{line}"
    );
    assert!(!line.contains("hunter2") && !analyst.config.exists(), "{line}");

    // Not logged in: every command says so in one line.
    let line = one_line_error(&analyst.run(&["machines"]).await);
    assert!(line.contains("casefile login"), "{line}");
}

#[cfg(unix)]
#[tokio::test]
async fn login_keeps_the_credentials_private_and_machines_lists_the_enrolled_machine() {
    let server = TestServer::start().await;
    let mut agent = server.start_agent("analyst-list").await;
    let seeded = server.seed_machine("seeded.example").await;
    let (client_id, secret) = cli_app(&server, "default", "Analyst CLI", READ);

    // The default location: $XDG_CONFIG_HOME/casefile/credentials.json.
    let analyst = Analyst::new();
    let xdg = analyst.home.path().join("xdg");
    let pin = server.ca_pin.clone().unwrap();
    let args =
        ["login", "--server", &server.base, "--ca-sha256", &pin, "--client-id", &client_id, "--client-secret-stdin"];
    let mut command = analyst.command(&args);
    command.env_remove("CASEFILE_CLI_CONFIG").env("XDG_CONFIG_HOME", &xdg);
    let out = analyst.run_with(command, Some(&format!("{secret}\n"))).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = xdg.join("casefile/credentials.json");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    assert_eq!(std::fs::read_dir(file.parent().unwrap()).unwrap().count(), 1, "no temporaries left");
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["server"], server.base);
    assert_eq!(saved["trust"]["ca_sha256"], pin);
    assert_eq!(saved["identity"]["client_id"], client_id);
    assert!(saved["token"]["expires_at"].as_i64().unwrap() > now());

    let mut list = analyst.command(&["machines", "--json"]);
    list.env_remove("CASEFILE_CLI_CONFIG").env("XDG_CONFIG_HOME", &xdg);
    let out = analyst.run_with(list, None).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let machines: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = machines.as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&agent.identity.machine_id.as_str()) && ids.contains(&seeded.as_str()), "{machines}");

    // The rest use CASEFILE_CLI_CONFIG: log in there too.
    let out = analyst.login_at(&server, &server.base, &client_id, &secret).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = analyst.ok(&["machines"]).await;
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("ID") && header.contains("HEALTH") && header.contains("LAST SEEN"), "{table}");
    assert!(table.lines().any(|l| l.starts_with(&seeded) && l.contains("seeded.example")), "{table}");
    let filtered = analyst.json(&["machines", "--json", "--filter", "computerDnsName eq 'seeded.example'"]).await;
    assert_eq!(filtered, json!([machines.as_array().unwrap().iter().find(|m| m["id"] == seeded.as_str()).unwrap()]));
    assert_eq!(analyst.json(&["machines", "--json", "--top", "1"]).await.as_array().unwrap().len(), 1);
    let line = one_line_error(&analyst.run(&["machines", "--filter", "nosuch eq 1"]).await);
    assert!(line.starts_with("casefile: ODataError: "), "{line}");

    let out = analyst.ok(&["logout"]).await;
    assert!(out.contains("logged out"), "{out}");
    assert!(!analyst.config.exists());
    agent.stop().await;
}

/// More machines than one page: `--top` beyond a page follows `@odata.nextLink`.
#[tokio::test]
async fn lists_follow_next_links_up_to_top() {
    let server = TestServer::start().await;
    let machine = server.seed_machine("paged.example").await;
    for status in [casefile_proto::ActionStatus::Succeeded, casefile_proto::ActionStatus::Failed] {
        for _ in 0..3 {
            let at = chrono::Utc::now();
            server
                .seed_action(&machine, status, casefile_proto::action::ActionType::CollectInvestigationPackage, "x", at)
                .await;
        }
    }
    let analyst = Analyst::new();
    analyst.login(&server).await;
    assert_eq!(analyst.json(&["actions", "--json"]).await.as_array().unwrap().len(), 6);
    assert_eq!(analyst.json(&["actions", "--json", "--top", "4"]).await.as_array().unwrap().len(), 4);
    // Pages of two: the CLI follows the next links, and stops at --top.
    let all = analyst.json(&["actions", "--json"]).await;
    assert_eq!(analyst.json(&["actions", "--json", "--page-size", "2"]).await, all);
    let five = analyst.json(&["actions", "--json", "--page-size", "2", "--top", "5"]).await;
    assert_eq!(five.as_array().unwrap()[..], all.as_array().unwrap()[..5]);
    let failed = analyst.json(&["actions", "--json", "--page-size", "2", "--filter", "status eq 'Failed'"]).await;
    assert_eq!(failed.as_array().unwrap().len(), 3);
    assert!(failed.as_array().unwrap().iter().all(|a| a["status"] == "Failed"), "{failed}");
}

/// Names are what agents report: one holding a terminal escape sequence is printed
/// escaped, in tables and in error lines, never as the sequence itself.
#[tokio::test]
async fn a_hostile_machine_name_reaches_the_terminal_escaped() {
    let server = TestServer::start().await;
    let hostile = "evil\u{1b}]0;owned\u{7}\u{1b}[2J.example";
    let machine = server.seed_machine(hostile).await;
    let analyst = Analyst::new();
    analyst.login(&server).await;
    let out = analyst.run(&["machines"]).await;
    assert!(out.status.success());
    assert!(!out.stdout.contains(&0x1b) && !out.stdout.contains(&0x07), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("evil\\u{1b}]0;owned"));
    // JSON keeps the name exact (escaped by JSON itself).
    let listed = analyst.json(&["machines", "--json"]).await;
    assert_eq!(listed[0]["computerDnsName"], hostile);
    // The server's error message echoes the unknown name it was given.
    let out = analyst.run(&["collect", "no\u{1b}[2Jsuch\nhost", "--comment", "x"]).await;
    let line = one_line_error(&out);
    assert!(line.starts_with("casefile: ResourceNotFound: ") && !line.contains('\u{1b}'), "{line}");
    assert!(analyst.ok(&["collect", &machine, "--comment", "by id"]).await.contains("Pending"));
}

#[tokio::test]
async fn collect_waits_downloads_the_bytes_the_api_serves_and_lists_the_action() {
    let server = TestServer::start().await;
    let mut agent = server.start_agent("analyst-collect").await;
    let analyst = Analyst::new();
    analyst.login(&server).await;
    let dir = analyst.home.path().join("evidence");
    let machine = agent.identity.machine_id.clone();
    let printed = analyst
        .json(&["collect", &machine, "--comment", "INC-42 triage", "--download", dir.to_str().unwrap(), "--json"])
        .await;
    let action = &printed["action"];
    assert_eq!(action["status"], "Succeeded", "{printed}");
    assert_eq!(action["requestorComment"], "INC-42 triage");
    assert_eq!(action["requestor"], "Analyst CLI");
    let id = action["id"].as_str().unwrap();
    let file = dir.join(format!("{id}.zip"));
    assert_eq!(printed["download"]["path"], file.to_str().unwrap());
    assert_eq!(printed["download"]["verified"], "sha256");
    let saved = std::fs::read(&file).unwrap();
    assert_eq!(saved, api_download(&server, id).await, "the CLI saved the API's bytes");
    assert_eq!(printed["download"]["size"], saved.len());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporaries left");

    // `download` again: to a new file; an existing one is not overwritten.
    let again = analyst.home.path().join("again.zip");
    let out = analyst.ok(&["download", id, "-o", again.to_str().unwrap()]).await;
    assert!(out.contains("matches the server's"), "{out}");
    assert_eq!(std::fs::read(&again).unwrap(), saved);
    let line = one_line_error(&analyst.run(&["download", id, "-o", file.to_str().unwrap()]).await);
    assert!(line.contains("already exists"), "{line}");
    assert_eq!(std::fs::read(&file).unwrap(), saved);

    let listed = analyst.json(&["actions", "--json", "--filter", &format!("machineId eq '{machine}'")]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id);
    let table = analyst.ok(&["actions"]).await;
    assert!(
        table.lines().any(|l| l.starts_with(id) && l.contains("Succeeded") && l.contains("INC-42 triage")),
        "{table}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_second_collect_is_refused_in_one_line_and_a_pending_one_is_cancelled() {
    let server = TestServer::start().await;
    // No agent: the collection stays Pending.
    let machine = server.seed_machine("idle-analyst.example").await;
    let analyst = Analyst::new();
    analyst.login(&server).await;
    // By name: the API resolves a unique computer name.
    let created = analyst.json(&["collect", "idle-analyst.example", "--comment", "first", "--json"]).await;
    assert_eq!((created["status"].as_str(), created["machineId"].as_str()), (Some("Pending"), Some(machine.as_str())));
    let id = created["id"].as_str().unwrap();

    let line = one_line_error(&analyst.run(&["collect", &machine, "--comment", "second"]).await);
    assert_eq!(line, "casefile: ActiveRequestAlreadyExists: Action is already in progress");

    let cancelled = analyst.json(&["cancel", id, "--comment", "wrong host", "--json"]).await;
    assert_eq!(cancelled["status"], "Cancelled");
    assert_eq!(cancelled["cancellationComment"], "wrong host");
    assert_eq!(server.action(id).await.status, casefile_proto::ActionStatus::Cancelled);
    let line = one_line_error(&analyst.run(&["cancel", id, "--comment", "again"]).await);
    assert!(line.starts_with("casefile: BadRequest: "), "{line}");

    // A Pending collection has no package yet.
    let line = one_line_error(&analyst.run(&["download", id]).await);
    assert!(line.starts_with("casefile: "), "{line}");
}

#[tokio::test]
async fn download_of_an_unknown_action_errors_in_one_line_and_leaves_no_file() {
    let server = TestServer::start().await;
    let analyst = Analyst::new();
    analyst.login(&server).await;
    let file = analyst.home.path().join("package.zip");
    let unknown = uuid::Uuid::new_v4().to_string();
    let line = one_line_error(&analyst.run(&["download", &unknown, "-o", file.to_str().unwrap()]).await);
    assert!(line.starts_with("casefile: ResourceNotFound: ") || line.starts_with("casefile: NotFound: "), "{line}");
    assert!(!file.exists());
    let line = one_line_error(&analyst.run(&["download", "not-a-guid", "-o", file.to_str().unwrap()]).await);
    assert!(line.starts_with("casefile: BadRequest: "), "{line}");
    assert!(!file.exists());
}

/// A TCP relay in front of the server that cuts every connection once it has passed
/// `limit` bytes towards the client. Stopped when dropped.
struct CuttingRelay {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingRelay {
    async fn start(upstream: SocketAddr, limit: usize) -> Self {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let mut passed = 0usize;
                    let mut buffer = vec![0u8; 8192];
                    while passed < limit {
                        let want = buffer.len().min(limit - passed);
                        match server_read.read(&mut buffer[..want]).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if client_write.write_all(&buffer[..n]).await.is_err() {
                                    break;
                                }
                                passed += n;
                            }
                        }
                    }
                    // Cut: both directions closed mid-answer.
                    up.abort();
                    let _ = client_write.shutdown().await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for CuttingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_download_cut_off_midway_leaves_no_file() {
    let server = TestServer::start().await;
    let collected = server.succeeded_collection("analyst-cut").await;
    let package = api_download(&server, &collected.id).await;
    assert!(package.len() > 64 * 1024, "a package large enough to cut: {} bytes", package.len());
    let upstream: SocketAddr = server.base.trim_start_matches("https://").parse().unwrap();
    // Every other answer on a connection is a few KiB: only the package passes the limit.
    let relay = CuttingRelay::start(upstream, 16 * 1024 + package.len() / 2).await;
    let analyst = Analyst::new();
    let (client_id, secret) = cli_app(&server, "default", "Analyst CLI", &format!("{COLLECT},{READ}"));
    let via_relay = format!("https://{}", relay.addr);
    let out = analyst.login_at(&server, &via_relay, &client_id, &secret).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = analyst.home.path().join("cut");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("package.zip");
    let line = one_line_error(&analyst.run(&["download", &collected.id, "-o", file.to_str().unwrap()]).await);
    assert!(line.contains("cut off") && line.contains("nothing saved"), "{line}");
    assert!(!file.exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no partial file left");
    let mut agent = collected.agent;
    agent.stop().await;
}

/// The stored package altered on the server's disk (same length): the bytes no longer
/// hash to the SHA-256 the server announces, and the CLI keeps nothing.
#[tokio::test]
async fn a_package_that_does_not_match_the_announced_sha256_is_not_saved() {
    let server = TestServer::start().await;
    let collected = server.succeeded_collection("analyst-tamper").await;
    let stored = server.dir.path().join("data/packages/default").join(&collected.id);
    let blob = std::fs::read_dir(&stored).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();

    let analyst = Analyst::new();
    analyst.login(&server).await;
    let file = analyst.home.path().join("tampered.zip");
    let line = one_line_error(&analyst.run(&["download", &collected.id, "-o", file.to_str().unwrap()]).await);
    assert!(line.contains("the server announced: nothing saved"), "{line}");
    assert!(!file.exists());
    assert_eq!(std::fs::read_dir(analyst.home.path()).unwrap().count(), 1, "only the credentials' directory");
    let mut agent = collected.agent;
    agent.stop().await;
}

#[tokio::test]
async fn an_expired_or_refused_cached_token_is_replaced() {
    let server = TestServer::start().await;
    server.seed_machine("token.example").await;
    let analyst = Analyst::new();
    analyst.login(&server).await;
    let write = |saved: &Value| {
        // Rewritten in place: the file keeps its 0600 mode.
        std::fs::write(&analyst.config, serde_json::to_vec(saved).unwrap()).unwrap();
    };
    let first = analyst.saved();

    // Expired: a new token is fetched before the call.
    let mut saved = first.clone();
    saved["token"] = json!({"access_token": "expired", "expires_at": now() - 10});
    write(&saved);
    assert_eq!(analyst.json(&["machines", "--json"]).await.as_array().unwrap().len(), 1);
    let renewed = analyst.saved();
    let token = renewed["token"]["access_token"].as_str().unwrap();
    assert!(token != "expired" && renewed["token"]["expires_at"].as_i64().unwrap() > now());
    assert_eq!(server.get("/api/machines", token).await.status(), 200, "the cached token is a real one");

    // Unexpired but refused (say, its signing key was retired): replaced once, and the call
    // goes through.
    let mut saved = renewed.clone();
    saved["token"]["access_token"] = json!("refused-token");
    write(&saved);
    assert_eq!(analyst.json(&["machines", "--json"]).await.as_array().unwrap().len(), 1);
    assert_ne!(analyst.saved()["token"]["access_token"], "refused-token");

    // Piped into a reader that went away (`| head`): a quiet end, as for every command.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = analyst.command(&["machines", "--json"]);
    command.stdout(writer);
    let out = tokio::task::spawn_blocking(move || command.stderr(Stdio::piped()).output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    // A cached token is reused while fresh: no new one per command.
    let cached = analyst.saved()["token"].clone();
    analyst.ok(&["machines"]).await;
    assert_eq!(analyst.saved()["token"], cached);
}

#[cfg(unix)]
#[tokio::test]
async fn a_users_expired_sign_in_asks_to_log_in_again_and_a_readable_file_is_refused() {
    use std::os::unix::fs::OpenOptionsExt as _;
    let server = TestServer::start().await;
    let analyst = Analyst::new();
    std::fs::create_dir_all(analyst.config.parent().unwrap()).unwrap();
    let creds = json!({
        "server": server.base,
        "tenant": "default",
        "trust": {"kind": "pinned", "ca_sha256": server.ca_pin, "ca_pem": std::fs::read_to_string(server.dir.path().join("data/tls/ca.pem")).unwrap()},
        "identity": {"kind": "user", "name": "alice"},
        "token": {"access_token": "old", "expires_at": now() - 1},
    });
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&analyst.config)
        .and_then(|mut f| std::io::Write::write_all(&mut f, creds.to_string().as_bytes()))
        .unwrap();
    let line = one_line_error(&analyst.run(&["machines"]).await);
    assert_eq!(line, "casefile: the sign-in of alice has expired: run `casefile login` again");

    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&analyst.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let line = one_line_error(&analyst.run(&["machines"]).await);
    assert!(line.contains("can be read by other users"), "{line}");
}

/// A local user signs the CLI in (`grant_type=password`, client `casefile-cli`):
/// `casefile user create`, a role, then `casefile login --user`.
#[tokio::test]
async fn login_as_a_local_user_keeps_the_token_but_never_the_password() {
    let server = TestServer::start().await;
    server.seed_machine("user-login.example").await;
    let data_dir = server.dir.path().join("data");
    let password = "correct horse battery staple";
    let out = crate::cli::casefile()
        .args(["user", "create", "--name", "alice", "--password-stdin", "--data-dir"])
        .arg(&data_dir)
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(password.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Her role: she reads machines, as a delegated user with ViewData.
    let role = json!({"name": "readers", "permissions": ["ViewData"], "users": ["alice"], "groups": []});
    let put = server
        .http
        .put(format!("{}/api/admin/roles/readers", server.base))
        .bearer_auth(server.token(&["Casefile.Admin"]))
        .json(&role)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let analyst = Analyst::new();
    let pin = server.ca_pin.clone().unwrap();
    let args = ["login", "--server", &server.base, "--ca-sha256", &pin, "--user", "alice", "--password-stdin"];
    let line = one_line_error(&analyst.run_with(analyst.command(&args), Some("wrong password\n")).await);
    assert!(line.starts_with("casefile: invalid_grant"), "{line}");
    assert!(!analyst.config.exists());
    let out = analyst.run_with(analyst.command(&args), Some(&format!("{password}\n"))).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&analyst.config).unwrap();
    assert!(!text.contains(password), "the password is never saved");
    let saved: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(saved["identity"], json!({"kind": "user", "name": "alice"}));
    assert_eq!(analyst.json(&["machines", "--json"]).await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn completions_and_man_pages_are_generated_from_the_commands() {
    let analyst = Analyst::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = analyst.ok(&["completions", shell]).await;
        assert!(script.contains("collect") && script.contains("download") && script.contains("ca-sha256"), "{shell}");
    }
    let dir = analyst.home.path().join("man");
    let printed = analyst.ok(&["man", "--out", dir.to_str().unwrap()]).await;
    let mut pages: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    pages.sort();
    assert!(printed.starts_with(&format!("{} pages written", pages.len())), "{printed}");
    // Every command of `casefile --help`, and every subcommand of those that have some.
    let help = analyst.ok(&["--help"]).await;
    let commands = subcommands(&help);
    assert!(commands.len() > 20 && commands.contains(&"login".to_owned()), "{help}");
    for command in commands {
        let page = format!("casefile-{command}.1");
        assert!(pages.contains(&page), "{page} in {pages:?}");
        let text = std::fs::read_to_string(dir.join(&page)).unwrap();
        assert!(
            text.contains(".TH") && text.contains(&format!("casefile\\-{}", command.replace('-', "\\-"))),
            "{page}"
        );
        let sub_help = analyst.ok(&[&command, "--help"]).await;
        for sub in subcommands(&sub_help) {
            assert!(pages.contains(&format!("casefile-{command}-{sub}.1")), "casefile-{command}-{sub}.1 in {pages:?}");
        }
    }
    assert!(pages.contains(&"casefile.1".to_owned()));
}

/// The command names of a `--help` text's "Commands:" section (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A wrapped description goes on deeper indented.
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}
