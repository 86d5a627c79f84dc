//! Replicas on one PostgreSQL database coordinate through it: [`PgCluster`] over this
//! store's pool (NOTIFY/LISTEN, the shared rate-limit windows of migration 0002, advisory
//! locks).

use std::time::Duration;

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use futures::stream::BoxStream;

use super::PgStore;
use crate::{ClusterEvent, ClusterStore, LeaderGuard, PgCluster, Result, WindowCount};

impl PgStore {
    fn cluster(&self) -> PgCluster {
        PgCluster::new(self.pool().clone())
    }
}

#[async_trait]
impl ClusterStore for PgStore {
    async fn announce(&self, machine_id: &str) -> Result<()> {
        self.cluster().announce(machine_id).await
    }

    async fn announce_keys(&self) -> Result<()> {
        self.cluster().announce_keys().await
    }

    async fn subscribe(&self) -> Result<Option<BoxStream<'static, ClusterEvent>>> {
        self.cluster().subscribe().await
    }

    async fn rate_limit_hit(&self, key: &str, length: Duration, now: Timestamp) -> Result<WindowCount> {
        self.cluster().rate_limit_hit(key, length, now).await
    }

    async fn forget_rate_limits(&self, now: Timestamp) -> Result<u64> {
        self.cluster().forget_rate_limits(now).await
    }

    async fn try_lead(&self, name: &str) -> Result<Option<LeaderGuard>> {
        self.cluster().try_lead(name).await
    }

    fn shared(&self) -> bool {
        true
    }
}
