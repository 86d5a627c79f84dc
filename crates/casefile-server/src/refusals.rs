//! Refused calls (no or bad credentials) stay visible in the audit trail without letting
//! an outsider write a row per request: the first refusal of a source address in a minute
//! is written at once, the rest of that minute are counted and written as one entry when
//! the minute is over. A source over its quota of refusals in a minute is answered `429`
//! before its call does any work.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use casefile_proto::time::Timestamp;
use casefile_store::AuditEntry;

/// Sources tracked at once; beyond it, new sources share one tally (`source_ip` empty), so
/// memory stays bounded however many addresses a flood uses.
const MAX_SOURCES: usize = 65_536;

#[derive(Debug, Default)]
pub struct Refusals {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tallies: HashMap<Option<IpAddr>, Tally>,
    /// Summaries of minutes that ended, waiting to be written.
    ready: Vec<AuditEntry>,
}

#[derive(Debug)]
struct Tally {
    minute: i64,
    /// Refusals this minute, the one written singly included.
    count: u64,
    /// The last refused call's entry, the template of the summary.
    last: AuditEntry,
}

/// What to do with a refusal.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The first of its source's minute: write it now.
    WriteNow,
    /// Counted; written with the minute's summary.
    Counted,
}

fn minute_of(at: Timestamp) -> i64 {
    at.timestamp().div_euclid(60)
}

impl Refusals {
    /// `Some(wait)` when `source` has used up `per_minute` refusals in the current minute:
    /// its call is answered `429` without running.
    pub fn over_quota(&self, source: Option<IpAddr>, now: Timestamp, per_minute: u32) -> Option<Duration> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let tally = state.tallies.get(&source)?;
        (tally.minute == minute_of(now) && tally.count >= u64::from(per_minute)).then(|| {
            let next = (minute_of(now) + 1) * 60;
            Duration::from_secs(u64::try_from(next - now.timestamp()).unwrap_or(1).max(1))
        })
    }

    /// Counts a refusal described by `entry`.
    pub fn count(&self, entry: &AuditEntry) -> Disposition {
        let source = entry.source_ip.as_deref().and_then(|ip| ip.parse().ok());
        let minute = minute_of(entry.at);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { tallies, ready } = &mut *state;
        let key = if tallies.len() >= MAX_SOURCES && !tallies.contains_key(&source) { None } else { source };
        match tallies.get_mut(&key) {
            Some(tally) if tally.minute == minute => {
                tally.count += 1;
                tally.last = entry.clone();
                Disposition::Counted
            }
            previous => {
                if let Some(ended) = previous.filter(|t| t.count > 1) {
                    ready.push(summary(ended));
                }
                tallies.insert(key, Tally { minute, count: 1, last: entry.clone() });
                Disposition::WriteNow
            }
        }
    }

    /// One summary entry per source whose minute is over and that had refusals not
    /// written singly; their tallies are dropped.
    pub fn finished(&self, now: Timestamp) -> Vec<AuditEntry> {
        let current = minute_of(now);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { tallies, ready } = &mut *state;
        let mut summaries = std::mem::take(ready);
        tallies.retain(|_, tally| {
            if tally.minute >= current {
                return true;
            }
            if tally.count > 1 {
                summaries.push(summary(tally));
            }
            false
        });
        summaries
    }

    /// Every pending summary, whatever its minute (at shutdown).
    pub fn drain(&self) -> Vec<AuditEntry> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { tallies, ready } = &mut *state;
        let mut summaries = std::mem::take(ready);
        summaries.extend(tallies.drain().filter(|(_, t)| t.count > 1).map(|(_, t)| summary(&t)));
        summaries
    }
}

fn summary(tally: &Tally) -> AuditEntry {
    let from = chrono::DateTime::from_timestamp(tally.minute * 60, 0).unwrap_or_default();
    AuditEntry {
        at: tally.last.at,
        event: "access.refused".to_owned(),
        outcome: format!("refused ({} more this minute)", tally.count - 1),
        correlation_id: None,
        detail: Some(serde_json::json!({
            "aggregated": tally.count - 1,
            "minuteStarting": casefile_proto::time::format(&from),
            "lastEvent": tally.last.event,
            "lastTarget": tally.last.target,
        })),
        ..tally.last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(ip: &str, second: i64) -> AuditEntry {
        AuditEntry {
            // 1,800,000,000 is a whole minute (30,000,000 × 60).
            at: chrono::DateTime::from_timestamp(1_800_000_000 + second, 0).unwrap(),
            tenant_id: None,
            actor_kind: "anonymous".into(),
            actor: "-".into(),
            event: "access.refused".into(),
            target: Some("x".into()),
            outcome: "refused (401)".into(),
            http_status: Some(401),
            source_ip: Some(ip.into()),
            correlation_id: Some("c".into()),
            detail: None,
        }
    }

    #[test]
    fn one_entry_now_and_one_summary_per_source_and_minute() {
        let refusals = Refusals::default();
        assert_eq!(refusals.count(&refused("10.0.0.1", 1)), Disposition::WriteNow);
        for s in 2..50 {
            assert_eq!(refusals.count(&refused("10.0.0.1", s)), Disposition::Counted);
        }
        assert_eq!(refusals.count(&refused("10.0.0.2", 3)), Disposition::WriteNow);
        assert!(refusals.finished(refused("x", 59).at).is_empty(), "the minute is not over");
        let summaries = refusals.finished(refused("x", 60).at);
        assert_eq!(summaries.len(), 1, "10.0.0.2 had no refusal beyond the one written");
        assert_eq!(summaries[0].source_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(summaries[0].detail.as_ref().unwrap()["aggregated"], 48);
        assert_eq!(refusals.count(&refused("10.0.0.1", 61)), Disposition::WriteNow, "a new minute");
    }

    #[test]
    fn a_source_over_its_quota_waits_for_the_next_minute() {
        let refusals = Refusals::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for s in 0..5 {
            refusals.count(&refused("10.0.0.1", s));
        }
        assert_eq!(refusals.over_quota(Some(ip), refused("x", 10).at, 5), Some(Duration::from_secs(50)));
        assert_eq!(refusals.over_quota(Some(ip), refused("x", 10).at, 6), None);
        assert_eq!(refusals.over_quota(Some("10.0.0.9".parse().unwrap()), refused("x", 10).at, 5), None);
        assert_eq!(refusals.over_quota(Some(ip), refused("x", 60).at, 5), None, "a new minute");
    }

    #[test]
    fn sources_beyond_the_cap_share_one_tally() {
        let refusals = Refusals::default();
        for i in 0..MAX_SOURCES as u32 + 100 {
            refusals.count(&refused(&IpAddr::from(i.to_be_bytes()).to_string(), 1));
        }
        assert!(refusals.state.lock().unwrap().tallies.len() <= MAX_SOURCES + 1);
    }
}
