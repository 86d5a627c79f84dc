//! The OData side of list endpoints: the properties of each entity that clients may
//! filter, sort and select, the rewriting of properties casefile computes rather than
//! stores, `$select` projection and `@odata.nextLink`.

use axum::http::StatusCode;
use axum::response::Response;
use casefile_odata::{CmpOp, Expr, Kind, Property, Schema, Value};
use casefile_proto::ErrorCode;
use casefile_proto::action::{ActionStatus, ActionType};
use casefile_proto::odata::Collection;
use casefile_proto::time::Timestamp;
use casefile_store::{ListQuery, Listed};
use serde::Serialize;

use super::{BaseUrl, reply};
use crate::error::{ApiError, ApiResult};

const fn prop(name: &'static str, kind: Kind, filterable: bool, sortable: bool) -> Property {
    Property { name, kind, filterable, sortable }
}

/// MachineAction (§2, §4.2): every key can be selected; MDE's documented filters and a
/// few more can be filtered and sorted.
pub const ACTION_SCHEMA: Schema = Schema {
    properties: &[
        prop("id", Kind::Guid, true, true),
        prop("type", Kind::Enum(&ActionType::NAMES), true, true),
        prop("title", Kind::String, true, false),
        prop("requestor", Kind::String, true, true),
        prop("requestorComment", Kind::String, false, false),
        prop("status", Kind::Enum(&ActionStatus::NAMES), true, true),
        prop("machineId", Kind::String, true, true),
        prop("computerDnsName", Kind::String, true, true),
        prop("creationDateTimeUtc", Kind::DateTime, true, true),
        prop("lastUpdateDateTimeUtc", Kind::DateTime, true, true),
        prop("cancellationRequestor", Kind::String, true, false),
        prop("cancellationComment", Kind::String, false, false),
        prop("cancellationDateTimeUtc", Kind::DateTime, true, true),
        prop("errorHResult", Kind::Int, true, false),
        prop("scope", Kind::String, false, false),
        prop("externalId", Kind::String, true, false),
        prop("requestSource", Kind::String, true, false),
        prop("relatedFileInfo", Kind::String, false, false),
        prop("commands", Kind::String, false, false),
        prop("troubleshootInfo", Kind::String, false, false),
        prop("casefileProfile", Kind::String, true, true),
        prop("casefileProgress", Kind::String, false, false),
    ],
};

const HEALTH: &[&str] =
    &["Active", "Inactive", "ImpairedCommunication", "NoSensorData", "NoSensorDataImpairedCommunication", "Unknown"];

/// Machine (§4.5). `healthStatus` is computed from `lastSeen`; the properties casefile
/// has no data for are always null (or, for `onboardingStatus`, always `Onboarded`), and
/// filters on them are answered from that constant.
pub const MACHINE_SCHEMA: Schema = Schema {
    properties: &[
        prop("id", Kind::String, true, true),
        prop("computerDnsName", Kind::String, true, true),
        prop("firstSeen", Kind::DateTime, true, true),
        prop("lastSeen", Kind::DateTime, true, true),
        prop("osPlatform", Kind::String, true, true),
        prop("osVersion", Kind::String, true, true),
        prop("osProcessor", Kind::String, false, false),
        prop("version", Kind::String, true, true),
        prop("lastIpAddress", Kind::String, true, true),
        prop("lastExternalIpAddress", Kind::String, false, false),
        prop("agentVersion", Kind::String, true, true),
        prop("osBuild", Kind::Int, true, true),
        prop("healthStatus", Kind::Enum(HEALTH), true, false),
        prop("deviceValue", Kind::Enum(&["Normal", "Low", "High"]), true, false),
        prop("rbacGroupId", Kind::Int, true, true),
        prop("rbacGroupName", Kind::String, false, false),
        prop("riskScore", Kind::Enum(&["None", "Informational", "Low", "Medium", "High"]), true, false),
        prop("exposureLevel", Kind::Enum(&["None", "Low", "Medium", "High"]), true, false),
        prop("isAadJoined", Kind::Bool, false, false),
        prop("aadDeviceId", Kind::Guid, true, false),
        prop("machineTags", Kind::StringCollection, true, false),
        prop(
            "onboardingStatus",
            Kind::Enum(&["Onboarded", "CanBeOnboarded", "Unsupported", "InsufficientInfo"]),
            true,
            false,
        ),
        prop("osArchitecture", Kind::String, true, true),
        prop("managedBy", Kind::String, false, false),
        prop("ipAddresses", Kind::String, false, false),
    ],
};

/// A parsed list request.
pub struct ListRequest {
    pub query: ListQuery,
    pub select: Option<Vec<&'static str>>,
}

fn odata_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::ODataError, format!("Invalid OData query: {e}"))
}

/// Most conditions one `$filter` may hold: databases bound expression depth, and a long
/// list of values belongs in `in (...)`.
const MAX_CONDITIONS: usize = 200;

pub fn parse(raw: Option<&str>, schema: &Schema) -> ApiResult<ListRequest> {
    let parsed = casefile_odata::parse_query(raw, schema).map_err(odata_error)?;
    let conditions = parsed.filter.as_ref().map_or(0, conditions);
    if conditions > MAX_CONDITIONS {
        return Err(odata_error(format!(
            "$filter has {conditions} conditions; at most {MAX_CONDITIONS} are allowed (use 'in' for lists of values)"
        )));
    }
    Ok(ListRequest {
        query: ListQuery {
            filter: parsed.filter,
            order_by: parsed.order_by,
            skip: parsed.skip,
            top: parsed.top.unwrap_or(casefile_store::query::MAX_TOP),
            count: parsed.count,
            visible: None,
        },
        select: parsed.select,
    })
}

/// Machine ids are stored lower-case; folding the filter's values keeps the lookup on
/// the index.
pub fn lower_action_filter(expr: Expr) -> ApiResult<Expr> {
    map(expr, &mut |e| match e {
        Expr::Compare { property: "machineId", op, value: Value::String(s) } => {
            Ok(Expr::Compare { property: "machineId", op, value: Value::String(s.to_ascii_lowercase()) })
        }
        Expr::In { property: "machineId", values } => Ok(Expr::In {
            property: "machineId",
            values: values
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Value::String(s.to_ascii_lowercase()),
                    other => other,
                })
                .collect(),
        }),
        other => Ok(other),
    })
}

/// Rewrites `healthStatus` into `lastSeen` bounds (`Active` = seen since `active_since`)
/// and answers filters on always-null properties from their constant.
pub fn lower_machine_filter(expr: Expr, active_since: Timestamp) -> ApiResult<Expr> {
    map(expr, &mut |e| {
        let Some(property) = property_of(&e) else { return Ok(e) };
        let constant = match property {
            "healthStatus" => return health(e, active_since),
            "onboardingStatus" => Value::String(casefile_proto::machine::ONBOARDED.to_owned()),
            "deviceValue" | "riskScore" | "exposureLevel" | "aadDeviceId" => Value::Null,
            _ => return Ok(e),
        };
        Ok(Expr::Const(matches_constant(&e, &constant)?))
    })
}

fn property_of(e: &Expr) -> Option<&'static str> {
    match e {
        Expr::Compare { property, .. }
        | Expr::In { property, .. }
        | Expr::StartsWith { property, .. }
        | Expr::EndsWith { property, .. }
        | Expr::Contains { property, .. }
        | Expr::AnyEq { property, .. } => Some(property),
        _ => None,
    }
}

/// Evaluates a comparison against a property whose value is the same on every machine.
fn matches_constant(e: &Expr, constant: &Value) -> ApiResult<bool> {
    match e {
        Expr::Compare { op: CmpOp::Eq, value, .. } => Ok(value == constant),
        Expr::Compare { op: CmpOp::Ne, value, .. } => Ok(value != constant),
        Expr::In { values, .. } => Ok(values.contains(constant)),
        Expr::Compare { property, .. } => Err(odata_error(format!("only eq, ne and in are supported on '{property}'"))),
        other => Err(odata_error(format!("{other:?} is not supported on this property"))),
    }
}

fn health(e: Expr, active_since: Timestamp) -> ApiResult<Expr> {
    let seen = |op: CmpOp| Expr::Compare { property: "lastSeen", op, value: Value::DateTime(active_since) };
    let is = |state: &Value| match state {
        Value::String(s) if s == "Active" => seen(CmpOp::Ge),
        Value::String(s) if s == "Inactive" => seen(CmpOp::Lt),
        _ => Expr::Const(false),
    };
    match e {
        Expr::Compare { op: CmpOp::Eq, value, .. } => Ok(is(&value)),
        Expr::Compare { op: CmpOp::Ne, value, .. } => Ok(Expr::Not(Box::new(is(&value)))),
        Expr::In { mut values, .. } => {
            // Only two states exist: repeating them must not build a deep expression.
            values.sort_by_key(|v| format!("{v:?}"));
            values.dedup();
            Ok(values.iter().map(is).reduce(|a, b| Expr::Or(Box::new(a), Box::new(b))).unwrap_or(Expr::Const(false)))
        }
        _ => Err(odata_error("only eq, ne and in are supported on 'healthStatus'")),
    }
}

fn conditions(expr: &Expr) -> usize {
    match expr {
        Expr::And(a, b) | Expr::Or(a, b) => conditions(a) + conditions(b),
        Expr::Not(a) => conditions(a),
        _ => 1,
    }
}

/// Applies `f` to every leaf of `expr`.
fn map(expr: Expr, f: &mut impl FnMut(Expr) -> ApiResult<Expr>) -> ApiResult<Expr> {
    Ok(match expr {
        Expr::And(a, b) => Expr::And(Box::new(map(*a, f)?), Box::new(map(*b, f)?)),
        Expr::Or(a, b) => Expr::Or(Box::new(map(*a, f)?), Box::new(map(*b, f)?)),
        Expr::Not(a) => Expr::Not(Box::new(map(*a, f)?)),
        leaf => f(leaf)?,
    })
}

/// The answer to a list call: the page (projected to `$select`), `@odata.count` when
/// asked, and `@odata.nextLink` when more matches remain.
pub fn respond<T: Serialize>(
    base: &BaseUrl,
    path: &str,
    raw_query: Option<&str>,
    entity_set: &str,
    request: &ListRequest,
    listed: Listed<T>,
) -> ApiResult<Response> {
    let returned = listed.items.len() as u64;
    let next_link = listed.more.then(|| next_link(base, path, raw_query, request.query.skip + returned));
    let Some(keys) = &request.select else {
        let context = base.context(&format!("$metadata#{entity_set}"));
        return Ok(reply(StatusCode::OK, &Collection { context, count: listed.total, value: listed.items, next_link }));
    };
    let context = base.context(&format!("$metadata#{entity_set}({})", keys.join(",")));
    let value = listed.items.iter().map(|item| project(item, keys)).collect::<ApiResult<Vec<_>>>()?;
    Ok(reply(StatusCode::OK, &Collection { context, count: listed.total, value, next_link }))
}

fn project<T: Serialize>(item: &T, keys: &[&str]) -> ApiResult<serde_json::Value> {
    let serde_json::Value::Object(mut all) = serde_json::to_value(item).map_err(ApiError::internal_from)? else {
        return Err(ApiError::internal_from("a listed entity did not serialize to an object"));
    };
    let kept = keys.iter().filter_map(|k| all.remove_entry(*k)).collect();
    Ok(serde_json::Value::Object(kept))
}

/// The same request with `$skip` moved past this page; every other option is kept.
fn next_link(base: &BaseUrl, path: &str, raw_query: Option<&str>, skip: u64) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in url::form_urlencoded::parse(raw_query.unwrap_or_default().as_bytes()) {
        if !key.trim().eq_ignore_ascii_case("$skip") {
            query.append_pair(&key, &value);
        }
    }
    query.append_pair("$skip", &skip.to_string());
    format!("{}{path}?{}", base.0, query.finish())
}
