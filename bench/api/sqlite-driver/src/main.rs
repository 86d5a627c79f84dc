//! The get-action query (`SELECT <the 17 action columns> FROM machine_actions WHERE id = ?
//! AND tenant_id = ?`, as `casefile-store` sends it) on one SQLite file of 100,000 actions,
//! from 16 tokio tasks on a 2-thread runtime (the server's shape on 2 cores), for 5 s per
//! driver set-up. For each: lookups per second, CPU time per 1,000 lookups (the whole
//! process, from /proc/self/stat) and thread switches per lookup (every thread's
//! voluntary + involuntary switches, from /proc/self/task/*/status).
//!
//! Set-ups: sqlx's pool as `casefile-store` configured it before and after bench/api's
//! change, and rusqlite on threads of its own (a shared job queue, each thread with its own
//! connection and statement cache) or on the runtime's threads (a connection per thread).
//!
//! `cargo run --release` in this directory (its own workspace: CI does not build it).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

const TENANT: &str = "default";
const COLUMNS: &str = "id, machine_id, type, status, title, requestor, requestor_comment, external_id, \
     request_source, computer_dns_name, created_at, updated_at, cancellation_requestor, \
     cancellation_comment, cancelled_at, error_hresult, troubleshoot_info";
const ACTIONS: usize = 100_000;
const MACHINES: usize = 1_000;
const TASKS: usize = 16;
const SECONDS: u64 = 5;

/// The row as the store decodes it (every column owned).
#[derive(Debug)]
#[allow(dead_code)]
struct Action {
    id: String,
    machine_id: String,
    kind: String,
    status: String,
    title: Option<String>,
    requestor: String,
    requestor_comment: String,
    external_id: Option<String>,
    request_source: String,
    computer_dns_name: Option<String>,
    created_at: i64,
    updated_at: i64,
    cancellation_requestor: Option<String>,
    cancellation_comment: Option<String>,
    cancelled_at: Option<i64>,
    error_hresult: i64,
    troubleshoot_info: Option<String>,
}

fn sql() -> String {
    format!("SELECT {COLUMNS} FROM machine_actions WHERE id = ? AND tenant_id = ?")
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n as u64) as usize
    }
}

fn seed(path: &std::path::Path) -> Vec<String> {
    let mut db = rusqlite::Connection::open(path).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.execute_batch(
        "CREATE TABLE machine_actions (
            id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, machine_id TEXT NOT NULL, type TEXT NOT NULL,
            status TEXT NOT NULL, title TEXT, requestor TEXT NOT NULL, requestor_comment TEXT NOT NULL,
            external_id TEXT, request_source TEXT NOT NULL, computer_dns_name TEXT,
            created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, cancellation_requestor TEXT,
            cancellation_comment TEXT, cancelled_at INTEGER, error_hresult INTEGER NOT NULL DEFAULT 0,
            troubleshoot_info TEXT);
         CREATE INDEX actions_by_tenant_created ON machine_actions (tenant_id, created_at DESC, id DESC);",
    )
    .unwrap();
    let tx = db.transaction().unwrap();
    let mut ids = Vec::with_capacity(ACTIONS);
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO machine_actions (id, tenant_id, machine_id, type, status, title, requestor,
                 requestor_comment, request_source, computer_dns_name, created_at, updated_at)
                 VALUES (?, ?, ?, 'CollectInvestigationPackage', 'Succeeded', 'Collect investigation package',
                 'bench', 'seeded', 'PublicApi', ?, ?, ?)",
            )
            .unwrap();
        let mut rng = Rng(0);
        for n in 0..ACTIONS {
            // A UUID's shape, drawn from the generator.
            let id = format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                rng.below(1 << 31),
                rng.below(1 << 16),
                rng.below(1 << 12),
                rng.below(1 << 12),
                rng.below(1 << 47)
            );
            let machine = format!("{:040x}", n % MACHINES);
            let at = 1_790_000_000_000_000i64 + rng.below(90 * 24 * 3600 * 1_000_000) as i64;
            insert.execute(rusqlite::params![id, TENANT, machine, format!("bench-{machine}"), at, at]).unwrap();
            ids.push(id);
        }
    }
    tx.commit().unwrap();
    ids
}

/// CPU time of the whole process so far (`utime + stime`, in clock ticks of 10 ms).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Context switches of every thread of the process so far.
fn switches() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        for line in status.lines() {
            if line.starts_with("voluntary_ctxt_switches") || line.starts_with("nonvoluntary_ctxt_switches") {
                total += line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
            }
        }
    }
    total
}

async fn measure<F, Fut>(name: &str, ids: &Arc<Vec<String>>, lookup: F)
where
    F: Fn(String) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Action> + Send,
{
    let warm_until = Instant::now() + Duration::from_secs(1);
    let until = warm_until + Duration::from_secs(SECONDS);
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS + 1));
    let tasks: Vec<_> = (0..TASKS)
        .map(|n| {
            let (ids, lookup, barrier) = (ids.clone(), lookup.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut rng = Rng(n as u64 + 1);
                let mut count = 0u64;
                let mut waited = false;
                loop {
                    let now = Instant::now();
                    if now >= until {
                        return count;
                    }
                    if now >= warm_until && !waited {
                        barrier.wait().await;
                        waited = true;
                    }
                    let id = ids[rng.below(ids.len())].clone();
                    let action = lookup(id.clone()).await;
                    assert_eq!(action.id, id);
                    if waited {
                        count += 1;
                    }
                }
            })
        })
        .collect();
    barrier.wait().await;
    let (cpu0, sw0, t0) = (cpu(), switches(), Instant::now());
    let mut lookups = 0;
    for task in tasks {
        lookups += task.await.unwrap();
    }
    let (cpu1, sw1, elapsed) = (cpu(), switches(), t0.elapsed());
    let per_second = lookups as f64 / elapsed.as_secs_f64();
    let cpu_per_k = (cpu1 - cpu0).as_secs_f64() * 1000.0 / (lookups as f64 / 1000.0);
    let switches_per = (sw1 - sw0) as f64 / lookups as f64;
    println!("{name:<44} {per_second:>10.0} {cpu_per_k:>14.1} {switches_per:>12.2}");
}

fn from_sqlx(row: &sqlx::sqlite::SqliteRow) -> Action {
    Action {
        id: row.get("id"),
        machine_id: row.get("machine_id"),
        kind: row.get("type"),
        status: row.get("status"),
        title: row.get("title"),
        requestor: row.get("requestor"),
        requestor_comment: row.get("requestor_comment"),
        external_id: row.get("external_id"),
        request_source: row.get("request_source"),
        computer_dns_name: row.get("computer_dns_name"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
        cancellation_requestor: row.get("cancellation_requestor"),
        cancellation_comment: row.get("cancellation_comment"),
        cancelled_at: row.get("cancelled_at"),
        error_hresult: row.get("error_hresult"),
        troubleshoot_info: row.get("troubleshoot_info"),
    }
}

fn from_rusqlite(row: &rusqlite::Row<'_>) -> rusqlite::Result<Action> {
    Ok(Action {
        id: row.get(0)?,
        machine_id: row.get(1)?,
        kind: row.get(2)?,
        status: row.get(3)?,
        title: row.get(4)?,
        requestor: row.get(5)?,
        requestor_comment: row.get(6)?,
        external_id: row.get(7)?,
        request_source: row.get(8)?,
        computer_dns_name: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
        cancellation_requestor: row.get(12)?,
        cancellation_comment: row.get(13)?,
        cancelled_at: row.get(14)?,
        error_hresult: row.get(15)?,
        troubleshoot_info: row.get(16)?,
    })
}

fn sqlx_options(path: &std::path::Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
}

fn open_rusqlite(path: &std::path::Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(path).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.pragma_update(None, "synchronous", "NORMAL").unwrap();
    db.pragma_update(None, "foreign_keys", "ON").unwrap();
    db
}

fn lookup(db: &rusqlite::Connection, id: &str) -> Action {
    let mut statement = db.prepare_cached(&sql()).unwrap();
    statement.query_row(rusqlite::params![id, TENANT], from_rusqlite).unwrap()
}

type Job = (String, tokio::sync::oneshot::Sender<Action>);

/// `threads` threads, each with its own connection, serving one queue of lookups.
fn rusqlite_threads(path: &std::path::Path, threads: usize) -> flume::Sender<Job> {
    let (tx, rx) = flume::bounded::<Job>(1024);
    for _ in 0..threads {
        let (rx, db) = (rx.clone(), open_rusqlite(path));
        std::thread::spawn(move || {
            while let Ok((id, reply)) = rx.recv() {
                let _ = reply.send(lookup(&db, &id));
            }
        });
    }
    tx
}

thread_local! {
    static RUNTIME_DB: RefCell<Option<rusqlite::Connection>> = const { RefCell::new(None) };
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.sqlite3");
    let ids = Arc::new(seed(&path));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async move {
        println!(
            "{ACTIONS} actions, {TASKS} tasks on 2 runtime threads, {SECONDS} s each\n\n{:<44} {:>10} {:>14} {:>12}",
            "set-up", "lookups/s", "CPU ms/1000", "switches/op"
        );

        // casefile-store before: pinged on acquire, pinged twice on release.
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .after_release(|conn, _| {
                Box::pin(async move {
                    sqlx::Connection::ping(conn).await?;
                    Ok(!sqlx::Connection::is_in_transaction(conn))
                })
            })
            .connect_with(sqlx_options(&path))
            .await
            .unwrap();
        let query = {
            let pool = pool.clone();
            move |id: String| {
                let pool = pool.clone();
                async move {
                    let sql = sql();
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(id)
                        .bind(TENANT)
                        .fetch_optional(&pool)
                        .await
                        .unwrap()
                        .unwrap();
                    from_sqlx(&row)
                }
            }
        };
        measure("sqlx pool, 8 conns (store before)", &ids, query).await;
        pool.close().await;

        // casefile-store after: no ping on acquire, sqlx's one ping on release.
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .before_acquire(|conn, _| Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) }))
            .connect_with(sqlx_options(&path))
            .await
            .unwrap();
        let query = {
            let pool = pool.clone();
            move |id: String| {
                let pool = pool.clone();
                async move {
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql()))
                        .bind(id)
                        .bind(TENANT)
                        .fetch_optional(&pool)
                        .await
                        .unwrap()
                        .unwrap();
                    from_sqlx(&row)
                }
            }
        };
        measure("sqlx pool, 8 conns (store after)", &ids, query).await;

        // The same pool, one connection held by each task: no pool round trip at all.
        let query = {
            let pool = pool.clone();
            move |id: String| {
                let pool = pool.clone();
                async move {
                    let mut conn = pool.acquire().await.unwrap();
                    let row = sqlx::query(sqlx::AssertSqlSafe(sql()))
                        .bind(id)
                        .bind(TENANT)
                        .fetch_optional(&mut *conn)
                        .await
                        .unwrap()
                        .unwrap();
                    from_sqlx(&row)
                }
            }
        };
        measure("sqlx pool, explicit acquire (after)", &ids, query).await;
        pool.close().await;

        for threads in [1, 2, 4] {
            let jobs = rusqlite_threads(&path, threads);
            let query = move |id: String| {
                let jobs = jobs.clone();
                async move {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    jobs.send_async((id, tx)).await.unwrap();
                    rx.await.unwrap()
                }
            };
            measure(&format!("rusqlite, {threads} thread(s) of its own"), &ids, query).await;
        }

        let runtime_path = path.clone();
        let query = move |id: String| {
            let path = runtime_path.clone();
            async move {
                RUNTIME_DB.with(|db| {
                    let mut db = db.borrow_mut();
                    lookup(db.get_or_insert_with(|| open_rusqlite(&path)), &id)
                })
            }
        };
        measure("rusqlite on the runtime threads (no hop)", &ids, query).await;
    });
}
