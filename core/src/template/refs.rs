//! `${env:NAME}` and `${file:PATH}` references, resolved once when a template loads, and
//! where they may read.
//!
//! A missing variable or unreadable file is an error naming the reference, never an empty
//! string. `$${` writes a literal `${`. Every resolved value is remembered so that error
//! messages built after resolution can be scrubbed of it.
//!
//! # What a reference may read
//!
//! A template's references may read only what its author may see ([`Confinement`]):
//!
//! - A template the operator put in the config folder ([`Provenance::Operator`]) reads any
//!   environment variable, and files inside the config folder or `secrets.dir`.
//! - A template written through `PUT /v1/templates/{name}` ([`Provenance::Api`]) reads only
//!   the variables listed in `secrets.api.env`, and files in `secrets.dir` when
//!   `secrets.api.files` is true. By default, nothing.
//! - No template reads anything in `data_dir` (the signing keys, the database), even though
//!   it is inside the config folder by default.
//!
//! A path is checked twice: as written (made absolute and with `..` removed, before the file
//! is touched) and once more after symlinks are resolved, so neither `..` nor a symlink leads
//! out. A refused reference gets the same message whether or not its target exists; only a
//! file in an allowed place can be "not found".
//!
//! # Provenance
//!
//! Templates written through the API land in `templates/` like the operator's, and are
//! reloaded from there on every rescan and restart. So that such a file can never be loaded
//! with the operator's privileges, the API writes it with [`API_MARKER`] as its first line,
//! always, before the body it was given (which therefore cannot remove it), and the loader
//! reads the provenance from the file itself ([`Provenance::of_file`]): a file whose first
//! line is the marker is an API template, whoever edits it later. An operator adopts such a
//! file, after reading it, by deleting that line.

use std::hash::{Hash, Hasher};
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// The first line of every template file written through the API; see the module docs.
pub const API_MARKER: &str =
    "# hookgate: written through PUT /v1/templates; its references may read only what `secrets.api` exposes";

/// Largest file a `${file:..}` reference reads (secrets, keys and CA bundles are far smaller).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Variables with this prefix are the gateway's own settings (the admin token, a queue URL
/// with its password): never exposed to templates written through the API.
const GATEWAY_PREFIX: &str = "HOOKGATE_";

/// `secrets` in hookgate.yaml: where `${file:..}` may read, and what templates written
/// through the API may reference.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// A folder of secret files (a mounted Kubernetes Secret, `/run/secrets`) that
    /// `${file:..}` may read besides the config folder; relative to the config folder.
    /// Default: none, only the config folder.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// What templates written through `PUT /v1/templates/{name}` may reference. Default:
    /// nothing.
    #[serde(default)]
    pub api: ApiSecrets,
}

/// `secrets.api`: the references allowed in templates written through the API.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiSecrets {
    /// Environment variables such templates may read: names (`PARTNER_TOKEN`) or prefixes
    /// ending in `*` (`PARTNER_*`). Variables starting with `HOOKGATE_` never. Default: none.
    #[serde(default)]
    pub env: Vec<EnvPattern>,
    /// Whether such templates may read files in `secrets.dir` (never elsewhere). Default
    /// false.
    #[serde(default)]
    pub files: bool,
}

/// One entry of `secrets.api.env`: a variable's name, or a prefix (written `PREFIX_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvPattern {
    Name(String),
    Prefix(String),
}

impl EnvPattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Name(n) => n == name,
            Self::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

impl std::str::FromStr for EnvPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (stem, prefix) = match s.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (s, false),
        };
        if stem.is_empty() || !stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`{s}` is not an environment variable name or a `PREFIX_*` pattern (letters, digits and `_`, optionally ending in `*`)"
            ));
        }
        if stem.starts_with(GATEWAY_PREFIX) {
            return Err(format!(
                "`{s}`: variables starting with `{GATEWAY_PREFIX}` are the gateway's own settings and are never exposed to templates written through the API"
            ));
        }
        Ok(if prefix { Self::Prefix(stem.into()) } else { Self::Name(stem.into()) })
    }
}

impl schemars::JsonSchema for EnvPattern {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EnvPattern".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(?!HOOKGATE_)[A-Za-z0-9_]+\\*?$",
            "description": "An environment variable's name (`PARTNER_TOKEN`) or a prefix (`PARTNER_*`); never `HOOKGATE_*`.",
        })
    }
}

impl<'de> Deserialize<'de> for EnvPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Who wrote a template, which decides what its references may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// A file the operator put in the config folder.
    Operator,
    /// A template written through `PUT /v1/templates/{name}`.
    Api,
}

impl Provenance {
    /// The provenance of a template file's text: [`Provenance::Api`] when its first line is
    /// [`API_MARKER`].
    pub fn of_file(text: &str) -> Self {
        match text.lines().next() {
            Some(line) if line.trim_end() == API_MARKER => Self::Api,
            _ => Self::Operator,
        }
    }

    /// `text` as the API writes it to a file: the marker line, then `text` (unless `text`
    /// already starts with it).
    pub fn api_file_text(text: &str) -> String {
        match Self::of_file(text) {
            Self::Api => text.to_string(),
            Self::Operator => format!("{API_MARKER}\n{text}"),
        }
    }

    /// The text of a template file without the API's marker line, if it has one.
    pub fn strip_marker(text: &str) -> &str {
        match Self::of_file(text) {
            Self::Api => text.split_once('\n').map_or("", |(_, rest)| rest),
            Self::Operator => text,
        }
    }
}

/// Where references may read, for one gateway: built once from its settings.
#[derive(Debug, Clone)]
pub struct Confinement {
    /// The config folder (absolute): relative `${file:..}` paths start here.
    config_dir: PathBuf,
    /// `secrets.dir` (absolute), if set.
    secrets_dir: Option<PathBuf>,
    /// `data_dir` (absolute): never readable.
    data_dir: PathBuf,
    api: ApiSecrets,
}

impl Confinement {
    /// `config_dir` is the config folder, `data_dir` the gateway's state (both as
    /// configured; relative paths are taken from the working directory).
    pub fn new(config_dir: &Path, data_dir: &Path, secrets: &SecretsConfig) -> Self {
        let config_dir = absolute(config_dir);
        Self {
            secrets_dir: secrets.dir.as_ref().map(|d| normalize(&config_dir.join(d))),
            data_dir: normalize(&config_dir.join(data_dir)),
            config_dir,
            api: secrets.api.clone(),
        }
    }

    /// The config folder (absolute).
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// Where `provenance`'s file references may read.
    fn places(&self, provenance: Provenance) -> Vec<Place> {
        let secrets = self.secrets_dir.iter().map(|d| Place::of(d));
        match provenance {
            Provenance::Operator => std::iter::once(Place::of(&self.config_dir)).chain(secrets).collect(),
            Provenance::Api if self.api.files => secrets.collect(),
            Provenance::Api => Vec::new(),
        }
    }

    fn env_allowed(&self, provenance: Provenance, name: &str) -> bool {
        match provenance {
            Provenance::Operator => true,
            Provenance::Api => !name.starts_with(GATEWAY_PREFIX) && self.api.env.iter().any(|p| p.matches(name)),
        }
    }

    /// Why `${env:..}` `reference` is refused, and what would allow it.
    fn env_refused(&self, reference: &str) -> String {
        format!(
            "`{reference}` is not allowed in a template written through the API: the operator exposes environment variables to such templates by listing them (or a `PREFIX_*` pattern) in `secrets.api.env` in hookgate.yaml; `{GATEWAY_PREFIX}*` variables never"
        )
    }

    /// Why `${file:..}` `reference` is refused, and what would allow it. The same whether
    /// or not the file exists.
    fn file_refused(&self, provenance: Provenance, reference: &str) -> String {
        match provenance {
            Provenance::Operator => {
                let secrets = match &self.secrets_dir {
                    Some(dir) => format!("`secrets.dir` ({})", dir.display()),
                    None => "a folder named by `secrets.dir` in hookgate.yaml".into(),
                };
                format!(
                    "`{reference}` is not allowed: `${{file:..}}` may read only files inside the config folder or {secrets}, never in `data_dir`"
                )
            }
            Provenance::Api => format!(
                "`{reference}` is not allowed in a template written through the API: such templates may read only files inside `secrets.dir`, when `secrets.api.files` is true in hookgate.yaml (never in `data_dir`)"
            ),
        }
    }
}

/// A folder references may (or may not) read: as configured, and with symlinks resolved
/// (when it exists).
struct Place {
    lexical: PathBuf,
    real: Option<PathBuf>,
}

impl Place {
    fn of(dir: &Path) -> Self {
        Self { lexical: dir.to_path_buf(), real: std::fs::canonicalize(dir).ok() }
    }

    fn contains(&self, path: &Path) -> bool {
        path.starts_with(&self.lexical) || self.real.as_ref().is_some_and(|r| path.starts_with(r))
    }
}

/// `path` made absolute (from the working directory), with `.` and `..` removed lexically.
fn absolute(path: &Path) -> PathBuf {
    normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// `.` and `..` removed without touching the filesystem (`..` at the root stays at the root).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// A reference that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefError {
    /// The reference as written, e.g. `${env:ORDERS_API_KEY}`, to locate it in the file.
    pub reference: String,
    pub message: String,
}

/// Resolves references for one template load.
pub struct Resolver<'a> {
    confinement: &'a Confinement,
    provenance: Provenance,
    env: &'a dyn Fn(&str) -> Option<String>,
    values: Vec<String>,
}

impl<'a> Resolver<'a> {
    pub fn new(confinement: &'a Confinement, provenance: Provenance, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self { confinement, provenance, env, values: Vec::new() }
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
            Some(("env", name)) if !name.is_empty() => {
                // Checked before the lookup: a refusal must not tell whether the variable is set.
                if !self.confinement.env_allowed(self.provenance, name) {
                    return Err(error(self.confinement.env_refused(reference)));
                }
                (self.env)(name).ok_or_else(|| {
                    error(format!("environment variable `{name}` (referenced as `{reference}`) is not set"))
                })
            }
            Some(("file", path)) if !path.is_empty() => {
                let mut text = self.read_file(reference, path).map_err(error)?;
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

    /// Reads `path` (relative to the config folder) if it is in a place this template may
    /// read: first checked as written, before the filesystem is touched, then with symlinks
    /// resolved. Outside those places the answer is the same whether the file exists or not.
    fn read_file(&self, reference: &str, path: &str) -> Result<String, String> {
        let confinement = self.confinement;
        let places = confinement.places(self.provenance);
        let data = Place::of(&confinement.data_dir);
        let permitted = |p: &Path| places.iter().any(|place| place.contains(p)) && !data.contains(p);
        let refused = || confinement.file_refused(self.provenance, reference);

        let joined = confinement.config_dir.join(path);
        if !permitted(&normalize(&joined)) {
            return Err(refused());
        }
        let cannot_read = |e: std::io::Error| format!("cannot read `{path}` (referenced as `{reference}`): {e}");
        let real = std::fs::canonicalize(&joined).map_err(cannot_read)?;
        if !permitted(&real) {
            return Err(refused());
        }
        if !std::fs::metadata(&real).map_err(cannot_read)?.is_file() {
            return Err(format!("cannot read `{path}` (referenced as `{reference}`): it is not a regular file"));
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&real)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(cannot_read)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(format!("`{reference}` is larger than 1 MiB; a reference reads a secret, not a large file"));
        }
        String::from_utf8(bytes).map_err(|_| format!("`{reference}`: the file is not UTF-8 text"))
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
            "TOKEN" | "PARTNER_KEY" | "HOOKGATE_QUEUE" => Some("s3cr3t-value".into()),
            _ => None,
        }
    }

    /// A config folder `cfg/` with `data/keys/k.pem` and `secret.txt`, a secrets folder
    /// `run/` beside it, and `outside.txt` next to both.
    struct Tree {
        root: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            let p = root.path();
            std::fs::create_dir_all(p.join("cfg/data/keys")).unwrap();
            std::fs::create_dir_all(p.join("run")).unwrap();
            std::fs::write(p.join("cfg/data/keys/k.pem"), "PRIVATE KEY").unwrap();
            std::fs::write(p.join("cfg/secret.txt"), "in-config\n").unwrap();
            std::fs::write(p.join("run/partner"), "in-secrets\n").unwrap();
            std::fs::write(p.join("outside.txt"), "outside").unwrap();
            Self { root }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.root.path().join(rel)
        }

        fn confinement(&self, secrets: &str) -> Confinement {
            let secrets: SecretsConfig = serde_saphyr::from_str(secrets).unwrap();
            Confinement::new(&self.path("cfg"), Path::new("data"), &secrets)
        }
    }

    fn resolve(c: &Confinement, provenance: Provenance, text: &str) -> Result<String, RefError> {
        Resolver::new(c, provenance, &env).resolve(text)
    }

    #[test]
    fn resolves_env_and_file_and_escapes() {
        let tree = Tree::new();
        let c = tree.confinement("{}");
        let mut r = Resolver::new(&c, Provenance::Operator, &env);
        assert_eq!(r.resolve("Bearer ${env:TOKEN}").unwrap(), "Bearer s3cr3t-value");
        assert_eq!(r.resolve("${file:secret.txt}").unwrap(), "in-config");
        assert_eq!(r.resolve("cost $5 and $${env:X}").unwrap(), "cost $5 and ${env:X}");
        assert_eq!(r.scrub("bad value s3cr3t-value here"), "bad value [redacted] here");
    }

    #[test]
    fn missing_references_are_errors_that_name_them() {
        let tree = Tree::new();
        let c = tree.confinement("{}");
        let mut r = Resolver::new(&c, Provenance::Operator, &env);
        let e = r.resolve("x${env:NOPE}").unwrap_err();
        assert_eq!(e.reference, "${env:NOPE}");
        assert!(e.message.contains("`NOPE`") && e.message.contains("not set"), "{}", e.message);
        let e = r.resolve("${file:missing.txt}").unwrap_err();
        assert!(e.message.contains("missing.txt") && e.message.contains("cannot read"), "{}", e.message);
        assert!(r.resolve("${vault:x}").unwrap_err().message.contains("not a reference"));
        assert!(r.resolve("${env:X").unwrap_err().message.contains("not closed"));
    }

    /// Config-folder templates read inside the config folder and `secrets.dir`; `..`,
    /// absolute paths elsewhere and `data_dir` are refused with one message, whether the
    /// target exists or not.
    #[test]
    fn operator_files_stay_inside_the_config_folder_and_secrets_dir() {
        let tree = Tree::new();
        let c = tree.confinement("dir: ../run\n");
        let ok = |text: &str| resolve(&c, Provenance::Operator, text).unwrap();
        assert_eq!(ok("${file:../run/partner}"), "in-secrets");
        assert_eq!(ok(&format!("${{file:{}}}", tree.path("run/partner").display())), "in-secrets");
        assert_eq!(ok("${file:data/../secret.txt}"), "in-config");

        let refused = |path: String| {
            let e = resolve(&c, Provenance::Operator, &format!("${{file:{path}}}")).unwrap_err();
            assert!(e.message.starts_with(&format!("`${{file:{path}}}` is not allowed:")), "{path}: {}", e.message);
            assert!(!e.message.contains("No such file") && !e.message.contains("os error"), "{}", e.message);
            e.message.replace(&path, "PATH")
        };
        let messages = [
            refused("../outside.txt".into()),
            refused("../missing.txt".into()),
            refused(tree.path("outside.txt").display().to_string()),
            refused("/etc/missing-for-sure".into()),
            refused("data/keys/k.pem".into()),
            refused("./data/keys/missing.pem".into()),
            refused(tree.path("cfg/data/keys/k.pem").display().to_string()),
        ];
        assert!(messages.iter().all(|m| *m == messages[0]), "one message for all: {messages:#?}");
        assert!(messages[0].contains("secrets.dir") && messages[0].contains("data_dir"), "{}", messages[0]);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_do_not_lead_out() {
        let tree = Tree::new();
        std::os::unix::fs::symlink(tree.path("outside.txt"), tree.path("cfg/out-link")).unwrap();
        std::os::unix::fs::symlink(tree.path("cfg/data"), tree.path("cfg/data-link")).unwrap();
        std::os::unix::fs::symlink(tree.path("cfg/secret.txt"), tree.path("run/in-link")).unwrap();
        let c = tree.confinement("dir: ../run\n");
        for path in ["out-link", "data-link/keys/k.pem"] {
            let e = resolve(&c, Provenance::Operator, &format!("${{file:{path}}}")).unwrap_err();
            assert!(e.message.contains("is not allowed"), "{path}: {}", e.message);
        }
        // A link from one allowed place to another is fine.
        assert_eq!(resolve(&c, Provenance::Operator, "${file:../run/in-link}").unwrap(), "in-config");
    }

    /// API templates: nothing by default; then only the exposed variables and `secrets.dir`.
    #[test]
    fn api_templates_read_only_what_is_exposed() {
        let tree = Tree::new();
        let closed = tree.confinement("dir: ../run\n");
        for text in ["${env:TOKEN}", "${env:NOPE}", "${file:secret.txt}", "${file:../run/partner}"] {
            let e = resolve(&closed, Provenance::Api, text).unwrap_err();
            assert!(
                e.message.contains("is not allowed in a template written through the API"),
                "{text}: {}",
                e.message
            );
        }

        let open = tree.confinement("dir: ../run\napi: {env: [PARTNER_*, TOKEN], files: true}\n");
        assert_eq!(resolve(&open, Provenance::Api, "${env:PARTNER_KEY}").unwrap(), "s3cr3t-value");
        assert_eq!(resolve(&open, Provenance::Api, "${env:TOKEN}").unwrap(), "s3cr3t-value");
        assert_eq!(resolve(&open, Provenance::Api, "${file:../run/partner}").unwrap(), "in-secrets");
        let e = resolve(&open, Provenance::Api, "${env:PARTNER_MISSING}").unwrap_err();
        assert!(e.message.contains("not set"), "an exposed name may say it is unset: {}", e.message);
        let same = |texts: &[&str]| {
            let messages: Vec<String> = texts
                .iter()
                .map(|t| {
                    let e = resolve(&open, Provenance::Api, t).unwrap_err();
                    assert!(e.message.contains("is not allowed"), "{t}: {}", e.message);
                    e.message.replace(&e.reference, "REF")
                })
                .collect();
            assert!(messages.iter().all(|m| *m == messages[0]), "{messages:#?}");
        };
        same(&["${env:OTHER}", "${env:HOOKGATE_QUEUE}", "${env:TOKEN2}"]);
        same(&["${file:secret.txt}", "${file:missing.txt}", "${file:data/keys/k.pem}", "${file:../outside.txt}"]);
    }

    #[test]
    fn provenance_comes_from_the_first_line() {
        let text = Provenance::api_file_text("url: http://x/\n");
        assert_eq!(Provenance::of_file(&text), Provenance::Api);
        assert_eq!(Provenance::strip_marker(&text), "url: http://x/\n");
        assert_eq!(Provenance::of_file("url: http://x/\n"), Provenance::Operator);
        // A body that starts with the marker itself is written as it is.
        assert_eq!(Provenance::api_file_text(&text), text);
        assert_eq!(Provenance::of_file(&format!("url: x\n{API_MARKER}\n")), Provenance::Operator);
    }

    #[test]
    fn env_patterns() {
        let p: EnvPattern = "PARTNER_*".parse().unwrap();
        assert!(p.matches("PARTNER_A") && !p.matches("OTHER"));
        let n: EnvPattern = "TOKEN".parse().unwrap();
        assert!(n.matches("TOKEN") && !n.matches("TOKEN2"));
        assert!("*".parse::<EnvPattern>().unwrap_err().contains("not an environment variable name"));
        assert!("A-B".parse::<EnvPattern>().is_err());
        assert!("HOOKGATE_ADMIN_TOKEN".parse::<EnvPattern>().unwrap_err().contains("never exposed"));
        assert!("HOOKGATE_*".parse::<EnvPattern>().is_err());
    }
}
