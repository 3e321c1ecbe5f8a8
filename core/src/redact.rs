//! Outside text made safe to quote: a destination's answer, a token endpoint's
//! `error_description`, a transport error. Before such text becomes a reason (in records,
//! the API, logs), the request's own secrets are replaced by `[redacted]` (an endpoint may
//! echo the request), control characters are escaped (a reason can never start a log line
//! or drive a terminal), and its length is capped.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{HeaderName, HeaderValue};

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// The longest outside text a reason quotes, in characters.
pub const REASON_CHARS: usize = 1000;

/// Secrets shorter than this are not replaced: they would match ordinary words (the same
/// rule as the template loader's error scrubbing).
const MIN_SECRET: usize = 4;

/// The secret values a text must not show: a template's resolved references, the values of
/// the sensitive headers a request carried, and their common encodings. `Debug` shows only
/// how many there are.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so that a value is replaced before a part of it (`user:pass`, `pass`).
    needles: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.needles.len())
    }
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Adds a secret value, JSON-escaped and percent-encoded as well (the forms an endpoint
    /// that echoes a request is likely to write it in).
    pub fn add_secret(&mut self, value: &str) {
        if value.chars().count() < MIN_SECRET {
            return;
        }
        let json = serde_json::to_string(value).unwrap_or_default();
        let json = json.trim_start_matches('"').trim_end_matches('"');
        let percent = percent_encode(value);
        let variants = [
            value.to_string(),
            json.to_string(),
            json.replace('/', "\\/"),
            percent.clone(),
            percent.replace("%20", "+"),
        ];
        for variant in variants {
            if !self.needles.contains(&variant) {
                self.needles.push(variant);
            }
        }
        self.needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// Adds the value of every header marked sensitive (template headers, the auth plugin's).
    pub fn add_headers<'a>(&mut self, headers: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>) {
        for (_, value) in headers {
            if value.is_sensitive() {
                self.add_header_value(value);
            }
        }
    }

    /// Adds a credential header's value: whole, its credentials without the scheme
    /// (`Bearer xyz` → `xyz`), and for `Basic` what the base64 decodes to (`user:pass`) and
    /// the password (also percent-decoded, as RFC 6749 clients encode it).
    pub fn add_header_value(&mut self, value: &HeaderValue) {
        let Ok(text) = value.to_str() else {
            self.add_secret(&String::from_utf8_lossy(value.as_bytes()));
            return;
        };
        self.add_secret(text);
        let Some((scheme, credentials)) = text.trim().split_once(' ') else { return };
        let credentials = credentials.trim();
        self.add_secret(credentials);
        if !scheme.eq_ignore_ascii_case("basic") {
            return;
        }
        let Some(decoded) = STANDARD.decode(credentials).ok().and_then(|d| String::from_utf8(d).ok()) else {
            return;
        };
        self.add_secret(&decoded);
        if let Some((_, password)) = decoded.split_once(':') {
            self.add_secret(password);
            if let Some(plain) = percent_decode(password) {
                self.add_secret(&plain);
            }
        }
    }

    /// `text` with every secret replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), REDACTED);
            }
        }
        out
    }

    /// `bytes` (a response body, maybe not UTF-8) with every secret replaced. When the
    /// bytes were cut off (`Ending::Cut`), an ending that begins a secret is replaced too.
    pub fn redact_bytes(&self, bytes: &[u8], ending: Ending) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for needle in &self.needles {
            out = replace_bytes(&out, needle.as_bytes(), REDACTED.as_bytes());
        }
        if ending == Ending::Cut {
            let longest_start = self
                .needles
                .iter()
                .map(|n| (1..n.len()).rev().find(|&k| out.ends_with(&n.as_bytes()[..k])).unwrap_or(0))
                .max()
                .unwrap_or(0);
            if longest_start > 0 {
                out.truncate(out.len() - longest_start);
                out.extend_from_slice(REDACTED.as_bytes());
            }
        }
        out
    }

    /// Outside text as a reason may quote it: secrets replaced, control characters escaped,
    /// at most `max_chars` characters (then `…`).
    pub fn clean(&self, text: &str, max_chars: usize) -> String {
        cap(&escape_controls(&self.redact(text), Lines::Escape), max_chars)
    }
}

impl<'a> FromIterator<&'a str> for Redactor {
    /// A redactor of these secret values.
    fn from_iter<I: IntoIterator<Item = &'a str>>(values: I) -> Self {
        let mut redactor = Self::new();
        for value in values {
            redactor.add_secret(value);
        }
        redactor
    }
}

/// Whether a text is all there was, or was cut off (a body read up to its limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Whole,
    Cut,
}

/// What [`escape_controls`] does with line breaks and tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// `\n` and `\t` escaped like every other control: for one-line texts (reasons, logs).
    Escape,
    /// `\n` and `\t` kept: for a multi-line text shown as such (`hookgate test`'s body).
    Keep,
}

/// Control characters written as escapes: `\n`, `\r`, `\t`, and `\u{1b}` for ESC, the
/// other C0 and C1 controls and DEL, the Unicode line and paragraph separators and the
/// bidirectional overrides (which make a text read differently from what it is).
pub fn escape_controls(text: &str, lines: Lines) -> String {
    if !text.chars().any(needs_escape) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' | '\t' if lines == Lines::Keep => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL, C1 (including NEL)
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// At most `max_chars` characters of `text`, with `…` when some were dropped.
pub fn cap(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Outside text that carries no secret of ours, made fit for a reason: control characters
/// escaped and at most `max_chars` characters.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    cap(&escape_controls(text, Lines::Escape), max_chars)
}

/// Every byte but the unreserved ones percent-encoded (RFC 3986 §2.3), a space as `%20`.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `%XX` sequences decoded; `None` when there is none or the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn replace_bytes(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensitive(text: &str) -> HeaderValue {
        let mut value = HeaderValue::from_str(text).unwrap();
        value.set_sensitive(true);
        value
    }

    #[test]
    fn secrets_and_their_encodings_are_replaced() {
        let mut r = Redactor::new();
        r.add_secret("s3cr/et value");
        assert_eq!(r.redact("a s3cr/et value b"), "a [redacted] b");
        assert_eq!(r.redact(r#"{"k":"s3cr\/et value"}"#), r#"{"k":"[redacted]"}"#, "JSON with `\\/`");
        assert_eq!(r.redact("k=s3cr%2Fet%20value&x"), "k=[redacted]&x", "percent-encoded");
        assert_eq!(r.redact("k=s3cr%2Fet+value"), "k=[redacted]", "form-encoded");
        r.add_secret("abc");
        assert_eq!(r.redact("abc"), "abc", "too short to replace safely");
        assert!(!format!("{r:?}").contains("s3cr"));
    }

    #[test]
    fn a_basic_header_is_replaced_whole_encoded_and_decoded() {
        // RFC 7617 §2: Aladdin / open sesame.
        let mut headers = http::header::HeaderMap::new();
        headers.insert("authorization", sensitive("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let mut r = Redactor::new();
        r.add_headers(&headers);
        assert_eq!(r.redact("authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="), "authorization: [redacted]");
        assert_eq!(r.redact("creds QWxhZGRpbjpvcGVuIHNlc2FtZQ=="), "creds [redacted]");
        assert_eq!(r.redact("user Aladdin:open sesame"), "user [redacted]");
        assert_eq!(r.redact("password was open sesame"), "password was [redacted]");
        assert_eq!(r.redact("application/json"), "application/json", "not sensitive");

        let mut r = Redactor::new();
        r.add_header_value(&sensitive("Basic czZCaGRSa3F0MzpnWCUzQXk=")); // s6BhdRkqt3:gX%3Ay
        assert_eq!(r.redact("secret gX:y"), "secret [redacted]", "the percent-decoded password");

        let mut r = Redactor::new();
        r.add_header_value(&sensitive("Bearer eyJ.token.sig"));
        assert_eq!(r.redact("got eyJ.token.sig"), "got [redacted]");
    }

    #[test]
    fn bytes_are_replaced_and_a_cut_ending_that_begins_a_secret_too() {
        let mut r = Redactor::new();
        r.add_secret("hunter22");
        assert_eq!(r.redact_bytes(b"\xffx hunter22 y", Ending::Whole), b"\xffx [redacted] y");
        assert_eq!(r.redact_bytes(b"pw: hunt", Ending::Cut), b"pw: [redacted]");
        assert_eq!(r.redact_bytes(b"pw: hunt", Ending::Whole), b"pw: hunt");
    }

    #[test]
    fn control_characters_are_escaped() {
        let forged = "bad\n2026-01-01T00:00:00Z  INFO forged\r\t\u{1b}[2J\u{7}\u{85}\u{2028}\u{2029}\u{202e}x";
        let escaped = escape_controls(forged, Lines::Escape);
        assert_eq!(
            escaped,
            "bad\\n2026-01-01T00:00:00Z  INFO forged\\r\\t\\u{1b}[2J\\u{7}\\u{85}\\u{2028}\\u{2029}\\u{202e}x"
        );
        assert!(!escaped.chars().any(|c| c.is_control()));
        assert_eq!(escape_controls(&escaped, Lines::Escape), escaped, "escaping twice changes nothing");
        assert_eq!(escape_controls("a\n\tb\r\u{1b}", Lines::Keep), "a\n\tb\\r\\u{1b}");
        assert_eq!(escape_controls("plain ünïcode", Lines::Escape), "plain ünïcode");
    }

    #[test]
    fn clean_redacts_escapes_and_caps() {
        let mut r = Redactor::new();
        r.add_secret("hunter22");
        assert_eq!(r.clean("pw hunter22\nnext", 100), "pw [redacted]\\nnext");
        assert_eq!(r.clean("ééééé", 3), "ééé…");
        assert_eq!(sanitize("a\nb", 10), "a\\nb");
        assert_eq!(cap("abc", 3), "abc");
    }
}
