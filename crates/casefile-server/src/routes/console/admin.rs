//! Admin (for `Administrator` role holders, as the admin API): applications, local users,
//! roles, device groups, enrollment tokens and the audit log with filters.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::{BaseUrl, Chrome, Failure, Session, api, html, redirect, url_escape};
use crate::routes::admin as admin_api;
use crate::routes::enrollment_tokens as tokens_api;
use crate::routes::users as users_api;
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
    /// Per row, a form the row offers: where it posts and what its button says.
    pub actions: Vec<Option<(String, String)>>,
}

#[derive(Template)]
#[template(path = "console/admin.html")]
struct AdminPage {
    chrome: Chrome,
    tab: String,
    tabs: &'static [(&'static str, &'static str)],
    table: Table,
    q: AdminQuery,
    next: Option<String>,
    /// A new enrollment token's secret, shown this once.
    created_token: Option<String>,
}

impl AdminPage {
    /// The form row `index` offers, if any.
    fn action_at(&self, index: &usize) -> Option<&(String, String)> {
        self.table.actions.get(*index).and_then(Option::as_ref)
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

/// `GET /console/admin?tab=...`.
pub(crate) async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<AdminQuery>,
) -> Result<Response, Failure> {
    render(state, session, q, None).await
}

async fn render(
    state: AppState,
    session: Session,
    q: AdminQuery,
    created_token: Option<String>,
) -> Result<Response, Failure> {
    let tab = if TABS.iter().any(|(t, _)| *t == q.tab) { q.tab.clone() } else { "applications".to_owned() };
    let caller = session.caller.clone();
    let mut next = None;
    let table = match tab.as_str() {
        "applications" => {
            let list: serde_json::Value = api(admin_api::list(State(state.clone()), caller).await).await?;
            Table {
                headers: vec!["Name", "Client id", "Roles", "Created", "Disabled"],
                rows: rows(&list, &["name", "clientId", "roles", "createdAt", "disabledAt"]),
                actions: Vec::new(),
            }
        }
        "roles" => {
            let list: serde_json::Value = api(admin_api::roles(State(state.clone()), caller).await).await?;
            Table {
                headers: vec!["Name", "Permissions", "Users", "Groups"],
                rows: rows(&list, &["name", "permissions", "users", "groups"]),
                actions: Vec::new(),
            }
        }
        "groups" => {
            let list: serde_json::Value = api(admin_api::device_groups(State(state.clone()), caller).await).await?;
            Table {
                headers: vec!["Id", "Name", "Rank", "Rules", "User groups"],
                rows: rows(&list, &["id", "name", "rank", "rules", "userGroups"]),
                actions: Vec::new(),
            }
        }
        "users" => {
            let list: serde_json::Value = api(users_api::list(State(state.clone()), caller).await).await?;
            let listed = list.get("value").and_then(|v| v.as_array()).cloned().unwrap_or_default();
            let actions = listed
                .iter()
                .map(|u| {
                    let name = cell(u, "name");
                    let disabled = u.get("disabledAt").is_some_and(|d| !d.is_null());
                    let (change, label) = if disabled { ("enable", "Enable") } else { ("disable", "Disable") };
                    Some((format!("/console/admin/users/{}/{change}", url_escape(&name)), format!("{label} {name}")))
                })
                .collect();
            Table {
                headers: vec!["Name", "Created", "Password changed", "Disabled", "Failed sign-ins"],
                rows: rows(&list, &["name", "createdAt", "passwordChangedAt", "disabledAt", "failedSignIns"]),
                actions,
            }
        }
        "tokens" => {
            let list: serde_json::Value = api(tokens_api::list(State(state.clone()), caller).await).await?;
            let listed = list.get("value").and_then(|v| v.as_array()).cloned().unwrap_or_default();
            let actions = listed
                .iter()
                .map(|t| {
                    (cell(t, "state") == "usable").then(|| {
                        let id = cell(t, "id");
                        (format!("/console/admin/tokens/{}/revoke", url_escape(&id)), "Revoke".to_owned())
                    })
                })
                .collect();
            Table {
                headers: vec!["Id", "State", "Created", "Expires", "Uses allowed", "Uses", "Revoked"],
                rows: rows(&list, &["id", "state", "createdAt", "expiresAt", "usesAllowed", "uses", "revokedAt"]),
                actions,
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
                actions: Vec::new(),
            }
        }
    };
    let page =
        AdminPage { chrome: session.chrome(&state, "admin").await, tab, tabs: TABS, table, q, next, created_token };
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

/// The admin API's answer to a form: back to the users tab, or its error as a page.
async fn after(answer: crate::error::ApiResult<Response>) -> Result<Response, Response> {
    match api::<serde_json::Value>(answer).await {
        Ok(_) => Ok(redirect("/console/admin?tab=users")),
        Err(failure) => Err(failure.into()),
    }
}

/// `POST /console/admin/users`: the admin API's `POST /api/admin/users`.
pub(crate) async fn create_user(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    headers: HeaderMap,
    axum::Form(form): axum::Form<UserForm>,
) -> Result<Response, Response> {
    session.check_form(&headers, &base, &form.csrf)?;
    let request = casefile_proto::user::CreateUserRequest { name: form.name, password: form.password };
    after(users_api::create(State(state), session.caller.clone(), crate::routes::Json(request)).await).await
}

/// `POST /console/admin/users/{name}/disable`.
pub(crate) async fn disable_user(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Result<Response, Response> {
    session.check_form(&headers, &base, &form.csrf)?;
    after(users_api::disable(State(state), session.caller.clone(), crate::routes::Path(name)).await).await
}

/// `POST /console/admin/users/{name}/enable`.
pub(crate) async fn enable_user(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Result<Response, Response> {
    session.check_form(&headers, &base, &form.csrf)?;
    after(users_api::enable(State(state), session.caller.clone(), crate::routes::Path(name)).await).await
}

#[derive(Deserialize)]
pub(crate) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    uses: String,
    #[serde(default)]
    hours: String,
}

/// `POST /console/admin/tokens`: the admin API's `POST /api/admin/enrollmentTokens`; the
/// secret is shown on the answer, this once.
pub(crate) async fn create_token(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    headers: HeaderMap,
    axum::Form(form): axum::Form<TokenForm>,
) -> Result<Response, Response> {
    session.check_form(&headers, &base, &form.csrf)?;
    let number = |raw: &str, what: &str| -> Result<Option<u64>, Failure> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        raw.parse().map(Some).map_err(|_| Failure {
            status: axum::http::StatusCode::BAD_REQUEST,
            code: "InvalidInput".into(),
            message: format!("{what} must be a whole number"),
        })
    };
    let uses = number(&form.uses, "Uses")?.map(|u| u32::try_from(u).unwrap_or(u32::MAX));
    let ttl_seconds = number(&form.hours, "Hours")?.map(|h| h.saturating_mul(3600));
    let request = casefile_proto::agent::CreateEnrollmentTokenRequest { uses, ttl_seconds };
    let answer = tokens_api::create(State(state.clone()), session.caller.clone(), crate::routes::Json(request)).await;
    let created: casefile_proto::agent::EnrollmentTokenSecret = api(answer).await.map_err(Response::from)?;
    crate::audit::answered_as(axum::http::StatusCode::OK.as_u16());
    let q = AdminQuery { tab: "tokens".into(), ..AdminQuery::default() };
    render(state, session, q, Some(created.token)).await.map_err(Response::from)
}

/// `POST /console/admin/tokens/{id}/revoke`.
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Result<Response, Response> {
    session.check_form(&headers, &base, &form.csrf)?;
    match api::<serde_json::Value>(
        tokens_api::revoke(State(state), session.caller.clone(), crate::routes::Path(id)).await,
    )
    .await
    {
        Ok(_) => Ok(redirect("/console/admin?tab=tokens")),
        Err(failure) => Err(failure.into()),
    }
}
