//! Wakes an agent's pending long-poll when work arrives for its machine, in this process.
//! Work created on another replica arrives through `cluster::run_events` (PostgreSQL
//! LISTEN/NOTIFY), which calls the same [`Dispatcher::notify`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub struct Dispatcher {
    /// One notifier per machine that has a poll open, and only while it has one: the
    /// map holds live polls, not every machine ever seen (a fleet of 100,000 agents
    /// that all polled once would otherwise keep 100,000 entries for good).
    machines: Mutex<HashMap<Box<str>, Arc<Notify>>>,
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

/// A poll's claim on its machine's notifier: wait on it with `notified()`. Dropping the
/// last one for a machine removes the machine's entry.
pub struct Subscription<'a> {
    dispatcher: &'a Dispatcher,
    machine_id: Box<str>,
    notify: Arc<Notify>,
}

impl std::ops::Deref for Subscription<'_> {
    type Target = Notify;

    fn deref(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut map = self.dispatcher.lock();
        // This poll's clone is released here, under the lock, and clones are made under
        // the lock only: so when the map's is the last one, no poll of the machine is
        // open, even when the last two close at the same time.
        drop(std::mem::replace(&mut self.notify, Arc::new(Notify::new())));
        if map.get(&self.machine_id).is_some_and(|entry| Arc::strong_count(entry) == 1) {
            map.remove(&self.machine_id);
        }
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<Notify>>> {
        self.machines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The notifier a poll of `machine_id` waits on, from before it looks for work
    /// until it answers: work announced in between is not missed.
    pub fn subscribe(&self, machine_id: &str) -> Subscription<'_> {
        let notify = self.lock().entry(machine_id.into()).or_default().clone();
        Subscription { dispatcher: self, machine_id: machine_id.into(), notify }
    }

    /// New work for `machine_id`. `notify_one` keeps a permit when its poll is between
    /// looking for work and waiting, so the work is not missed; with no poll open
    /// nothing is kept, as the machine's next poll looks for work before it waits.
    pub fn notify(&self, machine_id: &str) {
        if let Some(notify) = self.lock().get(machine_id) {
            notify.notify_one();
        }
    }

    /// Machines with a poll open (tests: the map does not grow with machines seen).
    pub fn open_polls(&self) -> usize {
        self.lock().len()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A poll that opens after the work was announced finds it by looking (the store),
    /// not by a permit: nothing is kept for machines without a poll, so the map holds
    /// live polls only.
    #[test]
    fn entries_live_as_long_as_a_poll_and_notifying_a_machine_without_one_keeps_nothing() {
        let dispatcher = Dispatcher::default();
        dispatcher.notify("m1");
        assert_eq!(dispatcher.open_polls(), 0, "no entry for a machine without a poll");
        let first = dispatcher.subscribe("m1");
        let second = dispatcher.subscribe("m1");
        assert_eq!(dispatcher.open_polls(), 1);
        drop(first);
        assert_eq!(dispatcher.open_polls(), 1, "another poll of the machine is still open");
        drop(second);
        assert_eq!(dispatcher.open_polls(), 0, "the last poll removed the entry");
        for i in 0..1000 {
            drop(dispatcher.subscribe(&format!("m{i}")));
        }
        assert_eq!(dispatcher.open_polls(), 0, "1,000 machines polled once: nothing kept");
    }

    /// Work announced between a poll's look and its wait wakes it (the permit), and work
    /// announced while it waits wakes it.
    #[tokio::test]
    async fn work_between_looking_and_waiting_is_not_missed() {
        let dispatcher = Dispatcher::default();
        let wake = dispatcher.subscribe("m1");
        dispatcher.notify("m1");
        tokio::time::timeout(std::time::Duration::from_secs(60), wake.notified())
            .await
            .expect("the permit kept by notify wakes the poll");
        let waiting = wake.notified();
        tokio::pin!(waiting);
        // Polled once, it is registered as a waiter.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(waiting.as_mut(), &mut cx).is_pending());
        dispatcher.notify("m1");
        tokio::time::timeout(std::time::Duration::from_secs(60), waiting).await.expect("woken while waiting");
    }
}
