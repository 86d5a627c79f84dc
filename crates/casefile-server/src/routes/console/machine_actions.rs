//! The Action center (Pending and History, filters, live status, CSV export), an action's
//! page and its cancel form.

use askama::Template;
use axum::extract::{Query, RawQuery, State};
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use casefile_proto::action::{ActionStatus, ActionType, MachineAction};
use casefile_proto::odata::{Collection, Entity};
use serde::Deserialize;

use super::{BaseUrl, Chrome, Failure, Session, api, html, odata_string, redirect, url_escape, when};
use crate::routes::actions;
use crate::state::AppState;

const PAGE_SIZE: u64 = 50;
/// Rows per API page while exporting, and the most rows one export holds.
const EXPORT_PAGE: u64 = 1000;
const EXPORT_MAX: u64 = 200_000;

pub(crate) struct ActionRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub device: String,
    pub machine_id: String,
    pub requestor: String,
    pub comment: String,
    pub created: String,
    pub updated: String,
    pub live: bool,
    pub has_package: bool,
    /// What the running collection reports; empty when it reported nothing (yet).
    pub progress: String,
}

impl From<&MachineAction> for ActionRow {
    fn from(a: &MachineAction) -> Self {
        Self {
            id: a.id.to_string(),
            kind: a.action_type.to_string(),
            status: a.status.to_string(),
            device: a.computer_dns_name.clone().unwrap_or_else(|| a.machine_id.clone()),
            machine_id: a.machine_id.clone(),
            requestor: a.requestor.clone(),
            comment: a.requestor_comment.clone(),
            created: when(&a.creation_date_time_utc),
            updated: when(&a.last_update_date_time_utc),
            live: matches!(a.status, ActionStatus::Pending | ActionStatus::InProgress),
            has_package: a.action_type == ActionType::CollectInvestigationPackage
                && a.status == ActionStatus::Succeeded,
            progress: a
                .progress
                .as_ref()
                .filter(|_| a.status == ActionStatus::InProgress)
                .map(|p| p.to_string())
                .unwrap_or_default(),
        }
    }
}

#[derive(Deserialize, Default, Clone)]
pub(crate) struct CenterQuery {
    #[serde(default)]
    tab: String,
    #[serde(default)]
    window: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    requestor: String,
    #[serde(default)]
    device: String,
    #[serde(default)]
    page: u64,
    /// `rows`: only the table's rows (the page's live refresh).
    #[serde(default)]
    fragment: String,
}

impl CenterQuery {
    fn pending(&self) -> bool {
        self.tab != "history"
    }

    fn window_days(&self) -> i64 {
        match self.window.as_str() {
            "day" => 1,
            "week" => 7,
            "6months" => 182,
            _ => 30,
        }
    }

    /// The `$filter` the controls stand for.
    fn filter(&self, state: &AppState) -> String {
        let since = state.now() - chrono::Duration::days(self.window_days());
        let mut filters = vec![format!("creationDateTimeUtc ge {}", since.format("%Y-%m-%dT%H:%M:%SZ"))];
        if self.pending() {
            filters.push("status in ('Pending','InProgress')".to_owned());
        } else if ActionStatus::NAMES.contains(&self.status.as_str()) {
            filters.push(format!("status eq '{}'", self.status));
        } else {
            filters.push("status in ('Succeeded','Failed','TimeOut','Cancelled')".to_owned());
        }
        if ActionType::NAMES.contains(&self.kind.as_str()) {
            filters.push(format!("type eq '{}'", self.kind));
        }
        if !self.requestor.trim().is_empty() {
            filters.push(format!("contains(requestor,{})", odata_string(self.requestor.trim())));
        }
        if !self.device.trim().is_empty() {
            filters.push(format!("contains(computerDnsName,{})", odata_string(self.device.trim())));
        }
        filters.join(" and ")
    }

    fn odata(&self, state: &AppState, top: u64, skip: u64) -> String {
        format!(
            "$filter={}&$orderby=creationDateTimeUtc%20desc&$top={top}&$skip={skip}&$count=true",
            url_escape(&self.filter(state))
        )
    }

    fn link(&self, page: u64, base: &str) -> String {
        format!(
            "{base}?tab={}&window={}&type={}&status={}&requestor={}&device={}&page={page}",
            url_escape(&self.tab),
            url_escape(&self.window),
            url_escape(&self.kind),
            url_escape(&self.status),
            url_escape(&self.requestor),
            url_escape(&self.device),
        )
    }
}

async fn list(
    state: &AppState,
    session: &Session,
    base: &BaseUrl,
    odata: String,
) -> Result<Collection<MachineAction>, Failure> {
    let uri: axum::http::Uri = "/api/machineactions".parse().map_err(Failure::internal)?;
    api(actions::list(State(state.clone()), session.caller.clone(), base.clone(), uri, RawQuery(Some(odata))).await)
        .await
}

#[derive(Template)]
#[template(path = "console/actions.html")]
struct CenterPage {
    chrome: Chrome,
    q: CenterQuery,
    rows: Vec<ActionRow>,
    total: u64,
    first: u64,
    last: u64,
    prev: Option<String>,
    next: Option<String>,
    live_url: String,
    export_url: String,
    types: &'static [&'static str],
    statuses: &'static [&'static str],
    windows: &'static [(&'static str, &'static str)],
}

#[derive(Template)]
#[template(path = "console/action_rows.html")]
struct Rows {
    rows: Vec<ActionRow>,
}

/// `GET /console/actions`: the Action center.
pub(crate) async fn center(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    Query(q): Query<CenterQuery>,
) -> Result<Response, Failure> {
    let found = list(&state, &session, &base, q.odata(&state, PAGE_SIZE, q.page.saturating_mul(PAGE_SIZE))).await?;
    let rows: Vec<ActionRow> = found.value.iter().map(ActionRow::from).collect();
    if q.fragment == "rows" {
        return Ok(html(&Rows { rows }));
    }
    let total = found.count.unwrap_or(rows.len() as u64);
    let first = q.page.saturating_mul(PAGE_SIZE);
    let last = first.saturating_add(rows.len() as u64);
    let page = CenterPage {
        chrome: session.chrome(&state, "actions").await,
        total,
        first: if rows.is_empty() { 0 } else { first.saturating_add(1) },
        last,
        prev: (q.page > 0).then(|| q.link(q.page - 1, "/console/actions")),
        next: (last < total).then(|| q.link(q.page.saturating_add(1), "/console/actions")),
        live_url: format!("{}&fragment=rows", q.link(q.page, "/console/actions")),
        export_url: q.link(0, "/console/actions.csv"),
        rows,
        types: &ActionType::NAMES,
        statuses: &ActionStatus::NAMES,
        windows: &[
            ("day", "Last day"),
            ("week", "Last week"),
            ("30days", "Last 30 days"),
            ("6months", "Last 6 months"),
        ],
        q,
    };
    Ok(html(&page))
}

/// `GET /console/actions.csv`: the Action center's current filter as CSV, read from the
/// API a page at a time and streamed out.
pub(crate) async fn export(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    Query(q): Query<CenterQuery>,
) -> Result<Response, Failure> {
    // The first page is read before answering, so a refusal is an error page, not a CSV.
    let first = list(&state, &session, &base, q.odata(&state, EXPORT_PAGE, 0)).await?;
    let header = csv_line(&[
        "Action id",
        "Type",
        "Status",
        "Device",
        "Machine id",
        "Requestor",
        "Comment",
        "Created (UTC)",
        "Updated (UTC)",
    ]);
    let stream = futures::stream::unfold((Some(first), 0u64, false), move |(page, skip, done)| {
        let (state, session, base, q) = (state.clone(), session.caller.clone(), base.clone(), q.clone());
        async move {
            if done {
                return None;
            }
            let page = match page {
                Some(page) => page,
                None => {
                    let uri: axum::http::Uri = "/api/machineactions".parse().ok()?;
                    let answer = actions::list(
                        State(state.clone()),
                        session,
                        base,
                        uri,
                        RawQuery(Some(q.odata(&state, EXPORT_PAGE, skip))),
                    )
                    .await;
                    match api::<Collection<MachineAction>>(answer).await {
                        Ok(page) => page,
                        Err(f) => return Some((Err(std::io::Error::other(f.message)), (None, skip, true))),
                    }
                }
            };
            let mut chunk = String::new();
            for a in &page.value {
                let r = ActionRow::from(a);
                chunk.push_str(&csv_line(&[
                    &r.id,
                    &r.kind,
                    &r.status,
                    &r.device,
                    &r.machine_id,
                    &r.requestor,
                    &r.comment,
                    &r.created,
                    &r.updated,
                ]));
            }
            let next_skip = skip + page.value.len() as u64;
            let finished = page.value.len() < EXPORT_PAGE as usize || next_skip >= EXPORT_MAX;
            Some((Ok::<_, std::io::Error>(chunk), (None, next_skip, finished)))
        }
    });
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(header) }).chain(stream);
    let mut response = axum::body::Body::from_stream(body).into_response();
    super::secure_headers(response.headers_mut(), "text/csv; charset=utf-8");
    response.headers_mut().insert(CONTENT_TYPE, axum::http::HeaderValue::from_static("text/csv; charset=utf-8"));
    response.headers_mut().insert(
        CONTENT_DISPOSITION,
        axum::http::HeaderValue::from_static("attachment; filename=\"casefile-actions.csv\""),
    );
    Ok(response)
}

use futures::StreamExt as _;

/// One CSV record. A cell starting with `=`, `+`, `-` or `@` is prefixed with `'` so a
/// spreadsheet does not run a requestor's comment as a formula.
fn csv_line(cells: &[&str]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let guarded: Vec<String> = cells
        .iter()
        .map(|c| if c.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{c}") } else { (*c).to_owned() })
        .collect();
    let _ = writer.write_record(&guarded);
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[derive(Template)]
#[template(path = "console/action.html")]
struct ActionPage {
    chrome: Chrome,
    action: ActionRow,
    details: Vec<(&'static str, String)>,
    message: Option<String>,
    /// The cancel form's token (the live fragment renders the form too).
    csrf: String,
}

/// The live part of an action's page: its status, the package once there is one, and the
/// cancel form while it can be cancelled (so it goes when the action ends).
#[derive(Template)]
#[template(path = "console/action_status.html")]
struct StatusFragment {
    action: ActionRow,
    csrf: String,
}

#[derive(Deserialize, Default)]
pub(crate) struct ActionQuery {
    #[serde(default)]
    fragment: String,
}

async fn action(state: &AppState, session: &Session, base: &BaseUrl, id: &str) -> Result<MachineAction, Failure> {
    let answer =
        actions::get(State(state.clone()), session.caller.clone(), base.clone(), crate::routes::Path(id.to_owned()))
            .await;
    Ok(api::<Entity<MachineAction>>(answer).await?.value)
}

async fn action_page(
    state: &AppState,
    session: &Session,
    base: &BaseUrl,
    id: &str,
    message: Option<String>,
) -> Result<Response, Failure> {
    let a = action(state, session, base, id).await?;
    let mut details = vec![
        ("Profile", a.profile.clone()),
        ("Title", a.title.clone().unwrap_or_default()),
        ("External id", a.external_id.clone().unwrap_or_default()),
        ("Request source", a.request_source.clone()),
    ];
    if let Some(by) = &a.cancellation_requestor {
        details.push(("Cancelled by", by.clone()));
        details.push(("Cancellation comment", a.cancellation_comment.clone().unwrap_or_default()));
    }
    if a.error_h_result != 0 {
        details.push(("Error (HRESULT)", a.error_h_result.to_string()));
    }
    if let Some(info) = &a.troubleshoot_info {
        details.push(("Troubleshooting", info.clone()));
    }
    let chrome = session.chrome(state, "actions").await;
    let csrf = chrome.csrf.clone();
    let page = ActionPage { chrome, action: ActionRow::from(&a), details, message, csrf };
    Ok(html(&page))
}

/// `GET /console/actions/{id}` (`?fragment=status`: the live status block only).
pub(crate) async fn page(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<ActionQuery>,
) -> Result<Response, Failure> {
    if q.fragment == "status" {
        let a = action(&state, &session, &base, &id).await?;
        return Ok(html(&StatusFragment { action: ActionRow::from(&a), csrf: session.record.csrf.clone() }));
    }
    action_page(&state, &session, &base, &id, None).await
}

/// `POST /console/actions/{id}/cancel`: the API's cancel, with the analyst's reason.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Form(form): axum::Form<super::CommentForm>,
) -> Result<Response, Response> {
    session.check_form(&headers, &base, &form.csrf)?;
    let (json_headers, body) = super::comment_body(&form.comment);
    let answer = actions::cancel(
        State(state.clone()),
        session.caller.clone(),
        base.clone(),
        crate::routes::Path(id.clone()),
        json_headers,
        body,
    )
    .await;
    match api::<serde_json::Value>(answer).await {
        Ok(_) => {
            crate::audit::answered_as(axum::http::StatusCode::SEE_OTHER.as_u16());
            Ok(redirect(&format!("/console/actions/{}", url_escape(&id))))
        }
        Err(failure) => {
            let status = failure.status;
            let message = format!("{}: {}", failure.code, failure.message);
            let mut page = action_page(&state, &session, &base, &id, Some(message)).await.map_err(Response::from)?;
            *page.status_mut() = status;
            Ok(page)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_cells_never_start_a_formula() {
        assert_eq!(super::csv_line(&["=cmd|'/c calc'!A1", "a,b", "plain"]), "'=cmd|'/c calc'!A1,\"a,b\",plain\n");
        assert_eq!(super::csv_line(&["-2+3", "@SUM(1)", "+x", "ok"]), "'-2+3,'@SUM(1),'+x,ok\n");
    }
}
