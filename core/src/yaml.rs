//! YAML helpers: `hookgate.yaml` read for figment, where a key or a value is written in a
//! YAML text, and which known key a misspelt one was meant to be (what error messages about
//! templates and `hookgate.yaml` point with).

/// Where `path` (keys from the top, e.g. `["auth", "password"]`) is written in a YAML text:
/// the 1-based line and column of the innermost key found. Handles block mappings and
/// one-line flow mappings (`auth: {type: basic, username: u}`), which is what templates use;
/// falls back to the deepest ancestor it finds, then to 1:1.
pub fn locate(text: &str, path: &[&str]) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = (1, 1);
    let mut start = 0;
    let mut parent_indent: Option<usize> = None;
    for key in path {
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if let Some(p) = parent_indent
                && indent <= p
                && i > start
            {
                break;
            }
            if let Some(col) = key_column(line, key) {
                hit = Some((i, indent, col));
                break;
            }
        }
        match hit {
            Some((i, indent, col)) => {
                found = (i + 1, col + 1);
                start = i;
                parent_indent = Some(indent);
            }
            None => break,
        }
    }
    found
}

/// The 0-based column of `key:` on this line, as a block key or inside a flow mapping.
fn key_column(line: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None; // an empty key (`"": x`) is nowhere to point at, and `find("")` never moves
    }
    let mut from = 0;
    while let Some(pos) = line[from..].find(key) {
        let at = from + pos;
        let before = line[..at].trim_end();
        let after = line[at + key.len()..].trim_start();
        let boundary = before.is_empty()
            || before.ends_with('{')
            || before.ends_with(',')
            || before.ends_with("- ")
            || before == "-";
        let quoted_ok = line[..at].ends_with('"') || line[..at].ends_with('\'');
        if (boundary || quoted_ok) && (after.starts_with(':') || after.starts_with("\":") || after.starts_with("':")) {
            return Some(if quoted_ok { at - 1 } else { at });
        }
        from = at + key.len();
    }
    None
}

/// The 1-based line and column of the first occurrence of `needle`.
pub fn locate_text(text: &str, needle: &str) -> Option<(usize, usize)> {
    let offset = text.find(needle)?;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = offset - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    Some((line, column))
}

/// The candidate closest to `word` by edit distance (optimal string alignment: edits and
/// adjacent transpositions count 1 each), if it is close enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word_lower = word.to_ascii_lowercase();
    candidates
        .iter()
        .map(|c| (strsim::osa_distance(&word_lower, &c.to_ascii_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `hookgate.yaml` for figment, read by serde-saphyr. Non-finite floats (`.nan`, `.inf`) pass
/// through to the range checks of `Config`, which name the key they were given for.
pub struct Yaml;

impl figment::providers::Format for Yaml {
    type Error = serde_saphyr::Error;

    const NAME: &'static str = "YAML";

    fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Self::Error> {
        let options = serde_saphyr::options! {
            with_snippet: false,
            non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
        };
        serde_saphyr::from_str_with_options(text, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_key_for_typos() {
        let keys = ["name", "url", "method", "headers", "timeout", "retries", "batch_size", "verify", "auth"];
        assert_eq!(nearest("methd", &keys), Some("method"));
        assert_eq!(nearest("header", &keys), Some("headers"));
        assert_eq!(nearest("batchsize", &keys), Some("batch_size"));
        assert_eq!(nearest("zzzzzz", &keys), None);
        assert_eq!(nearest("basci", &["basic", "none"]), Some("basic"));
    }

    #[test]
    fn locates_block_and_flow_keys() {
        let text = "url: http://x\nheaders:\n  X-A: 1\n  X-B: 2\nauth:\n  type: basic\n  password: p\n";
        assert_eq!(locate(text, &["url"]), (1, 1));
        assert_eq!(locate(text, &["headers", "X-B"]), (4, 3));
        assert_eq!(locate(text, &["auth", "password"]), (7, 3));
        assert_eq!(locate(text, &["auth", "missing"]), (5, 1));
        let flow = "url: http://x\nauth: {type: basic, username: u}\n";
        assert_eq!(locate(flow, &["auth", "username"]), (2, 21));
        assert_eq!(locate_text(flow, "basic"), Some((2, 14)));
        // An empty key (a header named "") used to loop forever.
        assert_eq!(locate("url: http://x\nheaders: {\"\": x}\n", &["headers", ""]), (2, 1));
    }
}
