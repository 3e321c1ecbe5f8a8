//! From a template file's text to a validated [`Template`].

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use url::Url;

use super::error::TemplateError;
use super::model::Template;
use super::refs::{Confinement, Provenance, RefError, Resolver};
use super::spec::{PluginSpec, TemplateSpec};
use crate::config::{MAX_BATCH, MAX_RETRIES, MAX_TIMEOUT, TemplateDefaults};
use crate::delivery::client::{HttpClient, TlsSettings};
use crate::plugin::auth::BuildContext;
use crate::plugin::{KeyStore, PluginRegistry, TransformContext};
use crate::yaml::{locate, locate_text};

/// Headers the gateway sets itself; a template (or a plugin) may not.
pub const RESERVED_HEADERS: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"];

/// Turns template files into [`Template`]s with the gateway's defaults and plugins.
#[derive(Clone)]
pub struct Loader {
    /// Where references may read: relative `${file:..}` paths start at the config folder;
    /// what a template may read depends on who wrote it (see [`super::refs`]).
    pub refs: Confinement,
    pub defaults: TemplateDefaults,
    pub plugins: Arc<PluginRegistry>,
    pub client: HttpClient,
    /// Signing keys for plugins that sign (JWT client assertions).
    pub keys: Option<Arc<dyn KeyStore>>,
}

impl Loader {
    /// Loads one file. The error names the file, line and column.
    pub fn load_file(&self, file: &Path) -> Result<Template, TemplateError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| TemplateError::new(file, (1, 1), format!("cannot read the file: {e}")))?;
        self.load(file, &text)
    }

    /// Parses and validates a template file's text, resolves its references and builds its
    /// auth plugin. `version` is left 0 for the registry to assign. What the references may
    /// read depends on the file's provenance ([`Provenance::of_file`]).
    pub fn load(&self, file: &Path, text: &str) -> Result<Template, TemplateError> {
        self.load_with_env(file, text, &|name| std::env::var(name).ok())
    }

    /// A template's text as given to `PUT /v1/templates/{name}`, before it is written to
    /// `file` (with the API's marker line): its references read only what `secrets.api`
    /// exposes. Its digest is the one the written file will load with.
    pub fn load_api(&self, file: &Path, text: &str) -> Result<Template, TemplateError> {
        self.load_as(file, text, Provenance::Api, &|name| std::env::var(name).ok())
    }

    pub fn load_with_env(
        &self,
        file: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Template, TemplateError> {
        self.load_as(file, text, Provenance::of_file(text), env)
    }

    fn load_as(
        &self,
        file: &Path,
        text: &str,
        provenance: Provenance,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Template, TemplateError> {
        let at = |path: &[&str], message: String| TemplateError::new(file, locate(text, path), message);
        if text.trim().is_empty() {
            return Err(TemplateError::new(file, (1, 1), "the file is empty; a template needs at least `url`"));
        }
        let spec: TemplateSpec = serde_saphyr::from_str(text).map_err(|e| TemplateError::from_yaml(file, text, &e))?;

        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let name = spec.name.clone().unwrap_or_else(|| stem.to_string());
        validate_name(&name).map_err(|m| at(&["name"], m))?;

        let mut resolver = Resolver::new(&self.refs, provenance, env);
        let ref_error = |e: RefError| {
            TemplateError::new(
                file,
                locate_text(text, &e.reference).unwrap_or((1, 1)),
                format!("template `{name}`: {}", e.message),
            )
        };

        let url_text = resolver.resolve(&spec.url).map_err(ref_error)?;
        let url = Url::parse(&url_text)
            .map_err(|e| at(&["url"], resolver.scrub(&format!("`url` is not a valid URL: {e}"))))?;
        self.client.policy().check_url(&url).map_err(|e| at(&["url"], resolver.scrub(&format!("`url`: {e}"))))?;
        let tls_client = match &spec.tls {
            None => None,
            Some(tls) => {
                let mut resolve = |value: &Option<String>| value.as_deref().map(|v| resolver.resolve(v)).transpose();
                let ca = resolve(&tls.ca).map_err(ref_error)?;
                let client_cert = resolve(&tls.client_cert).map_err(ref_error)?;
                let client_key = resolve(&tls.client_key).map_err(ref_error)?.map(crate::Secret::new);
                let settings = TlsSettings::from_pem(ca.as_deref(), client_cert.as_deref(), client_key.as_ref())
                    .map_err(|e| at(&["tls", e.key], resolver.scrub(&e.message)))?;
                Some(self.client.with_tls(&settings).map_err(|m| at(&["tls"], resolver.scrub(&m)))?)
            }
        };
        let client = tls_client.as_ref().unwrap_or(&self.client);

        let mut headers = HeaderMap::new();
        for (key, value) in &spec.headers {
            let header_at = |m: String| at(&["headers", key], m);
            let header_name = HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| header_at(format!("`{key}` is not a valid header name")))?;
            if RESERVED_HEADERS.contains(&header_name.as_str()) {
                return Err(header_at(format!("`{key}` is set by the gateway and cannot be a template header")));
            }
            let resolved = resolver.resolve(&value.0).map_err(ref_error)?;
            let mut header_value = HeaderValue::from_str(&resolved).map_err(|_| {
                header_at(format!(
                    "the value of header `{key}` has characters a header cannot carry (control characters or newlines)"
                ))
            })?;
            header_value.set_sensitive(true);
            headers.insert(header_name, header_value);
        }
        headers.entry(CONTENT_TYPE).or_insert(HeaderValue::from_static("application/json"));

        let timeout = spec.timeout.unwrap_or(self.defaults.timeout);
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(at(&["timeout"], "`timeout` must be more than 0 and at most 5m".into()));
        }
        let retries = spec.retries.unwrap_or(self.defaults.retries);
        if retries > MAX_RETRIES {
            return Err(at(&["retries"], format!("`retries` must be at most {MAX_RETRIES}")));
        }
        let batch_size = spec.batch_size.unwrap_or(self.defaults.batch_size);
        if batch_size == 0 || batch_size > MAX_BATCH {
            return Err(at(&["batch_size"], format!("`batch_size` must be between 1 and {MAX_BATCH}")));
        }

        let (auth_type, auth) = {
            let default_auth = PluginSpec { kind: "none".into(), config: Default::default() };
            let auth_spec = spec.auth.as_ref().unwrap_or(&default_auth);
            let plugin = self.plugins.auth(&auth_spec.kind).ok_or_else(|| {
                let names = self.plugins.auth_names();
                let known: Vec<&str> = names.iter().map(String::as_str).collect();
                let hint = crate::yaml::nearest(&auth_spec.kind, &known)
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default();
                at(
                    &["auth", "type"],
                    format!("unknown auth plugin `{}` (known: {}){hint}", auth_spec.kind, known.join(", ")),
                )
            })?;
            let config = resolve_config(&mut resolver, auth_spec).map_err(ref_error)?;
            let ctx = BuildContext { template: &name, client, timeout, keys: self.keys.as_ref() };
            let authorizer = plugin.build(&ctx, &config).map_err(|message| {
                at(
                    &["auth", message_key(&message)],
                    resolver.scrub(&format!("auth plugin `{}`: {message}", auth_spec.kind)),
                )
            })?;
            (auth_spec.kind.clone(), authorizer)
        };

        let transform = match &spec.transform {
            None => None,
            Some(transform_spec) => {
                let plugin = self.plugins.transform(&transform_spec.kind).ok_or_else(|| {
                    at(
                        &["transform", "type"],
                        format!(
                            "no transform plugin named `{}` is loaded (transform plugins are WASM files in plugins/)",
                            transform_spec.kind
                        ),
                    )
                })?;
                let config = resolve_config(&mut resolver, transform_spec).map_err(ref_error)?;
                let ctx = TransformContext {
                    build: BuildContext { template: &name, client, timeout, keys: self.keys.as_ref() },
                    url: &url,
                    headers: &headers,
                };
                let transformer = plugin.build(&ctx, &config).map_err(|message| {
                    at(
                        &["transform", message_key(&message)],
                        resolver.scrub(&format!("transform plugin `{}`: {message}", transform_spec.kind)),
                    )
                })?;
                Some((transform_spec.kind.clone(), transformer))
            }
        };

        let mut hasher = DefaultHasher::new();
        Provenance::strip_marker(text).hash(&mut hasher);
        provenance.hash(&mut hasher);
        resolver.hash_values(&mut hasher);

        Ok(Template {
            name,
            file: file.to_path_buf(),
            version: 0,
            digest: hasher.finish(),
            url,
            method: spec.method.into(),
            headers,
            timeout,
            retries,
            batch_size,
            verify: spec.verify.unwrap_or(self.defaults.verify),
            auth_type,
            auth,
            transform,
            tls_client,
            secrets: resolver.values().iter().map(String::as_str).collect(),
        })
    }
}

/// Template names appear in file names and URLs: letters, digits, `-`, `_`, `.`; at most 64.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid template name: use 1 to 64 letters, digits, `-`, `_` or `.`, not starting with `.`"
        ))
    }
}

/// A plugin section's keys (all but `type`) with their references resolved, as JSON.
fn resolve_config(
    resolver: &mut Resolver<'_>,
    spec: &PluginSpec,
) -> Result<serde_json::Map<String, serde_json::Value>, RefError> {
    spec.config.iter().map(|(key, value)| Ok((key.clone(), resolve_value(resolver, value)?))).collect()
}

/// The key a plugin's error names first (plugins start messages with `` `key` ``), to locate
/// it in the file; `type` when it names none.
fn message_key(message: &str) -> &str {
    message.strip_prefix('`').and_then(|m| m.split('`').next()).unwrap_or("type")
}

/// A plugin config value with its string leaves resolved.
fn resolve_value(resolver: &mut Resolver<'_>, value: &serde_json::Value) -> Result<serde_json::Value, RefError> {
    use serde_json::Value as V;
    Ok(match value {
        V::String(s) => V::String(resolver.resolve(s)?),
        V::Array(items) => V::Array(items.iter().map(|v| resolve_value(resolver, v)).collect::<Result<_, _>>()?),
        V::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                out.insert(k.clone(), resolve_value(resolver, v)?);
            }
            V::Object(out)
        }
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::network::NetworkPolicy;
    use crate::plugin::auth::{AuthPlugin, Authorizer, BuildContext, NoHeaders};

    /// A plugin that needs a `secret` key of at least 8 characters.
    struct Needy;
    impl AuthPlugin for Needy {
        fn name(&self) -> &str {
            "none"
        }
        fn build(
            &self,
            _: &BuildContext<'_>,
            config: &serde_json::Map<String, serde_json::Value>,
        ) -> Result<Arc<dyn Authorizer>, String> {
            match config.get("secret").and_then(|v| v.as_str()) {
                None => Ok(Arc::new(NoHeaders)),
                // A careless plugin that quotes the value: the loader must scrub it.
                Some(s) if s.len() < 20 => Err(format!("`secret` is too short: {s}")),
                Some(_) => Ok(Arc::new(NoHeaders)),
            }
        }
    }

    fn loader(dir: &Path) -> Loader {
        let mut plugins = PluginRegistry::new();
        plugins.register_auth(Arc::new(Needy));
        Loader {
            refs: Confinement::new(dir, Path::new("data"), &Default::default()),
            defaults: TemplateDefaults::default(),
            plugins: Arc::new(plugins),
            client: HttpClient::new(NetworkPolicy::allow_loopback()).unwrap(),
            keys: None,
        }
    }

    fn env(name: &str) -> Option<String> {
        (name == "SECRET").then(|| "s3cret-value".to_string())
    }

    fn load(dir: &Path, text: &str) -> Result<Template, TemplateError> {
        loader(dir).load_with_env(&dir.join("t.yaml"), text, &env)
    }

    #[test]
    fn defaults_and_resolved_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "from-file\n").unwrap();
        let t = load(
            dir.path(),
            "url: http://127.0.0.1:9/x\nheaders:\n  X-A: ${env:SECRET}\n  X-B: ${file:key}\n  X-N: 3\n",
        )
        .unwrap();
        assert_eq!(t.name, "t");
        assert_eq!(t.method, http::Method::POST);
        assert_eq!(t.timeout, Duration::from_secs(5));
        assert_eq!(t.retries, 2);
        assert_eq!(t.max_attempts(), 3);
        assert_eq!(t.batch_size, 100);
        assert!(t.verify);
        assert_eq!(t.headers["x-a"], "s3cret-value");
        assert!(t.headers["x-a"].is_sensitive());
        assert_eq!(t.headers["x-b"], "from-file");
        assert_eq!(t.headers["x-n"], "3");
        assert_eq!(t.headers["content-type"], "application/json");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn a_changed_secret_is_a_new_digest() {
        let dir = tempfile::tempdir().unwrap();
        let text = "url: http://127.0.0.1:9/\nheaders: {X-A: \"${env:SECRET}\"}\n";
        let a = loader(dir.path()).load_with_env(&dir.path().join("t.yaml"), text, &env).unwrap();
        let b = loader(dir.path()).load_with_env(&dir.path().join("t.yaml"), text, &|_| Some("other".into())).unwrap();
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn errors_are_located_and_scrubbed() {
        let dir = tempfile::tempdir().unwrap();
        let e =
            load(dir.path(), "url: http://127.0.0.1:9/\nauth:\n  type: none\n  secret: ${env:SECRET}\n").unwrap_err();
        assert_eq!((e.line, e.column), (4, 3), "{e}");
        assert!(e.message.contains("`secret` is too short: [redacted]"), "{e}");
        assert!(!e.to_string().contains("s3cret-value"));

        let e = load(dir.path(), "url: not a url\n").unwrap_err();
        assert_eq!((e.line, e.column), (1, 1));
        assert!(e.message.contains("`url` is not a valid URL"), "{e}");

        let e = load(dir.path(), "url: http://127.0.0.1:9/\nheaders:\n  Host: x\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 3));
        assert!(e.message.contains("set by the gateway"), "{e}");

        let e = load(dir.path(), "url: http://127.0.0.1:9/\nretries: 99\n").unwrap_err();
        assert_eq!(e.line, 2);

        let e = load(dir.path(), "url: http://127.0.0.1:9/\nbatch_size: 0\n").unwrap_err();
        assert!(e.message.contains("`batch_size`"), "{e}");

        let e = load(dir.path(), "name: ../evil\nurl: http://127.0.0.1:9/\n").unwrap_err();
        assert!(e.message.contains("not a valid template name"), "{e}");

        let e = load(dir.path(), "   \n").unwrap_err();
        assert!(e.message.contains("empty"), "{e}");

        let e = load(dir.path(), "url: http://127.0.0.1:9/\ntransform: {type: zendesk}\n").unwrap_err();
        assert!(e.message.contains("no transform plugin named `zendesk`"), "{e}");
    }

    #[test]
    fn display_url_hides_user_info_and_query() {
        let dir = tempfile::tempdir().unwrap();
        let t = load(dir.path(), "url: \"http://user:${env:SECRET}@127.0.0.1:9/hook?token=${env:SECRET}\"\n").unwrap();
        assert_eq!(t.display_url(), "http://127.0.0.1:9/hook?[redacted]");
    }
}
