//! The entry points of the fuzz targets in `fuzz/`, shared with the regression test that
//! runs their corpus and crash inputs on the stable toolchain (`tests/fuzz_corpus.rs`).
//!
//! Each takes arbitrary bytes, gives them to one parser of outside input, and checks what
//! must hold of its answer. It panics only when the parser misbehaves: a panic inside, or a
//! broken invariant (a secret in an error, a batch that lost profiles). Nothing here touches
//! the network, and the template loader reads only the folder it is given.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{Settings, TemplateDefaults};
use crate::delivery::client::{HttpClient, parse_retry_after};
use crate::network::NetworkPolicy;
use crate::payload::Payload;
use crate::plugin::PluginRegistry;
use crate::template::load::Loader;
use crate::template::refs::{Confinement, SecretsConfig};

/// What the fixed environment of [`Templates`] answers to `${env:FUZZ_TOKEN}`.
pub const ENV_SECRET: &str = "fz-env-secret-93c1";
/// What `${file:secret.txt}` reads in [`Templates`]' folder.
pub const FILE_SECRET: &str = "fz-file-secret-5d2e";

/// `Retry-After` (`parse_retry_after`): never panics, and the later it is asked, the
/// shorter the wait (a value is a wait or not whatever the time).
pub fn retry_after(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
    let early = parse_retry_after(text, now);
    let late = parse_retry_after(text, now + Duration::from_secs(86_400));
    match (early, late) {
        (Some(early), Some(late)) => assert!(late <= early, "{text:?}: {early:?} then {late:?}"),
        (None, None) => {}
        (early, late) => panic!("{text:?}: {early:?} at one time, {late:?} at another"),
    }
}

/// The dispatch payload (`Payload::from_slice`, `batches`, `to_json`): a payload that is
/// accepted splits into batches that hold every profile once, in order, at most
/// `batch_size` each (1 to 7, from the input's length), and reads back as itself.
pub fn payload(data: &[u8]) {
    let batch_size = data.len() % 7 + 1;
    let payload = match Payload::from_slice(data) {
        Ok(payload) => payload,
        Err(error) => {
            assert!(error.to_string().starts_with("invalid payload: "), "{error}");
            return;
        }
    };
    let batches = payload.batches(batch_size);
    assert!(!batches.is_empty());
    let mut profiles = Vec::new();
    for batch in &batches {
        assert!(batch.profiles <= batch_size);
        let body = Payload::from_slice(&batch.body.to_vec()).expect("a batch is a valid payload");
        assert_eq!(body.campaign, payload.campaign);
        assert_eq!(body.profile_count(), batch.profiles);
        profiles.extend(body.profiles().map(|p| p.to_vec()));
    }
    let texts = |p: &Payload| p.profiles().map(<[u8]>::to_vec).collect::<Vec<_>>();
    assert_eq!(profiles, texts(&payload), "every profile once, in order, byte for byte");
    let whole = Payload::from_slice(&payload.to_json()).expect("the whole payload reads back");
    assert_eq!((&whole.campaign, texts(&whole)), (&payload.campaign, texts(&payload)));
}

/// `hookgate.yaml` (`Settings::load`): `data` is written as `dir/hookgate.yaml` and loaded.
/// Never panics. (`HOOKGATE_*` variables of the process apply on top: run without them.)
pub fn config(dir: &Path, data: &[u8]) {
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, data).expect("the fuzz folder is writable");
    if let Err(error) = Settings::load(dir) {
        assert!(!error.to_string().is_empty());
    }
}

/// What `data/key.pem` holds inside [`Templates`]' config folder: `data_dir`, which no
/// reference may read.
pub const DATA_SECRET: &str = "fz-data-secret-0b7a";
/// What a file beside [`Templates`]' config folder holds: outside it, so never readable.
pub const OUTSIDE_SECRET: &str = "fz-outside-secret-e41f";

/// The template loader (YAML, `${env:}`/`${file:}` references and their confinement, plugin
/// configs) over a config folder of its own, with a fixed environment and no verification:
/// nothing it loads is sent.
pub struct Templates {
    loader: Loader,
}

impl Templates {
    /// A loader of templates in `dir/config` (`dir` a fresh temporary folder), with
    /// `plugins`. Writes `config/secret.txt` for `${file:secret.txt}`, and two files no
    /// reference may read: `config/data/key.pem` (the `data_dir`) and `dir/outside.txt`.
    /// Loopback URLs are allowed (never connected).
    pub fn new(dir: &Path, plugins: PluginRegistry) -> Self {
        let config_dir = dir.join("config");
        let write = |path: PathBuf, text: &str| {
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("the fuzz folder is writable");
            std::fs::write(path, format!("{text}\n")).expect("the fuzz folder is writable");
        };
        std::fs::create_dir_all(config_dir.join("templates")).expect("the fuzz folder is writable");
        write(config_dir.join("secret.txt"), FILE_SECRET);
        write(config_dir.join("data").join("key.pem"), DATA_SECRET);
        write(dir.join("outside.txt"), OUTSIDE_SECRET);
        let loader = Loader {
            refs: Confinement::new(&config_dir, &config_dir.join("data"), &SecretsConfig::default()),
            defaults: TemplateDefaults::default(),
            plugins: Arc::new(plugins),
            client: HttpClient::new(NetworkPolicy::allow_loopback()).expect("an HTTP client"),
            keys: None,
        };
        Self { loader }
    }

    /// Loads `data` as `templates/fuzz.yaml`. Never panics; never reads `data_dir` or a file
    /// outside the config folder (a loaded template's URL, where a reference's value shows,
    /// never holds theirs); an error, the headers' and the auth plugin's `Debug` never show a
    /// resolved secret the text did not spell out. (The URL's host and path are shown by
    /// design: only its user info and query are hidden.)
    pub fn load(&self, data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else { return };
        let file: PathBuf = self.loader.refs.config_dir().join("templates").join("fuzz.yaml");
        let env = |name: &str| match name {
            "FUZZ_TOKEN" => Some(ENV_SECRET.to_string()),
            "FUZZ_URL" => Some("http://127.0.0.1:9/hook".to_string()),
            _ => None,
        };
        // (A URL's scheme and host are lowercased: the text may spell a secret in capitals.)
        let spelt = text.to_ascii_lowercase();
        let shown = match self.loader.load_with_env(&file, text, &env) {
            Ok(template) => {
                assert!(template.max_attempts() >= 1 && template.batch_size >= 1);
                for confined in [DATA_SECRET, OUTSIDE_SECRET] {
                    let read = template.url.as_str().contains(confined) && !spelt.contains(confined);
                    assert!(!read, "a confined file was read: {text:?}");
                }
                format!("{:?} {:?}", template.headers, template.auth)
            }
            Err(error) => error.to_string(),
        };
        for secret in [ENV_SECRET, FILE_SECRET, DATA_SECRET, OUTSIDE_SECRET] {
            if !spelt.contains(secret) {
                assert!(!shown.contains(secret), "a resolved secret is shown: {shown}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_files_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let templates = Templates::new(dir.path(), PluginRegistry::new());
        // Each refused at load; `load` would panic if one were read into the URL.
        for path in ["data/key.pem", "../outside.txt", "./data/../data/key.pem"] {
            templates.load(format!("url: \"http://127.0.0.1:9/${{file:{path}}}\"\n").as_bytes());
        }
        let outside = dir.path().join("outside.txt");
        templates.load(format!("url: \"http://127.0.0.1:9/${{file:{}}}\"\n", outside.display()).as_bytes());
    }

    #[test]
    fn the_entry_points_take_good_and_bad_input() {
        retry_after(b"Sun, 06 Nov 1994 08:49:37 GMT");
        retry_after(b"Sun, 06 Nov 999999999999999999 08:49:37 GMT");
        payload(br#"{"targetId": 7, "profiles": [{"a": 1}, {"b": 2}, {"c": 3}]}"#);
        payload(b"{\"targetId\": [");
        let dir = tempfile::tempdir().unwrap();
        config(dir.path(), b"workers: 4\n");
        config(dir.path(), b"workers: [\n");
        let templates = Templates::new(dir.path(), PluginRegistry::new());
        templates
            .load(b"url: http://127.0.0.1:9/x\nheaders: {X-A: \"${env:FUZZ_TOKEN}\", X-B: \"${file:secret.txt}\"}\n");
        templates.load(b"url: \"http://127.0.0.1:9/${env:FUZZ_TOKEN} x\"\n");
    }
}
