//! Devices: the searchable, sortable, paged list, a device's page and its
//! "Collect investigation package" form.

use askama::Template;
use axum::extract::{Query, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use casefile_proto::action::MachineAction;
use casefile_proto::machine::Machine;
use casefile_proto::odata::{Collection, Entity};
use serde::Deserialize;

use super::machine_actions::ActionRow;
use super::{BaseUrl, Chrome, Failure, Session, api, html, odata_string, redirect, url_escape, when};
use crate::routes::{actions, machines};
use crate::state::AppState;

pub(super) const PAGE_SIZE: u64 = 50;
const HEALTH: &[&str] =
    &["Active", "Inactive", "ImpairedCommunication", "NoSensorData", "NoSensorDataImpairedCommunication", "Unknown"];

#[derive(Deserialize, Default)]
pub(crate) struct DevicesQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    health: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    dir: String,
    #[serde(default)]
    page: u64,
}

pub(crate) struct DeviceRow {
    pub id: String,
    pub name: String,
    pub health: String,
    pub last_seen: String,
    pub os: String,
    pub tags: String,
    pub group: String,
}

impl From<&Machine> for DeviceRow {
    fn from(m: &Machine) -> Self {
        Self {
            id: m.id.as_str().to_owned(),
            name: m.computer_dns_name.clone(),
            health: format!("{:?}", m.health_status),
            last_seen: when(&m.last_seen),
            os: [Some(m.os_platform.as_str()), m.os_version.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
            tags: m.machine_tags.join(", "),
            group: m.rbac_group_name.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/devices.html")]
struct DevicesPage {
    chrome: Chrome,
    rows: Vec<DeviceRow>,
    total: u64,
    q: DevicesQuery,
    health_values: &'static [&'static str],
    groups: Vec<(i64, String)>,
    first: u64,
    last: u64,
    prev: Option<String>,
    next: Option<String>,
    sort_links: Vec<(&'static str, &'static str, String, &'static str)>,
}

/// The OData query the list's controls stand for.
fn odata_query(q: &DevicesQuery) -> String {
    let mut filters = Vec::new();
    if !q.q.trim().is_empty() {
        filters.push(format!("contains(computerDnsName,{})", odata_string(q.q.trim())));
    }
    if HEALTH.contains(&q.health.as_str()) {
        filters.push(format!("healthStatus eq '{}'", q.health));
    }
    if !q.os.trim().is_empty() {
        filters.push(format!("osPlatform eq {}", odata_string(q.os.trim())));
    }
    if !q.tag.trim().is_empty() {
        filters.push(format!("machineTags/any(t: t eq {})", odata_string(q.tag.trim())));
    }
    if let Ok(group) = q.group.parse::<i64>() {
        filters.push(format!("rbacGroupId eq {group}"));
    }
    // Health follows from when a device was last seen, so it sorts by that.
    let column = match q.sort.as_str() {
        "name" => "computerDnsName",
        "os" => "osPlatform",
        _ => "lastSeen",
    };
    let dir = if q.dir == "asc" {
        "asc"
    } else if q.dir == "desc" || q.sort.is_empty() || q.sort == "lastSeen" || q.sort == "health" {
        "desc"
    } else {
        "asc"
    };
    let mut out =
        format!("$orderby={column} {dir}&$top={PAGE_SIZE}&$skip={}&$count=true", q.page.saturating_mul(PAGE_SIZE));
    if !filters.is_empty() {
        out.push_str("&$filter=");
        out.push_str(&url_escape(&filters.join(" and ")));
    }
    out.replace(' ', "%20")
}

fn link(q: &DevicesQuery, page: u64, sort: Option<(&str, &str)>) -> String {
    let (sort, dir) = sort.unwrap_or((&q.sort, &q.dir));
    format!(
        "/console/devices?q={}&health={}&os={}&tag={}&group={}&sort={}&dir={}&page={page}",
        url_escape(&q.q),
        url_escape(&q.health),
        url_escape(&q.os),
        url_escape(&q.tag),
        url_escape(&q.group),
        url_escape(sort),
        url_escape(dir),
    )
}

/// `GET /console/devices`.
pub(crate) async fn list(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    Query(q): Query<DevicesQuery>,
) -> Result<Response, Failure> {
    let query = odata_query(&q);
    let uri: axum::http::Uri = "/api/machines".parse().map_err(Failure::internal)?;
    let answer = machines::list(State(state.clone()), session.caller.clone(), base, uri, RawQuery(Some(query))).await;
    let found: Collection<Machine> = api(answer).await?;
    // Only the groups the user sees devices of: the others' names are not theirs to read.
    let visible = crate::rbac::Access::of(&state, &session.caller).await.map(|a| a.visibility()).unwrap_or_default();
    let groups = state
        .store
        .tenant(&session.caller.tenant_id)
        .device_groups()
        .await
        .map_err(Failure::from_store)?
        .into_iter()
        .filter(|g| visible.as_ref().is_none_or(|v| v.groups.contains(&g.id)))
        .map(|g| (g.id, g.name))
        .collect();
    let total = found.count.unwrap_or(found.value.len() as u64);
    let first = q.page.saturating_mul(PAGE_SIZE);
    let last = first.saturating_add(found.value.len() as u64);
    let sort_links = [("name", "Name"), ("health", "Health"), ("lastSeen", "Last seen"), ("os", "OS")]
        .into_iter()
        .map(|(key, label)| {
            let active = q.sort == key || (q.sort.is_empty() && key == "lastSeen");
            let descending = if q.dir.is_empty() { key == "lastSeen" || key == "health" } else { q.dir == "desc" };
            let next_dir = if active && !descending {
                "desc"
            } else if active {
                "asc"
            } else if key == "lastSeen" || key == "health" {
                "desc"
            } else {
                "asc"
            };
            let mark = match (active, descending) {
                (false, _) => "none",
                (true, true) => "descending",
                (true, false) => "ascending",
            };
            (key, label, link(&q, 0, Some((key, next_dir))), mark)
        })
        .collect();
    let page = DevicesPage {
        chrome: session.chrome(&state, "devices").await,
        rows: found.value.iter().map(DeviceRow::from).collect(),
        total,
        prev: (q.page > 0).then(|| link(&q, q.page - 1, None)),
        next: (last < total).then(|| link(&q, q.page.saturating_add(1), None)),
        first: if found.value.is_empty() { 0 } else { first.saturating_add(1) },
        last,
        health_values: HEALTH,
        groups,
        sort_links,
        q,
    };
    Ok(html(&page))
}

#[derive(Template)]
#[template(path = "console/device.html")]
struct DevicePage {
    chrome: Chrome,
    device: DeviceRow,
    facts: Vec<(&'static str, String)>,
    actions: Vec<ActionRow>,
    message: Option<String>,
    active: Option<String>,
    comment: String,
    /// The profiles the collect form offers (the API's default when none is chosen).
    profiles: Vec<(String, String)>,
}

async fn device_page(
    state: &AppState,
    session: &Session,
    base: &BaseUrl,
    id: &str,
    message: Option<String>,
    comment: String,
) -> Result<Response, Failure> {
    let answer =
        machines::get(State(state.clone()), session.caller.clone(), base.clone(), crate::routes::Path(id.to_owned()))
            .await;
    let machine: Entity<Machine> = api(answer).await?;
    let m = machine.value;
    let uri: axum::http::Uri = "/api/machines/x/machineactions".parse().map_err(Failure::internal)?;
    let answer = actions::list_for_machine(
        State(state.clone()),
        session.caller.clone(),
        base.clone(),
        uri,
        crate::routes::Path(m.id.as_str().to_owned()),
        RawQuery(Some("$top=50&$orderby=creationDateTimeUtc%20desc".to_owned())),
    )
    .await;
    let listed: Collection<MachineAction> = api(answer).await?;
    let active = listed
        .value
        .iter()
        .find(|a| {
            a.action_type == casefile_proto::action::ActionType::CollectInvestigationPackage
                && matches!(
                    a.status,
                    casefile_proto::action::ActionStatus::Pending | casefile_proto::action::ActionStatus::InProgress
                )
        })
        .map(|a| a.id.to_string());
    let facts = vec![
        ("Machine id", m.id.as_str().to_owned()),
        ("First seen", when(&m.first_seen)),
        ("Last IP address", m.last_ip_address.clone().unwrap_or_default()),
        ("OS architecture", m.os_architecture.clone().unwrap_or_default()),
        ("Agent version", m.agent_version.clone().unwrap_or_default()),
        ("Onboarding status", m.onboarding_status.clone()),
    ];
    let page = DevicePage {
        chrome: session.chrome(state, "devices").await,
        device: DeviceRow::from(&m),
        facts,
        actions: listed.value.iter().map(ActionRow::from).collect(),
        message,
        active,
        comment,
        profiles: state
            .config
            .profiles
            .resolved()
            .map_err(Failure::internal)?
            .into_values()
            .map(|p| (p.name, p.description))
            .collect(),
    };
    Ok(html(&page))
}

/// `GET /console/devices/{id}`: 404 for a device the user does not see, as the API does.
pub(crate) async fn page(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, Failure> {
    device_page(&state, &session, &base, &id, None, String::new()).await
}

/// The collect form: a reason and, optionally, a profile.
#[derive(serde::Deserialize)]
pub(crate) struct CollectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    profile: String,
}

/// `POST /console/devices/{id}/collect`: the API's `collectInvestigationPackage`.
pub(crate) async fn collect(
    State(state): State<AppState>,
    session: Session,
    base: BaseUrl,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Form(form): axum::Form<CollectForm>,
) -> Result<Response, Response> {
    session.check_form(&headers, &base, &form.csrf)?;
    let profile = Some(form.profile.as_str()).filter(|p| !p.is_empty());
    let (json_headers, body) = super::json_body(&serde_json::json!({ "Comment": form.comment, "Profile": profile }));
    let answer = actions::collect(
        State(state.clone()),
        session.caller.clone(),
        base.clone(),
        crate::routes::Path(id.clone()),
        json_headers,
        body,
    )
    .await;
    match api::<Entity<MachineAction>>(answer).await {
        Ok(created) => {
            crate::audit::answered_as(axum::http::StatusCode::SEE_OTHER.as_u16());
            Ok(redirect(&format!("/console/actions/{}", created.value.id)))
        }
        Err(failure) => {
            // Shown on the device's page, with the API's status (the trail records it).
            let status = failure.status;
            let message = format!("{}: {}", failure.code, failure.message);
            let mut page = match device_page(&state, &session, &base, &id, Some(message), form.comment).await {
                Ok(page) => page,
                Err(other) => return Err(other.into()),
            };
            *page.status_mut() = status;
            Ok(page)
        }
    }
}
