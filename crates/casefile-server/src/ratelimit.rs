//! Call quotas per tenant, caller and API, as MDE enforces them (100 calls a minute and
//! 1,500 an hour for most APIs; 2 and 120 for `getPackageUri`). Rejected calls count
//! too, so hammering a closed window does not open it sooner.
//!
//! [`InMemoryLimiter`] serves one process (SQLite: one server per database);
//! [`SharedLimiter`] counts in the database that several replicas share, so a quota holds
//! in total across them. Both keep the same windows: a window starts at the caller's first
//! call in it and lasts its length.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use casefile_store::ClusterStore;

/// At most `limit` calls per `length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub length: Duration,
    pub limit: u32,
}

#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Counts one call of `key` in every window. `Err(wait)` when a window is over its
    /// limit: `wait` is when the fullest such window reopens, so a retry after it passes.
    async fn hit(&self, key: &str, windows: &[Window], now: Timestamp) -> Result<(), Duration>;
}

/// Fixed windows that start at a caller's first call in them.
#[derive(Debug, Default)]
pub struct InMemoryLimiter {
    state: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    by_key: HashMap<String, Vec<Slot>>,
    /// Size at which expired entries are dropped next: memory stays proportional to the
    /// callers active within the longest window.
    prune_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    started: Timestamp,
    length: Duration,
    count: u32,
}

impl Slot {
    fn ends(&self) -> Timestamp {
        chrono::Duration::from_std(self.length)
            .ok()
            .and_then(|d| self.started.checked_add_signed(d))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }
}

const MIN_PRUNE: usize = 1024;

#[async_trait]
impl RateLimiter for InMemoryLimiter {
    async fn hit(&self, key: &str, windows: &[Window], now: Timestamp) -> Result<(), Duration> {
        let mut counters = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if counters.by_key.len() >= counters.prune_at.max(MIN_PRUNE) {
            counters.by_key.retain(|_, slots| slots.iter().any(|s| s.ends() > now));
            counters.prune_at = counters.by_key.len() * 2;
        }
        let slots = counters.by_key.entry(key.to_owned()).or_default();
        if slots.len() != windows.len() || slots.iter().zip(windows).any(|(s, w)| s.length != w.length) {
            *slots = windows.iter().map(|w| Slot { started: now, length: w.length, count: 0 }).collect();
        }
        let mut wait: Option<Duration> = None;
        for (slot, window) in slots.iter_mut().zip(windows) {
            if now >= slot.ends() {
                *slot = Slot { started: now, length: window.length, count: 0 };
            }
            slot.count = slot.count.saturating_add(1);
            if slot.count > window.limit {
                let left = (slot.ends() - now).to_std().unwrap_or_default();
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
        }
        match wait {
            None => Ok(()),
            Some(left) => Err(left),
        }
    }
}

/// Windows counted in the shared database ([`ClusterStore::rate_limit_hit`]): one atomic
/// statement per window, so replicas never lose or double a call.
pub struct SharedLimiter {
    cluster: Arc<dyn ClusterStore>,
    /// Counts a call this replica could not count in the database, so an outage of the
    /// shared counters never lets calls through uncounted (the token throttles guard
    /// against guessing).
    fallback: InMemoryLimiter,
}

impl SharedLimiter {
    pub fn new(cluster: Arc<dyn ClusterStore>) -> Self {
        Self { cluster, fallback: InMemoryLimiter::default() }
    }
}

/// Keys are caller-supplied (a client id, an address): stored as their SHA-256, so a key
/// of any length fits the counters' index and reveals nothing.
fn stored_key(key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

#[async_trait]
impl RateLimiter for SharedLimiter {
    async fn hit(&self, key: &str, windows: &[Window], now: Timestamp) -> Result<(), Duration> {
        let mut wait: Option<Duration> = None;
        let stored = stored_key(key);
        for window in windows {
            match self.cluster.rate_limit_hit(&stored, window.length, now).await {
                Ok(counted) if counted.count > u64::from(window.limit) => {
                    let left = (counted.ends - now).to_std().unwrap_or_default();
                    wait = Some(wait.map_or(left, |w| w.max(left)));
                }
                Ok(_) => {}
                // Counted here instead: this replica's share of the quota still holds.
                Err(e) => {
                    tracing::warn!("cannot count the call against its shared quota, counting it locally: {e}");
                    if let Err(left) = self.fallback.hit(key, std::slice::from_ref(window), now).await {
                        wait = Some(wait.map_or(left, |w| w.max(left)));
                    }
                }
            }
        }
        match wait {
            None => Ok(()),
            Some(left) => Err(left),
        }
    }
}

/// Seconds for a `Retry-After` header: rounded up, so a client that waits exactly this
/// long is past the window's end.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs();
    (if wait.subsec_nanos() > 0 { whole + 1 } else { whole }).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Window = Window { length: Duration::from_secs(60), limit: 3 };
    const HOUR: Window = Window { length: Duration::from_secs(3600), limit: 5 };

    fn at(seconds: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[tokio::test]
    async fn the_call_over_the_limit_waits_until_the_window_reopens() {
        let limiter = InMemoryLimiter::default();
        for s in 0..3 {
            assert_eq!(limiter.hit("a", &[MINUTE, HOUR], at(s)).await, Ok(()));
        }
        assert_eq!(limiter.hit("a", &[MINUTE, HOUR], at(10)).await, Err(Duration::from_secs(50)));
        // Another caller is not affected.
        assert_eq!(limiter.hit("b", &[MINUTE, HOUR], at(10)).await, Ok(()));
        // Rejected calls used the hourly quota: 5 of 5 are spent when the minute reopens.
        assert_eq!(limiter.hit("a", &[MINUTE, HOUR], at(60)).await, Ok(()));
        assert_eq!(limiter.hit("a", &[MINUTE, HOUR], at(61)).await, Err(Duration::from_secs(3539)));
        assert_eq!(limiter.hit("a", &[MINUTE, HOUR], at(3600)).await, Ok(()));
    }

    #[tokio::test]
    async fn idle_callers_are_forgotten() {
        let limiter = InMemoryLimiter::default();
        for i in 0..1000 {
            limiter.hit(&format!("early-{i}"), &[MINUTE], at(0)).await.unwrap();
        }
        for i in 0..100 {
            limiter.hit(&format!("late-{i}"), &[MINUTE], at(120)).await.unwrap();
        }
        assert_eq!(limiter.state.lock().unwrap().by_key.len(), 100);
    }

    /// Two replicas' limiters on one PostgreSQL database (the testkit's): the quota holds
    /// in total, the call over it waits exactly as the in-process limiter's would (so the
    /// `429` and its `Retry-After` are the same), and the window reopens on time.
    #[tokio::test]
    async fn replicas_share_one_quota_exactly_and_answer_as_one_server() {
        let Some(db) = casefile_testkit::pg::database() else { return };
        let replica = || async {
            let pool = sqlx::postgres::PgPool::connect(&db.url).await.unwrap();
            Arc::new(casefile_store::PgCluster::new(pool))
        };
        let (a, b) = (replica().await, replica().await);
        // The table comes with the PostgreSQL migrations; this test needs only it.
        sqlx::raw_sql(include_str!("../../casefile-store/migrations/postgres/0002_cluster.sql"))
            .execute(a.pool())
            .await
            .unwrap();
        let (a, b) = (SharedLimiter::new(a), SharedLimiter::new(b));
        let alone = InMemoryLimiter::default();
        let quota = [Window { length: Duration::from_secs(60), limit: 100 }];
        // 60 calls through A, 40 through B, all at once: 100 in total, every one admitted.
        let mut calls = tokio::task::JoinSet::new();
        let (a, b) = (Arc::new(a), Arc::new(b));
        for i in 0..100 {
            let limiter = if i < 60 { a.clone() } else { b.clone() };
            calls.spawn(async move { limiter.hit("t\ncaller\nListMachines", &quota, at(0)).await });
        }
        assert!(calls.join_all().await.iter().all(Result::is_ok), "the first 100 calls in total pass");
        for s in 0..100 {
            alone.hit("t\ncaller\nListMachines", &quota, at(s / 10)).await.unwrap();
        }
        // The 101st, on either replica, is refused with the single server's wait.
        assert_eq!(b.hit("t\ncaller\nListMachines", &quota, at(10)).await, Err(Duration::from_secs(50)));
        assert_eq!(alone.hit("t\ncaller\nListMachines", &quota, at(10)).await, Err(Duration::from_secs(50)));
        assert_eq!(a.hit("t\ncaller\nListMachines", &quota, at(59)).await, Err(Duration::from_secs(1)));
        // Another caller has its own quota; the window reopens a minute after its first call.
        assert_eq!(a.hit("t\nother\nListMachines", &quota, at(10)).await, Ok(()));
        assert_eq!(b.hit("t\ncaller\nListMachines", &quota, at(60)).await, Ok(()));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(50)), 50);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
