//! OData filters and orders compiled to SQLite: every value is a bound parameter, every
//! property maps to a column through one table per entity.

use casefile_odata::{CmpOp, Expr, OrderBy, Value};
use sqlx::{QueryBuilder, Sqlite};

use crate::{Result, StoreError};

/// How a wire property is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    Text,
    /// Compared case-insensitively (host names, user names, ids clients may upper-case).
    TextNoCase,
    /// Microseconds since the epoch.
    Micros,
    Integer,
    /// A JSON array of strings.
    JsonList,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Column {
    pub property: &'static str,
    pub sql: &'static str,
    pub stored: Stored,
}

const fn col(property: &'static str, sql: &'static str, stored: Stored) -> Column {
    Column { property, sql, stored }
}

pub(super) const ACTION_COLUMNS: &[Column] = &[
    // GUIDs arrive normalized to lower case and machine ids are folded by the API layer:
    // an exact comparison keeps these lookups on their indexes.
    col("id", "id", Stored::Text),
    col("type", "type", Stored::Text),
    col("status", "status", Stored::Text),
    col("machineId", "machine_id", Stored::Text),
    col("computerDnsName", "computer_dns_name", Stored::TextNoCase),
    col("requestor", "requestor", Stored::TextNoCase),
    col("requestorComment", "requestor_comment", Stored::Text),
    col("requestSource", "request_source", Stored::Text),
    col("externalId", "external_id", Stored::Text),
    col("title", "title", Stored::Text),
    col("creationDateTimeUtc", "created_at", Stored::Micros),
    col("lastUpdateDateTimeUtc", "updated_at", Stored::Micros),
    col("cancellationRequestor", "cancellation_requestor", Stored::TextNoCase),
    col("cancellationDateTimeUtc", "cancelled_at", Stored::Micros),
    col("errorHResult", "error_hresult", Stored::Integer),
];

pub(super) const MACHINE_COLUMNS: &[Column] = &[
    col("id", "id", Stored::TextNoCase),
    col("computerDnsName", "computer_dns_name", Stored::TextNoCase),
    col("firstSeen", "first_seen", Stored::Micros),
    col("lastSeen", "last_seen", Stored::Micros),
    col("osPlatform", "os_platform", Stored::TextNoCase),
    col("version", "os_version", Stored::Text),
    col("osVersion", "os_version", Stored::Text),
    col("osBuild", "os_build", Stored::Integer),
    col("osArchitecture", "os_architecture", Stored::Text),
    col("agentVersion", "agent_version", Stored::Text),
    col("lastIpAddress", "last_ip_address", Stored::Text),
    col("machineTags", "machine_tags", Stored::JsonList),
    col("rbacGroupId", "rbac_group_id", Stored::Integer),
];

fn column(columns: &[Column], property: &str) -> Result<Column> {
    columns
        .iter()
        .find(|c| c.property == property)
        .copied()
        .ok_or_else(|| StoreError::Query(format!("no column for property '{property}'")))
}

/// Appends ` AND (<filter>)`.
pub(super) fn push_filter(q: &mut QueryBuilder<Sqlite>, columns: &[Column], filter: &Expr) -> Result<()> {
    q.push(" AND (");
    push_expr(q, columns, filter)?;
    q.push(")");
    Ok(())
}

fn push_expr(q: &mut QueryBuilder<Sqlite>, columns: &[Column], expr: &Expr) -> Result<()> {
    match expr {
        Expr::And(a, b) | Expr::Or(a, b) => {
            q.push("(");
            push_expr(q, columns, a)?;
            q.push(if matches!(expr, Expr::And(..)) { ") AND (" } else { ") OR (" });
            push_expr(q, columns, b)?;
            q.push(")");
        }
        // SQL's NULL would make `NOT (x = 'a')` exclude rows where x is null; OData
        // counts them as matching.
        Expr::Not(inner) => {
            q.push("NOT COALESCE((");
            push_expr(q, columns, inner)?;
            q.push("), 0)");
        }
        Expr::Const(value) => {
            q.push(if *value { "1" } else { "0" });
        }
        Expr::Compare { property, op, value } => push_compare(q, column(columns, property)?, *op, value)?,
        Expr::In { property, values } => {
            let c = column(columns, property)?;
            // The collation goes on the column: after the list it would apply to the result.
            q.push(c.sql);
            push_collation(q, c);
            q.push(" IN (");
            let mut list = q.separated(", ");
            for v in values {
                push_value(&mut list, c, v)?;
            }
            list.push_unseparated(")");
        }
        Expr::StartsWith { property, prefix } => push_like(q, column(columns, property)?, "", prefix, "%"),
        Expr::EndsWith { property, suffix } => push_like(q, column(columns, property)?, "%", suffix, ""),
        Expr::Contains { property, needle } => push_like(q, column(columns, property)?, "%", needle, "%"),
        Expr::AnyEq { property, value } => {
            let c = column(columns, property)?;
            if c.stored != Stored::JsonList {
                return Err(StoreError::Query(format!("'{property}' is not a collection")));
            }
            q.push("EXISTS (SELECT 1 FROM json_each(").push(c.sql).push(") WHERE value = ");
            q.push_bind(value.clone()).push(" COLLATE NOCASE)");
        }
    }
    Ok(())
}

fn push_compare(q: &mut QueryBuilder<Sqlite>, c: Column, op: CmpOp, value: &Value) -> Result<()> {
    if c.stored == Stored::JsonList {
        return Err(StoreError::Query(format!("'{}' is a collection", c.property)));
    }
    if *value == Value::Null {
        q.push(c.sql).push(match op {
            CmpOp::Eq => " IS NULL",
            CmpOp::Ne => " IS NOT NULL",
            // Ordering against null matches nothing, as in OData.
            _ => " IS NULL AND 0",
        });
        return Ok(());
    }
    q.push(c.sql).push(match op {
        CmpOp::Eq => " = ",
        // Null-safe: a missing value differs from any given one.
        CmpOp::Ne => " IS NOT ",
        CmpOp::Gt => " > ",
        CmpOp::Ge => " >= ",
        CmpOp::Lt => " < ",
        CmpOp::Le => " <= ",
    });
    let mut one = q.separated("");
    push_value(&mut one, c, value)?;
    push_collation(q, c);
    Ok(())
}

fn push_collation(q: &mut QueryBuilder<Sqlite>, c: Column) {
    if c.stored == Stored::TextNoCase {
        q.push(" COLLATE NOCASE");
    }
}

fn push_value(list: &mut sqlx::query_builder::Separated<'_, Sqlite, &str>, c: Column, value: &Value) -> Result<()> {
    match (c.stored, value) {
        (Stored::Text | Stored::TextNoCase, Value::String(s)) => list.push_bind(s.clone()),
        (Stored::Micros, Value::DateTime(t)) => list.push_bind(t.timestamp_micros()),
        (Stored::Integer, Value::Int(i)) => list.push_bind(*i),
        (Stored::Integer, Value::Bool(b)) => list.push_bind(i64::from(*b)),
        (_, Value::Null) => list.push("NULL"),
        (stored, value) => {
            return Err(StoreError::Query(format!("'{}' ({stored:?}) cannot hold {value:?}", c.property)));
        }
    };
    Ok(())
}

/// `LIKE` with the pattern's own `%`, `_` and `\` escaped; SQLite's LIKE ignores ASCII case.
fn push_like(q: &mut QueryBuilder<Sqlite>, c: Column, before: &str, text: &str, after: &str) {
    let mut escaped = String::with_capacity(text.len() + 2);
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(ch);
    }
    q.push(c.sql).push(" LIKE ").push_bind(format!("{before}{escaped}{after}")).push(" ESCAPE '\\'");
}

/// ` ORDER BY ...`: the requested order, then `default`, which ends in a unique column so
/// pages never overlap.
pub(super) fn push_order(
    q: &mut QueryBuilder<Sqlite>,
    columns: &[Column],
    order_by: &[OrderBy],
    default: &str,
) -> Result<()> {
    q.push(" ORDER BY ");
    for o in order_by {
        let c = column(columns, o.property)?;
        q.push(c.sql);
        push_collation(q, c);
        q.push(if o.descending { " DESC, " } else { " ASC, " });
    }
    q.push(default);
    Ok(())
}
