//! How the analysts' commands print: one JSON document for `--json`, aligned columns for
//! people. Everything goes to the writer the caller gives (the CLI's stdout wrapper).

use std::io::Write;

use serde_json::Value;

/// `value` as one pretty-printed JSON document.
pub fn json(out: &mut dyn Write, value: &Value) -> std::io::Result<()> {
    // Rendered first: a write error (a closed pipe) then reaches the caller as it is.
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    writeln!(out, "{text}")
}

/// A string field of an entity, `-` when absent or null, safe for a terminal.
pub fn field(entity: &Value, name: &str) -> String {
    match &entity[name] {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => printable(s),
        other => printable(&other.to_string()),
    }
}

/// `text` with control characters escaped: names are facts agents report, and an escape
/// sequence in one must not reach the analyst's terminal as one.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// An ISO 8601 time shortened to `YYYY-MM-DD hh:mm:ss` (UTC), as a table shows it.
pub fn time(entity: &Value, name: &str) -> String {
    let text = field(entity, name);
    match text.get(..19) {
        Some(head) if text.len() > 19 && head.as_bytes().get(10) == Some(&b'T') => head.replacen('T', " ", 1),
        _ => text,
    }
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
        let cells: Vec<&str> = cells.collect();
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', widths[i] - cell.chars().count() + 2));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, &mut headers.iter().copied())?;
    for row in rows {
        line(out, &mut row.iter().map(String::as_str))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut out = Vec::new();
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned(), "x".to_owned()],
            vec!["bbbb".to_owned(), "v".to_owned(), "y".to_owned()],
        ];
        table(&mut out, &["ID", "NAME", "LAST"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID    NAME        LAST\na     long value  x\nbbbb  v           y\n"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let entity = serde_json::json!({"name": "evil\u{1b}[2Jhost\nnext"});
        assert_eq!(field(&entity, "name"), "evil\\u{1b}[2Jhost\\nnext");
    }

    #[test]
    fn times_are_shortened() {
        let entity = serde_json::json!({"t": "2026-12-07T20:07:57.1234567Z", "n": null});
        assert_eq!(time(&entity, "t"), "2026-12-07 20:07:57");
        assert_eq!(time(&entity, "n"), "-");
    }
}
