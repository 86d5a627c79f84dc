//! Admin (for `Administrator` role holders, as the admin API): applications, local users,
//! roles, device groups, enrollment tokens and the audit log with filters.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::{BaseUrl, Chrome, Failure, Session, api, html, redirect, url_escape, when};
use crate::auth::{Api, users};
use crate::routes::admin as admin_api;
use crate::state::AppState;

#[derive(Deserialize, Default)]
pub(crate) struct AdminQuery {
    #[serde(default)]
    tab: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    after: Option<i64>,
}

pub(crate) struct Table {
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Template)]
#[template(path = "console/admin.html")]
struct AdminPage {
    chrome: Chrome,
    tab: String,
    tabs: &'static [(&'static str, &'static str)],
    table: Table,
    q: AdminQuery,
    users: Vec<(String, bool)>,
    next: Option<String>,
}

impl AdminPage {
    /// The user of the users table's row `index` (its name and whether it is disabled).
    fn user_at(&self, index: &usize) -> Option<&(String, bool)> {
        self.users.get(*index)
    }
}

const TABS: &[(&str, &str)] = &[
    ("applications", "Applications"),
    ("users", "Users"),
    ("roles", "Roles"),
    ("groups", "Device groups"),
    ("tokens", "Enrollment tokens"),
    ("audit", "Audit log"),
];

fn cell(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).unwrap_or_else(|| i.to_string()))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

fn rows(list: &serde_json::Value, keys: &[&str]) -> Vec<Vec<String>> {
    list.get("value")
        .and_then(|v| v.as_array())
        .map(|items| items.iter().map(|item| keys.iter().map(|k| cell(item, k)).collect()).collect())
        .unwrap_or_default()
}

/// Refused unless the caller may manage access (the admin API's own check).
async fn require_admin(state: &AppState, session: &Session) -> Result<(), Failure> {
    match session.caller.admit(state, Api::ManageAccess).await {
        Ok(_) => Ok(()),
        Err(e) => Err(api::<serde_json::Value>(Err(e)).await.err().unwrap_or_else(|| Failure::internal("refusal"))),
    }
}

/// `GET /console/admin?tab=...`.
pub(crate) async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<AdminQuery>,
) -> Result<Response, Failure> {
    let tab = if TABS.iter().any(|(t, _)| *t == q.tab) { q.tab.clone() } else { "applications".to_owned() };
    let caller = session.caller.clone();
    let mut user_rows = Vec::new();
    let mut next = None;
    let table = match tab.as_str() {
        "applications" => {
            let list: serde_json::Value = api(admin_api::list(State(state.clone()), caller).await).await?;
            Table {
                headers: vec!["Name", "Client id", "Roles", "Created", "Disabled"],
                rows: rows(&list, &["name", "clientId", "roles", "createdAt", "disabledAt"]),
            }
        }
        "roles" => {
            let list: serde_json::Value = api(admin_api::roles(State(state.clone()), caller).await).await?;
            Table {
                headers: vec!["Name", "Permissions", "Users", "Groups"],
                rows: rows(&list, &["name", "permissions", "users", "groups"]),
            }
        }
        "groups" => {
            let list: serde_json::Value = api(admin_api::device_groups(State(state.clone()), caller).await).await?;
            Table {
                headers: vec!["Id", "Name", "Rank", "Rules", "User groups"],
                rows: rows(&list, &["id", "name", "rank", "rules", "userGroups"]),
            }
        }
        "users" => {
            require_admin(&state, &session).await?;
            let found = users::list(&*state.store, &caller.tenant_id).await.map_err(|e| Failure::internal(e))?;
            user_rows = found.iter().map(|u| (u.name.clone(), u.disabled_at.is_some())).collect();
            Table {
                headers: vec!["Name", "Created", "Password changed", "Disabled", "Failed sign-ins"],
                rows: found
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            when(&u.created_at),
                            when(&u.password_changed_at),
                            u.disabled_at.as_ref().map(when).unwrap_or_default(),
                            u.failed_logins.to_string(),
                        ]
                    })
                    .collect(),
            }
        }
        "tokens" => {
            require_admin(&state, &session).await?;
            let tokens =
                state.store.tenant(&caller.tenant_id).enrollment_tokens().await.map_err(Failure::from_store)?;
            Table {
                headers: vec!["Id", "Created", "Expires", "Uses", "Revoked"],
                rows: tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.to_string(),
                            when(&t.created_at),
                            when(&t.expires_at),
                            format!("{} of {}", t.uses, t.uses_allowed),
                            t.revoked_at.as_ref().map(when).unwrap_or_default(),
                        ]
                    })
                    .collect(),
            }
        }
        _ => {
            let mut query = String::from("top=200");
            for (key, value) in [("event", &q.event), ("actor", &q.actor), ("target", &q.target), ("since", &q.since)] {
                if !value.trim().is_empty() {
                    query.push_str(&format!("&{key}={}", url_escape(value.trim())));
                }
            }
            if let Some(after) = q.after {
                query.push_str(&format!("&after={after}"));
            }
            let uri: axum::http::Uri = format!("/api/admin/audit?{query}").parse().map_err(Failure::internal)?;
            let parsed = axum::extract::Query::try_from_uri(&uri).map_err(|e| Failure {
                status: axum::http::StatusCode::BAD_REQUEST,
                code: "InvalidInput".into(),
                message: e.body_text(),
            })?;
            let list: serde_json::Value =
                api(admin_api::audit(State(state.clone()), caller, crate::routes::Query(parsed.0)).await).await?;
            next = list.get("nextAfter").and_then(|n| n.as_i64()).map(|after| {
                format!(
                    "/console/admin?tab=audit&event={}&actor={}&target={}&since={}&after={after}",
                    url_escape(&q.event),
                    url_escape(&q.actor),
                    url_escape(&q.target),
                    url_escape(&q.since)
                )
            });
            Table {
                headers: vec!["At", "Event", "Actor", "Target", "Outcome", "Source"],
                rows: rows(&list, &["at", "event", "actor", "target", "outcome", "sourceIp"]),
            }
        }
    };
    let page =
        AdminPage { chrome: session.chrome(&state, "admin").await, tab, tabs: TABS, table, q, users: user_rows, next };
    Ok(html(&page))
}

#[derive(Deserialize)]
pub(crate) struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

/// `POST /console/admin/users`: a new local user.
pub(crate) async fn create_user(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    headers: HeaderMap,
    axum::Form(form): axum::Form<UserForm>,
) -> Result<Response, Response> {
    session.check_form(&headers, &base, &form.csrf)?;
    require_admin(&state, &session).await.map_err(Failure::into_response_page)?;
    crate::audit::note_target(&form.name);
    match users::create(&*state.store, &session.caller.tenant_id, &form.name, &form.password, state.now()).await {
        Ok(_) => Ok(redirect("/console/admin?tab=users")),
        Err(
            e @ (users::UserError::InvalidName(_) | users::UserError::WeakPassword(_) | users::UserError::Duplicate(_)),
        ) => Err(Failure {
            status: axum::http::StatusCode::BAD_REQUEST,
            code: "InvalidInput".into(),
            message: e.to_string(),
        }
        .into_response_page()),
        Err(e) => Err(Failure::internal(e).into_response_page()),
    }
}

#[derive(Deserialize)]
pub(crate) struct ToggleForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/admin/users/{name}/disable` and `/enable`.
pub(crate) async fn set_user_disabled(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    headers: HeaderMap,
    axum::extract::Path((name, change)): axum::extract::Path<(String, String)>,
    axum::Form(form): axum::Form<ToggleForm>,
) -> Result<Response, Response> {
    session.check_form(&headers, &base, &form.csrf)?;
    require_admin(&state, &session).await.map_err(Failure::into_response_page)?;
    crate::audit::note_target(&name);
    let disabled = match change.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return Err(Failure::not_found("No such change").into_response_page()),
    };
    match users::set_disabled(&*state.store, &session.caller.tenant_id, &name, disabled, state.now()).await {
        Ok(_) => Ok(redirect("/console/admin?tab=users")),
        Err(users::UserError::NotFound(n)) => {
            Err(Failure::not_found(format!("No user named {n}")).into_response_page())
        }
        Err(e) => Err(Failure::internal(e).into_response_page()),
    }
}
