//! `${env:NAME}` and `${file:PATH}` references, resolved once when a template loads.
//!
//! A missing variable or unreadable file is an error naming the reference, never an empty
//! string. `$${` writes a literal `${`. Every resolved value is remembered so that error
//! messages built after resolution can be scrubbed of it.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// A reference that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefError {
    /// The reference as written, e.g. `${env:ORDERS_API_KEY}`, to locate it in the file.
    pub reference: String,
    pub message: String,
}

/// Resolves references for one template load.
pub struct Resolver<'a> {
    /// Relative `${file:..}` paths are relative to this folder (the config folder).
    base: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    values: Vec<String>,
}

impl<'a> Resolver<'a> {
    pub fn new(base: &'a Path, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { base, env, values: Vec::new() }
    }

    /// Returns `text` with every reference replaced by its value.
    pub fn resolve(&mut self, text: &str) -> Result<String, RefError> {
        if !text.contains('$') {
            return Ok(text.to_string());
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            rest = &rest[pos..];
            if let Some(after) = rest.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${") {
                let end = after.find('}').ok_or_else(|| RefError {
                    reference: rest.chars().take(24).collect(),
                    message: "`${` is not closed by `}` (write `$${` for a literal `${`)".into(),
                })?;
                let reference = &rest[..end + 3];
                let value = self.lookup(reference, &after[..end])?;
                out.push_str(&value);
                self.values.push(value);
                rest = &after[end + 1..];
            } else {
                out.push('$');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, reference: &str, inner: &str) -> Result<String, RefError> {
        let error = |message: String| RefError { reference: reference.to_string(), message };
        match inner.split_once(':') {
            Some(("env", name)) if !name.is_empty() => (self.env)(name).ok_or_else(|| {
                error(format!("environment variable `{name}` (referenced as `{reference}`) is not set"))
            }),
            Some(("file", path)) if !path.is_empty() => {
                let full: PathBuf = self.base.join(path);
                let mut text = std::fs::read_to_string(&full).map_err(|e| {
                    error(format!("cannot read `{}` (referenced as `{reference}`): {e}", full.display()))
                })?;
                // Secret files usually end with a newline that is not part of the secret.
                while text.ends_with('\n') || text.ends_with('\r') {
                    text.pop();
                }
                Ok(text)
            }
            _ => Err(error(format!(
                "`{reference}` is not a reference; use `${{env:NAME}}` or `${{file:PATH}}` (write `$${{` for a literal `${{`)"
            ))),
        }
    }

    /// `message` with every resolved value of at least 4 characters replaced by `[redacted]`.
    pub fn scrub(&self, message: &str) -> String {
        let mut out = message.to_string();
        for value in self.values.iter().filter(|v| v.len() >= 4) {
            out = out.replace(value.as_str(), "[redacted]");
        }
        out
    }

    /// Feeds the resolved values into a hash, so a changed secret makes a new version.
    pub fn hash_values<H: Hasher>(&self, state: &mut H) {
        self.values.hash(state);
    }

    /// The values resolved so far: secrets that outside text quoted later must not show.
    pub fn values(&self) -> &[String] {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cr3t-value".into()),
            _ => None,
        }
    }

    #[test]
    fn resolves_env_and_file_and_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.txt"), "from-file\n").unwrap();
        let mut r = Resolver::new(dir.path(), &env);
        assert_eq!(r.resolve("Bearer ${env:TOKEN}").unwrap(), "Bearer s3cr3t-value");
        assert_eq!(r.resolve("${file:key.txt}").unwrap(), "from-file");
        assert_eq!(r.resolve("cost $5 and $${env:X}").unwrap(), "cost $5 and ${env:X}");
        assert_eq!(r.scrub("bad value s3cr3t-value here"), "bad value [redacted] here");
    }

    #[test]
    fn missing_references_are_errors_that_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Resolver::new(dir.path(), &env);
        let e = r.resolve("x${env:NOPE}").unwrap_err();
        assert_eq!(e.reference, "${env:NOPE}");
        assert!(e.message.contains("`NOPE`") && e.message.contains("not set"), "{}", e.message);
        let e = r.resolve("${file:missing.txt}").unwrap_err();
        assert!(e.message.contains("missing.txt"), "{}", e.message);
        assert!(r.resolve("${vault:x}").unwrap_err().message.contains("not a reference"));
        assert!(r.resolve("${env:X").unwrap_err().message.contains("not closed"));
    }
}
