//! The OData v4 system query options that MDE clients send (`$filter`, `$top`, `$skip`, `$orderby`,
//! `$count`, `$select`), parsed and type-checked against a [`Schema`].
//!
//! Pure: no I/O, no SQL. The result is fully resolved (canonical property names, typed values) so
//! that the storage layer can compile it to SQL without looking at the schema again. Clients are
//! scripts written against MDE, so the parser accepts what MDE accepts in practice (`+` as space,
//! `AND`, case-insensitive names, `'x'and` without a space, bare date-times) and rejects the rest
//! with a message that names the problem.

mod filter;
mod lexer;
mod literal;
mod options;

pub use options::parse_query;

/// The type of a property, which decides the literals and operators it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    /// Compared as its lowercase hyphenated form.
    Guid,
    DateTime,
    Int,
    Bool,
    /// A string restricted to these values, matched case-insensitively.
    Enum(&'static [&'static str]),
    /// Only `prop/any(t: t eq 'x')` applies.
    StringCollection,
}

impl Kind {
    /// The kind with its article, for error messages ("'status' is an enumeration").
    fn describe(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Guid => "a GUID",
            Kind::DateTime => "a date-time",
            Kind::Int => "an integer",
            Kind::Bool => "a boolean",
            Kind::Enum(_) => "an enumeration",
            Kind::StringCollection => "a string collection",
        }
    }
}

/// One property of an entity set, as the API exposes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property {
    /// The canonical spelling; requests may use any case.
    pub name: &'static str,
    pub kind: Kind,
    pub filterable: bool,
    pub sortable: bool,
}

/// The properties a query may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    pub properties: &'static [Property],
}

impl Schema {
    /// The property called `name`, ignoring case (MDE's own samples write `Status`, `MachineId`).
    pub fn property(&self, name: &str) -> Option<&'static Property> {
        self.properties.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// The property `name` as used in `option`, if `usable` allows it there; else a message that
    /// lists the properties it allows.
    fn resolve(&self, name: &str, option: &str, usable: fn(&Property) -> bool) -> Result<&'static Property, String> {
        let list = || self.properties.iter().filter(|p| usable(p)).map(|p| p.name).collect::<Vec<_>>().join(", ");
        match self.property(name) {
            Some(property) if usable(property) => Ok(property),
            Some(property) => {
                Err(format!("the property '{}' cannot be used in {option}; usable: {}", property.name, list()))
            }
            None => Err(format!("unknown property '{name}' in {option}; usable: {}", list())),
        }
    }
}

/// A literal after type checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Strings, GUIDs (lowercase, hyphenated) and enumeration values (canonical spelling).
    String(String),
    Int(i64),
    Bool(bool),
    DateTime(chrono::DateTime<chrono::Utc>),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A `$filter` expression. Every `property` is the schema's canonical name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `Value::Null` only with `Eq` or `Ne`.
    Compare {
        property: &'static str,
        op: CmpOp,
        value: Value,
    },
    /// Non-empty, without `Value::Null`.
    In {
        property: &'static str,
        values: Vec<Value>,
    },
    StartsWith {
        property: &'static str,
        prefix: String,
    },
    EndsWith {
        property: &'static str,
        suffix: String,
    },
    Contains {
        property: &'static str,
        needle: String,
    },
    /// `machineTags/any(t: t eq 'x')`, on [`Kind::StringCollection`] properties.
    AnyEq {
        property: &'static str,
        value: String,
    },
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// Always true or always false. The parser never produces it; it is for callers that rewrite
    /// a filter, e.g. a comparison on a property that has the same value on every entity.
    Const(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderBy {
    pub property: &'static str,
    pub descending: bool,
}

/// The parsed system query options of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub filter: Option<Expr>,
    /// Empty: the caller's default order.
    pub order_by: Vec<OrderBy>,
    pub top: Option<u64>,
    pub skip: u64,
    /// `$count=true`: the answer carries `@odata.count`.
    pub count: bool,
    /// Canonical names, de-duplicated, in request order. `None`: all properties (also for `$select=*`).
    pub select: Option<Vec<&'static str>>,
}

/// MDE's maximum page size, and so the largest `$top` it accepts.
pub const MAX_TOP: u64 = 10_000;
/// The longest value one query option may have, in bytes after decoding.
pub const MAX_OPTION_LEN: usize = 16 * 1024;
/// How deeply parentheses and `not` may nest in `$filter`; bounds the parser's recursion.
pub const MAX_DEPTH: usize = 64;
/// The most values one `in (...)` list may hold.
pub const MAX_IN_VALUES: usize = 1000;

/// Why a query was rejected; the message is meant for the client (MDE answers such errors with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ODataError(pub String);

#[cfg(test)]
pub(crate) mod test_schema {
    use crate::{Kind, Property, Schema};

    const fn prop(name: &'static str, kind: Kind) -> Property {
        Property { name, kind, filterable: true, sortable: true }
    }

    pub const ACTION_TYPES: &[&str] = &[
        "RunAntiVirusScan",
        "Offboard",
        "LiveResponse",
        "CollectInvestigationPackage",
        "Isolate",
        "Unisolate",
        "StopAndQuarantineFile",
        "RestrictCodeExecution",
        "UnrestrictCodeExecution",
        "RequestSample",
    ];
    pub const ACTION_STATUSES: &[&str] = &["Pending", "InProgress", "Succeeded", "Failed", "TimeOut", "Cancelled"];

    /// Like MDE's MachineAction.
    pub const ACTIONS: Schema = Schema {
        properties: &[
            prop("id", Kind::Guid),
            prop("type", Kind::Enum(ACTION_TYPES)),
            prop("status", Kind::Enum(ACTION_STATUSES)),
            prop("machineId", Kind::String),
            prop("requestor", Kind::String),
            prop("creationDateTimeUtc", Kind::DateTime),
            Property { filterable: false, ..prop("lastUpdateDateTimeUtc", Kind::DateTime) },
            prop("computerDnsName", Kind::String),
            Property { filterable: false, sortable: false, ..prop("requestorComment", Kind::String) },
        ],
    };

    /// Like MDE's Machine, with an integer and a boolean to cover every kind.
    pub const MACHINES: Schema = Schema {
        properties: &[
            prop("id", Kind::String),
            prop("computerDnsName", Kind::String),
            Property { sortable: false, ..prop("machineTags", Kind::StringCollection) },
            prop("lastSeen", Kind::DateTime),
            prop(
                "healthStatus",
                Kind::Enum(&[
                    "Active",
                    "Inactive",
                    "ImpairedCommunication",
                    "NoSensorData",
                    "NoSensorDataImpairedCommunication",
                    "Unknown",
                ]),
            ),
            prop("aadDeviceId", Kind::Guid),
            prop("osBuild", Kind::Int),
            prop("isAadJoined", Kind::Bool),
            Property { filterable: false, ..prop("osArchitecture", Kind::String) },
        ],
    };
}
