//! OData filters and orders compiled to SQLite: every value is a bound parameter, every
//! property maps to a column through one table per entity.

use casefile_odata::{CmpOp, Expr, OrderBy, Value};
use sqlx::{QueryBuilder, Sqlite};

use crate::{Result, StoreError};

use crate::columns::column;
pub(super) use crate::columns::{ACTION_COLUMNS, Column, MACHINE_COLUMNS, Stored};

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
            if c.stored != Stored::List {
                return Err(StoreError::Query(format!("'{property}' is not a collection")));
            }
            q.push("EXISTS (SELECT 1 FROM json_each(").push(c.sql).push(") WHERE value = ");
            q.push_bind(value.clone()).push(" COLLATE NOCASE)");
        }
    }
    Ok(())
}

fn push_compare(q: &mut QueryBuilder<Sqlite>, c: Column, op: CmpOp, value: &Value) -> Result<()> {
    if c.stored == Stored::List {
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
        (Stored::Text | Stored::TextNoCase | Stored::Guid, Value::String(s)) => list.push_bind(s.clone()),
        (Stored::Time, Value::DateTime(t)) => list.push_bind(t.timestamp_micros()),
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
