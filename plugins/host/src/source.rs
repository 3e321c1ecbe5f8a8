//! The plugins folder (`config/plugins/*.wasm`): each file is a plugin named by its stem,
//! compiled once (or loaded from the compiled cache), hot-reloaded. A file that fails to
//! load keeps the last good version of that plugin live.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use hookgate_core::plugin::{AuthPlugin, PluginSource, PluginStatus, TransformPlugin};
use hookgate_core::template::load::validate_name;
use tracing::{info, warn};

use crate::adapter::WasmPlugin;
use crate::auth::WasmAuthPlugin;
use crate::engine::PluginEngine;
use crate::slot::PluginSlot;
use crate::transform::WasmTransformPlugin;

/// What a rescan did.
#[derive(Debug, Default)]
pub struct PluginReport {
    /// (name, loaded from the compiled cache)
    pub loaded: Vec<(String, bool)>,
    pub removed: Vec<String>,
    /// (file, why it did not load)
    pub errors: Vec<(PathBuf, String)>,
}

pub struct WasmPlugins {
    engine: Arc<PluginEngine>,
    dir: PathBuf,
    slots: RwLock<BTreeMap<String, Arc<PluginSlot>>>,
    /// The hash of each file as last seen, loaded or not.
    seen: tokio::sync::Mutex<HashMap<PathBuf, String>>,
    errors: Mutex<BTreeMap<String, String>>,
}

impl WasmPlugins {
    pub fn new(engine: Arc<PluginEngine>, dir: &Path) -> Arc<Self> {
        Arc::new(Self {
            engine,
            dir: dir.to_path_buf(),
            slots: RwLock::new(BTreeMap::new()),
            seen: tokio::sync::Mutex::new(HashMap::new()),
            errors: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn engine(&self) -> &Arc<PluginEngine> {
        &self.engine
    }

    pub fn slot(&self, name: &str) -> Option<Arc<PluginSlot>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Plugins whose latest file did not load, with why.
    pub fn errors(&self) -> BTreeMap<String, String> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads the folder and applies what changed.
    pub async fn rescan(&self) -> PluginReport {
        let mut report = PluginReport::default();
        let mut seen = self.seen.lock().await;
        let files = wasm_files(&self.dir);
        let gone: Vec<PathBuf> = seen.keys().filter(|p| !files.contains(p)).cloned().collect();
        for path in gone {
            seen.remove(&path);
            let name = stem(&path);
            if self.slots.write().unwrap_or_else(|e| e.into_inner()).remove(&name).is_some() {
                info!(plugin = %name, "plugin removed");
                report.removed.push(name.clone());
            }
            self.errors.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
        }
        for path in files {
            let name = stem(&path);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    report.errors.push((path.clone(), format!("cannot read: {e}")));
                    continue;
                }
            };
            let quick = format!("{}:{}", bytes.len(), {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                h.finish()
            });
            if seen.get(&path) == Some(&quick) {
                continue;
            }
            seen.insert(path.clone(), quick);
            let started = std::time::Instant::now();
            let loaded = match validate_name(&name) {
                Err(e) => Err(format!("the file name is not a valid plugin name: {e}")),
                Ok(()) => {
                    let engine = self.engine.clone();
                    let plugin_name = name.clone();
                    tokio::task::spawn_blocking(move || engine.load(&plugin_name, &bytes))
                        .await
                        .unwrap_or_else(|e| Err(format!("the loader panicked: {e}")))
                }
            };
            let took = started.elapsed();
            match loaded {
                Ok(plugin) => {
                    info!(
                        plugin = %name,
                        sha256 = %plugin.sha256,
                        bytes = plugin.size,
                        "plugin loaded ({}) in {} ms",
                        if plugin.from_cache { "from the compiled cache" } else { "compiled" },
                        took.as_millis()
                    );
                    report.loaded.push((name.clone(), plugin.from_cache));
                    let plugin = Arc::new(plugin);
                    let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
                    match slots.get(&name) {
                        Some(slot) => slot.replace(plugin),
                        None => {
                            slots.insert(name.clone(), Arc::new(PluginSlot::new(name.clone(), plugin)));
                        }
                    }
                    self.errors.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
                }
                Err(why) => {
                    let live = if self.slot(&name).is_some() { "; the previous version stays live" } else { "" };
                    warn!("{}: plugin `{name}` does not load: {why}{live}", path.display());
                    self.errors.lock().unwrap_or_else(|e| e.into_inner()).insert(name, why.clone());
                    report.errors.push((path, why));
                }
            }
        }
        report
    }
}

impl PluginSource for WasmPlugins {
    fn auth(&self, name: &str) -> Option<Arc<dyn AuthPlugin>> {
        Some(Arc::new(WasmAuthPlugin::new(WasmPlugin::new(self.slot(name)?, self.engine.clone()))))
    }

    fn transform(&self, name: &str) -> Option<Arc<dyn TransformPlugin>> {
        Some(Arc::new(WasmTransformPlugin::new(WasmPlugin::new(self.slot(name)?, self.engine.clone()))))
    }

    fn statuses(&self) -> Vec<PluginStatus> {
        let errors = self.errors();
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut names: Vec<&String> = slots.keys().chain(errors.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| PluginStatus {
                name: name.clone(),
                kind: "wasm",
                state: if errors.contains_key(name) { "invalid" } else { "active" },
                sha256: slots.get(name).map(|s| s.current().sha256.clone()),
                error: errors.get(name).cloned(),
            })
            .collect()
    }

    fn names(&self) -> Vec<String> {
        self.slots.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect()
    }
}

fn stem(path: &Path) -> String {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string()
}

/// `*.wasm` files of a folder, not hidden, following symlinks, sorted.
fn wasm_files(dir: &Path) -> Vec<PathBuf> {
    hookgate_core::watch::folder_files(dir, &["wasm"])
}
