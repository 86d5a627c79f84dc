//! `$filter`: a recursive-descent parser over the tokens of [`crate::lexer`] that type-checks each
//! comparison as it goes, so the result needs no further validation.
//!
//! ```text
//! or      := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | primary
//! primary := "(" or ")"
//!          | ("startswith" | "endswith" | "contains") "(" prop "," literal ")"
//!          | prop ("eq" | "ne" | "gt" | "ge" | "lt" | "le") literal
//!          | prop "in" "(" literal ("," literal)* ")"
//!          | prop "/" "any" "(" var ":" var "eq" literal ")"
//! ```

use crate::lexer::{Tok, Token, syntax_error, tokenize};
use crate::literal::{Lit, coerce};
use crate::{CmpOp, Expr, Kind, MAX_DEPTH, MAX_IN_VALUES, ODataError, Property, Schema, Value};

type Result<T> = std::result::Result<T, ODataError>;

/// Builds `a and b`, `a or b`.
type Combine = fn(Box<Expr>, Box<Expr>) -> Expr;
/// Builds `startswith(prop,'x')` and friends.
type MakeFunction = fn(&'static str, String) -> Expr;

/// Binary operators by increasing precedence; a level's operands are parsed at the next level.
const BINARY: [(&str, Combine); 2] = [("or", Expr::Or), ("and", Expr::And)];

const COMPARISONS: [(&str, CmpOp); 6] =
    [("eq", CmpOp::Eq), ("ne", CmpOp::Ne), ("gt", CmpOp::Gt), ("ge", CmpOp::Ge), ("lt", CmpOp::Lt), ("le", CmpOp::Le)];

const FUNCTIONS: [(&str, MakeFunction); 3] = [
    ("startswith", |property, prefix| Expr::StartsWith { property, prefix }),
    ("endswith", |property, suffix| Expr::EndsWith { property, suffix }),
    ("contains", |property, needle| Expr::Contains { property, needle }),
];

/// Parses a whole `$filter` value.
pub(crate) fn parse_filter(src: &str, schema: &Schema) -> Result<Expr> {
    let mut parser = Parser { tokens: tokenize(src)?, at: 0, schema, depth: 0 };
    let expr = parser.binary(0)?;
    match parser.next() {
        Token { tok: Tok::End, .. } => Ok(expr),
        Token { tok, pos } => Err(syntax_error(
            pos,
            format_args!("expected 'and', 'or' or the end after a complete expression, found {}", tok.describe()),
        )),
    }
}

/// A type or name error (as opposed to a syntax error) at `pos`.
fn invalid(pos: usize, message: impl std::fmt::Display) -> ODataError {
    ODataError(format!("Invalid $filter at position {pos}: {message}"))
}

fn lookup<T: Copy>(table: &[(&str, T)], word: &str) -> Option<T> {
    table.iter().find(|(name, _)| name.eq_ignore_ascii_case(word)).map(|&(_, value)| value)
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    schema: &'a Schema,
    /// Open parentheses and `not`s around the current position.
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.tokens[self.at].tok
    }

    /// The next token; `End` forever once the input is exhausted.
    fn next(&mut self) -> Token {
        let token = self.tokens[self.at].clone();
        self.at = (self.at + 1).min(self.tokens.len() - 1);
        token
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        let found = matches!(self.peek(), Tok::Word(w) if w.eq_ignore_ascii_case(keyword));
        if found {
            self.next();
        }
        found
    }

    /// Consumes `expected` or fails with "expected {what} {context}, found ...".
    fn expect(&mut self, expected: &Tok, what: &str, context: &str) -> Result<()> {
        let Token { tok, pos } = self.next();
        if tok == *expected {
            Ok(())
        } else {
            Err(syntax_error(pos, format_args!("expected {what} {context}, found {}", tok.describe())))
        }
    }

    fn expect_word(&mut self, context: &str) -> Result<(String, usize)> {
        match self.next() {
            Token { tok: Tok::Word(w), pos } => Ok((w, pos)),
            Token { tok, pos } => {
                Err(syntax_error(pos, format_args!("expected a name {context}, found {}", tok.describe())))
            }
        }
    }

    fn literal(&mut self, context: &str) -> Result<(Lit, usize)> {
        let Token { tok, pos } = self.next();
        let lit = match tok {
            Tok::Lit(lit) => lit,
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Lit::Bool(true),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Lit::Bool(false),
            Tok::Word(w) if w.eq_ignore_ascii_case("null") => Lit::Null,
            other => {
                return Err(syntax_error(
                    pos,
                    format_args!("expected a literal {context}, found {}", other.describe()),
                ));
            }
        };
        Ok((lit, pos))
    }

    fn property(&self, name: &str, pos: usize) -> Result<&'static Property> {
        self.schema.resolve(name, "$filter", |p| p.filterable).map_err(|message| invalid(pos, message))
    }

    /// Runs `parse` one nesting level deeper, refusing to go past `MAX_DEPTH` (no stack overflow).
    fn nested(&mut self, pos: usize, parse: impl FnOnce(&mut Self) -> Result<Expr>) -> Result<Expr> {
        if self.depth >= MAX_DEPTH {
            return Err(invalid(pos, format_args!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let expr = parse(self);
        self.depth -= 1;
        expr
    }

    fn binary(&mut self, level: usize) -> Result<Expr> {
        let Some(&(keyword, combine)) = BINARY.get(level) else {
            return self.unary();
        };
        let mut left = self.binary(level + 1)?;
        while self.eat_keyword(keyword) {
            left = combine(Box::new(left), Box::new(self.binary(level + 1)?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr> {
        let pos = self.tokens[self.at].pos;
        if self.eat_keyword("not") {
            return self.nested(pos, |p| p.unary()).map(|e| Expr::Not(Box::new(e)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr> {
        let Token { tok, pos } = self.next();
        match tok {
            Tok::Open => {
                let expr = self.nested(pos, |p| p.binary(0))?;
                self.expect(&Tok::Close, "')'", &format!("to close the '(' at position {pos}"))?;
                Ok(expr)
            }
            Tok::Word(name) => match lookup(&FUNCTIONS, &name) {
                Some(make) if *self.peek() == Tok::Open => self.function(&name.to_ascii_lowercase(), make),
                _ => self.predicate(&name, pos),
            },
            other => {
                Err(syntax_error(pos, format_args!("expected a property name or '(', found {}", other.describe())))
            }
        }
    }

    /// `startswith(prop,'x')` and friends: text matching, so only on strings and GUIDs.
    fn function(&mut self, name: &str, make: MakeFunction) -> Result<Expr> {
        let context = format!("in {name}()");
        self.expect(&Tok::Open, "'('", &context)?;
        let (prop_name, prop_pos) = self.expect_word(&context)?;
        let property = self.property(&prop_name, prop_pos)?;
        if !matches!(property.kind, Kind::String | Kind::Guid) {
            let kind = property.kind.describe();
            return Err(invalid(
                prop_pos,
                format_args!("{name}() needs a string property; '{}' is {kind}", property.name),
            ));
        }
        self.expect(&Tok::Comma, "','", &context)?;
        let (lit, lit_pos) = self.literal(&context)?;
        let Lit::Str(text) = lit else {
            return Err(invalid(lit_pos, format_args!("{name}() needs a quoted string, found {}", lit.describe())));
        };
        self.expect(&Tok::Close, "')'", &context)?;
        // GUIDs are stored lowercase, so a partial GUID must be too.
        let text = if property.kind == Kind::Guid { text.to_ascii_lowercase() } else { text };
        Ok(make(property.name, text))
    }

    /// What follows a property name: a comparison, `in (...)` or `/any(...)`.
    fn predicate(&mut self, name: &str, pos: usize) -> Result<Expr> {
        let property = self.property(name, pos)?;
        let Token { tok, pos: op_pos } = self.next();
        let operator = match &tok {
            Tok::Slash => return self.any(property, op_pos),
            Tok::Word(op) => op.as_str(),
            _ => "",
        };
        if operator.eq_ignore_ascii_case("in") {
            return self.in_list(property);
        }
        let Some(op) = lookup(&COMPARISONS, operator) else {
            let expected = "expected an operator (eq, ne, gt, ge, lt, le, in)";
            return Err(syntax_error(op_pos, format_args!("{expected} after '{name}', found {}", tok.describe())));
        };
        let (lit, lit_pos) = self.literal(&format!("after '{}'", operator.to_ascii_lowercase()))?;
        let value = self.value(property, lit, lit_pos)?;
        let ordering = !matches!(op, CmpOp::Eq | CmpOp::Ne);
        if ordering && value == Value::Null {
            return Err(invalid(lit_pos, "null can only be compared with eq or ne"));
        }
        if ordering && property.kind == Kind::Bool {
            return Err(invalid(op_pos, format_args!("'{}' is a boolean; only eq and ne apply", property.name)));
        }
        Ok(Expr::Compare { property: property.name, op, value })
    }

    /// Type-checks one comparison operand.
    fn value(&self, property: &Property, lit: Lit, pos: usize) -> Result<Value> {
        if property.kind == Kind::StringCollection {
            let name = property.name;
            return Err(invalid(pos, format_args!("'{name}' is a collection; use {name}/any(t: t eq 'value')")));
        }
        coerce(property, lit).map_err(|message| invalid(pos, message))
    }

    fn in_list(&mut self, property: &'static Property) -> Result<Expr> {
        self.expect(&Tok::Open, "'('", "after 'in'")?;
        let mut values = Vec::new();
        loop {
            let (lit, pos) = self.literal("in the 'in' list")?;
            let value = self.value(property, lit, pos)?;
            if value == Value::Null {
                return Err(invalid(pos, "null cannot be in an 'in' list; use eq null"));
            }
            if values.len() == MAX_IN_VALUES {
                return Err(invalid(pos, format_args!("an 'in' list may hold at most {MAX_IN_VALUES} values")));
            }
            values.push(value);
            match self.next() {
                Token { tok: Tok::Comma, .. } => continue,
                Token { tok: Tok::Close, .. } => return Ok(Expr::In { property: property.name, values }),
                Token { tok, pos } => {
                    return Err(syntax_error(
                        pos,
                        format_args!("expected ',' or ')' in the 'in' list, found {}", tok.describe()),
                    ));
                }
            }
        }
    }

    /// `machineTags/any(t: t eq 'x')`, the only lambda MDE documents.
    fn any(&mut self, property: &'static Property, slash_pos: usize) -> Result<Expr> {
        if property.kind != Kind::StringCollection {
            let kind = property.kind.describe();
            return Err(invalid(
                slash_pos,
                format_args!("'/' needs a collection property; '{}' is {kind}", property.name),
            ));
        }
        let (function, pos) = self.expect_word("after '/'")?;
        if !function.eq_ignore_ascii_case("any") {
            return Err(invalid(pos, format_args!("'{function}' is not supported; use {}/any(...)", property.name)));
        }
        self.expect(&Tok::Open, "'('", "after 'any'")?;
        let (variable, _) = self.expect_word("for the lambda variable")?;
        self.expect(&Tok::Colon, "':'", &format!("after '{variable}'"))?;
        let (used, pos) = self.expect_word("in the lambda")?;
        if used != variable {
            return Err(invalid(pos, format_args!("expected the lambda variable '{variable}', found '{used}'")));
        }
        let Token { tok, pos } = self.next();
        if !matches!(&tok, Tok::Word(w) if w.eq_ignore_ascii_case("eq")) {
            return Err(syntax_error(pos, format_args!("expected 'eq' in the lambda, found {}", tok.describe())));
        }
        let (lit, pos) = self.literal("after 'eq'")?;
        let Lit::Str(value) = lit else {
            return Err(invalid(pos, format_args!("'{}' holds strings; found {}", property.name, lit.describe())));
        };
        self.expect(&Tok::Close, "')'", "to close 'any('")?;
        Ok(Expr::AnyEq { property: property.name, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_schema::{ACTIONS, MACHINES};
    use chrono::{DateTime, Utc};

    fn actions(src: &str) -> Expr {
        parse_filter(src, &ACTIONS).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn machines(src: &str) -> Expr {
        parse_filter(src, &MACHINES).unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    fn error(schema: &Schema, src: &str) -> String {
        match parse_filter(src, schema) {
            Ok(expr) => panic!("{src} parsed as {expr:?}"),
            Err(e) => e.0,
        }
    }

    fn assert_error(schema: &Schema, src: &str, expected: &str) {
        let message = error(schema, src);
        assert!(message.contains(expected), "{src}: {message}");
    }

    fn string(v: &str) -> Value {
        Value::String(v.to_owned())
    }

    fn time(s: &str) -> Value {
        Value::DateTime(DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc))
    }

    fn cmp(property: &'static str, op: CmpOp, value: Value) -> Expr {
        Expr::Compare { property, op, value }
    }

    fn eq(property: &'static str, value: &str) -> Expr {
        cmp(property, CmpOp::Eq, string(value))
    }

    fn and(a: Expr, b: Expr) -> Expr {
        Expr::And(Box::new(a), Box::new(b))
    }

    fn or(a: Expr, b: Expr) -> Expr {
        Expr::Or(Box::new(a), Box::new(b))
    }

    fn not(a: Expr) -> Expr {
        Expr::Not(Box::new(a))
    }

    #[test]
    fn the_documented_mde_examples() {
        let sha1 = "f46b9bb259ed4a7fb9981b73510e3cc7aa81ec1f";
        assert_eq!(actions(&format!("machineId eq '{sha1}'")), eq("machineId", sha1));
        assert_eq!(
            actions("requestor eq 'Analyst@contoso.com' and type eq 'RunAntiVirusScan'"),
            and(eq("requestor", "Analyst@contoso.com"), eq("type", "RunAntiVirusScan"))
        );
        assert_eq!(
            actions("Status eq 'Pending' AND Type eq 'CollectInvestigationPackage'"),
            and(eq("status", "Pending"), eq("type", "CollectInvestigationPackage"))
        );
        assert_eq!(
            machines("startswith(computerDnsName,'mymachine')"),
            Expr::StartsWith { property: "computerDnsName", prefix: "mymachine".into() }
        );
        assert_eq!(machines("lastSeen gt 2018-08-01Z"), cmp("lastSeen", CmpOp::Gt, time("2018-08-01T00:00:00Z")));
        assert_eq!(
            machines("lastSeen gt 2018-08-01T00:00:00Z"),
            cmp("lastSeen", CmpOp::Gt, time("2018-08-01T00:00:00Z"))
        );
        assert_eq!(machines("healthStatus ne 'Active'"), cmp("healthStatus", CmpOp::Ne, string("Active")));
        assert_eq!(
            machines("machineTags/any(tag: tag eq 'Test Tag')"),
            Expr::AnyEq { property: "machineTags", value: "Test Tag".into() }
        );
        assert_eq!(
            actions("status in ('Pending','InProgress')"),
            Expr::In { property: "status", values: vec![string("Pending"), string("InProgress")] }
        );
    }

    #[test]
    fn every_comparison_operator_in_any_case() {
        let ops = [
            ("eq", CmpOp::Eq),
            ("NE", CmpOp::Ne),
            ("Gt", CmpOp::Gt),
            ("ge", CmpOp::Ge),
            ("lT", CmpOp::Lt),
            ("LE", CmpOp::Le),
        ];
        for (word, op) in ops {
            assert_eq!(machines(&format!("osBuild {word} 22631")), cmp("osBuild", op, Value::Int(22631)));
        }
        assert_error(&MACHINES, "osBuild => 1", "Syntax error at position 9 in $filter: unexpected character '='");
        assert_error(
            &MACHINES,
            "osBuild eqq 1",
            "expected an operator (eq, ne, gt, ge, lt, le, in) after 'osBuild', found 'eqq'",
        );
        assert_error(
            &MACHINES,
            "osBuild",
            "expected an operator (eq, ne, gt, ge, lt, le, in) after 'osBuild', found the end",
        );
        assert_error(&MACHINES, "osBuild 1", "after 'osBuild', found '1'");
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let (a, b, c) = (eq("machineId", "a"), eq("machineId", "b"), eq("machineId", "c"));
        assert_eq!(
            actions("machineId eq 'a' or machineId eq 'b' and machineId eq 'c'"),
            or(a.clone(), and(b.clone(), c.clone()))
        );
        assert_eq!(
            actions("machineId eq 'a' and machineId eq 'b' or machineId eq 'c'"),
            or(and(a.clone(), b.clone()), c.clone())
        );
        assert_eq!(
            actions("(machineId eq 'a' or machineId eq 'b') and machineId eq 'c'"),
            and(or(a.clone(), b.clone()), c.clone())
        );
        assert_eq!(actions("not machineId eq 'a' and machineId eq 'b'"), and(not(a.clone()), b.clone()));
        assert_eq!(actions("NOT(machineId eq 'a' or machineId eq 'b')"), not(or(a.clone(), b.clone())));
        assert_eq!(actions("not not machineId eq 'a'"), not(not(a.clone())));
        // Chains associate to the left.
        assert_eq!(
            actions("machineId eq 'a' or machineId eq 'b' or machineId eq 'c'"),
            or(or(a.clone(), b.clone()), c.clone())
        );
        assert_eq!(actions("((machineId eq 'a'))"), a);
    }

    #[test]
    fn keywords_and_operators_are_case_insensitive() {
        assert_eq!(
            actions("NOT machineId EQ 'a' Or machineId eQ 'b' AnD machineId Eq 'c'"),
            or(not(eq("machineId", "a")), and(eq("machineId", "b"), eq("machineId", "c")))
        );
        assert_eq!(actions("status IN ('pending')"), Expr::In { property: "status", values: vec![string("Pending")] });
        assert_eq!(
            machines("machineTags/ANY(t: t EQ 'x')"),
            Expr::AnyEq { property: "machineTags", value: "x".into() }
        );
        assert_eq!(machines("isAadJoined eq TRUE"), cmp("isAadJoined", CmpOp::Eq, Value::Bool(true)));
        assert_eq!(machines("isAadJoined ne False"), cmp("isAadJoined", CmpOp::Ne, Value::Bool(false)));
    }

    #[test]
    fn whitespace_is_optional_next_to_quotes_and_parentheses() {
        let (x, y) = (eq("machineId", "x"), eq("type", "Isolate"));
        assert_eq!(actions("machineId eq 'x'and type eq 'Isolate'"), and(x.clone(), y.clone()));
        assert_eq!(actions("(machineId eq 'x')or(type eq 'Isolate')"), or(x.clone(), y.clone()));
        assert_eq!(actions("   machineId    eq\t'x'   and  type eq 'Isolate'  "), and(x.clone(), y.clone()));
        assert_eq!(actions("not(machineId eq 'x')"), not(x.clone()));
        assert_eq!(actions("status in ( 'Pending' , 'Failed' )"), actions("status in('Pending','Failed')"));
        assert_eq!(
            actions("startswith( machineId , 'x' )"),
            Expr::StartsWith { property: "machineId", prefix: "x".into() }
        );
        // A keyword glued to a name is part of the name.
        assert_error(&ACTIONS, "statuseq 'x'", "Invalid $filter at position 1: unknown property 'statuseq' in $filter");
        assert_error(&ACTIONS, "machineId eq 'x'andtype eq 'Isolate'", "after a complete expression, found 'andtype'");
    }

    #[test]
    fn property_names_resolve_to_canonical_spelling() {
        assert_eq!(actions("MACHINEID eq 'a'"), eq("machineId", "a"));
        assert_eq!(
            actions("CreationDateTimeUtc lt 2024-01-24"),
            cmp("creationDateTimeUtc", CmpOp::Lt, time("2024-01-24T00:00:00Z"))
        );
    }

    #[test]
    fn unknown_and_unfilterable_properties_are_named() {
        let usable = "usable: id, type, status, machineId, requestor, creationDateTimeUtc, computerDnsName";
        assert_eq!(
            error(&ACTIONS, "owner eq 'x'"),
            format!("Invalid $filter at position 1: unknown property 'owner' in $filter; {usable}")
        );
        assert_eq!(
            error(&ACTIONS, "machineId eq 'x' or RequestorComment eq 'x'"),
            format!(
                "Invalid $filter at position 21: the property 'requestorComment' cannot be used in $filter; {usable}"
            )
        );
        assert_error(&ACTIONS, "startswith(owner,'x')", "unknown property 'owner'");
    }

    #[test]
    fn literals_of_every_kind() {
        let guid = "92452beb-ef01-42df-852d-84b34ef83425";
        for src in [
            format!("id eq {guid}"),
            format!("id eq '{guid}'"),
            format!("id eq '{}'", guid.to_uppercase()),
            format!("id eq guid'{guid}'"),
            "id eq 92452BEBEF0142DF852D84B34EF83425".to_owned(),
        ] {
            assert_eq!(actions(&src), eq("id", guid), "{src}");
        }
        let expected = time("2024-01-24T01:36:28.7283693Z");
        for src in [
            "creationDateTimeUtc ge 2024-01-24T01:36:28.7283693Z",
            "creationDateTimeUtc ge '2024-01-24T01:36:28.7283693Z'",
            "creationDateTimeUtc ge datetime'2024-01-24T01:36:28.7283693Z'",
            "creationDateTimeUtc ge 2024-01-24T03:36:28.7283693+02:00",
            "creationDateTimeUtc ge 2024-01-24T03:36:28.7283693 02:00",
            "creationDateTimeUtc ge 2024-01-23T20:36:28.7283693-05:00",
        ] {
            assert_eq!(actions(src), cmp("creationDateTimeUtc", CmpOp::Ge, expected.clone()), "{src}");
        }
        assert_eq!(machines("osBuild gt -5"), cmp("osBuild", CmpOp::Gt, Value::Int(-5)));
        assert_eq!(actions("requestor eq 'O''Brien'"), eq("requestor", "O'Brien"));
        assert_eq!(actions("requestor eq ''"), eq("requestor", ""));
        assert_eq!(actions("requestor eq 'ünïcødé 😀'"), eq("requestor", "ünïcødé 😀"));
        assert_eq!(machines("lastSeen le 2024-01-24"), cmp("lastSeen", CmpOp::Le, time("2024-01-24T00:00:00Z")));
    }

    #[test]
    fn literals_are_type_checked_against_the_property() {
        assert_error(
            &ACTIONS,
            "machineId eq 42",
            "Invalid $filter at position 14: 'machineId' is a string; put the value in quotes: '42'",
        );
        assert_error(&ACTIONS, "machineId eq true", "'machineId' is a string and cannot be compared with true");
        assert_error(&ACTIONS, "id eq 'not-a-guid'", "'not-a-guid' is not a valid GUID for 'id'");
        assert_error(&ACTIONS, "creationDateTimeUtc gt 'yesterday'", "'yesterday' is not a valid date-time");
        assert_error(&ACTIONS, "creationDateTimeUtc gt 2024-13-01", "'2024-13-01' is not a valid date-time");
        assert_error(&ACTIONS, "creationDateTimeUtc gt 5", "'5' is not a valid date-time");
        assert_error(&MACHINES, "osBuild eq '5'", "'osBuild' is an integer and cannot be compared with the string '5'");
        assert_error(&MACHINES, "osBuild eq 5.5", "'5.5' is not a valid integer for 'osBuild'");
        assert_error(&MACHINES, "isAadJoined eq 'true'", "'isAadJoined' is a boolean and cannot be compared");
        assert_error(&MACHINES, "isAadJoined gt false", "'isAadJoined' is a boolean; only eq and ne apply");
        assert_error(
            &ACTIONS,
            "machineId eq",
            "Syntax error at position 13 in $filter: expected a literal after 'eq', found the end",
        );
        assert_error(
            &ACTIONS,
            "machineId eq and",
            "Syntax error at position 14 in $filter: expected a literal after 'eq', found 'and'",
        );
        assert_error(&ACTIONS, "machineId EQ (", "expected a literal after 'eq', found '('");
    }

    #[test]
    fn enums_match_case_insensitively_and_normalize() {
        assert_eq!(actions("status eq 'succeeded'"), eq("status", "Succeeded"));
        assert_eq!(
            actions("type ne 'COLLECTINVESTIGATIONPACKAGE'"),
            cmp("type", CmpOp::Ne, string("CollectInvestigationPackage"))
        );
        assert_eq!(actions("status gt 'failed'"), cmp("status", CmpOp::Gt, string("Failed")));
        assert_eq!(
            error(&ACTIONS, "status eq 'Done'"),
            "Invalid $filter at position 11: 'Done' is not a valid value for 'status'; \
             allowed values: Pending, InProgress, Succeeded, Failed, TimeOut, Cancelled"
        );
    }

    #[test]
    fn null_only_with_eq_and_ne() {
        assert_eq!(actions("machineId eq null"), cmp("machineId", CmpOp::Eq, Value::Null));
        assert_eq!(machines("aadDeviceId ne NULL"), cmp("aadDeviceId", CmpOp::Ne, Value::Null));
        assert_eq!(actions("creationDateTimeUtc eq null"), cmp("creationDateTimeUtc", CmpOp::Eq, Value::Null));
        assert_error(&ACTIONS, "creationDateTimeUtc gt null", "position 24: null can only be compared with eq or ne");
        assert_error(&MACHINES, "osBuild le null", "null can only be compared with eq or ne");
    }

    #[test]
    fn ordering_applies_to_strings_guids_enums_ints_and_datetimes() {
        for src in [
            "machineId lt 'm'",
            "id ge 00000000-0000-0000-0000-000000000000",
            "type le 'Isolate'",
            "creationDateTimeUtc gt 2024-01-01",
        ] {
            actions(src);
        }
        machines("osBuild ge 19041");
    }

    #[test]
    fn in_lists() {
        assert_eq!(
            actions("id in ('92452BEB-ef01-42df-852d-84b34ef83425', 00000000-0000-0000-0000-000000000000)"),
            Expr::In {
                property: "id",
                values: vec![
                    string("92452beb-ef01-42df-852d-84b34ef83425"),
                    string("00000000-0000-0000-0000-000000000000")
                ]
            }
        );
        assert_eq!(machines("osBuild in (1)"), Expr::In { property: "osBuild", values: vec![Value::Int(1)] });
        assert_error(&ACTIONS, "status in ()", "expected a literal in the 'in' list, found ')'");
        assert_error(&ACTIONS, "status in ('Pending',)", "expected a literal in the 'in' list, found ')'");
        assert_error(&ACTIONS, "status in ('Pending'", "expected ',' or ')' in the 'in' list, found the end");
        assert_error(
            &ACTIONS,
            "status in ('Pending' 'Failed')",
            "expected ',' or ')' in the 'in' list, found the string 'Failed'",
        );
        assert_error(&ACTIONS, "status in 'Pending'", "expected '(' after 'in', found the string 'Pending'");
        assert_error(
            &ACTIONS,
            "status in ('Pending', 'Done')",
            "position 23: 'Done' is not a valid value for 'status'",
        );
        assert_error(&ACTIONS, "machineId in ('a', null)", "null cannot be in an 'in' list; use eq null");
        assert_error(
            &MACHINES,
            "machineTags in ('a')",
            "'machineTags' is a collection; use machineTags/any(t: t eq 'value')",
        );
    }

    #[test]
    fn in_lists_are_bounded() {
        let list = |n: usize| (0..n).map(|i| format!("'{i}'")).collect::<Vec<_>>().join(",");
        match actions(&format!("machineId in ({})", list(MAX_IN_VALUES))) {
            Expr::In { values, .. } => assert_eq!(values.len(), MAX_IN_VALUES),
            other => panic!("{other:?}"),
        }
        assert_error(&ACTIONS, &format!("machineId in ({})", list(MAX_IN_VALUES + 1)), "at most 1000 values");
    }

    #[test]
    fn string_functions() {
        assert_eq!(
            actions("EndsWith(requestor,'@contoso.com')"),
            Expr::EndsWith { property: "requestor", suffix: "@contoso.com".into() }
        );
        assert_eq!(
            actions("contains(MachineId,'9bb')"),
            Expr::Contains { property: "machineId", needle: "9bb".into() }
        );
        // GUIDs are compared lowercase, so partial GUIDs are lowered too.
        assert_eq!(
            actions("startswith(id,'92452BEB')"),
            Expr::StartsWith { property: "id", prefix: "92452beb".into() }
        );
        assert_eq!(
            actions("not startswith(machineId,'a') and contains(requestor,'b')"),
            and(
                not(Expr::StartsWith { property: "machineId", prefix: "a".into() }),
                Expr::Contains { property: "requestor", needle: "b".into() }
            )
        );
        assert_error(
            &ACTIONS,
            "startswith(status,'P')",
            "position 12: startswith() needs a string property; 'status' is an enumeration",
        );
        assert_error(
            &MACHINES,
            "contains(machineTags,'x')",
            "contains() needs a string property; 'machineTags' is a string collection",
        );
        assert_error(&ACTIONS, "startswith(machineId,5)", "startswith() needs a quoted string, found '5'");
        assert_error(&ACTIONS, "startswith(machineId,null)", "startswith() needs a quoted string, found null");
        assert_error(&ACTIONS, "startswith(machineId 'x')", "expected ',' in startswith(), found the string 'x'");
        assert_error(&ACTIONS, "startswith(machineId,'x'", "expected ')' in startswith(), found the end");
        assert_error(&ACTIONS, "startswith('x',machineId)", "expected a name in startswith(), found the string 'x'");
        assert_error(&ACTIONS, "startswith(requestorComment,'x')", "'requestorComment' cannot be used in $filter");
        // Not followed by '(': just an (unknown) property name.
        assert_error(&ACTIONS, "startswith eq 'x'", "unknown property 'startswith'");
    }

    #[test]
    fn any_lambdas_on_string_collections() {
        let tagged = |value: &str| Expr::AnyEq { property: "machineTags", value: value.into() };
        assert_eq!(machines("machineTags/any(t:t eq 'prod')"), tagged("prod"));
        assert_eq!(machines("MachineTags / any ( x : x eq 'it''s' )"), tagged("it's"));
        assert_eq!(
            machines("machineTags/any(t: t eq 'a') and not machineTags/any(t: t eq 'b')"),
            and(tagged("a"), not(tagged("b")))
        );
        assert_error(
            &MACHINES,
            "machineTags eq 'prod'",
            "position 16: 'machineTags' is a collection; use machineTags/any(t: t eq 'value')",
        );
        assert_error(&MACHINES, "machineTags/all(t: t eq 'x')", "'all' is not supported; use machineTags/any(...)");
        assert_error(&MACHINES, "machineTags/any(t: u eq 'x')", "expected the lambda variable 't', found 'u'");
        assert_error(&MACHINES, "machineTags/any(t: t ne 'x')", "expected 'eq' in the lambda, found 'ne'");
        assert_error(&MACHINES, "machineTags/any(t t eq 'x')", "expected ':' after 't', found 't'");
        assert_error(&MACHINES, "machineTags/any(t: t eq 5)", "'machineTags' holds strings; found '5'");
        assert_error(&MACHINES, "machineTags/any(t: t eq 'x'", "expected ')' to close 'any(', found the end");
        assert_error(&MACHINES, "machineTags/any()", "expected a name for the lambda variable, found ')'");
        assert_error(
            &MACHINES,
            "computerDnsName/any(t: t eq 'x')",
            "'/' needs a collection property; 'computerDnsName' is a string",
        );
    }

    #[test]
    fn trailing_and_unbalanced_input_is_rejected() {
        assert_error(
            &ACTIONS,
            "status eq 'Pending' 'x'",
            "Syntax error at position 21 in $filter: expected 'and', 'or' or the end after a complete expression, found the string 'x'",
        );
        assert_error(&ACTIONS, "status eq 'Pending')", "after a complete expression, found ')'");
        assert_error(&ACTIONS, "(status eq 'Pending'", "expected ')' to close the '(' at position 1, found the end");
        assert_error(&ACTIONS, "status eq 'Pending' and", "expected a property name or '(', found the end");
        assert_error(&ACTIONS, "and status eq 'Pending'", "unknown property 'and'");
        assert_error(&ACTIONS, "", "expected a property name or '(', found the end");
        assert_error(&ACTIONS, "()", "expected a property name or '(', found ')'");
        assert_error(
            &ACTIONS,
            "'Pending' eq status",
            "Syntax error at position 1 in $filter: expected a property name or '(', found the string 'Pending'",
        );
        assert_error(&ACTIONS, "status eq 'Pending", "position 11 in $filter: unterminated string literal");
    }

    #[test]
    fn nesting_is_bounded_without_overflowing_the_stack() {
        let nested = |n: usize| format!("{}machineId eq 'a'{}", "(".repeat(n), ")".repeat(n));
        assert_eq!(actions(&nested(MAX_DEPTH)), eq("machineId", "a"));
        assert_error(&ACTIONS, &nested(MAX_DEPTH + 1), "Invalid $filter at position 65: nested deeper than 64 levels");
        assert_error(&ACTIONS, &"(".repeat(100_000), "nested deeper than 64 levels");
        assert_error(&ACTIONS, &"not ".repeat(100_000), "nested deeper than 64 levels");
        assert_error(&ACTIONS, &"not(".repeat(100_000), "nested deeper than 64 levels");
    }

    #[test]
    fn long_flat_chains_are_fine() {
        // Scripts OR together one comparison per machine; that is breadth, not nesting.
        let chain = (0..500).map(|i| format!("machineId eq '{i}'")).collect::<Vec<_>>().join(" or ");
        let mut expr = actions(&chain);
        let mut terms = 1;
        while let Expr::Or(left, _) = expr {
            expr = *left;
            terms += 1;
        }
        assert_eq!(terms, 500);
    }
}
