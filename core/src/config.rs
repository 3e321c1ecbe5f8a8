//! `hookgate.yaml`: the server settings, overridable by `HOOKGATE_*` environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::duration;
use crate::network::NetworkPolicy;
use crate::secret::Secret;
use crate::yaml::Yaml;

/// The top-level keys of [`Config`], for the environment-variable filter (`HOOKGATE_LISTEN`,
/// `HOOKGATE_PLUGINS__FUEL`, ...): taken from its `Deserialize`, so every section is
/// overridable as soon as it exists.
fn top_level_keys() -> &'static [&'static str] {
    field_names::<Config>()
}

/// The field names of a struct that derives `Deserialize`: the derive hands them to
/// `Deserializer::deserialize_struct`, where this deserializer keeps them and stops.
fn field_names<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor, value::Error};
    struct Fields<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Fields<'_> {
        type Error = Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
            Err(Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Error> {
            *self.0 = fields;
            Err(Error::custom("only its field names were asked for"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Fields(&mut fields));
    fields
}

/// The whole of `hookgate.yaml`. Every key has a default, so an empty file is valid.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The address of the HTTP API. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Bearer token for every `/v1` route. Required when `listen` is not a loopback address.
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// Where the gateway keeps its state, relative to the config folder. Default `data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where dispatches and the delivery queue live: `sqlite` (default: `data_dir/hookgate.db`,
    /// durable, no server), `postgres://user:pass@host/db` (shared by several instances), or
    /// `memory` (fast, lost on restart).
    #[serde(default)]
    pub queue: QueueBackend,
    /// Finished dispatches (records, failed requests' bodies, and the campaign stats derived
    /// from them) are deleted this long after they were accepted. Default 7d.
    #[serde(default = "default_retention", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub retention: Duration,
    /// On SIGTERM, deliveries in progress get this long to finish; what is left stays
    /// queued for the next start. Default 30s.
    #[serde(default = "default_shutdown_grace", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub shutdown_grace: Duration,
    /// `postgres` only: a job an instance claimed is another instance's to take if the
    /// claim is not renewed within this time (the instance died). Default 30s.
    #[serde(default = "default_queue_lease", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub queue_lease: Duration,
    /// `postgres` only: how often an idle instance looks for work anyway. New work wakes it
    /// at once (`LISTEN/NOTIFY`), and a retry when it is due; this is the safety net.
    /// Default 60s.
    #[serde(default = "default_queue_poll", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub queue_poll: Duration,
    /// How many deliveries run at once. Default 64.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Log filter (`info`, `debug`, `hookgate_core=debug`...). `RUST_LOG` wins when set.
    #[serde(default = "default_log")]
    pub log: String,
    /// How log lines are written to standard error: `text` (default, for people) or
    /// `json` (one JSON object per line, for log stores such as Loki, Elasticsearch or
    /// Cloud Logging).
    #[serde(default)]
    pub log_format: LogFormat,
    /// Defaults for templates that do not set a value themselves.
    #[serde(default)]
    pub defaults: TemplateDefaults,
    /// The wait between attempts.
    #[serde(default)]
    pub backoff: Backoff,
    /// Which destination addresses are allowed.
    #[serde(default)]
    pub network: NetworkPolicy,
    /// How template changes are picked up.
    #[serde(default)]
    pub reload: Reload,
    /// Bounds that protect the gateway's memory.
    #[serde(default)]
    pub limits: Limits,
    /// The signing-key store (`hookgate keys`).
    #[serde(default)]
    pub keys: Keys,
    /// Limits of WASM plugin calls.
    #[serde(default)]
    pub plugins: PluginLimits,
    /// Isolation between destinations.
    #[serde(default)]
    pub destinations: Destinations,
    /// Where `${file:..}` references may read, and what templates written through the API
    /// may reference (by default nothing).
    #[serde(default)]
    pub secrets: crate::template::refs::SecretsConfig,
}

/// `log_format`: how log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, and the event's fields
    /// (`template`, `dispatch`, `delivery_id`, ...).
    Json,
}

/// The slowest `destinations.rate_limit` (a request every 1000 s) and the fastest; config
/// validation refuses values outside (and `admit` clamps, so no value can misbehave).
pub const MIN_RATE_LIMIT: f64 = 0.001;
pub const MAX_RATE_LIMIT: f64 = 1_000_000.0;

/// `destinations`: limits per destination (scheme, host, port), so one slow or failing
/// endpoint never delays deliveries to others.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Destinations {
    /// Requests in flight to one destination. Default 32 (half the default workers).
    #[serde(default = "default_destination_concurrency")]
    pub max_concurrency: usize,
    /// Requests per second to one destination; 0 (the default) means no limit.
    #[serde(default)]
    pub rate_limit: f64,
}

impl Default for Destinations {
    fn default() -> Self {
        Self { max_concurrency: default_destination_concurrency(), rate_limit: 0.0 }
    }
}

fn default_destination_concurrency() -> usize {
    32
}

/// `plugins`: what one WASM plugin call may use. A call past a limit fails that delivery
/// (with the plugin's name and the limit), and nothing else.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Wall-clock time a call may run (time waiting on the host's `fetch` not counted).
    /// Default 100ms.
    #[serde(default = "default_plugin_timeout", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub timeout: Duration,
    /// Linear memory of one instance, in bytes. Default 16 MiB.
    #[serde(default = "default_plugin_memory")]
    pub memory_bytes: usize,
    /// Fuel (roughly, WebAssembly instructions) of one call. Default 500 million.
    #[serde(default = "default_plugin_fuel")]
    pub fuel: u64,
    /// Plugin instances alive at once, busy or idle for reuse; more calls wait. Default 64.
    #[serde(default = "default_plugin_instances")]
    pub max_instances: u32,
    /// Bytes a call may return (headers, or requests with their bodies). Default 4 MiB.
    #[serde(default = "default_plugin_output")]
    pub max_output_bytes: usize,
    /// Calls one plugin instance may serve, within one template version (never shared
    /// between templates, template versions or plugin file versions); each call gets fresh
    /// fuel, time and per-call caps, and an instance is thrown away after any trap, limit,
    /// error or oversized output. A plugin's globals and memory may survive between those
    /// calls. `1` gives every call a fresh instance. Between 1 and 1000000; default 1000.
    #[serde(default = "default_plugin_reuse")]
    pub reuse: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            timeout: default_plugin_timeout(),
            memory_bytes: default_plugin_memory(),
            fuel: default_plugin_fuel(),
            max_instances: default_plugin_instances(),
            max_output_bytes: default_plugin_output(),
            reuse: default_plugin_reuse(),
        }
    }
}

fn default_plugin_timeout() -> Duration {
    Duration::from_millis(100)
}
fn default_plugin_memory() -> usize {
    16 << 20
}
fn default_plugin_fuel() -> u64 {
    500_000_000
}
fn default_plugin_instances() -> u32 {
    64
}
fn default_plugin_output() -> usize {
    4 << 20
}
fn default_plugin_reuse() -> u32 {
    1000
}
/// The range of `plugins.reuse`: an instance is recycled at least every million calls, so
/// a plugin that leaks slowly is started afresh long before its memory cap.
const PLUGIN_REUSE: std::ops::RangeInclusive<u32> = 1..=1_000_000;

/// `keys`: the RSA key store for JWT client assertions, in `data_dir/keys/`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// How long a key replaced by `hookgate keys rotate` stays in the JWKS (and may still
    /// sign), so partners can switch. Default 7d.
    #[serde(default = "default_grace", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub grace: Duration,
}

impl Default for Keys {
    fn default() -> Self {
        Self { grace: default_grace() }
    }
}

fn default_grace() -> Duration {
    Duration::from_secs(7 * 86_400)
}

/// `queue`: `memory`, `sqlite` or a `postgres://` URL (which may hold a password, so it is
/// kept as a [`Secret`]).
#[derive(Debug, Clone, Default)]
pub enum QueueBackend {
    /// In-process queue: fast, lost on restart.
    Memory,
    /// SQLite in `data_dir`: durable, one instance.
    #[default]
    Sqlite,
    /// PostgreSQL: durable, shared by several instances.
    Postgres(Secret),
}

impl QueueBackend {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

impl std::str::FromStr for QueueBackend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "memory" => Ok(Self::Memory),
            "sqlite" => Ok(Self::Sqlite),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres(Secret::new(url)))
            }
            _ => Err("`queue` must be `sqlite`, `memory`, or a `postgres://` URL".into()),
        }
    }
}

impl JsonSchema for QueueBackend {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "QueueBackend".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                {"enum": ["sqlite", "memory"]},
                {"type": "string", "pattern": "^\\s*postgres(ql)?://"},
            ],
            "default": "sqlite",
        })
    }
}

impl<'de> Deserialize<'de> for QueueBackend {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The most `retries` a template (or `defaults.retries`) may ask for.
pub const MAX_RETRIES: u32 = 20;
/// The longest per-attempt `timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest `batch_size`.
pub const MAX_BATCH: usize = 100_000;

/// `defaults`: what a template gets for a key it does not set.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateDefaults {
    /// Per-attempt timeout. Default 5s (the reference document's FAQ).
    #[serde(default = "default_timeout", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub timeout: Duration,
    /// Retries after the first attempt. Default 2 (the reference document's FAQ).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Profiles per outgoing request. Default 100.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Send the test payload on load and activate only on a 2xx answer. Default true.
    #[serde(default = "default_true")]
    pub verify: bool,
}

/// `backoff`: attempt n waits about `base * 2^(n-1)`, at most `max`, with jitter.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Default 1s.
    #[serde(default = "default_backoff_base", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub base: Duration,
    /// Default 5m.
    #[serde(default = "default_backoff_max", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub max: Duration,
    /// The longest `Retry-After` that is honoured as given; longer ones are cut to this. Default 1h.
    #[serde(default = "default_max_retry_after", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub max_retry_after: Duration,
}

/// `reload`: how template file changes are picked up.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    /// Changes within this window are one reload (an editor's save is several events). Default 200ms.
    #[serde(default = "default_debounce", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub debounce: Duration,
    /// A full rescan runs this often even without file events, and templates that failed
    /// verification are verified again. Default 30s.
    #[serde(default = "default_rescan", deserialize_with = "duration::deserialize")]
    #[schemars(with = "duration::Text")]
    pub rescan: Duration,
}

/// `limits`: bounds that protect memory.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted dispatch payload, in bytes. Default 64 MiB.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// Finished dispatch records kept for `GET /v1/dispatches/{id}`. Default 10000.
    #[serde(default = "default_max_records")]
    pub dispatch_records: usize,
    /// Largest total of the request bodies one dispatch becomes (its profiles in batches,
    /// each with the rest of the payload, or the requests a transform plans), in bytes. A
    /// dispatch past it is refused (413) before anything is stored. Default 256 MiB.
    #[serde(default = "default_max_dispatch_bytes")]
    pub max_dispatch_bytes: u64,
    /// Most requests one dispatch becomes; past it the dispatch is refused (413) before
    /// anything is stored. Default 100000.
    #[serde(default = "default_max_dispatch_requests")]
    pub max_dispatch_requests: usize,
    /// Request bodies accepted and not yet finished (delivered or failed), across all
    /// dispatches, in bytes, restored ones included. When a dispatch would pass it, it is
    /// answered 503 with `Retry-After`. Counted per gateway instance (with PostgreSQL, each
    /// instance counts what it accepted and what it finished). Default 1 GiB.
    #[serde(default = "default_max_pending_bytes")]
    pub max_pending_bytes: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_workers() -> usize {
    64
}
fn default_log() -> String {
    "info".into()
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> u32 {
    2
}
fn default_batch_size() -> usize {
    100
}
fn default_true() -> bool {
    true
}
fn default_backoff_base() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(300)
}
fn default_max_retry_after() -> Duration {
    Duration::from_secs(3600)
}
fn default_debounce() -> Duration {
    Duration::from_millis(200)
}
fn default_rescan() -> Duration {
    Duration::from_secs(30)
}
fn default_max_payload() -> usize {
    64 << 20
}
fn default_max_records() -> usize {
    10_000
}
fn default_max_dispatch_bytes() -> u64 {
    256 << 20
}
fn default_max_dispatch_requests() -> usize {
    100_000
}
fn default_max_pending_bytes() -> u64 {
    1 << 30
}
fn default_retention() -> Duration {
    Duration::from_secs(7 * 86_400)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_queue_lease() -> Duration {
    Duration::from_secs(30)
}
fn default_queue_poll() -> Duration {
    Duration::from_secs(60)
}

impl Default for TemplateDefaults {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            retries: default_retries(),
            batch_size: default_batch_size(),
            verify: default_true(),
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: default_backoff_base(), max: default_backoff_max(), max_retry_after: default_max_retry_after() }
    }
}

impl Default for Reload {
    fn default() -> Self {
        Self { debounce: default_debounce(), rescan: default_rescan() }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: default_max_payload(),
            dispatch_records: default_max_records(),
            max_dispatch_bytes: default_max_dispatch_bytes(),
            max_dispatch_requests: default_max_dispatch_requests(),
            max_pending_bytes: default_max_pending_bytes(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            admin_token: None,
            data_dir: default_data_dir(),
            queue: QueueBackend::default(),
            retention: default_retention(),
            shutdown_grace: default_shutdown_grace(),
            queue_lease: default_queue_lease(),
            queue_poll: default_queue_poll(),
            workers: default_workers(),
            log: default_log(),
            log_format: LogFormat::default(),
            defaults: TemplateDefaults::default(),
            backoff: Backoff::default(),
            network: NetworkPolicy::default(),
            reload: Reload::default(),
            limits: Limits::default(),
            keys: Keys::default(),
            plugins: PluginLimits::default(),
            destinations: Destinations::default(),
            secrets: Default::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// A loaded config together with where it came from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config folder (`--config`).
    pub dir: PathBuf,
    pub config: Config,
}

impl Settings {
    /// Where templates' file references may read: the config folder, `secrets`, never
    /// `data_dir`.
    pub fn confinement(&self) -> crate::template::refs::Confinement {
        crate::template::refs::Confinement::new(&self.dir, &self.data_dir(), &self.config.secrets)
    }

    /// Loads `DIR/hookgate.yaml` (absent means all defaults), then `HOOKGATE_*` variables on top
    /// (`HOOKGATE_LISTEN`, `HOOKGATE_DEFAULTS__TIMEOUT`: `__` separates nested keys).
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let file = dir.join("hookgate.yaml");
        let keys = top_level_keys();
        let env = Env::prefixed("HOOKGATE_").split("__").filter(move |key| {
            let top = key.as_str().split('.').next().unwrap_or_default();
            keys.iter().any(|k| k.eq_ignore_ascii_case(top))
        });
        let figment = Figment::new().merge(Yaml::file(&file)).merge(env);
        let config: Config = figment.extract().map_err(|e| {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let errors: Vec<String> = e.into_iter().map(|e| describe_figment_error(&file, &text, e)).collect();
            ConfigError(errors.join("\n"))
        })?;
        // Every value in its range, once, here: nothing later re-checks or can panic on one.
        let problems = config.problems();
        if !problems.is_empty() {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let errors: Vec<String> = problems
                .into_iter()
                .map(|(path, message)| {
                    let from_env =
                        figment.find_metadata(&path.join(".")).is_some_and(|m| m.name.contains("environment"));
                    if from_env {
                        format!("environment variable {}: {message}", env_name(&path))
                    } else {
                        let (line, column) = crate::yaml::locate(&text, &path);
                        format!("{}:{line}:{column}: {message}", file.display())
                    }
                })
                .collect();
            return Err(ConfigError(errors.join("\n")));
        }
        Ok(Self { dir: dir.to_path_buf(), config })
    }

    /// Settings with every default, rooted at `dir` (tests, `hookgate catch`).
    pub fn defaults(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf(), config: Config::default() }
    }

    pub fn templates_dir(&self) -> PathBuf {
        self.dir.join("templates")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(&self.config.data_dir)
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// Where compiled plugins are cached.
    pub fn plugin_cache_dir(&self) -> PathBuf {
        self.data_dir().join("plugin-cache")
    }

    /// The SQLite database of the default queue.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir().join("hookgate.db")
    }

    /// Where the signing keys live.
    pub fn keys_dir(&self) -> PathBuf {
        self.data_dir().join("keys")
    }
}

/// The `HOOKGATE_*` variable that sets the key at `path` (`HOOKGATE_DEFAULTS__TIMEOUT`).
fn env_name(path: &[&str]) -> String {
    format!("HOOKGATE_{}", path.join("__").to_ascii_uppercase())
}

// ---------------------------------------------------------------- ranges, checked once at load

const MAX_WORKERS: usize = 10_000;
const MAX_CONCURRENCY: usize = 100_000;
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// Collects what is out of range, as (key path, message).
#[derive(Default)]
struct Problems(Vec<(Vec<&'static str>, String)>);

impl Problems {
    fn add(&mut self, path: &[&'static str], message: String) {
        self.0.push((path.to_vec(), message));
    }

    fn count<T: PartialOrd + std::fmt::Display>(&mut self, path: &[&'static str], value: T, min: T, max: T) {
        if value < min || value > max {
            self.add(path, format!("`{}` must be between {min} and {max}", path.join(".")));
        }
    }

    fn bytes(&mut self, path: &[&'static str], value: u64, min: u64, max: u64) {
        if value < min || value > max {
            let (min, max) = (bytes_text(min), bytes_text(max));
            self.add(path, format!("`{}` must be between {min} and {max} (a number of bytes)", path.join(".")));
        }
    }

    fn duration(&mut self, path: &[&'static str], value: Duration, min: Duration, max: Duration) {
        if value < min || value > max {
            let (min, max) = (duration::format_duration(min), duration::format_duration(max));
            self.add(path, format!("`{}` must be between {min} and {max}", path.join(".")));
        }
    }
}

/// `1024` as `1024 (1 KiB)`, for messages about byte limits.
pub fn bytes_text(n: u64) -> String {
    let unit =
        [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")].into_iter().find(|(size, _)| n >= *size && n.is_multiple_of(*size));
    match unit {
        Some((size, name)) => format!("{n} ({} {name})", n / size),
        None => n.to_string(),
    }
}

impl Config {
    /// Every value that is out of its range, with the key's path and why.
    fn problems(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut p = Problems::default();
        if self.data_dir.as_os_str().is_empty() {
            p.add(&["data_dir"], "`data_dir` must not be empty".into());
        }
        p.duration(&["retention"], self.retention, Duration::from_secs(1), days(3650));
        p.duration(&["shutdown_grace"], self.shutdown_grace, Duration::ZERO, Duration::from_secs(3600));
        p.duration(&["queue_lease"], self.queue_lease, Duration::from_secs(1), Duration::from_secs(3600));
        p.duration(&["queue_poll"], self.queue_poll, Duration::from_millis(10), Duration::from_secs(86400));
        p.count(&["workers"], self.workers, 1, MAX_WORKERS);

        let d = &self.defaults;
        p.duration(&["defaults", "timeout"], d.timeout, ms(1), MAX_TIMEOUT);
        p.count(&["defaults", "retries"], d.retries, 0, MAX_RETRIES);
        p.count(&["defaults", "batch_size"], d.batch_size, 1, MAX_BATCH);

        let b = &self.backoff;
        p.duration(&["backoff", "base"], b.base, ms(1), Duration::from_secs(3600));
        p.duration(&["backoff", "max"], b.max, ms(1), days(1));
        if b.max < b.base {
            p.add(&["backoff", "max"], "`backoff.max` must be at least `backoff.base`".into());
        }
        p.duration(&["backoff", "max_retry_after"], b.max_retry_after, Duration::ZERO, days(7));

        p.duration(&["reload", "debounce"], self.reload.debounce, Duration::ZERO, Duration::from_secs(60));
        p.duration(&["reload", "rescan"], self.reload.rescan, ms(100), days(1));

        let l = &self.limits;
        p.bytes(&["limits", "max_payload_bytes"], l.max_payload_bytes as u64, KIB, GIB);
        p.count(&["limits", "dispatch_records"], l.dispatch_records, 1, 10_000_000);
        p.bytes(&["limits", "max_dispatch_bytes"], l.max_dispatch_bytes, KIB, 64 * GIB);
        p.count(&["limits", "max_dispatch_requests"], l.max_dispatch_requests, 1, 10_000_000);
        p.bytes(&["limits", "max_pending_bytes"], l.max_pending_bytes, KIB, 1024 * GIB);
        if l.max_dispatch_bytes > l.max_pending_bytes {
            p.add(
                &["limits", "max_dispatch_bytes"],
                "`limits.max_dispatch_bytes` must not be more than `limits.max_pending_bytes` (such a dispatch could never be accepted)".into(),
            );
        }

        p.duration(&["keys", "grace"], self.keys.grace, Duration::ZERO, days(365));

        let pl = &self.plugins;
        p.duration(&["plugins", "timeout"], pl.timeout, ms(1), Duration::from_secs(60));
        p.bytes(&["plugins", "memory_bytes"], pl.memory_bytes as u64, 64 * KIB, GIB);
        p.count(&["plugins", "fuel"], pl.fuel, 1, 1_000_000_000_000);
        p.count(&["plugins", "max_instances"], pl.max_instances, 1, 1024);
        p.count(&["plugins", "reuse"], pl.reuse, *PLUGIN_REUSE.start(), *PLUGIN_REUSE.end());
        p.bytes(&["plugins", "max_output_bytes"], pl.max_output_bytes as u64, KIB, GIB);

        let ds = &self.destinations;
        p.count(&["destinations", "max_concurrency"], ds.max_concurrency, 1, MAX_CONCURRENCY);
        let rate = ds.rate_limit;
        if !(rate == 0.0 || (MIN_RATE_LIMIT..=MAX_RATE_LIMIT).contains(&rate)) {
            p.add(
                &["destinations", "rate_limit"],
                format!(
                    "`destinations.rate_limit` must be 0 (no limit) or between {MIN_RATE_LIMIT} and {MAX_RATE_LIMIT} requests per second"
                ),
            );
        }
        p.0
    }
}

/// One figment error as `file:line:col: `key`: what`, the line and column being where the key
/// is written in `text` (the file's contents), or as `environment variable HOOKGATE_KEY: ...`.
fn describe_figment_error(file: &Path, text: &str, e: figment::Error) -> String {
    // figment prints the failing value for some errors; config values can be secrets
    // (admin_token), so only the kind of error is shown.
    let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
    let kind = match &e.kind {
        figment::error::Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
        figment::error::Kind::InvalidValue(_, expected) => format!("invalid value, expected {expected}"),
        figment::error::Kind::UnknownField(field, expected) => {
            let known: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
            let hint = crate::yaml::nearest(field, expected).map(|k| format!("; did you mean `{k}`?"));
            format!("unknown key, expected one of {}{}", known.join(", "), hint.unwrap_or_default())
        }
        other => other.to_string(),
    };
    let key = if e.path.is_empty() { String::new() } else { format!("`{}`: ", e.path.join(".")) };
    match &e.metadata {
        Some(m) if m.name.contains("environment") => format!("environment variable {}: {key}{kind}", env_name(&path)),
        // A YAML syntax error says where it is itself: "... at line 2, column 11".
        _ if path.is_empty() => match yaml_error_position(&kind) {
            Some((message, line, column)) => format!("{}:{line}:{column}: {message}", file.display()),
            None => format!("{}: {kind}", file.display()),
        },
        _ => {
            let (line, column) = crate::yaml::locate(text, &path);
            format!("{}:{line}:{column}: {key}{kind}", file.display())
        }
    }
}

/// The message and the 1-based position of a YAML parser's "... at line L, column C..." text.
fn yaml_error_position(text: &str) -> Option<(String, usize, usize)> {
    let (message, rest) = text.split_once(" at line ")?;
    let (line, rest) = rest.split_once(" column ")?;
    let line = line.trim_end_matches(',');
    let column = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    let after = rest[column.len()..].trim_start_matches(',').trim();
    let message = if after.is_empty() { message.to_string() } else { format!("{message}, {after}") };
    Some((message, line.parse().ok()?, column.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One `HOOKGATE_*` variable for every top-level section of hookgate.yaml.
    const ENV_OVERRIDES: &[(&str, &str)] = &[
        ("HOOKGATE_LISTEN", "127.0.0.1:9191"),
        ("HOOKGATE_ADMIN_TOKEN", "token-from-the-environment"),
        ("HOOKGATE_DATA_DIR", "state-from-env"),
        ("HOOKGATE_QUEUE", "memory"),
        ("HOOKGATE_WORKERS", "3"),
        ("HOOKGATE_LOG", "debug"),
        ("HOOKGATE_LOG_FORMAT", "json"),
        ("HOOKGATE_DEFAULTS__TIMEOUT", "7s"),
        ("HOOKGATE_BACKOFF__BASE", "2s"),
        ("HOOKGATE_NETWORK__HTTPS_ONLY", "true"),
        ("HOOKGATE_RELOAD__RESCAN", "45s"),
        ("HOOKGATE_LIMITS__DISPATCH_RECORDS", "1234"),
        ("HOOKGATE_RETENTION", "2d"),
        ("HOOKGATE_SHUTDOWN_GRACE", "3s"),
        ("HOOKGATE_QUEUE_LEASE", "40s"),
        ("HOOKGATE_QUEUE_POLL", "45s"),
        ("HOOKGATE_KEYS__GRACE", "1d"),
        ("HOOKGATE_PLUGINS__FUEL", "12345"),
        ("HOOKGATE_DESTINATIONS__MAX_CONCURRENCY", "5"),
        ("HOOKGATE_SECRETS__DIR", "secrets-from-env"),
    ];

    #[test]
    fn the_environment_filter_knows_every_section() {
        let keys = top_level_keys();
        for key in ["listen", "admin_token", "queue", "keys", "plugins", "destinations", "secrets", "limits"] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        // Every section has a variable in ENV_OVERRIDES, so a new one is tested below too.
        for key in keys {
            let var = env_name(&[key]);
            let set = ENV_OVERRIDES.iter().any(|(v, _)| *v == var || v.starts_with(&format!("{var}__")));
            assert!(set, "no variable in ENV_OVERRIDES sets `{key}`");
        }
    }

    /// Every top-level section can be set through `HOOKGATE_*`. The environment is the
    /// process's, so the variables are set on a run of this test binary that loads the
    /// settings and checks each value ([`env_overrides_are_applied`]).
    #[test]
    fn every_section_can_be_set_through_the_environment() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["config::tests::env_overrides_are_applied", "--exact", "--ignored", "--test-threads=1"])
            .envs(ENV_OVERRIDES.iter().copied())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the check did not run: {text}");
    }

    #[test]
    #[ignore = "run by every_section_can_be_set_through_the_environment, with ENV_OVERRIDES set"]
    fn env_overrides_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let c = Settings::load(dir.path()).unwrap().config;
        assert_eq!(c.listen, "127.0.0.1:9191".parse().unwrap());
        assert_eq!(c.admin_token.as_ref().map(|t| t.expose()), Some("token-from-the-environment"));
        assert_eq!(c.data_dir, Path::new("state-from-env"));
        assert_eq!(c.queue.name(), "memory");
        assert_eq!(c.workers, 3);
        assert_eq!(c.log, "debug");
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.defaults.timeout, Duration::from_secs(7));
        assert_eq!(c.backoff.base, Duration::from_secs(2));
        assert!(c.network.https_only);
        assert_eq!(c.reload.rescan, Duration::from_secs(45));
        assert_eq!(c.limits.dispatch_records, 1234);
        assert_eq!(c.retention, days(2));
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        assert_eq!(c.queue_lease, Duration::from_secs(40));
        assert_eq!(c.queue_poll, Duration::from_secs(45));
        assert_eq!(c.keys.grace, days(1));
        assert_eq!(c.plugins.fuel, 12345);
        assert_eq!(c.destinations.max_concurrency, 5);
        assert_eq!(c.secrets.dir.as_deref(), Some(Path::new("secrets-from-env")));
    }

    #[test]
    fn empty_folder_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings::load(dir.path()).unwrap();
        assert_eq!(s.config.listen, default_listen());
        assert_eq!(s.config.defaults.timeout, Duration::from_secs(5));
        assert_eq!(s.config.defaults.retries, 2);
        assert!(s.config.defaults.verify);
    }

    #[test]
    fn file_values_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("hookgate.yaml"),
            "listen: 127.0.0.1:9999\ndefaults:\n  timeout: 300ms\nnetwork:\n  allow: [loopback]\n",
        )
        .unwrap();
        let s = Settings::load(dir.path()).unwrap();
        assert_eq!(s.config.listen.port(), 9999);
        assert_eq!(s.config.defaults.timeout, Duration::from_millis(300));
        assert!(s.config.network.check("127.0.0.1".parse().unwrap()).is_ok());

        std::fs::write(dir.path().join("hookgate.yaml"), "listn: 1\n").unwrap();
        let err = Settings::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
    }

    /// Errors in hookgate.yaml point at the line and column of the key, and a misspelt key
    /// gets the one it was meant to be.
    #[test]
    fn file_errors_name_the_line_of_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.yaml");
        let load = |yaml: &str| {
            std::fs::write(&file, yaml).unwrap();
            Settings::load(dir.path()).unwrap_err().to_string()
        };
        let at = |line_col: &str| format!("{}:{line_col}: ", file.display());

        let err = load("listen: 127.0.0.1:9999\ndefaults:\n  retries: 2\n  timeout: [1, 2]\n");
        assert!(err.starts_with(&at("4:3")), "{err}");
        assert!(err.contains("`defaults.timeout`: "), "{err}");

        let err = load("# the gateway\nlisten: 127.0.0.1:9999\nworkrs: 4\n");
        assert!(err.starts_with(&at("3:1")), "{err}");
        assert!(err.contains("`workrs`: unknown key, expected one of `listen`, "), "{err}");
        assert!(err.ends_with("; did you mean `workers`?"), "{err}");

        // A syntax error: the parser says where.
        let err = load("listen: 127.0.0.1:9999\nworkers: 4: 5\n");
        assert_eq!(err, format!("{}mapping values are not allowed in this context", at("2:11")));

        let err = load("defaults:\n  timeout: 1s\n  batch_size: 0\n");
        assert_eq!(err, format!("{}`defaults.batch_size` must be between 1 and 100000", at("3:3")));
    }

    /// Values that panicked (a duration past `Duration`, a tiny or NaN rate) or made no
    /// sense are refused at load, each with the line and column of its key; none panics.
    #[test]
    fn extreme_values_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.yaml");
        let load = |yaml: &str| {
            std::fs::write(&file, yaml).unwrap();
            Settings::load(dir.path()).map(|_| ()).unwrap_err().to_string()
        };
        let cases = [
            ("log: info\ndefaults:\n  timeout: 99999999999999999999d\n", "3:3", "at most 36500d"),
            ("defaults:\n  timeout: 10m\n", "2:3", "`defaults.timeout` must be between 1ms and 5m"),
            ("defaults:\n  retries: 4000000000\n", "2:3", "`defaults.retries` must be between 0 and 20"),
            (
                "destinations:\n  rate_limit: 1e-300\n",
                "2:3",
                "`destinations.rate_limit` must be 0 (no limit) or between",
            ),
            ("destinations:\n  rate_limit: .nan\n", "2:3", "`destinations.rate_limit`"),
            ("destinations:\n  rate_limit: -5\n", "2:3", "`destinations.rate_limit`"),
            ("destinations:\n  rate_limit: .inf\n", "2:3", "`destinations.rate_limit`"),
            ("destinations:\n  max_concurrency: 0\n", "2:3", "`destinations.max_concurrency`"),
            ("workers: 0\n", "1:1", "`workers` must be between 1 and 10000"),
            ("workers: 18446744073709551615\n", "1:1", "`workers` must be between 1 and 10000"),
            ("workers: 99999999999999999999999\n", "1:1", "`workers`"),
            ("retention: 0s\n", "1:1", "`retention` must be between 1s and 3650d"),
            ("queue_lease: 0ms\n", "1:1", "`queue_lease`"),
            ("queue_poll: 1ms\n", "1:1", "`queue_poll` must be between 10ms"),
            ("shutdown_grace: 36500d\n", "1:1", "`shutdown_grace`"),
            ("reload:\n  rescan: 0s\n", "2:3", "`reload.rescan` must be between 100ms"),
            ("backoff:\n  base: 2m\n  max: 1m\n", "3:3", "`backoff.max` must be at least `backoff.base`"),
            ("backoff:\n  base: 0s\n", "2:3", "`backoff.base`"),
            ("keys:\n  grace: 3650d\n", "2:3", "`keys.grace`"),
            ("limits:\n  max_payload_bytes: 0\n", "2:3", "`limits.max_payload_bytes` must be between 1024 (1 KiB)"),
            ("limits:\n  dispatch_records: 0\n", "2:3", "`limits.dispatch_records`"),
            ("limits:\n  max_dispatch_requests: 0\n", "2:3", "`limits.max_dispatch_requests`"),
            ("limits:\n  max_pending_bytes: 2048\n", "1:1", "`limits.max_dispatch_bytes` must not be more than"),
            ("limits:\n  max_dispatch_bytes: 1\n", "2:3", "`limits.max_dispatch_bytes` must be between"),
            ("plugins:\n  max_instances: 4294967295\n", "2:3", "`plugins.max_instances` must be between 1 and 1024"),
            ("plugins:\n  memory_bytes: 0\n", "2:3", "`plugins.memory_bytes`"),
            ("plugins:\n  fuel: 0\n", "2:3", "`plugins.fuel`"),
            ("plugins:\n  timeout: 0s\n", "2:3", "`plugins.timeout`"),
            ("plugins:\n  max_output_bytes: 0\n", "2:3", "`plugins.max_output_bytes`"),
            ("data_dir: \"\"\n", "1:1", "`data_dir` must not be empty"),
        ];
        for (yaml, line_col, message) in cases {
            let err = load(yaml);
            assert!(err.starts_with(&format!("{}:{line_col}: ", file.display())), "{yaml:?}: {err}");
            assert!(err.contains(message), "{yaml:?}: {err}");
        }
        // Every problem is reported, not just the first.
        let err = load("workers: 0\nretention: 0s\n");
        assert_eq!(err.lines().count(), 2, "{err}");
        // The edges of the ranges are accepted.
        std::fs::write(
            &file,
            "workers: 10000\nretention: 1s\ndestinations:\n  rate_limit: 0.001\ndefaults:\n  timeout: 5m\n  retries: 0\n",
        )
        .unwrap();
        Settings::load(dir.path()).unwrap();

        for reuse in ["0", "1000001"] {
            let err = load(&format!("plugins:\n  timeout: 50ms\n  reuse: {reuse}\n"));
            assert_eq!(err, format!("{}:3:3: `plugins.reuse` must be between 1 and 1000000", file.display()));
        }
        for reuse in ["1", "1000000"] {
            std::fs::write(&file, format!("plugins:\n  reuse: {reuse}\n")).unwrap();
            assert_eq!(Settings::load(dir.path()).unwrap().config.plugins.reuse.to_string(), reuse);
        }
    }

    #[test]
    fn queue_backends_and_their_errors() {
        let dir = tempfile::tempdir().unwrap();
        let load = |yaml: &str| {
            std::fs::write(dir.path().join("hookgate.yaml"), yaml).unwrap();
            Settings::load(dir.path())
        };
        assert!(matches!(load("").unwrap().config.queue, QueueBackend::Sqlite), "durable by default");
        assert!(matches!(load("queue: memory\n").unwrap().config.queue, QueueBackend::Memory));
        let pg = load("queue: postgres://hg:s3cret@db.internal/hookgate\nqueue_lease: 5s\n").unwrap().config;
        let QueueBackend::Postgres(url) = &pg.queue else { panic!("a postgres URL") };
        assert_eq!(url.expose(), "postgres://hg:s3cret@db.internal/hookgate");
        assert!(!format!("{:?}", pg.queue).contains("s3cret"), "the URL's password stays out of Debug");
        assert_eq!(pg.queue_lease, Duration::from_secs(5));
        let err = load("queue: mysql://db/hookgate\n").unwrap_err().to_string();
        assert!(err.contains("`queue` must be `sqlite`, `memory`, or a `postgres://` URL"), "{err}");
        assert!(!err.contains("db/hookgate"), "the value (it may hold a password) is not repeated: {err}");
    }
}
