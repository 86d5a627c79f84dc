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

/// Writes an entry. A failure to write is logged as an error: the call it records has
/// already happened and cannot be undone.
pub async fn record(state: &AppState, entry: AuditEntry) {
    if let Err(e) = state.store.append_audit(&entry).await {
        tracing::error!(event = %entry.event, target = ?entry.target, "the audit trail could not be written: {e}");
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

/// The audit event of a routed call, or `None` for reads that are not audited.
fn event_of(method: &Method, route: &str, status: u16) -> Option<String> {
    let known = match (method.as_str(), route) {
        ("POST", "/api/machines/{id}/collectinvestigationpackage") => "collect",
        ("POST", "/api/machines/{id}/importinvestigationpackage") => "package.import",
        ("POST", "/api/machineactions/{id}/cancel") => "cancel",
        ("GET", "/api/machineactions/{id}/getpackageuri") => "link.issue",
        ("GET", crate::links::DOWNLOAD_PATH) => "package.download",
        ("POST", "/agent/v1/enroll") => "agent.enroll",
        ("POST", "/agent/v1/hello") => "agent.start",
        ("PUT", "/agent/v1/actions/{id}/package") => "package.upload",
        ("POST", "/agent/v1/actions/{id}/failure") => "action.fail",
        ("POST", "/agent/v1/actions/{id}/cancelled") => "cancel.confirm",
        ("POST", "/agent/v1/actions/{id}/accepted") => "action.accept",
        _ if route.ends_with("/oauth2/token") || route.ends_with("/oauth2/v2.0/token") => "token.issue",
        // Every other state-changing call is recorded under its route.
        (m, _) if m != "GET" && m != "HEAD" => return Some(format!("{m} {route}")),
        // Reads are recorded when they were refused for lack of credentials or rights.
        _ if matches!(status, 401 | 403) => "access.refused",
        _ => return None,
    };
    Some(known.to_owned())
}

/// Records the call if it is one the trail keeps. Runs inside the router, where the
/// matched route is known.
///
/// A state-changing call runs to its end, entry included, on a task of its own: a client
/// that hangs up must not leave a change without its entry (or a stored package without its
/// record). Reads stay on the connection, so a long-poll whose agent left is dropped before
/// it can hand work to nobody.
pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return audited(state, request, next).await;
    }
    let call =
        correlation::scope(correlation::current(), audited(state, request, next)).instrument(tracing::Span::current());
    match tokio::spawn(call).await {
        Ok(response) => response,
        Err(e) => crate::error::ApiError::internal_from(format!("a request task failed: {e}")).into_response(),
    }
}

async fn audited(state: AppState, request: Request, next: Next) -> Response {
    // Entries carry when the call arrived: steps it set off (a dispatch) come after it.
    let arrived = state.now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    // Kept as an address: most reads are not recorded, so no string is made for them.
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let path_id = route.as_deref().filter(|r| r.contains("{id}")).and_then(|_| id_in(request.uri().path()));
    let (response, noted) = NOTED
        .scope(RefCell::new(Noted::default()), async {
            let response = next.run(request).await;
            (response, NOTED.with(|n| n.take()))
        })
        .await;
    let status = response.status().as_u16();
    let Some(event) = route.as_deref().and_then(|r| event_of(&method, r, status)) else {
        return response;
    };
    let outcome = if response.status().is_success() { "ok".to_owned() } else { format!("refused ({status})") };
    let entry = AuditEntry {
        at: arrived,
        tenant_id: noted.tenant,
        actor_kind: noted.kind.unwrap_or("anonymous").to_owned(),
        actor: noted.actor.unwrap_or_else(|| "-".to_owned()),
        event,
        target: noted.target.or(path_id),
        outcome,
        http_status: Some(status),
        source_ip: peer.map(|ip| ip.to_string()),
        correlation_id: Some(correlation::current()).filter(|c| !c.is_empty()),
        detail: noted.detail,
    };
    record(&state, entry).await;
    response
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
        assert_eq!(event_of(&Method::POST, "/api/machineactions/{id}/cancel", 200).as_deref(), Some("cancel"));
        assert_eq!(event_of(&Method::GET, "/api/machineactions", 200), None);
        assert_eq!(event_of(&Method::GET, "/api/machineactions", 401).as_deref(), Some("access.refused"));
        assert_eq!(event_of(&Method::POST, "/{tenant}/oauth2/v2.0/token", 400).as_deref(), Some("token.issue"));
        assert_eq!(
            event_of(&Method::POST, "/api/admin/applications", 201).as_deref(),
            Some("POST /api/admin/applications")
        );
        assert_eq!(id_in("/agent/v1/actions/abc/package").as_deref(), Some("abc"));
        assert_eq!(id_in("/api/machines/m1/collectinvestigationpackage").as_deref(), Some("m1"));
    }
}
