//! A throwaway PostgreSQL cluster from Debian's binaries, one per test process, and a fresh
//! database per test inside it (so tests run in parallel without seeing each other).
//!
//! Lifetime: Rust never drops statics, so the cluster cannot stop from a destructor. Its
//! postmaster is instead tied to the test process by the kernel: a thread that lives as long
//! as the process starts `setpriv --pdeathsig TERM sh -c …`, a small shell that runs the
//! postmaster (itself under `--pdeathsig QUIT`) and, when the test process ends in any way
//! (normal exit, panic, `kill -9`), is signalled by the kernel, stops the postmaster with an
//! immediate shutdown, waits for it and removes the cluster's directory. Were the shell
//! itself killed, the postmaster still gets `SIGQUIT` from its own parent-death signal. (The
//! parent-death signal follows the thread that spawned the child, hence the thread.)
//!
//! Binaries: `CASEFILE_TEST_PG_BIN` (a directory holding `initdb`, `postgres` and `psql`),
//! else the newest `/usr/lib/postgresql/*/bin`. PostgreSQL refuses to run as root: as root,
//! the cluster runs as the `postgres` user (Debian's package creates it) and its directory
//! is given to that user.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The cluster's superuser (trust authentication over loopback and its socket).
pub const SUPERUSER: &str = "casefile";

/// How long the postmaster may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The shared cluster of this test process.
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    databases: AtomicU64,
}

/// A database of its own for one test, dropped (connections and all) with the guard.
pub struct PgDatabase {
    /// `postgres://casefile@127.0.0.1:PORT/NAME`
    pub url: String,
    pub name: String,
    cluster: &'static PgCluster,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // FORCE ends sessions a test left open (a pool it never closed).
        let _ = self.cluster.psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();

/// The process's cluster, started on first use; `None` (with the reason printed) when no
/// PostgreSQL binaries are installed, a failure when `CI` is set.
pub fn cluster() -> Option<&'static PgCluster> {
    match CLUSTER.get_or_init(PgCluster::start) {
        Ok(cluster) => Some(cluster),
        Err(reason) => crate::unavailable(reason),
    }
}

/// A fresh, empty database in the process's cluster (see [`cluster`]).
pub fn database() -> Option<PgDatabase> {
    let cluster = cluster()?;
    Some(cluster.create_database())
}

impl PgCluster {
    /// `postgres://` URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the PostgreSQL programs in use (`pg_dump`, `psql`, ...).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A new, empty database; its name is unique within the process (and so the cluster).
    pub fn create_database(&'static self) -> PgDatabase {
        let name = format!("t_{}", self.databases.fetch_add(1, Ordering::Relaxed));
        if let Err(e) = self.psql(&format!("CREATE DATABASE {name}")) {
            panic!("creating test database {name}: {e}");
        }
        PgDatabase { url: self.url(&name), name, cluster: self }
    }

    /// Runs one SQL statement as the superuser in the `postgres` database.
    pub fn psql(&self, sql: &str) -> Result<(), String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", SUPERUSER, "-d", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr).trim())),
        }
    }

    fn start() -> Result<Self, String> {
        let bin = find_bin()?;
        let run_as = run_as()?;
        let dir = tempfile::Builder::new()
            .prefix("casefile-pg-")
            .tempdir()
            .map_err(|e| format!("creating the cluster directory: {e}"))?
            .keep();
        if let Some((uid, gid)) = run_as.as_ref().map(|u| (u.uid, u.gid)) {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        let started = Self::start_in(&bin, &dir, run_as.as_ref());
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    fn start_in(bin: &Path, dir: &Path, run_as: Option<&User>) -> Result<Self, String> {
        let data = dir.join("data");
        let mut initdb = as_user(run_as, "keep", &bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]);
        let out = initdb.stdin(Stdio::null()).output().map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }

        let port = crate::free_port();
        let mut postgres = as_user(run_as, "QUIT", &bin.join("postgres"));
        postgres.arg("-D").arg(&data).arg("-k").arg(dir).arg("-p").arg(port.to_string());
        for setting in [
            "listen_addresses=127.0.0.1",
            // A test cluster: nothing in it must survive a crash of the machine.
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=400",
            "log_min_messages=warning",
        ] {
            postgres.arg("-c").arg(setting);
        }
        let log = std::fs::File::create(dir.join("postmaster.log")).map_err(|e| format!("postmaster log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("postmaster log: {e}"))?;

        // The shell that outlives nothing: TERM (the test process ended) stops the
        // postmaster at once and removes the cluster.
        let mut keeper = Command::new("setpriv");
        keeper.args(["--pdeathsig", "TERM", "--", "sh", "-c"]).arg(
            r#"dir=$1; shift
"$@" & pid=$!
trap 'kill -QUIT $pid 2>/dev/null; wait $pid; rm -rf "$dir"; exit 0' TERM INT HUP
wait $pid
rm -rf "$dir""#,
        );
        keeper.arg("sh").arg(dir).arg(postgres.get_program()).args(postgres.get_args());
        keeper.current_dir(std::env::temp_dir());
        keeper.stdin(Stdio::null()).stdout(log).stderr(log_err);

        let ended: Arc<Mutex<Option<String>>> = Arc::default();
        let (spawned_tx, spawned_rx) = std::sync::mpsc::channel();
        let ended_by_keeper = ended.clone();
        std::thread::Builder::new()
            .name("postgres-keeper".into())
            .spawn(move || {
                // This thread never ends while the postmaster runs: the kernel signals the
                // shell when the thread that spawned it goes, i.e. at process exit.
                let mut child = match keeper.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = spawned_tx.send(Err(format!("starting setpriv/sh/postgres: {e}")));
                        return;
                    }
                };
                let _ = spawned_tx.send(Ok(()));
                let status = child.wait();
                *ended_by_keeper.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{status:?}"));
                // The process goes on without a cluster; keep the thread (and so nothing
                // else) alive: there is nothing left to signal.
            })
            .map_err(|e| format!("keeper thread: {e}"))?;
        spawned_rx.recv().map_err(|e| format!("keeper thread: {e}"))??;

        // Ready when the postmaster writes "ready" into its pid file (what `pg_ctl -w`
        // waits for), bounded.
        let deadline = Instant::now() + START_LIMIT;
        let pid_file = data.join("postmaster.pid");
        loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && text.lines().nth(7).is_some_and(|status| status.trim() == "ready")
            {
                break;
            }
            if let Some(status) = ended.lock().unwrap_or_else(|e| e.into_inner()).clone() {
                let log = std::fs::read_to_string(dir.join("postmaster.log")).unwrap_or_default();
                return Err(format!("postgres exited ({status}) before accepting connections: {log}"));
            }
            if Instant::now() > deadline {
                return Err(format!("postgres did not accept connections within {START_LIMIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { bin: bin.to_owned(), dir: dir.to_owned(), port, databases: AtomicU64::new(0) })
    }

    /// The cluster's directory (data, socket, log); removed when the process ends.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `CASEFILE_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`.
fn find_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("CASEFILE_TEST_PG_BIN") {
        let bin = PathBuf::from(bin);
        return match bin.join("initdb").exists() {
            true => Ok(bin),
            false => Err(format!("CASEFILE_TEST_PG_BIN={} holds no initdb", bin.display())),
        };
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no PostgreSQL binaries (apt-get install postgresql, or set CASEFILE_TEST_PG_BIN)".to_owned())
}

struct User {
    name: String,
    uid: u32,
    gid: u32,
}

/// `None` to run as ourselves; the `postgres` user when we are root (PostgreSQL refuses root).
fn run_as() -> Result<Option<User>, String> {
    let me = std::fs::metadata("/proc/self").map_err(|e| format!("/proc/self: {e}"))?.uid();
    if me != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id").arg(flag).arg("postgres").output().map_err(|e| format!("id: {e}"))?;
        String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| {
            "running as root and there is no `postgres` user to run PostgreSQL as (apt-get install postgresql)"
                .to_owned()
        })
    };
    Ok(Some(User { name: "postgres".into(), uid: id("-u")?, gid: id("-g")? }))
}

/// `program` run through `setpriv`: as `user` when given, with parent-death signal `pdeath`.
fn as_user(user: Option<&User>, pdeath: &str, program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    if let Some(user) = user {
        cmd.args(["--reuid", &user.name, "--regid", &user.name, "--clear-groups"]);
    }
    cmd.args(["--pdeathsig", pdeath, "--"]).arg(program);
    // The test's own directory may be closed to the `postgres` user (a clone under /root),
    // and initdb changes back into it.
    cmd.current_dir(std::env::temp_dir());
    cmd
}
