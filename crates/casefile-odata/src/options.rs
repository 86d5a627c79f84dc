//! The query string: which system query options it holds, and the simple ones (`$top`, `$skip`,
//! `$count`, `$orderby`, `$select`). `$filter` has its own module.

use url::form_urlencoded;

use crate::filter::parse_filter;
use crate::{MAX_OPTION_LEN, MAX_TOP, ODataError, OrderBy, Query, Schema};

type Result<T> = std::result::Result<T, ODataError>;

const OPTIONS: [&str; 6] = ["$filter", "$top", "$skip", "$orderby", "$count", "$select"];

/// Parses the system query options of `raw_query` (the URL's query string, without or with its `?`)
/// against `schema`. Parameters without a `$` are left to the caller; unsupported `$` options,
/// repeated options and anything invalid are errors.
pub fn parse_query(raw_query: Option<&str>, schema: &Schema) -> Result<Query> {
    let raw = raw_query.unwrap_or_default();
    // A leading '?' would otherwise hide the first option (`?$filter` does not start with '$').
    let raw = raw.strip_prefix('?').unwrap_or(raw);
    let mut values: [Option<String>; OPTIONS.len()] = Default::default();
    for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
        let name = name.trim();
        if !name.starts_with('$') {
            continue;
        }
        let Some(index) = OPTIONS.iter().position(|option| option.eq_ignore_ascii_case(name)) else {
            return Err(ODataError(format!("The query option '{name}' is not supported")));
        };
        let option = OPTIONS[index];
        if values[index].is_some() {
            return Err(ODataError(format!("The query option '{option}' is specified more than once")));
        }
        if value.len() > MAX_OPTION_LEN {
            return Err(ODataError(format!("The value of {option} is longer than {MAX_OPTION_LEN} bytes")));
        }
        values[index] = Some(value.trim().to_owned());
    }
    // `$filter=` is what scripts send when they have nothing to ask: treat it as absent.
    let [filter, top, skip, order_by, count, select] = values.map(|value| value.filter(|v| !v.is_empty()));
    Ok(Query {
        filter: filter.map(|f| parse_filter(&f, schema)).transpose()?,
        order_by: order_by.map(|o| parse_order_by(&o, schema)).transpose()?.unwrap_or_default(),
        top: top.map(|t| parse_top(&t)).transpose()?,
        skip: skip.map(|s| parse_skip(&s)).transpose()?.unwrap_or(0),
        count: count.map(|c| parse_count(&c)).transpose()?.unwrap_or(false),
        select: select.map(|s| parse_select(&s, schema)).transpose()?.flatten(),
    })
}

fn invalid(option: &str, message: impl std::fmt::Display) -> ODataError {
    ODataError(format!("Invalid {option}: {message}"))
}

/// Digits only; `Ok(None)` when there are too many of them for a `u64`.
fn non_negative(option: &str, value: &str) -> Result<Option<u64>> {
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(option, format_args!("'{value}' is not a non-negative integer")));
    }
    Ok(value.parse().ok())
}

fn parse_top(value: &str) -> Result<u64> {
    match non_negative("$top", value)? {
        Some(top) if top <= MAX_TOP => Ok(top),
        // MDE's own wording, which scripts may match on.
        _ => Err(ODataError(format!(
            "The limit of '{MAX_TOP}' for Top query has been exceeded. The value from the incoming request is '{value}'."
        ))),
    }
}

fn parse_skip(value: &str) -> Result<u64> {
    // The storage layer binds it as a signed 64-bit OFFSET.
    non_negative("$skip", value)?
        .filter(|&skip| i64::try_from(skip).is_ok())
        .ok_or_else(|| invalid("$skip", format_args!("'{value}' is too large")))
}

fn parse_count(value: &str) -> Result<bool> {
    match value {
        v if v.eq_ignore_ascii_case("true") => Ok(true),
        v if v.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(invalid("$count", format_args!("'{value}' is neither true nor false"))),
    }
}

/// `prop [asc|desc], ...`
fn parse_order_by(value: &str, schema: &Schema) -> Result<Vec<OrderBy>> {
    let mut order: Vec<OrderBy> = Vec::new();
    for item in value.split(',') {
        let words: Vec<&str> = item.split_whitespace().collect();
        let descending = match words[..] {
            [_] => false,
            [_, direction] if direction.eq_ignore_ascii_case("asc") => false,
            [_, direction] if direction.eq_ignore_ascii_case("desc") => true,
            _ => {
                let expected = "expected 'property', 'property asc' or 'property desc'";
                return Err(invalid("$orderby", format_args!("'{}': {expected}", item.trim())));
            }
        };
        let property = schema.resolve(words[0], "$orderby", |p| p.sortable).map_err(|m| invalid("$orderby", m))?;
        if order.iter().any(|o| o.property == property.name) {
            return Err(invalid("$orderby", format_args!("'{}' appears more than once", property.name)));
        }
        order.push(OrderBy { property: property.name, descending });
    }
    Ok(order)
}

/// `prop, ...` or `*`; `None` means every property.
fn parse_select(value: &str, schema: &Schema) -> Result<Option<Vec<&'static str>>> {
    let mut names = Vec::new();
    let mut all = false;
    for item in value.split(',').map(str::trim) {
        match item {
            "" => return Err(invalid("$select", "empty property name")),
            "*" => all = true,
            name => {
                let property = schema.resolve(name, "$select", |_| true).map_err(|m| invalid("$select", m))?;
                if !names.contains(&property.name) {
                    names.push(property.name);
                }
            }
        }
    }
    Ok((!all).then_some(names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_schema::{ACTIONS, MACHINES};
    use crate::{CmpOp, Expr, MAX_DEPTH, Value};

    fn query(raw: &str) -> Query {
        parse_query(Some(raw), &ACTIONS).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn error(raw: &str) -> String {
        match parse_query(Some(raw), &ACTIONS) {
            Ok(query) => panic!("{raw} parsed as {query:?}"),
            Err(e) => e.0,
        }
    }

    fn eq(property: &'static str, value: &str) -> Expr {
        Expr::Compare { property, op: CmpOp::Eq, value: Value::String(value.to_owned()) }
    }

    #[test]
    fn the_documented_mde_requests() {
        let sha1 = "f46b9bb259ed4a7fb9981b73510e3cc7aa81ec1f";
        assert_eq!(
            query(&format!("$filter=machineId eq '{sha1}'&$top=2")),
            Query { filter: Some(eq("machineId", sha1)), top: Some(2), ..Query::default() }
        );
        assert_eq!(
            query("$filter=requestor eq 'Analyst@contoso.com' and type eq 'RunAntiVirusScan'").filter,
            Some(Expr::And(Box::new(eq("requestor", "Analyst@contoso.com")), Box::new(eq("type", "RunAntiVirusScan"))))
        );
        assert_eq!(
            query("$orderby=creationDateTimeUtc desc").order_by,
            [OrderBy { property: "creationDateTimeUtc", descending: true }]
        );
        assert!(query("$count=true").count);
        assert_eq!(query("$select=id,status").select, Some(vec!["id", "status"]));
        let machines = parse_query(Some("$filter=machineTags/any(tag: tag eq 'Test Tag')"), &MACHINES).unwrap();
        assert_eq!(machines.filter, Some(Expr::AnyEq { property: "machineTags", value: "Test Tag".into() }));
    }

    #[test]
    fn plus_and_percent_twenty_are_spaces() {
        let expected = Some(eq("machineId", "x"));
        assert_eq!(query("$filter=machineId+eq+'x'").filter, expected);
        assert_eq!(query("$filter=machineId%20eq%20%27x%27").filter, expected);
        assert_eq!(query("%24filter=machineId+eq+'x'").filter, expected);
        // The Kibana connector and PowerShell modules glue `and` to the quote.
        assert_eq!(
            query("$filter=machineId+eq+'x'and+type+eq+'Isolate'").filter,
            Some(Expr::And(Box::new(eq("machineId", "x")), Box::new(eq("type", "Isolate"))))
        );
        // An encoded `+` stays a `+`: the string literal keeps it.
        assert_eq!(query("$filter=requestor eq 'a%2Bb@contoso.com'").filter, Some(eq("requestor", "a+b@contoso.com")));
    }

    #[test]
    fn an_unencoded_plus_in_a_datetime_offset_still_means_plus() {
        let encoded = query("$filter=creationDateTimeUtc gt 2024-01-24T01:36:28%2B02:00").filter;
        assert_eq!(query("$filter=creationDateTimeUtc gt 2024-01-24T01:36:28+02:00").filter, encoded);
        assert_eq!(query("$filter=creationDateTimeUtc gt '2024-01-24T01:36:28+02:00'").filter, encoded);
    }

    #[test]
    fn option_names_ignore_case_and_surrounding_whitespace() {
        let q = query(
            "$Filter=Status eq 'Pending' AND Type eq 'CollectInvestigationPackage'&$TOP=5&%20$skip%20=3&$OrderBy=status",
        );
        assert_eq!(
            q.filter,
            Some(Expr::And(Box::new(eq("status", "Pending")), Box::new(eq("type", "CollectInvestigationPackage"))))
        );
        assert_eq!((q.top, q.skip), (Some(5), 3));
        assert_eq!(q.order_by, [OrderBy { property: "status", descending: false }]);
        assert_eq!(query("$top=+7+").top, Some(7));
    }

    #[test]
    fn unsupported_options_are_named_and_plain_parameters_ignored() {
        for option in ["$expand", "$search", "$format", "$skiptoken", "$apply", "$", "$Expand"] {
            assert_eq!(error(&format!("{option}=x")), format!("The query option '{option}' is not supported"));
        }
        assert_eq!(query("api-version=1.0&filter=x&top=abc&x=$expand&&=&noequals"), Query::default());
    }

    #[test]
    fn repeated_options_are_rejected() {
        assert_eq!(error("$top=1&$TOP=2"), "The query option '$top' is specified more than once");
        assert_eq!(
            error("$filter=status eq 'Pending'&$filter=status eq 'Failed'"),
            "The query option '$filter' is specified more than once"
        );
    }

    #[test]
    fn absent_and_empty_queries_are_the_default() {
        assert_eq!(parse_query(None, &ACTIONS).unwrap(), Query::default());
        assert_eq!(query(""), Query::default());
        assert_eq!(query("?"), Query::default());
        assert_eq!(query("$filter=&$orderby=+&$top=&$select="), Query::default());
        assert_eq!(query("?$top=3").top, Some(3));
    }

    #[test]
    fn top_is_bounded_like_mde() {
        assert_eq!(query("$top=0").top, Some(0));
        assert_eq!(query("$top=10000").top, Some(MAX_TOP));
        assert_eq!(
            error("$top=20000"),
            "The limit of '10000' for Top query has been exceeded. The value from the incoming request is '20000'."
        );
        assert!(error("$top=10001").starts_with("The limit of '10000' for Top query has been exceeded"));
        assert!(error("$top=99999999999999999999999").ends_with("is '99999999999999999999999'."));
        assert_eq!(error("$top=-1"), "Invalid $top: '-1' is not a non-negative integer");
        assert_eq!(error("$top=abc"), "Invalid $top: 'abc' is not a non-negative integer");
        assert_eq!(error("$top=1.5"), "Invalid $top: '1.5' is not a non-negative integer");
    }

    #[test]
    fn skip_is_a_non_negative_integer() {
        assert_eq!(query("$skip=0").skip, 0);
        assert_eq!(query("$skip=123456").skip, 123_456);
        assert_eq!(query(&format!("$skip={}", i64::MAX)).skip, i64::MAX as u64);
        assert_eq!(error("$skip=-5"), "Invalid $skip: '-5' is not a non-negative integer");
        assert_eq!(
            error(&format!("$skip={}", i64::MAX as u64 + 1)),
            "Invalid $skip: '9223372036854775808' is too large"
        );
        assert_eq!(error("$skip=ten"), "Invalid $skip: 'ten' is not a non-negative integer");
    }

    #[test]
    fn count_is_true_or_false() {
        assert!(query("$count=TRUE").count);
        assert!(!query("$count=false").count);
        assert!(!query("").count);
        assert_eq!(error("$count=yes"), "Invalid $count: 'yes' is neither true nor false");
        assert_eq!(error("$count=1"), "Invalid $count: '1' is neither true nor false");
    }

    #[test]
    fn order_by_lists_sortable_properties_with_directions() {
        let by = |property, descending| OrderBy { property, descending };
        assert_eq!(
            query("$orderby=Status asc, TYPE,lastUpdateDateTimeUtc DESC,creationDateTimeUtc+desc").order_by,
            [
                by("status", false),
                by("type", false),
                by("lastUpdateDateTimeUtc", true),
                by("creationDateTimeUtc", true)
            ]
        );
        assert_eq!(error("$orderby=status,Status desc"), "Invalid $orderby: 'status' appears more than once");
        assert_eq!(
            error("$orderby=requestorComment"),
            "Invalid $orderby: the property 'requestorComment' cannot be used in $orderby; usable: id, type, status, \
             machineId, requestor, creationDateTimeUtc, lastUpdateDateTimeUtc, computerDnsName"
        );
        assert!(
            error("$orderby=owner desc")
                .starts_with("Invalid $orderby: unknown property 'owner' in $orderby; usable: id,")
        );
        let expected = "expected 'property', 'property asc' or 'property desc'";
        assert_eq!(error("$orderby=status down"), format!("Invalid $orderby: 'status down': {expected}"));
        assert_eq!(error("$orderby=status asc desc"), format!("Invalid $orderby: 'status asc desc': {expected}"));
        assert_eq!(error("$orderby=status,"), format!("Invalid $orderby: '': {expected}"));
        assert!(
            parse_query(Some("$orderby=machineTags"), &MACHINES).unwrap_err().0.contains("cannot be used in $orderby")
        );
    }

    #[test]
    fn select_takes_any_property_once_in_request_order() {
        assert_eq!(
            query("$select=Status,id,STATUS,requestorComment").select,
            Some(vec!["status", "id", "requestorComment"])
        );
        assert_eq!(query("$select=*").select, None);
        assert_eq!(query("$select=id,*").select, None);
        assert!(
            error("$select=id,owner")
                .starts_with("Invalid $select: unknown property 'owner' in $select; usable: id, type,")
        );
        assert_eq!(error("$select=id,,status"), "Invalid $select: empty property name");
        assert!(error("$select=*,owner").contains("unknown property 'owner'"));
    }

    #[test]
    fn option_values_are_bounded() {
        let padding = "a".repeat(MAX_OPTION_LEN - "machineId eq ''".len());
        assert_eq!(query(&format!("$filter=machineId eq '{padding}'")).filter, Some(eq("machineId", &padding)));
        assert_eq!(
            error(&format!("$filter=machineId eq '{padding}a'")),
            "The value of $filter is longer than 16384 bytes"
        );
        assert_eq!(
            error(&format!("$select={}", "id,".repeat(6000))),
            "The value of $select is longer than 16384 bytes"
        );
    }

    #[test]
    fn filter_errors_pass_through() {
        assert_eq!(
            error("$filter=machineId eq &$top=1"),
            "Syntax error at position 13 in $filter: expected a literal after 'eq', found the end of the filter"
        );
        assert!(error(&format!("$filter={}", "(".repeat(MAX_DEPTH + 1))).contains("nested deeper than 64 levels"));
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        }
    }

    #[test]
    fn garbage_never_panics() {
        const PIECES: &[&str] = &[
            "status",
            "machineId",
            "id",
            "machineTags",
            "creationDateTimeUtc",
            "osBuild",
            "isAadJoined",
            "lastSeen",
            " eq ",
            " ne ",
            " gt ",
            " le ",
            " in ",
            " and ",
            " or ",
            "not ",
            "AND",
            "eq",
            " ",
            "  ",
            "+",
            "(",
            ")",
            "((",
            "))",
            ",",
            "'",
            "''",
            "'Pending'",
            "'x'",
            "'ü😀'",
            "/",
            "/any(",
            "t:",
            " t eq ",
            ":",
            "startswith(",
            "contains(",
            "endswith(",
            "null",
            "true",
            "FALSE",
            "0",
            "-1",
            "99999999999999999999",
            "2024-01-24",
            "2024-01-24T01:36:28Z",
            "2024-01-24T01:36:28 02:00",
            "T",
            "Z",
            "-",
            ".",
            "datetime'",
            "guid'",
            "92452beb-ef01-42df-852d-84b34ef83425",
            "ab452beb-ef01-42df-852d-84b34ef8342",
            "é",
            "😀",
            "日本",
            "\u{0}",
            "\t",
            "%",
            "%2",
            "%27",
            "%C3",
            "%FF",
            "&",
            "=",
            "$filter=",
            "$top=",
            "$orderby=",
            "$select=",
            "$count=",
            "$skip=",
            "$expand=",
            " desc",
            " asc",
            "*",
            "?",
            "#",
            "\\",
            "\"",
            "\u{202e}",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let mut text: String = (0..rng.below(24)).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            if round % 4 == 0 {
                // Raw characters too, multi-byte included, cut at any point.
                text.extend((0..rng.below(16)).map(|_| char::from_u32(rng.below(0x1_0000) as u32).unwrap_or('?')));
            }
            for schema in [&ACTIONS, &MACHINES] {
                let _ = parse_query(Some(&text), schema);
                let _ = parse_query(Some(&format!("$filter={text}")), schema);
                let _ = crate::filter::parse_filter(&text, schema);
            }
        }
    }
}
