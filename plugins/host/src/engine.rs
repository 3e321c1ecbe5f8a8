//! One wasmtime `Engine` for every plugin: compilation with an on-disk cache, the pooling
//! allocator, and calls in a fresh, limited `Store` each (fuel, a wall-clock deadline driven
//! by epochs, a memory cap, output caps, a bound on instances alive at once).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hookgate_core::config::PluginLimits;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentNamedList, HasSelf, InstancePre, Lift, Linker, Lower,
};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimitsBuilder, Trap,
    UpdateDeadline,
};

use crate::bindings::hookgate::plugin::types::{Header, OutgoingRequest, PluginError, PluginInfo, TransformOutput};
use crate::bindings::{Plugin, PluginPre};
use crate::state::{CallContext, CallState};

/// Linear memory kept resident in a pooled slot between calls (a Rust guest's stack and a
/// small heap).
const RESIDENT_MEMORY: usize = 2 << 20;

/// How often the epoch advances: the resolution of the wall-clock limit.
const EPOCH_TICK: Duration = Duration::from_millis(2);

/// A plugin compiled and linked, ready to instantiate.
pub struct LoadedPlugin {
    /// The file stem: the name templates use.
    pub name: String,
    /// SHA-256 of the `.wasm` file, hex.
    pub sha256: String,
    /// Whether the compiled code came from the on-disk cache.
    pub from_cache: bool,
    pre: InstancePre<CallState>,
    exports: Exports,
}

/// The contract's exports of one plugin, found once when it loads.
struct Exports {
    describe: ComponentExportIndex,
    authorize: ComponentExportIndex,
    transform: ComponentExportIndex,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin").field("name", &self.name).field("sha256", &self.sha256).finish()
    }
}

/// Why a plugin call failed. Its `Display` names the plugin.
#[derive(Debug, Clone)]
pub struct CallError {
    pub plugin: String,
    pub kind: CallErrorKind,
}

#[derive(Debug, Clone)]
pub enum CallErrorKind {
    /// The plugin returned an error itself.
    Plugin(PluginError),
    /// A limit stopped it: time, fuel, memory, output size.
    Limit(String),
    /// It trapped (a panic, `unreachable`, a stack overflow...).
    Trap(String),
    /// It returned something the host cannot use.
    BadOutput(String),
    /// It could not be instantiated.
    Instantiate(String),
}

impl CallError {
    fn new(plugin: &str, kind: CallErrorKind) -> Self {
        Self { plugin: plugin.to_string(), kind }
    }

    /// Whether trying again later may help: only when the plugin says so.
    pub fn retryable(&self) -> bool {
        matches!(&self.kind, CallErrorKind::Plugin(e) if e.retryable)
    }
}

impl fmt::Display for CallErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plugin(e) => f.write_str(&e.message),
            Self::Limit(why) => write!(f, "stopped: {why}"),
            Self::Trap(why) => write!(f, "trapped: {why}"),
            Self::BadOutput(why) => write!(f, "returned bad output: {why}"),
            Self::Instantiate(why) => write!(f, "could not start: {why}"),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin `{}`: {}", self.plugin, self.kind)
    }
}

impl std::error::Error for CallError {}

pub struct PluginEngine {
    engine: Engine,
    linker: Linker<CallState>,
    limits: PluginLimits,
    cache_dir: Option<PathBuf>,
    permits: Arc<Semaphore>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PluginEngine {
    /// An engine with `limits`; compiled plugins are cached in `cache_dir` when given.
    pub fn new(limits: PluginLimits, cache_dir: Option<PathBuf>) -> Result<Self, String> {
        let instances = limits.max_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .total_memories(instances * 2)
            .max_memories_per_component(2)
            .total_tables(instances * 8)
            .total_stacks(instances)
            .max_memory_size(limits.memory_bytes)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            // Reset reused slots with memset (or a scan of resident pages) instead of
            // madvise: a fresh instance per call then costs no page faults.
            .linear_memory_keep_resident(RESIDENT_MEMORY.min(limits.memory_bytes))
            .table_keep_resident(64 * 1024)
            .pagemap_scan(wasmtime::Enabled::Auto)
            .decommit_batch_size(16);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(true)
            .max_wasm_stack(512 * 1024)
            .memory_reservation(limits.memory_bytes as u64 + (64 << 20))
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| format!("cannot start the WASM engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(|e| format!("cannot link the host interface: {e}"))?;

        // The epoch ticker: drives the wall-clock limit. It stops when the engine is dropped.
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (weak, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("hookgate-plugin-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| format!("cannot start the epoch thread: {e}"))?;

        Ok(Self {
            engine,
            linker,
            permits: Arc::new(Semaphore::new(instances as usize)),
            limits,
            cache_dir,
            ticker_stop,
        })
    }

    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// Compiles (or loads from the cache) and links a plugin. CPU-heavy: call it from a
    /// blocking thread.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<LoadedPlugin, String> {
        let sha256: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let (component, from_cache) = self.compile(&sha256, bytes)?;
        let mut linker = self.linker.clone();
        // Imports beyond the contract (a Rust guest's WASI runtime, say) link, but trap if
        // called: plugins get no files, sockets or environment.
        linker.define_unknown_imports_as_traps(&component).map_err(|e| format!("cannot link: {e}"))?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| format!("cannot link: {e:#}"))?;
        // Checks every export against the contract, once; calls then look up only the
        // function they run.
        PluginPre::new(instance_pre.clone())
            .map_err(|e| format!("does not implement the contract hookgate:plugin@0.1.0 (world `plugin`): {e:#}"))?;
        let export =
            |name: &str| component.get_export_index(None, name).ok_or_else(|| format!("does not export `{name}`"));
        let exports =
            Exports { describe: export("describe")?, authorize: export("authorize")?, transform: export("transform")? };
        Ok(LoadedPlugin { name: name.to_string(), sha256, from_cache, pre: instance_pre, exports })
    }

    /// The compiled component, from the cache when it has one for these bytes and this
    /// engine; otherwise compiled and cached.
    fn compile(&self, sha256: &str, bytes: &[u8]) -> Result<(Component, bool), String> {
        use std::hash::{Hash, Hasher};
        let cached = self.cache_dir.as_ref().map(|dir| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.engine.precompile_compatibility_hash().hash(&mut h);
            dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
        });
        if let Some(path) = &cached
            && path.is_file()
        {
            // SAFETY: the file was written by `serialize` below into the gateway's own
            // data folder, under a name bound to the wasm's hash and the engine's
            // compatibility hash; wasmtime also checks the header before using it.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(&self.engine, path) };
            match loaded {
                Ok(component) => return Ok((component, true)),
                Err(e) => tracing::warn!("ignoring the compiled cache {}: {e}", path.display()),
            }
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| format!("not a valid WebAssembly component: {e:#}"))?;
        if let Some(path) = &cached {
            let write = component.serialize().map_err(|e| e.to_string()).and_then(|code| {
                std::fs::create_dir_all(path.parent().unwrap_or(path)).map_err(|e| e.to_string())?;
                let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
                std::fs::write(&tmp, code).and_then(|()| std::fs::rename(&tmp, path)).map_err(|e| e.to_string())
            });
            if let Err(e) = write {
                tracing::warn!("cannot cache the compiled plugin in {}: {e}", path.display());
            }
        }
        Ok((component, false))
    }

    /// A fresh store with this call's limits.
    fn store(&self, ctx: Arc<CallContext>) -> Result<Store<CallState>, String> {
        let limits = StoreLimitsBuilder::new().memory_size(self.limits.memory_bytes).trap_on_grow_failure(true).build();
        let mut store = Store::new(&self.engine, CallState::new(limits, ctx, self.limits.timeout));
        store.limiter(|state| &mut state.limits);
        store.set_fuel(self.limits.fuel).map_err(|e| e.to_string())?;
        store.epoch_deadline_callback(|ctx| {
            Ok(if ctx.data().overdue() { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store.set_epoch_deadline(1);
        Ok(store)
    }

    /// Calls `export` with `params` on a fresh instance of `plugin`, mapping every failure to
    /// a [`CallError`].
    async fn run<P, R>(
        &self,
        plugin: &LoadedPlugin,
        ctx: Arc<CallContext>,
        export: &ComponentExportIndex,
        params: P,
    ) -> Result<R, CallError>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        let fail = |kind| CallError::new(&plugin.name, kind);
        let _permit = self.permits.acquire().await.map_err(|e| fail(CallErrorKind::Instantiate(e.to_string())))?;
        let mut store = self.store(ctx).map_err(|e| fail(CallErrorKind::Instantiate(e)))?;
        let instance = plugin.pre.instantiate_async(&mut store).await.map_err(|e| fail(self.classify(&e, true)))?;
        let func = instance
            .get_typed_func::<P, R>(&mut store, export)
            .map_err(|e| fail(CallErrorKind::Instantiate(first_line(&format!("{e:#}")))))?;
        func.call_async(&mut store, params).await.map_err(|e| fail(self.classify(&e, false)))
    }

    fn classify(&self, error: &wasmtime::Error, instantiating: bool) -> CallErrorKind {
        let limit = |what: String| CallErrorKind::Limit(what);
        let trap = error.chain().find_map(|e| e.downcast_ref::<Trap>());
        match trap {
            Some(Trap::Interrupt) => limit(format!(
                "ran longer than {} (plugins.timeout)",
                hookgate_core::duration::format_duration(self.limits.timeout)
            )),
            Some(Trap::OutOfFuel) => limit(format!("used up its fuel ({} units, plugins.fuel)", self.limits.fuel)),
            Some(Trap::StackOverflow) => CallErrorKind::Trap("stack overflow (too deep a recursion)".into()),
            Some(trap) => {
                let text = format!("{error:#}");
                if text.contains("memory") && text.contains("limit")
                    || text.contains("forcing trap when growing memory")
                {
                    limit(format!(
                        "asked for more than {} bytes of memory (plugins.memory_bytes)",
                        self.limits.memory_bytes
                    ))
                } else {
                    CallErrorKind::Trap(trap.to_string())
                }
            }
            None => {
                let text = error.root_cause().to_string();
                if text.contains("forcing trap when growing memory") || text.contains("memory minimum size") {
                    limit(format!(
                        "asked for more than {} bytes of memory (plugins.memory_bytes)",
                        self.limits.memory_bytes
                    ))
                } else if let Some(import) = text.strip_prefix("unknown import: ") {
                    let import = import.split(' ').next().unwrap_or(import);
                    CallErrorKind::Trap(format!("called {import}, which plugins may not use (a Rust panic does)"))
                } else if instantiating {
                    CallErrorKind::Instantiate(first_line(&text))
                } else {
                    CallErrorKind::Trap(first_line(&text))
                }
            }
        }
    }

    /// What the plugin says about itself.
    pub async fn describe(&self, plugin: &LoadedPlugin) -> Result<PluginInfo, CallError> {
        let ctx = Arc::new(CallContext::new(&plugin.name, ""));
        let (info,) = self.run::<(), (PluginInfo,)>(plugin, ctx, &plugin.exports.describe, ()).await?;
        Ok(info)
    }

    /// The headers the plugin adds to `request`.
    pub async fn authorize(
        &self,
        plugin: &LoadedPlugin,
        ctx: Arc<CallContext>,
        request: &OutgoingRequest,
        config: &str,
    ) -> Result<Vec<Header>, CallError> {
        let (result,) = self
            .run::<_, (Result<Vec<Header>, PluginError>,)>(plugin, ctx, &plugin.exports.authorize, (request, config))
            .await?;
        let headers = result.map_err(|e| CallError::new(&plugin.name, CallErrorKind::Plugin(e)))?;
        let size: usize = headers.iter().map(|h| h.name.len() + h.value.len()).sum();
        if size > self.limits.max_output_bytes.min(64 * 1024) || headers.len() > 64 {
            return Err(CallError::new(
                &plugin.name,
                CallErrorKind::Limit(format!(
                    "returned {} headers of {size} bytes (at most 64 headers, 64 KiB)",
                    headers.len()
                )),
            ));
        }
        Ok(headers)
    }

    /// The requests the plugin makes of a payload.
    pub async fn transform(
        &self,
        plugin: &LoadedPlugin,
        ctx: Arc<CallContext>,
        payload: &[u8],
        config: &str,
    ) -> Result<TransformOutput, CallError> {
        let (result,) = self
            .run::<_, (Result<TransformOutput, PluginError>,)>(
                plugin,
                ctx,
                &plugin.exports.transform,
                (payload, config),
            )
            .await?;
        let output = result.map_err(|e| CallError::new(&plugin.name, CallErrorKind::Plugin(e)))?;
        let size: usize = output
            .requests
            .iter()
            .map(|r| r.body.len() + r.url.len() + r.headers.iter().map(|h| h.name.len() + h.value.len()).sum::<usize>())
            .sum();
        if size > self.limits.max_output_bytes {
            return Err(CallError::new(
                &plugin.name,
                CallErrorKind::Limit(format!(
                    "returned {size} bytes of requests (plugins.max_output_bytes is {})",
                    self.limits.max_output_bytes
                )),
            ));
        }
        Ok(output)
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).chars().take(300).collect()
}
