//! List queries as the API layer hands them over: an OData filter already parsed and
//! type-checked against the entity's properties (wire names), an order, a page. Each
//! store compiles them into its own SQL, so filters run in the database.

pub use casefile_odata::{CmpOp, Expr, OrderBy, Value};

/// One page of a filtered, ordered list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filter: Option<Expr>,
    /// Empty: the entity's default order (newest first).
    pub order_by: Vec<OrderBy>,
    pub skip: u64,
    pub top: u64,
    /// Also count every match (`$count=true`).
    pub count: bool,
    /// Only machines (and their actions) of these device groups; `None`: all.
    pub visible: Option<Visibility>,
}

/// The device groups a delegated user may see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Visibility {
    pub groups: Vec<i64>,
    /// Whether machines in no group ("Ungrouped devices") are visible.
    pub ungrouped: bool,
}

impl ListQuery {
    pub fn first(top: u64) -> Self {
        Self { top, ..Self::default() }
    }
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    /// Every match, when counting was asked for.
    pub total: Option<u64>,
    /// Whether matches remain after this page.
    pub more: bool,
}

/// The largest page: MDE's `$top` limit.
pub const MAX_TOP: u64 = casefile_odata::MAX_TOP;
