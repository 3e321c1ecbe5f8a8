//! Text a plugin wrote, made safe to put in a log line or a failure reason: control
//! characters escaped (so a `\n` cannot start a forged log line, nor an escape sequence
//! recolour a terminal), and a cap on its length.

/// `text` with every control character (and the Unicode line and paragraph separators)
/// escaped as Rust does (`\n`, `\u{1b}`), at most `max` bytes: when longer, cut (never inside
/// a character or an escape) and ended with `…`.
pub fn sanitize(text: &str, max: usize) -> String {
    if fits(text, max) {
        escape_prefix(text, max)
    } else {
        let mut cut = escape_prefix(text, max.saturating_sub('…'.len_utf8()));
        cut.push('…');
        cut
    }
}

/// Whether all of `text`, escaped, fits in `max` bytes.
fn fits(text: &str, max: usize) -> bool {
    escaped_len(text, max) <= max
}

/// The escaped length of `text`, counted up to just past `limit`.
fn escaped_len(text: &str, limit: usize) -> usize {
    let mut len = 0;
    for c in text.chars() {
        len += if needs_escape(c) { c.escape_debug().count() } else { c.len_utf8() };
        if len > limit {
            break;
        }
    }
    len
}

/// The longest escaped prefix of `text` that fits in `max` bytes.
fn escape_prefix(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let start = out.len();
        if needs_escape(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(start);
            break;
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// A name a plugin gave (a key id, a header name) for an error message: escaped, at most 64
/// bytes.
pub fn name(text: &str) -> String {
    sanitize(text, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("a\nb\r\tc\u{1b}[31m", 100), "a\\nb\\r\\tc\\u{1b}[31m");
        assert_eq!(sanitize("line\u{2028}sep", 100), "line\\u{2028}sep");
        assert_eq!(sanitize("plain ünïcode", 100), "plain ünïcode");
        assert!(!sanitize("x\n2024-01-01T00:00:00Z ERROR forged", 100).contains('\n'));
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let cut = sanitize(&"é".repeat(100), 11);
        assert_eq!(cut, format!("{}…", "é".repeat(4)));
        assert!(cut.len() <= 11);
        assert_eq!(sanitize("abcdef\n", 7), "abcd…");
        // An escape is never cut in half.
        assert_eq!(sanitize("abc\u{1b}", 8), "abc…");
        assert_eq!(sanitize("abc\u{1b}", 9), "abc\\u{1b}");
        assert_eq!(sanitize("short", 5), "short");
        for max in 0..40 {
            assert!(sanitize("a\nbé\u{1b}cdé\tfghijklmnopqrstuvwxyz", max).len() <= max.max(3));
        }
    }
}
