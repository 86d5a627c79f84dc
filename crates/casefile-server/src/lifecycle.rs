//! Background upkeep: actions never stay `InProgress` forever. An action whose agent
//! went silent, or that runs past the longest collection allowed, ends `TimeOut`.

use std::time::Duration;

use casefile_proto::action::{ActionStatus, hresult};
use casefile_store::Transition;

use crate::state::AppState;

pub async fn run(state: AppState) {
    let silent = Duration::from_secs(state.config.agents.silent_timeout_seconds);
    let longest = Duration::from_secs(state.config.agents.max_collection_seconds);
    // Check often enough that an action overstays its window by at most a quarter.
    let period = (silent / 4).clamp(Duration::from_millis(200), Duration::from_secs(30));
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        let now = chrono::Utc::now();
        let change = Transition::failure(
            ActionStatus::TimeOut,
            now,
            hresult::TIMEOUT,
            format!(
                "The agent stopped reporting for more than {} seconds during the collection, \
                 or the collection ran longer than {} seconds",
                silent.as_secs(),
                longest.as_secs()
            ),
        );
        let ago = |d: Duration| now - chrono::Duration::from_std(d).unwrap_or_default();
        match state.store.time_out_stalled(ago(silent), ago(longest), &change).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(count = n, "actions timed out: their agents went silent or their collections stalled");
                state.dispatcher.action_changed();
            }
            Err(e) => tracing::error!("lifecycle sweep failed: {e}"),
        }
    }
}
