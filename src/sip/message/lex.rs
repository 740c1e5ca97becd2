//! Lexical helpers shared by the parsers (RFC 3261 §7.3.1, §25.1): tokens,
//! quoted strings, list splitting.

use super::error::{ParseError, invalid};

/// Splits a list-valued header value at top-level commas — not inside
/// quoted strings or `<…>` (§7.3.1). Empty elements are skipped.
pub fn split_list(value: &str) -> impl Iterator<Item = &str> {
    split_unquoted(value, ',', true).into_iter().map(str::trim).filter(|p| !p.is_empty())
}

/// Splits `s` at each `sep` outside double quotes (with `\` escapes) and,
/// when `angle_brackets` is set, outside `<...>` too.
pub(super) fn split_unquoted(s: &str, sep: char, angle_brackets: bool) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut in_quotes, mut escaped, mut in_angle) = (0, false, false, false);
    for (i, c) in s.char_indices() {
        if in_quotes {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_quotes = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            '<' if angle_brackets => in_angle = true,
            '>' if angle_brackets => in_angle = false,
            _ if c == sep && !in_angle => {
                parts.push(s.get(start..i).unwrap_or_default());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(s.get(start..).unwrap_or_default());
    parts
}

/// RFC 3261 §25.1 `token` characters.
pub(super) fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
}

pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

pub(super) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| s.get(prefix.len()..)).flatten()
}

/// Splits at `sep` outside double-quoted strings.
pub(super) fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    split_unquoted(s, sep, false)
}

/// `s` starts just after an opening quote: returns the unescaped content and
/// the text after the closing quote.
pub(super) fn split_quoted(s: &str) -> Result<(String, &str), ParseError> {
    let mut out = String::new();
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if c == '\r' || c == '\n' {
            break;
        }
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            return Ok((out, s.get(i + 1..).unwrap_or_default()));
        } else {
            out.push(c);
        }
    }
    Err(invalid("unterminated quoted string"))
}

/// `delta-seconds`, saturating at u32::MAX (§20.19, §10.2.1.1).
pub(super) fn parse_delta_seconds(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_splitting_respects_quotes_and_brackets() {
        let v = r#""A, \"B\"" <sip:a@x;foo=1,2>;p="x,y" , <sip:b@y>,, sip:c@z"#;
        let parts: Vec<&str> = split_list(v).collect();
        assert_eq!(parts, vec![r#""A, \"B\"" <sip:a@x;foo=1,2>;p="x,y""#, "<sip:b@y>", "sip:c@z"]);
    }
}
