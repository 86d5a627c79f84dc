//! Literals as written in `$filter`, and their conversion to a [`Value`] of a property's kind.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};

use crate::{Kind, Property, Value};

/// A literal before type checking: what it looked like decides which kinds accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lit {
    /// `'text'`, quotes removed and `''` unescaped.
    Str(String),
    /// Unquoted number, date-time or GUID.
    Bare(String),
    /// `datetime'...'` (OData v3 syntax some scripts still use).
    DateTime(String),
    /// `guid'...'` (OData v3).
    Guid(String),
    Bool(bool),
    Null,
}

impl Lit {
    /// The literal as the client wrote it, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Lit::Str(s) => format!("the string '{s}'"),
            Lit::Bare(s) => format!("'{s}'"),
            Lit::DateTime(s) => format!("datetime'{s}'"),
            Lit::Guid(s) => format!("guid'{s}'"),
            Lit::Bool(b) => b.to_string(),
            Lit::Null => "null".to_owned(),
        }
    }
}

/// Converts `lit` to a value of `property`'s kind, or says why it cannot be one.
/// `null` is accepted for every kind; the caller restricts it to eq/ne.
pub(crate) fn coerce(property: &Property, lit: Lit) -> Result<Value, String> {
    let name = property.name;
    match (property.kind, lit) {
        (_, Lit::Null) => Ok(Value::Null),
        (Kind::String, Lit::Str(s)) => Ok(Value::String(s)),
        (Kind::String, Lit::Bare(s)) => Err(format!("'{name}' is a string; put the value in quotes: '{s}'")),
        (Kind::Guid, Lit::Str(s) | Lit::Bare(s) | Lit::Guid(s)) => {
            parse_guid(&s).map(Value::String).ok_or_else(|| format!("'{s}' is not a valid GUID for '{name}'"))
        }
        (Kind::DateTime, Lit::Str(s) | Lit::Bare(s) | Lit::DateTime(s)) => parse_datetime(&s)
            .map(Value::DateTime)
            .ok_or_else(|| format!("'{s}' is not a valid date-time for '{name}' (expected e.g. 2024-01-24T01:36:28Z)")),
        (Kind::Int, Lit::Bare(s)) => {
            s.parse().map(Value::Int).map_err(|_| format!("'{s}' is not a valid integer for '{name}'"))
        }
        (Kind::Bool, Lit::Bool(b)) => Ok(Value::Bool(b)),
        (Kind::Enum(allowed), Lit::Str(s)) => match allowed.iter().find(|a| a.eq_ignore_ascii_case(&s)) {
            Some(canonical) => Ok(Value::String((*canonical).to_owned())),
            None => Err(format!("'{s}' is not a valid value for '{name}'; allowed values: {}", allowed.join(", "))),
        },
        (kind, lit) => Err(format!("'{name}' is {} and cannot be compared with {}", kind.describe(), lit.describe())),
    }
}

/// `8-4-4-4-12` or 32 hex digits, any case; returns the lowercase hyphenated form.
pub(crate) fn parse_guid(s: &str) -> Option<String> {
    let hex: String = match s.len() {
        36 if [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-') => s.split('-').collect(),
        32 => s.to_owned(),
        _ => return None,
    };
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]))
}

/// The date-time forms MDE clients send: `2024-01-24T01:36:28.7283693Z`, with `+02:00`/`-05:00`
/// offsets (or ` 02:00`, which is what `+02:00` becomes when a client forgets to encode the `+`),
/// without seconds or zone (taken as UTC), and a bare date `2024-01-24` or `2024-01-24Z` (midnight UTC).
pub(crate) fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let Some((date, time)) = s.split_once(['T', 't']) else {
        return parse_date(s.strip_suffix(['Z', 'z']).unwrap_or(s)).map(|d| d.and_time(NaiveTime::MIN).and_utc());
    };
    let (clock, offset_seconds) = split_offset(time)?;
    let well_formed = match clock.split_once('.') {
        Some((hms, fraction)) => {
            shaped(hms, "dd:dd:dd") && !fraction.is_empty() && fraction.bytes().all(|b| b.is_ascii_digit())
        }
        None => shaped(clock, "dd:dd:dd") || shaped(clock, "dd:dd"),
    };
    if !well_formed {
        return None;
    }
    let clock =
        NaiveTime::parse_from_str(clock, "%H:%M:%S%.f").or_else(|_| NaiveTime::parse_from_str(clock, "%H:%M")).ok()?;
    let local = parse_date(date)?.and_time(clock);
    Some(FixedOffset::east_opt(offset_seconds)?.from_local_datetime(&local).single()?.with_timezone(&Utc))
}

/// Strictly `YYYY-MM-DD`: chrono alone would also take `2024-1-5` or `+2024-01-05`.
fn parse_date(s: &str) -> Option<NaiveDate> {
    shaped(s, "dddd-dd-dd").then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())?
}

/// Whether `s` matches `pattern`, where `d` stands for a digit.
pub(crate) fn shaped(s: &str, pattern: &str) -> bool {
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| if p == b'd' { c.is_ascii_digit() } else { c == p })
}

/// Splits `01:36:28+02:00` into the clock and the offset in seconds east of UTC.
fn split_offset(time: &str) -> Option<(&str, i32)> {
    if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    let Some(at) = time.rfind(['+', '-', ' ']) else {
        return Some((time, 0));
    };
    let (clock, zone) = (&time[..at], &time[at + 1..]);
    let sign = if time.as_bytes()[at] == b'-' { -1 } else { 1 };
    if !shaped(zone, "dd:dd") {
        return None;
    }
    let (hours, minutes): (i32, i32) = (zone[..2].parse().ok()?, zone[3..].parse().ok()?);
    (hours < 24 && minutes < 60).then_some((clock, sign * (hours * 3600 + minutes * 60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_schema::{ACTIONS, MACHINES};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn datetimes_in_every_form_clients_send() {
        let cases = [
            ("2024-01-24T01:36:28.7283693Z", "2024-01-24T01:36:28.7283693Z"),
            ("2024-01-24T01:36:28Z", "2024-01-24T01:36:28Z"),
            ("2024-01-24t01:36:28z", "2024-01-24T01:36:28Z"),
            ("2024-01-24T01:36:28+02:00", "2024-01-23T23:36:28Z"),
            ("2024-01-24T01:36:28 02:00", "2024-01-23T23:36:28Z"),
            ("2024-01-24T01:36:28-05:00", "2024-01-24T06:36:28Z"),
            ("2024-01-24T01:36:28.5-05:00", "2024-01-24T06:36:28.5Z"),
            ("2024-01-24T01:36:28", "2024-01-24T01:36:28Z"),
            ("2024-01-24T01:36Z", "2024-01-24T01:36:00Z"),
            ("2024-01-24", "2024-01-24T00:00:00Z"),
            ("2018-08-01Z", "2018-08-01T00:00:00Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_datetime(input), Some(utc(expected)), "{input}");
        }
    }

    #[test]
    fn malformed_datetimes_are_rejected() {
        for input in [
            "",
            "2024",
            "2024-1-24",
            "+2024-01-24",
            "2024-13-01",
            "2024-02-30",
            "2024-01-24T",
            "2024-01-24T25:00:00Z",
            "2024-01-24T1:36:28Z",
            "2024-01-24T01:36:28+2:00",
            "2024-01-24T01:36:28+24:00",
            "2024-01-24T01:36:28+0200",
            "2024-01-24T01:36:28ZZ",
            "2024-01-24T01:36:28.Z",
            "2024-01-24T01:36:28 Z",
            "2024-01-24Tnoon",
            "2024-01-24T01:36:28+02:00x",
            "24.01.2024",
            "2024-01-2é",
            "2024-01-24T01:36:2é",
        ] {
            assert_eq!(parse_datetime(input), None, "{input}");
        }
    }

    #[test]
    fn guids_are_normalized_to_lowercase_hyphenated() {
        let expected = Some("7b1f4967-d972-8e5a-a3c0-6a9e617a22a4".to_owned());
        assert_eq!(parse_guid("7B1F4967-D972-8E5A-A3C0-6A9E617A22A4"), expected);
        assert_eq!(parse_guid("7b1f4967d9728e5aa3c06a9e617a22a4"), expected);
        for bad in ["", "7b1f4967-d972-8e5a-a3c0-6a9e617a22a", "7b1f4967-d972-8e5a-a3c0_6a9e617a22a4", "{7b1f4967}"] {
            assert_eq!(parse_guid(bad), None, "{bad}");
        }
        assert_eq!(parse_guid("7b1f4967-d972-8e5a-a3c0-6a9e617a22aé"), None);
        assert_eq!(parse_guid("7b1f4967-d972-8e5a-a3c0-6a9e617a2ééé"), None);
        assert_eq!(parse_guid("7b1f4967+d972-8e5a-a3c0-6a9e617a22a4"), None);
        assert_eq!(parse_guid("g7b1f4967d9728e5aa3c06a9e617a22a"), None);
    }

    fn coerce_to(schema: &crate::Schema, name: &str, lit: Lit) -> Result<Value, String> {
        coerce(schema.property(name).unwrap(), lit)
    }

    #[test]
    fn each_kind_takes_its_literals() {
        let s = |v: &str| Value::String(v.to_owned());
        assert_eq!(coerce_to(&ACTIONS, "machineId", Lit::Str("abc".into())), Ok(s("abc")));
        assert_eq!(coerce_to(&ACTIONS, "machineId", Lit::Null), Ok(Value::Null));
        let guid = "92452beb-ef01-42df-852d-84b34ef83425";
        for lit in [Lit::Str(guid.to_uppercase()), Lit::Bare(guid.into()), Lit::Guid(guid.into())] {
            assert_eq!(coerce_to(&ACTIONS, "id", lit), Ok(s(guid)));
        }
        let time = Value::DateTime(utc("2024-01-24T01:36:28Z"));
        for lit in [Lit::Str("2024-01-24T01:36:28Z".into()), Lit::Bare("2024-01-24T01:36:28Z".into())] {
            assert_eq!(coerce_to(&ACTIONS, "creationDateTimeUtc", lit), Ok(time.clone()));
        }
        assert_eq!(coerce_to(&ACTIONS, "creationDateTimeUtc", Lit::DateTime("2024-01-24T01:36:28Z".into())), Ok(time));
        assert_eq!(coerce_to(&MACHINES, "osBuild", Lit::Bare("-22631".into())), Ok(Value::Int(-22631)));
        assert_eq!(coerce_to(&MACHINES, "isAadJoined", Lit::Bool(true)), Ok(Value::Bool(true)));
        assert_eq!(coerce_to(&ACTIONS, "status", Lit::Str("inprogress".into())), Ok(s("InProgress")));
    }

    #[test]
    fn each_kind_rejects_other_literals_with_a_reason() {
        let cases: [(&crate::Schema, &str, Lit, &str); 10] = [
            (&ACTIONS, "machineId", Lit::Bare("42".into()), "'machineId' is a string; put the value in quotes: '42'"),
            (&ACTIONS, "machineId", Lit::Bool(true), "'machineId' is a string and cannot be compared with true"),
            (&ACTIONS, "id", Lit::Str("nope".into()), "'nope' is not a valid GUID for 'id'"),
            (&ACTIONS, "id", Lit::Bool(true), "'id' is a GUID and cannot be compared with true"),
            (&ACTIONS, "creationDateTimeUtc", Lit::Str("yesterday".into()), "'yesterday' is not a valid date-time"),
            (
                &ACTIONS,
                "creationDateTimeUtc",
                Lit::Guid("x".into()),
                "is a date-time and cannot be compared with guid'x'",
            ),
            (
                &MACHINES,
                "osBuild",
                Lit::Str("1".into()),
                "'osBuild' is an integer and cannot be compared with the string '1'",
            ),
            (&MACHINES, "osBuild", Lit::Bare("99999999999999999999".into()), "not a valid integer for 'osBuild'"),
            (&MACHINES, "isAadJoined", Lit::Str("true".into()), "'isAadJoined' is a boolean and cannot be compared"),
            (
                &ACTIONS,
                "status",
                Lit::Str("Done".into()),
                "allowed values: Pending, InProgress, Succeeded, Failed, TimeOut",
            ),
        ];
        for (schema, name, lit, expected) in cases {
            let message = coerce_to(schema, name, lit).unwrap_err();
            assert!(message.contains(expected), "{message}");
        }
        let message = coerce_to(&ACTIONS, "status", Lit::Bare("1".into())).unwrap_err();
        assert_eq!(message, "'status' is an enumeration and cannot be compared with '1'");
    }
}
