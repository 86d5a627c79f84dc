//! This replica's side of the coordination through the shared database
//! (`casefile_store::cluster`): work announced by any replica wakes the polls parked
//! here, a key change announced by any replica reloads the keyring here.

use casefile_store::ClusterEvent;
use futures::StreamExt as _;
use futures::stream::BoxStream;

use crate::state::AppState;

/// New work for `machine_id`: wakes its poll if it is parked here, and tells the other
/// replicas, one of which may hold it. A failed announcement is logged: the agent still
/// finds the work at its next poll (at most `agents.poll_wait_seconds` later).
pub async fn wake(state: &AppState, machine_id: &str) {
    state.dispatcher.notify(machine_id);
    if let Err(e) = state.store.announce(machine_id).await {
        state.metrics.store_error(&e);
        tracing::warn!(machine_id, "cannot announce work to the other replicas: {e}");
    }
}

/// The signing keys changed here: every replica reloads them now rather than at its next
/// periodic refresh.
pub async fn keys_changed(state: &AppState) {
    if let Err(e) = state.store.announce_keys().await {
        state.metrics.store_error(&e);
        tracing::warn!(
            "cannot announce the key change to the other replicas (they reload within auth.key_refresh_seconds): {e}"
        );
    }
}

/// Applies what the replicas announce until the stream ends (the database closed).
pub async fn run_events(state: AppState, mut events: BoxStream<'static, ClusterEvent>) {
    while let Some(event) = events.next().await {
        match event {
            ClusterEvent::Work(machine_id) => state.dispatcher.notify(&machine_id),
            ClusterEvent::Keys => reload_keys(&state).await,
            ClusterEvent::Resync => {
                // Announcements made while the listener was away are lost: every parked
                // poll looks at the store again, and the keys are read again.
                state.dispatcher.wake_all();
                reload_keys(&state).await;
            }
        }
    }
}

async fn reload_keys(state: &AppState) {
    if let Err(e) = crate::auth::keys::refresh(state).await {
        tracing::warn!("reloading the signing keys failed: {e}");
    }
}
