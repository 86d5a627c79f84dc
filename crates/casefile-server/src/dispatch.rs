//! Wakes an agent's pending long-poll when work arrives for its machine. In-process
//! for one server; several replicas will put a shared notifier (e.g. PostgreSQL
//! LISTEN/NOTIFY) behind the same two calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Dispatcher {
    machines: Mutex<HashMap<String, Arc<Notify>>>,
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
}
