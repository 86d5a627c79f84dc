//! Coordination between replicas (issue 11, "Replicas"): several `casefile server`
//! processes on one database behave as one server. Everything here goes through the
//! database the replicas already share; there is no broker of our own.
//!
//! - [`ClusterStore::announce`] / [`ClusterStore::subscribe`]: "machine X has work" and
//!   "the signing keys changed", delivered to every replica (PostgreSQL `LISTEN/NOTIFY`).
//! - [`ClusterStore::rate_limit_hit`]: one shared counter per caller and window, so a quota
//!   holds in total across replicas, exactly.
//! - [`ClusterStore::try_lead`]: one replica at a time runs the periodic upkeep (PostgreSQL
//!   advisory lock held by a connection: a killed leader's lock goes with its connection).
//!
//! [`LocalCluster`] is the single-node answer (SQLite: one server per database); the
//! PostgreSQL one is [`PgCluster`].

use std::time::Duration;

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use futures::stream::BoxStream;

use crate::{Result, StoreError};

/// PostgreSQL notification channels.
pub const WORK_CHANNEL: &str = "casefile_work";
pub const KEYS_CHANNEL: &str = "casefile_keys";

/// Something another replica (or this one) announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The machine has work: wake its parked poll, if it is parked here.
    Work(String),
    /// The signing keys changed (rotation, retirement): reload them.
    Keys,
    /// The connection carrying the events was lost and is back: anything may have been
    /// missed meanwhile, so wake every parked poll and reload the keys.
    Resync,
}

/// One window's count after a call was counted in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    /// Calls counted in the window, this one included (refused calls count too).
    pub count: u64,
    /// When the window ends (it started at the first call counted in it).
    pub ends: Timestamp,
}

/// Held while this replica leads a role; dropping it gives the role up.
pub struct LeaderGuard {
    lease: Box<dyn Lease>,
}

impl LeaderGuard {
    pub fn new(lease: impl Lease + 'static) -> Self {
        Self { lease: Box::new(lease) }
    }

    /// Whether the role is still ours: `false` once the connection holding it is gone
    /// (another replica may lead by then), after which the guard is useless.
    pub async fn still_held(&mut self) -> bool {
        self.lease.still_held().await
    }
}

impl std::fmt::Debug for LeaderGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaderGuard")
    }
}

/// What holds a role for a [`LeaderGuard`].
#[async_trait]
pub trait Lease: Send + Sync {
    async fn still_held(&mut self) -> bool;
}

#[async_trait]
pub trait ClusterStore: Send + Sync + 'static {
    /// Tells every replica that `machine_id` has work (a new action, a cancellation).
    async fn announce(&self, machine_id: &str) -> Result<()>;
    /// Tells every replica that the signing keys changed.
    async fn announce_keys(&self) -> Result<()>;
    /// What other replicas announce, for as long as the stream is polled; `None` when
    /// there are no other replicas to hear from (a single-node database).
    async fn subscribe(&self) -> Result<Option<BoxStream<'static, ClusterEvent>>>;
    /// Counts one call of `key` in its window of `length` at `now`: a window starts at the
    /// first call counted in it and ends `length` later, after which the next call starts
    /// a new one. Atomic across replicas.
    async fn rate_limit_hit(&self, key: &str, length: Duration, now: Timestamp) -> Result<WindowCount>;
    /// Forgets windows that ended by `now`; how many.
    async fn forget_rate_limits(&self, now: Timestamp) -> Result<u64>;
    /// Takes the role `name` if no replica holds it. `None`: another one leads.
    async fn try_lead(&self, name: &str) -> Result<Option<LeaderGuard>>;
    /// Whether quotas must be counted here ([`ClusterStore::rate_limit_hit`]) rather than
    /// in the process: true when several replicas share the database.
    fn shared(&self) -> bool;
}

/// One server alone on its database (SQLite): nothing to tell anyone, every role is
/// ours, quotas are counted in the process.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalCluster;

struct AlwaysHeld;

#[async_trait]
impl Lease for AlwaysHeld {
    async fn still_held(&mut self) -> bool {
        true
    }
}

#[async_trait]
impl ClusterStore for LocalCluster {
    async fn announce(&self, _machine_id: &str) -> Result<()> {
        Ok(())
    }

    async fn announce_keys(&self) -> Result<()> {
        Ok(())
    }

    async fn subscribe(&self) -> Result<Option<BoxStream<'static, ClusterEvent>>> {
        Ok(None)
    }

    async fn rate_limit_hit(&self, _key: &str, _length: Duration, _now: Timestamp) -> Result<WindowCount> {
        Err(StoreError::Query("a single-node store counts quotas in the process".to_owned()))
    }

    async fn forget_rate_limits(&self, _now: Timestamp) -> Result<u64> {
        Ok(0)
    }

    async fn try_lead(&self, _name: &str) -> Result<Option<LeaderGuard>> {
        Ok(Some(LeaderGuard::new(AlwaysHeld)))
    }

    fn shared(&self) -> bool {
        false
    }
}

pub use postgres::PgCluster;
pub(crate) use postgres::lock_key;

mod postgres {
    use std::time::Duration;

    use async_trait::async_trait;
    use casefile_proto::time::Timestamp;
    use futures::StreamExt as _;
    use futures::stream::BoxStream;
    use sqlx::postgres::{PgConnection, PgListener, PgPool};
    use sqlx::{Connection as _, Row as _};

    use super::*;

    /// Coordination over a PostgreSQL pool: `pg_notify`, `LISTEN` on a connection of its
    /// own, an `UNLOGGED` counter table and session advisory locks.
    #[derive(Debug, Clone)]
    pub struct PgCluster {
        pool: PgPool,
        liveness: Liveness,
    }

    /// How a connection this module holds for a long time (the listener, a leader's lock)
    /// is known to be alive. A peer that vanished without closing (a cut network, a frozen
    /// host) sends nothing, and TCP would take a quarter of an hour to say so: after
    /// `quiet` without a word the listener asks the database a question, and a connection
    /// that does not answer within `answer` is given up as dead.
    #[derive(Debug, Clone, Copy)]
    struct Liveness {
        quiet: Duration,
        answer: Duration,
    }

    /// Longest pause between two attempts to reconnect the listener.
    const RECONNECT_AT_MOST: Duration = Duration::from_secs(5);

    impl PgCluster {
        pub fn new(pool: PgPool) -> Self {
            Self { pool, liveness: Liveness { quiet: Duration::from_secs(30), answer: Duration::from_secs(10) } }
        }

        /// The same with other liveness windows (tests, to see a dead peer found quickly).
        pub fn with_liveness(pool: PgPool, quiet: Duration, answer: Duration) -> Self {
            Self { pool, liveness: Liveness { quiet, answer } }
        }

        pub fn pool(&self) -> &PgPool {
            &self.pool
        }

        async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
            sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(&self.pool).await?;
            Ok(())
        }

        /// A listening connection and its session's pid. It never reconnects by itself:
        /// every reconnection goes through [`ClusterStore::subscribe`]'s loop, which says
        /// `Resync` once listening again.
        async fn listener(pool: &PgPool) -> Result<(PgListener, i32)> {
            let mut listener = PgListener::connect_with(pool).await?;
            listener.eager_reconnect(false);
            listener.listen_all([WORK_CHANNEL, KEYS_CHANNEL]).await?;
            let session: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut listener).await?;
            Ok((listener, session))
        }
    }

    /// The advisory-lock key of a role: the first 8 bytes of SHA-256("casefile:" + name),
    /// so roles never collide with each other and are unlikely to meet another
    /// application's locks on the same database.
    pub fn lock_key(name: &str) -> i64 {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("casefile:{name}").as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }

    /// A session advisory lock: held for as long as this connection lives, released by
    /// PostgreSQL when the connection ends, whether we close it or the process dies.
    struct AdvisoryLease {
        connection: Option<PgConnection>,
        answer: Duration,
    }

    #[async_trait]
    impl Lease for AdvisoryLease {
        async fn still_held(&mut self) -> bool {
            let Some(connection) = self.connection.as_mut() else { return false };
            // A connection that does not answer may have lost its session (and the lock)
            // on the database's side already: the role is given up rather than assumed.
            if matches!(tokio::time::timeout(self.answer, connection.ping()).await, Ok(Ok(()))) {
                return true;
            }
            // The session is gone and its lock with it; never trust this connection again.
            self.connection = None;
            false
        }
    }

    #[async_trait]
    impl ClusterStore for PgCluster {
        async fn announce(&self, machine_id: &str) -> Result<()> {
            self.notify(WORK_CHANNEL, machine_id).await
        }

        async fn announce_keys(&self) -> Result<()> {
            self.notify(KEYS_CHANNEL, "").await
        }

        async fn subscribe(&self) -> Result<Option<BoxStream<'static, ClusterEvent>>> {
            // Connected now, so a database that cannot be reached fails the start.
            let first = Self::listener(&self.pool).await?;
            let pool = self.pool.clone();
            let liveness = self.liveness;
            let events = futures::stream::unfold(
                (pool, Some(first), 0u32),
                move |(pool, mut listener, mut failures)| async move {
                    loop {
                        let Some(current) = listener.as_mut() else {
                            // Reconnecting by hand (not inside `try_recv`) so that the resync is
                            // sent only once LISTEN is back: nothing announced after it is missed.
                            match Self::listener(&pool).await {
                                Ok(fresh) => {
                                    tracing::info!("listening for other replicas' announcements again");
                                    return Some((ClusterEvent::Resync, (pool, Some(fresh), 0)));
                                }
                                Err(_) if pool.is_closed() => return None,
                                Err(e) => {
                                    failures = failures.saturating_add(1);
                                    let pause = (Duration::from_millis(100) * 2u32.saturating_pow(failures.min(6)))
                                        .min(RECONNECT_AT_MOST);
                                    tracing::warn!(
                                        "cannot listen for other replicas' announcements (retrying in {pause:?}): {e}"
                                    );
                                    tokio::time::sleep(pause).await;
                                    continue;
                                }
                            }
                        };
                        let (current, session) = (&mut current.0, current.1);
                        // `try_recv` is cancel-safe (sqlx reads a message whole or not at all).
                        let Ok(received) = tokio::time::timeout(liveness.quiet, current.try_recv()).await else {
                            // The same session still, or one sqlx opened in its place (whatever
                            // was announced in between is gone), or none that answers.
                            let probe =
                                sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()").fetch_one(&mut *current);
                            match tokio::time::timeout(liveness.answer, probe).await {
                                Ok(Ok(pid)) if pid == session => {}
                                Ok(Ok(pid)) => {
                                    tracing::warn!("the connection listening for other replicas was replaced");
                                    listener.as_mut().expect("listening").1 = pid;
                                    return Some((ClusterEvent::Resync, (pool, listener, failures)));
                                }
                                _ => {
                                    tracing::warn!(
                                        "the connection listening for other replicas stopped answering: reconnecting"
                                    );
                                    listener = None;
                                }
                            }
                            continue;
                        };
                        match received {
                            Ok(Some(notification)) => {
                                let event = match notification.channel() {
                                    KEYS_CHANNEL => ClusterEvent::Keys,
                                    _ => ClusterEvent::Work(notification.payload().to_owned()),
                                };
                                return Some((event, (pool, listener, failures)));
                            }
                            // Lost (the listener does not reconnect by itself): reconnected
                            // above, which then says `Resync`.
                            Ok(None) => {
                                tracing::warn!("the connection listening for other replicas was lost");
                                listener = None;
                            }
                            Err(sqlx::Error::PoolClosed) => return None,
                            Err(e) => {
                                tracing::warn!("listening for other replicas' announcements failed: {e}");
                                listener = None;
                            }
                        }
                    }
                },
            );
            Ok(Some(events.boxed()))
        }

        async fn rate_limit_hit(&self, key: &str, length: Duration, now: Timestamp) -> Result<WindowCount> {
            let length_ms = i64::try_from(length.as_millis()).unwrap_or(i64::MAX);
            let now_us = now.timestamp_micros();
            let ends_us = now_us.saturating_add(length_ms.saturating_mul(1000));
            // One statement: the row lock taken by ON CONFLICT serialises racing replicas,
            // so every call is counted once. All SET expressions read the old row.
            let row = sqlx::query(
                "INSERT INTO rate_limit_windows (key, length_ms, ends_us, count) VALUES ($1, $2, $3, 1) \
                 ON CONFLICT (key, length_ms) DO UPDATE SET \
                   ends_us = CASE WHEN rate_limit_windows.ends_us <= $4 THEN EXCLUDED.ends_us \
                                  ELSE rate_limit_windows.ends_us END, \
                   count = CASE WHEN rate_limit_windows.ends_us <= $4 THEN 1 \
                                ELSE rate_limit_windows.count + 1 END \
                 RETURNING ends_us, count",
            )
            .bind(key)
            .bind(length_ms)
            .bind(ends_us)
            .bind(now_us)
            .fetch_one(&self.pool)
            .await?;
            let ends_us: i64 = row.try_get("ends_us")?;
            let count: i64 = row.try_get("count")?;
            let ends = chrono::DateTime::from_timestamp_micros(ends_us)
                .ok_or_else(|| StoreError::Corrupt(format!("rate-limit window end {ends_us}")))?;
            Ok(WindowCount { count: u64::try_from(count).unwrap_or(0), ends })
        }

        async fn forget_rate_limits(&self, now: Timestamp) -> Result<u64> {
            let done = sqlx::query("DELETE FROM rate_limit_windows WHERE ends_us <= $1")
                .bind(now.timestamp_micros())
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        }

        async fn try_lead(&self, name: &str) -> Result<Option<LeaderGuard>> {
            // A connection of its own, taken out of the pool: the lock lives exactly as
            // long as it does.
            let mut connection = self.pool.acquire().await?.detach();
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(lock_key(name))
                .fetch_one(&mut connection)
                .await?;
            if !locked {
                let _ = connection.close().await;
                return Ok(None);
            }
            Ok(Some(LeaderGuard::new(AdvisoryLease { connection: Some(connection), answer: self.liveness.answer })))
        }

        fn shared(&self) -> bool {
            true
        }
    }
}

/// The PostgreSQL coordination against a real server (the testkit's throwaway cluster):
/// notifications cross connections, a lost listener resyncs, one leader at a time, and
/// the shared counter never loses or doubles a call under racing takers.
#[cfg(test)]
mod pg_tests {
    use std::time::Duration;

    use futures::StreamExt as _;
    use sqlx::postgres::{PgPool, PgPoolOptions};

    use super::*;

    /// Any single wait here; a hang fails the test instead of blocking CI.
    const WAIT_LIMIT: Duration = Duration::from_secs(30);

    async fn pool(url: &str) -> PgPool {
        PgPoolOptions::new().max_connections(8).connect(url).await.unwrap()
    }

    /// Two "replicas" (pools of their own) on one fresh database with this module's table.
    async fn replicas() -> Option<(casefile_testkit::pg::PgDatabase, PgCluster, PgCluster)> {
        let db = casefile_testkit::pg::database()?;
        let (a, b) = (pool(&db.url).await, pool(&db.url).await);
        sqlx::raw_sql(include_str!("../migrations/postgres/0002_cluster.sql")).execute(&a).await.unwrap();
        Some((db, PgCluster::new(a), PgCluster::new(b)))
    }

    async fn next(events: &mut BoxStream<'static, ClusterEvent>) -> ClusterEvent {
        tokio::time::timeout(WAIT_LIMIT, events.next()).await.expect("an event in time").expect("the stream goes on")
    }

    #[tokio::test]
    async fn an_announcement_reaches_the_other_replica() {
        let Some((_db, a, b)) = replicas().await else { return };
        let mut events = b.subscribe().await.unwrap().expect("PostgreSQL replicas hear each other");
        a.announce("machine-1").await.unwrap();
        assert_eq!(next(&mut events).await, ClusterEvent::Work("machine-1".into()));
        a.announce_keys().await.unwrap();
        assert_eq!(next(&mut events).await, ClusterEvent::Keys);
        // Payloads are not interpreted: an id with SQL in it is just an id.
        a.announce("x'); DROP TABLE rate_limit_windows; --").await.unwrap();
        assert_eq!(next(&mut events).await, ClusterEvent::Work("x'); DROP TABLE rate_limit_windows; --".into()));
        assert!(a.rate_limit_hit("k", Duration::from_secs(60), chrono::Utc::now()).await.is_ok());
    }

    #[tokio::test]
    async fn a_lost_listener_resyncs_and_keeps_listening() {
        let Some((_db, a, b)) = replicas().await else { return };
        let mut events = b.subscribe().await.unwrap().unwrap();
        // The database ends the listening session (a restart, a network cut, an admin).
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query = 'SELECT pg_backend_pid()' AND pid <> pg_backend_pid()",
        )
        .fetch_one(a.pool())
        .await
        .unwrap();
        assert_eq!(ended, 1, "one listening session");
        assert_eq!(next(&mut events).await, ClusterEvent::Resync, "missed announcements are made up for");
        a.announce("machine-2").await.unwrap();
        assert_eq!(next(&mut events).await, ClusterEvent::Work("machine-2".into()));
    }

    /// A TCP relay to the database whose connections can be frozen: bytes stop flowing
    /// both ways while both sockets stay open, as when a network cuts without a reset or
    /// a host hangs. Connections opened after a freeze flow normally.
    struct FreezingRelay {
        port: u16,
        frozen: std::sync::Arc<std::sync::Mutex<Vec<std::sync::Arc<std::sync::atomic::AtomicBool>>>>,
        accept: tokio::task::JoinHandle<()>,
    }

    impl FreezingRelay {
        async fn to(target: std::net::SocketAddr) -> Self {
            use std::sync::atomic::{AtomicBool, Ordering};
            use std::sync::{Arc, Mutex};
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let frozen: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
            let registry = frozen.clone();
            let accept = tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else { continue };
                    let flag = Arc::new(AtomicBool::new(false));
                    registry.lock().unwrap().push(flag.clone());
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    for (from, to) in [
                        (
                            Box::new(client_read) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                            Box::new(server_write) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                        ),
                        (Box::new(server_read), Box::new(client_write)),
                    ] {
                        let flag = flag.clone();
                        tokio::spawn(async move {
                            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                            let mut buf = vec![0u8; 16 * 1024];
                            let mut open = (from, to);
                            while let Ok(n) = open.0.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                                if flag.load(Ordering::SeqCst) {
                                    // Swallowed, sockets kept open: nothing ever arrives.
                                    std::future::pending::<()>().await;
                                }
                                if open.1.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            open.1.shutdown().await.ok();
                            drop(open);
                        });
                    }
                }
            });
            Self { port, frozen, accept }
        }

        fn freeze_open_connections(&self) {
            for flag in self.frozen.lock().unwrap().drain(..) {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    impl Drop for FreezingRelay {
        fn drop(&mut self) {
            self.accept.abort();
        }
    }

    /// A pool that reaches the database through `relay`.
    async fn pool_through(url: &str, relay: &FreezingRelay) -> PgPool {
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        PgPoolOptions::new().max_connections(8).connect_with(options.port(relay.port)).await.unwrap()
    }

    fn database_address(url: &str) -> std::net::SocketAddr {
        let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        format!("{}:{}", options.get_host(), options.get_port()).parse().unwrap()
    }

    /// A short quiet window so the test finds a dead peer quickly; what it checks is that
    /// it is found at all (with the production windows, in 30 + 10 s). The answer window
    /// leaves a healthy database on a loaded machine time to answer.
    const QUICK: (Duration, Duration) = (Duration::from_millis(300), Duration::from_secs(3));

    #[tokio::test]
    async fn a_listener_whose_connection_goes_silent_reconnects_and_resyncs() {
        let Some((db, a, _)) = replicas().await else { return };
        let relay = FreezingRelay::to(database_address(&db.url)).await;
        let b = PgCluster::with_liveness(pool_through(&db.url, &relay).await, QUICK.0, QUICK.1);
        let mut events = b.subscribe().await.unwrap().unwrap();
        a.announce("before").await.unwrap();
        assert_eq!(next(&mut events).await, ClusterEvent::Work("before".into()));

        // The path to the database goes silent without a reset: what is announced now
        // never reaches this listener, and nothing tells it so.
        relay.freeze_open_connections();
        a.announce("lost in the cut").await.unwrap();
        assert_eq!(next(&mut events).await, ClusterEvent::Resync, "a silent connection is found dead");
        a.announce("after").await.unwrap();
        assert_eq!(next(&mut events).await, ClusterEvent::Work("after".into()), "listening again");
    }

    #[tokio::test]
    async fn a_quiet_but_healthy_listener_is_kept() {
        let Some((db, a, _)) = replicas().await else { return };
        let b = PgCluster::with_liveness(pool(&db.url).await, QUICK.0, Duration::from_secs(30));
        let mut events = b.subscribe().await.unwrap().unwrap();
        // The listening session, found before the stream is first polled (so before any
        // probe): `subscribe` ended by asking its pid.
        let (session, subscribed): (i32, f64) = sqlx::query_as(
            "SELECT pid, extract(epoch FROM query_start)::float8 FROM pg_stat_activity \
             WHERE datname = current_database() AND query = 'SELECT pg_backend_pid()' AND pid <> pg_backend_pid()",
        )
        .fetch_one(a.pool())
        .await
        .unwrap();
        // A quiet window passes and ends in a probe the database answers, on the same
        // session; the listener is kept (a reconnect would say Resync first).
        let probed = async {
            loop {
                let last: f64 = sqlx::query_scalar(
                    "SELECT extract(epoch FROM query_start)::float8 FROM pg_stat_activity WHERE pid = $1",
                )
                .bind(session)
                .fetch_one(a.pool())
                .await
                .unwrap();
                if last > subscribed {
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        // The stream works only while polled, as the server's event loop polls it.
        tokio::select! {
            event = events.next() => panic!("nothing was announced, yet: {event:?}"),
            probed = tokio::time::timeout(WAIT_LIMIT, probed) => probed.expect("the listener probed its connection"),
        }
        a.announce("still here").await.unwrap();
        assert_eq!(next(&mut events).await, ClusterEvent::Work("still here".into()), "no resync: same session");
    }

    #[tokio::test]
    async fn a_leader_whose_connection_goes_silent_gives_the_role_up() {
        let Some((db, _, b)) = replicas().await else { return };
        let relay = FreezingRelay::to(database_address(&db.url)).await;
        let a = PgCluster::with_liveness(pool_through(&db.url, &relay).await, QUICK.0, QUICK.1);
        let mut lead = a.try_lead("sweeper").await.unwrap().expect("the first asker leads");
        assert!(lead.still_held().await);
        relay.freeze_open_connections();
        // The database still sees the session and its lock; the frozen side cannot tell
        // whether it still leads, so it must not act as the leader.
        assert!(!lead.still_held().await, "an unanswered check is not a held role");
        assert!(b.try_lead("sweeper").await.unwrap().is_none(), "the lock is still the stale session's");
    }

    #[tokio::test]
    async fn one_replica_leads_and_a_dead_leaders_role_passes_on() {
        let Some((_db, a, b)) = replicas().await else { return };
        let mut lead = a.try_lead("sweeper").await.unwrap().expect("the first asker leads");
        assert!(b.try_lead("sweeper").await.unwrap().is_none(), "one leader at a time");
        assert!(a.try_lead("sweeper").await.unwrap().is_none(), "even for the same replica's second ask");
        let _other_role = b.try_lead("another role").await.unwrap().expect("roles are independent");
        assert!(lead.still_held().await);

        // Given up: the next asker leads.
        drop(lead);
        let mut lead = wait_for_lead(&b, "sweeper").await;

        // The leader's connection dies (kill -9 of its process looks the same to the
        // database): the lock goes with it, and the former leader knows it lost the role.
        // A bigint advisory key shows in pg_locks as its high and low 32 bits.
        let key = postgres::lock_key("sweeper");
        let ended: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
             WHERE locktype = 'advisory' AND granted AND classid::bigint = $1 AND objid::bigint = $2",
        )
        .bind((key >> 32) & 0xffff_ffff)
        .bind(key & 0xffff_ffff)
        .fetch_one(a.pool())
        .await
        .unwrap();
        assert_eq!(ended, 1);
        assert!(!lead.still_held().await, "the former leader sees it lost the role");
        wait_for_lead(&a, "sweeper").await;
    }

    /// `try_lead` until granted: the database releases a closed session's locks as the
    /// session ends, which is just after the client sees it closed.
    async fn wait_for_lead(cluster: &PgCluster, name: &str) -> LeaderGuard {
        tokio::time::timeout(WAIT_LIMIT, async {
            loop {
                if let Some(lead) = cluster.try_lead(name).await.unwrap() {
                    return lead;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the role was released")
    }

    #[tokio::test]
    async fn the_shared_counter_is_exact_under_racing_takers() {
        let Some((_db, a, b)) = replicas().await else { return };
        let now = chrono::Utc::now();
        let minute = Duration::from_secs(60);
        let mut takers = tokio::task::JoinSet::new();
        for i in 0..200 {
            let cluster = if i % 2 == 0 { a.clone() } else { b.clone() };
            takers.spawn(async move { cluster.rate_limit_hit("tenant\ncaller\napi", minute, now).await.unwrap() });
        }
        let mut counts: Vec<u64> = takers.join_all().await.into_iter().map(|c| c.count).collect();
        counts.sort_unstable();
        assert_eq!(counts, (1..=200).collect::<Vec<u64>>(), "every call counted once");

        // Another window length of the same key, and another key, count apart.
        assert_eq!(a.rate_limit_hit("tenant\ncaller\napi", Duration::from_secs(3600), now).await.unwrap().count, 1);
        assert_eq!(b.rate_limit_hit("another", minute, now).await.unwrap().count, 1);

        // The window ends a minute after its first call; the next call opens a new one.
        let counted =
            a.rate_limit_hit("tenant\ncaller\napi", minute, now + chrono::Duration::seconds(59)).await.unwrap();
        assert_eq!(counted.count, 201);
        assert_eq!(counted.ends.timestamp_micros(), (now + chrono::Duration::seconds(60)).timestamp_micros());
        let later = now + chrono::Duration::seconds(60);
        let counted = b.rate_limit_hit("tenant\ncaller\napi", minute, later).await.unwrap();
        assert_eq!(
            (counted.count, counted.ends.timestamp_micros()),
            (1, (later + chrono::Duration::seconds(60)).timestamp_micros())
        );

        // Ended windows are forgotten: at now+60 s, the other key's minute has ended.
        assert_eq!(a.forget_rate_limits(later).await.unwrap(), 1);
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM rate_limit_windows").fetch_one(a.pool()).await.unwrap();
        assert_eq!(left, 2, "the renewed minute and the hour remain");
    }

    #[tokio::test]
    async fn a_single_node_store_leads_and_hears_nothing() {
        let local = LocalCluster;
        assert!(local.subscribe().await.unwrap().is_none());
        assert!(local.try_lead("sweeper").await.unwrap().expect("always granted").still_held().await);
        assert!(!local.shared());
    }
}
