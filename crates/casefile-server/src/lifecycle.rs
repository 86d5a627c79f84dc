//! Background upkeep, so nothing waits forever and nothing is kept forever:
//! - a `Pending` action no agent picked up within `pending_timeout` ends `TimeOut`;
//! - an `InProgress` action whose agent went silent, or that runs past the longest
//!   collection allowed, ends `TimeOut`;
//! - a package older than the retention period is deleted (its action keeps its record).
//!
//! With several replicas on one database, only the one holding the lead
//! ([`casefile_store::ClusterStore::try_lead`]) sweeps.
//!
//! One time rule is applied where it matters instead: an action handed to an agent that
//! did not confirm receipt within `claim_lease_seconds` is offered again by that machine's
//! next poll (`routes::agent::next_task`, issue 9 item 11), with the server clock's time.

use std::time::Duration;

use casefile_proto::TenantId;
use casefile_proto::action::{ActionStatus, hresult};
use casefile_proto::time::Timestamp;
use casefile_store::{LeaderGuard, Transition};

use crate::audit;
use crate::clock::seconds_before;
use crate::state::AppState;
use uuid::Uuid;

const OPTIMIZE_EVERY: Duration = Duration::from_secs(3600);

/// Packages deleted per batch, so one sweep never holds a long list in memory.
const DELETE_BATCH: u32 = 256;

/// What one sweep changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    pub pending_timed_out: u64,
    pub running_timed_out: u64,
    pub packages_deleted: u64,
}

/// The role only one replica holds at a time: the sweep, retention deletes and upkeep.
pub const LEADER_ROLE: &str = "lifecycle";

pub async fn run(state: AppState) {
    let silent = Duration::from_secs(state.config.agents.silent_timeout_seconds);
    // Check often enough that an action overstays its window by at most a quarter.
    let period = (silent / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
    let mut ticker = tokio::time::interval(period);
    let mut optimized = tokio::time::Instant::now();
    let mut lead: Option<LeaderGuard> = None;
    loop {
        ticker.tick().await;
        // Replicas share the database: one of them sweeps. A follower asks again every
        // period, so a leader that died is replaced within one (its lock went with its
        // connection).
        if !lead_now(&state, &mut lead).await {
            continue;
        }
        let started = std::time::Instant::now();
        let swept = sweep(&state).await;
        state.metrics.sweep(&swept, started.elapsed());
        if let Err(e) = swept {
            tracing::error!("lifecycle sweep failed: {e}");
        }
        if let Err(e) = state.store.forget_rate_limits(state.now()).await {
            tracing::warn!("forgetting ended rate-limit windows failed: {e}");
        }
        // The planner's statistics follow the data as it grows.
        if optimized.elapsed() >= OPTIMIZE_EVERY {
            optimized = tokio::time::Instant::now();
            if let Err(e) = state.store.optimize().await {
                tracing::warn!("database upkeep failed: {e}");
            }
        }
    }
}

/// Whether this replica leads the upkeep now: keeps the role while its lease holds, else
/// tries to take it.
async fn lead_now(state: &AppState, lead: &mut Option<LeaderGuard>) -> bool {
    if let Some(guard) = lead.as_mut() {
        if guard.still_held().await {
            return true;
        }
        *lead = None;
        state.metrics.leader(false);
        tracing::warn!(role = LEADER_ROLE, "lost the lead of the lifecycle sweeper (database connection gone)");
    }
    match state.store.try_lead(LEADER_ROLE).await {
        Ok(Some(guard)) => {
            *lead = Some(guard);
            state.metrics.leader(true);
            tracing::info!(role = LEADER_ROLE, "this replica leads the lifecycle sweeper");
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(role = LEADER_ROLE, "cannot ask for the lead of the lifecycle sweeper: {e}");
            false
        }
    }
}

/// One pass over every rule, at the server clock's current time.
pub async fn sweep(state: &AppState) -> Result<Sweep, casefile_store::StoreError> {
    let now = state.now();
    let agents = &state.config.agents;
    let ago = |seconds: u64| seconds_before(now, seconds);
    let mut done = Sweep::default();

    let unclaimed = Transition::failure(
        ActionStatus::TimeOut,
        now,
        hresult::TIMEOUT,
        format!("No agent picked up the action within {} seconds", agents.pending_timeout_seconds),
    );
    done.pending_timed_out = state.store.time_out_pending(ago(agents.pending_timeout_seconds), &unclaimed).await?;

    let stalled = Transition::failure(
        ActionStatus::TimeOut,
        now,
        hresult::TIMEOUT,
        format!(
            "The agent stopped reporting for more than {} seconds during the collection, \
             or the collection ran longer than {} seconds",
            agents.silent_timeout_seconds, agents.max_collection_seconds
        ),
    );
    done.running_timed_out = state
        .store
        .time_out_stalled(ago(agents.silent_timeout_seconds), ago(agents.max_collection_seconds), &stalled)
        .await?;

    done.packages_deleted = delete_expired(state, now, ago(state.config.packages.retention_seconds)).await?;
    discard_ended_uploads(state).await?;

    if done.pending_timed_out + done.running_timed_out > 0 {
        // One entry per sweep that timed anything out: the trail shows the sweeper acted,
        // and (one leader at a time) that it acted once.
        let detail = serde_json::json!({"pending": done.pending_timed_out, "inProgress": done.running_timed_out});
        audit::record(state, audit::system_entry(state, None, "action.timeout", "lifecycle", detail)).await;
        tracing::warn!(
            pending = done.pending_timed_out,
            running = done.running_timed_out,
            "actions timed out: not picked up in time, or their agents went silent or stalled"
        );
        state.dispatcher.action_changed();
    }
    // Last, and only logged: a failure here must not cost the entries above.
    let idle = seconds_before(now, state.config.console.idle_minutes.saturating_mul(60));
    if let Err(e) = state.store.delete_ended_sessions(now, idle).await {
        crate::error::log_store_failure(&e, "deleting ended console sessions failed");
    }
    Ok(done)
}

/// Removes the chunks and records of uploads whose action ended (failed, cancelled, timed
/// out; a stored package's upload is removed when it is stored, and here if that failed).
async fn discard_ended_uploads(state: &AppState) -> Result<(), casefile_store::StoreError> {
    // One batch a sweep: a removal that fails is tried again by the next one.
    for upload in state.store.ended_uploads(DELETE_BATCH).await? {
        discard_upload(state, &upload.tenant_id, upload.action_id).await;
    }
    Ok(())
}

/// Marks each expired package deleted before removing its bytes: a link can never point
/// at a package that is half gone. A failed removal is logged and leaves an orphan file,
/// never a visible package without bytes.
async fn delete_expired(
    state: &AppState,
    now: Timestamp,
    stored_before: Timestamp,
) -> Result<u64, casefile_store::StoreError> {
    let mut deleted = 0;
    loop {
        let batch = state.store.expired_packages(stored_before, DELETE_BATCH).await?;
        for package in &batch {
            if !state.store.mark_package_deleted(package.action_id, now).await? {
                // Another sweeper (a replica that led a moment ago) deleted it and said so.
                continue;
            }
            if let Err(e) = state.blobs.delete(&package.blob_key).await {
                state.metrics.blob_error("delete", false);
                tracing::error!(action_id = %package.action_id, key = %package.blob_key, "removing an expired package failed: {e}");
            }
            tracing::info!(action_id = %package.action_id, stored_at = %package.stored_at, "package deleted after its retention period");
            let detail = serde_json::json!({"sha256": package.sha256, "storedAt": casefile_proto::time::format(&package.stored_at)});
            let entry = audit::system_entry(
                state,
                Some(package.tenant_id.as_str()),
                "package.delete",
                &package.action_id.to_string(),
                detail,
            );
            audit::record(state, entry).await;
            deleted += 1;
        }
        if (batch.len() as u32) < DELETE_BATCH {
            return Ok(deleted);
        }
    }
}

/// Removes an upload's chunks and its record: the action ended, or its package was
/// stored or rejected. A failure is logged; the sweeper tries again.
pub async fn discard_upload(state: &AppState, tenant: &TenantId, action_id: Uuid) {
    let prefix = crate::blobs::Blobs::upload_prefix(tenant, action_id);
    match state.blobs.delete_prefix(&prefix).await {
        Ok(removed) => {
            if let Err(e) = state.store.delete_upload(action_id).await {
                crate::error::log_store_failure(&e, "forgetting an ended upload failed");
            } else if removed > 0 {
                tracing::debug!(%action_id, removed, "upload chunks removed");
            }
        }
        Err(e) => {
            state.metrics.blob_error("delete", false);
            tracing::error!(%action_id, %prefix, "removing an upload's chunks failed: {e}");
        }
    }
}
