//! SQLite serves one server (the data directory's lock keeps a second off the file):
//! there is nobody to coordinate with, so every call is [`LocalCluster`]'s.

use std::time::Duration;

use async_trait::async_trait;
use casefile_proto::time::Timestamp;
use futures::stream::BoxStream;

use super::SqliteStore;
use crate::{ClusterEvent, ClusterStore, LeaderGuard, LocalCluster, Result, WindowCount};

#[async_trait]
impl ClusterStore for SqliteStore {
    async fn announce(&self, machine_id: &str) -> Result<()> {
        LocalCluster.announce(machine_id).await
    }

    async fn announce_keys(&self) -> Result<()> {
        LocalCluster.announce_keys().await
    }

    async fn subscribe(&self) -> Result<Option<BoxStream<'static, ClusterEvent>>> {
        LocalCluster.subscribe().await
    }

    async fn rate_limit_hit(&self, key: &str, length: Duration, now: Timestamp) -> Result<WindowCount> {
        LocalCluster.rate_limit_hit(key, length, now).await
    }

    async fn forget_rate_limits(&self, now: Timestamp) -> Result<u64> {
        LocalCluster.forget_rate_limits(now).await
    }

    async fn try_lead(&self, name: &str) -> Result<Option<LeaderGuard>> {
        LocalCluster.try_lead(name).await
    }

    fn shared(&self) -> bool {
        false
    }
}
