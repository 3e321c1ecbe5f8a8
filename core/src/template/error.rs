//! A problem in a template file, located as `file:line:col`.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::yaml::{locate_text, nearest};

/// What is wrong with a template, and where. `line` and `column` are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl TemplateError {
    pub fn new(file: &Path, (line, column): (usize, usize), message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), line, column, message: message.into() }
    }

    /// From a YAML parse error: its location, its message without the location suffix, and
    /// for an unknown key, the nearest valid key.
    pub fn from_yaml(file: &Path, text: &str, error: &serde_saphyr::Error) -> Self {
        let error = error.without_snippet();
        let mut message = error.to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        if let Some(key) = message.strip_prefix("duplicate mapping key: ").and_then(|m| m.split(',').next()) {
            message = format!("duplicate key `{key}`");
        }
        let (line, column) = match error.location() {
            Some(l) => (l.line() as usize, l.column() as usize),
            None => message.split('`').nth(1).and_then(|quoted| locate_text(text, quoted)).unwrap_or((1, 1)),
        };
        if let Some(hint) = unknown_field_hint(&message) {
            message.push_str(&hint);
        }
        Self { file: file.to_path_buf(), line, column, message }
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

impl std::error::Error for TemplateError {}

/// For "unknown field `x`, expected one of a, b" (or `` `a`, `b` ``), a "; did you mean `a`?".
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, expected) = rest.split_once('`')?;
    let expected = expected.split_once("expected one of ").map(|(_, list)| list).unwrap_or(expected);
    let candidates: Vec<&str> =
        expected.split(',').map(|c| c.trim().trim_matches('`')).filter(|c| !c.is_empty()).collect();
    nearest(unknown, &candidates).map(|best| format!("; did you mean `{best}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_errors_keep_location_and_get_a_hint() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            url: String,
            method: Option<String>,
        }
        let text = "url: x\nmethd: PUT\n";
        let err = serde_saphyr::from_str::<T>(text).unwrap_err();
        let e = TemplateError::from_yaml(Path::new("t.yaml"), text, &err);
        assert_eq!((e.line, e.column), (2, 1));
        assert!(e.message.contains("unknown field `methd`"), "{}", e.message);
        assert!(e.message.ends_with("did you mean `method`?"), "{}", e.message);
        assert!(e.to_string().starts_with("t.yaml:2:1: "));
    }
}
