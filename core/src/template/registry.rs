//! The live set of templates: one immutable [`Snapshot`], swapped atomically on reload.
//!
//! Readers (dispatch, the API) clone an `Arc` of the snapshot and never wait on a reload.
//! Writers (rescan, verification, `PUT`) are serialized by one async mutex that is never
//! held across a network call: verification runs outside it and re-checks that its
//! candidate is still current before it promotes it.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::error::TemplateError;
use super::load::{Loader, validate_name};
use super::model::Template;
use super::refs::Provenance;
use crate::delivery::attempt::AttemptError;
use crate::delivery::client::Response;
use crate::delivery::verify::{send_test, verdict};
use crate::yaml::locate;

/// A template's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The latest version of the file is live.
    Active,
    /// The latest version loaded but has not passed verification (in progress, or failed
    /// with `reason`). An older version, if any, stays live meanwhile.
    Unverified { reason: String, since: SystemTime },
    /// The latest version of the file does not load. An older version, if any, stays live.
    Invalid { error: TemplateError },
}

impl State {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Unverified { .. } => "unverified",
            Self::Invalid { .. } => "invalid",
        }
    }
}

/// One template name and what is known about it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub file: PathBuf,
    /// The version deliveries use now.
    pub active: Option<Arc<Template>>,
    /// A newer version waiting for verification.
    pub candidate: Option<Arc<Template>>,
    pub state: State,
    pub updated_at: SystemTime,
}

impl Entry {
    fn new(name: &str, file: &Path) -> Self {
        Self {
            name: name.to_string(),
            file: file.to_path_buf(),
            active: None,
            candidate: None,
            state: State::Active,
            updated_at: SystemTime::now(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub entries: BTreeMap<String, Entry>,
    /// The first scan of the folder has finished.
    pub loaded: bool,
}

/// The result of looking a template up for a dispatch.
pub enum Lookup {
    Active(Arc<Template>),
    Inactive(String),
    Unknown,
}

/// What a rescan found.
#[derive(Debug, Default)]
pub struct ReloadReport {
    pub loaded: Vec<String>,
    pub removed: Vec<String>,
    pub errors: Vec<TemplateError>,
}

/// Why `PUT /v1/templates/{name}` refused a template.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("{0}")]
    Invalid(TemplateError),
    #[error("{0}")]
    Verification(String),
    #[error("{0}")]
    Conflict(String),
    #[error("cannot write the template file: {0}")]
    Io(std::io::Error),
}

/// The last time a template's test payload was sent (on load, by a rescan, or on request),
/// and what came back.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LastTest {
    /// The template version that was tested.
    pub version: u64,
    /// When (RFC 3339).
    pub at: String,
    /// A 2xx came back.
    pub ok: bool,
    /// The answer's HTTP status, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `200 OK`, or why the test failed (redacted, one line).
    pub answer: String,
    /// Milliseconds to the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

impl LastTest {
    fn of(template: &Template, outcome: &Result<Response, AttemptError>) -> Self {
        let at = crate::clock::rfc3339(SystemTime::now());
        match outcome {
            Ok(r) => Self {
                version: template.version,
                at,
                ok: r.status.is_success(),
                status: Some(r.status.as_u16()),
                answer: crate::delivery::retry::status_reason(r.status),
                latency_ms: Some(crate::duration::millis(r.latency)),
            },
            Err(e) => Self {
                version: template.version,
                at,
                ok: false,
                status: None,
                answer: crate::redact::sanitize(&e.to_string(), crate::redact::REASON_CHARS),
                latency_ms: None,
            },
        }
    }
}

struct FileState {
    text_hash: u64,
    name: String,
}

pub struct Registry {
    loader: Loader,
    dir: PathBuf,
    snapshot: RwLock<Arc<Snapshot>>,
    writer: tokio::sync::Mutex<HashMap<PathBuf, FileState>>,
    versions: AtomicU64,
    /// Verify templates with `verify: true` before activating them.
    verify_on_load: bool,
    /// How long after a failed verification it is tried again (by a rescan).
    reverify_after: Duration,
    reload_errors: AtomicU64,
    rescans: AtomicU64,
    /// The last test of each template name.
    last_tests: RwLock<HashMap<String, LastTest>>,
}

impl Registry {
    pub fn new(loader: Loader, dir: PathBuf, verify_on_load: bool, reverify_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            loader,
            dir,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            writer: tokio::sync::Mutex::new(HashMap::new()),
            versions: AtomicU64::new(0),
            verify_on_load,
            reverify_after,
            reload_errors: AtomicU64::new(0),
            rescans: AtomicU64::new(0),
            last_tests: RwLock::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn loader(&self) -> &Loader {
        &self.loader
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn publish(&self, snapshot: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    /// Rescans of the folder since start (file events and the periodic one).
    pub fn rescans(&self) -> u64 {
        self.rescans.load(Ordering::Relaxed)
    }

    /// Reloads that failed to parse or validate, since start.
    pub fn reload_errors(&self) -> u64 {
        self.reload_errors.load(Ordering::Relaxed)
    }

    /// The last test payload sent through template `name` and its answer, if one was sent
    /// since start.
    pub fn last_test(&self, name: &str) -> Option<LastTest> {
        self.last_tests.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Sends the test payload through `template` and remembers the answer.
    async fn send_test(&self, template: &Template) -> Result<Response, AttemptError> {
        let outcome = send_test(&self.loader.client, template).await;
        let last = LastTest::of(template, &outcome);
        self.last_tests.write().unwrap_or_else(|e| e.into_inner()).insert(template.name.clone(), last);
        outcome
    }

    pub fn lookup(&self, name: &str) -> Lookup {
        let snapshot = self.snapshot();
        match snapshot.entries.get(name) {
            None => Lookup::Unknown,
            Some(Entry { active: Some(t), .. }) => Lookup::Active(t.clone()),
            Some(entry) => Lookup::Inactive(match &entry.state {
                State::Unverified { reason, .. } => reason.clone(),
                State::Invalid { error } => error.to_string(),
                State::Active => "no version is loaded".into(),
            }),
        }
    }

    /// The version of a template that requests accepted earlier are sent with: the active
    /// one, or the one waiting for verification.
    pub fn current(&self, name: &str) -> Option<Arc<Template>> {
        let entry = self.snapshot().entries.get(name).cloned()?;
        entry.active.or(entry.candidate)
    }

    fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Reads the folder and applies what changed: new and edited files are loaded (and
    /// verified in the background), deleted files are removed, files that fail keep their
    /// last good version live. Failed verifications older than `reverify_after` are retried.
    pub async fn rescan(self: &Arc<Self>) -> ReloadReport {
        let files = scan_dir(&self.dir);
        let mut report = ReloadReport::default();
        let mut to_verify = Vec::new();
        let mut known = self.writer.lock().await;
        let mut snap = (*self.snapshot()).clone();
        let now = SystemTime::now();

        // Versions live before this scan, by name: a file renamed (or a ConfigMap swapped)
        // with the same content and secrets stays active without a new verification.
        let was_live: HashMap<String, Arc<Template>> =
            snap.entries.values().filter_map(|e| e.active.clone().map(|t| (e.name.clone(), t))).collect();
        let present: HashSet<&PathBuf> = files.iter().map(|(p, _)| p).collect();
        let gone: Vec<PathBuf> = known.keys().filter(|p| !present.contains(p)).cloned().collect();
        for path in gone {
            if let Some(state) = known.remove(&path)
                && snap.entries.get(&state.name).is_some_and(|e| e.file == path)
            {
                snap.entries.remove(&state.name);
                info!(template = %state.name, file = %path.display(), "template removed");
                report.removed.push(state.name);
            }
        }

        for (path, text) in &files {
            let text = match text {
                Ok(text) => text,
                Err(e) => {
                    let error = TemplateError::new(path, (1, 1), format!("cannot read the file: {e}"));
                    self.record_error(&mut snap, &mut known, path, 0, error, &mut report);
                    continue;
                }
            };
            let text_hash = hash_text(text);
            let same_text = known.get(path).is_some_and(|f| f.text_hash == text_hash);
            // A file with `${env:..}`/`${file:..}` references is loaded again even when its
            // text is the same: a mounted secret file may have changed. It only becomes a new
            // version if what it resolves to changed.
            if same_text && !text.contains("${") {
                continue;
            }
            // A panic while loading one file (a bug, in the loader or a plugin's `build`) makes
            // that file invalid, not the whole reload.
            let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.loader.load(path, text)));
            let loaded = loaded.unwrap_or_else(|panic| Err(TemplateError::new(path, (1, 1), panicked(&*panic))));
            let loaded = loaded.and_then(|t| match snap.entries.get(&t.name) {
                Some(other) if other.file != *path && present.contains(&other.file) => Err(TemplateError::new(
                    path,
                    locate(text, &["name"]),
                    format!("template name `{}` is already used by {}", t.name, other.file.display()),
                )),
                _ => Ok(t),
            });
            if same_text {
                let current = known.get(path).and_then(|f| snap.entries.get(&f.name));
                let unchanged = match (&loaded, current) {
                    (Ok(t), Some(entry)) => {
                        entry.candidate.as_ref().or(entry.active.as_ref()).is_some_and(|v| v.digest == t.digest)
                            && !matches!(entry.state, State::Invalid { .. })
                    }
                    (Err(e), Some(entry)) => matches!(&entry.state, State::Invalid { error } if error == e),
                    _ => false,
                };
                if unchanged {
                    continue;
                }
            }
            match loaded {
                Ok(mut template) => {
                    template.version = self.next_version();
                    let template = Arc::new(template);
                    let name = template.name.clone();
                    if let Some(previous) = known.get(path).map(|f| f.name.clone())
                        && previous != name
                        && snap.entries.get(&previous).is_some_and(|e| e.file == *path)
                    {
                        snap.entries.remove(&previous);
                        report.removed.push(previous);
                    }
                    let entry = snap.entries.entry(name.clone()).or_insert_with(|| Entry::new(&name, path));
                    entry.file = path.clone();
                    entry.updated_at = now;
                    let unchanged = was_live.get(&name).is_some_and(|live| live.digest == template.digest);
                    if unchanged {
                        entry.active = Some(template.clone());
                        entry.candidate = None;
                        entry.state = State::Active;
                        info!(template = %name, version = template.version, "template moved; same content, stays active");
                    } else if self.verify_on_load && template.verify {
                        entry.candidate = Some(template.clone());
                        entry.state = State::Unverified { reason: "verification in progress".into(), since: now };
                        to_verify.push(template.clone());
                        info!(template = %name, version = template.version, "template loaded; verifying");
                    } else {
                        entry.active = Some(template.clone());
                        entry.candidate = None;
                        entry.state = State::Active;
                        info!(template = %name, version = template.version, "template loaded and active");
                    }
                    known.insert(path.clone(), FileState { text_hash, name: name.clone() });
                    report.loaded.push(name);
                }
                Err(error) => self.record_error(&mut snap, &mut known, path, text_hash, error, &mut report),
            }
        }

        for entry in snap.entries.values() {
            if let (Some(candidate), State::Unverified { since, .. }) = (&entry.candidate, &entry.state) {
                let due = since.checked_add(self.reverify_after).is_some_and(|t| t <= now);
                if due && !to_verify.iter().any(|t| Arc::ptr_eq(t, candidate)) {
                    to_verify.push(candidate.clone());
                }
            }
        }
        snap.loaded = true;
        self.publish(snap);
        self.rescans.fetch_add(1, Ordering::Relaxed);
        drop(known);

        for template in to_verify {
            let registry = self.clone();
            tokio::spawn(async move {
                let result = verdict(&registry.send_test(&template).await);
                registry.conclude_verification(&template, result).await;
            });
        }
        report
    }

    /// Loads again the files whose latest version did not load (a plugin they name may
    /// have appeared since), then rescans.
    pub async fn retry_invalid(self: &Arc<Self>) -> ReloadReport {
        {
            let mut known = self.writer.lock().await;
            let snapshot = self.snapshot();
            let invalid: Vec<PathBuf> = snapshot
                .entries
                .values()
                .filter(|e| matches!(e.state, State::Invalid { .. }))
                .map(|e| e.file.clone())
                .collect();
            known.retain(|path, _| !invalid.contains(path));
        }
        self.rescan().await
    }

    fn record_error(
        &self,
        snap: &mut Snapshot,
        known: &mut HashMap<PathBuf, FileState>,
        path: &Path,
        text_hash: u64,
        error: TemplateError,
        report: &mut ReloadReport,
    ) {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("template").to_string();
        let name = known.get(path).map(|f| f.name.clone()).unwrap_or(stem);
        self.reload_errors.fetch_add(1, Ordering::Relaxed);
        warn!("{error}");
        if validate_name(&name).is_ok() {
            let entry = snap.entries.entry(name.clone()).or_insert_with(|| Entry::new(&name, path));
            if entry.file == path {
                entry.candidate = None;
                entry.state = State::Invalid { error: error.clone() };
                entry.updated_at = SystemTime::now();
            }
        }
        known.insert(path.to_path_buf(), FileState { text_hash, name });
        report.errors.push(error);
    }

    /// Promotes `template` if it passed and is still the current candidate; records why not.
    async fn conclude_verification(&self, template: &Arc<Template>, result: Result<(), String>) {
        let _known = self.writer.lock().await;
        let mut snap = (*self.snapshot()).clone();
        let Some(entry) = snap.entries.get_mut(&template.name) else {
            return;
        };
        if !entry.candidate.as_ref().is_some_and(|c| Arc::ptr_eq(c, template)) {
            return;
        }
        entry.updated_at = SystemTime::now();
        match result {
            Ok(()) => {
                entry.active = Some(template.clone());
                entry.candidate = None;
                entry.state = State::Active;
                info!(template = %template.name, version = template.version, "template verified and active");
            }
            Err(reason) => {
                warn!(template = %template.name, version = template.version, "{reason}");
                entry.state = State::Unverified { reason, since: SystemTime::now() };
            }
        }
        self.publish(snap);
    }

    /// Sends the test payload to the template's newest version (the candidate if there is
    /// one). A candidate that gets a 2xx becomes active.
    pub async fn test(&self, name: &str) -> Option<(Arc<Template>, Result<Response, AttemptError>)> {
        let entry = self.snapshot().entries.get(name).cloned()?;
        let template = entry.candidate.clone().or(entry.active.clone())?;
        let outcome = self.send_test(&template).await;
        if entry.candidate.is_some() {
            let verdict = verdict(&outcome);
            self.conclude_verification(&template, verdict).await;
        }
        Some((template, outcome))
    }

    /// Creates or replaces `templates/NAME.yaml` (the reference document's "Create"):
    /// validates the text, verifies it when the template asks for it, then writes the file
    /// atomically and activates it. Nothing is written if any step fails.
    ///
    /// The template has the API's privileges ([`Provenance::Api`]): its references read only
    /// what `secrets.api` exposes, now and whenever the file is loaded again, because it is
    /// written with the API's marker as its first line. The file is readable by the
    /// gateway's user only (0600): its references may name secrets.
    pub async fn put(&self, name: &str, text: &str) -> Result<Arc<Template>, PutError> {
        validate_name(name).map_err(|m| PutError::Invalid(TemplateError::new(Path::new(name), (1, 1), m)))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let path = self.dir.join(format!("{name}.yaml"));
        let mut template = self.loader.load_api(&path, text).map_err(PutError::Invalid)?;
        if template.name != name {
            return Err(PutError::Conflict(format!(
                "the body names the template `{}` but the URL names `{name}`",
                template.name
            )));
        }
        if let Some(existing) = self.snapshot().entries.get(name)
            && existing.file != path
        {
            return Err(PutError::Conflict(format!(
                "template `{name}` is defined in {}; edit that file instead",
                existing.file.display()
            )));
        }
        if self.verify_on_load && template.verify {
            verdict(&self.send_test(&template).await).map_err(PutError::Verification)?;
        }
        let file_text = Provenance::api_file_text(text);
        let mut known = self.writer.lock().await;
        std::fs::create_dir_all(&self.dir).map_err(PutError::Io)?;
        let tmp = self.dir.join(format!(".{name}.yaml.tmp-{}", std::process::id()));
        write_private(&tmp, &file_text).and_then(|()| std::fs::rename(&tmp, &path)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            PutError::Io(e)
        })?;
        template.version = self.next_version();
        // It was tested before it had a version.
        if let Some(last) = self.last_tests.write().unwrap_or_else(|e| e.into_inner()).get_mut(name) {
            last.version = template.version;
        }
        let template = Arc::new(template);
        let mut snap = (*self.snapshot()).clone();
        let entry = snap.entries.entry(name.to_string()).or_insert_with(|| Entry::new(name, &path));
        entry.active = Some(template.clone());
        entry.candidate = None;
        entry.state = State::Active;
        entry.updated_at = SystemTime::now();
        known.insert(path, FileState { text_hash: hash_text(&file_text), name: name.to_string() });
        self.publish(snap);
        info!(template = name, version = template.version, "template created through the API and active");
        Ok(template)
    }
}

/// The error of a file whose loading panicked.
fn panicked(panic: &(dyn std::any::Any + Send)) -> String {
    let message = (panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("loading this file failed unexpectedly ({message}); this is a bug, please report it")
}

/// Writes `text` to `path`, readable and writable by the gateway's user only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // A leftover file of the same name keeps its mode through `open`: set it again.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn hash_text(text: &str) -> u64 {
    let mut h = DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The template files of a folder (`*.yaml`, `*.yml`; see [`crate::watch::folder_files`])
/// with their text.
pub fn scan_dir(dir: &Path) -> Vec<(PathBuf, std::io::Result<String>)> {
    crate::watch::folder_files(dir, &["yaml", "yml"])
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p);
            (p, text)
        })
        .collect()
}
