//! Wakes an agent's pending long-poll when work arrives for its machine, in this process.
//! Work created on another replica arrives through `cluster::run_events` (PostgreSQL
//! LISTEN/NOTIFY), which calls the same [`Dispatcher::notify`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub struct Dispatcher {
    machines: Mutex<HashMap<String, Arc<Notify>>>,
    /// Bumped whenever any action changes status, so waiters (tests, later webhooks and
    /// the console) react to changes instead of polling.
    changes: tokio::sync::watch::Sender<u64>,
    /// Agent polls currently parked waiting for work: the connected-agent gauge.
    parked: tokio::sync::watch::Sender<usize>,
    /// Set when the server stops: parked polls answer at once so that agents reconnect
    /// to the next server instead of waiting out their poll on a closed one.
    closing: tokio::sync::watch::Sender<bool>,
}

/// Counts one parked poll for as long as it lives.
pub struct Parked<'a>(&'a tokio::sync::watch::Sender<usize>);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Default for Dispatcher {
    fn default() -> Self {
        Self {
            machines: Mutex::default(),
            changes: tokio::sync::watch::Sender::new(0),
            parked: tokio::sync::watch::Sender::new(0),
            closing: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl Dispatcher {
    /// The notifier a poll of `machine_id` waits on.
    pub fn subscribe(&self, machine_id: &str) -> Arc<Notify> {
        let mut map = self.machines.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(machine_id.to_owned()).or_default().clone()
    }

    /// New work for `machine_id`. `notify_one` keeps a permit when nobody waits yet, so
    /// work that arrives between a poll's check and its wait is not missed.
    pub fn notify(&self, machine_id: &str) {
        self.subscribe(machine_id).notify_one();
    }

    /// Wakes every machine's poll once: announcements from other replicas may have been
    /// missed (`cluster::run_events`), so each poll looks at the store again.
    pub fn wake_all(&self) {
        let map = self.machines.lock().unwrap_or_else(|e| e.into_inner());
        for notify in map.values() {
            notify.notify_one();
        }
    }

    /// Records that some action changed status.
    pub fn action_changed(&self) {
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// A receiver that wakes on every [`Dispatcher::action_changed`].
    pub fn watch_actions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Marks a poll as parked until the returned guard drops.
    pub fn park(&self) -> Parked<'_> {
        self.parked.send_modify(|n| *n += 1);
        Parked(&self.parked)
    }

    /// The number of parked polls, and its changes.
    pub fn watch_parked(&self) -> tokio::sync::watch::Receiver<usize> {
        self.parked.subscribe()
    }

    /// The server is stopping: every parked and future poll answers at once.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Resolves once [`Dispatcher::close`] was called (at once if it was already).
    pub async fn closed(&self) {
        let mut closing = self.closing.subscribe();
        let _ = closing.wait_for(|closing| *closing).await;
    }
}
