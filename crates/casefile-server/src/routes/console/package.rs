//! A package in the browser: download, signature and verification, chain of custody,
//! and the viewer (summary, folder tree with sizes and SHA-256, CSV tables paged, sorted
//! and filtered on the server, text with search). Reading a package's content is reading
//! the evidence: it needs what `getPackageUri` needs, and every view is in the trail
//! (`package.view`).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use casefile_package::view::{self, ColumnFilter, CsvQuery, EntryKind, SortBy};
use casefile_proto::action::{ActionStatus, ActionType, MachineAction};
use casefile_proto::audit::Custody;
use casefile_proto::odata::Value;
use serde::Deserialize;

use super::{BaseUrl, Chrome, Failure, Session, api, html, redirect, url_escape};
use crate::auth::Api;
use crate::routes::{Intent, caller_action, custody, download};
use crate::state::AppState;

/// Rows per CSV page and lines per text page in the viewer.
const CSV_ROWS: usize = 100;
const TEXT_LINES: usize = 200;
const SEARCH_HITS: usize = 200;

pub(crate) struct FileRow {
    pub path: String,
    pub indent: usize,
    pub size: u64,
    pub sha256: String,
    pub note: String,
    pub viewable: bool,
}

#[derive(Template)]
#[template(path = "console/package.html")]
struct PackagePage {
    chrome: Chrome,
    action_id: String,
    device: String,
    requested_by: String,
    requested_at: String,
    comment: String,
    size: u64,
    sha256: String,
    stored_at: String,
    verdict: Verdict,
    summary: Vec<(String, String)>,
    items: Vec<(String, String, String)>,
    files: Vec<FileRow>,
    timeline: Vec<(String, String, String, String, String)>,
}

/// What checking the stored package again says.
pub(crate) struct Verdict {
    pub authentic: bool,
    pub files_checked: usize,
    pub problems: Vec<String>,
    pub signature: String,
    pub signer: String,
}

/// The action, as the caller may read its package: `getPackageUri`'s permission, role and
/// device-group checks (under the `ViewPackage` quota: each viewer page is a call, and
/// `GetPackageUri`'s is two a minute), and a `Succeeded` collection with a package still
/// stored.
async fn readable(
    state: &AppState,
    session: &Session,
    id: &str,
) -> Result<(MachineAction, casefile_store::PackageRecord), Failure> {
    let caller = &session.caller;
    let refused = |e: crate::error::ApiError| async move {
        api::<serde_json::Value>(Err(e)).await.err().unwrap_or_else(|| Failure::internal("refusal"))
    };
    let access = match caller.admit(state, Api::ViewPackage).await {
        Ok(access) => access,
        Err(e) => return Err(refused(e).await),
    };
    let action = match caller_action(state, caller, &access, id, Intent::Read).await {
        Ok(action) => action,
        Err(e) => return Err(refused(e).await),
    };
    crate::audit::note_target(action.id);
    if action.action_type != ActionType::CollectInvestigationPackage || action.status != ActionStatus::Succeeded {
        return Err(Failure::not_found("This action has no package: only a collection that succeeded has one."));
    }
    let package = state
        .store
        .tenant(&caller.tenant_id)
        .package(action.id)
        .await
        .map_err(Failure::from_store)?
        .filter(|p| p.deleted_at.is_none())
        .ok_or_else(|| Failure::not_found("The package is no longer stored (its retention ended)."))?;
    Ok((action, package))
}

async fn local_file(state: &AppState, package: &casefile_store::PackageRecord) -> Result<std::path::PathBuf, Failure> {
    state.blobs.readable(&package.blob_key, &package.sha256).await.map_err(Failure::internal)
}

/// Package pages verified at once: each reads the whole package.
static VERIFYING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Checks every file against the signed manifest and the signature, then says whether the
/// signer is the device's enrolled key now (after an identity reset a genuine older
/// package is signed by the key the device had then).
fn verify(path: std::path::PathBuf, enrolled: Option<String>) -> Result<Verdict, Failure> {
    let file = std::fs::File::open(&path).map_err(Failure::internal)?;
    let report = casefile_package::verify_with(std::io::BufReader::new(file), None).map_err(|e| Failure {
        status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        code: "InvalidInput".into(),
        message: format!("The stored package cannot be read: {e}"),
    })?;
    let (signer, signature) = match &report.signature {
        casefile_package::signature::SignatureCheck::Valid { public_key, .. } => {
            let whose = if enrolled.as_deref() == Some(public_key.as_str()) {
                "valid, by the device's enrolled key".to_owned()
            } else {
                "valid, by a key that is not the device's enrolled key now (enrolled again since?)".to_owned()
            };
            (public_key.clone(), whose)
        }
        other => (String::new(), other.to_string()),
    };
    Ok(Verdict {
        authentic: report.is_authentic(),
        files_checked: report.files_checked,
        problems: report.problems.iter().take(50).map(ToString::to_string).collect(),
        signature,
        signer,
    })
}

/// `GET /console/actions/{id}/package`.
pub(crate) async fn page(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, Failure> {
    let (action, package) = readable(&state, &session, &id).await?;
    let machine =
        state.store.tenant(&session.caller.tenant_id).machine(&action.machine_id).await.map_err(Failure::from_store)?;
    let key = machine.and_then(|m| m.agent_public_key);
    let path = local_file(&state, &package).await?;
    let opened = path.clone();
    let _permit = VERIFYING.acquire().await.map_err(Failure::internal)?;
    let (verdict, tree, manifest) = tokio::task::spawn_blocking(move || -> Result<_, Failure> {
        let verdict = verify(path, key)?;
        let mut viewer =
            view::Package::open(std::fs::File::open(&opened).map_err(Failure::internal)?).map_err(view_failure)?;
        let tree = viewer.tree().map_err(view_failure)?;
        Ok((verdict, tree, viewer.manifest().cloned()))
    })
    .await
    .map_err(Failure::internal)??;
    let answer = custody::custody(State(state.clone()), session.caller.clone(), crate::routes::Path(id.clone())).await;
    let custody: Custody = api(answer).await?;
    let _ = base;
    let (summary, items) = match &manifest {
        Some(m) => (
            vec![
                ("Host".to_owned(), m.host.hostname.clone()),
                ("Operating system".to_owned(), format!("{} ({}, {})", m.host.os, m.host.kernel, m.host.architecture)),
                ("Collection started".to_owned(), super::when(&m.started_utc)),
                ("Collection finished".to_owned(), super::when(&m.finished_utc)),
                ("Agent".to_owned(), format!("{} {}", m.tool, m.agent_version)),
                ("Files".to_owned(), m.items.len().to_string()),
            ],
            m.collectors
                .iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        format!("{:?}", c.status),
                        format!(
                            "{} items{}",
                            c.items,
                            c.error.as_deref().map(|e| format!("; {e}")).unwrap_or_default()
                        ),
                    )
                })
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let files = tree
        .iter()
        .map(|f| FileRow {
            path: f.path.clone(),
            indent: f.depth,
            size: f.size,
            sha256: f.sha256.clone().unwrap_or_default(),
            note: match f.listing {
                view::Listing::Listed | view::Listing::PackageFile => String::new(),
                view::Listing::NotInManifest => "not in the manifest".to_owned(),
                view::Listing::NotInZip => "missing from the zip".to_owned(),
            },
            viewable: f.kind != EntryKind::Binary && f.zip_size.is_some(),
        })
        .collect();
    let timeline = custody
        .events
        .iter()
        .map(|e| {
            (
                e.at.clone(),
                e.event.clone(),
                format!("{} {}", e.actor_kind, e.actor),
                e.outcome.clone(),
                e.source_ip.clone().unwrap_or_default(),
            )
        })
        .collect();
    let page = PackagePage {
        chrome: session.chrome(&state, "actions").await,
        action_id: action.id.to_string(),
        device: action.computer_dns_name.clone().unwrap_or_else(|| action.machine_id.clone()),
        requested_by: action.requestor.clone(),
        requested_at: super::when(&action.creation_date_time_utc),
        comment: action.requestor_comment.clone(),
        size: package.size,
        sha256: package.sha256.clone(),
        stored_at: super::when(&package.stored_at),
        verdict,
        summary,
        items,
        files,
        timeline,
    };
    Ok(html(&page))
}

/// What one viewer page read from its file.
enum Read {
    Csv(view::CsvPage),
    /// Lines, whether more follow, and what the count line says.
    Text(Vec<view::TextLine>, bool, String),
    Binary,
}

fn view_failure(e: view::ViewError) -> Failure {
    let status = match e {
        view::ViewError::NoSuchEntry(_) => axum::http::StatusCode::NOT_FOUND,
        view::ViewError::Package(casefile_package::PackageError::Io(_)) => {
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => axum::http::StatusCode::BAD_REQUEST,
    };
    Failure { status, code: "InvalidInput".into(), message: e.to_string() }
}

/// `POST /console/actions/{id}/package/download`: `getPackageUri`, then to the link.
pub(crate) async fn download(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Result<Response, Response> {
    session.check_form(&headers, &base, &form.csrf)?;
    let answer =
        download::package_uri(State(state), session.caller.clone(), base.clone(), crate::routes::Path(id)).await;
    let link: Value<String> = api(answer).await.map_err(Response::from)?;
    // The link is this server's own `/safedownload/...` (or a bucket's presigned URL,
    // which the download answers with a redirect itself).
    Ok(redirect(link.value.strip_prefix(base.0.as_str()).unwrap_or(&link.value)))
}

#[derive(Deserialize, Default)]
pub(crate) struct ViewQuery {
    #[serde(default)]
    path: String,
    #[serde(default)]
    page: u64,
    #[serde(default)]
    sort: Option<usize>,
    #[serde(default)]
    desc: Option<String>,
    #[serde(default)]
    filter: String,
    #[serde(default)]
    col: Option<usize>,
    #[serde(default)]
    colfilter: String,
    #[serde(default)]
    search: String,
    #[serde(default)]
    from: u64,
}

#[derive(Template)]
#[template(path = "console/view_csv.html")]
struct CsvView {
    chrome: Chrome,
    action_id: String,
    path: String,
    q: ViewQuery,
    page: view::CsvPage,
    headers: Vec<(usize, String, String, &'static str)>,
    first: u64,
    last: u64,
    prev: Option<String>,
    next: Option<String>,
    server_ms: u128,
}

#[derive(Template)]
#[template(path = "console/view_text.html")]
struct TextView {
    chrome: Chrome,
    action_id: String,
    path: String,
    q: ViewQuery,
    lines: Vec<view::TextLine>,
    searching: bool,
    total: String,
    prev: Option<String>,
    next: Option<String>,
    server_ms: u128,
}

impl CsvView {
    fn col_is(&self, column: &usize) -> bool {
        self.q.col == Some(*column)
    }
}

fn view_link(id: &str, q: &ViewQuery, page: u64, sort: Option<(usize, bool)>, from: u64) -> String {
    let (sort, desc) = match sort {
        Some((column, desc)) => (Some(column), desc),
        None => (q.sort, q.desc.is_some()),
    };
    let mut link = format!("/console/actions/{id}/package/view?path={}&page={page}&from={from}", url_escape(&q.path));
    if let Some(column) = sort {
        link.push_str(&format!("&sort={column}"));
        if desc {
            link.push_str("&desc=1");
        }
    }
    for (key, value) in [("filter", &q.filter), ("colfilter", &q.colfilter), ("search", &q.search)] {
        if !value.is_empty() {
            link.push_str(&format!("&{key}={}", url_escape(value)));
        }
    }
    if let Some(col) = q.col {
        link.push_str(&format!("&col={col}"));
    }
    link
}

/// `GET /console/actions/{id}/package/view?path=...`: one page of one file.
pub(crate) async fn view(
    State(state): State<AppState>,
    session: Session,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(q): Query<ViewQuery>,
) -> Result<Response, Failure> {
    let (action, package) = readable(&state, &session, &id).await?;
    crate::audit::note_detail(serde_json::json!({ "path": q.path }));
    let path = local_file(&state, &package).await?;
    let entry = q.path.clone();
    let started = std::time::Instant::now();
    let query = CsvQuery {
        offset: q.page.saturating_mul(CSV_ROWS as u64),
        limit: CSV_ROWS,
        sort: q.sort.map(|column| SortBy { column, descending: q.desc.is_some() }),
        filter: Some(q.filter.clone()).filter(|f| !f.is_empty()),
        column_filters: match q.col {
            Some(column) if !q.colfilter.is_empty() => vec![ColumnFilter { column, contains: q.colfilter.clone() }],
            _ => Vec::new(),
        },
    };
    let searching = !q.search.is_empty();
    let (needle, from) = (q.search.clone(), q.from.max(1));
    // One open of the package per page: opening checks the whole zip's structure.
    let read = tokio::task::spawn_blocking(move || -> Result<Read, Failure> {
        let mut viewer =
            view::Package::open(std::fs::File::open(&path).map_err(Failure::internal)?).map_err(view_failure)?;
        Ok(match viewer.kind(&entry).map_err(view_failure)? {
            EntryKind::Csv => Read::Csv(viewer.csv_page(&entry, &query).map_err(view_failure)?),
            EntryKind::Text if searching => {
                let found = viewer.text_search(&entry, &needle, SEARCH_HITS, from).map_err(view_failure)?;
                Read::Text(found.hits, found.more, format!("{} lines searched", found.scanned_lines))
            }
            EntryKind::Text => {
                let page = viewer.text_page(&entry, from, TEXT_LINES).map_err(view_failure)?;
                let total = page.total_lines.map(|n| format!("{n} lines")).unwrap_or_default();
                Read::Text(page.lines, page.more, total)
            }
            EntryKind::Binary => Read::Binary,
        })
    })
    .await
    .map_err(Failure::internal)??;
    let action_id = action.id.to_string();
    let chrome = session.chrome(&state, "actions").await;
    match read {
        Read::Csv(page) => {
            let first = page.offset;
            let last = first.saturating_add(page.rows.len() as u64);
            let headers = page
                .columns
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let active = q.sort == Some(i);
                    let desc = active && q.desc.is_some();
                    let mark = match (active, desc) {
                        (false, _) => "none",
                        (true, true) => "descending",
                        (true, false) => "ascending",
                    };
                    (i, name.clone(), view_link(&action_id, &q, 0, Some((i, active && !desc)), 0), mark)
                })
                .collect();
            let page_view = CsvView {
                chrome,
                prev: (q.page > 0).then(|| view_link(&action_id, &q, q.page - 1, None, 0)),
                next: (last < page.matched).then(|| view_link(&action_id, &q, q.page.saturating_add(1), None, 0)),
                first: if page.rows.is_empty() { 0 } else { first.saturating_add(1) },
                last,
                headers,
                path: q.path.clone(),
                action_id,
                page,
                q,
                server_ms: started.elapsed().as_millis(),
            };
            Ok(html(&page_view))
        }
        Read::Text(lines, more, total) => {
            let next_from = lines.last().map(|l| l.number + 1);
            let page_view = TextView {
                chrome,
                prev: (!searching && from > 1)
                    .then(|| view_link(&action_id, &q, 0, None, from.saturating_sub(TEXT_LINES as u64).max(1))),
                next: next_from.filter(|_| more).map(|n| view_link(&action_id, &q, 0, None, n)),
                path: q.path.clone(),
                action_id,
                lines,
                searching,
                total,
                q,
                server_ms: started.elapsed().as_millis(),
            };
            Ok(html(&page_view))
        }
        Read::Binary => Err(Failure {
            status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            code: "InvalidInput".into(),
            message: "This file is binary: download the package to examine it.".into(),
        }),
    }
}
