//! The audit trail: who did what to which tenant's data, when, from where, and with what
//! result. A middleware writes one entry per state-changing call, refused authentication,
//! link issued and package download; handlers and extractors say who the actor was and
//! what the call concerned. Steps that happen without a request of their own (an action
//! dispatched to its agent, a package verified, a timeout) are written with [`record`].
//!
//! Entries are append-only (the database refuses to change them) and carry the request's
//! correlation id, so an entry, a log line and an error body can be tied together.

use std::cell::RefCell;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use casefile_proto::audit::AuditEvent;
use casefile_store::{AuditEntry, AuditRecord};
use tracing::Instrument;

use crate::correlation;
use crate::state::AppState;

/// Who made a call, as far as the call found out.
#[derive(Debug, Clone, Default)]
struct Noted {
    kind: Option<&'static str>,
    actor: Option<String>,
    tenant: Option<String>,
    target: Option<String>,
    detail: Option<serde_json::Value>,
    /// The actor was authenticated (a verified token, credential or link), not only named
    /// by the caller.
    verified: bool,
    /// The request itself, set by the middleware before the handler runs.
    call: Option<Call>,
    /// The status with which the handler's store transaction already wrote this call's
    /// entry ([`entry_for_call`]); the middleware writes none when the answer has it.
    written_with: Option<u16>,
    /// The route's event, noted by [`named`] from the route table once the method matched.
    event: Option<&'static str>,
    /// An [`Event::Report`] route: a success changes nothing the trail shows.
    report: bool,
}

#[derive(Debug, Clone)]
struct Call {
    arrived: casefile_proto::time::Timestamp,
    method: Method,
    route: String,
    peer: Option<std::net::IpAddr>,
    path_id: Option<String>,
}

tokio::task_local! {
    static NOTED: RefCell<Noted>;
}

fn note(update: impl FnOnce(&mut Noted)) {
    let _ = NOTED.try_with(|n| update(&mut n.borrow_mut()));
}

/// The caller is `actor` of `kind` (`application`, `user`, `agent`, `link`) in `tenant`.
pub fn note_actor(kind: &'static str, actor: &str, tenant: &str) {
    note(|n| {
        n.kind = Some(kind);
        n.actor = Some(actor.to_owned());
        n.tenant = Some(tenant.to_owned());
        n.verified = true;
    });
}

/// The caller says it is `actor` (a client id on the token endpoint), not yet proven.
pub fn note_claimed_actor(kind: &'static str, actor: &str, tenant: &str) {
    note(|n| {
        n.kind = Some(kind);
        n.actor = Some(actor.to_owned());
        n.tenant = Some(tenant.to_owned());
    });
}

/// The call concerned `target` (e.g. the id of the action it created).
pub fn note_target(target: impl ToString) {
    note(|n| n.target = Some(target.to_string()));
}

/// Facts worth keeping about the call (a comment, sizes).
pub fn note_detail(detail: serde_json::Value) {
    note(|n| n.detail = Some(detail));
}

/// Writes an entry for a step the server took on its own. A failure to write is logged
/// as an error: the step has already happened and cannot be undone.
pub async fn record(state: &AppState, entry: AuditEntry) {
    if let Err(e) = state.store.append_audit(&entry).await {
        state.metrics.store_error(&e);
        crate::error::log_store_failure(&e, &format!("the audit trail could not be written ({})", entry.event));
    }
}

/// This call's entry, as it will be answered with `status`, for the handler to hand to the
/// store so that the change and its entry commit in one transaction (a `kill -9` between
/// two separate writes would leave a change nobody is recorded to have made). Notes made
/// so far (actor, target, detail) are in it. `None` outside an audited call.
pub fn entry_for_call(status: u16) -> Option<AuditEntry> {
    NOTED
        .try_with(|n| {
            let mut n = n.borrow_mut();
            let call = n.call.clone()?;
            let entry = build_entry(&n, &call, status, event_of(n.event, &call.method, &call.route, status)?);
            n.written_with = Some(status);
            Some(entry)
        })
        .ok()
        .flatten()
}

/// The call's entry was written with the change (see [`entry_for_call`]), and the call is
/// answered with `status` instead (the console answers a created action with a redirect):
/// nothing more is written for it.
pub fn answered_as(status: u16) {
    let _ = NOTED.try_with(|n| {
        let mut n = n.borrow_mut();
        if n.written_with.is_some() {
            n.written_with = Some(status);
        }
    });
}

/// The address the current call came from, as the trail records it.
pub fn source_address() -> Option<std::net::IpAddr> {
    NOTED.try_with(|n| n.borrow().call.as_ref().and_then(|c| c.peer)).ok().flatten()
}

fn build_entry(noted: &Noted, call: &Call, status: u16, event: String) -> AuditEntry {
    // A redirect is the download answered with a presigned URL of the bucket.
    let outcome = if (200..400).contains(&status) { "ok".to_owned() } else { format!("refused ({status})") };
    AuditEntry {
        at: call.arrived,
        tenant_id: noted.tenant.clone(),
        actor_kind: noted.kind.unwrap_or("anonymous").to_owned(),
        actor: noted.actor.clone().unwrap_or_else(|| "-".to_owned()),
        event,
        target: noted.target.clone().or_else(|| call.path_id.clone()).map(|t| cap(&t, MAX_TARGET_CHARS)),
        outcome,
        http_status: Some(status),
        source_ip: call.peer.map(|ip| ip.to_string()),
        correlation_id: Some(correlation::current()).filter(|c| !c.is_empty()),
        detail: noted.detail.clone(),
    }
}

/// Longest target kept: ids are far shorter, and a hostile path must not make every
/// refused call store kilobytes.
const MAX_TARGET_CHARS: usize = 200;

fn cap(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Writes the summaries of refused calls whose minute is over (all of them when `all`).
pub async fn write_refusal_summaries(state: &AppState, all: bool) {
    let summaries = if all { state.refusals.drain() } else { state.refusals.finished(state.now()) };
    for entry in summaries {
        record(state, entry).await;
    }
}

/// Writes refusal summaries as their minutes end.
pub async fn run_refusal_summaries(state: AppState) {
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        ticker.tick().await;
        write_refusal_summaries(&state, false).await;
    }
}

/// An entry for something the server did on its own (no request, no caller).
pub fn system_entry(
    state: &AppState,
    tenant: Option<&str>,
    event: &str,
    target: &str,
    detail: serde_json::Value,
) -> AuditEntry {
    AuditEntry {
        at: state.now(),
        tenant_id: tenant.map(str::to_owned),
        actor_kind: "server".to_owned(),
        actor: "casefile".to_owned(),
        event: event.to_owned(),
        target: Some(target.to_owned()),
        outcome: "ok".to_owned(),
        http_status: None,
        source_ip: None,
        correlation_id: None,
        detail: Some(detail),
    }
}

/// A stored entry as the API shows it.
pub fn to_wire(r: AuditRecord) -> AuditEvent {
    let e = r.entry;
    AuditEvent {
        seq: r.seq,
        at: casefile_proto::time::format(&e.at),
        tenant_id: e.tenant_id,
        event: e.event,
        actor_kind: e.actor_kind,
        actor: e.actor,
        target: e.target,
        outcome: e.outcome,
        http_status: e.http_status,
        source_ip: e.source_ip,
        correlation_id: e.correlation_id,
        detail: e.detail,
    }
}

/// What the trail calls the calls of one route: declared beside the route in the route
/// table (`routes/mod.rs`), the only list of routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Every call, whatever its answer, under this name (`collect`, `token.issue`).
    Named(&'static str),
    /// A state-changing call under `METHOD route`; a read only when it was refused for
    /// lack of credentials or rights (`access.refused`).
    ByRoute,
    /// A report that changes no state of record (an agent's progress): under this name,
    /// only when it was refused or failed, as reads are.
    Report(&'static str),
}

/// Notes the route's [`Event::Named`] for the trail: the route table layers it on the
/// route's handler, so it runs only once the method matched (a `405` is recorded by route).
pub fn named(
    State(event): State<&'static str>,
    request: Request,
    next: Next,
) -> impl std::future::Future<Output = Response> + Send + 'static {
    note(|n| n.event = Some(event));
    crate::next::run(next, request)
}

/// Notes the route's [`Event::Report`] name.
pub fn report(
    State(event): State<&'static str>,
    request: Request,
    next: Next,
) -> impl std::future::Future<Output = Response> + Send + 'static {
    note(|n| {
        n.event = Some(event);
        n.report = true;
    });
    crate::next::run(next, request)
}

/// The audit event of a routed call, or `None` for reads that are not audited.
fn event_of(named: Option<&'static str>, method: &Method, route: &str, status: u16) -> Option<String> {
    if let Some(event) = named {
        return Some(event.to_owned());
    }
    match method.as_str() {
        // Every other state-changing call is recorded under its route.
        m if m != "GET" && m != "HEAD" => Some(format!("{m} {route}")),
        // Reads are recorded when they were refused for lack of credentials or rights.
        _ if matches!(status, 401 | 403) => Some("access.refused".to_owned()),
        _ => None,
    }
}

/// Records the call if it is one the trail keeps. Runs inside the router, where the
/// matched route is known.
///
/// A state-changing call runs to its end, entry included, on a task of its own: a client
/// that hangs up must not leave a change without its entry (or a stored package without its
/// record). Reads stay on the connection, so a long-poll whose agent left is dropped before
/// it can hand work to nobody.
///
/// Plain functions (see `next.rs`): a parked agent poll holds this future for minutes, so
/// it keeps the call's description and notes, not the request, and writing the entry is
/// boxed, as a future is as large as its largest state for all its life.
pub fn middleware(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> impl std::future::Future<Output = Response> + Send + 'static {
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    let calls = (!read).then(|| state.calls.clone());
    let audited = audited(state, request, next);
    let Some(calls) = calls else {
        return futures::future::Either::Left(audited);
    };
    futures::future::Either::Right(Box::pin(async move {
        let call = correlation::scope(correlation::current(), audited).instrument(tracing::Span::current());
        match calls.spawn(call).await {
            Ok(response) => response,
            Err(e) => crate::error::ApiError::internal_from(format!("a request task failed: {e}")).into_response(),
        }
    }))
}

/// How a call starts, decided before the handler runs.
enum Start<F> {
    /// No route matched: nothing to record.
    Unrouted(F),
    /// Too many refused calls from this source: refused without running.
    Refused(Response),
    Audited(Box<Call>, F),
}

fn audited(
    state: AppState,
    request: Request,
    next: Next,
) -> impl std::future::Future<Output = Response> + Send + 'static {
    let start = match request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()) {
        None => Start::Unrouted(crate::next::run(next, request)),
        Some(route) => {
            let call = Call {
                // Entries carry when the call arrived: steps it set off (a dispatch) come after it.
                arrived: state.now(),
                method: request.method().clone(),
                path_id: Some(&route).filter(|r| r.contains("{id}")).and_then(|_| id_in(request.uri().path())),
                route,
                // Kept as an address: most reads are not recorded, so no string is made for them.
                peer: request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()),
            };
            let limits = &state.config.rate_limits;
            if limits.enabled
                && let Some(wait) =
                    state.refusals.over_quota(call.peer, call.arrived, limits.refusals_per_source_per_minute)
            {
                let refused = crate::error::ApiError::too_many_requests(
                    "Too many refused calls from this address; retry later",
                    wait,
                );
                state.refusals.count(&build_entry(&Noted::default(), &call, 429, "access.refused".to_owned()));
                state.metrics.rate_limited("refusals");
                Start::Refused(refused.into_response())
            } else {
                Start::Audited(Box::new(call), crate::next::run(next, request))
            }
        }
    };
    async move {
        let (call, response) = match start {
            Start::Unrouted(response) => return response.await,
            Start::Refused(response) => return response,
            Start::Audited(call, response) => (call, response),
        };
        let noted = Noted { call: Some(*call), ..Noted::default() };
        let (response, mut noted) = NOTED
            .scope(RefCell::new(noted), async {
                let response = response.await;
                (response, NOTED.with(|n| n.take()))
            })
            .await;
        let status = response.status().as_u16();
        if noted.written_with == Some(status) || (noted.report && response.status().is_success()) {
            return response;
        }
        let Some(call) = noted.call.take() else {
            return response;
        };
        let Some(event) = event_of(noted.event, &call.method, &call.route, status) else {
            return response;
        };
        Box::pin(write_entry(state, noted, call, response, event)).await
    }
}

/// Writes the entry of a call that answered `response`.
async fn write_entry(state: AppState, noted: Noted, call: Call, response: Response, event: String) -> Response {
    let status = response.status().as_u16();
    let entry = build_entry(&noted, &call, status, event);
    // Refusals of callers nobody authenticated are aggregated per source and minute, so
    // that an outsider cannot write a row per request.
    if matches!(status, 401 | 403 | 429)
        && !noted.verified
        && state.refusals.count(&entry) == crate::refusals::Disposition::Counted
    {
        return response;
    }
    match state.store.append_audit(&entry).await {
        Ok(_) => response,
        // What the trail cannot show did not happen: a link, a token or a download whose
        // entry failed is refused. (Changes that commit with their entry never get here.)
        Err(e) if response.status().is_success() || response.status().is_redirection() => {
            crate::error::ApiError::from(e).into_response()
        }
        Err(e) => {
            state.metrics.store_error(&e);
            crate::error::log_store_failure(&e, &format!("the audit trail could not be written ({})", entry.event));
            response
        }
    }
}

/// The `{id}` segment of an action or machine route: the segment after `machines` or
/// `machineactions`/`actions`.
fn id_in(path: &str) -> Option<String> {
    let mut segments = path.split('/');
    while let Some(segment) = segments.next() {
        if matches!(segment, "machines" | "machineactions" | "actions" | "applications") {
            return segments.next().filter(|s| !s.is_empty()).map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_map_to_events() {
        assert_eq!(
            event_of(Some("cancel"), &Method::POST, "/api/machineactions/{id}/cancel", 200).as_deref(),
            Some("cancel")
        );
        assert_eq!(event_of(None, &Method::GET, "/api/machineactions", 200), None);
        assert_eq!(event_of(None, &Method::GET, "/api/machineactions", 401).as_deref(), Some("access.refused"));
        assert_eq!(
            event_of(Some("token.issue"), &Method::POST, "/{tenant}/oauth2/v2.0/token", 400).as_deref(),
            Some("token.issue")
        );
        assert_eq!(
            event_of(None, &Method::POST, "/api/admin/applications", 201).as_deref(),
            Some("POST /api/admin/applications")
        );
        assert_eq!(id_in("/agent/v1/actions/abc/package").as_deref(), Some("abc"));
        assert_eq!(id_in("/api/machines/m1/collectinvestigationpackage").as_deref(), Some("m1"));
    }
}
