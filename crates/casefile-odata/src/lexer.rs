//! Splits a `$filter` value into tokens. Keywords are not recognized here (a word is a word), so
//! `'x'and` and `)or(` need no special casing: a quote or parenthesis always ends the token before it.

use crate::ODataError;
use crate::literal::{Lit, parse_guid, shaped};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Open,
    Close,
    Comma,
    Slash,
    Colon,
    /// A property, keyword, function or lambda variable name.
    Word(String),
    Lit(Lit),
    End,
}

impl Tok {
    /// The token as the client wrote it, for "found ..." in error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Open => "'('".to_owned(),
            Tok::Close => "')'".to_owned(),
            Tok::Comma => "','".to_owned(),
            Tok::Slash => "'/'".to_owned(),
            Tok::Colon => "':'".to_owned(),
            Tok::Word(w) => format!("'{w}'"),
            Tok::Lit(lit) => lit.describe(),
            Tok::End => "the end of the filter".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub tok: Tok,
    /// 1-based character (not byte) position, as error messages report it.
    pub pos: usize,
}

pub(crate) fn syntax_error(pos: usize, message: impl std::fmt::Display) -> ODataError {
    ODataError(format!("Syntax error at position {pos} in $filter: {message}"))
}

/// Characters of an unquoted number, date-time or GUID (`-` for dates, `:` `.` `+` for times).
fn is_bare(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '+')
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ODataError> {
    let chars: Vec<char> = src.chars().collect();
    let run = |from: usize, keep: fn(char) -> bool| from + chars[from..].iter().take_while(|&&c| keep(c)).count();
    let text = |from: usize, to: usize| chars[from..to].iter().collect::<String>();
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let start = i;
        i += 1;
        let tok = match c {
            c if c.is_whitespace() => continue,
            '(' => Tok::Open,
            ')' => Tok::Close,
            ',' => Tok::Comma,
            '/' => Tok::Slash,
            ':' => Tok::Colon,
            '\'' => {
                let (s, next) = quoted(&chars, start)?;
                i = next;
                Tok::Lit(Lit::Str(s))
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i).is_some_and(char::is_ascii_digit)) => {
                i = run(start, is_bare);
                let mut bare = text(start, i);
                if let Some(end) = unencoded_offset(&chars, &bare, i) {
                    bare = format!("{bare} {}", text(i + 1, end));
                    i = end;
                }
                Tok::Lit(Lit::Bare(bare))
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                i = run(start, is_word);
                let word = text(start, i);
                let guid_end = run(start, |c| c.is_ascii_hexdigit() || c == '-');
                if chars.get(i) == Some(&'\'') && is_typed_prefix(&word) {
                    let (s, next) = quoted(&chars, i)?;
                    i = next;
                    Tok::Lit(if word.eq_ignore_ascii_case("guid") { Lit::Guid(s) } else { Lit::DateTime(s) })
                } else if guid_end > i && parse_guid(&text(start, guid_end)).is_some() {
                    // An unquoted GUID that happens to start with a letter.
                    i = guid_end;
                    Tok::Lit(Lit::Bare(text(start, i)))
                } else {
                    Tok::Word(word)
                }
            }
            other => return Err(syntax_error(start + 1, format_args!("unexpected character '{other}'"))),
        };
        tokens.push(Token { tok, pos: start + 1 });
    }
    tokens.push(Token { tok: Tok::End, pos: chars.len() + 1 });
    Ok(tokens)
}

/// OData v3 typed literals, still sent by older scripts: `datetime'...'`, `guid'...'`.
fn is_typed_prefix(word: &str) -> bool {
    ["datetime", "datetimeoffset", "guid"].iter().any(|p| p.eq_ignore_ascii_case(word))
}

/// Reads the string whose opening quote is at `open`; `''` stands for one quote.
/// Returns the text and the position after the closing quote.
fn quoted(chars: &[char], open: usize) -> Result<(String, usize), ODataError> {
    let mut text = String::new();
    let mut i = open + 1;
    while let Some(&c) = chars.get(i) {
        if c == '\'' {
            if chars.get(i + 1) != Some(&'\'') {
                return Ok((text, i + 1));
            }
            i += 1; // `''`: keep one quote
        }
        text.push(c);
        i += 1;
    }
    Err(syntax_error(open + 1, "unterminated string literal"))
}

/// A date-time whose `+02:00` offset arrived as ` 02:00` (an unencoded `+` decodes to a space):
/// returns where the offset ends if `bare` is a zone-less time and ` HH:MM` follows at `at`.
fn unencoded_offset(chars: &[char], bare: &str, at: usize) -> Option<usize> {
    let (_, time) = bare.split_once(['T', 't'])?;
    let zoned = time.ends_with(['Z', 'z']) || time.contains(['+', '-']);
    let offset: String = chars.get(at + 1..at + 6)?.iter().collect();
    let ends = chars.get(at + 6).is_none_or(|&c| !is_bare(c));
    (!zoned && chars.get(at) == Some(&' ') && shaped(&offset, "dd:dd") && ends).then_some(at + 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        tokenize(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    fn word(w: &str) -> Tok {
        Tok::Word(w.to_owned())
    }

    fn string(s: &str) -> Tok {
        Tok::Lit(Lit::Str(s.to_owned()))
    }

    fn bare(s: &str) -> Tok {
        Tok::Lit(Lit::Bare(s.to_owned()))
    }

    #[test]
    fn keywords_right_after_quotes_and_parentheses_are_separate_tokens() {
        assert_eq!(
            toks("machineId eq 'x'and type"),
            [word("machineId"), word("eq"), string("x"), word("and"), word("type"), Tok::End]
        );
        assert_eq!(
            toks("(a eq 'x')or(b eq 1)"),
            [
                Tok::Open,
                word("a"),
                word("eq"),
                string("x"),
                Tok::Close,
                word("or"),
                Tok::Open,
                word("b"),
                word("eq"),
                bare("1"),
                Tok::Close,
                Tok::End
            ]
        );
        // Without a separator a keyword is part of the word: `statuseq` is one (unknown) name.
        assert_eq!(toks("statuseq 'x'"), [word("statuseq"), string("x"), Tok::End]);
    }

    #[test]
    fn strings_unescape_doubled_quotes_and_keep_any_text() {
        assert_eq!(toks("'O''Brien'"), [string("O'Brien"), Tok::End]);
        assert_eq!(toks("''''"), [string("'"), Tok::End]);
        assert_eq!(toks("''"), [string(""), Tok::End]);
        assert_eq!(toks("'a  (b) ,ü😀'"), [string("a  (b) ,ü😀"), Tok::End]);
    }

    #[test]
    fn unterminated_strings_and_stray_characters_are_errors_with_positions() {
        assert_eq!(
            tokenize("a eq 'x").unwrap_err().0,
            "Syntax error at position 6 in $filter: unterminated string literal"
        );
        assert_eq!(
            tokenize("a eq 'x''").unwrap_err().0,
            "Syntax error at position 6 in $filter: unterminated string literal"
        );
        assert_eq!(
            tokenize("ä eq 1").unwrap_err().0,
            "Syntax error at position 1 in $filter: unexpected character 'ä'"
        );
        assert_eq!(
            tokenize("'ü' # 1").unwrap_err().0,
            "Syntax error at position 5 in $filter: unexpected character '#'"
        );
        assert!(tokenize("a eq -x").is_err());
    }

    #[test]
    fn numbers_datetimes_and_guids_are_bare_literals() {
        assert_eq!(toks("-42"), [bare("-42"), Tok::End]);
        assert_eq!(toks("2024-01-24T01:36:28.7283693Z)"), [bare("2024-01-24T01:36:28.7283693Z"), Tok::Close, Tok::End]);
        assert_eq!(toks("2024-01-24T01:36:28+02:00"), [bare("2024-01-24T01:36:28+02:00"), Tok::End]);
        assert_eq!(toks("2018-08-01Z"), [bare("2018-08-01Z"), Tok::End]);
        let guid = "f46b9bb2-59ed-4a7f-b998-1b73510e3cc7";
        assert_eq!(toks(guid), [bare(guid), Tok::End]);
        let letter_guid = "ab6b9bb2-59ed-4a7f-b998-1b73510e3cc7";
        assert_eq!(
            toks(&format!("id eq {letter_guid})")),
            [word("id"), word("eq"), bare(letter_guid), Tok::Close, Tok::End]
        );
    }

    #[test]
    fn an_offset_whose_plus_became_a_space_stays_with_its_datetime() {
        assert_eq!(toks("2024-01-24T01:36:28 02:00"), [bare("2024-01-24T01:36:28 02:00"), Tok::End]);
        assert_eq!(toks("2024-01-24T01:36:28 02:00)"), [bare("2024-01-24T01:36:28 02:00"), Tok::Close, Tok::End]);
        // Not an offset: the time already has a zone, there is no time, or more follows.
        assert_eq!(toks("2024-01-24T01:36:28Z 02:00"), [bare("2024-01-24T01:36:28Z"), bare("02:00"), Tok::End]);
        assert_eq!(toks("2024-01-24 02:00"), [bare("2024-01-24"), bare("02:00"), Tok::End]);
        assert_eq!(toks("2024-01-24T01:36:28 02:001"), [bare("2024-01-24T01:36:28"), bare("02:001"), Tok::End]);
        assert_eq!(toks("2024-01-24T01:36:28 02"), [bare("2024-01-24T01:36:28"), bare("02"), Tok::End]);
    }

    #[test]
    fn typed_literals_of_odata_v3() {
        assert_eq!(
            toks("datetime'2024-01-24T01:36:28Z'"),
            [Tok::Lit(Lit::DateTime("2024-01-24T01:36:28Z".into())), Tok::End]
        );
        assert_eq!(toks("DateTimeOffset'2024-01-24'"), [Tok::Lit(Lit::DateTime("2024-01-24".into())), Tok::End]);
        assert_eq!(toks("guid'x'"), [Tok::Lit(Lit::Guid("x".into())), Tok::End]);
        // Any other word before a quote is just a word.
        assert_eq!(toks("eq'x'"), [word("eq"), string("x"), Tok::End]);
        assert!(tokenize("datetime'2024").is_err());
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let tokens = tokenize("'é' eq x").unwrap();
        assert_eq!(tokens.iter().map(|t| t.pos).collect::<Vec<_>>(), [1, 5, 8, 9]);
        assert_eq!(tokenize("").unwrap(), [Token { tok: Tok::End, pos: 1 }]);
    }
}
