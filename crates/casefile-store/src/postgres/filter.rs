//! OData filters and orders compiled to PostgreSQL: every value is a bound parameter,
//! every property maps to a column through one table per entity. The same properties and
//! the same meaning as `sqlite/filter.rs`: `COLLATE NOCASE` there is `lower(…)` here,
//! SQLite's ASCII-case-blind `LIKE` is `ILIKE`.

use casefile_odata::{CmpOp, Expr, OrderBy, Value};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{Result, StoreError};

use crate::columns::column;
pub(super) use crate::columns::{ACTION_COLUMNS, Column, MACHINE_COLUMNS, Stored};

/// Appends ` AND (<filter>)`.
pub(super) fn push_filter(q: &mut QueryBuilder<Postgres>, columns: &[Column], filter: &Expr) -> Result<()> {
    q.push(" AND (");
    push_expr(q, columns, filter)?;
    q.push(")");
    Ok(())
}

fn push_expr(q: &mut QueryBuilder<Postgres>, columns: &[Column], expr: &Expr) -> Result<()> {
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
            q.push("), FALSE)");
        }
        Expr::Const(value) => {
            q.push(if *value { "TRUE" } else { "FALSE" });
        }
        Expr::Compare { property, op, value } => push_compare(q, column(columns, property)?, *op, value)?,
        Expr::In { property, values } => {
            let c = column(columns, property)?;
            let as_text = c.stored == Stored::Guid && !values.iter().all(|v| uuid_value(v).is_some());
            push_column(q, c, as_text);
            q.push(" IN (");
            let mut list = q.separated(", ");
            for v in values {
                push_value(&mut list, c, v, as_text)?;
            }
            list.push_unseparated(")");
        }
        Expr::StartsWith { property, prefix } => push_like(q, column(columns, property)?, "", prefix, "%"),
        Expr::EndsWith { property, suffix } => push_like(q, column(columns, property)?, "%", suffix, ""),
        Expr::Contains { property, needle } => push_like(q, column(columns, property)?, "%", needle, "%"),
        Expr::AnyEq { property, value } => {
            let c = column(columns, property)?;
            if c.stored != Stored::List {
                return Err(StoreError::Query(format!("'{property}' is not a collection")));
            }
            q.push("EXISTS (SELECT 1 FROM jsonb_array_elements_text(").push(c.sql);
            q.push(") AS e(v) WHERE lower(e.v) = lower(").push_bind(value.clone()).push("))");
        }
    }
    Ok(())
}

/// The value as a GUID, when it is one (a `uuid` column compares those natively, on its
/// index; anything else is compared with the column's text form).
fn uuid_value(value: &Value) -> Option<Uuid> {
    match value {
        Value::String(s) => Uuid::parse_str(s).ok().filter(|u| u.to_string() == *s),
        _ => None,
    }
}

fn push_column(q: &mut QueryBuilder<Postgres>, c: Column, uuid_as_text: bool) {
    match c.stored {
        Stored::TextNoCase => {
            q.push("lower(").push(c.sql).push(")");
        }
        Stored::Guid if uuid_as_text => {
            q.push(c.sql).push("::text");
        }
        _ => {
            q.push(c.sql);
        }
    }
}

fn push_compare(q: &mut QueryBuilder<Postgres>, c: Column, op: CmpOp, value: &Value) -> Result<()> {
    if c.stored == Stored::List {
        return Err(StoreError::Query(format!("'{}' is a collection", c.property)));
    }
    if *value == Value::Null {
        q.push(c.sql).push(match op {
            CmpOp::Eq => " IS NULL",
            CmpOp::Ne => " IS NOT NULL",
            // Ordering against null matches nothing, as in OData.
            _ => " IS NULL AND FALSE",
        });
        return Ok(());
    }
    let as_text = c.stored == Stored::Guid && uuid_value(value).is_none();
    push_column(q, c, as_text);
    q.push(match op {
        CmpOp::Eq => " = ",
        // Null-safe: a missing value differs from any given one.
        CmpOp::Ne => " IS DISTINCT FROM ",
        CmpOp::Gt => " > ",
        CmpOp::Ge => " >= ",
        CmpOp::Lt => " < ",
        CmpOp::Le => " <= ",
    });
    let mut one = q.separated("");
    push_value(&mut one, c, value, as_text)?;
    Ok(())
}

fn push_value(
    list: &mut sqlx::query_builder::Separated<'_, Postgres, &str>,
    c: Column,
    value: &Value,
    uuid_as_text: bool,
) -> Result<()> {
    match (c.stored, value) {
        (Stored::Text, Value::String(s)) => {
            list.push_bind(s.clone());
        }
        (Stored::TextNoCase, Value::String(s)) => {
            list.push("lower(").push_bind_unseparated(s.clone()).push_unseparated(")");
        }
        (Stored::Guid, Value::String(s)) => match uuid_value(value) {
            Some(u) if !uuid_as_text => {
                list.push_bind(u);
            }
            _ => {
                list.push_bind(s.clone());
            }
        },
        (Stored::Time, Value::DateTime(t)) => {
            list.push_bind(*t);
        }
        (Stored::Integer, Value::Int(i)) => {
            list.push_bind(*i);
        }
        (Stored::Integer, Value::Bool(b)) => {
            list.push_bind(i64::from(*b));
        }
        (_, Value::Null) => {
            list.push("NULL");
        }
        (stored, value) => {
            return Err(StoreError::Query(format!("'{}' ({stored:?}) cannot hold {value:?}", c.property)));
        }
    };
    Ok(())
}

/// `ILIKE` (SQLite's `LIKE` ignores ASCII case) with the pattern's own `%`, `_` and `\`
/// escaped.
fn push_like(q: &mut QueryBuilder<Postgres>, c: Column, before: &str, text: &str, after: &str) {
    let mut escaped = String::with_capacity(text.len() + 2);
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(ch);
    }
    q.push(c.sql);
    if c.stored == Stored::Guid {
        q.push("::text");
    }
    q.push(" ILIKE ").push_bind(format!("{before}{escaped}{after}")).push(" ESCAPE '\\'");
}

/// ` ORDER BY ...`: the requested order, then `default`, which ends in a unique column so
/// pages never overlap.
pub(super) fn push_order(
    q: &mut QueryBuilder<Postgres>,
    columns: &[Column],
    order_by: &[OrderBy],
    default: &str,
) -> Result<()> {
    q.push(" ORDER BY ");
    for o in order_by {
        let c = column(columns, o.property)?;
        push_column(q, c, false);
        if matches!(c.stored, Stored::Text | Stored::TextNoCase) {
            // Byte order, as SQLite's BINARY (and NOCASE after folding), whatever the
            // database's locale.
            q.push(" COLLATE \"C\"");
        }
        // SQLite sorts NULL first ascending and last descending; so does this.
        q.push(if o.descending { " DESC NULLS LAST, " } else { " ASC NULLS FIRST, " });
    }
    q.push(default);
    Ok(())
}
